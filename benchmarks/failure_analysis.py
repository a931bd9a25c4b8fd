"""Where a trained memory agent still fails: its held-out evaluation, episode by episode.

Replays a ``failure_replay`` run's own evaluation (same checkpoint, same
tasks, same keys, so its success rates are exactly the run's; a run written
before the platform refactor is replayed with the task sets and keys it used) and looks at what each episode
ended on: the goal, a trap, or the time limit; whether a trap hit was a block
the agent had already failed on in that trial (its frame was in the bank, so
the memory did not help); and how the layouts where that happens differ from
the others (block spacing, distance from the start).

    python benchmarks/failure_analysis.py runs/memory_x3 [--update N] [--out FILE]

Prints a short report and writes the numbers to ``RUN_DIR/failure_analysis_u<N>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python benchmarks/failure_analysis.py`
    sys.path.insert(0, str(ROOT))

GOAL, TRAP, TIMEOUT = 0, 1, 2
OUTCOMES = ("goal", "trap", "timeout")


def classify(
    success: np.ndarray, failure_cells: np.ndarray, slot_valid: np.ndarray, block_cells: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """What each episode of each trial ended on, from the protocol's outputs.

    ``success [M, K]`` per task and episode; ``failure_cells [M, N]`` the agent's
    cell in the last stored frame of each bank slot (oldest first) and
    ``slot_valid [M, N]``; ``block_cells [M, X]``. The protocol stores every
    unsuccessful episode, in order, so the i-th failed episode of a trial is
    slot i. Returns ``(outcome [M, K]`` in GOAL/TRAP/TIMEOUT, ``block [M, K]``
    the block index hit, -1 for none).
    """
    num_tasks, num_episodes = success.shape
    failures = (~success).sum(axis=1)
    if (failures != slot_valid.sum(axis=1)).any() or (failures > slot_valid.shape[1]).any():
        raise ValueError(
            "the banks do not hold one slot per failed episode (bank too small for the episodes?)"
        )
    outcome = np.full((num_tasks, num_episodes), GOAL, np.int32)
    block = np.full((num_tasks, num_episodes), -1, np.int32)
    slot = np.zeros(num_tasks, np.int64)
    for k in range(num_episodes):
        failed = ~success[:, k]
        cell = failure_cells[np.arange(num_tasks), np.minimum(slot, failure_cells.shape[1] - 1)]
        hit = (block_cells == cell[:, None]) & failed[:, None]
        on_block = hit.any(axis=1)
        outcome[:, k] = np.where(failed, np.where(on_block, TRAP, TIMEOUT), GOAL)
        block[:, k] = np.where(on_block, hit.argmax(axis=1), -1)
        slot += failed
    return outcome, block


def repeats(outcome: np.ndarray, block: np.ndarray) -> np.ndarray:
    """``[M, K]``: the episode hit a trap that an earlier episode of the same trial had hit."""
    seen = np.zeros((outcome.shape[0], int(block.max(initial=0)) + 1), bool)
    out = np.zeros(outcome.shape, bool)
    for k in range(outcome.shape[1]):
        trap = outcome[:, k] == TRAP
        idx = np.maximum(block[:, k], 0)
        out[:, k] = trap & seen[np.arange(len(idx)), idx]
        seen[np.arange(len(idx)), idx] |= trap
    return out


def manhattan(a: np.ndarray, b: np.ndarray, size: int) -> np.ndarray:
    return np.abs(a // size - b // size) + np.abs(a % size - b % size)


def layout_features(
    block_cells: np.ndarray, goal_index: np.ndarray, agent_start: np.ndarray, size: int
) -> dict:
    """Per task: closest pair of blocks, start->goal and start->nearest trap (Manhattan)."""
    m, x = block_cells.shape
    pair = np.full(m, np.inf)
    for i in range(x):
        for j in range(i + 1, x):
            pair = np.minimum(pair, manhattan(block_cells[:, i], block_cells[:, j], size))
    to_block = manhattan(block_cells, agent_start[:, None], size)
    is_goal = np.arange(x)[None, :] == goal_index[:, None]
    return {
        "closest_blocks": pair,
        "start_to_goal": to_block[is_goal],
        "start_to_nearest_trap": np.where(is_goal, np.inf, to_block).min(axis=1),
    }


def summarise(outcome: np.ndarray, block: np.ndarray, features: dict) -> dict[str, Any]:
    """Rates per episode index and layout statistics; inputs ``[S, M, K]`` (seeds, tasks, episodes)."""
    seeds, m, k = outcome.shape
    flat_outcome = outcome.reshape(-1, k)
    repeated = repeats(flat_outcome, block.reshape(-1, k))
    known_trap = np.zeros_like(repeated)  # some trap was hit before this episode
    known_trap[:, 1:] = np.cumsum(flat_outcome == TRAP, axis=1)[:, :-1] > 0
    per_episode = {name: (flat_outcome == code).mean(axis=0).tolist() for code, name in enumerate(OUTCOMES)}
    per_episode["repeated_trap"] = repeated.mean(axis=0).tolist()
    per_episode["repeat_given_known_trap"] = [
        float(repeated[:, i][known_trap[:, i]].mean()) if known_trap[:, i].any() else None for i in range(k)
    ]
    # Layouts (task, seed) with at least one repeat against those with a trap hit and no repeat.
    any_repeat = repeated.any(axis=1)
    hit_no_repeat = (flat_outcome == TRAP).any(axis=1) & ~any_repeat
    tiled = {name: np.tile(value, seeds) for name, value in features.items()}
    layouts = {
        group: {
            "trials": int(mask.sum()),
            **{name: float(value[mask].mean()) if mask.any() else None for name, value in tiled.items()},
        }
        for group, mask in (("repeated_a_trap", any_repeat), ("hit_a_trap_never_repeated", hit_no_repeat))
    }
    known = known_trap[:, 1:]
    return {
        "trials": int(seeds * m),
        "per_episode": per_episode,
        "repeat_given_known_trap_pooled": float(repeated[:, 1:][known].mean()) if known.any() else None,
        "layouts": layouts,
    }


def report(result: dict[str, Any]) -> str:
    per = result["per_episode"]

    def pct(values: list) -> str:
        return ", ".join("-" if v is None else f"{100 * v:.0f}%" for v in values)

    lines = [
        f"{result['run_dir']} at update {result['update']}: {result['trials']} held-out trials "
        f"({result['seeds']} seeds x {result['tasks']} tasks), episodes 1..{len(per['goal'])}",
        f"  goal:                      {pct(per['goal'])}",
        f"  trap:                      {pct(per['trap'])}",
        f"  timeout:                   {pct(per['timeout'])}",
        f"  trap hit again (in bank):  {pct(per['repeated_trap'])}",
        f"  again, given a known trap: {pct(per['repeat_given_known_trap'])}"
        f" (pooled over episodes 2+: {100 * (result['repeat_given_known_trap_pooled'] or 0):.0f}%)",
        "  layouts (mean Manhattan distances):",
    ]
    for group, stats in result["layouts"].items():
        if stats["trials"]:
            lines.append(
                f"    {group:<26} {stats['trials']:>5} trials: closest blocks {stats['closest_blocks']:.1f}, "
                f"start->goal {stats['start_to_goal']:.1f}, "
                f"start->nearest trap {stats['start_to_nearest_trap']:.1f}"
            )
    return "\n".join(lines)


def replay_evaluation(run: Any) -> tuple[np.ndarray, Any, Any]:
    """A restored run's own final evaluation again (``benchmarks._common.MemoryRun``): the same
    checkpoint, tasks and keys, through ``failure_replay.evaluation_trials``. Returns ``(success [S, K,
    M]`` per seed, episode and task, the final banks ``[S, M, ...]``, the evaluated tasks ``[M, ...])``."""
    import jax

    from jaxmeta.algos import failure_replay
    from jaxmeta.algos.api import first_tasks

    cfg, parts = run.cfg, run.parts
    evaluation = cfg.algo.eval
    env, env_params = parts.setup.env, parts.setup.params
    tasks = first_tasks(parts.setup.test_tasks, evaluation.num_tasks)

    def one_seed(params: Any, key: jax.Array) -> tuple[jax.Array, Any]:
        out = failure_replay.evaluation_trials(
            parts.network,
            env,
            env_params,
            params,
            tasks,
            key,
            evaluation.episodes,
            cfg.algo.bank_capacity,
            evaluation.greedy,
        )
        return out.success, out.state

    success, banks = jax.jit(jax.vmap(one_seed))(run.params, run.eval_keys())
    return np.asarray(success), banks, tasks


def analyse_run(run_dir: Path, update: int | None = None) -> dict[str, Any]:
    """Restore ``run_dir``'s checkpoint, replay its evaluation and analyse it."""
    import jax

    from benchmarks import _common
    from jaxmeta.memory import failure_bank

    run = _common.restore_memory_run(run_dir, update)
    cfg = run.cfg
    if cfg.env.id != "Gridworld-v0" or cfg.env.obs_mode != "multihot":
        raise SystemExit(f"{run_dir}: the analysis reads Gridworld-v0's multihot frames")
    evaluation = cfg.algo.eval
    if evaluation.episodes > cfg.algo.bank_capacity:
        raise SystemExit("algo.eval.episodes exceeds algo.bank_capacity: early failures leave the bank")
    success, banks, tasks = replay_evaluation(run)  # success [S, K, M]
    stored, step_mask, slot_mask = jax.vmap(failure_bank.read, in_axes=(0, None))(
        banks, np.arange(evaluation.num_tasks)
    )
    step_mask = np.asarray(step_mask)  # [S, M, N, L]
    last = step_mask.shape[-1] - 1 - np.argmax(step_mask[..., ::-1], axis=-1)  # last stored step
    frames = np.take_along_axis(np.asarray(stored["obs"]), last[..., None, None, None, None], axis=3)[
        :, :, :, 0
    ]
    failure_cells = frames[..., 0].reshape(*frames.shape[:3], -1).argmax(-1)  # channel 0: the agent
    tasks = jax.tree.map(np.asarray, tasks)
    success = success.astype(bool).transpose(0, 2, 1)  # [S, M, K]
    classified = [
        classify(success[s], failure_cells[s], np.asarray(slot_mask[s]), tasks.block_cells)
        for s in range(cfg.seeds)
    ]
    outcome = np.stack([c[0] for c in classified])
    block = np.stack([c[1] for c in classified])
    features = layout_features(tasks.block_cells, tasks.goal_index, tasks.agent_start, cfg.env.size)
    result = summarise(outcome, block, features)
    result.update(
        run_dir=str(run_dir),
        update=run.update,
        seeds=cfg.seeds,
        tasks=evaluation.num_tasks,
        written_before_refactor=run.legacy,
        success_per_seed=success.mean(axis=1).tolist(),
    )
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a failure_replay run directory, e.g. runs/memory_x3")
    parser.add_argument("--update", type=int, default=None, help="checkpoint to read (default: the latest)")
    parser.add_argument("--out", default=None, help="JSON file (default: RUN_DIR/failure_analysis_u<N>.json)")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    result = analyse_run(run_dir, args.update)
    print(report(result))
    out = Path(args.out) if args.out else run_dir / f"failure_analysis_u{result['update']}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()

"""How good and how costly the Procgen search expert (``envs_jax.host.procgen_expert``) is.

For each game the expert plays one episode of each level closed-loop from the level's start (a label
per step, the label is the action taken), on the training levels ``0 .. N-1`` and the held-out levels
``200 .. 200+M-1`` (easy mode, one ``ProcgenGym3Env(num_levels=1)`` per level, procgen's own time limit
unless ``--max-steps`` cuts it). Reported per game, split and policy: the success rate (episodes that
complete the level), the mean episode length, the levels failed; for the expert also ms per label and
simulated steps per label. Reference policies on the same levels: uniformly random actions, always
RIGHT, and RIGHT with a jump (RIGHT-UP) on a random 20% of steps (numpy, seeded per level).

Usage::

    python benchmarks/procgen_expert.py [--games coinrun,ninja,climber] [--levels 50] [--test-levels 50]
        [--max-steps N] [--out benchmarks/results/procgen_expert.json]

Results merge into ``--out`` per game, so games can be measured in separate runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:  # run as `python benchmarks/procgen_expert.py`
    sys.path.insert(0, _ROOT)

from benchmarks import _common  # noqa: E402
from envs_jax.host import procgen_expert as pe  # noqa: E402
from envs_jax.host.procgen import NUM_ACTIONS, level_env  # noqa: E402

DEFAULT_OUT = _common.RESULTS_DIR / "procgen_expert.json"
TEST_START = 200  # the held-out levels start here (make_procgen's default split)
JUMP_PROB = 0.2  # "RIGHT with random jumps": RIGHT-UP on this share of steps

Policy = Callable[[Any, np.random.Generator], int]  # (procgen env, rng) -> action


def play(game: str, level: int, policy: Policy, max_steps: int | None) -> tuple[bool, int]:
    """One episode of ``level`` under ``policy``: (completed the level, steps taken)."""
    env = level_env(game, level)
    rng = np.random.default_rng(level)
    limit = max_steps or 10**9
    try:
        steps = 0
        while steps < limit:
            env.act(np.array([policy(env, rng)], np.int32))
            steps += 1
            _, _, first = env.observe()
            if first[0]:  # procgen ended the episode (and reset): completed, died or timed out
                return bool(env.get_info()[0]["prev_level_complete"]), steps
        return False, steps
    finally:
        env.close()


def baselines() -> dict[str, Policy]:
    return {
        "random": lambda env, rng: int(rng.integers(NUM_ACTIONS)),
        "always_right": lambda env, rng: pe.RIGHT,
        "right_random_jumps": lambda env, rng: pe.RIGHT_UP if rng.random() < JUMP_PROB else pe.RIGHT,
    }


def expert_policy(expert: pe.SearchExpert) -> Policy:
    return lambda env, rng: expert.act(env.callmethod("get_state")[0])


def evaluate(game: str, levels: Sequence[int], policy: Policy, name: str, max_steps: int | None) -> dict:
    results = [
        play(game, level, policy, max_steps) for level in tqdm(levels, desc=f"{game} {name}", leave=False)
    ]
    wins = [ok for ok, _ in results]
    return {
        "levels": [int(levels[0]), int(levels[-1]) + 1] if levels else [],
        "episodes": len(results),
        "success_rate": float(np.mean(wins)) if results else 0.0,
        "mean_length": float(np.mean([n for _, n in results])) if results else 0.0,
        "failed_levels": [int(level) for level, ok in zip(levels, wins, strict=True) if not ok],
    }


def measure_game(game: str, train: int, test: int, max_steps: int | None, horizon: int | None) -> dict:
    splits = {"train": list(range(train)), "test": list(range(TEST_START, TEST_START + test))}
    expert = pe.SearchExpert(game, plans=pe.platformer_plans(game, horizon) if horizon else None)
    out: dict[str, Any] = {
        "expert": {
            "plans": expert.num_plans,
            "plan_steps": expert.horizon,
            "simulated_steps_per_label_max": expert.num_plans * expert.horizon,
        }
    }
    for split, levels in splits.items():
        start = time.perf_counter()
        before = pe.SearchStats(expert.stats.labels, expert.stats.simulated_steps, expert.stats.seconds)
        row = evaluate(game, levels, expert_policy(expert), f"expert/{split}", max_steps)
        labels = expert.stats.labels - before.labels
        row["labels"] = labels
        row["ms_per_label"] = 1e3 * (expert.stats.seconds - before.seconds) / max(labels, 1)
        row["simulated_steps_per_label"] = (expert.stats.simulated_steps - before.simulated_steps) / max(
            labels, 1
        )
        row["wall_s"] = time.perf_counter() - start
        out["expert"][split] = row
        print(
            f"{game} expert {split}: {row['success_rate']:.0%} of {row['episodes']} levels, mean length "
            f"{row['mean_length']:.0f}, {row['ms_per_label']:.1f} ms/label, "
            f"{row['simulated_steps_per_label']:.0f} simulated steps/label"
        )
        for name, policy in baselines().items():
            base = evaluate(game, levels, policy, f"{name}/{split}", max_steps)
            out.setdefault(name, {})[split] = base
            print(f"{game} {name} {split}: {base['success_rate']:.0%}, mean length {base['mean_length']:.0f}")
    expert.close()
    return out


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--games", default="coinrun", help="comma-separated: coinrun,ninja,climber")
    parser.add_argument("--levels", type=int, default=50, help="training levels 0..N-1")
    parser.add_argument(
        "--test-levels", type=int, default=None, help="held-out levels from 200 (default: --levels)"
    )
    parser.add_argument(
        "--max-steps", type=int, default=None, help="cut episodes here (default: procgen's limit)"
    )
    parser.add_argument("--horizon", type=int, default=None, help="plan length before settling (default: 32)")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)
    test = args.levels if args.test_levels is None else args.test_levels
    path = Path(args.out)
    report = json.loads(path.read_text()) if path.exists() else {}
    report.setdefault("games", {})
    for game in args.games.split(","):
        start = time.perf_counter()
        result = measure_game(game, args.levels, test, args.max_steps, args.horizon)
        result["config"] = {
            "train_levels": args.levels,
            "test_levels": test,
            "test_start": TEST_START,
            "max_steps": args.max_steps,
            "horizon": args.horizon,
            "distribution_mode": "easy",
            "command": "python benchmarks/procgen_expert.py "
            + " ".join(sys.argv[1:] if argv is None else argv),
            "wall_s": time.perf_counter() - start,
        }
        report["games"][game] = result
    report["machine"] = _common.machine_info()
    _common.write_json(report, path)
    print(f"wrote {path}")
    return report


if __name__ == "__main__":
    main()

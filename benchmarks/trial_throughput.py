"""Trials per second with failure-bank traffic, side by side with the same trials without it.

One jitted call runs a batch of Gridworld trials (``T`` steps each, ``diff``
resets, random actions), where every trial first reads its task's bank and
the policy consumes what it read, then cuts the last ``L`` steps of each
episode out of the trial and adds the failed ones to their tasks' banks. The
bank state is threaded through the timed repeats, so the banks fill up as in
training. The same trials without ``read``/``add`` are timed in the same run;
the ratio is the cost of the bank traffic.

    python benchmarks/trial_throughput.py [--batch 1024] [--steps 80] [--repeats 5] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:  # run as `python benchmarks/trial_throughput.py`
    sys.path.insert(0, _ROOT)

import envs_jax  # noqa: E402
from benchmarks import _common  # noqa: E402
from jaxmeta import trial  # noqa: E402
from jaxmeta.memory import failure_bank  # noqa: E402

NUM_BLOCKS = 3


def call_keys(repeats: int) -> list[jax.Array]:
    """The key of each call of a variant: the warm-up, then the ``repeats`` timed calls."""
    return [jax.random.PRNGKey(i) for i in range(repeats + 1)]


def build(
    batch: int,
    steps: int,
    num_tasks: int,
    capacity: int,
    length: int,
    max_episodes: int,
    with_bank: bool,
    record: bool = False,
):
    """``(run, bank)``: ``run(bank, key) -> (bank, (checksum, episodes past max_episodes, episodes,
    env steps))`` runs one batch of trials (and, ``with_bank``, its bank traffic). ``record`` also
    returns each step's ``task_id``, ``done``, ``success`` and ``episode_index`` ``[B, T]`` (for tests)."""
    env, params = envs_jax.make("Gridworld-v0", num_blocks=NUM_BLOCKS)
    tasks = envs_jax.make_task_set(env, jax.random.PRNGKey(0), num_tasks, params)
    obs_example = jnp.zeros(env.obs_shape, jnp.float32)
    step_example = {"obs": obs_example, "action": jnp.int32(0), "reward": jnp.float32(0)}
    bank = failure_bank.init(num_tasks, capacity, length, step_example)

    def policy(bank_view, inputs, carry, memory, key):
        action = jax.random.randint(key, (), 0, env.num_actions)
        if bank_view is not None:  # consume the bank read so XLA keeps it: the action depends on it
            action = (action + (jnp.sum(bank_view) > 1e9).astype(jnp.int32)) % env.num_actions
        return action, carry

    def run(bank, key):
        task_key, trial_key = jax.random.split(key)
        task_ids = jax.random.randint(task_key, (batch,), 0, num_tasks)
        views = None
        if with_bank:
            bank_obs, _, _ = failure_bank.read(bank, task_ids)
            views = bank_obs["obs"].sum(axis=(1, 2))  # [B, W, W, C]: what a policy would attend over
        # Each trial's policy gets its own view of the bank as its "parameters".
        data, episodes, _ = trial.run_trials(
            env,
            params,
            policy,
            views,
            None,
            tasks,
            task_ids,
            trial_key,
            steps,
            "diff",
            max_episodes=max_episodes,
            params_per_trial=with_bank,
        )
        checksum = episodes.returns.sum() + data.obs.sum()
        episode_counts = data.episode_index[:, -1] + 1
        # Episodes past max_episodes are not cut out for the bank: count them.
        past_max = jnp.maximum(episode_counts - max_episodes, 0).sum()
        if with_bank:
            # What a trial writes: its failed episodes' last L steps (as in training).
            bank = failure_bank.add(bank, *trial.failures_for_bank(data, episodes, length, max_episodes))
        recorded_steps = jnp.sum(jnp.ones_like(data.reward, jnp.int32))  # the steps the trials recorded
        out = (checksum, past_max, episode_counts.sum(), recorded_steps)
        if record:
            out += ({k: getattr(data, k) for k in ("task_id", "done", "success", "episode_index")},)
        return bank, out

    return run, bank


def main(argv: list[str] | None = None, records: dict | None = None) -> dict:
    """Run the benchmark; returns the report. ``records``, if a dict, receives for each variant the
    list of every call's per-step record (warm-up first; see :func:`build`'s ``record``), to check
    the reported counts against the trials themselves."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--num-tasks", type=int, default=1000)
    parser.add_argument("--capacity", type=int, default=16)
    parser.add_argument("--length", type=int, default=4)
    parser.add_argument(
        "--max-episodes", type=int, default=16, help="episode slots per trial cut for the bank"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smoke run: batch 8, 2 repeats, no JSON")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.repeats, args.num_tasks = 8, 2, 20
    out = args.out or (None if args.quick else str(_common.RESULTS_DIR / "trial_throughput.json"))

    load_start = _common.load_average()
    results = {}
    for with_bank in (True, False):
        label = "with_bank" if with_bank else "without_bank"
        run, bank = build(
            args.batch,
            args.steps,
            args.num_tasks,
            args.capacity,
            args.length,
            args.max_episodes,
            with_bank,
            record=records is not None,
        )
        kept = [] if records is None else records.setdefault(label, [])
        keys = call_keys(args.repeats)
        t0 = time.perf_counter()
        compiled = jax.jit(run, donate_argnums=0).lower(bank, keys[0]).compile()
        compile_s = time.perf_counter() - t0
        bank, extra = compiled(bank, keys[0])  # warm-up
        jax.block_until_ready(extra)
        if records is not None:
            kept.append(jax.device_get(extra[4]))
        run_s, past_max, episodes, env_steps = [], 0, 0, 0
        for key in keys[1:]:
            t0 = time.perf_counter()
            # The bank is threaded through the repeats, so it fills as in training.
            bank, extra = compiled(bank, key)
            jax.block_until_ready((bank, extra))
            run_s.append(time.perf_counter() - t0)
            past_max, episodes = past_max + int(extra[1]), episodes + int(extra[2])
            env_steps += int(extra[3])
            if records is not None:
                kept.append(jax.device_get(extra[4]))
        median_s = statistics.median(run_s)
        trials_per_s = args.batch / median_s
        results[label] = {
            "compile_s": compile_s,
            "run_s": run_s,
            "median_s": median_s,
            "trials_per_s": trials_per_s,
            "env_steps_per_s": trials_per_s * args.steps,
            "env_steps_timed": env_steps,  # counted by the timed calls: batch * steps * repeats
            # after the warm-up and the timed calls (the bank is threaded through all of them)
            "bank_episodes_held": int(failure_bank.size(bank).sum()) if with_bank else None,
            "episodes_per_trial": episodes / (args.repeats * args.batch),
            "episodes_past_max_episodes_fraction": past_max / max(episodes, 1),
        }
        print(
            f"{label:>13}: {trials_per_s:10.0f} trials/s "
            f"({trials_per_s * args.steps / 1e6:.2f} M env steps/s), "
            f"median {median_s * 1e3:.0f} ms per batch of {args.batch}, compile {compile_s:.1f} s"
        )
    ratio = results["with_bank"]["trials_per_s"] / results["without_bank"]["trials_per_s"]
    print(f"bank traffic keeps {ratio:.0%} of the throughput of the same trials without it")
    report = {
        "benchmark": "trial_throughput",
        "command": _common.command_line(__file__, argv if argv is not None else sys.argv[1:]),
        "env": f"Gridworld-v0 (W=7, X={NUM_BLOCKS}, C=6), random actions, reset_mode=diff",
        "batch": args.batch,
        "trial_steps": args.steps,
        "num_tasks": args.num_tasks,
        "bank_capacity": args.capacity,
        "bank_length": args.length,
        "max_episodes": args.max_episodes,
        "results": results,
        "with_over_without": ratio,
    }
    return _common.finish_report(report, load_start, out)


if __name__ == "__main__":
    main()

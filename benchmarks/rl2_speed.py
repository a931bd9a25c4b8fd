"""Bandit steps per second of RL^2's acting (the environment and the GRU policy together) at a batch of
4096 trials, side by side in one process with the same trials played by a uniformly random policy (the
environment and the trial runner alone), and the time of one RL^2 training update.

One jitted call plays ``--batch`` trials of ``--steps`` pulls of a ``--arms``-armed Bernoulli bandit
through :func:`jaxmeta.trial.run_trials`: with RL^2's policy (GRU of ``--gru`` units, sampling) and
with random actions. Compile time is reported apart; the rates are medians of the timed repeats.

    python benchmarks/rl2_speed.py [--batch 4096] [--steps 100] [--arms 10] [--repeats 5] [--quick]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:  # run as `python benchmarks/rl2_speed.py`
    sys.path.insert(0, _ROOT)

from benchmarks import _common  # noqa: E402
from jaxmeta import config, trial  # noqa: E402
from jaxmeta.algos import rl2  # noqa: E402


def rl2_config(arms: int, steps: int, batch: int, gru: int) -> Any:
    return config.load(
        None,
        [
            "algo.name=rl2",
            "env.id=BernoulliBandit-v0",
            f"env.num_arms={arms}",
            f"algo.gru_size={gru}",
            f"algo.trial.num_steps={steps}",
            f"algo.trial.batch_size={batch}",
            f"algo.eval.episodes={steps}",
            "algo.num_test_tasks=16",
            "algo.eval.num_tasks=16",
        ],
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--arms", type=int, default=10)
    parser.add_argument("--gru", type=int, default=256)
    parser.add_argument("--train-batch", type=int, default=64, help="trials per timed training update")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(_common.RESULTS_DIR / "rl2_speed.json"))
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny sizes")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.steps, args.gru, args.train_batch, args.repeats = 32, 10, 16, 8, 2
    cfg = rl2_config(args.arms, args.steps, args.train_batch, args.gru)
    parts = rl2.make_parts(cfg)
    env, env_params, network = parts.env, parts.env_params, parts.network
    state = parts.algo.init(jax.random.PRNGKey(0))
    tasks = jax.vmap(env.sample_task)(jax.random.split(jax.random.PRNGKey(1), args.batch))
    task_ids = jnp.arange(args.batch)

    def rl2_policy(params, inputs, hidden, memory, key):
        return rl2.act(network, params, inputs, hidden, key)

    def random_policy(params, inputs, carry, memory, key):
        return jax.random.randint(key, (), 0, args.arms), carry

    def play(policy, carry):
        def run(params, key):
            data, _, _ = trial.run_trials(
                env, env_params, policy, params, carry, tasks, task_ids, key, args.steps, "same"
            )
            return data.reward.sum(), data.action.size  # the work done: pulls counted in the call

        return run

    results: dict[str, Any] = {}
    pulls = args.batch * args.steps
    for name, policy, carry in (
        ("rl2", rl2_policy, network.initial_hidden()),
        ("random", random_policy, jnp.zeros(())),
    ):
        counted: list[int] = []
        timing = _common.compile_and_time(
            play(policy, carry),
            (state.params, jax.random.PRNGKey(2)),
            args.repeats,
            args_for_repeat=lambda i: (state.params, jax.random.PRNGKey(3 + i)),
            on_result=lambda out, timed, counted=counted: counted.append(int(out[1])) if timed else None,
        )
        entry = timing.to_dict()
        entry["pulls_per_call"] = pulls
        entry["pulls_timed"] = sum(counted)
        entry["steps_per_s"] = pulls / timing.median_s
        results[name] = entry
        print(
            f"{name:7s} {entry['steps_per_s']:12,.0f} steps/s (compile {timing.compile_s:.1f} s)", flush=True
        )

    def one_update(s: Any) -> Any:
        new_state, metrics = parts.algo.update(s)
        # The result depends on every new parameter, so XLA cannot drop any of the work.
        checksum = sum(jnp.sum(leaf) for leaf in jax.tree.leaves(new_state.params))
        return checksum, metrics["loss"]

    update = _common.compile_and_time(one_update, (state,), max(2, args.repeats // 2))
    update_entry = update.to_dict()
    update_entry["env_steps_per_update"] = args.train_batch * args.steps
    results["train_update"] = update_entry
    print(
        f"one training update of {args.train_batch} trials: {update.median_s:.3f} s "
        f"(compile {update.compile_s:.1f} s)"
    )
    report = {
        "config": vars(args),
        "machine": _common.machine_info(),
        "results": results,
        "ratio_random_over_rl2": results["random"]["steps_per_s"] / results["rl2"]["steps_per_s"],
    }
    _common.write_json(report, Path(args.out))
    return report


if __name__ == "__main__":
    main()

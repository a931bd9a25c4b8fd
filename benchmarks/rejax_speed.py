"""Training speed of our PPO and DQN next to rejax's, on CartPole-v1, in one process.

Both sides train from scratch for the same number of env steps with the same
hyper-parameters, batch shape and network (two 64-unit tanh/relu layers as
named below): ours is ``jaxmeta.algos.api.train(algo, key, num_updates)`` (``init``
then a ``lax.scan`` of updates), rejax's is ``algo.train(key)`` with its
periodic evaluation replaced by a no-op, so that both time training only.
Each side is compiled once (compile time reported apart) and then called
``--repeats`` times with fresh keys, alternating between the libraries so
that load changes hit both alike; reported are the medians, every repeat,
and training env steps per second (steps / median seconds). The ratio is
ours / rejax: above 1 means ours trains faster.

rejax 0.1.3 expects gymnax < 1.0 (a five-value ``step``): it gets gymnax's
CartPole through ``envs_jax.LegacyStepWrapper``, as ``tests/test_wrappers.py``
trains it. Known differences that stay (each side as its authors wrote it): rejax keeps
actor and critic in separate train states and takes two optimiser steps per
minibatch, ours one step on the summed loss; rejax clips gradients per
element (``optax.clip``), ours by global norm; our update also computes its
logging metrics.

    python benchmarks/rejax_speed.py [--algos ppo,dqn] [--repeats 5] [--out FILE.json]
    python benchmarks/rejax_speed.py --quick      # smoke run, writes nothing unless --out
"""

from __future__ import annotations

import argparse
import importlib.metadata
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:  # run as `python benchmarks/rejax_speed.py`
    sys.path.insert(0, _ROOT)

from benchmarks import _common  # noqa: E402

DEFAULT_OUT = _common.RESULTS_DIR / "rejax_speed.json"
TARGET_RATIO = 1.0

# The shared hyper-parameters: PureJaxRL's CartPole PPO (our ppo_cartpole config, lr not annealed
# because rejax's PPO does not anneal).
PPO = {
    "num_envs": 4,
    "num_steps": 128,
    "update_epochs": 4,
    "num_minibatches": 4,
    "learning_rate": 2.5e-4,
    "gamma": 0.99,
    "gae_lambda": 0.95,
    "clip_eps": 0.2,
    "ent_coef": 0.01,
    "vf_coef": 0.5,
    "max_grad_norm": 0.5,
}


def ours_ppo(total_steps: int) -> tuple[Callable[[jax.Array], Any], int]:
    """Our PPO's whole training as a function of a key, and the env steps it trains for."""
    from jaxmeta import config
    from jaxmeta.algos import api, ppo

    per_update = PPO["num_envs"] * PPO["num_steps"]
    updates = total_steps // per_update
    overrides = [f"algo.{k}={v}" for k, v in PPO.items()]
    cfg = config.load(
        None,
        [
            "algo.name=ppo",
            "env.id=CartPole-v1",
            *overrides,
            "algo.anneal_lr=false",
            "algo.hidden_sizes=[64,64]",
            "algo.activation=tanh",
            f"num_updates={updates}",
            f"chunk_size={updates}",
            f"eval_every={updates}",
            f"checkpoint_every={updates}",
        ],
    )
    algo = ppo.make(cfg)
    return (lambda key: api.train(algo, key, updates)[0].params), updates * per_update


def rejax_ppo(total_steps: int) -> tuple[Callable[[jax.Array], Any], int]:
    """rejax's PPO with the same settings, evaluation turned into a no-op."""
    import gymnax
    from rejax import PPO as RejaxPPO

    import envs_jax

    # rejax 0.1.3 steps gymnax < 1.0 environments (five values): the wrapper presents that API.
    env, env_params = gymnax.make("CartPole-v1")
    per_update = PPO["num_envs"] * PPO["num_steps"]
    steps = (total_steps // per_update) * per_update
    algo = RejaxPPO.create(
        env=envs_jax.LegacyStepWrapper(env),
        env_params=env_params,
        num_envs=PPO["num_envs"],
        num_steps=PPO["num_steps"],
        num_epochs=PPO["update_epochs"],
        num_minibatches=PPO["num_minibatches"],
        learning_rate=PPO["learning_rate"],
        gamma=PPO["gamma"],
        gae_lambda=PPO["gae_lambda"],
        clip_eps=PPO["clip_eps"],
        ent_coef=PPO["ent_coef"],
        vf_coef=PPO["vf_coef"],
        max_grad_norm=PPO["max_grad_norm"],
        total_timesteps=steps,
        eval_freq=steps,
        skip_initial_evaluation=True,
        agent_kwargs={"activation": "tanh", "hidden_layer_sizes": (64, 64)},
    )
    algo = algo.replace(eval_callback=lambda algo, ts, rng: jnp.zeros(()))
    return (lambda key: algo.train(key)[0].actor_ts.params), steps


# DQN with rejax's loop structure: every iteration steps the 10 envs once and takes one gradient step
# (ours: num_steps=1, gradient_steps=1 per update), double DQN, a hard target copy every 500 env steps,
# two hidden layers of 64 ReLU units (rejax's DQN network; ours: a 64-wide encoder layer and one more).
DQN = {
    "num_envs": 10,
    "buffer_size": 10_000,
    "learning_starts": 1_000,
    "batch_size": 128,
    "gradient_steps": 1,
    "learning_rate": 2.5e-4,
    "gamma": 0.99,
    "max_grad_norm": 10.0,
    "target_update_every": 500,
    "epsilon_start": 1.0,
    "epsilon_end": 0.05,
}


def ours_dqn(total_steps: int) -> tuple[Callable[[jax.Array], Any], int]:
    from jaxmeta import config
    from jaxmeta.algos import api, dqn

    updates = total_steps // DQN["num_envs"]
    cfg = config.load(
        None,
        [
            "algo.name=dqn",
            "env.id=CartPole-v1",
            *[f"algo.{k}={v}" for k, v in DQN.items()],
            "algo.num_steps=1",
            "algo.double_dqn=true",
            "algo.tau=1.0",
            f"algo.epsilon_anneal_steps={total_steps // 2}",
            "algo.features=64",
            "algo.hidden_sizes=[64]",
            f"num_updates={updates}",
            f"chunk_size={updates}",
            f"eval_every={updates}",
            f"checkpoint_every={updates}",
        ],
    )
    algo = dqn.make(cfg)
    return (lambda key: api.train(algo, key, updates)[0].params), updates * DQN["num_envs"]


def rejax_dqn(total_steps: int) -> tuple[Callable[[jax.Array], Any], int]:
    import gymnax
    from rejax import DQN as RejaxDQN

    import envs_jax

    env, env_params = gymnax.make("CartPole-v1")
    steps = (total_steps // DQN["num_envs"]) * DQN["num_envs"]
    algo = RejaxDQN.create(
        env=envs_jax.LegacyStepWrapper(env),
        env_params=env_params,
        num_envs=DQN["num_envs"],
        buffer_size=DQN["buffer_size"],
        fill_buffer=DQN["learning_starts"],
        batch_size=DQN["batch_size"],
        num_epochs=DQN["gradient_steps"],
        learning_rate=DQN["learning_rate"],
        gamma=DQN["gamma"],
        max_grad_norm=DQN["max_grad_norm"],
        target_update_freq=DQN["target_update_every"],
        polyak=0.0,  # a hard copy
        ddqn=True,
        eps_start=DQN["epsilon_start"],
        eps_end=DQN["epsilon_end"],
        exploration_fraction=0.5,
        total_timesteps=steps,
        eval_freq=steps,
        skip_initial_evaluation=True,
        agent_kwargs={"activation": "relu"},  # rejax's DQN has two hidden layers of 64
    )
    algo = algo.replace(eval_callback=lambda algo, ts, rng: jnp.zeros(()))
    return (lambda key: algo.train(key)[0].q_ts.params), steps


CASES: dict[str, tuple[Callable[[int], Any], Callable[[int], Any], dict[str, Any]]] = {
    "ppo": (ours_ppo, rejax_ppo, PPO),
    "dqn": (ours_dqn, rejax_dqn, DQN),
}


def bench(name: str, total_steps: int, repeats: int) -> dict[str, Any]:
    """Compile both sides, then alternate timed calls; medians and every repeat."""
    make_ours, make_rejax, settings = CASES[name]
    sides = {"jaxmeta": make_ours(total_steps), "rejax": make_rejax(total_steps)}
    compiled, compile_s, steps = {}, {}, {}
    for side, (fn, side_steps) in sides.items():
        start = time.perf_counter()
        compiled[side] = jax.jit(fn).lower(jax.random.PRNGKey(0)).compile()
        compile_s[side] = time.perf_counter() - start
        steps[side] = side_steps
        jax.block_until_ready(compiled[side](jax.random.PRNGKey(0)))  # warm-up
    times: dict[str, list[float]] = {side: [] for side in sides}
    for i in range(repeats):
        for side in sides:
            start = time.perf_counter()
            jax.block_until_ready(compiled[side](jax.random.PRNGKey(i + 1)))
            times[side].append(time.perf_counter() - start)
    result: dict[str, Any] = {"settings": settings, "env": "CartPole-v1"}
    for side in sides:
        median = statistics.median(times[side])
        result[side] = {
            "env_steps": steps[side],
            "compile_s": compile_s[side],
            "run_s": times[side],
            "median_s": median,
            "env_steps_per_s": steps[side] / median,
        }
    result["ours_over_rejax"] = result["jaxmeta"]["env_steps_per_s"] / result["rejax"]["env_steps_per_s"]
    return result


def format_table(report: dict[str, Any]) -> str:
    lines = [
        "| method | env steps | jaxmeta steps/s | rejax steps/s | ours / rejax | compile s (ours, rejax) |"
    ]
    lines.append("|---|---:|---:|---:|---:|---|")
    for name, r in report["results"].items():
        ours, theirs = r["jaxmeta"], r["rejax"]
        lines.append(
            f"| {name} | {ours['env_steps']:,} | {ours['env_steps_per_s']:,.0f} | "
            f"{theirs['env_steps_per_s']:,.0f} | {r['ours_over_rejax']:.2f}x | "
            f"{ours['compile_s']:.1f}, {theirs['compile_s']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algos", default=",".join(CASES), help=f"subset of {', '.join(CASES)}")
    parser.add_argument("--steps", type=int, default=None, help="env steps per training run (default 491520)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per side (default 5)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: few steps, 1 repeat")
    parser.add_argument("--out", type=Path, default=None, help=f"JSON file (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    names = [n for n in args.algos.split(",") if n]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"--algos: unknown {unknown}; choose from {', '.join(CASES)}")
    steps = args.steps or (4096 if args.quick else 491_520)
    repeats = args.repeats or (1 if args.quick else 5)
    load_start = _common.load_average()
    report: dict[str, Any] = {
        "command": _common.command_line(__file__, list(argv if argv is not None else sys.argv[1:])),
        "rejax_version": importlib.metadata.version("rejax"),
        "target_ratio": TARGET_RATIO,
        "results": {name: bench(name, steps, repeats) for name in names},
    }
    print(format_table(report))
    out = args.out if args.out is not None else (None if args.quick else DEFAULT_OUT)
    return _common.finish_report(report, load_start, str(out) if out else None)


if __name__ == "__main__":
    main()

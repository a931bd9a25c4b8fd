"""How a trained RL^2 bandit agent explores, beside the classic policies: which arms it pulls, not only
what it earns.

For a finished ``rl2`` run on ``BernoulliBandit-v0`` (its latest checkpoint, every seed) and for greedy,
UCB1 and Gittins (settings as in ``docs/bandits.md``), on the same fresh tasks:

- ``arms_tried_by``: how many distinct arms have been pulled after ``m`` pulls, for a few ``m``;
- ``best_arm_found``: the fraction of tasks whose best arm was pulled at least once in the trial;
- ``best_arm_late``: the fraction of the last tenth's pulls that go to the best arm;
- ``own_best_late``: the fraction of the last tenth's pulls that go to the arm that looks best from the
  agent's own pulls so far (highest posterior mean under Beta(1, 1); greedy: 100% by construction): below
  100% the agent either explores late or does not keep track of what it has seen;
- ``mean_reward``: the mean reward per pull.

An agent that explores too little tries fewer arms early and finds the best arm less often; one that
explores too much keeps pulling other arms late.

    python benchmarks/bandit_behaviour.py runs/rl2_bandit_n100_k5 [--tasks 1000] [--ucb-c 0.2]
        [--gittins-discount 0.98]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # run as `python benchmarks/bandit_behaviour.py`
    sys.path.insert(0, str(_ROOT))

from jaxmeta import bandits  # noqa: E402


def classic_arms(
    choose: Any, setting: Any, probs: jax.Array, num_pulls: int, key: jax.Array
) -> tuple[np.ndarray, np.ndarray]:
    """The arm and reward of every pull, ``([T, n], [T, n])``, of a :mod:`jaxmeta.bandits` policy."""
    rewards, arms = bandits.play_with_arms(choose, setting, probs, num_pulls, key)
    return np.asarray(arms), np.asarray(rewards)


def behaviour(
    arms: np.ndarray, rewards: np.ndarray, probs: np.ndarray, checkpoints: tuple[int, ...]
) -> dict[str, Any]:
    """The statistics of the module docstring from the arms and rewards ``[T, n]`` of the pulls on tasks
    ``probs [T, k]``."""
    num_tasks, num_pulls = arms.shape
    rows = np.arange(num_tasks)
    pulled = np.zeros((num_tasks, probs.shape[1]), bool)
    successes, failures = np.zeros(probs.shape), np.zeros(probs.shape)
    tried, on_own_best = {}, []
    late_from = num_pulls - max(1, num_pulls // 10)
    for t in range(num_pulls):
        if t >= late_from:
            looks_best = ((successes + 1) / (successes + failures + 2)).argmax(1)
            on_own_best.append(arms[:, t] == looks_best)
        pulled[rows, arms[:, t]] = True
        successes[rows, arms[:, t]] += rewards[:, t]
        failures[rows, arms[:, t]] += 1 - rewards[:, t]
        if t + 1 in checkpoints:
            tried[t + 1] = float(pulled.sum(1).mean())
    best = probs.argmax(1)
    late = arms[:, late_from:]
    return {
        "own_best_late": float(np.mean(on_own_best)),
        "arms_tried_by": tried,
        "best_arm_found": float(pulled[np.arange(num_tasks), best].mean()),
        "best_arm_late": float((late == best[:, None]).mean()),
        "mean_reward": float(np.take_along_axis(probs, arms, 1).mean()),  # expected, not sampled
    }


def rl2_arms(run_dir: Path, probs: np.ndarray, key: jax.Array) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(arms, rewards)`` of each seed of the trained run on tasks ``probs``, one trial of n pulls each."""
    from jaxmeta import config as config_lib
    from jaxmeta import runner
    from jaxmeta.algos import rl2
    from jaxmeta.trial import run_trials

    cfg = config_lib.load(str(run_dir / "config.yaml"), [f"run_dir={run_dir}"])
    if cfg.algo.name != "rl2" or cfg.env.id != "BernoulliBandit-v0":
        raise SystemExit(f"{run_dir} is not an rl2 run on BernoulliBandit-v0")
    _, state, _ = runner.restore_state(cfg)
    parts = rl2.make_parts(cfg)
    num_actions = int(parts.env.action_space(parts.env_params).n)
    network = rl2.make_network(cfg.algo, parts.env.observation_space(parts.env_params), num_actions)
    tasks = parts.env.sample_task(jax.random.PRNGKey(0), parts.env_params)
    tasks = jax.tree.map(lambda _: jnp.asarray(probs), tasks)  # the same fresh tasks as the classics
    greedy = bool(cfg.algo.eval.greedy)

    def policy(params: Any, inputs: Any, hidden: jax.Array, memory: Any, key: jax.Array) -> Any:
        return rl2.act(network, params, inputs, hidden, key, greedy)

    @jax.jit
    def play(params: Any) -> jax.Array:
        data, _, _ = run_trials(
            parts.env,
            parts.env_params,
            policy,
            params,
            network.initial_hidden(),
            tasks,
            jnp.arange(len(probs)),
            key,
            cfg.algo.eval.episodes,
            "same",
        )
        return data.action, data.reward

    per_seed = [jax.tree.map(lambda x, i=seed: x[i], state.params) for seed in range(cfg.seeds)]
    return [tuple(np.asarray(x) for x in play(params)) for params in per_seed]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--ucb-c", type=float, default=0.2)
    parser.add_argument("--gittins-discount", type=float, default=0.98)
    parser.add_argument("--out", default=None, help="JSON file (default: RUN_DIR/behaviour.json)")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    cfg = json.loads(json.dumps(__import__("yaml").safe_load((run_dir / "config.yaml").read_text())))
    num_arms, num_pulls = int(cfg["env"]["num_arms"]), int(cfg["algo"]["eval"]["episodes"])
    probs = np.asarray(bandits.uniform_tasks(jax.random.PRNGKey(2024), args.tasks, num_arms))
    checkpoints = tuple(m for m in (num_arms, 2 * num_arms, num_pulls // 5, num_pulls // 2) if m <= num_pulls)
    play_key = jax.random.PRNGKey(7)
    results: dict[str, Any] = {}
    played = rl2_arms(run_dir, probs, play_key)
    seeds = [behaviour(arms, rewards, probs, checkpoints) for arms, rewards in played]
    results["RL^2"] = {
        key: (
            {m: float(np.mean([s[key][m] for s in seeds])) for m in checkpoints}
            if key == "arms_tried_by"
            else float(np.mean([s[key] for s in seeds]))
        )
        for key in seeds[0]
    }
    classic = {
        "greedy": (bandits.greedy, None),
        f"UCB1 (c {args.ucb_c})": (bandits.ucb1, args.ucb_c),
        f"Gittins (discount {args.gittins_discount})": (
            bandits.gittins,
            bandits.gittins_indices(num_pulls, args.gittins_discount),
        ),
    }
    for name, (choose, setting) in classic.items():
        arms, rewards = classic_arms(choose, setting, jnp.asarray(probs), num_pulls, play_key)
        results[name] = behaviour(arms, rewards, probs, checkpoints)
    header = " | ".join(f"arms tried by pull {m}" for m in checkpoints)
    print(
        f"{args.tasks} fresh tasks of {num_arms} arms, {num_pulls} pulls; RL^2: mean over {len(seeds)} seeds"
    )
    print(
        f"| policy | {header} | best arm ever pulled | last tenth on the best arm | last tenth on the arm "
        "that looks best | expected reward a pull |"
    )
    print("|---|" + "---:|" * (len(checkpoints) + 4))
    for name, r in results.items():
        tried = " | ".join(f"{r['arms_tried_by'][m]:.2f}" for m in checkpoints)
        print(
            f"| {name} | {tried} | {100 * r['best_arm_found']:.1f}% | {100 * r['best_arm_late']:.1f}% "
            f"| {100 * r['own_best_late']:.1f}% | {r['mean_reward']:.3f} |"
        )
    out = Path(args.out) if args.out else run_dir / "behaviour.json"
    report = {"command": " ".join(["python benchmarks/bandit_behaviour.py", *(argv or sys.argv[1:])])}
    report["results"] = results
    out.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()

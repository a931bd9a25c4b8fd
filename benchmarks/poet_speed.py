"""POET's cost on this machine (issue 15): Walker-v0 env steps per second at batch 512, OpenES generations
per second at population 512 on the walker, and the wall time of a POET iteration with 10 and 20 active
pairs.

* **Env steps/s at batch 512**: one OpenES generation's rollouts, 512 candidates of POET's 40-40 tanh
  policy on a rough, stumpy, gappy terrain, each a fixed-length ``max_steps`` episode in one
  ``lax.scan`` (what POET computes: steps after a fall are simulated and masked); plus ask and tell.
* **POET iterations**: ``jaxmeta.algos.poet.build`` for ``configs/poet_walker.yaml`` (population 128)
  on a state with 10 or 20 active pairs on distinct mutated terrains; timed separately: a plain
  iteration (ES steps of every pair), a transfer iteration (every 25th) and a mutation iteration
  (every ``reproduce_every``-th, with the config's numbers also a transfer one), and their average over
  a reproduction period.

Medians of interleaved calls; compile times apart.

    python benchmarks/poet_speed.py [--repeats 5] [--quick] [--out PATH]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # run as `python benchmarks/poet_speed.py`
    sys.path.insert(0, str(_ROOT))

from benchmarks import _common  # noqa: E402
from jaxmeta import config  # noqa: E402
from jaxmeta.algos import poet  # noqa: E402
from jaxmeta.evolution import open_es  # noqa: E402
from jaxmeta.evolution.rollouts import population_fitness  # noqa: E402

TERRAIN = jnp.array([3.0, 0.2, 0.8, 0.4, 1.6])  # roughness, stumps 0.2-0.8 m, gaps 0.4-1.6 m


def crafted_state(parts: Any, active: int, key: jax.Array) -> Any:
    """A POET state with ``active`` pairs on distinct terrains, mutated in turn from flat ground."""
    state = parts.init(key)
    capacity = state.active.shape[0]
    terrains = [jnp.zeros(5)]
    for k in jax.random.split(key, active - 1):
        terrains.append(parts.env.mutate_encoding(k, terrains[-1]))
    terrain = jnp.zeros((capacity, 5)).at[:active].set(jnp.stack(terrains))
    means = jax.vmap(parts.policy.init)(jax.random.split(key, capacity))
    return state.replace(
        es=jax.vmap(lambda m: open_es.init(m, open_es.Settings(population_size=2)))(means),
        terrain=terrain,
        active=jnp.arange(capacity) < active,
        score=jnp.zeros(capacity),
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny populations and episodes")
    parser.add_argument("--out", default=str(_common.RESULTS_DIR / "poet_speed.json"))
    args = parser.parse_args(argv)
    quick = args.quick
    repeats, block_s = (1, 0.0) if quick else (args.repeats, 1.0)
    pairs_list = (2, 3) if quick else (10, 20)
    overrides = ["num_updates=1500", f"algo.max_active={max(pairs_list)}"]
    if quick:
        overrides += ["algo.max_steps=10", "algo.es.population_size=4", "algo.hidden_sizes=[4]"]
    cfg = config.load(str(_ROOT / "configs" / "poet_walker.yaml"), overrides)
    parts = poet.build(cfg)
    steps, population = cfg.algo.max_steps, (8 if quick else 512)

    # ---- one OpenES generation at population 512 on the walker
    settings = open_es.Settings(population_size=population)
    es_state = open_es.init(parts.policy.init(jax.random.PRNGKey(0)), settings)

    def generation(state: Any, key: jax.Array) -> tuple[Any, jax.Array]:
        ask_key, play_key = jax.random.split(key)
        candidates, noise = open_es.ask(ask_key, state, settings)
        fitness = population_fitness(
            parts.env, parts.env_params, parts.policy, candidates, TERRAIN, play_key, steps
        )
        return open_es.tell(state, noise, fitness, settings), fitness.mean()

    start = time.perf_counter()
    generation_fn = jax.jit(generation).lower(es_state, jax.random.PRNGKey(1)).compile()
    compile_s = {"ES generation": time.perf_counter() - start}
    carries: dict[str, Any] = {"ES generation": es_state}

    def run_generation() -> None:
        carries["ES generation"], out = generation_fn(carries["ES generation"], jax.random.PRNGKey(2))
        jax.block_until_ready(out)

    programs = {"ES generation": run_generation}

    # ---- POET iterations
    reproduce, transfer = cfg.algo.reproduce_every, cfg.algo.transfer_every
    # The iteration number t decides the work: ES steps always; transfers when t % transfer == 0;
    # a reproduction (MUTATE_ENVS) when t % reproduce == 0 (with the config's 50 and 25, also a transfer).
    transfer_only = next(t for t in range(transfer, 100 * transfer, transfer) if t % reproduce)
    kinds = {"plain": 1, "transfer": transfer_only, "reproduction": reproduce}
    update_fn = jax.jit(parts.update)
    for pairs in pairs_list:
        state = crafted_state(parts, pairs, jax.random.PRNGKey(pairs))
        for kind, t in kinds.items():
            name = f"POET {kind} iteration, {pairs} pairs"
            crafted = state.replace(iteration=jnp.asarray(t, jnp.int32))
            start = time.perf_counter()
            compiled = update_fn.lower(crafted).compile()
            compile_s[name] = time.perf_counter() - start

            def call(compiled: Any = compiled, crafted: Any = crafted) -> None:
                jax.block_until_ready(compiled(crafted))

            programs[name] = call
    load_start = _common.load_average()
    blocks = _common.interleaved_medians(programs, repeats, block_s)
    seconds = {name: statistics.median(t["block_s_per_call"]) for name, t in blocks.items()}
    per_iteration = {}
    for pairs in pairs_list:
        plain, moved, reproduced = (seconds[f"POET {k} iteration, {pairs} pairs"] for k in kinds)
        # One reproduction period: the reproduction iteration, the other transfer iterations, the rest plain.
        other_transfers = reproduce // transfer - (1 if reproduce % transfer == 0 else 0)
        plain_count = reproduce - 1 - other_transfers
        per_iteration[f"{pairs} pairs"] = {
            "plain_s": plain,
            "transfer_s": moved,
            "reproduction_s": reproduced,
            "average_s": (reproduced + other_transfers * moved + plain_count * plain) / reproduce,
        }
    generation_s = seconds["ES generation"]
    report = {
        "command": _common.command_line(__file__, argv if argv is not None else sys.argv[1:]),
        "work": {
            "ES generation": f"OpenES, {population} mirrored candidates of a {parts.policy.sizes} tanh MLP, "
            f"one {steps}-step Walker-v0 episode each on terrain {TERRAIN.tolist()}, ask + tell",
            "POET iteration": f"configs/poet_walker.yaml: OpenES {cfg.algo.es.population_size} per pair, "
            f"{steps}-step episodes; transfers with proposals every {transfer}, mutation every {reproduce}",
        },
        "es_generations_per_s": 1.0 / generation_s,
        "env_steps_per_s_batch_512": population * steps / generation_s,
        "poet_seconds_per_iteration": per_iteration,
        "seconds_per_call": seconds,
        "compile_s": compile_s,
        "repeats": repeats,
        "quick": quick,
    }
    print(
        f"ES generation (pop {population}): {1 / generation_s:.2f} /s = "
        f"{population * steps / generation_s:,.0f} env steps/s"
    )
    for pairs, row in per_iteration.items():
        print(
            f"POET, {pairs}: plain {row['plain_s']:.2f} s, transfer {row['transfer_s']:.2f} s, "
            f"reproduction {row['reproduction_s']:.2f} s, average {row['average_s']:.2f} s per iteration"
        )
    out = None if quick and args.out == parser.get_default("out") else args.out
    return _common.finish_report(report, load_start, out)


if __name__ == "__main__":
    main()

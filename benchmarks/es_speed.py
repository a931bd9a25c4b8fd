"""OpenES generations per second: ``jaxmeta.evolution.open_es`` against evosax 0.3's ``Open_ES`` on
identical rollouts, timed in one process (interleaved blocks, medians), as the anchor harness
``../shared/anchors/evosax_bench.py`` measures it.

The work of one generation, the same on both sides: 512 mirrored candidates of a 3-40-40-1 tanh MLP
policy (torque = 2 tanh(.)), one 200-step gymnax ``Pendulum-v1`` rollout each (the same env keys for
every candidate), and the ES update (evosax: optax Adam 0.01, sigma 0.05, centered ranks, minimising
-return; ours: POET's Adam 0.01, sigma 0.05 without decay, centered ranks, maximising the return).
Timed: a jitted generation per call, ten generations in one ``lax.scan``, and ask + tell alone on
fixed fitness values. Compile times are reported apart.

    python benchmarks/es_speed.py [--repeats 7] [--quick] [--out PATH]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # run as `python benchmarks/es_speed.py`
    sys.path.insert(0, str(_ROOT))

from benchmarks import _common  # noqa: E402
from jaxmeta.evolution import open_es  # noqa: E402

POPULATION, STEPS, SCAN, SIGMA, LEARNING_RATE, HIDDEN = 512, 200, 10, 0.05, 0.01, 40
TARGET = 1.0  # issue 15: ours >= this x evosax's generations/s


def make_rollout(steps: int) -> tuple[Any, Any]:
    """``(rollout(policy_params, key) -> return, initial policy params)`` on gymnax Pendulum-v1."""
    import gymnax

    env, env_params = gymnax.make("Pendulum-v1")
    sizes = [(env.observation_space(env_params).shape[0], HIDDEN), (HIDDEN, HIDDEN), (HIDDEN, 1)]

    def init_policy(key: jax.Array) -> dict:
        keys = jax.random.split(key, len(sizes))
        return {
            f"l{i}": {"w": jax.random.normal(k, s) / math.sqrt(s[0]), "b": jnp.zeros(s[1])}
            for i, (k, s) in enumerate(zip(keys, sizes, strict=True))
        }

    def policy(p: dict, obs: jax.Array) -> jax.Array:
        h = obs
        for i in range(len(sizes)):
            h = jnp.tanh(h @ p[f"l{i}"]["w"] + p[f"l{i}"]["b"])
        return 2.0 * h

    def rollout(p: dict, key: jax.Array) -> jax.Array:
        reset_key, step_key = jax.random.split(key)
        obs, state = env.reset(reset_key, env_params)

        def body(carry: tuple, k: jax.Array) -> tuple[tuple, None]:
            obs, state, total = carry
            obs, state, reward, _, _, _ = env.step(k, state, policy(p, obs), env_params)
            return (obs, state, total + reward), None

        (_, _, total), _ = jax.lax.scan(body, (obs, state, 0.0), jax.random.split(step_key, steps))
        return total

    return rollout, init_policy(jax.random.PRNGKey(0))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="smoke test: population 16, 20-step rollouts")
    parser.add_argument("--out", default=str(_common.RESULTS_DIR / "es_speed.json"))
    args = parser.parse_args(argv)
    try:
        from evosax.algorithms import Open_ES
    except ImportError:
        print("es_speed needs evosax: pip install -e '.[bench]'", file=sys.stderr)
        raise SystemExit(2) from None
    population, steps, block_s = (16, 20, 0.05) if args.quick else (POPULATION, STEPS, 0.3)
    repeats = 2 if args.quick else args.repeats
    rollout, policy0 = make_rollout(steps)
    flat0, unravel = ravel_pytree(policy0)

    # ---- evosax (minimises): fitness = -return
    es = Open_ES(
        population_size=population,
        solution=policy0,
        use_antithetic_sampling=True,
        optimizer=optax.adam(LEARNING_RATE),
        std_schedule=optax.constant_schedule(SIGMA),
    )
    es_params = es.default_params

    def evosax_generation(carry: tuple, _: Any = None) -> tuple[tuple, jax.Array]:
        state, key = carry
        key, ask_key, env_key, tell_key = jax.random.split(key, 4)
        candidates, state = es.ask(ask_key, state, es_params)
        returns = jax.vmap(rollout, in_axes=(0, None))(candidates, env_key)
        state, _ = es.tell(tell_key, candidates, -returns, state, es_params)
        return (state, key), returns.mean()

    def evosax_ask_tell(carry: tuple, fitness: jax.Array) -> tuple[tuple, jax.Array]:
        state, key = carry
        key, ask_key, tell_key = jax.random.split(key, 3)
        candidates, state = es.ask(ask_key, state, es_params)
        state, metrics = es.tell(tell_key, candidates, fitness, state, es_params)
        return (state, key), metrics["best_fitness"]

    # ---- ours (maximises)
    settings = open_es.Settings(
        population_size=population,
        sigma_init=SIGMA,
        sigma_decay=1.0,
        learning_rate=LEARNING_RATE,
        l2_coeff=0.0,
    )

    def ours_generation(carry: tuple, _: Any = None) -> tuple[tuple, jax.Array]:
        state, key = carry
        key, ask_key, env_key = jax.random.split(key, 3)
        candidates, noise = open_es.ask(ask_key, state, settings)
        returns = jax.vmap(lambda flat: rollout(unravel(flat), env_key))(candidates)
        return (open_es.tell(state, noise, returns, settings), key), returns.mean()

    def ours_ask_tell(carry: tuple, fitness: jax.Array) -> tuple[tuple, jax.Array]:
        state, key = carry
        key, ask_key = jax.random.split(key)
        _, noise = open_es.ask(ask_key, state, settings)
        return (open_es.tell(state, noise, fitness, settings), key), fitness.max()

    fitness = jax.random.normal(jax.random.PRNGKey(3), (population,))
    evosax_state = es.init(jax.random.PRNGKey(1), policy0, es_params)
    # evosax's init returns weakly typed scalars that its jitted step returns strongly typed: one warm
    # step first so that the timed executables see their steady-state types
    evosax_state = jax.jit(evosax_ask_tell)((evosax_state, jax.random.PRNGKey(9)), fitness)[0][0]
    starts = {
        "evosax": (evosax_state, jax.random.PRNGKey(10)),
        "ours": (open_es.init(flat0, settings), jax.random.PRNGKey(10)),
    }
    programs = {
        "evosax, jit per generation": ("evosax", evosax_generation, 1, False),
        f"evosax, lax.scan x{SCAN} (per generation)": ("evosax", evosax_generation, SCAN, False),
        "evosax, ask + tell only": ("evosax", evosax_ask_tell, 1, True),
        "ours, jit per generation": ("ours", ours_generation, 1, False),
        f"ours, lax.scan x{SCAN} (per generation)": ("ours", ours_generation, SCAN, False),
        "ours, ask + tell only": ("ours", ours_ask_tell, 1, True),
    }
    compiled, carries, compile_s = {}, {}, {}
    for name, (side, fn, length, fixed) in programs.items():
        carry = starts[side]
        if fixed:
            program = jax.jit(fn)
            example = (carry, fitness)
        elif length == 1:
            program = jax.jit(fn)
            example = (carry,)
        else:
            program = jax.jit(lambda c, fn=fn, length=length: jax.lax.scan(fn, c, None, length=length))
            example = (carry,)
        start = time.perf_counter()
        compiled[name] = program.lower(*example).compile()
        compile_s[name] = time.perf_counter() - start
        carries[name] = carry

    def runner(name: str) -> Any:
        fixed = programs[name][3]

        def call() -> None:
            inputs = (carries[name], fitness) if fixed else (carries[name],)
            carries[name], out = compiled[name](*inputs)
            jax.block_until_ready(out)

        return call

    load_start = _common.load_average()
    blocks = _common.interleaved_medians({name: runner(name) for name in programs}, repeats, block_s)
    per_generation = {
        name: [s / programs[name][2] for s in timing["block_s_per_call"]] for name, timing in blocks.items()
    }
    rates = {name: 1.0 / statistics.median(times) for name, times in per_generation.items()}
    ratios = {
        kind: rates[f"ours, {kind}"] / rates[f"evosax, {kind}"]
        for kind in ("jit per generation", f"lax.scan x{SCAN} (per generation)", "ask + tell only")
    }
    report = {
        "command": _common.command_line(__file__, argv if argv is not None else sys.argv[1:]),
        "work": f"OpenES generation: {population} mirrored candidates of a 3-{HIDDEN}-{HIDDEN}-1 tanh MLP "
        f"({flat0.size} parameters), one {steps}-step gymnax Pendulum-v1 rollout each, the ES update",
        "generations_per_s": rates,
        "env_steps_per_s": {
            name: rate * population * steps for name, rate in rates.items() if "ask + tell" not in name
        },
        "seconds_per_generation": per_generation,
        "compile_s": compile_s,
        "ratios_ours_over_evosax": ratios,
        "target": {
            f"ours / evosax >= {TARGET} (scan)": ratios[f"lax.scan x{SCAN} (per generation)"] >= TARGET
        },
        "repeats": repeats,
        "quick": args.quick,
    }
    for name, rate in rates.items():
        print(f"{name:>42}: {rate:9.1f} generations/s  (compile {compile_s[name]:.1f} s)")
    for kind, ratio in ratios.items():
        print(f"ours / evosax, {kind}: {ratio:.2f}x")
    out = None if args.quick and args.out == parser.get_default("out") else args.out
    return _common.finish_report(report, load_start, out)


if __name__ == "__main__":
    main()

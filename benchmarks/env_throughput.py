"""Environment throughput: Gridworld-v0 next to gymnax Breakout-MinAtar and xminigrid FourRooms.

Every environment runs the same loop: one jitted ``lax.scan`` of ``--steps``
steps over a batch of ``vmap``-ed environments, with uniformly random actions
drawn by ``jax.random`` inside the scan and auto-reset on (gymnax's built-in
auto-reset for Gridworld and Breakout, xminigrid's ``GymAutoResetWrapper``,
which resets on the step that ends the episode, like gymnax). Each step's
observations, rewards and done flags are summed into the scan carry so that
XLA cannot drop the work that produces them.

Reported per environment and batch size: steps/s (``batch * steps / seconds``)
as the median of ``--repeats`` calls of the compiled rollout, every repeat, and
the compile time on its own. Ratios Gridworld / Breakout and Gridworld /
xminigrid are taken from medians measured in the same run, batch by batch, with
the environments interleaved so that load changes hit all of them alike.

Usage::

    python benchmarks/env_throughput.py [--batches 1,64,1024,8192] [--steps 1000]
        [--repeats 5] [--out benchmarks/results/env_throughput.json]
    python benchmarks/env_throughput.py --quick   # smoke run, writes nothing unless --out
"""

from __future__ import annotations

import argparse
import importlib.metadata
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:  # run as `python benchmarks/env_throughput.py`
    sys.path.insert(0, _ROOT)

from benchmarks import _common  # noqa: E402

DEFAULT_OUT = _common.RESULTS_DIR / "env_throughput.json"
REFERENCE = "gridworld"
# Targets from the issue, checked at the largest batch of the run.
TARGETS = {"breakout": 1.0, "xminigrid": 10.0}


@dataclass
class BatchedEnv:
    """One environment behind a common batched interface.

    ``init(key, batch)`` returns the batched state; ``step(key, state, actions)``
    returns ``(obs, state, reward, done)`` for the whole batch, auto-resetting
    finished environments.
    """

    name: str
    env_id: str
    library: str
    num_actions: int
    obs_desc: str
    init: Callable[[jax.Array, int], Any]
    step: Callable[[jax.Array, Any, jax.Array], tuple[Any, Any, jax.Array, jax.Array]]


def _lib_version(dist: str) -> str:
    try:
        return f"{dist} {importlib.metadata.version(dist)}"
    except importlib.metadata.PackageNotFoundError:
        return dist


def _gymnax_style(name: str, env_id: str, library: str, env: Any, params: Any) -> BatchedEnv:
    """gymnax 1.x API: ``reset(key, params)``, ``step(key, state, action, params)`` with auto-reset."""
    v_reset = jax.vmap(env.reset, in_axes=(0, None))
    v_step = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def init(key: jax.Array, batch: int) -> Any:
        _, state = v_reset(jax.random.split(key, batch), params)
        return state

    def step(key: jax.Array, state: Any, actions: jax.Array) -> tuple[Any, Any, jax.Array, jax.Array]:
        keys = jax.random.split(key, actions.shape[0])
        obs, state, reward, terminated, truncated, _ = v_step(keys, state, actions, params)
        return obs, state, reward, terminated | truncated

    space = env.observation_space(params)
    return BatchedEnv(
        name=name,
        env_id=env_id,
        library=library,
        num_actions=int(env.num_actions),
        obs_desc=f"{tuple(space.shape)} {jnp.dtype(space.dtype).name}",
        init=init,
        step=step,
    )


def make_gridworld() -> BatchedEnv:
    import envs_jax

    env, params = envs_jax.make("Gridworld-v0")
    return _gymnax_style("gridworld", "Gridworld-v0", "envs_jax", env, params)


def make_breakout() -> BatchedEnv:
    import gymnax

    env, params = gymnax.make("Breakout-MinAtar")
    return _gymnax_style("breakout", "Breakout-MinAtar", _lib_version("gymnax"), env, params)


def make_xminigrid() -> BatchedEnv | None:
    """xminigrid FourRooms, or ``None`` when xminigrid is not installed.

    xminigrid's ``step(params, timestep, action)`` takes no key (the state
    carries its own) and returns a ``TimeStep``; ``GymAutoResetWrapper``
    replaces the state and observation with a fresh episode's on the last step.
    """
    try:
        import xminigrid
        from xminigrid.wrappers import GymAutoResetWrapper
    except ImportError:
        return None
    env, params = xminigrid.make("MiniGrid-FourRooms")
    env = GymAutoResetWrapper(env)
    v_reset = jax.vmap(env.reset, in_axes=(None, 0))
    v_step = jax.vmap(env.step, in_axes=(None, 0, 0))

    def init(key: jax.Array, batch: int) -> Any:
        return v_reset(params, jax.random.split(key, batch))

    def step(key: jax.Array, timestep: Any, actions: jax.Array) -> tuple[Any, Any, jax.Array, jax.Array]:
        del key
        timestep = v_step(params, timestep, actions)
        return timestep.observation, timestep, timestep.reward, timestep.last()

    obs_shape = tuple(env.observation_shape(params))
    return BatchedEnv(
        name="xminigrid",
        env_id="MiniGrid-FourRooms",
        library=_lib_version("xminigrid"),
        num_actions=int(env.num_actions(params)),
        obs_desc=f"{obs_shape} uint8",
        init=init,
        step=step,
    )


ENV_FACTORIES: dict[str, Callable[[], BatchedEnv | None]] = {
    "gridworld": make_gridworld,
    "breakout": make_breakout,
    "xminigrid": make_xminigrid,
}


def make_rollout(
    env: BatchedEnv, batch: int, num_steps: int
) -> Callable[[Any, jax.Array], tuple[jax.Array, jax.Array]]:
    """``rollout(state, key) -> (checksum, env_steps)``: ``num_steps`` random-action steps in one
    ``lax.scan``; ``env_steps`` counts, inside the scan, the transitions the batched ``step`` returned
    (one reward each)."""

    def rollout(state: Any, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        def body(carry: tuple[Any, jax.Array, jax.Array, jax.Array], _: None) -> tuple[Any, None]:
            state, key, acc, count = carry
            key, key_act, key_step = jax.random.split(key, 3)
            actions = jax.random.randint(key_act, (batch,), 0, env.num_actions)
            obs, state, reward, done = env.step(key_step, state, actions)
            obs_sum = sum(jnp.sum(leaf, dtype=jnp.float32) for leaf in jax.tree.leaves(obs))
            acc = acc + obs_sum + jnp.sum(reward, dtype=jnp.float32) + jnp.sum(done, dtype=jnp.float32)
            return (state, key, acc, count + jnp.size(reward)), None

        init = (state, key, jnp.float32(0.0), jnp.int32(0))
        (_, _, acc, count), _ = jax.lax.scan(body, init, None, length=num_steps)
        return acc, count

    return rollout


def bench_one(
    env: BatchedEnv, batch: int, num_steps: int, repeats: int, seed: int, case_budget_s: float | None
) -> dict[str, Any]:
    key_init, key_run = jax.random.split(jax.random.key(seed))
    state = jax.block_until_ready(jax.jit(env.init, static_argnums=1)(key_init, batch))
    run_keys = jax.random.split(key_run, repeats + 1)
    counted = []  # env steps each timed call reports having run

    def count(out: tuple[jax.Array, jax.Array], timed: bool) -> None:
        if timed:
            counted.append(int(out[1]))

    timing = _common.compile_and_time(
        make_rollout(env, batch, num_steps),
        (state, run_keys[0]),
        repeats,
        args_for_repeat=lambda i: (state, run_keys[i]),
        case_budget_s=case_budget_s,
        on_result=count,
    )
    steps = batch * num_steps
    result = {
        "batch": batch,
        "steps": num_steps,
        "env_steps_per_call": steps,
        # counted by the timed calls themselves: batch * steps * repeats unless a step was lost
        "env_steps_timed": sum(counted),
        "steps_per_s": steps / timing.median_s,
        "steps_per_s_repeats": [steps / t for t in timing.run_s],
        "steps_per_cpu_s": steps / statistics.median(timing.cpu_s),
        **timing.to_dict(),
    }
    return result


def _parse_batches(text: str) -> list[int]:
    try:
        batches = [int(b) for b in text.split(",") if b.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--batches wants comma-separated integers, got {text!r}") from err
    if not batches or any(b < 1 for b in batches):
        raise argparse.ArgumentTypeError(f"--batches wants positive integers, got {text!r}")
    return batches


def _parse_envs(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in ENV_FACTORIES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"--envs: unknown {unknown}; choose from {', '.join(ENV_FACTORIES)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=_parse_batches, default=None, help="default 1,64,1024,8192")
    parser.add_argument("--steps", type=int, default=None, help="scan length per call (default 1000)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per case (default 5)")
    parser.add_argument(
        "--case-budget",
        type=float,
        default=150.0,
        help="seconds of timed calls allowed per case; slow cases get fewer repeats (min 3)",
    )
    parser.add_argument("--envs", type=_parse_envs, default=list(ENV_FACTORIES), help="subset to run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help=f"JSON file (default {DEFAULT_OUT})")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: batches 1,8, 20 steps, 2 repeats, no JSON unless --out",
    )
    return parser


def _ratios(results: dict[str, dict[str, Any]], batches: Sequence[int]) -> dict[str, dict[str, float]]:
    """``{"gridworld/<other>": {batch: ratio of median steps/s}}``."""
    out: dict[str, dict[str, float]] = {}
    ref = results.get(REFERENCE, {})
    for other in results:
        if other == REFERENCE:
            continue
        per_batch = {}
        for b in batches:
            if str(b) in ref and str(b) in results[other]:
                per_batch[str(b)] = ref[str(b)]["steps_per_s"] / results[other][str(b)]["steps_per_s"]
        out[f"{REFERENCE}/{other}"] = per_batch
    return out


def _fmt_rate(x: float) -> str:
    if x >= 1e9:
        return f"{x / 1e9:.2f}G"
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k"
    return f"{x:.0f}"


def format_table(report: dict[str, Any]) -> str:
    envs = list(report["results"])
    batches = report["config"]["batches"]
    ratio_names = list(report["ratios"])
    lines = [
        f"steps/s: median of repeats (wall clock), {report['config']['steps']} steps per jitted scan; "
        "[compile s] xrepeats",
        "ratios: Gridworld steps/s over the other env's, same batch, same run",
    ]
    header = f"{'batch':>6} " + "".join(f"{name:>25}" for name in envs)
    header += "".join(f"{name:>25}" for name in ratio_names)
    lines += [header, "-" * len(header)]
    for b in batches:
        row = f"{b:>6} "
        for name in envs:
            r = report["results"][name].get(str(b))
            cell = "-"
            if r is not None:
                cell = f"{_fmt_rate(r['steps_per_s'])} [{r['compile_s']:.1f}s] x{r['repeats_done']}"
            row += f"{cell:>25}"
        for name in ratio_names:
            v = report["ratios"][name].get(str(b))
            row += f"{'-' if v is None else f'{v:.2f}x':>25}"
        lines.append(row)
    for name, t in report["targets"].items():
        status = "n/a" if t["met"] is None else ("met" if t["met"] else "MISSED")
        measured = "-" if t["measured"] is None else f"{t['measured']:.2f}x"
        lines.append(f"target {name} >= {t['target']:.1f}x at batch {t['batch']}: {measured} ({status})")
    load = f"start {report['load_average_start']}, end {report['load_average_end']}"
    lines.append(f"load average (1/5/15 min): {load}")
    lines += [f"note: {note}" for note in report["notes"]]
    return "\n".join(lines)


def run(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    if args.quick:
        batches = args.batches or [1, 8]
        steps = args.steps or 20
        repeats = args.repeats or 2
    else:
        batches = args.batches or [1, 64, 1024, 8192]
        steps = args.steps or 1000
        repeats = args.repeats or 5
    if steps < 1 or repeats < 1:
        raise SystemExit("--steps and --repeats must be >= 1")

    notes: list[str] = []
    envs: list[BatchedEnv] = []
    for name in args.envs:
        env = ENV_FACTORIES[name]()
        if env is None:
            notes.append(f"{name} skipped: not installed")
        else:
            envs.append(env)

    load_start = _common.load_average()
    t_start = time.perf_counter()
    results: dict[str, dict[str, Any]] = {env.name: {} for env in envs}
    # Batch-major order: the environments of one batch size run back to back.
    for b in batches:
        for env in envs:
            r = bench_one(env, b, steps, repeats, args.seed, args.case_budget)
            results[env.name][str(b)] = r
            if r["note"]:
                notes.append(f"{env.name} batch {b}: {r['note']}")
            print(
                f"{env.name:>10} batch {b:>6}: {_fmt_rate(r['steps_per_s']):>8} steps/s "
                f"(compile {r['compile_s']:.2f}s, {r['repeats_done']} repeats, "
                f"call {r['median_s']:.3f}s)",
                flush=True,
            )
    load_end = _common.load_average()

    ratios = _ratios(results, batches)
    big = max(batches)
    targets = {}
    for other, target in TARGETS.items():
        if other not in results or REFERENCE not in results:
            continue
        measured = ratios[f"{REFERENCE}/{other}"].get(str(big))
        targets[f"{REFERENCE}/{other}"] = {
            "target": target,
            "batch": big,
            "measured": measured,
            "met": None if measured is None else bool(measured >= target),
        }
    return {
        "benchmark": "env_throughput",
        "command": _common.command_line(__file__, argv),
        "config": {
            "batches": batches,
            "steps": steps,
            "repeats": repeats,
            "case_budget_s": args.case_budget,
            "seed": args.seed,
            "quick": args.quick,
            "method": (
                "one jitted lax.scan of `steps` steps over vmap-ed envs; uniform random actions from "
                "jax.random inside the scan; auto-reset on; obs, reward and done summed into the carry; "
                "steps_per_s = batch*steps / median wall time of the compiled call; compile time "
                "measured separately (lower+compile)"
            ),
        },
        "envs": {
            env.name: {
                "env_id": env.env_id,
                "library": env.library,
                "num_actions": env.num_actions,
                "obs": env.obs_desc,
            }
            for env in envs
        },
        "results": results,
        "ratios": ratios,
        "targets": targets,
        "notes": notes,
        "machine": _common.machine_info(),
        "load_average_start": load_start,
        "load_average_end": load_end,
        "total_s": time.perf_counter() - t_start,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    report = run(args, argv)
    print()
    print(format_table(report))
    out = args.out if args.out is not None else (None if args.quick else DEFAULT_OUT)
    if out is not None:
        path = _common.write_json(report, out)
        print(f"\nwrote {path}")
    return report


if __name__ == "__main__":
    main()

"""What the io_callback path costs: host environments stepped from a jitted scan against the same batch
stepped directly in Python (issue 16's target: the callback path at most 1.5x the direct stepping).

Both sides step the SAME kind of host batch (``envs_jax.host``'s ``ProcgenBatch`` or ``RoomBatch``) with
uniformly random actions, each env on its own task (a level / a layout), and reset the envs whose episode
ended:

* ``direct``: a Python loop, ``batch.step(actions)`` then ``batch.reset(seeds, done, tasks)`` when some
  episode ended (numpy random actions);
* ``callback``: one compiled ``lax.scan`` of ``envs_jax.vector.step_and_reset`` (what a jitted trial
  or rollout does: for a host env, ONE ordered ``io_callback`` per step that steps the batch and resets
  the envs whose episode ended), random actions from ``jax.random`` inside the scan.

* ``floor``: the callback path with the env's work taken out: the same ``HostEnv`` spaces, tasks and
  scan, but a batch that returns ready-made arrays (:class:`IdleBatch`). Its time is what the callback
  path costs whatever the env (XLA's ordered ``io_callback``, the transfers, the adapter), so
  ``(floor + direct) / direct`` is the lowest ratio the callback path can reach on this machine.

Reported per environment and batch size: env steps/s of each side (median over interleaved blocks of
whole rollouts, rotated so that load changes hit both alike), the ratio of their seconds per rollout
(callback / direct), and the scan's compile time on its own.

Usage::

    python benchmarks/host_overhead.py [--steps 200] [--repeats 7] [--out PATH]
    python benchmarks/host_overhead.py --quick   # smoke run, writes nothing unless --out
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:  # run as `python benchmarks/host_overhead.py`
    sys.path.insert(0, _ROOT)

from benchmarks import _common  # noqa: E402
from envs_jax.vector import step_and_reset  # noqa: E402

DEFAULT_OUT = _common.RESULTS_DIR / "host_overhead.json"
TARGET_RATIO = 1.5  # callback seconds / direct seconds, at most


def procgen_case(num_envs: int) -> tuple[Any, Any, Any]:
    """(HostEnv, its batch for direct stepping, tasks [N]): CoinRun, easy, 64x64, levels 0..N-1."""
    from envs_jax.host import procgen

    with contextlib.redirect_stderr(io.StringIO()):  # old gym's import notice
        env = procgen.make_procgen("coinrun")
    batch = procgen.ProcgenBatch(num_envs, "coinrun")
    return env, batch, jnp.arange(num_envs, dtype=jnp.int32)


def miniworld_case(num_envs: int) -> tuple[Any, Any, Any]:
    """(HostEnv, its batch, tasks): the three-box room at its default 60x80 view, drawn layouts."""
    import envs_jax.tasks
    from envs_jax.host import miniworld_room

    env = miniworld_room.make_miniworld_room()
    tasks = envs_jax.tasks.task_set(env, jax.random.PRNGKey(0), num_envs, env.default_params)
    return env, miniworld_room.RoomBatch(num_envs), tasks


CASES = {"procgen_coinrun": procgen_case, "miniworld_three_boxes": miniworld_case}


class IdleBatch:
    """A host batch that does no work: observations of ``shape`` and zero rewards, made once."""

    def __init__(self, num_envs: int, shape: tuple[int, ...], dtype: Any) -> None:
        self.num_envs = num_envs
        self._obs = np.zeros((num_envs, *shape), dtype)
        self._zeros = np.zeros(num_envs, np.float32)
        self._false = np.zeros(num_envs, bool)

    def reset(self, seeds: np.ndarray, mask: np.ndarray, tasks: Any = None) -> np.ndarray:
        return self._obs

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return self._obs, self._zeros, self._false, self._false


def idle_env(env: Any) -> Any:
    """``env``'s spaces, params and task interface over :class:`IdleBatch` batches."""
    from envs_jax.host import HostEnv

    space = env.observation_space(env.default_params)
    return HostEnv(
        "idle",
        lambda num_envs: IdleBatch(num_envs, tuple(space.shape), space.dtype),
        space,
        env.action_space(env.default_params),
        env.default_params,
        sample_task=getattr(env, "sample_task", None),
    )


def callback_rollout(env: Any, tasks: Any, num_envs: int, steps: int) -> Any:
    """A jitted-scan rollout through ``HostEnv``: ``key -> checksum`` (the checksum keeps every step's
    outputs alive)."""
    params = env.default_params
    num_actions = env.num_actions

    def rollout(key: jax.Array) -> jax.Array:
        reset_key, key = jax.random.split(key)
        obs, state = env.reset(jax.random.split(reset_key, num_envs), params, tasks)

        def body(carry: Any, step_key: jax.Array) -> tuple[Any, None]:
            obs, state, total = carry
            action_key, env_key, again_key = jax.random.split(step_key, 3)
            actions = jax.random.randint(action_key, (num_envs,), 0, num_actions)
            _, obs, state, reward, _, _, _ = step_and_reset(
                env,
                jax.random.split(env_key, num_envs),
                jax.random.split(again_key, num_envs),
                state,
                actions,
                params,
                tasks,
            )
            total = total + reward.sum() + obs[:, 0, 0, 0].astype(jnp.float32).sum()
            return (obs, state, total), None

        (_, _, total), _ = jax.lax.scan(body, (obs, state, jnp.zeros(())), jax.random.split(key, steps))
        return total

    return rollout


def direct_rollout(batch: Any, tasks: Any, steps: int, num_actions: int, rng: np.random.Generator) -> float:
    """The same work in a Python loop over ``batch`` (numpy random actions)."""
    num_envs = batch.num_envs
    host_tasks = jax.tree.map(np.asarray, tasks)
    seeds = rng.integers(0, 2**32, num_envs, dtype=np.uint32)
    obs = batch.reset(seeds, np.ones(num_envs, bool), host_tasks)
    total = 0.0
    for _ in range(steps):
        obs, reward, terminated, truncated = batch.step(rng.integers(0, num_actions, num_envs))
        done = np.asarray(terminated) | np.asarray(truncated)
        if done.any():
            obs = batch.reset(rng.integers(0, 2**32, num_envs, dtype=np.uint32), done, host_tasks)
        total += float(np.sum(reward)) + float(obs[:, 0, 0, 0].astype(np.float32).sum())
    return total


def measure(name: str, num_envs: int, steps: int, repeats: int) -> dict[str, Any]:
    env, batch, tasks = CASES[name](num_envs)
    rollout = callback_rollout(env, tasks, num_envs, steps)
    start = time.perf_counter()
    compiled = jax.jit(rollout).lower(jax.random.PRNGKey(0)).compile()
    compile_s = time.perf_counter() - start
    floor = jax.jit(callback_rollout(idle_env(env), tasks, num_envs, steps))
    keys = iter(jax.random.split(jax.random.PRNGKey(1), 10_000))
    rng = np.random.default_rng(0)
    fns = {
        "callback": lambda: jax.block_until_ready(compiled(next(keys))),
        "direct": lambda: direct_rollout(batch, tasks, steps, env.num_actions, rng),
        "floor": lambda: jax.block_until_ready(floor(next(keys))),
    }
    blocks = _common.interleaved_medians(fns, repeats, block_s=0.5)
    seconds = {side: statistics.median(b["block_s_per_call"]) for side, b in blocks.items()}
    with contextlib.suppress(AttributeError):
        batch.close()
    return {
        "env": name,
        "num_envs": num_envs,
        "steps_per_rollout": steps,
        "compile_s": compile_s,
        "seconds_per_rollout": seconds,
        "env_steps_per_s": {side: num_envs * steps / s for side, s in seconds.items()},
        "ratio_callback_over_direct": seconds["callback"] / seconds["direct"],
        "lowest_reachable_ratio": (seconds["floor"] + seconds["direct"]) / seconds["direct"],
        "floor_ms_per_step": 1e3 * seconds["floor"] / steps,
        "direct_ms_per_step": 1e3 * seconds["direct"] / steps,
        "blocks": blocks,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="steps per rollout")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved blocks per side")
    parser.add_argument("--procgen-batches", default=None, help="batch sizes for CoinRun (8,64; quick: 2)")
    parser.add_argument(
        "--miniworld-batches", default=None, help="batch sizes for the three-box room (8; quick: 2)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke run")
    parser.add_argument("--out", default=None, help=f"JSON results (default without --quick: {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    if args.quick:  # tiny sizes
        args.steps, args.repeats = 20, 2
    if args.procgen_batches is None:
        args.procgen_batches = "2" if args.quick else "8,64"
    if args.miniworld_batches is None:
        args.miniworld_batches = "2" if args.quick else "8"
    out = args.out if args.out or args.quick else str(DEFAULT_OUT)
    load_start = _common.load_average()
    plan = [("procgen_coinrun", int(b)) for b in args.procgen_batches.split(",") if b] + [
        ("miniworld_three_boxes", int(b)) for b in args.miniworld_batches.split(",") if b
    ]
    results = []
    for name, num_envs in plan:
        row = measure(name, num_envs, args.steps, args.repeats)
        results.append(row)
        rates = row["env_steps_per_s"]
        print(
            f"{name:>22} batch {num_envs:>3}: direct {rates['direct']:>9,.0f} env steps/s, "
            f"callback {rates['callback']:>9,.0f} (compile {row['compile_s']:.1f} s): "
            f"callback / direct = {row['ratio_callback_over_direct']:.2f} (target <= {TARGET_RATIO}); "
            f"the callbacks alone {row['floor_ms_per_step']:.2f} ms a step, so at best "
            f"{row['lowest_reachable_ratio']:.2f}"
        )
    report = {
        "command": _common.command_line(__file__, sys.argv[1:] if argv is None else argv),
        "work": "random actions on each env's own task, resets where episodes ended; callback: a jitted "
        "lax.scan of envs_jax.vector.step_and_reset (one ordered io_callback per step: the step and the "
        "resets of the envs whose episode ended); floor: the callback path over a batch that does no work",
        "jax_version": jax.__version__,
        "target": f"callback / direct <= {TARGET_RATIO}",
        "results": results,
        "quick": args.quick,
    }
    return _common.finish_report(report, load_start, out)


if __name__ == "__main__":
    main()

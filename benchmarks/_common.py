"""Small helpers shared by the benchmark scripts.

* :func:`compile_and_time` compiles a function once (compile time reported on
  its own) and times repeated calls of the compiled executable, blocking on the
  result of each call; the summary is the median of the repeats.
* :func:`machine_info` records what the numbers were measured on.
* :func:`write_json` writes a result file, by default under ``benchmarks/results/``.
* :func:`restore_memory_run` loads a trained ``failure_replay`` run for the scripts that look into one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
_ENV_VARS = ("XLA_FLAGS", "JAX_PLATFORMS", "JAX_ENABLE_X64", "OMP_NUM_THREADS")


@dataclasses.dataclass
class Timing:
    """Wall-clock seconds of one compiled function.

    ``run_s`` holds the timed repeats and ``cpu_s`` the CPU time this process
    used during each of them, all threads together: XLA's CPU runtime may keep
    several cores busy, so ``cpu_s / run_s`` shows how many it used (and a
    ratio well below 1 that other processes took the CPU). ``warmup_s`` is the first call of the
    executable; it is left out of ``run_s`` unless it was slow enough that its
    one-off costs do not matter (``first_run_counted``), which saves one long
    call for the slowest cases.
    """

    compile_s: float
    warmup_s: float
    run_s: list[float]
    cpu_s: list[float]
    repeats_requested: int
    first_run_counted: bool
    note: str | None = None

    @property
    def median_s(self) -> float:
        return statistics.median(self.run_s)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["median_s"] = self.median_s
        out["median_cpu_s"] = statistics.median(self.cpu_s)
        out["repeats_done"] = len(self.run_s)
        return out


def _block(tree: Any) -> Any:
    return jax.block_until_ready(tree)


def compile_and_time(
    fn: Callable[..., Any],
    args: Sequence[Any],
    repeats: int,
    *,
    args_for_repeat: Callable[[int], Sequence[Any]] | None = None,
    slow_s: float = 10.0,
    case_budget_s: float | None = None,
    min_repeats: int = 3,
) -> Timing:
    """Compile ``fn`` for ``args`` and time ``repeats`` calls of the executable.

    ``args_for_repeat(i)`` may give different (same-shaped) inputs to each call,
    e.g. a fresh PRNG key. If the first call takes at least ``slow_s`` seconds it
    counts as the first repeat instead of a discarded warm-up. With
    ``case_budget_s``, the number of repeats is cut (never below
    ``min_repeats``) so that the timed calls fit the budget; the reason is kept
    in ``note``.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0

    def call(i: int) -> tuple[float, float]:
        call_args = args if args_for_repeat is None else args_for_repeat(i)
        cpu0 = time.process_time()
        start = time.perf_counter()
        _block(compiled(*call_args))
        return time.perf_counter() - start, time.process_time() - cpu0

    warmup_s, warmup_cpu_s = call(0)
    first_counted = warmup_s >= slow_s
    run_s = [warmup_s] if first_counted else []
    cpu_s = [warmup_cpu_s] if first_counted else []
    target = repeats
    note = None
    if case_budget_s is not None and warmup_s * repeats > case_budget_s:
        target = max(min(min_repeats, repeats), int(case_budget_s // warmup_s))
        target = min(target, repeats)
        if target < repeats:
            note = (
                f"repeats cut from {repeats} to {target}: one call takes {warmup_s:.1f} s "
                f"and the per-case budget is {case_budget_s:.0f} s"
            )
    while len(run_s) < target:
        wall, cpu = call(len(run_s) + 1)
        run_s.append(wall)
        cpu_s.append(cpu)
    if first_counted:
        extra = f"first call counted as a repeat (no separate warm-up): it took >= {slow_s:.0f} s"
        note = extra if note is None else f"{note}; {extra}"
    return Timing(
        compile_s=compile_s,
        warmup_s=warmup_s,
        run_s=run_s,
        cpu_s=cpu_s,
        repeats_requested=repeats,
        first_run_counted=first_counted,
        note=note,
    )


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return platform.processor() or None


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (``None`` where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info() -> dict[str, Any]:
    """Devices, CPU, library versions and relevant environment variables."""
    import jaxlib

    try:
        usable_cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        usable_cpus = None
    return {
        "jax_version": jax.__version__,
        "jaxlib_version": jaxlib.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "device_kinds": sorted({d.device_kind for d in jax.devices()}),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable_cpus,
        "cpu_model": _cpu_model(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "env": {k: os.environ[k] for k in _ENV_VARS if k in os.environ},
    }


def command_line(script: str | os.PathLike[str], argv: Sequence[str]) -> str:
    """The command that produced a result, with the script relative to the repository root."""
    path = Path(script).resolve()
    try:
        script_str = str(path.relative_to(REPO_ROOT))
    except ValueError:
        script_str = str(path)
    return shlex.join(["python", script_str, *argv])


def write_json(data: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``data`` as indented JSON, creating parent folders; returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return out


def finish_report(report: dict[str, Any], load_start: list[float] | None, out: str | None) -> dict[str, Any]:
    """Add the machine and the load averages around the measurement to ``report``; write it to
    ``out`` as JSON when given (printing where); return it."""
    report.update(machine=machine_info(), load_average_start=load_start, load_average_end=load_average())
    if out:
        write_json(report, out)
        print(f"wrote {out}")
    return report


def restore_memory_run(run_dir: Path, update: int | None = None) -> tuple[Any, Any, Any, int]:
    """A trained ``failure_replay`` run: ``(config, failure_replay.Parts, params [seeds, ...], update)``.

    ``update`` picks the checkpoint (default: the latest). Exits with a message
    if ``run_dir`` is not such a run or has no such checkpoint.
    """
    import orbax.checkpoint as ocp

    from jaxmeta import config
    from jaxmeta.algos import failure_replay

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise SystemExit(f"{run_dir} is not a run directory (no config.yaml)")
    cfg = config.load(str(run_dir / "config.yaml"))
    if cfg.algo.name != "failure_replay":
        raise SystemExit(f"{run_dir} is a {cfg.algo.name} run, not a failure_replay (memory agent) run")
    with ocp.CheckpointManager((run_dir / "checkpoints").absolute()) as manager:
        update = manager.latest_step() if update is None else update
        if update is None or update not in manager.all_steps():
            raise SystemExit(f"no checkpoint{'' if update is None else f' at update {update}'} in {run_dir}")
        params = manager.restore(update, args=ocp.args.StandardRestore())["params"]
    return cfg, failure_replay.make_parts(cfg), params, int(update)

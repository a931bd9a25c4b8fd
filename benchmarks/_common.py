"""Small helpers shared by the benchmark scripts.

* :func:`compile_and_time` compiles a function once (compile time reported on
  its own) and times repeated calls of the compiled executable, blocking on the
  result of each call; the summary is the median of the repeats.
* :func:`machine_info` records what the numbers were measured on.
* :func:`write_json` writes a result file, by default under ``benchmarks/results/``.
* :func:`run_table_parser` (``--runs``, ``--out``, ``--archive``) and :func:`load_run` for the scripts
  that tabulate runs;
* :func:`find_run` and :func:`archive_run`: a run's small record (``config.yaml``, ``summary.json``,
  ``metrics.jsonl``) is copied into ``benchmarks/results/runs/NAME`` by the table scripts, so that
  tables and figures survive when ``runs/`` (ignored by git, checkpoints included) is gone.
* :func:`read_run_config` reads a run directory's ``config.yaml`` in today's layout, and says whether
  the run was written before the platform refactor (issue 11), whose task sets and evaluation keys
  were drawn differently;
* :func:`restore_memory_run` loads a trained ``failure_replay`` run (either kind) for the scripts that
  look into one, with the task sets and evaluation keys that run used.

The scripts import this module as ``benchmarks._common`` (the repository root on ``sys.path``: the
tests put it there, and each script adds it when run as ``python benchmarks/NAME.py``).
"""

from __future__ import annotations

import argparse
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
from typing import Any, NamedTuple

import jax
import numpy as np
import yaml

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
ARCHIVE_DIR = RESULTS_DIR / "runs"
# An archived metrics.jsonl keeps every evaluation line and enough training lines to stay below this.
ARCHIVE_MAX_BYTES = 400_000
_RECORD_FILES = ("config.yaml", "summary.json")
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
    on_result: Callable[[Any, bool], None] | None = None,
) -> Timing:
    """Compile ``fn`` for ``args`` and time ``repeats`` calls of the executable.

    ``args_for_repeat(i)`` may give different (same-shaped) inputs to each call,
    e.g. a fresh PRNG key. If the first call takes at least ``slow_s`` seconds it
    counts as the first repeat instead of a discarded warm-up. With
    ``case_budget_s``, the number of repeats is cut (never below
    ``min_repeats``) so that the timed calls fit the budget; the reason is kept
    in ``note``. ``on_result(output, timed)``, if given, sees the output of every call, ``timed``
    telling whether the call is one of the timed repeats (e.g. to count the work the calls did).
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
        out = _block(compiled(*call_args))
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
        timed = i > 0 or wall >= slow_s  # the first call is timed only when it is slow
        if on_result is not None:
            on_result(out, timed)
        return wall, cpu

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


def interleaved_medians(fns: dict[str, Callable[[], Any]], repeats: int, block_s: float = 0.3) -> dict:
    """Per contender: seconds per call of each timed block (``block_s`` long), interleaved, rotated."""
    calls = {}
    for name, fn in fns.items():
        fn()  # warm-up
        start = time.perf_counter()
        fn()
        calls[name] = max(1, round(block_s / max(time.perf_counter() - start, 1e-6)))
    names = list(fns)
    blocks: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            start = time.perf_counter()
            for _ in range(calls[name]):
                fns[name]()
            blocks[name].append((time.perf_counter() - start) / calls[name])
    return {name: {"calls_per_block": calls[name], "block_s_per_call": blocks[name]} for name in names}


def find_run(runs: str | os.PathLike[str], name: str, archive: Path = ARCHIVE_DIR) -> Path | None:
    """Where to read run ``name``: ``runs/name`` (the live run, possibly further on than its record)
    unless only the archived record has finished, else the record under ``archive``, else None."""
    live, record = Path(runs) / name, archive / name
    has_log = [(d / "metrics.jsonl").exists() or (d / "summary.json").exists() for d in (live, record)]
    if has_log[0] and not ((record / "summary.json").exists() and not (live / "summary.json").exists()):
        return live
    return record if has_log[1] else None


SPLIT_SEEDS = 3  # a comparison run may instead be trained as single-seed runs NAME_s0, NAME_s1, NAME_s2


def run_names(name: str) -> list[str]:
    """The names a comparison run ``name`` may be found under: itself, else its single-seed parts
    ``name_sI`` (``seeds=1 seed=I name=name_sI``, one per session: the same seeds as the whole run)."""
    return [name] + [f"{name}_s{i}" for i in range(SPLIT_SEEDS)]


def archive_run(run: str | os.PathLike[str], archive: Path = ARCHIVE_DIR) -> Path | None:
    """Copy the small record of run directory ``run`` into ``archive/NAME`` (replacing an older one)
    and return it; None when ``run`` is already inside ``archive``, has no metrics log, or is unfinished
    while the record has finished.

    ``metrics.jsonl`` keeps every evaluation line, every training line at an evaluated update (the
    env-step counts of the curves are read there) and, of the other training lines, every j-th
    update with the smallest j that keeps the file under ``ARCHIVE_MAX_BYTES``.
    """
    run = Path(run).resolve()
    archive = Path(archive).resolve()
    if archive in run.parents or not (run / "metrics.jsonl").exists():
        return None
    if (archive / run.name / "summary.json").exists() and not (run / "summary.json").exists():
        return None  # a finished record is not replaced by a restarted, unfinished run
    lines = [line for line in (run / "metrics.jsonl").read_text().splitlines() if line]
    rows = [json.loads(line) for line in lines]
    evaluated = {row["update"] for row in rows if row["kind"] == "eval"}
    train_updates = sorted({row["update"] for row in rows if row["kind"] == "train"} - evaluated)
    kept_always = sum(
        len(line) + 1
        for line, row in zip(lines, rows, strict=True)
        if row["update"] in evaluated or row["kind"] != "train"
    )
    sizes: dict[int, int] = {}
    for line, row in zip(lines, rows, strict=True):
        if row["kind"] == "train" and row["update"] not in evaluated:
            sizes[row["update"]] = sizes.get(row["update"], 0) + len(line) + 1
    stride = 1
    while kept_always + sum(sizes[u] for u in train_updates[::stride]) > ARCHIVE_MAX_BYTES and stride < len(
        train_updates
    ):
        stride += 1
    thinned = set(train_updates[::stride])
    kept = [
        line
        for line, row in zip(lines, rows, strict=True)
        if row["kind"] != "train" or row["update"] in evaluated or row["update"] in thinned
    ]
    out = archive / run.name
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.jsonl").write_text("\n".join(kept) + "\n")
    for name in _RECORD_FILES:
        if (run / name).exists():
            (out / name).write_text((run / name).read_text())
        elif (out / name).exists():
            (out / name).unlink()  # a summary from an earlier, finished run of the same name
    return out


def run_table_parser(description: str) -> argparse.ArgumentParser:
    """The arguments of every script that tabulates runs: where the live runs are (``--runs``), where
    the doc goes (``--out``) and the run records (``--archive``, read and written)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runs", default=str(REPO_ROOT / "runs"))
    parser.add_argument("--out", default=str(REPO_ROOT / "docs"))
    parser.add_argument("--archive", default=str(ARCHIVE_DIR), help="run records (read, written)")
    return parser


def load_run(runs: str | os.PathLike[str], name: str, archive: Path = ARCHIVE_DIR) -> dict[str, Any] | None:
    """Run ``name`` (:func:`find_run`), its record archived (:func:`archive_run`): ``{"dir", "lines"
    (the metric lines, parsed), "summary" (None until it has finished), "config" (the raw YAML)}``, or
    None when it has no metrics log."""
    run = find_run(runs, name, archive)
    if run is None or not (run / "metrics.jsonl").exists():
        return None
    archive_run(run, archive)
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else None
    config = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").exists() else {}
    return {"dir": run, "lines": lines, "summary": summary, "config": config}


def run_wall_time(summary: dict[str, Any]) -> str:
    """A finished run's wall time from its ``summary.json``, saying when it covers only the part of
    the run after a resume."""
    wall = f"{summary['wall_time_s'] / 60:.1f} min (compile {summary['compile_s']:.0f} s)"
    updates_run, num_updates = summary.get("updates_run"), summary.get("num_updates")
    if updates_run is not None and num_updates is not None and updates_run < num_updates:
        wall += f" for the last {updates_run:,} of {num_updates:,} updates (resumed)"
    return wall


def draw_eval_returns(
    ax: Any,
    table: dict[str, Any],
    color: str,
    label: str,
    running: bool,
    metric: str = "eval/return",
    **kw: Any,
) -> None:
    """A run's evaluation ``metric`` (mean +- std over seeds) against its env steps (updates where it
    logged none); dashed while the run is still ``running`` (unless ``linestyle`` is given). ``table``
    as ``jaxmeta.plots.read_metrics``."""
    from jaxmeta.plots import band, samples_at, seed_curve

    updates, mean, std = seed_curve(table["eval"][metric])
    steps = samples_at(table, "env_steps", updates)
    kw.setdefault("linestyle", "--" if running else "-")
    band(ax, updates if steps is None else steps, mean, std, color, label=label, **kw)


def save_curve_panels(fig: Any, axes: Any, titles: Sequence[str], xlabel: str, path: Path) -> Path:
    """Title, label and grid every panel of a figure of evaluation curves, save it to ``path``."""
    import matplotlib
    import matplotlib.pyplot as plt

    from jaxmeta.plots import compact_number

    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("evaluation return")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(compact_number))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def finish_report(report: dict[str, Any], load_start: list[float] | None, out: str | None) -> dict[str, Any]:
    """Add the machine and the load averages around the measurement to ``report``; write it to
    ``out`` as JSON when given (printing where); return it."""
    report.update(machine=machine_info(), load_average_start=load_start, load_average_end=load_average())
    if out:
        write_json(report, out)
        print(f"wrote {out}")
    return report


# ----------------------------------------------------------------------------- run directories
# The platform refactor (issue 11) changed how a run draws its task sets and evaluation keys. Runs
# written before it (their config.yaml has top-level ``trial``/``eval`` sections) are read with the
# keys they used, so a replay of their evaluation is exact.
LEGACY_EVAL_KEY_OFFSET = 1_000_003  # before issue 11: evaluation keys were PRNGKey(seed + i + this)


def is_legacy_layout(raw: dict[str, Any]) -> bool:
    """Whether a ``config.yaml`` dict was written before the refactor (top-level ``trial``/``eval``)."""
    return "trial" in raw or "eval" in raw


def read_run_config(run_dir: str | os.PathLike[str]) -> tuple[dict[str, Any], bool]:
    """``(config dict in today's layout, legacy)`` of a run directory's ``config.yaml``, unvalidated.

    ``legacy``: the run was written before the refactor (``jaxmeta.config.migrate_legacy`` converts
    its layout). Exits with a message if ``run_dir`` has no ``config.yaml``.
    """
    from jaxmeta.config import migrate_legacy

    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise SystemExit(f"{run_dir} is not a run directory (no config.yaml)")
    raw = yaml.safe_load(path.read_text()) or {}
    return migrate_legacy(raw), is_legacy_layout(raw)


def legacy_env_setup(cfg: Any) -> Any:
    """The task sets of a run written before the refactor: drawn from ``PRNGKey(task_seed)`` (today:
    ``seeding.task_key``), and a grouped (``train_every_goal``) training set kept at
    ``algo.num_train_tasks`` tasks (today a last cut-short group is completed, e.g. 1000 -> 1002 for
    X=3; the first ``num_train_tasks`` rows are the same)."""
    import envs_jax
    from jaxmeta.algos.api import EnvSetup, make_env
    from jaxmeta.config import env_settings

    env, params = make_env(cfg.env)
    num_train = cfg.algo.num_train_tasks
    train, test = envs_jax.make_task_sets(
        cfg.env.id,
        env,
        params,
        jax.random.PRNGKey(cfg.task_seed),
        num_train,
        cfg.algo.num_test_tasks,
        **env_settings(cfg.env)["tasks"],
    )
    train = jax.tree.map(lambda leaf: leaf[:num_train], train)
    return EnvSetup(env, params, train, test)


def evaluation_keys(cfg: Any, update: int, legacy: bool = False) -> np.ndarray:
    """The per-seed keys ``[seeds, 2]`` the run evaluated with at ``update`` (``jaxmeta.runner.eval_keys``;
    for a run written before the refactor, the keys it used then)."""
    if not legacy:
        from jaxmeta import runner

        return runner.eval_keys(cfg, update)
    keys = [
        jax.random.fold_in(jax.random.PRNGKey(cfg.seed + i + LEGACY_EVAL_KEY_OFFSET), update)
        for i in range(cfg.seeds)
    ]
    return np.stack([np.asarray(k) for k in keys])


class MemoryRun(NamedTuple):
    """A restored ``failure_replay`` run."""

    cfg: Any  # the validated RunConfig
    parts: Any  # failure_replay.Parts(algo, network, setup); setup has the run's own task sets
    # (for a legacy run algo is None: it would evaluate on today's task sets)
    params: Any  # [seeds, ...]
    update: int  # the checkpoint's update
    legacy: bool  # written before the platform refactor (old config layout, task and evaluation keys)

    def eval_keys(self) -> np.ndarray:
        """The per-seed keys the run evaluated its checkpoint with."""
        return evaluation_keys(self.cfg, self.update, self.legacy)


def restore_memory_run(run_dir: str | os.PathLike[str], update: int | None = None) -> MemoryRun:
    """A trained ``failure_replay`` run, written before or after the platform refactor.

    ``update`` picks the checkpoint (default: the latest). ``parts.setup`` holds the task sets the run
    trained and was evaluated on (for a run written before the refactor: those of
    :func:`legacy_env_setup`). Exits with a message if ``run_dir`` is not such a run or has no such
    checkpoint.
    """
    import orbax.checkpoint as ocp

    from jaxmeta import config
    from jaxmeta.algos import failure_replay

    run_dir = Path(run_dir)
    raw, legacy = read_run_config(run_dir)
    try:
        cfg = config.from_dict(raw)
    except config.ConfigError as err:
        raise SystemExit(f"{run_dir}/config.yaml: {err}") from None
    if cfg.algo.name != "failure_replay":
        raise SystemExit(f"{run_dir} is a {cfg.algo.name} run, not a failure_replay (memory agent) run")
    with ocp.CheckpointManager((run_dir / "checkpoints").absolute()) as manager:
        update = manager.latest_step() if update is None else update
        if update is None or update not in manager.all_steps():
            raise SystemExit(f"no checkpoint{'' if update is None else f' at update {update}'} in {run_dir}")
        params = manager.restore(update, args=ocp.args.StandardRestore())["params"]
    parts = failure_replay.make_parts(cfg)
    if legacy:
        # parts.algo's functions close over today's task sets, not the run's: left out so that
        # nothing evaluates a legacy run on the wrong tasks (use the setup and the module functions).
        parts = parts._replace(algo=None, setup=legacy_env_setup(cfg))
    return MemoryRun(cfg, parts, params, int(update), legacy)

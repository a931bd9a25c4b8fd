"""Host-side driver: seeds, sharding, jitted chunks of updates, checkpoints, metrics, plots.

``run(cfg)`` trains ``cfg.seeds`` seeds at once: the method's ``init`` and a
chunk of ``cfg.chunk_size`` ``update`` calls run over a leading seed axis
that is sharded over a device mesh (``shard_map``) and vectorised on each
device (``vmap``), so one device, several local devices or several
processes (``jax.distributed``) run the same code. A method that cannot be
vmapped (it steps a host environment through callbacks) runs its seeds one
after another instead, the same compiled chunk for each. Between chunks the
host appends metrics to ``metrics.jsonl``, evaluates, and saves an orbax
checkpoint. Chunks always have the same length, so a run resumed from a
checkpoint replays exactly the same compiled program and ends bit-identical
(on CPU) to an uninterrupted one (for a host environment: up to that
environment's own determinism, since its state lives outside the checkpoint).

The runner names no method and no environment: what it prints and draws
beyond the generic learning curves comes from the method's ``Algo.report``.

Run directory::

    config.yaml       resolved configuration (every key, defaults included)
    metrics.jsonl     one JSON object per (update, seed): kind "train" or "eval"
    checkpoints/      orbax checkpoints of the seed-batched train state
    plots/*.png       learning curves, and the method's own figures
    summary.json      final evaluation, references, wall time, compile time, devices
    .lock             held while a run writes here (a second run is refused)
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import yaml
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm import tqdm

from jaxmeta import algos, seeding
from jaxmeta.config import (
    RESUMABLE_CHANGES,
    ConfigError,
    RunConfig,
    diff,
    from_dict,
    migrate_legacy,
    to_dict,
)


class TrainingDiverged(RuntimeError):
    """A metric became NaN or infinite; the last good checkpoint is kept."""


def seed_mesh(num_seeds: int) -> Mesh:
    """A 1-D mesh over all devices, or over ``num_seeds`` of them if there are fewer seeds.

    A seed count the devices do not divide (3 seeds on 2 devices) is padded
    with extra seeds whose results are thrown away (:func:`padded_seeds`), so
    every device works: 3 seeds on 2 devices take the time of 2, not of 3.
    """
    devices = jax.devices()
    return Mesh(np.array(devices[: max(1, min(num_seeds, len(devices)))]), ("seeds",))


def padded_seeds(num_seeds: int, num_devices: int) -> int:
    """Seeds actually computed: ``num_seeds`` rounded up to a multiple of ``num_devices``."""
    return -(-num_seeds // num_devices) * num_devices


def over_seeds(fn: Callable[..., Any], mesh: Mesh) -> Callable[..., Any]:
    """``fn`` over a leading seed axis of all its arguments and outputs: the axis is
    split over the mesh's devices (``shard_map``) and vectorised on each (``vmap``).

    (Running a device's seeds one after another with ``lax.map`` instead was
    measured 15x slower for the convolutional memory agent on CPU; vmapped
    convolutions are why ``nets.encoders.PatchConv`` exists.)
    """
    spec = PartitionSpec("seeds")
    return jax.shard_map(jax.vmap(fn), mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False)


def seed_keys(cfg: RunConfig, count: int | None = None) -> np.ndarray:
    """Per-seed training keys ``[count, 2]``: seed ``cfg.seed + i`` (``count`` defaults to ``cfg.seeds``)."""
    count = cfg.seeds if count is None else count
    return np.stack([np.asarray(seeding.training_key(cfg.seed + i)) for i in range(count)])


def eval_keys(cfg: RunConfig, update: int, count: int | None = None) -> np.ndarray:
    """The per-seed keys ``[count, 2]`` a run evaluates with at ``update``: the same settings and keys
    reproduce that evaluation exactly (e.g. to look into it further)."""
    count = cfg.seeds if count is None else count
    return np.stack([np.asarray(seeding.evaluation_key(cfg.seed + i, update)) for i in range(count)])


def runs_on_host(cfg: RunConfig) -> bool:
    """Whether the run's environment is stepped on the host (callbacks): then its seeds cannot be vmapped."""
    import envs_jax

    return cfg.env is not None and envs_jax.entry(cfg.env.id).host


def host_resume_note(env: Any) -> str:
    """What a resumed run on a host ``env`` can promise: exact continuation when the env's batches
    snapshot themselves into the train state (``snapshot_size > 0``), else a restart of the host envs."""
    if getattr(env, "snapshot_size", 0):
        return (
            "(The host environments' own state is in the checkpoint, as their snapshots: they continue "
            "where they were, so the resumed run equals an uninterrupted one.)"
        )
    return (
        "(A host environment's own state is not in the checkpoint: it restarts, so the resumed run "
        "equals an uninterrupted one only as far as that environment is deterministic.)"
    )


class _Seeds:
    """How a run's seeds execute: vmapped and sharded over a mesh, or one after another.

    Vmapped seeds are padded to a multiple of the devices used
    (:func:`padded_seeds`); the padding seeds run like the others and are
    dropped from metrics and checkpoints (a checkpoint holds ``cfg.seeds``
    states whatever the device count, so a run resumes on other devices).
    Seeds are independent under ``vmap``, so padding changes no real seed.
    """

    def __init__(self, algo: Any, cfg: RunConfig) -> None:
        self.algo, self.cfg = algo, cfg
        self.vmapped = algo.vmappable and not runs_on_host(cfg)
        # A method run seed by seed keeps every seed on one device.
        self.mesh = seed_mesh(cfg.seeds) if self.vmapped else Mesh(np.array(jax.devices()[:1]), ("seeds",))
        self.sharding = NamedSharding(self.mesh, PartitionSpec("seeds"))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self.count = padded_seeds(cfg.seeds, self.mesh.devices.size) if self.vmapped else cfg.seeds

    @property
    def devices(self) -> list[str]:
        return [str(d) for d in self.mesh.devices.flat]

    @property
    def padded(self) -> bool:
        return self.count > self.cfg.seeds

    def put(self, host: np.ndarray) -> jax.Array:
        """A host array with a leading (padded) seed axis, laid out over the mesh (same in all processes)."""
        if not self.vmapped:
            return jnp.asarray(host)
        return jax.make_array_from_callback(host.shape, self.sharding, lambda index: host[index])

    def training_keys(self) -> jax.Array:
        return self.put(seed_keys(self.cfg, self.count))

    def evaluation_keys(self, update: int) -> jax.Array:
        return self.put(eval_keys(self.cfg, update, self.count))

    def to_host(self, tree: Any) -> dict[str, np.ndarray]:
        """Metrics on the host, the padding seeds dropped: ``[cfg.seeds, ...]``."""
        return {k: v[: self.cfg.seeds] for k, v in _to_host(tree).items()}

    def to_checkpoint(self, state: Any) -> Any:
        """The state a checkpoint holds: ``cfg.seeds`` seeds (padding dropped)."""
        if not self.padded:
            return state
        seeds = self.cfg.seeds
        return jax.jit(lambda t: jax.tree.map(lambda x: x[:seeds], t), out_shardings=self.replicated)(state)

    def from_checkpoint(self, state: Any) -> Any:
        """A restored state padded back to the computed seeds (padding seeds copy the last real one)."""
        if not self.padded:
            return state
        extra = self.count - self.cfg.seeds

        def pad(x: jax.Array) -> jax.Array:
            return jnp.concatenate([x, jnp.repeat(x[-1:], extra, axis=0)])

        return jax.jit(lambda t: jax.tree.map(pad, t), out_shardings=self.sharding)(state)

    def checkpoint_target(self) -> Any:
        """What a checkpoint restores into: shapes, dtypes and shardings of ``cfg.seeds`` states,
        without running ``init``."""
        one = jax.eval_shape(self.algo.init, jax.ShapeDtypeStruct((2,), jnp.uint32))  # no vmap: host envs
        shapes = jax.tree.map(lambda s: jax.ShapeDtypeStruct((self.cfg.seeds, *s.shape), s.dtype), one)
        sharding = self.replicated if self.padded else self.sharding
        return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)

    def chunk(self, length: int) -> Callable[[Any], tuple[Any, Any]]:
        def chunk(state: Any) -> tuple[Any, Any]:
            return jax.lax.scan(lambda s, _: self.algo.update(s), state, None, length=length)

        return chunk

    def compile(self, fn: Callable[..., Any], *args: Any) -> Callable[..., Any]:
        """``fn`` over the seed axis, compiled for ``args`` (which carry the seed axis)."""
        if self.vmapped:
            sharding = self.sharding
            jitted = jax.jit(over_seeds(fn, self.mesh), in_shardings=sharding, out_shardings=sharding)
            return jitted.lower(*args).compile()
        one = jax.jit(fn).lower(*(jax.tree.map(lambda x: x[0], a) for a in args)).compile()

        def each_seed(*batched: Any) -> Any:
            outs = [
                one(*(jax.tree.map(lambda x, i=i: x[i], a) for a in batched)) for i in range(self.cfg.seeds)
            ]
            return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)

        return each_seed


def run(cfg: RunConfig, log: Any = print) -> dict[str, Any]:
    """Train, evaluate, checkpoint and plot one configuration; returns the summary.

    A finished run (its ``summary.json`` covers ``num_updates``) is not run
    again: its summary is returned and its files are left as they are.
    """
    run_dir = Path(cfg.run_dir)
    is_writer = jax.process_index() == 0
    _check_writable(run_dir)
    _check_run_dir(cfg, run_dir)  # raises ConfigError before anything is written
    with _run_lock(run_dir, is_writer):
        start_update, finished = _check_run_dir(cfg, run_dir)  # again: another run may have written meanwhile
        if finished is not None:
            log(f"{run_dir} holds a finished run of {cfg.num_updates} updates; nothing to do.")
            return finished
        return _train(cfg, run_dir, start_update, is_writer, log)


def _train(cfg: RunConfig, run_dir: Path, start_update: int, is_writer: bool, log: Any) -> dict[str, Any]:
    t_start = time.perf_counter()
    algo = algos.REGISTRY[cfg.algo.name].make(cfg)
    seeds = _Seeds(algo, cfg)
    check_memory(seeds.checkpoint_target(), seeds.count / cfg.seeds)
    checkpoints = _checkpoint_manager(run_dir / "checkpoints", cfg.keep_checkpoints)
    if start_update > 0:
        state, start_update = _restore_latest(
            checkpoints, run_dir, seeds.checkpoint_target(), start_update, log
        )
        state = seeds.from_checkpoint(state)
        log(f"Resuming {run_dir} from the checkpoint at update {start_update}.")
        if runs_on_host(cfg):
            from jaxmeta.algos.api import make_env

            log(host_resume_note(make_env(cfg.env)[0]))
    else:
        keys = seeds.training_keys()
        state = seeds.compile(algo.init, keys)(keys)

    t_compile = time.perf_counter()
    chunk_fn = seeds.compile(seeds.chunk(cfg.chunk_size), state)
    eval_fn = seeds.compile(algo.evaluate, state, seeds.evaluation_keys(0))
    compile_s = time.perf_counter() - t_compile

    if is_writer:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    metrics_path = run_dir / "metrics.jsonl"
    if is_writer:
        _truncate_metrics(metrics_path, start_update)

    def eval_at(state: Any, update: int) -> dict[str, np.ndarray]:
        return seeds.to_host(eval_fn(state, seeds.evaluation_keys(update)))

    report = algo.report
    last_eval: dict[str, np.ndarray] | None = None
    last_train: dict[str, np.ndarray] = {}
    first_samples: np.ndarray | None = None
    train_s = 0.0
    updates_done = start_update
    env_name = cfg.env.id if cfg.env is not None else "no environment"
    how = (
        f"on {seeds.mesh.devices.size} {jax.default_backend()} device(s)"
        if seeds.vmapped
        else "one seed after another ("
        + (
            "its environment runs on the host and cannot be vmapped)"
            if runs_on_host(cfg)
            else "the method branches on its state, which vmap would flatten)"
        )
    )
    if seeds.padded:
        how += f" ({seeds.count - cfg.seeds} more seed(s) computed to fill the devices, then dropped)"
    describe = f" of {report.describe}" if report.describe else ""
    log(
        f"Training {cfg.algo.name} on {env_name}: {cfg.seeds} seed(s) x {cfg.num_updates} updates"
        f"{describe}, {how}; compiled in {compile_s:.1f} s."
    )
    progress = tqdm(
        total=cfg.num_updates,
        initial=start_update,
        unit="upd",
        disable=not (cfg.progress and is_writer),
        dynamic_ncols=True,
        file=sys.stderr,
    )
    try:
        with _open_metrics(metrics_path, is_writer) as metrics_file:
            if start_update == 0:
                last_eval = eval_at(state, 0)
                _write_rows(metrics_file, "eval", [0], _add_chunk_axis(last_eval))
            while updates_done < cfg.num_updates:
                t0 = time.perf_counter()
                new_state, chunk_metrics = chunk_fn(state)
                host_metrics = seeds.to_host(chunk_metrics)
                train_s += time.perf_counter() - t0
                updates = list(range(updates_done + 1, updates_done + cfg.chunk_size + 1))
                _check_finite(host_metrics, updates, cfg.seed, checkpoints, run_dir)
                state, updates_done = new_state, updates[-1]
                # Every log_every-th update (it divides chunk_size, so each chunk's last one is logged).
                logged = np.arange(cfg.log_every - 1, cfg.chunk_size, cfg.log_every)
                _write_rows(
                    metrics_file,
                    "train",
                    [updates[i] for i in logged],
                    {k: v[:, logged] for k, v in host_metrics.items()},
                )
                if report.samples in host_metrics and first_samples is None:
                    # Samples before this chunk: the first update's count less one update's worth.
                    counts = host_metrics[report.samples].astype(np.float64)
                    per_update = counts[:, 1] - counts[:, 0] if counts.shape[1] > 1 else counts[:, 0]
                    first_samples = counts[:, 0] - per_update
                last_train = {k: v[:, -1] for k, v in host_metrics.items()}
                if updates_done % cfg.eval_every == 0 or updates_done == cfg.num_updates:
                    last_eval = eval_at(state, updates_done)
                    _write_rows(metrics_file, "eval", [updates_done], _add_chunk_axis(last_eval))
                metrics_file.flush()
                if updates_done % cfg.checkpoint_every == 0 or updates_done == cfg.num_updates:
                    saved = seeds.to_checkpoint(state)
                    _check_state_finite(saved, updates_done, checkpoints, run_dir)
                    with deferred_interrupts():  # a Ctrl-C here lands after the save is on its way
                        checkpoints.save(updates_done, args=_ocp().args.StandardSave(saved))
                progress.update(cfg.chunk_size)
                progress.set_postfix(_postfix(report, last_train, last_eval), refresh=False)
    finally:
        progress.close()
        _close_quietly(checkpoints)

    if last_eval is None:  # resumed at the very end: evaluate once more for the summary
        last_eval = eval_at(state, updates_done)
    samples_per_s = None
    if first_samples is not None and train_s > 0:
        samples_per_s = float(np.sum(last_train[report.samples] - first_samples) / train_s)
    summary = _summary(cfg, last_eval, last_train, time.perf_counter() - t_start, compile_s, train_s)
    summary.update(
        updates_run=updates_done - start_update,
        samples=report.samples,
        samples_per_s=samples_per_s,
        devices=seeds.devices,
        seeds_vmapped=seeds.vmapped,
        references=_json_ready(report.references()),
    )
    summary["report"] = report.lines(summary)
    if is_writer:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        if cfg.plots:
            from jaxmeta import plots

            plots.plot_run(run_dir, report)
            if report.animation is not None and jax.process_count() == 1:
                report.animation(jax.tree.map(lambda x: x[0], state), run_dir / "plots")
    return summary


def evaluate_checkpoint(cfg: RunConfig, update: int | None = None) -> dict[str, Any]:
    """Evaluate a trained run's checkpoint again, e.g. with other ``algo.eval.*`` settings.

    ``cfg`` is the run's config (``run_dir/config.yaml``) with any overrides;
    ``update`` picks the checkpoint (default: the latest). Returns a summary
    like :func:`run`'s (no training figures) with ``checkpoint_update`` added.
    The keys are the ones :func:`run` would use at that update, so the same
    settings reproduce the run's own evaluation there exactly.
    """
    t_start = time.perf_counter()
    algo, seeds, state, update = _restore(cfg, update)
    keys = seeds.put(eval_keys(cfg, update, seeds.count))
    t_compile = time.perf_counter()
    compiled = seeds.compile(algo.evaluate, state, keys)
    compile_s = time.perf_counter() - t_compile
    t_eval = time.perf_counter()
    evaluation = seeds.to_host(compiled(state, keys))
    eval_s = time.perf_counter() - t_eval
    summary = _summary(cfg, evaluation, {}, time.perf_counter() - t_start, compile_s, 0.0)
    summary.update(
        checkpoint_update=update,
        eval_s=eval_s,
        devices=seeds.devices,
        references=_json_ready(algo.report.references()),
        eval_settings=_json_ready(to_dict(cfg)["algo"].get("eval")),
    )
    summary["report"] = algo.report.lines(summary)
    return summary


def restore_state(cfg: RunConfig, update: int | None = None) -> tuple[algos.Algo, Any, int]:
    """``(algo, train state of every seed (leading seed axis), update)`` of a run's checkpoint (default:
    the latest): for scripts that look into trained parameters."""
    algo, _, state, update = _restore(cfg, update)
    return algo, jax.tree.map(lambda x: np.asarray(x)[: cfg.seeds], jax.device_get(state)), update


def _restore(cfg: RunConfig, update: int | None) -> tuple[algos.Algo, Any, Any, int]:
    run_dir = Path(cfg.run_dir)
    update = _latest_checkpoint(run_dir / "checkpoints") if update is None else update
    if update is None or not (run_dir / "checkpoints" / str(update)).is_dir():
        raise ConfigError(f"no checkpoint{'' if update is None else f' at update {update}'} in {run_dir}")
    algo = algos.REGISTRY[cfg.algo.name].make(cfg)
    seeds = _Seeds(algo, cfg)
    checkpoints = _checkpoint_manager(run_dir / "checkpoints", cfg.keep_checkpoints)
    try:
        state = checkpoints.restore(update, args=_ocp().args.StandardRestore(seeds.checkpoint_target()))
    finally:
        checkpoints.close()
    return algo, seeds, seeds.from_checkpoint(state), update


def check_memory(state: Any, scale: float = 1.0) -> None:
    """A ``ConfigError`` before compiling if the train state alone (times ``scale``) cannot fit in memory.

    A lower bound of what training needs (activations come on top), so it
    catches only configs far too big, e.g. banks for a million tasks.
    """
    need = scale * sum(np.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize for leaf in jax.tree.leaves(state))
    have = available_memory()
    if have is not None and need > have:
        raise ConfigError(
            f"the train state needs {need / 2**30:.1f} GiB but the {jax.default_backend()} device has "
            f"{have / 2**30:.1f} GiB free: lower seeds or the sizes that scale it (tasks, memory capacities, "
            "batch sizes)"
        )


def available_memory() -> int | None:
    """Bytes free for arrays on the first device: its limit on an accelerator, free host memory on CPU."""
    device = jax.devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        limit = stats.get("bytes_limit")
        return None if limit is None else int(limit) - int(stats.get("bytes_in_use", 0))
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def is_out_of_memory(err: BaseException) -> bool:
    """Whether an exception is XLA running out of memory (allocation failed)."""
    text = str(err)
    return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or isinstance(err, MemoryError)


# ----------------------------------------------------------------------------- run directory
@contextlib.contextmanager
def _run_lock(run_dir: Path, is_writer: bool) -> Iterator[None]:
    """Hold ``run_dir/.lock`` for the run; a second run into the same directory is refused in one line."""
    if not is_writer:
        yield
        return
    import fcntl

    lock_path = run_dir / ".lock"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        handle = lock_path.open("a+")
    except OSError as err:
        raise ConfigError(f"run_dir {run_dir} cannot be written: {err.strerror or err}") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.EAGAIN, errno.EACCES):
                raise ConfigError(
                    f"run_dir {run_dir} is in use by another run (it holds {lock_path}); "
                    "wait for it or choose another run_dir"
                ) from None
            raise
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()


def _check_writable(run_dir: Path) -> None:
    """A ``ConfigError`` now, before compiling, if ``run_dir`` cannot hold a run."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run_dir {run_dir} exists and is not a directory; choose another run_dir")
    parent = run_dir
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"run_dir {run_dir} cannot be written ({parent} is not a writable directory)")


def _saved_config(path: Path) -> dict[str, Any]:
    """A run's saved config, with the defaults of keys added to the library since it was
    written filled in (an option added later, at its default, is no change); as written when
    it no longer validates (a key since removed: then it differs, as it should)."""
    old = migrate_legacy(yaml.safe_load(path.read_text()) or {})
    try:
        return to_dict(from_dict(old))
    except ConfigError:
        return old


def _check_run_dir(cfg: RunConfig, run_dir: Path) -> tuple[int, dict[str, Any] | None]:
    """``(update to resume from, summary if the run is finished)``; refuses to clobber another run.

    ``run_dir`` is compared by what it names on disk: ``./runs/x``,
    ``runs/x/`` and an absolute spelling are the same run, and a moved or
    copied run directory resumes where it is.
    """
    saved_cfg = run_dir / "config.yaml"
    latest = _latest_checkpoint(run_dir / "checkpoints")
    if saved_cfg.exists():
        changed = [k for k in diff(_saved_config(saved_cfg), to_dict(cfg)) if k not in RESUMABLE_CHANGES]
        if changed and latest is not None:
            raise ConfigError(
                f"run_dir {run_dir} holds a run with a different config ({', '.join(changed[:3])} differ); "
                "choose another run_dir or delete that one"
            )
        # No checkpoint yet: that run stopped before saving anything; this config replaces it.
    elif run_dir.exists() and any(p.name != ".lock" for p in run_dir.iterdir()):
        raise ConfigError(
            f"run_dir {run_dir} exists and is not a jaxmeta run directory; choose another run_dir"
        )
    if latest is None:
        return 0, None
    if not cfg.resume:
        raise ConfigError(
            f"run_dir {run_dir} already holds checkpoints (latest update {latest}); "
            "pass resume=true to continue it or choose another run_dir"
        )
    if latest > cfg.num_updates:
        raise ConfigError(
            f"num_updates={cfg.num_updates} is below the checkpoint at update {latest} in {run_dir}"
        )
    summary_path = run_dir / "summary.json"
    if latest == cfg.num_updates and summary_path.exists():
        try:
            summary = json.loads(summary_path.read_text())
        except (OSError, ValueError):
            summary = None
        if summary is not None and summary.get("num_updates") == cfg.num_updates:
            return latest, summary
    return latest, None


def _ocp() -> Any:
    import orbax.checkpoint as ocp  # imported lazily: it is slow to import

    return ocp


def _checkpoint_manager(directory: Path, keep: int) -> Any:
    ocp = _ocp()
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    return ocp.CheckpointManager(directory.absolute(), options=options)


def _close_quietly(checkpoints: Any) -> None:
    """Finish a pending save and close, even while an interrupt is being handled: a Ctrl-C now
    waits for the save instead of breaking it (and printing orbax's threads' tracebacks)."""
    with deferred_interrupts(), contextlib.suppress(Exception):
        checkpoints.wait_until_finished()
        checkpoints.close()


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block is done, then deliver what came.

    A held signal goes to the handler that was there before (Python's SIGINT handler raises
    ``KeyboardInterrupt``); one whose default action would end the process raises
    ``KeyboardInterrupt`` instead, so the runner stops as after Ctrl-C; one that was ignored
    (``nohup``, a shell's background job) stays ignored. Only in the main thread (signal handlers
    can only be set there); elsewhere a no-op.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        received.append(signum)

    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in dict.fromkeys(received):  # each signal once, in the order they came
            handler = previous[signum]
            if handler is signal.SIG_IGN:
                continue
            if callable(handler):
                handler(signum, None)
            else:  # SIG_DFL (or None: set outside Python) would end the process
                raise KeyboardInterrupt


def _latest_checkpoint(directory: Path) -> int | None:
    """Latest finalised checkpoint step; half-written saves (orbax temp dirs) are ignored."""
    steps = _checkpoint_steps(directory)
    return steps[-1] if steps else None


def _checkpoint_steps(directory: Path) -> list[int]:
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())


def _restore_latest(checkpoints: Any, run_dir: Path, target: Any, latest: int, log: Any) -> tuple[Any, int]:
    """The newest checkpoint that restores; a corrupt one is skipped with a one-line warning."""
    ocp = _ocp()
    for step in reversed([s for s in _checkpoint_steps(run_dir / "checkpoints") if s <= latest]):
        try:
            return checkpoints.restore(step, args=ocp.args.StandardRestore(target)), step
        except Exception as err:
            reason = " ".join(str(err).split())[:160]
            log(
                f"warning: the checkpoint at update {step} in {run_dir} cannot be read ({reason}); "
                "trying the previous one."
            )
    raise ConfigError(
        f"no checkpoint in {run_dir / 'checkpoints'} can be read; delete the run_dir to start over"
    )


def _truncate_metrics(path: Path, last_update: int) -> None:
    """Drop rows written after the checkpoint we resume from (they will be rewritten)."""
    if not path.exists():
        return
    if last_update == 0:
        path.unlink()
        return
    kept = [
        line for line in path.read_text().splitlines() if line and json.loads(line)["update"] <= last_update
    ]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)


@contextlib.contextmanager
def _open_metrics(path: Path, is_writer: bool) -> Iterator[Any]:
    if not is_writer:
        yield open(os.devnull, "w")  # noqa: SIM115
        return
    with path.open("a") as f:
        yield f


# ----------------------------------------------------------------------------- metrics
def _to_host(tree: Any) -> dict[str, np.ndarray]:
    if jax.process_count() > 1:
        tree = multihost_utils.process_allgather(tree, tiled=True)
    return {k: np.asarray(v) for k, v in tree.items()}


def _add_chunk_axis(metrics: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v[:, None] for k, v in metrics.items()}


def _write_rows(f: Any, kind: str, updates: list[int], metrics: dict[str, np.ndarray]) -> None:
    """metrics[k] has shape [seeds, len(updates), ...]; one JSON line per (update, seed)."""
    num_seeds = next(iter(metrics.values())).shape[0]
    for i, update in enumerate(updates):
        for s in range(num_seeds):
            row: dict[str, Any] = {"kind": kind, "update": update, "seed": s}
            for k, v in metrics.items():
                value = v[s, i]
                row[k] = value.tolist() if value.ndim else _scalar(value)
            f.write(json.dumps(row) + "\n")


def _scalar(x: np.ndarray) -> Any:
    value = x.item()
    return value if not isinstance(value, float) or math.isfinite(value) else str(value)


def _json_ready(tree: Any) -> Any:
    """Arrays as lists, numpy scalars as Python numbers (for summary.json)."""
    if isinstance(tree, dict):
        return {str(k): _json_ready(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_json_ready(v) for v in tree]
    if hasattr(tree, "tolist"):
        return np.asarray(tree).tolist()
    return tree


def _check_finite(
    metrics: dict[str, np.ndarray], updates: list[int], first_seed: int, checkpoints: Any, run_dir: Path
) -> None:
    for name, values in metrics.items():
        if not np.issubdtype(values.dtype, np.floating):
            continue
        bad = ~np.isfinite(values.reshape(values.shape[0], values.shape[1], -1)).all(-1)
        if bad.any():
            seed_idx, update_idx = np.argwhere(bad)[np.argmin(np.argwhere(bad)[:, 1])]
            raise TrainingDiverged(
                f"{name} became {values[seed_idx, update_idx]} at update {updates[update_idx]} "
                f"(seed {first_seed + seed_idx}); stopped. {_kept(checkpoints, run_dir)}"
            )


@jax.jit
def _all_finite(state: Any) -> jax.Array:
    """Whether every float in ``state`` is finite (one compiled program for the whole tree)."""
    checks = [jnp.isfinite(x).all() for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.all(jnp.stack(checks)) if checks else jnp.bool_(True)


def _check_state_finite(state: Any, update: int, checkpoints: Any, run_dir: Path) -> None:
    if not bool(_all_finite(state)):
        raise TrainingDiverged(
            f"the train state holds NaN/inf at update {update}; stopped. {_kept(checkpoints, run_dir)}"
        )


def _kept(checkpoints: Any, run_dir: Path) -> str:
    checkpoints.wait_until_finished()
    latest = checkpoints.latest_step()
    if latest is None:
        return "No checkpoint had been saved yet."
    return f"The last good checkpoint (update {latest}) is kept in {run_dir / 'checkpoints'}."


def _postfix(
    report: Any, train: dict[str, np.ndarray], evaluation: dict[str, np.ndarray] | None
) -> dict[str, str]:
    out = {}
    for label, key in report.progress:
        if key in train:
            out[label] = f"{float(np.mean(train[key])):.3f}"
    if evaluation is not None and report.headline in evaluation:
        out["eval"] = f"{float(np.mean(evaluation[report.headline])):.2f}"
    return out


def _summary(
    cfg: RunConfig,
    last_eval: dict[str, np.ndarray],
    last_train: dict[str, np.ndarray],
    wall_s: float,
    compile_s: float,
    train_s: float,
) -> dict[str, Any]:
    def mean_std(x: np.ndarray) -> dict[str, Any]:
        return {
            "mean": np.mean(x, axis=0).tolist(),
            "std": np.std(x, axis=0).tolist(),
            "per_seed": np.asarray(x).tolist(),
        }

    return {
        "name": cfg.name,
        "algo": cfg.algo.name,
        "env": cfg.env.id if cfg.env is not None else None,
        "seeds": cfg.seeds,
        "num_updates": cfg.num_updates,
        "eval": {k.removeprefix("eval/"): mean_std(v) for k, v in last_eval.items()},
        "final_train": {k: mean_std(v) for k, v in last_train.items()},
        "wall_time_s": wall_s,
        "compile_s": compile_s,
        "train_s": train_s,
        "backend": jax.default_backend(),
        "jax_version": jax.__version__,
        "cpu_count": os.cpu_count(),
        "processes": jax.process_count(),
    }


def format_summary(summary: dict[str, Any], run_dir: str) -> str:
    """A short human-readable report of a finished run: a generic first line, then the method's
    table (``summary["report"]``, written by the method's ``Report.lines``)."""
    if "checkpoint_update" in summary:
        first = (
            f"Evaluated the checkpoint at update {summary['checkpoint_update']} x {summary['seeds']} "
            f"seed(s) in {summary['wall_time_s']:.0f} s (compile {summary['compile_s']:.0f} s)."
        )
    else:
        first = (
            f"Finished {summary.get('updates_run', summary['num_updates'])} updates x {summary['seeds']} "
            f"seed(s) in {summary['wall_time_s']:.0f} s (compile {summary['compile_s']:.0f} s)."
        )
        if summary.get("samples_per_s"):
            first += (
                f" {summary['samples_per_s']:,.0f} {summary['samples'].replace('_', ' ')}/s while training."
            )
    lines = [first, *summary.get("report", [])]
    if "checkpoint_update" not in summary:
        lines.append(f"Outputs in {run_dir}: metrics.jsonl, summary.json, plots/, checkpoints/.")
    return "\n".join(lines)

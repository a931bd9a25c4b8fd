"""Host environments behind ``jax.experimental.io_callback``: the batched env interface for Python envs.

Some environments cannot be written in JAX (Procgen, Miniworld): they run in
Python on the host. :class:`HostEnv` wraps such an environment so that jitted
rollouts and trials step it like a pure-JAX batch (``envs_jax.vector``): every
``reset``/``step``/``reset_where`` is one ``io_callback(..., ordered=True)``
call for the whole batch, so the calls happen in program order and none is
dropped (``pure_callback`` may be dropped when its result is unused).
Trials and rollouts step through ``step_and_reset_where``: the step and the
resets of the envs whose episodes ended in one call, since a callback's fixed
cost is most of a small batch's step.

The host side is a :class:`HostBatch`: ``num_envs`` environments stepped
together with numpy arrays. A batch is created by the first ``reset`` of a
JAX-side batch and named by a handle in the JAX state, so a train state's
rollout environments and an evaluation's fresh ones are different host
batches. The adapter keeps the :data:`MAX_BATCHES` most recently used batches;
an evicted one is kept (up to :data:`MAX_SPARES` per size) and reused, fully
reset, by the next new batch of its size, so trials that start a new batch
every update do not build their host environments every update.

**Not vmappable.** The host batch is one object; ``vmap`` over a host env
(e.g. over seeds) would call the host once per element at best. The adapter
refuses it with :class:`HostEnvVmapError`; the runner runs the seeds of such
an environment one after another instead.

**Tasks.** ``reset``/``reset_where`` hand the per-env task pytree (numpy
arrays with leading axis ``N``) to ``HostBatch.reset``, or ``None`` when the
caller gave none; a host env whose tasks are drawn in JAX (``sample_task``,
``is_valid_task``, given to :class:`HostEnv`) works with
``envs_jax.tasks.task_set`` like a pure-JAX one.

**Errors.** An exception raised by the host batch inside a callback reaches
the caller as JAX's runtime error, whose message is all that survives; the
adapter re-raises it as :class:`HostEnvError` naming the environment, the call
(``reset``/``step``), the host batch and how many steps it had taken, so the
message says where it happened.

**Resume.** A host environment's state is not a JAX array. A batch that can
snapshot itself (``get_state() -> [num_envs, K]`` uint8 array and
``set_state``) carries the snapshot in the JAX state after every call, so a
checkpointed train state restores the host environments exactly; a batch
that cannot is reset when a restored state names it (exact resume then holds
only as far as the environment's own determinism allows).
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.experimental import io_callback

MAX_BATCHES = 8
MAX_SPARES = 2  # evicted host batches kept per batch size for reuse


class HostEnvVmapError(ValueError):
    """A host environment was vmapped; it steps its own batch and must not be."""


class HostEnvError(RuntimeError):
    """The host batch raised inside a callback; the message names the env, the call and the step count."""


class HostBatch(Protocol):
    """``num_envs`` Python environments stepped together (numpy in, numpy out)."""

    num_envs: int

    def reset(self, seeds: np.ndarray, mask: np.ndarray, tasks: Any = None) -> np.ndarray:
        """Start new episodes where ``mask [N]`` (seeded by ``seeds [N]`` uint32); return every
        observation ``[N, *obs_shape]``. ``tasks`` is the per-env task pytree (numpy arrays, leading
        axis ``N``) or ``None`` when the caller gave none; env ``i`` starts an episode of ``tasks[i]``."""

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One step of every env: ``(obs, reward, terminated, truncated)``, no auto-reset; ``truncated``
        is the time limit without termination."""


@struct.dataclass
class HostState:
    """The JAX side of a host batch: its handle and, if the batch can snapshot itself, its snapshot."""

    handle: jax.Array  # int32 scalar: which host batch
    snapshot: jax.Array  # uint8 [N, K] (K = 0 when the batch cannot snapshot itself)


class HostEnv:
    """A gymnax-like batched environment stepped on the host through ordered ``io_callback``.

    ``make_batch(num_envs) -> HostBatch`` builds the host environments;
    ``observation_space``/``action_space`` are gymnax spaces of ONE env;
    ``snapshot_size`` is the bytes per env of ``get_state`` (0: no snapshots).
    ``max_batches``: host batches kept alive (:data:`MAX_BATCHES`); an env
    whose batches are heavy (an OpenGL context per env) and that snapshots
    exactly may keep fewer: a state naming an evicted batch continues from
    its snapshot in a new one.
    ``sample_task(key, params) -> task`` (pure JAX, one task) and
    ``is_valid_task(task, params) -> bool`` give the env the task interface
    of ``envs_jax.tasks`` (task sets are drawn in JAX, then handed to the
    host at each reset); without them the env has no task distribution.
    """

    batched = True
    vmappable = False

    def __init__(
        self,
        name: str,
        make_batch: Callable[[int], HostBatch],
        observation_space: Any,
        action_space: Any,
        params: Any,
        snapshot_size: int = 0,
        sample_task: Callable[[jax.Array, Any], Any] | None = None,
        is_valid_task: Callable[[Any, Any], Any] | None = None,
        max_batches: int = MAX_BATCHES,
    ) -> None:
        self._name = name
        self._make_batch = make_batch
        self._observation_space = observation_space
        self._action_space = action_space
        self._params = params
        self.snapshot_size = snapshot_size
        self.max_batches = int(max_batches)
        # The task interface exists only when given, so ``hasattr(env, "sample_task")`` (how methods
        # and ``envs_jax.tasks`` ask whether an env has tasks) tells the truth.
        if sample_task is not None:
            self.sample_task = sample_task
        if is_valid_task is not None:
            self.is_valid_task = is_valid_task
        self._batches: OrderedDict[int, HostBatch] = OrderedDict()
        # Evicted batches by size, for the next new batch of that size (a trial per update would
        # otherwise build its environments, e.g. OpenGL contexts, anew every update).
        self._spare: dict[int, list[HostBatch]] = {}
        self._steps: dict[int, int] = {}  # steps taken by each host batch (for error messages)
        self._handles = itertools.count(1)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ gymnax-like surface
    @property
    def name(self) -> str:
        return self._name

    @property
    def default_params(self) -> Any:
        return self._params

    @property
    def num_actions(self) -> int:
        return int(getattr(self._action_space, "n", 0))

    def observation_space(self, params: Any = None) -> Any:
        return self._observation_space

    def action_space(self, params: Any = None) -> Any:
        return self._action_space

    # ------------------------------------------------------------------ the batched interface
    def reset(self, keys: jax.Array, params: Any, tasks: Any = None) -> tuple[Any, HostState]:
        """A new host batch of ``keys.shape[0]`` envs, each starting an episode (of ``tasks[i]``)."""
        num_envs = keys.shape[0]
        handle = jnp.zeros((), jnp.int32)  # 0: a new batch
        snapshot = jnp.zeros((num_envs, self.snapshot_size), jnp.uint8)
        mask = jnp.ones((num_envs,), bool)
        return self._reset(HostState(handle, snapshot), mask, keys, tasks)

    def reset_where(
        self, done: jax.Array, keys: jax.Array, obs: Any, state: HostState, params: Any, tasks: Any = None
    ) -> tuple[Any, HostState]:
        """New episodes where ``done [N]`` (of ``tasks[i]``); the host leaves the other envs as they are."""
        del obs  # the host returns every env's observation: the ones not reset are unchanged
        return self._reset(state, done, keys, tasks)

    def step(
        self, keys: jax.Array, state: HostState, action: jax.Array, params: Any
    ) -> tuple[Any, HostState, jax.Array, jax.Array, jax.Array, dict[str, Any]]:
        """One step of every env: ``(obs [N, ...], state, reward [N] f32, terminated [N], truncated [N],
        {})``, no auto-reset; ``truncated`` excludes ``terminated``."""
        num_envs = action.shape[0]
        shapes = (
            jax.ShapeDtypeStruct((), jnp.int32),
            self._obs_struct(num_envs),
            jax.ShapeDtypeStruct((num_envs,), jnp.float32),
            jax.ShapeDtypeStruct((num_envs,), bool),
            jax.ShapeDtypeStruct((num_envs,), bool),
            jax.ShapeDtypeStruct((num_envs, self.snapshot_size), jnp.uint8),
        )
        handle, obs, reward, terminated, truncated, snapshot = _unbatched(
            self._name, lambda *a: io_callback(self._host_step, shapes, *a, ordered=True)
        )(state.handle, state.snapshot, action)
        return obs, HostState(handle, snapshot), reward, terminated, truncated, {}

    def step_and_reset_where(
        self,
        keys: jax.Array,
        reset_keys: jax.Array,
        state: HostState,
        action: jax.Array,
        params: Any,
        tasks: Any = None,
    ) -> tuple[Any, Any, HostState, jax.Array, jax.Array, jax.Array, dict[str, Any]]:
        """:meth:`step`, then new episodes (of ``tasks[i]``) where one ended, in ONE host call:
        ``(next_obs, obs, state, reward, terminated, truncated, {})`` (``envs_jax.vector.step_and_reset``).
        A callback's fixed cost (~0.5 ms here) is most of a small batch's step, so trials and
        rollouts use this instead of two calls."""
        del keys  # the host envs step deterministically given their state
        num_envs = action.shape[0]
        seeds = jax.vmap(lambda k: jax.random.bits(k, (), jnp.uint32))(reset_keys)
        obs_struct = self._obs_struct(num_envs)
        shapes = (
            jax.ShapeDtypeStruct((), jnp.int32),
            obs_struct,
            obs_struct,
            jax.ShapeDtypeStruct((num_envs,), jnp.float32),
            jax.ShapeDtypeStruct((num_envs,), bool),
            jax.ShapeDtypeStruct((num_envs,), bool),
            jax.ShapeDtypeStruct((num_envs, self.snapshot_size), jnp.uint8),
        )
        args = (state.handle, state.snapshot, action, seeds)
        if tasks is not None:
            self._check_tasks(tasks, num_envs)
            args = (*args, tasks)
        handle, next_obs, obs, reward, terminated, truncated, snapshot = _unbatched(
            self._name, lambda *a: io_callback(self._host_step_reset, shapes, *a, ordered=True)
        )(*args)
        return next_obs, obs, HostState(handle, snapshot), reward, terminated, truncated, {}

    # ------------------------------------------------------------------ host side
    def _reset(
        self, state: HostState, mask: jax.Array, keys: jax.Array, tasks: Any = None
    ) -> tuple[Any, HostState]:
        num_envs = mask.shape[0]
        seeds = jax.vmap(lambda k: jax.random.bits(k, (), jnp.uint32))(keys)
        shapes = (
            jax.ShapeDtypeStruct((), jnp.int32),
            self._obs_struct(num_envs),
            jax.ShapeDtypeStruct((num_envs, self.snapshot_size), jnp.uint8),
        )
        args = (state.handle, state.snapshot, mask, seeds)
        if tasks is not None:  # no tasks: nothing is passed, and the host sees None
            self._check_tasks(tasks, num_envs)
            args = (*args, tasks)
        handle, obs, snapshot = _unbatched(
            self._name, lambda *a: io_callback(self._host_reset, shapes, *a, ordered=True)
        )(*args)
        return obs, HostState(handle, snapshot)

    def _check_tasks(self, tasks: Any, num_envs: int) -> None:
        for leaf in jax.tree.leaves(tasks):
            if jnp.shape(leaf)[:1] != (num_envs,):
                raise ValueError(
                    f"{self._name}: every task leaf needs a leading axis of {num_envs} (one task per "
                    f"env), got shape {jnp.shape(leaf)}"
                )

    def _obs_struct(self, num_envs: int) -> jax.ShapeDtypeStruct:
        space = self._observation_space
        return jax.ShapeDtypeStruct((num_envs, *space.shape), space.dtype)

    def _batch(self, handle: int, snapshot: np.ndarray, num_envs: int) -> tuple[int, HostBatch, bool]:
        """The host batch ``handle`` names; a new one if the handle is unknown (``fresh``)."""
        with self._lock:
            batch = self._batches.get(handle) if handle else None
            fresh = batch is None
            if fresh:
                handle = next(self._handles)
                spare = self._spare.get(num_envs)
                batch = spare.pop() if spare else self._make_batch(num_envs)
                self._batches[handle] = batch
                self._steps[handle] = 0
                while len(self._batches) > self.max_batches:
                    old, evicted = self._batches.popitem(last=False)
                    self._steps.pop(old, None)
                    spares = self._spare.setdefault(evicted.num_envs, [])
                    if len(spares) < MAX_SPARES:
                        spares.append(evicted)
            self._batches.move_to_end(handle)
        return handle, batch, fresh

    @contextmanager
    def _reraise(self, call: str, handle: int) -> Iterator[None]:
        """Re-raise what the host batch raises as :class:`HostEnvError` saying where (chained)."""
        try:
            yield
        except Exception as err:
            where = f"host batch {handle}" if handle else "a new host batch"
            steps = self._steps.get(handle, 0)
            raise HostEnvError(
                f"the host environment {self._name} failed in {call} ({where}, after {steps} steps): "
                f"{type(err).__name__}: {err}"
            ) from err

    def _snapshot(self, batch: HostBatch) -> np.ndarray:
        if not self.snapshot_size:
            return np.zeros((batch.num_envs, 0), np.uint8)
        return np.asarray(batch.get_state(), np.uint8).reshape(batch.num_envs, self.snapshot_size)

    def _host_reset(
        self, handle: Any, snapshot: Any, mask: Any, seeds: Any, tasks: Any = None
    ) -> tuple[Any, ...]:
        mask, seeds = np.asarray(mask, bool), np.asarray(seeds, np.uint32)
        if tasks is not None:
            tasks = jax.tree.map(np.asarray, tasks)
        handle = int(handle)
        with self._reraise("reset", handle):
            handle, batch, fresh = self._batch(handle, np.asarray(snapshot), mask.shape[0])
        with self._reraise("reset", handle):
            if fresh and self.snapshot_size and not mask.all():
                batch.set_state(np.asarray(snapshot))  # a restored train state: continue where it was
            elif fresh and not mask.all():
                mask = np.ones_like(mask)  # nothing to continue from: every env starts over
            obs = batch.reset(seeds, mask, tasks)
            return np.int32(handle), self._obs(obs), self._snapshot(batch)

    def _stepped(self, handle: Any, snapshot: Any, actions: Any) -> tuple[Any, ...]:
        """Step the batch ``handle`` names (restored from ``snapshot`` if it was evicted):
        ``(handle, batch, obs, reward, terminated, truncated)`` as numpy, truncated without terminated."""
        actions = np.asarray(actions)
        handle = int(handle)
        with self._reraise("step", handle):
            handle, batch, fresh = self._batch(handle, np.asarray(snapshot), actions.shape[0])
        with self._reraise("step", handle):
            if fresh:
                if self.snapshot_size:
                    batch.set_state(np.asarray(snapshot))
                else:  # nothing to continue from: start over (tasks unknown here: the env's default)
                    num = actions.shape[0]
                    batch.reset(np.arange(num, dtype=np.uint32), np.ones(num, bool), None)
            obs, reward, terminated, truncated = batch.step(actions)
            self._steps[handle] = self._steps.get(handle, 0) + 1
        terminated = np.asarray(terminated, bool)
        truncated = np.asarray(truncated, bool) & ~terminated
        return handle, batch, self._obs(obs), np.asarray(reward, np.float32), terminated, truncated

    def _host_step(self, handle: Any, snapshot: Any, actions: Any) -> tuple[Any, ...]:
        handle, batch, obs, reward, terminated, truncated = self._stepped(handle, snapshot, actions)
        with self._reraise("step", handle):
            return np.int32(handle), obs, reward, terminated, truncated, self._snapshot(batch)

    def _host_step_reset(
        self, handle: Any, snapshot: Any, actions: Any, seeds: Any, tasks: Any = None
    ) -> tuple[Any, ...]:
        handle, batch, next_obs, reward, terminated, truncated = self._stepped(handle, snapshot, actions)
        done = terminated | truncated
        with self._reraise("reset", handle):
            obs = next_obs
            if done.any():
                tasks = None if tasks is None else jax.tree.map(np.asarray, tasks)
                obs = self._obs(batch.reset(np.asarray(seeds, np.uint32), done, tasks))
            return np.int32(handle), next_obs, obs, reward, terminated, truncated, self._snapshot(batch)

    def _obs(self, obs: Any) -> np.ndarray:
        return np.asarray(obs, self._observation_space.dtype)


def _unbatched(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` that refuses ``vmap`` with a clear error instead of calling the host once per element."""
    wrapped = jax.custom_batching.custom_vmap(fn)

    @wrapped.def_vmap
    def _refuse(axis_size: int, in_batched: Any, *args: Any) -> Any:
        raise HostEnvVmapError(
            f"the host environment {name} cannot be vmapped (here over an axis of size {axis_size}): it "
            "steps its own batch of environments on the host. Run seeds one after another (the runner "
            "does so for host environments) and give the batch size as the number of environments."
        )

    return wrapped


__all__ = [
    "MAX_BATCHES",
    "MAX_SPARES",
    "HostBatch",
    "HostEnv",
    "HostEnvError",
    "HostEnvVmapError",
    "HostState",
]

"""Host environments behind ``jax.experimental.io_callback``: the batched env interface for Python envs.

Some environments cannot be written in JAX (Procgen, Miniworld): they run in
Python on the host. :class:`HostEnv` wraps such an environment so that jitted
rollouts and trials step it like a pure-JAX batch (``envs_jax.vector``): every
``reset``/``step``/``reset_where`` is one ``io_callback(..., ordered=True)``
call for the whole batch, so the calls happen in program order and none is
dropped (``pure_callback`` may be dropped when its result is unused).

The host side is a :class:`HostBatch`: ``num_envs`` environments stepped
together with numpy arrays. A batch is created by the first ``reset`` of a
JAX-side batch and named by a handle in the JAX state, so a train state's
rollout environments and an evaluation's fresh ones are different host
batches. The adapter keeps the :data:`MAX_BATCHES` most recently used batches.

**Not vmappable.** The host batch is one object; ``vmap`` over a host env
(e.g. over seeds) would call the host once per element at best. The adapter
refuses it with :class:`HostEnvVmapError`; the runner runs the seeds of such
an environment one after another instead.

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
from collections.abc import Callable
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.experimental import io_callback

MAX_BATCHES = 8


class HostEnvVmapError(ValueError):
    """A host environment was vmapped; it steps its own batch and must not be."""


class HostBatch(Protocol):
    """``num_envs`` Python environments stepped together (numpy in, numpy out)."""

    num_envs: int

    def reset(self, seeds: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Start new episodes where ``mask [N]`` (seeded by ``seeds [N]``); return every observation."""

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
    ) -> None:
        self._name = name
        self._make_batch = make_batch
        self._observation_space = observation_space
        self._action_space = action_space
        self._params = params
        self.snapshot_size = snapshot_size
        self._batches: OrderedDict[int, HostBatch] = OrderedDict()
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
        num_envs = keys.shape[0]
        handle = jnp.zeros((), jnp.int32)  # 0: a new batch
        snapshot = jnp.zeros((num_envs, self.snapshot_size), jnp.uint8)
        mask = jnp.ones((num_envs,), bool)
        return self._reset(HostState(handle, snapshot), mask, keys)

    def reset_where(
        self, done: jax.Array, keys: jax.Array, obs: Any, state: HostState, params: Any, tasks: Any = None
    ) -> tuple[Any, HostState]:
        del obs  # the host returns every env's observation: the ones not reset are unchanged
        return self._reset(state, done, keys)

    def step(
        self, keys: jax.Array, state: HostState, action: jax.Array, params: Any
    ) -> tuple[Any, HostState, jax.Array, jax.Array, jax.Array, dict[str, Any]]:
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

    # ------------------------------------------------------------------ host side
    def _reset(self, state: HostState, mask: jax.Array, keys: jax.Array) -> tuple[Any, HostState]:
        num_envs = mask.shape[0]
        seeds = jax.vmap(lambda k: jax.random.bits(k, (), jnp.uint32))(keys)
        shapes = (
            jax.ShapeDtypeStruct((), jnp.int32),
            self._obs_struct(num_envs),
            jax.ShapeDtypeStruct((num_envs, self.snapshot_size), jnp.uint8),
        )
        handle, obs, snapshot = _unbatched(
            self._name, lambda *a: io_callback(self._host_reset, shapes, *a, ordered=True)
        )(state.handle, state.snapshot, mask, seeds)
        return obs, HostState(handle, snapshot)

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
                batch = self._make_batch(num_envs)
                self._batches[handle] = batch
                while len(self._batches) > MAX_BATCHES:
                    self._batches.popitem(last=False)
            self._batches.move_to_end(handle)
        return handle, batch, fresh

    def _snapshot(self, batch: HostBatch) -> np.ndarray:
        if not self.snapshot_size:
            return np.zeros((batch.num_envs, 0), np.uint8)
        return np.asarray(batch.get_state(), np.uint8).reshape(batch.num_envs, self.snapshot_size)

    def _host_reset(self, handle: Any, snapshot: Any, mask: Any, seeds: Any) -> tuple[Any, ...]:
        mask, seeds = np.asarray(mask, bool), np.asarray(seeds, np.uint32)
        handle, batch, fresh = self._batch(int(handle), np.asarray(snapshot), mask.shape[0])
        if fresh and self.snapshot_size and not mask.all():
            batch.set_state(np.asarray(snapshot))  # a restored train state: continue where it was
        elif fresh and not mask.all():
            mask = np.ones_like(mask)  # nothing to continue from: every env starts over
        obs = batch.reset(seeds, mask)
        return np.int32(handle), self._obs(obs), self._snapshot(batch)

    def _host_step(self, handle: Any, snapshot: Any, actions: Any) -> tuple[Any, ...]:
        actions = np.asarray(actions)
        handle, batch, fresh = self._batch(int(handle), np.asarray(snapshot), actions.shape[0])
        if fresh:
            if self.snapshot_size:
                batch.set_state(np.asarray(snapshot))
            else:
                batch.reset(np.arange(actions.shape[0], dtype=np.uint32), np.ones(actions.shape[0], bool))
        obs, reward, terminated, truncated = batch.step(actions)
        return (
            np.int32(handle),
            self._obs(obs),
            np.asarray(reward, np.float32),
            np.asarray(terminated, bool),
            np.asarray(truncated, bool) & ~np.asarray(terminated, bool),
            self._snapshot(batch),
        )

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


__all__ = ["MAX_BATCHES", "HostBatch", "HostEnv", "HostEnvVmapError", "HostState"]

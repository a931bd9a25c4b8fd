"""Fixed-shape experience replay for vectorised environments (DQN now, NEC later).

Data arrives PureJaxRL style: ``num_envs`` environments are stepped together, one time step at a time, so
each :func:`add` writes one *time row* holding a step of every env. The buffer keeps the last ``capacity``
time rows per env (a ring buffer: when full, the oldest row is overwritten), stored time-major so that a
window of consecutive rows of one env is a short time-ordered sequence of that env (n-step returns,
recurrent burn-in).

Layout of a :class:`ReplayBuffer`:

- ``data``: the pytree of one env's step (e.g. ``{"obs", "action", "reward", "terminated", "truncated",
  "next_obs"}``) with every leaf stored as ``[capacity, num_envs, *leaf.shape]``. Unwritten rows hold zeros.
- ``write_pos``: int32 scalar in ``[0, capacity)``, the physical time row the next step goes to.
- ``count``: int32 scalar in ``[0, capacity]``, how many time rows are filled (the same for every env).
- ``capacity`` and ``num_envs`` are static (not pytree leaves), so they stay correct under ``vmap``.

Rows are written at ``0, 1, ...`` and wrap, so the filled rows in time order are the physical rows
``(write_pos - count + i) % capacity`` for ``i = 0 .. count-1``; the *seam* is between the newest row
(``write_pos - 1``) and the oldest (``write_pos`` once full). Memory is ``capacity * num_envs`` steps;
sampling allocates only the sampled batch.

Sampling (jit/vmap-safe, fixed shapes, deterministic for a key): :func:`sample_sequences` draws an env and
a start uniformly (independently, so every window is equally likely) among the windows of ``length``
consecutive filled rows of one env that do not cross the seam; :func:`sample` is the ``length == 1`` case,
uniform over the filled ``(time, env)`` rows. Both also return ``valid [batch]``: False exactly when the
buffer holds fewer than ``length`` rows (no window exists), in which case the rows returned are the first
``length`` physical rows of some env, partly or wholly unwritten (zeros) — mask the loss with ``valid`` or
wait for :func:`can_sample`. Windows may cross episode boundaries; the done flags in the data say where
(:func:`n_step_targets` stops at the first one). The newest ``length - 1`` rows of each env are never the
*start* of a window, only its continuation.

Donation: every write is ``.at[].set`` on the whole state, so ``jax.jit(add, donate_argnums=0)`` updates the
buffer in place (tested on CPU with jax 0.10: no "donated buffers were not usable" warning and the old
buffer is deleted).

Why not flashbax: flashbax 0.1.3 (the newest on PyPI) declares only lower bounds (``jax>=0.4.25``,
``chex>=0.1.8``, ``numpy>=1.19.5``, ``flax>=0.6.11``, plus a hard ``tensorstore>=0.1.51``, which orbax
already brings), so pip would admit it here, and its trajectory buffer ran under jax 0.10.2 when imported
from the unpacked wheel. But it is classified "Pre-Alpha" and its metadata says nothing about which jax it
was tested with; its ``sample`` silently returns partly unwritten rows until ``can_sample`` is true (no
validity mask); it stores batch-major ``[add_batch_size, time]`` (a swapaxes of every ``[T, num_envs]``
rollout chunk); and it has no n-step target separating termination from truncation. This module is under
300 lines and adds no dependency.

Usage (DQN with n-step returns)::

    step0 = {"obs": obs[0], "action": jnp.int32(0), "reward": 0.0, "terminated": False,
             "truncated": False, "next_obs": obs[0]}
    buffer = replay.init(capacity=100_000 // num_envs, num_envs=num_envs, example_step=step0)
    add = jax.jit(replay.add, donate_argnums=0)
    # in the rollout: next_obs must be the observation *before* auto-reset (info["final_observation"])
    buffer = add(buffer, {"obs": obs, "action": a, "reward": r, "terminated": term, "truncated": trunc,
                          "next_obs": info["final_observation"]})
    seq, valid = replay.sample_sequences(buffer, key, batch_size=256, length=n)
    ret, disc, last = replay.n_step_targets(seq["reward"], seq["terminated"], seq["truncated"], gamma)
    bootstrap_obs = replay.select_step(seq["next_obs"], last)
    target = ret + disc * max_a Q_target(bootstrap_obs)     # Q of seq["obs"][:, 0], seq["action"][:, 0]
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from jaxmeta.memory.checks import positive_int, shape_dtype

PyTree = Any


@struct.dataclass
class ReplayBuffer:
    """Time-major ring buffer of the steps of ``num_envs`` envs; see the module docstring for the layout."""

    data: PyTree
    write_pos: jax.Array
    count: jax.Array
    capacity: int = struct.field(pytree_node=False)
    num_envs: int = struct.field(pytree_node=False)


def init(capacity: int, num_envs: int, example_step: PyTree) -> ReplayBuffer:
    """Empty buffer keeping the last ``capacity`` time steps of each of ``num_envs`` envs.

    ``example_step`` is a pytree of ONE env's step (arrays, scalars or ``jax.ShapeDtypeStruct``); only its
    leaves' shapes and dtypes are used.
    """
    capacity = positive_int("capacity", capacity)
    num_envs = positive_int("num_envs", num_envs)
    if not jax.tree.leaves(example_step):
        raise ValueError("example_step must be a pytree with at least one leaf")

    def storage(leaf: Any) -> jax.Array:
        shape, dtype = shape_dtype(leaf)
        return jnp.zeros((capacity, num_envs, *shape), dtype)

    return ReplayBuffer(
        data=jax.tree.map(storage, example_step),
        write_pos=jnp.zeros((), jnp.int32),
        count=jnp.zeros((), jnp.int32),
        capacity=capacity,
        num_envs=num_envs,
    )


def size(buffer: ReplayBuffer) -> jax.Array:
    """Filled time rows per env, int32 scalar in ``[0, capacity]``; transitions held = this * num_envs."""
    return buffer.count


def can_sample(buffer: ReplayBuffer, length: int = 1) -> jax.Array:
    """Whether a window of ``length`` time rows exists, i.e. whether sampling returns ``valid`` rows."""
    return buffer.count >= positive_int("length", length)


def _check_structure(buffer: ReplayBuffer, steps: PyTree, what: str) -> None:
    if jax.tree.structure(steps) != jax.tree.structure(buffer.data):
        raise ValueError(
            f"{what} must have the structure of the buffer's steps {jax.tree.structure(buffer.data)}, "
            f"got {jax.tree.structure(steps)}"
        )


def add_batch(buffer: ReplayBuffer, steps: PyTree) -> ReplayBuffer:
    """Write ``T`` consecutive time rows, leaves ``[T, num_envs, ...]`` (e.g. a rollout of ``lax.scan``).

    Equivalent to ``T`` calls of :func:`add` in time order; if ``T > capacity`` only the last ``capacity``
    rows are kept. Values are cast to the stored dtypes.
    """
    _check_structure(buffer, steps, "steps")
    steps = jax.tree.map(jnp.asarray, steps)
    leaves = jax.tree.leaves(steps)
    num_steps = leaves[0].shape[0] if leaves[0].ndim else 0
    if num_steps < 1:
        raise ValueError("steps leaves must have a leading time axis of length >= 1")
    capacity = buffer.capacity
    kept = min(num_steps, capacity)
    # Rows that a longer chunk would overwrite within this call are never written, so the indices below
    # are distinct and the scatter is deterministic.
    first = (buffer.write_pos + (num_steps - kept)) % capacity
    rows = (first + jnp.arange(kept, dtype=jnp.int32)) % capacity

    def write_leaf(store: jax.Array, new: jax.Array) -> jax.Array:
        if new.shape != (num_steps, *store.shape[1:]):
            raise ValueError(
                f"steps leaf must have shape {(num_steps, *store.shape[1:])} (T, num_envs, ...), "
                f"got {tuple(new.shape)}"
            )
        return store.at[rows].set(new[num_steps - kept :].astype(store.dtype), unique_indices=True)

    return buffer.replace(
        data=jax.tree.map(write_leaf, buffer.data, steps),
        write_pos=(buffer.write_pos + num_steps) % capacity,
        count=jnp.minimum(buffer.count + num_steps, capacity),
    )


def add(buffer: ReplayBuffer, step: PyTree) -> ReplayBuffer:
    """Write one time row, leaves ``[num_envs, ...]``, overwriting the oldest row when full."""
    _check_structure(buffer, step, "step")

    def check_leaf(store: jax.Array, new: Any) -> jax.Array:
        new = jnp.asarray(new)
        if new.shape != store.shape[1:]:
            raise ValueError(
                f"step leaf must have shape {tuple(store.shape[1:])} (num_envs, ...), got {tuple(new.shape)}"
            )
        return new[None]

    return add_batch(buffer, jax.tree.map(check_leaf, buffer.data, step))


def time_ordered(buffer: ReplayBuffer, data: PyTree = None) -> PyTree:
    """Every time row, oldest first: leaves ``[capacity, num_envs, ...]``.

    Once the buffer is full this is the last ``capacity`` steps of each env in time order (e.g. the
    window of steps still waiting for their n-step returns); before that the unwritten (zero) rows come
    first, then the written ones oldest first. ``data``: a part of ``buffer.data`` to order instead of
    all of it (e.g. ``{"reward": buffer.data["reward"]}``: every call copies what it orders).
    """
    rows = (buffer.write_pos + jnp.arange(buffer.capacity, dtype=jnp.int32)) % buffer.capacity
    return jax.tree.map(lambda leaf: leaf[rows], buffer.data if data is None else data)


def oldest(buffer: ReplayBuffer) -> PyTree:
    """The oldest time row once the buffer is full (the next one overwritten): leaves ``[num_envs, ...]``."""
    return jax.tree.map(lambda leaf: leaf[buffer.write_pos], buffer.data)


def sample_sequences(
    buffer: ReplayBuffer, key: jax.Array, batch_size: int, length: int
) -> tuple[PyTree, jax.Array]:
    """Uniformly sampled windows of ``length`` consecutive time rows of one env.

    Returns ``(sequences, valid)``: leaves ``[batch_size, length, ...]`` in time order, and ``valid
    [batch_size]`` bool, all False when the buffer holds fewer than ``length`` rows (then the rows are
    unwritten zeros or partly so). Windows lie in written data and never cross the ring's seam.
    """
    batch_size = positive_int("batch_size", batch_size)
    length = positive_int("length", length)
    capacity = buffer.capacity
    if length > capacity:
        raise ValueError(f"length must be <= capacity {capacity}, got {length}")
    time_key, env_key = jax.random.split(key)
    # Windows per env: starts 0 .. count-length in time order. With none, draw start 0 and flag invalid.
    num_starts = jnp.maximum(buffer.count - length + 1, 1)
    start = jax.random.randint(time_key, (batch_size,), 0, num_starts, dtype=jnp.int32)
    env = jax.random.randint(env_key, (batch_size,), 0, buffer.num_envs, dtype=jnp.int32)
    oldest = (buffer.write_pos - buffer.count) % capacity
    rows = (oldest + start[:, None] + jnp.arange(length, dtype=jnp.int32)) % capacity
    sequences = jax.tree.map(lambda leaf: leaf[rows, env[:, None]], buffer.data)
    valid = jnp.broadcast_to(buffer.count >= length, (batch_size,))
    return sequences, valid


def sample(buffer: ReplayBuffer, key: jax.Array, batch_size: int) -> tuple[PyTree, jax.Array]:
    """Transitions drawn uniformly over the filled ``(time, env)`` rows, with replacement.

    Returns ``(transitions, valid)``: leaves ``[batch_size, ...]`` and ``valid [batch_size]`` bool, all
    False (and the rows zeros) while the buffer is empty.
    """
    sequences, valid = sample_sequences(buffer, key, batch_size, 1)
    return jax.tree.map(lambda leaf: leaf[:, 0], sequences), valid


def n_step_targets(
    rewards: jax.Array, terminated: jax.Array, truncated: jax.Array, gamma: float | jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """n-step return of the first step of each sequence, stopping at the first step that ends an episode.

    ``rewards``, ``terminated``, ``truncated`` are ``[..., n]`` (time last, e.g. from
    :func:`sample_sequences`). With ``last`` the first ``k`` where ``terminated | truncated`` (``n - 1`` if
    none), returns ``(returns, discount, last)``, each ``[...]``:

    - ``returns = sum_{k <= last} gamma^k * rewards[k]``;
    - ``discount = gamma^(last + 1)``, or 0 if step ``last`` is terminated: the factor on the bootstrap
      value of ``next_obs[last]`` (the observation before any auto-reset). A truncated (time-limit) step
      is bootstrapped, since truncation is not a terminal state; terminated wins when both are set.
    - ``last``: int32 index of the step whose ``next_obs`` to bootstrap from (see :func:`select_step`).

    With ``n = 1`` this is the one-step target ``r + gamma * (1 - terminated) * Q(next_obs)``.
    """
    rewards = jnp.asarray(rewards)
    if not jnp.issubdtype(rewards.dtype, jnp.floating):
        rewards = rewards.astype(jnp.float32)
    terminated = jnp.asarray(terminated, bool)
    truncated = jnp.asarray(truncated, bool)
    if rewards.ndim < 1 or rewards.shape[-1] < 1:
        raise ValueError(f"rewards must have a last (time) axis of length >= 1, got shape {rewards.shape}")
    if terminated.shape != rewards.shape or truncated.shape != rewards.shape:
        raise ValueError(
            f"rewards, terminated and truncated must have the same shape, got {rewards.shape}, "
            f"{terminated.shape} and {truncated.shape}"
        )
    n = rewards.shape[-1]
    ended = (terminated | truncated).astype(jnp.int32)
    # Step k counts if no step before it ended.
    included = jnp.cumsum(ended, axis=-1) - ended == 0
    gamma = jnp.asarray(gamma, rewards.dtype)
    powers = gamma ** jnp.arange(n, dtype=rewards.dtype)
    returns = jnp.sum(jnp.where(included, rewards * powers, 0), axis=-1)
    last = jnp.sum(included, axis=-1, dtype=jnp.int32) - 1
    terminal = jnp.take_along_axis(terminated, last[..., None], axis=-1)[..., 0]
    discount = jnp.where(terminal, 0, gamma ** (last + 1).astype(rewards.dtype))
    return returns, discount.astype(rewards.dtype), last


def select_step(sequences: PyTree, index: jax.Array) -> PyTree:
    """Pick one time step per sequence: leaves ``[B, L, ...]`` and ``index [B]`` -> leaves ``[B, ...]``.

    E.g. ``select_step(seq["next_obs"], last)`` with ``last`` from :func:`n_step_targets`.
    """
    index = jnp.asarray(index, jnp.int32)

    def pick(leaf: jax.Array) -> jax.Array:
        if leaf.ndim < 2 or leaf.shape[0] != index.shape[0]:
            raise ValueError(f"leaves must be [B, L, ...] with B = {index.shape[0]}, got {leaf.shape}")
        return leaf[jnp.arange(leaf.shape[0]), index]

    return jax.tree.map(pick, sequences)

"""Per-task memory banks of failed episodes (Chen & Agrawal 2020, "Learning to learn from failures").

Each task ``i`` owns a bank ``B^{M_i}`` holding up to ``capacity`` (N) failed episodes; only failures are
written, and when a bank is full the oldest episode is dropped. An episode is stored as its last ``length``
(L) steps, right-aligned (the final step at index L-1) with a step mask for episodes shorter than L.

Layout: all banks of a task set are one :class:`FailureBank` pytree with a leading ``num_tasks`` axis.

- ``steps``: the pytree of one step (e.g. ``{"obs", "action", "reward"}``) with every leaf stored as
  ``[num_tasks, N, L, *leaf.shape]``. Masked steps and empty slots hold zeros, so the contents depend only
  on the valid data that was written.
- ``step_mask``: ``[num_tasks, N, L]`` bool, which stored steps are real.
- ``slot_mask``: ``[num_tasks, N]`` bool, which slots hold an episode.
- ``write_pos``: ``[num_tasks]`` int32 in ``[0, N)``, the ring-buffer slot the next failure goes to.

Slots fill 0..N-1 in order and then wrap, so a bank that is not full has its episodes first, oldest to
newest; :func:`read` rotates full banks so callers always see oldest to newest with empty slots last.

Usage::

    bank = failure_bank.init(num_tasks, capacity=4, length=8, step_example={"obs": obs0, "reward": r0})
    # per-step data of a batch of trials, [trials, T, ...] -> episodes [trials, E, L, ...]
    eps, mask, ended = jax.vmap(failure_bank.last_steps, in_axes=(0, 0, 0, None, None))(
        trial_steps, episode_index, done, 8, max_episodes
    )
    flat = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), eps)
    # `success [trials, E]` comes from the method (e.g. goal reward); what counts as failure is its call.
    bank = failure_bank.add(
        bank, jnp.repeat(trial_task_ids, max_episodes), flat, mask.reshape(-1, 8), (ended & ~success).ravel()
    )
    mem_steps, mem_step_mask, mem_slot_mask = failure_bank.read(bank, trial_task_ids)
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from jaxmeta.memory.checks import positive_int, shape_dtype

PyTree = Any


@struct.dataclass
class FailureBank:
    """Ring buffers of failed episodes, one per task; see the module docstring for the layout."""

    steps: PyTree
    step_mask: jax.Array
    slot_mask: jax.Array
    write_pos: jax.Array

    @property
    def num_tasks(self) -> int:
        return self.step_mask.shape[0]

    @property
    def capacity(self) -> int:
        return self.step_mask.shape[1]

    @property
    def length(self) -> int:
        return self.step_mask.shape[2]


def init(num_tasks: int, capacity: int, length: int, step_example: PyTree) -> FailureBank:
    """Empty banks for ``num_tasks`` tasks, each holding up to ``capacity`` episodes of ``length`` steps.

    ``step_example`` is a pytree of one step; only its leaves' shapes and dtypes are used.
    """
    num_tasks = positive_int("num_tasks", num_tasks)
    capacity = positive_int("capacity", capacity)
    length = positive_int("length", length)

    def storage(leaf: Any) -> jax.Array:
        shape, dtype = shape_dtype(leaf)
        return jnp.zeros((num_tasks, capacity, length, *shape), dtype)

    return FailureBank(
        steps=jax.tree.map(storage, step_example),
        step_mask=jnp.zeros((num_tasks, capacity, length), bool),
        slot_mask=jnp.zeros((num_tasks, capacity), bool),
        write_pos=jnp.zeros((num_tasks,), jnp.int32),
    )


def size(bank: FailureBank) -> jax.Array:
    """Number of episodes held per task, ``[num_tasks]`` int32."""
    return bank.slot_mask.sum(axis=-1, dtype=jnp.int32)


def _rank_within_group(group: jax.Array) -> jax.Array:
    """For each row, how many earlier rows (in batch order) share its group id.

    A stable sort keeps batch order inside each group, so the rank is the distance to the group's first
    position in sorted order. O(B log B) time and O(B) memory, independent of the number of tasks (a
    [B, B] comparison or a [B, num_tasks] one-hot cumsum would be quadratic / task-count sized).
    """
    batch = group.shape[0]
    order = jnp.argsort(group, stable=True)
    sorted_group = group[order]
    pos = jnp.arange(batch, dtype=jnp.int32)
    is_start = jnp.concatenate([jnp.ones((1,), bool), sorted_group[1:] != sorted_group[:-1]])
    group_start = jax.lax.cummax(jnp.where(is_start, pos, 0))
    # `order` is a permutation, so this scatter has no duplicate indices.
    return jnp.zeros((batch,), jnp.int32).at[order].set(pos - group_start)


def add(
    bank: FailureBank,
    task_ids: jax.Array,
    steps: PyTree,
    step_mask: jax.Array,
    is_failure: jax.Array,
) -> FailureBank:
    """Write the failed episodes of a batch into their tasks' banks, dropping the oldest when full.

    ``task_ids [B]`` int, ``steps`` pytree with leaves ``[B, L, ...]``, ``step_mask [B, L]`` bool,
    ``is_failure [B]`` bool. Only rows with ``is_failure`` and a task id in ``[0, num_tasks)`` are written.
    Several episodes of one task are written in batch order, exactly as if added one at a time.
    """
    num_tasks, capacity, length = bank.num_tasks, bank.capacity, bank.length
    task_ids = jnp.asarray(task_ids, jnp.int32)
    step_mask = jnp.asarray(step_mask, bool)
    batch = task_ids.shape[0]
    if step_mask.shape != (batch, length):
        raise ValueError(
            f"step_mask must have shape {(batch, length)} (batch, length), got {step_mask.shape}"
        )

    write = jnp.asarray(is_failure, bool) & (task_ids >= 0) & (task_ids < num_tasks)
    # Rows that are not written all share the group id `num_tasks`, which is never read back.
    group = jnp.where(write, task_ids, num_tasks)
    rank = _rank_within_group(group)
    num_written = jax.ops.segment_sum(write.astype(jnp.int32), group, num_segments=num_tasks)
    safe_task = jnp.minimum(group, num_tasks - 1)
    # Of more than N failures of one task in this call only the last N survive; their ranks are N
    # consecutive integers, so their slots are distinct and the scatter below is deterministic.
    survives = write & (rank >= num_written[safe_task] - capacity)
    slot = (bank.write_pos[safe_task] + rank) % capacity
    # The rest go to an out-of-bounds task index and are dropped by the scatter.
    row_task = jnp.where(survives, task_ids, num_tasks)

    def write_leaf(store: jax.Array, new: jax.Array) -> jax.Array:
        if new.shape[:2] != (batch, length) or new.shape[2:] != store.shape[3:]:
            raise ValueError(
                f"steps leaf must have shape {(batch, length, *store.shape[3:])}, got {tuple(new.shape)}"
            )
        # Zero masked steps so stored contents never depend on padding garbage.
        mask = step_mask.reshape(step_mask.shape + (1,) * (new.ndim - 2))
        new = jnp.where(mask, new, jnp.zeros((), new.dtype)).astype(store.dtype)
        return store.at[row_task, slot].set(new, mode="drop")

    return FailureBank(
        steps=jax.tree.map(write_leaf, bank.steps, steps),
        step_mask=bank.step_mask.at[row_task, slot].set(step_mask, mode="drop"),
        slot_mask=bank.slot_mask.at[row_task, slot].set(True, mode="drop"),
        write_pos=(bank.write_pos + num_written) % capacity,
    )


def read(bank: FailureBank, task_ids: jax.Array) -> tuple[PyTree, jax.Array, jax.Array]:
    """The banks of ``task_ids [B]`` with slots ordered oldest to newest, empty slots last.

    Returns ``(steps [B, N, L, ...], step_mask [B, N, L], slot_mask [B, N])``; empty slots are all-masked
    and zero. An id outside ``[0, num_tasks)`` reads as an empty bank (all masked, zeros), as :func:`add`
    ignores such ids: inside ``jit`` an index cannot raise, and clamping it would read another task's bank.
    """
    capacity = bank.capacity
    task_ids = jnp.asarray(task_ids, jnp.int32)
    known = (task_ids >= 0) & (task_ids < bank.num_tasks)
    safe_ids = jnp.where(known, task_ids, 0)
    full = bank.slot_mask[safe_ids].all(axis=-1)
    # A bank that is not full holds its episodes in slots 0..size-1 already in order; a full one starts
    # at the write pointer, which points at its oldest episode.
    start = jnp.where(full, bank.write_pos[safe_ids], 0)
    slots = (start[:, None] + jnp.arange(capacity, dtype=jnp.int32)) % capacity
    rows = safe_ids[:, None]

    def keep_known(x: jax.Array) -> jax.Array:
        return jnp.where(known.reshape((-1,) + (1,) * (x.ndim - 1)), x, jnp.zeros((), x.dtype))

    steps = jax.tree.map(lambda leaf: keep_known(leaf[rows, slots]), bank.steps)
    return steps, keep_known(bank.step_mask[rows, slots]), keep_known(bank.slot_mask[rows, slots])


def last_steps(
    steps: PyTree,
    episode_index: jax.Array,
    done: jax.Array,
    length: int,
    max_episodes: int,
) -> tuple[PyTree, jax.Array, jax.Array]:
    """Cut the last ``length`` steps of each episode out of one trial's per-step data.

    ``steps`` has leaves ``[T, ...]``; step t belongs to episode ``episode_index[t]`` (0, 1, ...,
    nondecreasing) and ``done[t]`` marks the last step of an episode that ended inside the trial.
    Returns ``(episode_steps [E, L, ...], step_mask [E, L], ended [E])`` with ``E = max_episodes``:
    each episode is right-aligned (its final step at index L-1), shorter ones masked and zero-padded in
    front; episodes ``>= max_episodes`` are dropped and episodes that never occurred are all-masked with
    ``ended`` False. vmap it for a batch of trials.
    """
    length = positive_int("length", length)
    max_episodes = positive_int("max_episodes", max_episodes)
    episode_index = jnp.asarray(episode_index, jnp.int32)
    done = jnp.asarray(done, bool)
    num_steps = episode_index.shape[0]

    in_range = (episode_index >= 0) & (episode_index < max_episodes)
    # Out-of-range episodes go to segment/row `max_episodes`, which segment ops and scatters drop.
    episode = jnp.where(in_range, episode_index, max_episodes)
    t = jnp.arange(num_steps, dtype=jnp.int32)
    last_t = jax.ops.segment_max(t, episode, num_segments=max_episodes)
    # Steps of an episode are contiguous, so distance to its final step gives the right-aligned position.
    pos = length - 1 - (last_t[jnp.minimum(episode, max_episodes - 1)] - t)
    row = jnp.where(in_range & (pos >= 0), episode, max_episodes)
    # (row, pos) is unique per kept step because (episode, t) is.
    mask = jnp.zeros((max_episodes, length), bool).at[row, pos].set(True, mode="drop")
    ended = jnp.zeros((max_episodes,), bool).at[row].max(done, mode="drop")

    def cut(leaf: jax.Array) -> jax.Array:
        leaf = jnp.asarray(leaf)
        out = jnp.zeros((max_episodes, length, *leaf.shape[1:]), leaf.dtype)
        return out.at[row, pos].set(leaf, mode="drop")

    return jax.tree.map(cut, steps), mask, ended

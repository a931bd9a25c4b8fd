"""Differentiable neural dictionary (DND): one fixed-capacity key-value table per action, as pure functions.

The memory of Neural Episodic Control (Pritzel et al. 2017, "Differentiable Neural Dictionary") and of
Model-Free Episodic Control. Everything here is jit/vmap/grad-safe and fixed-shape.

Layout of a :class:`DND` with ``A`` actions, capacity ``C`` rows per action and key size ``D``:

- ``keys [A, C, D]`` float32 and ``values [A, C]`` float32: the stored embeddings and Q-values.
- ``valid [A, C]`` bool: which rows hold an entry. Rows fill in index order and are never emptied, so the
  valid rows of an action are its first ``count`` rows until it is full.
- ``key_norms [A, C]``: the cached ``|key|^2`` (a lookup is then one matrix product plus a top-k).
- ``key_hashes [A, C, 2]`` uint32: a 64-bit hash of each key's bits, for exact-match writes in O(C)
  instead of comparing every key.
- ``last_used [A, C]`` int32: the ``clock`` at the row's latest write or lookup, -1 for unwritten rows.
- ``clock`` int32 scalar: advanced by every lookup and by every single write.

The write position is the least recently used row of the action: the unwritten rows first (they hold
``last_used == -1``, lowest index first), then, once the table is full, the row with the smallest
``last_used`` (ties: the lowest row index). No separate pointer is kept.

Operations:

- :func:`search` finds the exact ``k`` nearest keys by squared Euclidean distance (no gradient).
- :func:`kernel_estimate` turns gathered neighbours into ``sum w_i v_i / sum w_i`` with
  ``w_i = 1 / (|q - k_i|^2 + delta)``; it is differentiable in the query and in the neighbours' keys and
  values (the distances are recomputed from the gathered keys, not taken from the search).
- :func:`lookup` = search + gather + estimate for every action, and the ages of the rows used refreshed.
- :func:`write`: for each ``(action, key, value)`` in order: if the key is stored (same bits), the value
  becomes ``v + alpha (value - v)`` (``rule="lerp"``, NEC) or ``max(v, value)`` (``rule="max"``, MFEC);
  otherwise the key is inserted in the least recently used row. A batch is written exactly as the same
  writes one after another in batch order (so a key repeated in a batch is inserted once, then updated).
- :func:`update_rows` adds gradient steps to the keys and values of given rows (NEC trains the rows it
  used) and refreshes their cached norms and hashes.

Donation: every function returns a new state built with ``.at[]`` updates, so ``jax.jit(write,
donate_argnums=0)`` (and the same for :func:`lookup` and :func:`update_rows`) updates the tables in place:
4 actions x 5e5 x 128 keys are 1.0 GB and are not copied.

Exact match is by bits (``-0.0`` is stored as ``0.0``). Two different keys share a 64-bit hash with
probability about ``2^-64`` per pair; such a pair would be treated as one key.

Usage (NEC)::

    dnd = dnd_lib.init(num_actions=4, capacity=50_000, key_size=64)
    q, dnd, used = dnd_lib.lookup(dnd, embeddings, k=50, delta=1e-3)           # q [B, 4]
    dnd = dnd_lib.write(dnd, actions, embeddings, n_step_returns, alpha=0.1)
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxmeta.memory.checks import positive_int

# Fixed odd multipliers of the two 32-bit key hashes, one per key element (drawn once, for any key size
# up to 4096; a longer key reuses them cyclically).
_HASH_MULTIPLIERS = np.random.default_rng(0x5EED).integers(0, 2**31, (2, 4096), dtype=np.uint32) * 2 + 1


@struct.dataclass
class DND:
    """Per-action key-value tables; see the module docstring for the layout."""

    keys: jax.Array
    values: jax.Array
    valid: jax.Array
    key_norms: jax.Array
    key_hashes: jax.Array
    last_used: jax.Array
    clock: jax.Array

    @property
    def num_actions(self) -> int:
        return self.keys.shape[-3]

    @property
    def capacity(self) -> int:
        return self.keys.shape[-2]

    @property
    def key_size(self) -> int:
        return self.keys.shape[-1]


class Neighbours(NamedTuple):
    """The result of :func:`search`, each ``[B, A, k]``, nearest first."""

    indices: jax.Array  # int32 row of each neighbour in its action's table
    sq_distances: jax.Array  # float32 squared distance from the search (>= 0; inf where not valid)
    valid: jax.Array  # bool: the row holds an entry (False where the table has fewer than k entries)


def init(num_actions: int, capacity: int, key_size: int) -> DND:
    """An empty dictionary of ``num_actions`` tables of ``capacity`` rows of keys of size ``key_size``."""
    num_actions = positive_int("num_actions", num_actions)
    capacity = positive_int("capacity", capacity)
    key_size = positive_int("key_size", key_size)
    shape = (num_actions, capacity)
    return DND(
        keys=jnp.zeros((*shape, key_size), jnp.float32),
        values=jnp.zeros(shape, jnp.float32),
        valid=jnp.zeros(shape, bool),
        key_norms=jnp.zeros(shape, jnp.float32),
        key_hashes=jnp.zeros((*shape, 2), jnp.uint32),
        last_used=jnp.full(shape, -1, jnp.int32),
        clock=jnp.zeros((), jnp.int32),
    )


def from_arrays(keys: jax.Array, values: jax.Array, valid: jax.Array | None = None) -> DND:
    """A dictionary holding ``keys [A, C, D]`` and ``values [A, C]`` (rows where ``valid [A, C]``, default
    all), all used at clock 0: e.g. a table saved earlier, or keys for a benchmark. Keys are stored by
    their bits as given; an exact key stored twice is not merged."""
    keys = _positive_zeros(jnp.asarray(keys, jnp.float32))
    values = jnp.asarray(values, jnp.float32)
    if keys.ndim != 3 or values.shape != keys.shape[:2]:
        raise ValueError(f"keys must be [A, C, D] and values [A, C], got {keys.shape} and {values.shape}")
    valid = jnp.ones(values.shape, bool) if valid is None else jnp.asarray(valid, bool)
    return DND(
        keys=keys,
        values=values,
        valid=valid,
        key_norms=(keys * keys).sum(-1),
        key_hashes=hash_keys(keys),
        last_used=jnp.where(valid, 0, -1).astype(jnp.int32),
        clock=jnp.zeros((), jnp.int32),
    )


def count(dnd: DND) -> jax.Array:
    """Entries held per action, int32 ``[A]``."""
    return dnd.valid.sum(-1, dtype=jnp.int32)


def _positive_zeros(keys: jax.Array) -> jax.Array:
    """``-0.0`` as ``0.0``: equal floats get equal bits (and equal hashes)."""
    return jnp.where(keys == 0, jnp.zeros_like(keys), keys)


def hash_keys(keys: jax.Array) -> jax.Array:
    """64-bit hash of each key's float32 bits as ``uint32 [..., 2]`` (``-0.0`` hashes as ``0.0``)."""
    keys = _positive_zeros(jnp.asarray(keys, jnp.float32))
    bits = jax.lax.bitcast_convert_type(keys, jnp.uint32)
    size = keys.shape[-1]
    multipliers = jnp.asarray(np.resize(_HASH_MULTIPLIERS, (2, size)))
    # uint32 arithmetic wraps: a sum of products modulo 2^32, one per multiplier row.
    return jnp.stack([(bits * multipliers[0]).sum(-1), (bits * multipliers[1]).sum(-1)], axis=-1)


def _check_queries(dnd: DND, queries: jax.Array, k: int) -> int:
    k = positive_int("k", k)
    if k > dnd.capacity:
        raise ValueError(f"k={k} nearest neighbours need a capacity >= k, but the capacity is {dnd.capacity}")
    if queries.ndim != 2 or queries.shape[-1] != dnd.key_size:
        raise ValueError(
            f"queries must be [batch, key_size={dnd.key_size}] (the DND's key size), got {queries.shape}"
        )
    return k


def _block_size(capacity: int, k: int, num_queries: int) -> int:
    """Rows per block of the two-stage search (a divisor of the capacity near 32, so that the table
    splits into blocks without a copy), or 0 for one top-k over all scores."""
    divisors = [size for size in range(20, 65) if capacity % size == 0]
    if not divisors:
        return 0
    block = min(divisors, key=lambda size: abs(size - 32))
    # Measured on the 2-core CPU: with few scores one top-k is faster (at 5e4 rows and one query, 0.5
    # ms against 1.0 ms); stage two reads k blocks of keys per query and action, which must stay a small
    # part of the table. At 5e5 rows and 32 queries the two stages took 40 ms against 103 ms.
    worth_it = num_queries * capacity >= 2**21 and 4 * num_queries * k * block <= capacity
    return block if worth_it else 0


def _chunk_blocks(num_blocks: int, block: int) -> int:
    """Blocks per chunk of stage one: a divisor of ``num_blocks`` giving at most ~8k rows (the chunk's
    scores stay in cache), or 0 when only tiny chunks divide it."""
    most = max(1, 8192 // block)
    per_chunk = max(d for d in range(1, most + 1) if num_blocks % d == 0)
    return per_chunk if per_chunk >= 8 else 0


def _scores(keys: jax.Array, key_norms: jax.Array, valid: jax.Array, queries: jax.Array) -> jax.Array:
    """``2 k.q - |k|^2`` (``|q|^2 - |q - k|^2``: larger is nearer) of rows ``[R, D]`` -> ``[R, B]``,
    ``-inf`` for rows not valid. Rows lead and queries are innermost: on the CPU this product was about
    twice as fast as ``[B, D] x [D, R]``."""
    scores = 2.0 * (keys @ queries.T) - key_norms[:, None]
    return jnp.where(valid[:, None], scores, -jnp.inf)


def search(dnd: DND, queries: jax.Array, k: int) -> Neighbours:
    """The exact ``k`` nearest valid keys of each action to each query, by squared Euclidean distance.

    ``queries [B, D]`` -> :class:`Neighbours` ``[B, A, k]``. Ties are broken towards the lower row. The
    distances ``|q|^2 - 2 q.k + |k|^2`` come from matrix products with the cached key norms (as faiss
    computes them); they can differ from ``|q - k|^2`` by rounding, so two keys at nearly the same distance
    may swap order. No gradient flows through the search.

    Large tables and few queries take an exact two-stage search. Stage one runs over the table in chunks
    of about 8k rows and keeps, for every block of about 32 rows, only its best score: the chunk's scores
    never leave the cache and the full ``[B, A C]`` score matrix is never written. The ``k`` best blocks
    of each query and action hold its ``k`` nearest rows (each of them holds a row at least as near as
    the best row of any block left out); stage two scores those blocks' rows again from their keys and
    keeps the ``k`` best. Otherwise: one product and one top-k over all scores.
    """
    queries = jnp.asarray(queries, jnp.float32)
    k = _check_queries(dnd, queries, k)
    queries = jax.lax.stop_gradient(queries)
    keys, key_norms = jax.lax.stop_gradient((dnd.keys, dnd.key_norms))
    num_queries, num_actions, capacity, key_size = (
        queries.shape[0],
        dnd.num_actions,
        dnd.capacity,
        dnd.key_size,
    )
    flat_keys, flat_norms, flat_valid = (
        keys.reshape(-1, key_size),
        key_norms.reshape(-1),
        dnd.valid.reshape(-1),
    )
    block = _block_size(capacity, k, num_queries)
    per_chunk = _chunk_blocks(num_actions * capacity // block, block) if block else 0
    if per_chunk:
        rows = per_chunk * block

        def block_maxima(chunk: tuple[jax.Array, jax.Array, jax.Array]) -> jax.Array:
            return _scores(*chunk, queries).reshape(per_chunk, block, num_queries).max(1)

        chunks = (
            flat_keys.reshape(-1, rows, key_size),
            flat_norms.reshape(-1, rows),
            flat_valid.reshape(-1, rows),
        )
        maxima = jax.lax.map(block_maxima, chunks).reshape(num_actions, capacity // block, num_queries)
        _, best_blocks = jax.lax.top_k(jnp.moveaxis(maxima, -1, 0), k)  # [B, A, k]
        best_blocks = jnp.sort(best_blocks, axis=-1)  # candidates in row order: ties go to the lower row
        action = jnp.arange(num_actions)[None, :, None, None]
        rows_of = action * capacity + best_blocks[..., None] * block + jnp.arange(block)  # [B, A, k, block]
        candidate_scores = (
            2.0 * jnp.einsum("bakgd,bd->bakg", flat_keys[rows_of], queries) - flat_norms[rows_of]
        )
        candidate_scores = jnp.where(flat_valid[rows_of], candidate_scores, -jnp.inf)
        top_scores, position = jax.lax.top_k(candidate_scores.reshape(num_queries, num_actions, -1), k)
        indices = jnp.take_along_axis(best_blocks, position // block, axis=-1) * block + position % block
    else:
        # One [B, D] x [D, A C] product (a batched einsum over actions was several times slower on CPU).
        scores = 2.0 * queries @ flat_keys.T - flat_norms
        scores = jnp.where(flat_valid, scores, -jnp.inf).reshape(num_queries, num_actions, capacity)
        top_scores, indices = jax.lax.top_k(scores, k)
    found = top_scores > -jnp.inf
    query_norms = (queries * queries).sum(-1)[:, None, None]
    sq_distances = jnp.where(found, jnp.maximum(query_norms - top_scores, 0.0), jnp.inf)
    return Neighbours(indices=indices.astype(jnp.int32), sq_distances=sq_distances, valid=found)


def gather(dnd: DND, neighbours: Neighbours) -> tuple[jax.Array, jax.Array]:
    """The neighbours' ``(keys [B, A, k, D], values [B, A, k])``; differentiable in the tables."""
    action = jnp.arange(dnd.num_actions)[None, :, None]
    return dnd.keys[action, neighbours.indices], dnd.values[action, neighbours.indices]


def kernel_estimate(
    queries: jax.Array, neighbour_keys: jax.Array, neighbour_values: jax.Array, valid: jax.Array, delta: float
) -> jax.Array:
    """``sum_i w_i v_i / sum_i w_i`` with ``w_i = 1 / (|q - k_i|^2 + delta)`` over the valid neighbours.

    ``queries [B, D]``, ``neighbour_keys [B, ..., k, D]``, ``neighbour_values`` and ``valid [B, ..., k]``
    -> ``[B, ...]``; 0 where no neighbour is valid. Differentiable in the queries, keys and values.
    """
    queries = jnp.asarray(queries)
    expand = (slice(None),) + (None,) * (neighbour_keys.ndim - 2) + (slice(None),)
    diff = neighbour_keys - queries[expand]
    weights = jnp.where(valid, 1.0 / ((diff * diff).sum(-1) + delta), 0.0)
    total = weights.sum(-1)
    return (weights * neighbour_values).sum(-1) / jnp.where(total > 0, total, 1.0)


def touch(dnd: DND, neighbours: Neighbours) -> DND:
    """Mark the valid neighbour rows as used now (their ``last_used`` becomes the new ``clock``)."""
    clock = dnd.clock + 1
    action = jnp.broadcast_to(jnp.arange(dnd.num_actions)[None, :, None], neighbours.indices.shape)
    # Rows not used are sent out of bounds and dropped.
    row = jnp.where(neighbours.valid, neighbours.indices, dnd.capacity)
    last_used = dnd.last_used.at[action, row].set(clock, mode="drop")
    return dnd.replace(last_used=last_used, clock=clock)


def lookup(
    dnd: DND, queries: jax.Array, k: int, delta: float = 1e-3, table_gradient: bool = True
) -> tuple[jax.Array, DND, Neighbours]:
    """Q-estimates of every action for a batch of queries: ``queries [B, D]`` -> ``[B, A]``.

    Returns ``(estimates, dnd with the used rows' ages refreshed, neighbours)``. Gradients reach the
    queries and, unless ``table_gradient=False``, the keys and values of the neighbours used (as in the
    paper). A ``jax.grad`` through the tables yields dense ``[A, C, ...]`` gradients; to train large
    tables, take gradients with respect to the gathered neighbours (:func:`gather`,
    :func:`kernel_estimate`) and apply them with :func:`update_rows`, as ``algos/nec.py`` does.
    """
    neighbours = search(dnd, queries, k)
    keys, values = gather(dnd, neighbours)
    if not table_gradient:
        keys, values = jax.lax.stop_gradient((keys, values))
    estimates = kernel_estimate(queries, keys, values, neighbours.valid, delta)
    return estimates, touch(dnd, neighbours), neighbours


def write(
    dnd: DND,
    actions: jax.Array,
    keys: jax.Array,
    values: jax.Array,
    alpha: float = 0.1,
    rule: Literal["lerp", "max"] = "lerp",
    mask: jax.Array | None = None,
) -> DND:
    """Write ``values [B]`` under ``keys [B, D]`` in the tables of ``actions [B]``, one after another.

    A stored key (same bits) is updated, ``v <- v + alpha (value - v)`` (``rule="lerp"``) or
    ``v <- max(v, value)`` (``rule="max"``); a new key replaces the least recently used row of its action
    (an unwritten row while there is one). Every write makes its row the most recently used. Writes where
    ``mask`` is False are skipped. No gradient flows through a write.
    """
    if rule not in ("lerp", "max"):
        raise ValueError(f"rule must be 'lerp' or 'max', got {rule!r}")
    keys = _positive_zeros(jax.lax.stop_gradient(jnp.asarray(keys, jnp.float32)))
    values = jax.lax.stop_gradient(jnp.asarray(values, jnp.float32))
    actions = jnp.asarray(actions, jnp.int32)
    if keys.ndim != 2 or keys.shape[-1] != dnd.key_size:
        raise ValueError(f"keys must be [batch, key_size={dnd.key_size}], got shape {keys.shape}")
    batch = keys.shape[0]
    if actions.shape != (batch,) or values.shape != (batch,):
        raise ValueError(
            f"actions and values must be [batch={batch}], got shapes {actions.shape} and {values.shape}"
        )
    mask = jnp.ones((batch,), bool) if mask is None else jnp.broadcast_to(jnp.asarray(mask, bool), (batch,))
    hashes = hash_keys(keys)
    norms = (keys * keys).sum(-1)

    def write_one(state: DND, item: tuple) -> tuple[DND, None]:
        action, key, value, key_hash, norm, enabled = item
        clock = state.clock + 1
        same = state.valid[action] & (state.key_hashes[action] == key_hash).all(-1)
        found = same.any()
        # argmin takes the first minimum: unwritten rows (-1) in index order, then the oldest use.
        row = jnp.where(found, jnp.argmax(same), jnp.argmin(state.last_used[action])).astype(jnp.int32)
        old = state.values[action, row]
        updated = old + alpha * (value - old) if rule == "lerp" else jnp.maximum(old, value)
        new_value = jnp.where(found, updated, value)
        # A skipped write goes out of bounds and is dropped; the clock still advances (harmless).
        row = jnp.where(enabled, row, state.capacity)
        at = (action, row)
        state = state.replace(
            keys=state.keys.at[at].set(key, mode="drop"),
            values=state.values.at[at].set(new_value, mode="drop"),
            valid=state.valid.at[at].set(True, mode="drop"),
            key_norms=state.key_norms.at[at].set(norm, mode="drop"),
            key_hashes=state.key_hashes.at[at].set(key_hash, mode="drop"),
            last_used=state.last_used.at[at].set(clock, mode="drop"),
            clock=clock,
        )
        return state, None

    dnd, _ = jax.lax.scan(write_one, dnd, (actions, keys, values, hashes, norms, mask))
    return dnd


def update_rows(
    dnd: DND,
    actions: jax.Array,
    rows: jax.Array,
    key_updates: jax.Array,
    value_updates: jax.Array,
    valid: jax.Array,
) -> DND:
    """Add ``key_updates [..., D]`` and ``value_updates [...]`` to the rows ``(actions, rows)`` (any
    matching batch shape ``[...]``; repeated rows sum), where ``valid``; refresh those rows' norms and
    hashes. E.g. ``-learning_rate *`` the gradients with respect to :func:`gather`'s outputs."""
    actions = jnp.broadcast_to(jnp.asarray(actions, jnp.int32), rows.shape)
    rows = jnp.where(valid, rows, dnd.capacity)  # out of bounds: dropped
    keys = dnd.keys.at[actions, rows].add(key_updates, mode="drop")
    values = dnd.values.at[actions, rows].add(value_updates, mode="drop")
    new_keys = keys.at[actions, rows].get(mode="fill", fill_value=0.0)
    key_norms = dnd.key_norms.at[actions, rows].set((new_keys * new_keys).sum(-1), mode="drop")
    key_hashes = dnd.key_hashes.at[actions, rows].set(hash_keys(new_keys), mode="drop")
    return dnd.replace(keys=keys, values=values, key_norms=key_norms, key_hashes=key_hashes)


__all__ = [
    "DND",
    "Neighbours",
    "count",
    "gather",
    "hash_keys",
    "init",
    "kernel_estimate",
    "lookup",
    "search",
    "touch",
    "update_rows",
    "write",
]

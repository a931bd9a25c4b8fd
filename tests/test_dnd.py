"""The differentiable neural dictionary against independent references: a numpy brute-force kNN, a
plain-Python LRU dictionary under random traffic, and finite differences."""

import warnings

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmeta.memory import dnd as dnd_lib


def filled(rng, num_actions, capacity, key_size, counts):
    """A DND whose action ``a`` holds ``counts[a]`` random entries (written in one batch)."""
    table = dnd_lib.init(num_actions, capacity, key_size)
    actions = np.concatenate([np.full(n, a, np.int32) for a, n in enumerate(counts)])
    keys = rng.normal(size=(len(actions), key_size)).astype(np.float32)
    values = rng.normal(size=len(actions)).astype(np.float32)
    return jax.jit(dnd_lib.write)(table, actions, keys, values), actions, keys, values


def brute_force(stored_keys, stored_values, query, k, delta):
    """Indices of the k nearest (float64, by |q - k|^2) and the kernel estimate over them."""
    d = ((stored_keys.astype(np.float64) - query.astype(np.float64)) ** 2).sum(-1)
    order = np.argsort(d, kind="stable")[:k]
    w = 1.0 / (d[order] + delta)
    return order, (w * stored_values[order]).sum() / w.sum() if len(order) else 0.0


@pytest.mark.parametrize(
    "capacity, counts, k, two_stage",
    [
        (40, [40, 25, 3], 5, False),  # one top-k; one table not full, one with fewer than k entries
        (300_000, [300_000, 170_000, 0], 5, True),  # two stages: blocks of 32, chunks of 225 blocks
        (6400, [6400, 6400, 6399], 8, False),
    ],
)
def test_lookup_matches_numpy_brute_force(capacity, counts, k, two_stage):
    rng = np.random.default_rng(capacity)
    key_size, delta, num_queries = 16, 1e-3, 7
    assert bool(dnd_lib._block_size(capacity, k, num_queries)) == two_stage
    keys = rng.normal(size=(3, capacity, key_size)).astype(np.float32)
    values = rng.normal(size=(3, capacity)).astype(np.float32)
    table = dnd_lib.from_arrays(keys, values, valid=np.arange(capacity)[None] < np.array(counts)[:, None])
    keys = np.concatenate([keys[a, :n] for a, n in enumerate(counts)])
    values = np.concatenate([values[a, :n] for a, n in enumerate(counts)])
    actions = np.concatenate([np.full(n, a) for a, n in enumerate(counts)])
    queries = rng.normal(size=(num_queries, key_size)).astype(np.float32)
    estimates, _, neighbours = jax.jit(dnd_lib.lookup, static_argnums=2)(table, queries, k, delta)
    for a in range(3):
        stored_keys, stored_values = keys[actions == a], values[actions == a]  # rows 0.. in write order
        for b, query in enumerate(queries):
            order, estimate = brute_force(stored_keys, stored_values, query, k, delta)
            found = np.asarray(neighbours.valid[b, a])
            assert found.sum() == min(k, counts[a])
            np.testing.assert_array_equal(np.asarray(neighbours.indices[b, a])[found], order)
            want_d = ((stored_keys[order] - query) ** 2).sum(-1)
            np.testing.assert_allclose(np.asarray(neighbours.sq_distances[b, a])[found], want_d, rtol=1e-4)
            np.testing.assert_allclose(float(estimates[b, a]), estimate, rtol=1e-4, atol=1e-5)


def test_lookup_finds_a_stored_key_first_and_refreshes_ages():
    rng = np.random.default_rng(1)
    table, actions, keys, _ = filled(rng, 2, 10, 4, [10, 6])
    query = keys[actions == 1][4]
    _, after, neighbours = dnd_lib.lookup(table, query[None], k=3)
    assert int(neighbours.indices[0, 1, 0]) == 4 and float(neighbours.sq_distances[0, 1, 0]) < 1e-5
    assert int(after.clock) == int(table.clock) + 1
    used = np.zeros((2, 10), bool)
    used[np.arange(2)[:, None], np.asarray(neighbours.indices[0])] = True
    np.testing.assert_array_equal(np.asarray(after.last_used) == int(after.clock), used)


class LRUDictionary:
    """Reference: per action a dict key -> [value, last_used, row]; a clock advanced by every single
    write and by every lookup. A new key takes the next unused row while there is one, else the row of
    the entry with the smallest (last_used, row)."""

    def __init__(self, num_actions, capacity):
        self.tables = [{} for _ in range(num_actions)]
        self.capacity = capacity
        self.clock = 0

    def write(self, action, key, value, alpha, rule):
        self.clock += 1
        table = self.tables[action]
        if key in table:
            old = table[key][0]
            table[key][0] = old + alpha * (value - old) if rule == "lerp" else max(old, value)
            table[key][1] = self.clock
            return
        if len(table) < self.capacity:
            row = len(table)
        else:
            victim = min(table, key=lambda stored: (table[stored][1], table[stored][2]))
            row = table.pop(victim)[2]
        table[key] = [value, self.clock, row]

    def lookup(self, query, k, delta):
        self.clock += 1
        estimates = []
        for table in self.tables:
            near = sorted(
                table, key=lambda stored: sum((s - q) ** 2 for s, q in zip(stored, query, strict=True))
            )[:k]
            weights = [
                1.0 / (sum((s - q) ** 2 for s, q in zip(stored, query, strict=True)) + delta)
                for stored in near
            ]
            for stored in near:
                table[stored][1] = self.clock
            total = sum(weights)
            estimates.append(
                sum(w * table[s][0] for w, s in zip(weights, near, strict=True)) / total if near else 0.0
            )
        return estimates


# Pool key i is (i + 1) * e_i: exact in float32, and from any pool key the distances to the others are
# distinct integers, so the nearest neighbours are never tied.
POOL = 6
POOL_KEYS = np.eye(POOL, dtype=np.float32) * np.arange(1, POOL + 1, dtype=np.float32)[:, None]
NUM_ACTIONS, CAPACITY, K = 2, 3, 2

write_jit = jax.jit(dnd_lib.write, static_argnames="rule")
lookup_jit = jax.jit(dnd_lib.lookup, static_argnums=(2, 3))

operation = st.one_of(
    st.tuples(
        st.just("write"),
        st.lists(
            st.tuples(
                st.integers(0, NUM_ACTIONS - 1),
                st.integers(0, POOL - 1),
                st.floats(-10, 10, width=32),
                st.booleans(),
            ),
            min_size=1,
            max_size=4,
        ),
    ),
    st.tuples(st.just("lookup"), st.integers(0, POOL - 1)),
)


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(ops=st.lists(operation, min_size=1, max_size=12), rule=st.sampled_from(["lerp", "max"]))
def test_write_update_and_eviction_match_a_python_lru_dictionary(ops, rule):
    alpha, delta = 0.25, 1e-3
    model = LRUDictionary(NUM_ACTIONS, CAPACITY)
    table = dnd_lib.init(NUM_ACTIONS, CAPACITY, POOL)
    for kind, arg in ops:
        if kind == "write":
            # Batches are padded to 4 with masked writes, so one compiled write serves all.
            padded = arg + [(0, 0, 0.0, False)] * (4 - len(arg))
            actions, pool_ids, values, enabled = (np.array(column) for column in zip(*padded, strict=True))
            table = write_jit(
                table, actions, POOL_KEYS[pool_ids], values.astype(np.float32), alpha, rule, enabled
            )
            for action, pool_id, value, on in padded:
                if on:
                    model.write(
                        action, tuple(POOL_KEYS[pool_id].tolist()), float(np.float32(value)), alpha, rule
                    )
                else:
                    model.clock += 1  # a masked write still advances the clock
        else:
            estimates, table, _ = lookup_jit(table, POOL_KEYS[arg][None], K, delta)
            want = model.lookup(POOL_KEYS[arg].tolist(), K, delta)
            np.testing.assert_allclose(np.asarray(estimates[0]), want, rtol=1e-5, atol=1e-5)
        assert int(table.clock) == model.clock
        for action, stored in enumerate(model.tables):
            valid = np.asarray(table.valid[action])
            assert valid.sum() == len(stored)
            for key, (value, last_used, row) in stored.items():
                assert valid[row]
                np.testing.assert_array_equal(np.asarray(table.keys[action, row]), key)
                np.testing.assert_allclose(float(table.values[action, row]), value, rtol=1e-6, atol=1e-6)
                assert int(table.last_used[action, row]) == last_used
                assert float(table.key_norms[action, row]) == pytest.approx(sum(x * x for x in key))


def test_a_key_repeated_in_one_batch_is_inserted_once_then_updated():
    table = dnd_lib.init(1, 4, 2)
    key = np.array([[1.0, 2.0]] * 3, np.float32)
    table = dnd_lib.write(table, np.zeros(3, np.int32), key, np.array([1.0, 3.0, 5.0], np.float32), alpha=0.5)
    assert int(dnd_lib.count(table)[0]) == 1
    # 1 -> 1 + 0.5 (3 - 1) = 2 -> 2 + 0.5 (5 - 2) = 3.5
    assert float(table.values[0, 0]) == 3.5
    minus_zero = dnd_lib.write(
        table, np.zeros(1, np.int32), np.array([[-0.0, 0.0]], np.float32), np.ones(1, np.float32)
    )
    plus_zero = dnd_lib.write(
        minus_zero,
        np.zeros(1, np.int32),
        np.zeros((1, 2), np.float32),
        np.full(1, 3.0, np.float32),
        alpha=1.0,
    )
    assert int(dnd_lib.count(plus_zero)[0]) == 2 and float(plus_zero.values[0, 1]) == 3.0


def test_kernel_estimate_gradients_match_finite_differences():
    rng = np.random.default_rng(2)
    with jax.enable_x64(True):
        query = jnp.asarray(rng.normal(size=(1, 3)))
        keys = jnp.asarray(rng.normal(size=(1, 2, 4, 3)))
        values = jnp.asarray(rng.normal(size=(1, 2, 4)))
        valid = jnp.asarray([[[True, True, True, False], [True, True, False, False]]])

        def loss(q, k, v):
            return (dnd_lib.kernel_estimate(q, k, v, valid, 1e-3) * jnp.array([0.7, -1.3])).sum()

        grads = jax.grad(loss, argnums=(0, 1, 2))(query, keys, values)
        for arg, grad in enumerate(grads):
            point = [query, keys, values]
            flat = np.asarray(point[arg]).ravel()
            numeric = np.zeros_like(flat)
            for i in range(flat.size):
                for sign in (1, -1):
                    moved = flat.copy()
                    moved[i] += sign * 1e-6
                    point[arg] = jnp.asarray(moved.reshape(np.shape(grad)))
                    numeric[i] += sign * float(loss(*point)) / 2e-6
            np.testing.assert_allclose(np.asarray(grad).ravel(), numeric, rtol=1e-5, atol=1e-7)
        # An invalid neighbour receives no gradient.
        assert float(jnp.abs(grads[1][0, 0, 3]).sum()) == 0.0 and float(grads[2][0, 1, 2]) == 0.0


def test_lookup_gradient_reaches_the_used_rows_unless_switched_off():
    rng = np.random.default_rng(3)
    table, *_ = filled(rng, 2, 30, 4, [30, 20])
    query = jnp.asarray(rng.normal(size=(2, 4)), jnp.float32)

    def loss(tables, q, table_gradient):
        keys, values = tables
        estimates, _, _ = dnd_lib.lookup(table.replace(keys=keys, values=values), q, 5, 1e-3, table_gradient)
        return estimates.sum()

    _, neighbours = None, dnd_lib.search(table, query, 5)
    used = np.zeros((2, 30), bool)
    for b in range(2):
        used[np.arange(2)[:, None], np.asarray(neighbours.indices[b])] = True
    (key_grad, value_grad), query_grad = jax.grad(loss, argnums=(0, 1))(
        (table.keys, table.values), query, True
    )
    assert np.all((np.abs(np.asarray(value_grad)) > 0) == used)
    assert np.all(np.abs(np.asarray(key_grad)).sum(-1)[~used] == 0)
    assert float(jnp.abs(query_grad).sum()) > 0
    (key_grad, value_grad), _ = jax.grad(loss, argnums=(0, 1))((table.keys, table.values), query, False)
    assert float(jnp.abs(key_grad).sum() + jnp.abs(value_grad).sum()) == 0.0


def test_update_rows_adds_steps_and_refreshes_norms_and_hashes():
    rng = np.random.default_rng(4)
    table, *_ = filled(rng, 2, 8, 3, [8, 5])
    rows = np.array([[1, 1, 7], [2, 3, 0]], np.int32)
    acts = np.array([[0, 0, 0], [1, 1, 1]], np.int32)
    key_steps = rng.normal(size=(2, 3, 3)).astype(np.float32)
    value_steps = rng.normal(size=(2, 3)).astype(np.float32)
    valid = np.array([[True, True, True], [True, False, True]])
    new = dnd_lib.update_rows(table, acts, rows, key_steps, value_steps, valid)
    want_keys, want_values = np.asarray(table.keys).copy(), np.asarray(table.values).copy()
    for a, r, ks, vs, ok in zip(
        acts.ravel(), rows.ravel(), key_steps.reshape(-1, 3), value_steps.ravel(), valid.ravel(), strict=True
    ):
        if ok:
            want_keys[a, r] += ks
            want_values[a, r] += vs
    np.testing.assert_allclose(np.asarray(new.keys), want_keys, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(new.values), want_values, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(new.key_norms), (want_keys**2).sum(-1), rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(new.key_hashes), np.asarray(dnd_lib.hash_keys(want_keys)))
    # The moved key is found again by an exact write.
    again = dnd_lib.write(
        new, np.zeros(1, np.int32), want_keys[0, 1][None], np.ones(1, np.float32), alpha=1.0
    )
    assert int(dnd_lib.count(again)[0]) == 8 and float(again.values[0, 1]) == 1.0


def test_writes_and_lookups_update_the_tables_in_place_under_donation():
    table = dnd_lib.init(2, 4096, 32)
    write = jax.jit(dnd_lib.write, donate_argnums=0)
    lookup = jax.jit(dnd_lib.lookup, static_argnums=2, donate_argnums=0)
    keys = np.random.default_rng(5).normal(size=(4, 32)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "donated buffers were not usable" would fail here
        old_keys = table.keys
        table = write(table, np.array([0, 1, 0, 1], np.int32), keys, np.ones(4, np.float32))
        assert old_keys.is_deleted()
        old_keys = table.keys
        _, table, _ = lookup(table, keys, 3)
        assert old_keys.is_deleted()


def test_vmapped_over_seeds_equals_each_seed_alone():
    rng = np.random.default_rng(6)
    keys = rng.normal(size=(3, 5, 4)).astype(np.float32)
    values = rng.normal(size=(3, 5)).astype(np.float32)
    actions = rng.integers(0, 2, size=(3, 5)).astype(np.int32)

    def step(k, v, a):
        table = dnd_lib.write(dnd_lib.init(2, 4, 4), a, k, v)
        estimates, table, _ = dnd_lib.lookup(table, k, 2)
        return estimates, table.values

    together = jax.jit(jax.vmap(step))(keys, values, actions)
    alone_jit = jax.jit(step)
    for seed in range(3):
        alone = alone_jit(keys[seed], values[seed], actions[seed])
        for got, want in zip(together, alone, strict=True):
            np.testing.assert_allclose(np.asarray(got[seed]), np.asarray(want), rtol=1e-6)


def test_bad_arguments_say_what_is_wrong():
    table = dnd_lib.init(2, 10, 4)
    with pytest.raises(ValueError, match="capacity >= k"):
        dnd_lib.search(table, jnp.zeros((1, 4)), 11)
    with pytest.raises(ValueError, match="key_size=4"):
        dnd_lib.lookup(table, jnp.zeros((1, 5)), 3)
    with pytest.raises(ValueError, match="key_size=4"):
        dnd_lib.write(table, jnp.zeros(1, jnp.int32), jnp.zeros((1, 3)), jnp.zeros(1))
    with pytest.raises(ValueError, match="rule"):
        dnd_lib.write(table, jnp.zeros(1, jnp.int32), jnp.zeros((1, 4)), jnp.zeros(1), rule="min")
    with pytest.raises(ValueError, match="capacity must be an integer"):
        dnd_lib.init(2, 0, 4)

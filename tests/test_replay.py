"""Replay buffer against a plain-Python model: one deque(maxlen=capacity) of steps per env."""

import collections
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmeta.memory import replay

CAPACITY, NUM_ENVS = 5, 3
# "t" (global time step) and "env" identify a row, so sampled rows can be checked against the model.
STEP = {"t": jnp.int32(0), "env": jnp.int32(0), "obs": jax.ShapeDtypeStruct((2,), jnp.float32)}

add_jit = jax.jit(replay.add)
add_batch_jit = jax.jit(replay.add_batch)
sample_sequences_jit = jax.jit(replay.sample_sequences, static_argnums=(2, 3))


def make_steps(rng, t0, num_steps, num_envs=NUM_ENVS):
    """``num_steps`` time rows starting at global time ``t0``, leaves ``[T, num_envs, ...]``."""
    t = np.arange(t0, t0 + num_steps, dtype=np.int32)
    return {
        "t": np.repeat(t[:, None], num_envs, axis=1),
        "env": np.tile(np.arange(num_envs, dtype=np.int32), (num_steps, 1)),
        "obs": rng.normal(size=(num_steps, num_envs, 2)).astype(np.float32),
    }


def row(steps, i):
    return {k: v[i] for k, v in steps.items()}


class Model:
    """Reference: each env keeps its last ``capacity`` steps, oldest first."""

    def __init__(self, capacity, num_envs):
        self.capacity = capacity
        self.envs = [collections.deque(maxlen=capacity) for _ in range(num_envs)]

    def add(self, step):
        for e, env in enumerate(self.envs):
            env.append({k: np.asarray(v[e]) for k, v in step.items()})

    def windows(self, env, length):
        rows = list(self.envs[env])
        return [rows[i : i + length] for i in range(len(rows) - length + 1)]


def physical_layout(model):
    """Where the ring puts each retained step: global step t lives in physical row t % capacity."""
    out = {
        "t": np.zeros((CAPACITY, NUM_ENVS), np.int32),
        "obs": np.zeros((CAPACITY, NUM_ENVS, 2), np.float32),
    }
    for e, env in enumerate(model.envs):
        for step in env:
            out["t"][int(step["t"]) % CAPACITY, e] = step["t"]
            out["obs"][int(step["t"]) % CAPACITY, e] = step["obs"]
    return out


def model_table(model, num_added):
    """Dense view of the model: ``retained [num_added, num_envs]`` and ``obs [num_added, num_envs, 2]``."""
    retained = np.zeros((num_added, NUM_ENVS), bool)
    obs = np.zeros((num_added, NUM_ENVS, 2), np.float32)
    for e, env in enumerate(model.envs):
        for step in env:
            retained[step["t"], e], obs[step["t"], e] = True, step["obs"]
    return retained, obs


def assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def filled(num_added, seed=0, capacity=CAPACITY, num_envs=NUM_ENVS):
    """A buffer and its model after ``num_added`` single adds."""
    rng = np.random.default_rng(seed)
    buffer = replay.init(capacity, num_envs, STEP)
    model = Model(capacity, num_envs)
    if num_added:
        steps = make_steps(rng, 0, num_added, num_envs)
        buffer = add_batch_jit(buffer, steps)
        for i in range(num_added):
            model.add(row(steps, i))
    return buffer, model


def test_init_layout():
    buffer = replay.init(4, 3, {"obs": jnp.zeros((7, 7, 3), jnp.uint8), "r": 0.0, "a": jnp.int32(0)})
    assert buffer.data["obs"].shape == (4, 3, 7, 7, 3) and buffer.data["obs"].dtype == jnp.uint8
    assert buffer.data["r"].shape == (4, 3) and buffer.data["r"].dtype == jnp.float32
    assert buffer.data["a"].dtype == jnp.int32
    assert (buffer.capacity, buffer.num_envs) == (4, 3)
    assert int(buffer.write_pos) == 0 and int(replay.size(buffer)) == 0
    assert not bool(replay.can_sample(buffer))


def test_ring_overwrite_order():
    rng = np.random.default_rng(0)
    buffer = replay.init(CAPACITY, NUM_ENVS, STEP)
    model = Model(CAPACITY, NUM_ENVS)
    steps = make_steps(rng, 0, 2 * CAPACITY + 3)
    for i in range(2 * CAPACITY + 3):
        buffer = add_jit(buffer, row(steps, i))
        model.add(row(steps, i))
        expected = physical_layout(model)
        np.testing.assert_array_equal(np.asarray(buffer.data["t"]), expected["t"])
        np.testing.assert_array_equal(np.asarray(buffer.data["obs"]), expected["obs"])
        assert int(replay.size(buffer)) == len(model.envs[0]) == min(i + 1, CAPACITY)
        assert int(buffer.write_pos) == (i + 1) % CAPACITY
        # The documented time order: rows (write_pos - count + i) % capacity, oldest to newest.
        order = (int(buffer.write_pos) - int(buffer.count) + np.arange(int(buffer.count))) % CAPACITY
        for e, env in enumerate(model.envs):
            np.testing.assert_array_equal(np.asarray(buffer.data["t"])[order, e], [s["t"] for s in env])
            np.testing.assert_array_equal(np.asarray(buffer.data["env"])[order, e], e)


@pytest.mark.parametrize(("prefill", "chunk"), [(0, 3), (2, 5), (3, 12), (4, 1), (1, 7)])
def test_add_batch_equals_repeated_add(prefill, chunk):
    rng = np.random.default_rng(prefill * 100 + chunk)
    start, _ = filled(prefill, seed=1)
    steps = make_steps(rng, prefill, chunk)
    batched = add_batch_jit(start, steps)
    single = start
    for i in range(chunk):
        single = add_jit(single, row(steps, i))
    assert_trees_equal(batched, single)


def test_sample_uniform_over_written_rows():
    sample = jax.jit(replay.sample, static_argnums=2)
    num = 24_000
    for num_added in (3, 2 * CAPACITY + 2):  # partly filled; full and wrapped (write_pos 2)
        buffer, model = filled(num_added)
        out, valid = sample(buffer, jax.random.key(num_added), num)
        assert out["t"].shape == (num,) and out["obs"].shape == (num, 2) and np.asarray(valid).all()
        t, env, obs = np.asarray(out["t"]), np.asarray(out["env"]), np.asarray(out["obs"])
        retained, table = model_table(model, num_added)
        assert retained[t, env].all()  # only rows the model still holds
        np.testing.assert_array_equal(obs, table[t, env])
        counts = np.zeros_like(retained, dtype=np.int64)
        np.add.at(counts, (t, env), 1)
        expected = num / retained.sum()
        # Binomial sd is ~sqrt(expected) (< 45 here); 5 sd is a generous, deterministic bound.
        assert (np.abs(counts[retained] - expected) < 5 * np.sqrt(expected)).all(), counts


def test_sample_empty_is_invalid():
    buffer = replay.init(CAPACITY, NUM_ENVS, STEP)
    out, valid = replay.sample(buffer, jax.random.key(0), 8)
    assert not np.asarray(valid).any()
    np.testing.assert_array_equal(np.asarray(out["obs"]), np.zeros((8, 2)))


@pytest.mark.parametrize("length", [1, 2, 4, CAPACITY])
def test_sample_sequences_match_model_windows(length):
    sample = jax.jit(jax.vmap(replay.sample_sequences, in_axes=(None, 0, None, None)), static_argnums=(2, 3))
    keys = jax.random.split(jax.random.key(length), 20)
    for num_added in range(1, 3 * CAPACITY + 1):  # every fill level and every write position
        buffer, model = filled(num_added, seed=num_added)
        seqs, valid = sample(buffer, keys, 32, length)
        seqs = jax.tree.map(lambda x: np.asarray(x).reshape(-1, *x.shape[2:]), seqs)
        valid = np.asarray(valid).ravel()
        size = min(num_added, CAPACITY)
        if size < length:
            assert not valid.any()
            continue
        assert valid.all()
        env, t = seqs["env"], seqs["t"]
        np.testing.assert_array_equal(env, np.broadcast_to(env[:, :1], env.shape))  # one env
        # Consecutive in time and inside the retained data, hence never across the seam.
        np.testing.assert_array_equal(t, t[:, :1] + np.arange(length))
        retained, table = model_table(model, num_added)
        assert retained[t, env].all()
        np.testing.assert_array_equal(seqs["obs"], table[t, env])
        # Every window of the model (env, first step) turns up among the 640 draws.
        windows = {(e, int(w[0]["t"])) for e in range(NUM_ENVS) for w in model.windows(e, length)}
        assert set(zip(env[:, 0].tolist(), t[:, 0].tolist(), strict=True)) == windows


def test_sample_sequences_errors():
    buffer, _ = filled(3)
    with pytest.raises(ValueError, match="length must be <= capacity"):
        replay.sample_sequences(buffer, jax.random.key(0), 4, CAPACITY + 1)
    with pytest.raises(ValueError, match="batch_size"):
        replay.sample_sequences(buffer, jax.random.key(0), 0, 2)


def n_step_reference(rewards, terminated, truncated, gamma):
    """Plain loop: accumulate until (and including) the first step that ends the episode."""
    returns, discount, last = 0.0, 0.0, 0
    for k in range(len(rewards)):
        returns += gamma**k * rewards[k]
        last = k
        if terminated[k] or truncated[k]:
            break
    discount = 0.0 if terminated[last] else gamma ** (last + 1)
    return returns, discount, last


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_n_step_targets_match_loop(n):
    rng = np.random.default_rng(n)
    batch, gamma = 300, 0.9
    rewards = rng.normal(size=(batch, n)).astype(np.float32)
    terminated = rng.random((batch, n)) < 0.2
    truncated = rng.random((batch, n)) < 0.2
    # Hand-placed cases: each flag alone and both together at the first and last position.
    for i, (k, term, trunc) in enumerate(
        [(0, True, False), (0, False, True), (0, True, True), (n - 1, True, False), (n - 1, False, True)]
    ):
        terminated[i], truncated[i] = False, False
        terminated[i, k], truncated[i, k] = term, trunc
    terminated[5:10], truncated[5:10] = False, False  # no end inside the sequence
    returns, discount, last = jax.jit(replay.n_step_targets)(rewards, terminated, truncated, gamma)
    for b in range(batch):
        ref = n_step_reference(rewards[b], terminated[b], truncated[b], gamma)
        np.testing.assert_allclose(float(returns[b]), ref[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(float(discount[b]), ref[1], rtol=1e-6)
        assert int(last[b]) == ref[2]
    if n == 1:  # the one-step DQN target
        np.testing.assert_allclose(np.asarray(returns), rewards[:, 0])
        np.testing.assert_allclose(np.asarray(discount), gamma * (1 - terminated[:, 0]), rtol=1e-6)
        np.testing.assert_array_equal(np.asarray(last), 0)


def test_n_step_targets_batch_shape_and_errors():
    rewards = jnp.ones((2, 3, 4))
    flags = jnp.zeros((2, 3, 4), bool)
    returns, discount, last = replay.n_step_targets(rewards, flags, flags, 0.5)
    assert returns.shape == discount.shape == last.shape == (2, 3)
    np.testing.assert_allclose(np.asarray(returns), 1 + 0.5 + 0.25 + 0.125)
    np.testing.assert_allclose(np.asarray(discount), 0.5**4)
    with pytest.raises(ValueError, match="same shape"):
        replay.n_step_targets(rewards, flags[..., :3], flags, 0.5)


def test_select_step():
    seq = {"x": jnp.arange(12).reshape(3, 4), "y": jnp.arange(24).reshape(3, 4, 2)}
    out = replay.select_step(seq, jnp.array([0, 3, 1]))
    np.testing.assert_array_equal(np.asarray(out["x"]), [0, 7, 9])
    np.testing.assert_array_equal(np.asarray(out["y"]), [[0, 1], [14, 15], [18, 19]])


def test_jit_vmap_over_seeds():
    seeds = 3
    rng = np.random.default_rng(4)
    buffers = jax.vmap(lambda _: replay.init(CAPACITY, NUM_ENVS, STEP))(jnp.arange(seeds))
    assert buffers.data["obs"].shape == (seeds, CAPACITY, NUM_ENVS, 2) and buffers.capacity == CAPACITY
    singles = [replay.init(CAPACITY, NUM_ENVS, STEP) for _ in range(seeds)]
    add_v = jax.jit(jax.vmap(replay.add))
    add_batch_v = jax.jit(jax.vmap(replay.add_batch))
    per_seed = [make_steps(rng, 0, 2 * CAPACITY, NUM_ENVS) for _ in range(seeds)]
    stacked = jax.tree.map(lambda *x: np.stack(x), *per_seed)
    for i in range(CAPACITY + 2):
        buffers = add_v(buffers, jax.tree.map(lambda x, i=i: x[:, i], stacked))
        singles = [add_jit(b, row(s, i)) for b, s in zip(singles, per_seed, strict=True)]
    buffers = add_batch_v(buffers, jax.tree.map(lambda x: x[:, CAPACITY + 2 :], stacked))
    for i in range(CAPACITY + 2, 2 * CAPACITY):
        singles = [add_jit(b, row(s, i)) for b, s in zip(singles, per_seed, strict=True)]
    keys = jax.random.split(jax.random.key(9), seeds)
    sample_v = jax.jit(jax.vmap(functools.partial(replay.sample_sequences, batch_size=6, length=3)))
    seqs, valid = sample_v(buffers, keys)
    assert np.asarray(valid).all()
    for s in range(seeds):
        assert_trees_equal(jax.tree.map(lambda x, s=s: x[s], buffers), singles[s])
        ref, _ = sample_sequences_jit(singles[s], keys[s], 6, 3)
        assert_trees_equal(jax.tree.map(lambda x, s=s: x[s], seqs), ref)  # deterministic for a key
    np.testing.assert_array_equal(np.asarray(jax.vmap(replay.size)(buffers)), [CAPACITY] * seeds)


def test_donation_updates_in_place():
    rng = np.random.default_rng(5)
    add_donated = jax.jit(replay.add, donate_argnums=0)
    add_v_donated = jax.jit(jax.vmap(replay.add), donate_argnums=0)
    buffer = replay.init(CAPACITY, NUM_ENVS, STEP)
    buffers = jax.vmap(lambda _: replay.init(CAPACITY, NUM_ENVS, STEP))(jnp.arange(2))
    steps = make_steps(rng, 0, CAPACITY + 2)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*[Dd]onat.*")
        for i in range(CAPACITY + 2):
            old = buffer
            buffer = add_donated(buffer, row(steps, i))
            assert all(leaf.is_deleted() for leaf in jax.tree.leaves(old))
            old = buffers
            buffers = add_v_donated(buffers, jax.tree.map(lambda x, i=i: np.stack([x[i]] * 2), steps))
            assert all(leaf.is_deleted() for leaf in jax.tree.leaves(old))
    np.testing.assert_array_equal(np.asarray(buffer.data["t"][:, 0]), [5, 6, 2, 3, 4])
    np.testing.assert_array_equal(np.asarray(buffers.data["t"][1, :, 2]), [5, 6, 2, 3, 4])


@pytest.mark.parametrize(
    ("args", "name"),
    [((0, 2), "capacity"), ((2, -1), "num_envs"), ((1.5, 2), "capacity"), ((2, True), "num_envs")],
)
def test_init_errors(args, name):
    with pytest.raises(ValueError, match=name) as info:
        replay.init(*args, STEP)
    assert ">= 1" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match="at least one leaf"):
        replay.init(2, 2, {})


def test_add_errors():
    buffer = replay.init(CAPACITY, NUM_ENVS, STEP)
    good = row(make_steps(np.random.default_rng(0), 0, 1), 0)
    with pytest.raises(ValueError, match=r"\(num_envs, \.\.\.\)"):
        replay.add(buffer, {**good, "obs": np.zeros((NUM_ENVS + 1, 2), np.float32)})
    with pytest.raises(ValueError, match="structure"):
        replay.add(buffer, {"t": good["t"], "obs": good["obs"]})
    with pytest.raises(ValueError, match=r"\(T, num_envs, \.\.\.\)"):
        replay.add_batch(buffer, {**make_steps(np.random.default_rng(0), 0, 2), "t": np.zeros((3, NUM_ENVS))})


def test_time_ordered_gives_the_last_capacity_steps_oldest_first():
    """What NEC's queue of pending steps reads: against the deque model, before and after wrapping."""
    rng = np.random.default_rng(7)
    buffer = replay.init(CAPACITY, NUM_ENVS, STEP)
    model = Model(CAPACITY, NUM_ENVS)
    for t in range(2 * CAPACITY + 2):
        step = row(make_steps(rng, t, 1), 0)
        buffer = add_jit(buffer, step)
        model.add(step)
        ordered = replay.time_ordered(buffer)
        filled = len(model.envs[0])
        for e, env in enumerate(model.envs):
            np.testing.assert_array_equal(
                np.asarray(ordered["t"][CAPACITY - filled :, e]), [s["t"] for s in env]
            )
            np.testing.assert_array_equal(
                np.asarray(ordered["obs"][CAPACITY - filled :, e]), [s["obs"] for s in env]
            )
        np.testing.assert_array_equal(
            np.asarray(ordered["t"][: CAPACITY - filled]), 0
        )  # unwritten rows first


def test_oldest_is_the_row_the_next_add_overwrites():
    rng = np.random.default_rng(8)
    buffer = replay.init(CAPACITY, NUM_ENVS, STEP)
    for t in range(CAPACITY + 3):
        buffer = add_jit(buffer, row(make_steps(rng, t, 1), 0))
    np.testing.assert_array_equal(np.asarray(replay.oldest(buffer)["t"]), 3)  # steps 3..7 are kept
    part = replay.time_ordered(buffer, {"t": buffer.data["t"]})
    assert set(part) == {"t"} and np.asarray(part["t"][:, 0]).tolist() == [3, 4, 5, 6, 7]

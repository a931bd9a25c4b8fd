"""Failure banks against a plain-Python model: one deque(maxlen=N) per task."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxmeta.memory import failure_bank as fb

NUM_TASKS, CAPACITY, LENGTH, BATCH = 3, 3, 4, 7
STEP = {"obs": jnp.zeros((2,), jnp.float32), "action": jnp.int32(0)}

# Compiled once for the fixed shapes above and reused by every hypothesis example.
add_jit = jax.jit(fb.add)
read_jit = jax.jit(fb.read)


def make_batch(rng, task_ids, fail, mask):
    """Random step values; masked positions get garbage too, which the bank must not keep."""
    batch = len(task_ids)
    steps = {
        "obs": rng.normal(size=(batch, LENGTH, 2)).astype(np.float32),
        "action": rng.integers(1, 100, size=(batch, LENGTH)).astype(np.int32),
    }
    return np.asarray(task_ids, np.int32), steps, np.asarray(mask, bool), np.asarray(fail, bool)


class Model:
    """Reference: each task keeps its last N failed episodes in a deque, masked steps zeroed."""

    def __init__(self, num_tasks, capacity):
        self.banks = [collections.deque(maxlen=capacity) for _ in range(num_tasks)]
        self.capacity = capacity

    def add(self, task_ids, steps, mask, fail):
        for b, task in enumerate(task_ids):
            if fail[b] and 0 <= task < len(self.banks):
                obs = np.where(mask[b][:, None], steps["obs"][b], 0.0)
                action = np.where(mask[b], steps["action"][b], 0)
                self.banks[task].append((obs, action, mask[b].copy()))

    def read(self, task_ids):
        obs = np.zeros((len(task_ids), self.capacity, LENGTH, 2), np.float32)
        action = np.zeros((len(task_ids), self.capacity, LENGTH), np.int32)
        step_mask = np.zeros((len(task_ids), self.capacity, LENGTH), bool)
        slot_mask = np.zeros((len(task_ids), self.capacity), bool)
        for b, task in enumerate(task_ids):
            for n, (o, a, m) in enumerate(self.banks[task]):  # deque iterates oldest to newest
                obs[b, n], action[b, n], step_mask[b, n], slot_mask[b, n] = o, a, m, True
        return {"obs": obs, "action": action}, step_mask, slot_mask


def assert_read_equal(bank, model, task_ids):
    steps, step_mask, slot_mask = read_jit(bank, jnp.asarray(task_ids, jnp.int32))
    ref_steps, ref_step_mask, ref_slot_mask = model.read(task_ids)
    np.testing.assert_array_equal(np.asarray(slot_mask), ref_slot_mask)
    np.testing.assert_array_equal(np.asarray(step_mask), ref_step_mask)
    np.testing.assert_array_equal(np.asarray(steps["obs"]), ref_steps["obs"])
    np.testing.assert_array_equal(np.asarray(steps["action"]), ref_steps["action"])


def assert_banks_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


call_strategy = st.tuples(
    st.lists(st.integers(0, NUM_TASKS - 1), min_size=BATCH, max_size=BATCH),
    st.lists(st.booleans(), min_size=BATCH, max_size=BATCH),
    st.lists(st.lists(st.booleans(), min_size=LENGTH, max_size=LENGTH), min_size=BATCH, max_size=BATCH),
)


@settings(max_examples=60, deadline=None)
@given(calls=st.lists(call_strategy, min_size=1, max_size=6), seed=st.integers(0, 2**32 - 1))
def test_matches_deque_model(calls, seed):
    rng = np.random.default_rng(seed)
    bank = fb.init(NUM_TASKS, CAPACITY, LENGTH, STEP)
    model = Model(NUM_TASKS, CAPACITY)
    for task_ids, fail, mask in calls:
        task_ids, steps, mask, fail = make_batch(rng, task_ids, fail, mask)
        bank = add_jit(bank, task_ids, steps, mask, fail)
        model.add(task_ids, steps, mask, fail)
        # Repeated and reordered task ids in one read.
        assert_read_equal(bank, model, [2, 0, 1, 2, 0, 1, 1])
        np.testing.assert_array_equal(np.asarray(fb.size(bank)), [len(d) for d in model.banks])


def test_same_task_in_one_call_equals_one_at_a_time():
    rng = np.random.default_rng(0)
    # Task 1 gets 5 failures (> capacity 3) in one call, interleaved with other tasks and a success.
    task_ids, steps, mask, fail = make_batch(
        rng,
        [1, 1, 0, 1, 2, 1, 1],
        [True, True, True, False, True, True, True],
        rng.random((BATCH, LENGTH)) < 0.7,
    )
    start = fb.init(NUM_TASKS, CAPACITY, LENGTH, STEP)
    # Pre-fill task 1 with one episode so the ring pointer is not at 0.
    start = add_jit(start, task_ids, steps, mask, np.arange(BATCH) == 0)
    batched = add_jit(start, task_ids, steps, mask, fail)
    single = start
    for b in range(BATCH):
        one = jax.tree.map(lambda x, b=b: x[b : b + 1], steps)
        single = fb.add(single, task_ids[b : b + 1], one, mask[b : b + 1], fail[b : b + 1])
    assert_banks_equal(batched, single)
    np.testing.assert_array_equal(np.asarray(fb.size(batched)), [1, 3, 1])
    # Oldest to newest: the last three failures of task 1 in batch order are rows 1, 5, 6.
    out, _, _ = read_jit(batched, jnp.array([1, 1, 1, 1, 1, 1, 1], jnp.int32))
    expected = np.where(mask[[1, 5, 6]], steps["action"][[1, 5, 6]], 0)
    np.testing.assert_array_equal(np.asarray(out["action"][0]), expected)


def test_only_failures_are_written():
    rng = np.random.default_rng(1)
    task_ids, steps, mask, fail = make_batch(
        rng, [0, 1, 2, 0, 1, 2, 0], [False] * BATCH, np.ones((BATCH, LENGTH), bool)
    )
    empty = fb.init(NUM_TASKS, CAPACITY, LENGTH, STEP)
    assert_banks_equal(add_jit(empty, task_ids, steps, mask, fail), empty)

    fail = np.array([False, True, False, False, False, True, False])
    bank = add_jit(empty, task_ids, steps, mask, fail)
    np.testing.assert_array_equal(np.asarray(fb.size(bank)), [0, 1, 1])
    out, _, slot_mask = read_jit(bank, jnp.array([0, 1, 2, 0, 0, 0, 0], jnp.int32))
    np.testing.assert_array_equal(np.asarray(out["action"][1, 0]), steps["action"][1])
    np.testing.assert_array_equal(np.asarray(out["action"][2, 0]), steps["action"][5])
    assert not np.asarray(slot_mask[0]).any()


def test_out_of_range_task_ids_are_ignored():
    rng = np.random.default_rng(2)
    task_ids, steps, mask, fail = make_batch(
        rng, [-1, NUM_TASKS, 5, 0, 0, 0, 0], [True] * 3 + [False] * 4, np.ones((BATCH, LENGTH), bool)
    )
    empty = fb.init(NUM_TASKS, CAPACITY, LENGTH, STEP)
    assert_banks_equal(add_jit(empty, task_ids, steps, mask, fail), empty)


def test_init_layout():
    bank = fb.init(5, 4, 3, {"obs": jnp.zeros((7, 7, 3), jnp.uint8), "reward": 0.0, "a": jnp.int32(0)})
    assert bank.steps["obs"].shape == (5, 4, 3, 7, 7, 3) and bank.steps["obs"].dtype == jnp.uint8
    assert bank.steps["reward"].shape == (5, 4, 3) and bank.steps["reward"].dtype == jnp.float32
    assert bank.steps["a"].dtype == jnp.int32
    assert bank.step_mask.shape == (5, 4, 3) and bank.slot_mask.shape == (5, 4)
    assert bank.write_pos.shape == (5,) and bank.write_pos.dtype == jnp.int32
    assert (bank.num_tasks, bank.capacity, bank.length) == (5, 4, 3)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"capacity": 0}, "capacity"),
        ({"num_tasks": -1}, "num_tasks"),
        ({"length": 1.5}, "length"),
        ({"capacity": True}, "capacity"),
    ],
)
def test_init_errors(kwargs, name):
    args = {"num_tasks": 2, "capacity": 2, "length": 2, **kwargs}
    with pytest.raises(ValueError, match=name) as info:
        fb.init(args["num_tasks"], args["capacity"], args["length"], STEP)
    assert ">= 1" in str(info.value) and "\n" not in str(info.value)


# --- last_steps -------------------------------------------------------------------------------------

T, L, E = 16, 4, 3


def last_steps_reference(x, episode_index, done, length, max_episodes):
    out = np.zeros((max_episodes, length), x.dtype)
    mask = np.zeros((max_episodes, length), bool)
    ended = np.zeros((max_episodes,), bool)
    for e in range(max_episodes):
        ts = [t for t in range(len(x)) if episode_index[t] == e][-length:]
        for k, t in enumerate(ts):
            out[e, length - len(ts) + k] = x[t]
            mask[e, length - len(ts) + k] = True
        ended[e] = any(done[t] for t in ts)
    return out, mask, ended


def segmentation(lengths, last_ends):
    """Episode ids and done flags for a trial of T steps cut into episodes of the given lengths.

    An episode cut off by the trial end has no done step. If the lengths do not fill the trial, one more
    episode runs to the end and ends on its last step only when `last_ends`.
    """
    episode_index, done = [], []
    for e, n in enumerate(lengths):
        for k in range(min(n, T - len(episode_index))):
            episode_index.append(e)
            done.append(k == n - 1)
    rest = T - len(episode_index)
    if rest > 0:
        episode_index += [len(lengths)] * rest
        done += [False] * (rest - 1) + [last_ends]
    return np.array(episode_index, np.int32), np.array(done, bool)


segment_strategy = st.tuples(st.lists(st.integers(1, 9), min_size=1, max_size=8), st.booleans())
last_steps_jit = jax.jit(fb.last_steps, static_argnums=(3, 4))


@settings(max_examples=60, deadline=None)
@given(seg=segment_strategy, seed=st.integers(0, 2**32 - 1))
def test_last_steps_matches_reference(seg, seed):
    episode_index, done = segmentation(*seg)
    x = np.random.default_rng(seed).integers(1, 1000, size=(T,)).astype(np.int32)
    y = np.stack([x, -x], axis=-1).astype(np.float32)
    out, mask, ended = last_steps_jit({"x": x, "y": y}, episode_index, done, L, E)
    ref, ref_mask, ref_ended = last_steps_reference(x, episode_index, done, L, E)
    np.testing.assert_array_equal(np.asarray(out["x"]), ref)
    np.testing.assert_array_equal(np.asarray(out["y"]), np.stack([ref, -ref], axis=-1))
    np.testing.assert_array_equal(np.asarray(mask), ref_mask)
    np.testing.assert_array_equal(np.asarray(ended), ref_ended)


def test_last_steps_known_case():
    # Episodes: 0 -> t0..2 (short, ends), 1 -> t3 (ends), 2 -> t4..8 (long, ends), 3 -> t9 (cut off).
    episode_index = np.array([0, 0, 0, 1, 2, 2, 2, 2, 2, 3])
    done = np.array([0, 0, 1, 1, 0, 0, 0, 0, 1, 0], bool)
    out, mask, ended = fb.last_steps(jnp.arange(10) + 1, episode_index, done, 3, 5)
    np.testing.assert_array_equal(np.asarray(out), [[1, 2, 3], [0, 0, 4], [7, 8, 9], [0, 0, 10], [0, 0, 0]])
    np.testing.assert_array_equal(np.asarray(mask), np.asarray(out) > 0)
    np.testing.assert_array_equal(np.asarray(ended), [True, True, True, False, False])


def test_vmap_last_steps_then_add_and_read():
    rng = np.random.default_rng(3)
    segs = [([3, 9, 2], True), ([1, 1, 1, 1, 1, 20], False), ([20], False)]
    index, done = map(np.stack, zip(*(segmentation(*s) for s in segs), strict=True))
    obs = rng.normal(size=(3, T, 2)).astype(np.float32)
    action = rng.integers(1, 9, size=(3, T)).astype(np.int32)
    steps = {"obs": obs, "action": action}

    batched = jax.jit(jax.vmap(fb.last_steps, in_axes=(0, 0, 0, None, None)), static_argnums=(3, 4))
    eps, mask, ended = batched(steps, index, done, LENGTH, E)
    for i in range(3):
        ref, ref_mask, ref_ended = last_steps_reference(action[i], index[i], done[i], LENGTH, E)
        np.testing.assert_array_equal(np.asarray(eps["action"][i]), ref)
        np.testing.assert_array_equal(np.asarray(mask[i]), ref_mask)
        np.testing.assert_array_equal(np.asarray(ended[i]), ref_ended)

    # Feed the episodes of all trials into the bank; unfinished episodes count as failures here.
    task_of_trial = np.array([2, 0, 2], np.int32)
    flat = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), eps)
    occurred = mask.any(-1).reshape(-1)
    bank = jax.jit(fb.add)(
        fb.init(NUM_TASKS, CAPACITY, LENGTH, STEP),
        jnp.repeat(task_of_trial, E),
        flat,
        mask.reshape(-1, LENGTH),
        occurred,
    )
    model = Model(NUM_TASKS, CAPACITY)
    model.add(
        np.repeat(task_of_trial, E),
        jax.tree.map(np.asarray, flat),
        np.asarray(mask).reshape(-1, LENGTH),
        np.asarray(occurred),
    )
    np.testing.assert_array_equal(np.asarray(fb.size(bank)), [3, 0, 3])
    assert_read_equal(bank, model, [0, 1, 2, 2, 1, 0, 0])


def test_vmap_add_and_read_over_seeds():
    # Sweeps vmap a whole training state over seeds; each seed's bank must behave like an unbatched one.
    rng = np.random.default_rng(4)
    seeds = 2
    batches = [
        make_batch(
            rng, rng.integers(0, NUM_TASKS, BATCH), rng.random(BATCH) < 0.6, rng.random((BATCH, LENGTH)) < 0.8
        )
        for _ in range(seeds)
    ]
    task_ids, steps, mask, fail = (
        jax.tree.map(lambda *x: np.stack(x), *parts) for parts in zip(*batches, strict=True)
    )
    banks = jax.vmap(lambda _: fb.init(NUM_TASKS, CAPACITY, LENGTH, STEP))(jnp.arange(seeds))
    banks = jax.vmap(fb.add)(banks, task_ids, steps, mask, fail)
    banks = jax.vmap(fb.add)(banks, task_ids[:, ::-1], steps, mask, fail)
    read_ids = jnp.tile(jnp.arange(NUM_TASKS, dtype=jnp.int32), (seeds, 1))
    out, step_mask, slot_mask = jax.vmap(fb.read)(banks, read_ids)
    for s in range(seeds):
        model = Model(NUM_TASKS, CAPACITY)
        model.add(task_ids[s], jax.tree.map(lambda x, s=s: x[s], steps), mask[s], fail[s])
        model.add(task_ids[s, ::-1], jax.tree.map(lambda x, s=s: x[s], steps), mask[s], fail[s])
        ref, ref_step_mask, ref_slot_mask = model.read(list(range(NUM_TASKS)))
        np.testing.assert_array_equal(np.asarray(out["obs"][s]), ref["obs"])
        np.testing.assert_array_equal(np.asarray(out["action"][s]), ref["action"])
        np.testing.assert_array_equal(np.asarray(step_mask[s]), ref_step_mask)
        np.testing.assert_array_equal(np.asarray(slot_mask[s]), ref_slot_mask)


def test_reading_an_unknown_task_gives_an_empty_bank_not_another_tasks():
    """Out-of-range ids are ignored by ``add`` and read as empty by ``read`` (not clamped to a task)."""
    bank = fb.init(3, capacity=2, length=1, step_example={"x": jnp.zeros(())})
    bank = fb.add(
        bank, jnp.array([2, 2]), {"x": jnp.array([[5.0], [6.0]])}, jnp.ones((2, 1), bool), jnp.ones(2, bool)
    )
    steps, step_mask, slot_mask = jax.jit(fb.read)(bank, jnp.array([2, 3, -1, 7]))
    np.testing.assert_array_equal(
        np.asarray(slot_mask), [[True, True], [False, False], [False, False], [False, False]]
    )
    np.testing.assert_array_equal(np.asarray(steps["x"])[:, :, 0], [[5.0, 6.0], [0, 0], [0, 0], [0, 0]])
    assert not np.asarray(step_mask)[1:].any()

"""Tests of envs_jax's Gridworld against independent references.

Every check compares the JAX environment with something written here from
the specification (Chen & Agrawal 2020, section 3.1, and the module docs): a
plain-Python step model built on lists and dicts, numpy renderings of the
observation, a ``collections.deque`` BFS, closed forms and exhaustive
enumeration. Jitted functions are built once per shape (``functools.cache``)
and batched with ``vmap`` so the file stays fast on a small CPU.
"""

from __future__ import annotations

import collections
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs_jax import LegacyStepWrapper, make, make_task_set, optimal_returns, registered
from envs_jax.gridworld import (
    Gridworld,
    GridworldTask,
    default_palette,
    distinct_integers,
    task_set_size,
    truncation,
)

HYP = settings(max_examples=4, deadline=None, database=None, derandomize=True)

SIZE, X, C = 5, 3, 4
N_CELLS = SIZE * SIZE
ENV = Gridworld(size=SIZE, num_blocks=X, num_colors=C)
ENV_RGB = Gridworld(size=SIZE, num_blocks=X, num_colors=C, obs_mode="rgb")
PARAMS = ENV.default_params
BATCH, HORIZON = 48, 30  # one compiled shape for all random rollouts
KEY0 = jax.random.key(0)

# --------------------------------------------------------------------------
# Plain-Python reference model (written from the spec, shares no code).
# --------------------------------------------------------------------------
MOVES = {0: (-1, 0), 1: (1, 0), 2: (0, -1), 3: (0, 1)}  # up, down, left, right


def py_task(task: GridworldTask, i: int | None = None) -> dict:
    def leaf(a: jax.Array) -> np.ndarray:
        a = np.asarray(a)
        return a if i is None else a[i]

    return {
        "blocks": [int(c) for c in leaf(task.block_cells)],
        "colors": [int(c) for c in leaf(task.block_colors)],
        "goal": int(leaf(task.goal_index)),
        "start": int(leaf(task.agent_start)),
    }


def jax_task(t: dict) -> GridworldTask:
    return GridworldTask(
        block_cells=jnp.asarray(t["blocks"], jnp.int32),
        block_colors=jnp.asarray(t["colors"], jnp.int32),
        goal_index=jnp.asarray(t["goal"], jnp.int32),
        agent_start=jnp.asarray(t["start"], jnp.int32),
    )


def stack_tasks(tasks: list[dict]) -> GridworldTask:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *[jax_task(t) for t in tasks])


def py_move(size: int, cell: int, action: int) -> int:
    r, c = divmod(cell, size)
    dr, dc = MOVES[action]
    nr, nc = r + dr, c + dc
    if 0 <= nr < size and 0 <= nc < size:
        return nr * size + nc
    return cell  # a wall keeps the agent in place


def py_step(size: int, task: dict, cell: int, action: int) -> tuple[int, float, bool]:
    new = py_move(size, cell, action)
    if new in task["blocks"]:
        hit = task["blocks"].index(new)
        return new, (1.0 if hit == task["goal"] else -1.0), True
    return new, 0.0, False


def py_multihot(size: int, num_colors: int, task: dict, agent: int) -> np.ndarray:
    obs = np.zeros((size, size, 1 + num_colors), np.float32)
    obs[agent // size, agent % size, 0] = 1.0
    for cell, color in zip(task["blocks"], task["colors"], strict=True):
        obs[cell // size, cell % size, 1 + color] = 1.0
    return obs


def py_rgb(size: int, palette: np.ndarray, task: dict, agent: int) -> np.ndarray:
    img = np.full((size, size, 3), 255, np.uint8)
    for cell, color in zip(task["blocks"], task["colors"], strict=True):
        img[cell // size, cell % size] = palette[color]
    r, c = divmod(agent, size)
    img[r, c] = img[r, c] // 2 if agent in task["blocks"] else 0
    return img


def py_bfs(size: int, walls: set[int], source: int) -> dict[int, int]:
    dist = {source: 0}
    queue = collections.deque([source])
    while queue:
        cell = queue.popleft()
        for action in MOVES:
            nxt = py_move(size, cell, action)
            if nxt != cell and nxt not in walls and nxt not in dist:
                dist[nxt] = dist[cell] + 1
                queue.append(nxt)
    return dist


def py_goal_field(size: int, task: dict) -> dict[int, int]:
    goal_cell = task["blocks"][task["goal"]]
    return py_bfs(size, set(task["blocks"]) - {goal_cell}, goal_cell)


def py_solvable(size: int, task: dict) -> bool:
    blocks = task["blocks"]
    return all(cell in py_bfs(size, set(blocks) - {cell}, task["start"]) for cell in blocks)


def py_task_is_valid(task: dict, size: int, num_blocks: int, num_colors: int) -> bool:
    cells, colors = task["blocks"], task["colors"]
    return (
        len(cells) == num_blocks
        and len(set(cells)) == num_blocks
        and all(0 <= c < size * size for c in cells)
        and 0 <= task["start"] < size * size
        and task["start"] not in cells
        and len(set(colors)) == num_blocks
        and all(0 <= c < num_colors for c in colors)
        and 0 <= task["goal"] < num_blocks
    )


# --------------------------------------------------------------------------
# Jitted, batched drivers (cached per env so each shape compiles once).
# --------------------------------------------------------------------------
@functools.cache
def task_sampler(env: Gridworld) -> object:
    return jax.jit(jax.vmap(env.sample_task, in_axes=(0, None)))


def sample_tasks(env: Gridworld, seed: int, n: int = BATCH) -> GridworldTask:
    """``n`` random tasks, drawn ``BATCH`` at a time so only one shape is compiled."""
    keys = jax.random.split(jax.random.key(seed), -(-n // BATCH) * BATCH).reshape(-1, BATCH)
    parts = [task_sampler(env)(k, env.default_params) for k in keys]
    return jax.tree.map(lambda *xs: jnp.concatenate(xs)[:n], *parts)


@functools.cache
def step_env_rollout(env: Gridworld) -> object:
    """reset_to_task then ``step_env`` along a fixed action sequence (no auto-reset)."""

    def one(task: GridworldTask, actions: jax.Array, params: object) -> tuple:
        obs0, s0 = env.reset_to_task(KEY0, task, params)

        def body(s: object, a: jax.Array) -> tuple:
            obs, s2, r, term, info = env.step_env(KEY0, s, a, params)
            return s2, (obs, s2.agent_cell, s2.time, r, term, info["success"], info["discount"])

        _, out = jax.lax.scan(body, s0, actions)
        return (obs0, s0.agent_cell, s0.time), out

    return jax.jit(jax.vmap(one, in_axes=(0, 0, None)))


@functools.cache
def auto_reset_rollout(env: Gridworld) -> object:
    """reset_to_task then the public ``step`` (gymnax auto-reset) along fixed actions."""

    def one(key: jax.Array, task: GridworldTask, actions: jax.Array, params: object) -> tuple:
        _, s0 = env.reset_to_task(key, task, params)

        def body(s: object, xs: tuple) -> tuple:
            k, a = xs
            out = env.step(k, s, a, params)
            assert len(out) == 6
            obs, s2, r, term, trunc, info = out
            return s2, (obs, s2, r, term, trunc, info["final_observation"])

        _, out = jax.lax.scan(body, s0, (jax.random.split(key, actions.shape[0]), actions))
        return out

    return jax.jit(jax.vmap(one, in_axes=(0, 0, 0, None)))


EXPERT_CHUNK = 88


@functools.cache
def expert_rollout_fn(env: Gridworld, steps: int) -> object:
    def one(task: GridworldTask) -> tuple:
        _, s0 = env.reset_to_task(KEY0, task)

        def body(s: object, _: None) -> tuple:
            a = env.expert_action(s, env.default_params)
            _, s2, r, term, _ = env.step_env(KEY0, s, a, env.default_params)
            return s2, (a, s2.agent_cell, r, term)

        _, out = jax.lax.scan(body, s0, None, length=steps)
        return out

    return jax.jit(jax.vmap(one))


def expert_rollout(env: Gridworld, variants: list[dict]) -> tuple:
    """Follow ``expert_action`` for ``size*size`` steps from each task's start (fixed chunks)."""
    fn = expert_rollout_fn(env, env.num_cells)
    padded = variants + [variants[0]] * (-len(variants) % EXPERT_CHUNK)
    outs = [fn(stack_tasks(padded[i : i + EXPERT_CHUNK])) for i in range(0, len(padded), EXPERT_CHUNK)]
    return tuple(np.concatenate([np.asarray(o[j]) for o in outs])[: len(variants)] for j in range(4))


@functools.cache
def jitted_step_env(env: Gridworld) -> object:
    return jax.jit(env.step_env)


def random_actions(seed: int, batch: int = BATCH, horizon: int = HORIZON) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4, size=(batch, horizon)).astype(np.int32)


# --------------------------------------------------------------------------
# 1. Rules
# --------------------------------------------------------------------------
@HYP
@given(seed=st.integers(0, 2**31 - 1))
def test_step_env_matches_python_model(seed):
    tasks = sample_tasks(ENV, seed, BATCH)
    actions = random_actions(seed)
    (obs0, cell0, time0), out = step_env_rollout(ENV)(tasks, actions, PARAMS)
    obs, cells, times, rewards, terms, success, discount = map(np.asarray, out)
    obs0, cell0, time0 = map(np.asarray, (obs0, cell0, time0))
    n_term = 0
    for i in range(BATCH):
        task = py_task(tasks, i)
        cell = task["start"]
        assert cell0[i] == cell and time0[i] == 0
        np.testing.assert_array_equal(obs0[i], py_multihot(SIZE, C, task, cell))
        for t in range(HORIZON):
            cell, reward, term = py_step(SIZE, task, cell, int(actions[i, t]))
            n_term += term
            assert cells[i, t] == cell, (i, t)
            assert rewards[i, t] == reward, (i, t)
            assert bool(terms[i, t]) == term, (i, t)
            assert times[i, t] == t + 1
            assert bool(success[i, t]) == (reward == 1.0)
            assert discount[i, t] == (0.0 if term else 1.0)
            np.testing.assert_array_equal(obs[i, t], py_multihot(SIZE, C, task, cell))
    assert n_term > 0  # the sequence really exercised block hits


def check_auto_reset_rollout(env: Gridworld, seed: int, max_steps: int) -> None:
    params = ENV.default_params.replace(max_steps_in_episode=max_steps)
    tasks = sample_tasks(ENV, seed, BATCH)
    actions = random_actions(seed + 1)
    keys = jax.random.split(jax.random.key(seed), BATCH)
    out = auto_reset_rollout(env)(keys, tasks, actions, params)
    obs, states, rewards, terms, truncs, final_obs = jax.tree.map(np.asarray, out)
    counts = collections.Counter()
    for i in range(BATCH):
        task = py_task(tasks, i)
        cell, time = task["start"], 0
        for t in range(HORIZON):
            cell, reward, term = py_step(SIZE, task, cell, int(actions[i, t]))
            time += 1
            # The project's convention: a block reached at the time limit is terminated only.
            trunc = time >= max_steps and not term
            counts["term_at_limit"] += term and time >= max_steps
            assert rewards[i, t] == reward, (i, t)
            assert bool(terms[i, t]) == term, (i, t)
            assert bool(truncs[i, t]) == trunc, (i, t)
            # final_observation is always the frame the step produced, before any reset.
            np.testing.assert_array_equal(final_obs[i, t], py_multihot(SIZE, C, task, cell))
            returned = py_task(jax.tree.map(lambda a, i=i, t=t: a[i, t], states.task))
            if term or trunc:
                counts["term" if term else "trunc"] += 1
                # A fresh episode: a valid new task, agent at its start, clock at 0.
                assert py_task_is_valid(returned, SIZE, X, C)
                counts["new_task"] += returned != task
                task, cell, time = returned, returned["start"], 0
            else:
                assert returned == task
            assert states.agent_cell[i, t] == cell
            assert states.time[i, t] == time
            np.testing.assert_array_equal(obs[i, t], py_multihot(SIZE, C, task, cell))
    assert counts["term"] > 0 and counts["trunc"] > 0 and counts["term_at_limit"] > 0
    assert counts["new_task"] > 0.9 * (counts["term"] + counts["trunc"])


@HYP
@given(seed=st.integers(0, 2**31 - 1))
def test_step_auto_reset_and_truncation_match_python_model(seed):
    check_auto_reset_rollout(ENV, seed=seed, max_steps=6)


def test_make_max_steps_override_truncates_at_that_step():
    """Standing against the top wall never terminates; the clock hits the limit at step 5."""
    env, params = make("Gridworld-v0", max_steps_in_episode=5)
    assert params.max_steps_in_episode == 5 and env.default_params.max_steps_in_episode != 5
    task = {"blocks": [24, 30, 40], "colors": [0, 1, 2], "goal": 0, "start": 3}
    _, state = env.reset_to_task(KEY0, jax_task(task), params)
    step = jitted_step_env(env)
    for t in range(1, 6):
        obs, state, reward, term, _ = step(KEY0, state, 0, params)
        assert not bool(term) and float(reward) == 0.0
        assert int(state.agent_cell) == 3 and int(state.time) == t
        assert bool(env.is_truncated(state, params)) == (t == 5), t
        np.testing.assert_array_equal(obs, py_multihot(7, 6, task, 3))


def test_block_at_time_limit_is_terminated_not_truncated():
    """Defect 1a: ``step`` used to flag a block reached on the last step as truncated too."""
    # Agent at (1, 1); block 0 (trap) to its right, block 1 (goal) below.
    task = {"blocks": [7, 11, 20], "colors": [2, 3, 0], "goal": 1, "start": 6}
    step = jax.jit(ENV.step)
    flags = jax.jit(lambda s, term, p: truncation(ENV, s, term, p))
    # (time limit, actions, expected (reward, terminated, truncated) of the last step)
    cases = [
        (2, [0, 3], (0.0, False, True)),  # up, right: plain moves, timeout at the limit
        (1, [3], (-1.0, True, False)),  # trap on the last allowed step
        (1, [1], (1.0, True, False)),  # goal on the last allowed step
        (3, [2, 3, 3], (-1.0, True, False)),  # left, back, then the trap on step 3 = the limit
        (3, [2, 3, 1], (1.0, True, False)),  # left, back, then the goal on step 3 = the limit
    ]
    for max_steps, actions, (want_r, want_term, want_trunc) in cases:
        params = PARAMS.replace(max_steps_in_episode=max_steps)
        _, state = ENV.reset_to_task(KEY0, jax_task(task), params)
        for t, action in enumerate(actions):
            _, state_st, *_ = jitted_step_env(ENV)(KEY0, state, action, params)
            _, state, reward, term, trunc, info = step(jax.random.key(t), state, action, params)
        got = (float(reward), bool(term), bool(trunc))
        assert got == (want_r, want_term, want_trunc), (max_steps, actions)
        assert bool(info["terminated"]) == want_term and bool(info["truncated"]) == want_trunc
        # The public helper is the definition step uses, and the trial code's one.
        assert bool(flags(state_st, term, params)) == want_trunc
        assert bool(ENV.is_truncated(state_st, params) & ~term) == want_trunc
        assert int(state.time) == 0  # the episode ended either way: auto-reset


def test_truncation_helper_is_time_limit_and_not_terminated():
    params = PARAMS.replace(max_steps_in_episode=4)
    task = jax_task({"blocks": [7, 11, 20], "colors": [2, 3, 0], "goal": 1, "start": 6})
    _, state = ENV.reset_to_task(KEY0, task, params)
    for time, term in itertools.product(range(7), (False, True)):
        got = truncation(ENV, state.replace(time=jnp.int32(time)), jnp.bool_(term), params)
        assert bool(got) == (time >= 4 and not term), (time, term)
    # params default to the env's own
    assert not bool(truncation(ENV, state.replace(time=jnp.int32(5)), jnp.bool_(False)))


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        # cell: (up, down, left, right), worked out by hand on the 5x5 grid
        (0, (0, 5, 0, 1)),
        (4, (4, 9, 3, 4)),
        (20, (15, 20, 20, 21)),
        (24, (19, 24, 23, 24)),
        (2, (2, 7, 1, 3)),
        (10, (5, 15, 10, 11)),
        (14, (9, 19, 13, 14)),
        (22, (17, 22, 21, 23)),
        (6, (1, 11, 5, 7)),
    ],
)
def test_walls_keep_agent_in_place(start, expected):
    task = {"blocks": [8, 12, 18], "colors": [0, 1, 2], "goal": 0, "start": start}
    step = jitted_step_env(ENV)
    _, state = ENV.reset_to_task(KEY0, jax_task(task), PARAMS)
    for action, cell in enumerate(expected):
        _, s2, reward, term, _ = step(KEY0, state, action, PARAMS)
        assert int(s2.agent_cell) == cell, (start, action)
        assert not bool(term) and float(reward) == 0.0


# --------------------------------------------------------------------------
# 2. Observation
# --------------------------------------------------------------------------
def test_final_frame_shows_agent_and_block():
    # Agent at (1, 1); block 0 (colour 2) to its right, block 1 (colour 3, goal) below.
    task = {"blocks": [7, 11, 20], "colors": [2, 3, 0], "goal": 1, "start": 6}
    for action, cell, reward, color in ((3, 7, -1.0, 2), (1, 11, 1.0, 3)):
        for env in (ENV, ENV_RGB):
            _, state = env.reset_to_task(KEY0, jax_task(task), PARAMS)
            obs, _, r, term, _ = jitted_step_env(env)(KEY0, state, action, PARAMS)
            assert float(r) == reward and bool(term)
            # (step's info["final_observation"] is this same frame: see the rollout tests.)
            frame = np.asarray(obs)
            pixel = frame[cell // SIZE, cell % SIZE]
            if env.obs_mode == "multihot":
                expected = np.zeros(1 + C, np.float32)
                expected[[0, 1 + color]] = 1.0
                np.testing.assert_array_equal(pixel, expected)
                assert frame[..., 0].sum() == 1.0  # exactly one agent cell
                assert frame[..., 1:].sum() == X  # every block still drawn
                np.testing.assert_array_equal(frame, py_multihot(SIZE, C, task, cell))
            else:
                np.testing.assert_array_equal(pixel, default_palette(C)[color] // 2)
                np.testing.assert_array_equal(frame, py_rgb(SIZE, default_palette(C), task, cell))


@pytest.mark.parametrize("env", [ENV, ENV_RGB], ids=["multihot", "rgb"])
def test_observation_never_reveals_goal(env):
    """Tasks that differ only in goal_index look identical along any action sequence."""
    layouts = sample_tasks(ENV, 7, BATCH // X)
    variants = [
        dict(py_task(layouts, i), goal=g) for i in range(BATCH // X) for g in range(X)
    ]  # consecutive groups of X share a layout
    actions = np.repeat(random_actions(8, BATCH // X), X, axis=0)
    (obs0, _, _), out = step_env_rollout(env)(stack_tasks(variants), actions, PARAMS)
    obs = np.concatenate([np.asarray(obs0)[:, None], np.asarray(out[0])], axis=1)
    obs = obs.reshape(BATCH // X, X, *obs.shape[1:])
    for g in range(1, X):
        np.testing.assert_array_equal(obs[:, g], obs[:, 0])
    rewards = np.asarray(out[3]).reshape(BATCH // X, X, HORIZON)
    assert (rewards != rewards[:, :1]).any()  # the goals really differ
    # And every frame equals the reference rendering for its own task.
    ref = py_rgb if env.obs_mode == "rgb" else None
    flat = obs.reshape(BATCH, HORIZON + 1, *obs.shape[3:])
    for i, task in enumerate(variants):
        cell = task["start"]
        for t in range(HORIZON + 1):
            if t:
                cell = py_step(SIZE, task, cell, int(actions[i, t - 1]))[0]
            expected = ref(SIZE, default_palette(C), task, cell) if ref else py_multihot(SIZE, C, task, cell)
            np.testing.assert_array_equal(flat[i, t], expected)


def test_rgb_mode_shape_dtype_and_palette():
    env, params = make("Gridworld-v0", size=6, obs_mode="rgb")
    space = env.observation_space(params)
    assert env.obs_shape == space.shape == (6, 6, 3) and space.dtype == jnp.uint8
    space = make("Gridworld-v0", size=6)[0].observation_space(params)
    assert space.shape == (6, 6, 7) and space.dtype == jnp.float32
    task = {"blocks": [3, 17, 22], "colors": [1, 0, 3], "goal": 2, "start": 9}
    obs, _ = ENV_RGB.reset_to_task(KEY0, jax_task(task), PARAMS)
    assert obs.shape == (SIZE, SIZE, 3) and obs.dtype == jnp.uint8
    np.testing.assert_array_equal(obs, py_rgb(SIZE, default_palette(C), task, 9))
    # Floor, agent, blocks and agent-on-block must all be distinguishable.
    for n in (4, 12, 20):
        palette = default_palette(n).astype(int)
        colors = [(255, 255, 255), (0, 0, 0)] + [tuple(p) for p in palette] + [tuple(p // 2) for p in palette]
        assert len(set(colors)) == len(colors), n


# --------------------------------------------------------------------------
# 3. Task interface
# --------------------------------------------------------------------------
def test_sampled_tasks_are_valid_and_cover_the_space():
    n = 40 * BATCH
    task = jax.tree.map(np.asarray, sample_tasks(ENV, 3, n))
    assert task.block_cells.shape == (n, X) and task.block_colors.shape == (n, X)
    assert all(leaf.dtype == np.int32 for leaf in jax.tree.leaves(task))
    for i in range(n):
        assert py_task_is_valid(py_task(task, i), SIZE, X, C), i
    assert set(task.agent_start.tolist()) == set(range(N_CELLS))
    assert set(task.block_cells.ravel().tolist()) == set(range(N_CELLS))
    assert set(task.block_colors.ravel().tolist()) == set(range(C))
    goal_counts = np.bincount(task.goal_index, minlength=X)
    assert np.all(np.abs(goal_counts - n / X) < 5 * np.sqrt(n / X))


def test_reset_to_task_starts_at_agent_start():
    task = {"blocks": [3, 17, 22], "colors": [1, 0, 3], "goal": 2, "start": 9}
    obs, state = ENV.reset_to_task(jax.random.key(5), jax_task(task), PARAMS)
    assert int(state.agent_cell) == 9 and int(state.time) == 0
    assert py_task(state.task) == task
    np.testing.assert_array_equal(obs, py_multihot(SIZE, C, task, 9))


def chi_square(samples: np.ndarray, outcomes: list[tuple[int, ...]]) -> float:
    counts = collections.Counter(map(tuple, samples.tolist()))
    assert set(counts) <= set(outcomes)
    expected = len(samples) / len(outcomes)
    return sum((counts.get(o, 0) - expected) ** 2 / expected for o in outcomes)


@pytest.mark.parametrize(("n", "k", "threshold"), [(5, 2, 64.0), (4, 4, 71.0)])
def test_distinct_integers_is_uniform(n, k, threshold):
    # Thresholds: the 1 - 1e-6 quantile of chi-square with 19 / 23 degrees of freedom.
    outcomes = list(itertools.permutations(range(n), k))
    draw = jax.jit(jax.vmap(lambda key: distinct_integers(key, n, k)))
    samples = np.asarray(draw(jax.random.split(jax.random.key(11), 1000 * len(outcomes))))
    assert chi_square(samples, outcomes) < threshold
    # A biased sampler must fail the same check (the test has power).
    biased = np.concatenate([samples, np.repeat(samples[:1], 400, axis=0)])
    assert chi_square(biased, outcomes) > threshold


@settings(max_examples=8, deadline=None, database=None, derandomize=True)
@given(data=st.data())
def test_distinct_integers_distinct_and_in_range(data):
    n = data.draw(st.integers(1, 7))
    k = data.draw(st.integers(0, n))
    seed = data.draw(st.integers(0, 2**31 - 1))
    out = np.asarray(distinct_integers(jax.random.key(seed), n, k))
    assert out.shape == (k,)
    assert len(set(out.tolist())) == k
    assert all(0 <= v < n for v in out.tolist())


def test_distinct_integers_rejects_k_above_n():
    with pytest.raises(ValueError, match="k"):
        distinct_integers(KEY0, 3, 4)


# --------------------------------------------------------------------------
# 4. Expert
# --------------------------------------------------------------------------
def py_expert_action(size: int, task: dict, field: dict[int, int], cell: int) -> int:
    """Lowest-index action whose next cell is one step closer to the goal."""
    return next(a for a in MOVES if field.get(py_move(size, cell, a)) == field[cell] - 1)


def check_expert_paths(size: int, variants: list[dict], out: tuple) -> collections.Counter:
    actions, cells, rewards, terms = map(np.asarray, out)
    steps = actions.shape[1]
    counts = collections.Counter()
    for i, task in enumerate(variants):
        field = py_goal_field(size, task)
        traps = set(task["blocks"]) - {task["blocks"][task["goal"]]}
        dist = field.get(task["start"])
        if dist is None:
            counts["unreachable"] += 1
            # No trap-free path: the expert must still never step on a trap.
            assert not any(int(c) in traps for c in cells[i]), (task, cells[i])
            assert not terms[i].any()
            continue
        counts["reachable"] += 1
        first = int(np.argmax(terms[i]))
        assert terms[i].any() and first + 1 == dist, (task, dist, first)
        assert rewards[i, first] == 1.0
        assert not any(int(c) in traps for c in cells[i, : first + 1])
        cell = task["start"]
        for t in range(first + 1):
            assert actions[i, t] == py_expert_action(size, task, field, cell), (task, t)
            cell = py_move(size, cell, int(actions[i, t]))
            assert cells[i, t] == cell
        assert first < steps
    return counts


def test_expert_follows_shortest_trap_free_path():
    layouts = sample_tasks(ENV, 21, BATCH)
    variants = []
    for i in range(BATCH):
        task = py_task(layouts, i)
        variants += [dict(task, start=s) for s in range(N_CELLS) if s not in task["blocks"]]
    out = expert_rollout(ENV, variants)
    counts = check_expert_paths(SIZE, variants, out)
    assert counts["reachable"] > 0.9 * len(variants)


# The goal (block 0) in a corner, sealed off by two traps.
SEALED_CORNERS = [(0, 1, 5), (4, 3, 9), (20, 21, 15), (24, 23, 19)]


def test_expert_on_unsolvable_tasks_never_steps_on_a_trap():
    # The goal in a corner, sealed off by two traps; every free cell as a start.
    variants = [
        {"blocks": list(c), "colors": [0, 1, 2], "goal": 0, "start": s}
        for c in SEALED_CORNERS
        for s in range(N_CELLS)
        if s not in c
    ]
    assert len(variants) == EXPERT_CHUNK
    out = expert_rollout(ENV, variants)
    counts = check_expert_paths(SIZE, variants, out)
    assert counts["unreachable"] == len(variants)


def test_distance_to_goal_equals_python_bfs():
    sealed = [{"blocks": list(c), "colors": [0, 1, 2], "goal": 0, "start": 12} for c in SEALED_CORNERS]
    random = [py_task(sample_tasks(ENV, 33), i) for i in range(BATCH - len(sealed))]
    tasks = stack_tasks(random + sealed)
    field = np.asarray(jax.jit(jax.vmap(ENV.distance_to_goal))(tasks))
    assert field.shape == (BATCH, N_CELLS) and field.dtype == np.int32
    for i in range(BATCH):
        ref = py_goal_field(SIZE, py_task(tasks, i))
        np.testing.assert_array_equal(field[i], [ref.get(c, N_CELLS) for c in range(N_CELLS)])


# --------------------------------------------------------------------------
# 5. optimal_returns
# --------------------------------------------------------------------------
def enumerate_bayes_returns(num_blocks: int, num_episodes: int) -> np.ndarray:
    """Average over every goal and every visiting order of a try-each-block agent."""
    total = np.zeros(num_episodes)
    cases = 0
    for goal in range(num_blocks):
        for order in itertools.permutations(range(num_blocks)):
            known, untried = None, list(order)
            for j in range(num_episodes):
                if known is not None:
                    total[j] += 1.0
                    continue
                target = untried.pop(0)
                if target == goal:
                    known = target
                    total[j] += 1.0
                else:
                    total[j] -= 1.0
            cases += 1
    return total / cases


@pytest.mark.parametrize("num_blocks", [1, 2, 3, 4, 5])
def test_optimal_returns_matches_enumeration(num_blocks):
    np.testing.assert_allclose(
        optimal_returns(num_blocks, 8), enumerate_bayes_returns(num_blocks, 8), rtol=0, atol=1e-12
    )


@pytest.mark.parametrize("num_blocks", [1, 2, 3, 4, 5])
def test_optimal_returns_derivation(num_blocks):
    """The docstring's derivation: episode j ends on the goal iff it is among the first j tried.

    (Defect 1b: the docstring said episode j succeeds with probability 1/X.)
    """
    episodes = 7
    success = np.zeros(episodes)
    orders = list(itertools.permutations(range(num_blocks)))
    for goal, order in itertools.product(range(num_blocks), orders):
        success += [goal in order[: j + 1] for j in range(episodes)]
    success /= num_blocks * len(orders)
    j = np.arange(1, episodes + 1)
    np.testing.assert_allclose(success, np.minimum(j / num_blocks, 1.0), atol=1e-12)
    # Every episode ends on a block: E[R_j] = P(goal) - P(trap) = 2 P(goal) - 1.
    np.testing.assert_allclose(optimal_returns(num_blocks, episodes), 2 * success - 1, atol=1e-12)


def test_optimal_returns_known_values():
    np.testing.assert_allclose(optimal_returns(2, 4), [0.0, 1.0, 1.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(optimal_returns(3, 5), [-1 / 3, 1 / 3, 1.0, 1.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(optimal_returns(1, 2), [1.0, 1.0], atol=1e-12)
    with pytest.raises(ValueError, match="num_blocks"):
        optimal_returns(0, 3)
    with pytest.raises(ValueError, match="num_episodes"):
        optimal_returns(3, 0)


def test_optimal_returns_matches_real_env_trials():
    """The try-each-block agent in the real env, steering down the env's distance field."""
    env, params = make("Gridworld-v0")  # 7x7, 3 blocks
    num_x, w, episodes = env.num_blocks, env.size, 5
    n_layouts, n_sampled = 32, 256
    deltas = jnp.array([MOVES[a] for a in range(4)])

    def trial(task: GridworldTask) -> jax.Array:
        def episode(known: jax.Array, ep: jax.Array) -> tuple:
            target = jnp.where(known >= 0, known, jnp.minimum(ep, num_x - 1))
            # Plan to ``target`` as if it were the goal: the other blocks count as walls.
            dist = env.distance_to_goal(task.replace(goal_index=target))
            _, s0 = env.reset_to_task(KEY0, task, params)

            def step(carry: tuple, _: None) -> tuple:
                state, done, ret = carry
                rc = jnp.array([state.agent_cell // w, state.agent_cell % w])
                nxt = jnp.clip(rc + deltas, 0, w - 1)
                action = jnp.argmin(dist[nxt[:, 0] * w + nxt[:, 1]])
                _, s2, r, term, _ = env.step_env(KEY0, state, action, params)
                ret = ret + jnp.where(done, 0.0, r)
                state = jax.tree.map(lambda old, new: jnp.where(done, old, new), state, s2)
                done = done | term | (s2.time >= params.max_steps_in_episode)
                return (state, done, ret), None

            (_, _, ret), _ = jax.lax.scan(
                step, (s0, jnp.bool_(False), jnp.float32(0.0)), None, length=params.max_steps_in_episode
            )
            return jnp.where(ret > 0, target, known), ret

        _, rets = jax.lax.scan(episode, jnp.int32(-1), jnp.arange(episodes))
        return rets

    sampled = make_task_set(env, jax.random.key(40), n_sampled, params)
    enumerated = [dict(py_task(sampled, i), goal=g) for i in range(n_layouts) for g in range(num_x)]
    tasks = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), stack_tasks(enumerated), sampled)
    rets = np.asarray(jax.jit(jax.vmap(trial))(tasks))
    assert set(np.unique(rets).tolist()) <= {-1.0, 1.0}  # every episode reached a block
    expected = optimal_returns(num_x, episodes)
    # Every goal of each layout once: the average is exact.
    np.testing.assert_allclose(rets[: len(enumerated)].mean(0), expected, atol=1e-6)
    # Goals as sampled by the env: Monte Carlo, standard error <= 1/16 per episode.
    np.testing.assert_allclose(rets[len(enumerated) :].mean(0), expected, atol=0.25)


# --------------------------------------------------------------------------
# 6. make
# --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"size": 1}, "size"),
        ({"size": 0}, "size"),
        ({"num_blocks": 0}, "num_blocks"),
        ({"num_blocks": 4, "num_colors": 3}, "num_colors"),
        ({"size": 2, "num_blocks": 4, "num_colors": 4}, "num_blocks"),
        ({"size": 3, "num_blocks": 9, "num_colors": 9}, "num_blocks"),
        ({"colour": 3}, "colour"),
        ({"max_steps": 10}, "max_steps"),
        ({"size": 5.0}, "size"),
        ({"size": "7"}, "size"),
        ({"num_blocks": True}, "num_blocks"),
        ({"num_colors": 6.5}, "num_colors"),
        ({"max_steps_in_episode": 0}, "max_steps_in_episode"),
        ({"max_steps_in_episode": 2.5}, "max_steps_in_episode"),
        ({"max_steps_in_episode": True}, "max_steps_in_episode"),
        ({"obs_mode": "pixels"}, "obs_mode"),
    ],
)
def test_make_rejects_impossible_settings(overrides, match):
    with pytest.raises(ValueError, match=match):
        make("Gridworld-v0", **overrides)


def test_make_unknown_env_hints():
    # (The registry also serves gymnax's ids now; only the Gridworld entry is checked here.)
    assert "Gridworld-v0" in registered()
    with pytest.raises(ValueError, match="did you mean 'Gridworld-v0'"):
        make("Gridworld-v1")
    with pytest.raises(ValueError, match="did you mean 'Gridworld-v0'"):
        make("gridworld-v0")
    with pytest.raises(ValueError, match=r"unknown env\w* 'NoSuchEnv-v9'") as info:
        make("NoSuchEnv-v9")
    assert "did you mean" not in str(info.value)


def test_make_sets_constructor_and_params():
    env, params = make("Gridworld-v0", size=4, num_blocks=2, num_colors=3, max_steps_in_episode=7)
    assert (env.size, env.num_blocks, env.num_colors, env.obs_mode) == (4, 2, 3, "multihot")
    assert params.max_steps_in_episode == 7
    assert env.obs_shape == (4, 4, 4)
    assert env.num_actions == 4 and env.action_space(params).n == 4
    # Tightest legal crowding: all but one cell hold blocks.
    env, _ = make("Gridworld-v0", size=2, num_blocks=3, num_colors=3)
    task = py_task(env.sample_task(jax.random.key(2)))
    assert py_task_is_valid(task, 2, 3, 3)


# --------------------------------------------------------------------------
# 7. make_task_set and is_solvable
# --------------------------------------------------------------------------
ENV_CROWDED = Gridworld(size=3, num_blocks=3, num_colors=3)


def test_is_solvable_matches_python_bfs():
    tasks = sample_tasks(ENV_CROWDED, 50, 4 * BATCH)
    check = jax.jit(jax.vmap(ENV_CROWDED.is_solvable))
    got = np.concatenate(
        [
            np.asarray(check(jax.tree.map(lambda a, j=j: a[j : j + BATCH], tasks)))
            for j in range(0, 4 * BATCH, BATCH)
        ]
    )
    ref = np.array([py_solvable(3, py_task(tasks, i)) for i in range(4 * BATCH)])
    assert ref.any() and not ref.all()  # both kinds occur on a crowded 3x3 grid
    np.testing.assert_array_equal(got, ref)


def test_make_task_set_only_solvable_tasks():
    tasks = make_task_set(ENV_CROWDED, jax.random.key(60), 64)
    assert tasks.block_cells.shape == (64, 3) and tasks.block_colors.shape == (64, 3)
    assert tasks.goal_index.shape == (64,) and tasks.agent_start.shape == (64,)
    for i in range(64):
        task = py_task(tasks, i)
        assert py_task_is_valid(task, 3, 3, 3)
        assert py_solvable(3, task), task
    # (about a fifth of raw 3x3 tasks are unsolvable: see test_is_solvable_matches_python_bfs)


def check_every_goal_groups(rows: list[dict], size: int, num_blocks: int, num_colors: int) -> None:
    """Consecutive groups of ``num_blocks`` rows: one layout each, with every goal once."""
    assert len(rows) % num_blocks == 0
    for i, task in enumerate(rows):
        assert py_task_is_valid(task, size, num_blocks, num_colors) and py_solvable(size, task), task
        assert task["goal"] == i % num_blocks
        first = rows[i - i % num_blocks]  # the group's first task: same layout
        assert {k: v for k, v in task.items() if k != "goal"} == {
            k: v for k, v in first.items() if k != "goal"
        }


def test_make_task_set_every_goal_groups_one_layout_with_each_goal():
    tasks = make_task_set(ENV_CROWDED, jax.random.key(61), 18, every_goal=True)  # X=3: 6 groups
    rows = [py_task(tasks, i) for i in range(18)]
    check_every_goal_groups(rows, 3, 3, 3)
    layouts = {(tuple(t["blocks"]), tuple(t["colors"]), t["start"]) for t in rows}
    assert len(layouts) == 6  # distinct layouts, one per group


@pytest.mark.parametrize("num_tasks", [16, 17])
def test_make_task_set_every_goal_completes_the_last_group(num_tasks):
    """Defect 1c: 17 tasks with X=3 used to end on a layout shown with 2 of its 3 goals."""
    assert task_set_size(ENV_CROWDED, num_tasks, every_goal=True) == 18
    assert task_set_size(ENV_CROWDED, num_tasks) == num_tasks
    tasks = make_task_set(ENV_CROWDED, jax.random.key(61), num_tasks, every_goal=True)
    assert tasks.goal_index.shape == (18,) and tasks.block_cells.shape == (18, 3)
    rows = [py_task(tasks, i) for i in range(18)]
    check_every_goal_groups(rows, 3, 3, 3)
    # The same 6 layouts in the same order as for 18 tasks: completion only appends goals.
    full = make_task_set(ENV_CROWDED, jax.random.key(61), 18, every_goal=True)
    assert rows == [py_task(full, i) for i in range(18)]


def test_make_task_set_every_goal_keeps_the_x3_configs_tasks():
    """The X=3 configs ask for 1000 tasks: their first 1000 are the layouts of the plain draw, in order.

    ``make_task_set(n, every_goal=True)`` has always drawn ``ceil(n / X)`` layouts
    exactly as ``make_task_set(ceil(n / X))`` does (same keys, same redraws); row
    ``i`` is layout ``i // X`` with goal ``i % X``. Completing the last group
    must not change that, or runs recorded before the fix would move.
    """
    env, params = make("Gridworld-v0", num_blocks=3)  # the paper's 7x7 grid
    key = jax.random.key(1000)
    tasks = jax.tree.map(np.asarray, make_task_set(env, key, 1000, params, every_goal=True))
    layouts = jax.tree.map(np.asarray, make_task_set(env, key, 334, params))
    assert tasks.goal_index.shape == (1002,)
    idx = np.arange(1002)
    np.testing.assert_array_equal(tasks.goal_index, idx % 3)
    for name in ("block_cells", "block_colors", "agent_start"):
        np.testing.assert_array_equal(getattr(tasks, name), getattr(layouts, name)[idx // 3], err_msg=name)
    assert len(set(map(tuple, tasks.block_cells.tolist()))) > 330  # distinct layouts, not one repeated


# --------------------------------------------------------------------------
# 8. LegacyStepWrapper
# --------------------------------------------------------------------------
def test_legacy_wrapper_five_values_and_done():
    wrapped = LegacyStepWrapper(ENV)
    assert wrapped.unwrapped is ENV
    assert wrapped.num_actions == 4 and callable(wrapped.expert_action)
    task = {"blocks": [7, 11, 20], "colors": [2, 3, 0], "goal": 1, "start": 6}
    # (time limit, actions from the start, expected (terminated, truncated) after each)
    cases = [
        (3, [0, 2, 3], [(False, False), (False, False), (False, True)]),  # time limit
        (3, [3], [(True, False)]),  # trap
        (3, [2, 1], [(False, False), (False, False)]),  # plain moves
        (3, [1], [(True, False)]),  # goal
        (1, [3], [(True, False)]),  # trap at the time limit: terminated, not truncated
        (1, [1], [(True, False)]),  # goal at the time limit: terminated, not truncated
    ]
    step = jax.jit(wrapped.step)
    for max_steps, actions, flags in cases:
        params = PARAMS.replace(max_steps_in_episode=max_steps)
        _, state = wrapped.reset_to_task(KEY0, jax_task(task), params)
        cell = task["start"]
        for t, (action, (want_term, want_trunc)) in enumerate(zip(actions, flags, strict=True)):
            out = step(jax.random.key(t), state, action, params)
            assert len(out) == 5
            _, state, reward, done, info = out
            cell, want_reward, term = py_step(SIZE, task, cell, action)
            assert term == want_term
            assert float(reward) == want_reward
            assert bool(info["terminated"]) == want_term and bool(info["truncated"]) == want_trunc
            assert bool(done) == (want_term or want_trunc)
            np.testing.assert_array_equal(info["final_observation"], py_multihot(SIZE, C, task, cell))
            if bool(done):
                assert int(state.time) == 0 and int(state.agent_cell) == int(state.task.agent_start)


# --------------------------------------------------------------------------
# 9. render
# --------------------------------------------------------------------------
@pytest.mark.parametrize("cell_pixels", [24, 8])
def test_render_shape_and_content(cell_pixels):
    task = {"blocks": [7, 11, 20], "colors": [2, 3, 0], "goal": 1, "start": 18}
    _, state = ENV.reset_to_task(KEY0, jax_task(task), PARAMS)
    img = np.asarray(
        jax.jit(ENV.render, static_argnames="cell_pixels")(state, PARAMS, cell_pixels=cell_pixels)
    )
    assert img.shape == (SIZE * cell_pixels, SIZE * cell_pixels, 3) and img.dtype == np.uint8
    palette = default_palette(C)
    mid = cell_pixels // 2

    def centre(cell: int) -> np.ndarray:
        return img[(cell // SIZE) * cell_pixels + mid, (cell % SIZE) * cell_pixels + mid]

    np.testing.assert_array_equal(centre(7), palette[2])
    np.testing.assert_array_equal(centre(11), palette[3])
    np.testing.assert_array_equal(centre(18), [0, 0, 0])  # the agent
    np.testing.assert_array_equal(centre(0), [255, 255, 255])  # floor
    np.testing.assert_array_equal(img[0, 0], [160, 160, 160])  # grid line
    gold = [212, 175, 55]
    # Only the goal block (cell 11) carries the gold frame.
    np.testing.assert_array_equal(img[2 * cell_pixels + 1, 1 * cell_pixels + mid], gold)
    np.testing.assert_array_equal(img[1 * cell_pixels + 1, 2 * cell_pixels + mid], palette[2])

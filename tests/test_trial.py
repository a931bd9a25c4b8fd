"""Tests of multi-episode trials (:mod:`jaxmeta.trial`) against a plain-Python replay.

The replay re-plays each trial's actions on a list-and-dict model of the
Gridworld written from its specification (moves clipped at the border, +1 on
the goal block, -1 on a trap, time limit truncates, reset to the task's start
cell), renders observations with numpy and does the trial bookkeeping
(episode index, per-episode return, success, length, ended, task) with Python
integers. Every per-step and per-episode output of :func:`run_trials` is
compared with it. One jitted function per (reset mode, max_episodes) serves
both a random policy and a scripted one (the choice is a traced parameter).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs_jax
from envs_jax.gridworld import EnvState
from jaxmeta.trial import EpisodeStats, StepInputs, TrialData, episode_stats, run_trial, run_trials

SIZE, X, C, MAX_STEPS = 5, 2, 3, 6
T, B, N_TASKS = 40, 32, 8
ENV, PARAMS = envs_jax.make(
    "Gridworld-v0", size=SIZE, num_blocks=X, num_colors=C, max_steps_in_episode=MAX_STEPS
)
TASKS = envs_jax.make_task_set(ENV, jax.random.key(7), N_TASKS, PARAMS)
TASK_IDS = jnp.arange(B, dtype=jnp.int32) % N_TASKS
MEMORY = jnp.array([1, 2, 4], jnp.int32)
RANDOM, SCRIPTED = jnp.bool_(False), jnp.bool_(True)
MOVES = {0: (-1, 0), 1: (1, 0), 2: (0, -1), 3: (0, 1)}  # up, down, left, right

# numpy copy of the task set for the replay
NP_TASKS = [
    {
        "blocks": [int(c) for c in np.asarray(TASKS.block_cells)[i]],
        "colors": [int(c) for c in np.asarray(TASKS.block_colors)[i]],
        "goal": int(np.asarray(TASKS.goal_index)[i]),
        "start": int(np.asarray(TASKS.agent_start)[i]),
    }
    for i in range(N_TASKS)
]


# --------------------------------------------------------------------------
# Policy: random or scripted; its carry counts steps and logs what it was shown.
# --------------------------------------------------------------------------
def initial_carry():
    return {
        "count": jnp.zeros((), jnp.int32),
        "memory_sum": jnp.zeros((), jnp.int32),
        "obs": jnp.zeros((T, *ENV.obs_shape), jnp.float32),
        "prev_action": jnp.full((T,), -1, jnp.int32),
        "prev_reward": jnp.full((T,), 99.0, jnp.float32),
        "episode_start": jnp.zeros((T,), bool),
        "episode_index": jnp.full((T,), -1, jnp.int32),
        "task_id": jnp.full((T,), -1, jnp.int32),
    }


def policy(scripted, inputs: StepInputs, carry, memory, key):
    assert isinstance(inputs, StepInputs)
    assert inputs.prev_action.dtype == jnp.int32 and inputs.prev_reward.dtype == jnp.float32
    assert inputs.episode_start.dtype == jnp.bool_ and inputs.episode_index.dtype == jnp.int32
    assert inputs.task_id.dtype == jnp.int32
    random_action = jax.random.randint(key, (), 0, 4)
    # walk to the first block in row-major order (a goal or a trap)
    flat = inputs.obs.reshape(SIZE * SIZE, 1 + C)
    agent = jnp.argmax(flat[:, 0])
    target = jnp.argmax(jnp.any(flat[:, 1:] > 0, axis=1))
    ar, ac, tr, tc = agent // SIZE, agent % SIZE, target // SIZE, target % SIZE
    scripted_action = jnp.where(tr < ar, 0, jnp.where(tr > ar, 1, jnp.where(tc < ac, 2, 3)))
    t = carry["count"]
    new = {
        "count": t + 1,
        "memory_sum": carry["memory_sum"] + jnp.sum(memory),
        "obs": carry["obs"].at[t].set(inputs.obs),
        "prev_action": carry["prev_action"].at[t].set(inputs.prev_action),
        "prev_reward": carry["prev_reward"].at[t].set(inputs.prev_reward),
        "episode_start": carry["episode_start"].at[t].set(inputs.episode_start),
        "episode_index": carry["episode_index"].at[t].set(inputs.episode_index),
        "task_id": carry["task_id"].at[t].set(inputs.task_id),
    }
    return jnp.where(scripted, scripted_action, random_action), new


def record(state):
    return {
        "expert": ENV.expert_action(state, PARAMS),
        "agent_cell": state.agent_cell,
        "time": state.time,
    }


def _trials(scripted, task_ids, key, reset_mode, max_episodes):
    return run_trials(
        ENV,
        PARAMS,
        policy,
        scripted,
        initial_carry(),
        TASKS,
        task_ids,
        key,
        T,
        reset_mode,
        memory=MEMORY,
        max_episodes=max_episodes,
        record_fn=record,
    )


@functools.cache
def compiled(reset_mode: str, max_episodes: int | None):
    return jax.jit(functools.partial(_trials, reset_mode=reset_mode, max_episodes=max_episodes))


@functools.cache
def rollout(scripted: bool, reset_mode: str, seed: int, max_episodes: int | None = None):
    flag = SCRIPTED if scripted else RANDOM
    out = compiled(reset_mode, max_episodes)(flag, TASK_IDS, jax.random.key(seed))
    return jax.tree.map(np.asarray, out)


# --------------------------------------------------------------------------
# Plain-Python reference.
# --------------------------------------------------------------------------
def move(cell, action):
    dr, dc = MOVES[action]
    row = min(max(cell // SIZE + dr, 0), SIZE - 1)
    col = min(max(cell % SIZE + dc, 0), SIZE - 1)
    return row * SIZE + col


def render(task, cell):
    obs = np.zeros((SIZE, SIZE, 1 + C), np.float32)
    obs[cell // SIZE, cell % SIZE, 0] = 1.0
    for block, color in zip(task["blocks"], task["colors"], strict=True):
        obs[block // SIZE, block % SIZE, 1 + color] = 1.0
    return obs


def replay(actions, task_ids, reset_mode):
    """Re-play one trial's actions. ``task_ids`` is used only for the tasks drawn at resets."""
    steps, episodes = [], []
    task = int(task_ids[0])
    cell, t_in_episode, episode = NP_TASKS[task]["start"], 0, 0
    ep = {"return": 0, "success": False, "length": 0, "ended": False, "task": task}
    prev_action, prev_reward, start = 0, 0.0, True
    for t in range(T):
        spec = NP_TASKS[task]
        action = int(actions[t])
        new_cell = move(cell, action)
        terminated = new_cell in spec["blocks"]
        success = new_cell == spec["blocks"][spec["goal"]]
        reward = 1 if success else (-1 if terminated else 0)
        t_in_episode += 1
        truncated = not terminated and t_in_episode >= MAX_STEPS
        done = terminated or truncated
        steps.append(
            {
                "obs": render(spec, cell),
                "next_obs": render(spec, new_cell),
                "cell": cell,
                "time": t_in_episode - 1,
                "reward": reward,
                "terminated": terminated,
                "truncated": truncated,
                "success": success,
                "task_id": task,
                "episode_index": episode,
                "prev_action": prev_action,
                "prev_reward": prev_reward,
                "episode_start": start,
            }
        )
        ep["return"] += reward
        ep["success"] |= success
        ep["length"] += 1
        prev_action, prev_reward, start = action, float(reward), done
        if done:
            ep["ended"] = True
            episodes.append(ep)
            episode += 1
            t_in_episode = 0
            if t + 1 < T:
                if reset_mode == "diff":
                    task = int(task_ids[t + 1])  # the draw at this reset
                ep = {"return": 0, "success": False, "length": 0, "ended": False, "task": task}
                cell = NP_TASKS[task]["start"]
        else:
            cell = new_cell
    if not steps[-1]["terminated"] and not steps[-1]["truncated"]:
        episodes.append(ep)  # cut off by T
    return steps, episodes


def check_episodes(eps, episodes, size):
    """One trial's :class:`EpisodeStats` against the replay's episode list."""
    kept = episodes[:size]
    pad = size - len(kept)
    assert eps.returns.shape == (size,)
    np.testing.assert_array_equal(eps.returns, [e["return"] for e in kept] + [0] * pad)
    np.testing.assert_array_equal(eps.success, [e["success"] for e in kept] + [False] * pad)
    np.testing.assert_array_equal(eps.length, [e["length"] for e in kept] + [0] * pad)
    np.testing.assert_array_equal(eps.ended, [e["ended"] for e in kept] + [False] * pad)
    np.testing.assert_array_equal(eps.task_id, [e["task"] for e in kept] + [0] * pad)
    np.testing.assert_array_equal(eps.mask, [True] * len(kept) + [False] * pad)
    assert eps.count == len(kept)


def check_against_replay(data, eps, carry, reset_mode, max_episodes):
    for b in range(B):
        steps, episodes = replay(data.action[b], data.task_id[b], reset_mode)
        if reset_mode == "diff":
            # the task may change only right after a done step
            done = data.terminated[b] | data.truncated[b]
            changed = data.task_id[b, 1:] != data.task_id[b, :-1]
            assert not np.any(changed & ~done[:-1]), b
        for name in ("reward", "terminated", "truncated", "success", "task_id", "episode_index"):
            want = np.array([s[name] for s in steps])
            np.testing.assert_array_equal(getattr(data, name)[b], want, err_msg=f"trial {b} {name}")
        np.testing.assert_array_equal(data.obs[b], np.stack([s["obs"] for s in steps]), err_msg=str(b))
        np.testing.assert_array_equal(data.next_obs[b], np.stack([s["next_obs"] for s in steps]))
        # record_fn saw the state before acting
        np.testing.assert_array_equal(data.extras["agent_cell"][b], [s["cell"] for s in steps])
        np.testing.assert_array_equal(data.extras["time"][b], [s["time"] for s in steps])
        # what the policy was shown, logged in its own carry
        assert carry["count"][b] == T and carry["memory_sum"][b] == T * 7
        for name in ("prev_action", "prev_reward", "episode_start", "episode_index", "task_id"):
            np.testing.assert_array_equal(carry[name][b], [s[name] for s in steps], err_msg=f"{b} {name}")
        np.testing.assert_array_equal(carry["obs"][b], data.obs[b])
        # per-episode statistics; episodes past max_episodes are dropped
        check_episodes(
            jax.tree.map(lambda a, b=b: a[b], eps), episodes, T if max_episodes is None else max_episodes
        )
        # only the last episode can be cut off
        assert all(e["ended"] for e in episodes[:-1])


# --------------------------------------------------------------------------
# Tests.
# --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("scripted", "reset_mode", "max_episodes"),
    [(False, "same", None), (True, "same", 3), (False, "diff", None), (True, "diff", None)],
)
def test_trials_match_python_replay(scripted, reset_mode, max_episodes):
    data, eps, carry = rollout(scripted, reset_mode, 0, max_episodes)
    assert isinstance(data, TrialData) and isinstance(eps, EpisodeStats)
    assert data.action.shape == (B, T) and data.obs.shape == (B, T, *ENV.obs_shape)
    check_against_replay(data, eps, carry, reset_mode, max_episodes)
    # the rollout exercises every kind of step, so the checks above could fail
    assert data.terminated.any() and data.success.any()
    assert data.truncated.any() or scripted  # the scripted walk reaches a block in time
    assert (data.terminated & ~data.success).any()  # traps
    assert not (data.terminated & data.truncated).any()
    np.testing.assert_array_equal(data.task_id[:, 0], TASK_IDS)
    if max_episodes is not None:
        # some trials have more episodes than the arrays keep
        assert (data.episode_index[:, -1] + 1 > max_episodes).any()
    else:
        assert (~eps.ended & eps.mask).any()  # some final episodes cut off by T


def test_truncation_exactly_at_the_time_limit():
    data, _, _ = rollout(False, "same", 0)
    for b in range(B):
        run = 0
        for t in range(T):
            run += 1
            if data.terminated[b, t]:
                assert not data.truncated[b, t]
                run = 0
            elif run == MAX_STEPS:
                assert data.truncated[b, t], (b, t)
                run = 0
            else:
                assert not data.truncated[b, t], (b, t)


def test_same_mode_keeps_the_task_and_resets_to_its_start():
    data, eps, _ = rollout(False, "same", 0)
    np.testing.assert_array_equal(data.task_id, np.repeat(np.asarray(TASK_IDS)[:, None], T, axis=1))
    np.testing.assert_array_equal(
        eps.task_id[eps.mask], np.broadcast_to(np.asarray(TASK_IDS)[:, None], eps.mask.shape)[eps.mask]
    )
    reset_obs, _ = jax.vmap(ENV.reset_to_task, in_axes=(None, 0, None))(jax.random.key(0), TASKS, PARAMS)
    reset_obs = np.asarray(reset_obs)
    starts = np.zeros((B, T), bool)
    starts[:, 0] = True
    starts[:, 1:] = (data.terminated | data.truncated)[:, :-1]
    assert starts[:, 1:].sum() > B  # several resets per trial
    for b, t in zip(*np.nonzero(starts), strict=True):
        np.testing.assert_array_equal(data.obs[b, t], reset_obs[data.task_id[b, t]])
        assert data.obs[b, t, :, :, 0].ravel()[NP_TASKS[data.task_id[b, t]]["start"]] == 1


def test_diff_mode_draws_tasks_across_the_set():
    draws, changes, resets = [], 0, 0
    for seed in (0, 1):
        data, _, _ = rollout(False, "diff", seed)
        done = data.terminated | data.truncated
        for b, t in zip(*np.nonzero(done[:, :-1]), strict=True):
            resets += 1
            draws.append(int(data.task_id[b, t + 1]))
            changes += data.task_id[b, t + 1] != data.task_id[b, t]
    counts = np.bincount(draws, minlength=N_TASKS)
    expected = len(draws) / N_TASKS
    assert len(draws) > 20 * N_TASKS
    # uniform over the set: every task drawn, none far from its share
    assert counts.min() > 0.5 * expected and counts.max() < 1.5 * expected, counts
    # a draw equals the old task about 1/N_TASKS of the time
    assert abs(changes / resets - (1 - 1 / N_TASKS)) < 0.1


def test_done_step_shows_the_final_frame_then_the_reset_frame():
    data, _, _ = rollout(True, "same", 0)
    terminated = 0
    for b, t in zip(*np.nonzero(data.terminated | data.truncated), strict=True):
        final = data.next_obs[b, t]
        task = NP_TASKS[data.task_id[b, t]]
        agent = int(np.argmax(final[:, :, 0].ravel()))
        if data.terminated[b, t]:
            terminated += 1
            # the agent stands on a block: agent channel and one colour channel set there
            assert agent in task["blocks"]
            assert final[agent // SIZE, agent % SIZE, 0] == 1
            assert final[agent // SIZE, agent % SIZE, 1:].sum() == 1
            is_goal = agent == task["blocks"][task["goal"]]
            assert data.success[b, t] == is_goal and data.reward[b, t] == (1 if is_goal else -1)
        else:
            assert agent not in task["blocks"] and data.reward[b, t] == 0
        assert final[:, :, 0].sum() == 1
        if t + 1 < T:
            np.testing.assert_array_equal(data.obs[b, t + 1], render(task, task["start"]))
            assert not np.array_equal(data.obs[b, t + 1], final) or agent == task["start"]
    assert terminated > B


def test_record_fn_labels_are_the_expert_on_the_visited_states():
    data, _, _ = rollout(False, "diff", 0)
    task = jax.tree.map(lambda leaf: leaf[data.task_id.reshape(-1)], TASKS)
    states = EnvState(
        agent_cell=jnp.asarray(data.extras["agent_cell"].reshape(-1)),
        task=task,
        time=jnp.asarray(data.extras["time"].reshape(-1)),
    )
    labels = jax.jit(jax.vmap(ENV.expert_action, in_axes=(0, None)))(states, PARAMS)
    np.testing.assert_array_equal(data.extras["expert"].reshape(-1), np.asarray(labels))
    # the labels are not trivially constant
    assert len(np.unique(data.extras["expert"])) == 4


def test_episode_stats_drops_episodes_beyond_max_episodes():
    data, full, _ = rollout(False, "diff", 0)
    stats = jax.jit(jax.vmap(episode_stats, in_axes=(0, None)), static_argnums=1)
    for size in (1, 2):
        eps = jax.tree.map(np.asarray, stats(jax.tree.map(jnp.asarray, data), size))
        for b in range(B):
            _, episodes = replay(data.action[b], data.task_id[b], "diff")
            assert len(episodes) > size
            check_episodes(jax.tree.map(lambda a, b=b: a[b], eps), episodes, size)
    # the default keeps a slot per step: lengths add up to T and returns to the reward sum
    assert full.length.shape == (B, T)
    np.testing.assert_array_equal(full.length.sum(axis=1), T)
    np.testing.assert_array_equal(full.returns.sum(axis=1), data.reward.sum(axis=1))


def test_determinism_and_keys():
    run = compiled("diff", None)
    first = jax.tree.map(np.asarray, run(RANDOM, TASK_IDS, jax.random.key(3)))
    again = jax.tree.map(np.asarray, run(RANDOM, TASK_IDS, jax.random.key(3)))
    jax.tree.map(np.testing.assert_array_equal, first, again)
    other = jax.tree.map(np.asarray, run(RANDOM, TASK_IDS, jax.random.key(4)))
    assert not np.array_equal(first[0].action, other[0].action)
    # trials of a batch get different keys
    assert len({first[0].action[b].tobytes() for b in range(B)}) == B


def test_bad_arguments_raise_value_error():
    key = jax.random.key(0)
    for bad in ("sometimes", "SAME", ""):
        with pytest.raises(ValueError, match="reset_mode"):
            run_trial(ENV, PARAMS, policy, RANDOM, initial_carry(), TASKS, 0, key, T, bad)
        with pytest.raises(ValueError, match="reset_mode"):
            run_trials(ENV, PARAMS, policy, RANDOM, initial_carry(), TASKS, TASK_IDS, key, T, bad)
    with pytest.raises(ValueError, match="num_steps"):
        run_trial(ENV, PARAMS, policy, RANDOM, initial_carry(), TASKS, 0, key, 0, "same")


# ----------------------------------------------------------------------------- continuous actions
class PointReach:
    """A 1-D point that must reach a target (the task): continuous action in [-1, 1] moves it by 0.3 a.

    Written for this test: gymnax API, Box action of shape (1,), the task interface.
    """

    from gymnax.environments import spaces as _spaces

    default_params = type("P", (), {"max_steps_in_episode": 5})()

    def action_space(self, params=None):
        return self._spaces.Box(-1.0, 1.0, (1,), jnp.float32)

    def sample_task(self, key, params=None):
        return jax.random.uniform(key, (), minval=-1.0, maxval=1.0)

    def reset_to_task(self, key, task, params=None):
        state = {"x": jnp.zeros(()), "target": task, "time": jnp.zeros((), jnp.int32)}
        return jnp.stack([state["x"], state["target"]]), state

    def step_env(self, key, state, action, params):
        x = state["x"] + 0.3 * jnp.clip(action[0], -1.0, 1.0)
        state = {"x": x, "target": state["target"], "time": state["time"] + 1}
        terminated = jnp.abs(x - state["target"]) < 0.1
        reward = jnp.where(terminated, 1.0, -jnp.abs(x - state["target"]))
        return jnp.stack([x, state["target"]]), state, reward, terminated, {}

    def is_truncated(self, state, params):
        return state["time"] >= params.max_steps_in_episode


def test_trials_take_the_action_space_from_the_env_continuous_actions_included():
    env, params = PointReach(), PointReach.default_params
    tasks = jnp.array([0.45, -0.6, 0.9])

    def policy(policy_params, inputs, carry, memory, key):
        # Half the way towards the target: a fraction, which an int cast would destroy.
        assert inputs.prev_action.shape == (1,) and inputs.prev_action.dtype == jnp.float32
        x, target = inputs.obs[0], inputs.obs[1]
        return jnp.clip((target - x) / 0.6, -1.0, 1.0)[None], carry

    data, episodes, _ = jax.jit(
        lambda key: run_trials(env, params, policy, None, None, tasks, jnp.arange(3), key, 12, "same")
    )(jax.random.PRNGKey(0))
    assert data.action.dtype == jnp.float32 and data.action.shape == (3, 12, 1)
    # Independent replay in plain Python floats.
    for i, target in enumerate([0.45, -0.6, 0.9]):
        x, time, prev_action = 0.0, 0, [0.0]
        for t in range(12):
            action = max(-1.0, min(1.0, (target - x) / 0.6))
            assert np.isclose(float(data.action[i, t, 0]), action, atol=1e-6)
            x += 0.3 * action
            time += 1
            terminated = abs(x - target) < 0.1
            reward = 1.0 if terminated else -abs(x - target)
            assert np.isclose(float(data.reward[i, t]), reward, atol=1e-5)
            assert bool(data.terminated[i, t]) == terminated
            assert bool(data.truncated[i, t]) == (time >= 5 and not terminated)
            if terminated or time >= 5:
                x, time = 0.0, 0
            prev_action = [action]
        assert len(prev_action) == 1
    assert bool(episodes.success.any())

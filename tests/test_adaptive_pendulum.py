"""AdaptivePendulum-v0 against a plain-numpy pendulum; its motor changes exactly when the task says."""

import jax
import jax.numpy as jnp
import numpy as np

import envs_jax
from envs_jax.adaptive_pendulum import NO_CHANGE, PendulumTask


def numpy_episode(task: dict, theta: float, theta_dot: float, actions, dt=0.1, g=10.0):
    """Observations and rewards of the pendulum written out step by step."""
    observations, rewards = [], []
    for t, u in enumerate(actions):
        u = float(np.clip(u, -3.0, 3.0))
        angle = (theta + np.pi) % (2 * np.pi) - np.pi
        rewards.append(-(angle**2 + 0.1 * theta_dot**2 + 0.001 * u**2))
        gain = task["gain"] * (task["crippled_gain"] if t >= task["change_step"] else 1.0)
        accel = 3 * g / (2 * task["length"]) * np.sin(theta) + 3 / (task["mass"] * task["length"] ** 2) * (
            gain * u - task["friction"] * theta_dot
        )
        theta_dot = float(np.clip(theta_dot + accel * dt, -8.0, 8.0))
        theta = theta + theta_dot * dt
        observations.append([np.cos(theta), np.sin(theta), theta_dot])
    return np.array(observations), np.array(rewards)


def run(env, params, task, actions, key):
    _, state = env.reset_to_task(key, task, params)
    start = (float(state.theta), float(state.theta_dot))

    def step(state, action):
        obs, state, reward, terminated, truncated, info = env.step(
            jax.random.PRNGKey(0), state, action[None], params
        )
        return state, (obs, reward, terminated, truncated, info["crippled"])

    _, out = jax.lax.scan(step, state, jnp.asarray(actions, jnp.float32))
    return start, out


def test_dynamics_match_numpy_and_the_motor_is_crippled_exactly_at_the_tasks_step():
    env, params = envs_jax.make("AdaptivePendulum-v0", max_steps_in_episode=40)
    fields = {
        "mass": 1.3,
        "length": 0.8,
        "friction": 0.3,
        "gain": 1.1,
        "crippled_gain": 0.3,
        "change_step": 12,
    }
    task = PendulumTask(**{k: jnp.asarray(v) for k, v in fields.items()})
    actions = np.sin(np.arange(30) * 0.7) * 3.5  # some beyond the torque limit
    (theta, theta_dot), (obs, reward, terminated, truncated, crippled) = run(
        env, params, task, actions, jax.random.PRNGKey(3)
    )
    expected_obs, expected_reward = numpy_episode(fields, theta, theta_dot, actions)
    np.testing.assert_allclose(obs, expected_obs, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(reward, expected_reward, rtol=1e-4, atol=1e-4)
    # info["crippled"] after step t: the motor is crippled for the step after it (index t + 1 >= 12).
    np.testing.assert_array_equal(np.asarray(crippled), np.arange(1, 31) >= 12)
    # The same actions on the uncrippled task part at step 12 exactly.
    whole = task.replace(change_step=jnp.asarray(NO_CHANGE))
    _, (obs_whole, *_) = run(env, params, whole, actions, jax.random.PRNGKey(3))
    np.testing.assert_array_equal(np.asarray(obs_whole[:12]), np.asarray(obs[:12]))
    assert float(jnp.abs(obs_whole[12] - obs[12]).max()) > 1e-4
    assert not bool(terminated.any()) and not bool(truncated.any())


def test_episodes_truncate_at_the_limit_and_tasks_are_deterministic_by_key():
    env, params = envs_jax.make("AdaptivePendulum-v0", max_steps_in_episode=5)
    _, state = env.reset(jax.random.PRNGKey(0), params)
    truncated = []
    for t in range(5):
        _, state, _, terminated, trunc, _ = env.step(jax.random.PRNGKey(t), state, jnp.zeros(1), params)
        truncated.append(bool(trunc))
        assert not bool(terminated)
    assert truncated == [False] * 4 + [True]
    tasks = jax.vmap(env.sample_task, in_axes=(0, None))(
        jax.random.split(jax.random.PRNGKey(1), 2000), params
    )
    again = jax.vmap(env.sample_task, in_axes=(0, None))(
        jax.random.split(jax.random.PRNGKey(1), 2000), params
    )
    assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), tasks, again))
    changes = np.asarray(tasks.change_step) != NO_CHANGE
    assert 0.45 < changes.mean() < 0.55  # change_probability 0.5
    steps = np.asarray(tasks.change_step)[changes]
    assert steps.min() >= 1 and steps.max() <= 4  # the middle half of a 5-step episode


def test_a_negative_crippled_gain_range_reverses_the_motor_and_a_reversed_range_is_refused():
    env, params = envs_jax.make("AdaptivePendulum-v0", crippled_gain_min=-1.0, crippled_gain_max=-0.5)
    tasks = jax.vmap(env.sample_task, in_axes=(0, None))(jax.random.split(jax.random.PRNGKey(2), 500), params)
    factors = np.asarray(tasks.crippled_gain)
    assert factors.min() >= -1.0 and factors.max() <= -0.5 and factors.std() > 0.1
    # The reversed motor against the numpy pendulum, across the change.
    fields = {
        "mass": 0.9,
        "length": 1.2,
        "friction": 0.1,
        "gain": 0.8,
        "crippled_gain": -0.7,
        "change_step": 5,
    }
    task = PendulumTask(**{k: jnp.asarray(v) for k, v in fields.items()})
    actions = np.full(12, 2.0)
    (theta, theta_dot), (obs, *_) = run(env, params, task, actions, jax.random.PRNGKey(4))
    np.testing.assert_allclose(obs, numpy_episode(fields, theta, theta_dot, actions)[0], rtol=1e-4, atol=1e-4)
    try:
        envs_jax.make("AdaptivePendulum-v0", crippled_gain_min=0.5, crippled_gain_max=0.2)
    except ValueError as error:
        assert "crippled_gain_min (0.5) is above crippled_gain_max (0.2)" in str(error)
    else:
        raise AssertionError("a crippled-gain range with min above max was accepted")

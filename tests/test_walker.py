"""Walker-v0: flat ground without obstacles, the obstacles its encoding asks for, deterministic by key,
no NaN under random actions, and bad terrains refused."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs_jax
from envs_jax.walker import PIT_DEPTH, TERRAIN_UNIT, feet, ground


def test_no_roughness_and_no_obstacles_is_flat_and_the_walker_stands_on_it():
    env, params = envs_jax.make("Walker-v0")
    _, state = env.reset(jax.random.PRNGKey(0), params)
    assert float(jnp.abs(state.heights).max()) == 0.0

    # Standing still (zero joint speeds) keeps it up for the whole episode, a foot on the ground.
    def body(state, key):
        obs, state, _reward, terminated, info = env.step_env(key, state, jnp.zeros(4), params)
        return state, (terminated, info["contact"].any(), obs)

    state, (terminated, contact, obs) = jax.lax.scan(
        body, state, jax.random.split(jax.random.PRNGKey(1), 200)
    )
    assert not bool(terminated.any()) and bool(contact[-1])
    foot_heights = feet(state.pose, state.joints)[:, 1]
    assert float(foot_heights.min()) > -0.05  # resting on the contact spring, not sunk through
    assert bool(jnp.isfinite(obs).all())


def test_the_encoding_places_stumps_and_gaps_after_the_flat_start():
    env, params = envs_jax.make("Walker-v0", stump_low=2.0, stump_high=2.0, seed=1)
    _, state = env.reset(jax.random.PRNGKey(0), params)
    x = np.arange(env.num_cells) * env.cell
    heights = np.asarray(state.heights)
    assert np.all(heights[x < params.start_flat] == 0.0)
    # Stumps only, all 2 of POET's terrain units (0.3 m) high.
    assert np.isclose(heights.max(), 2.0 * TERRAIN_UNIT) and heights.min() == 0.0
    env, params = envs_jax.make("Walker-v0", gap_low=1.0, gap_high=1.0, seed=1)
    _, state = env.reset(jax.random.PRNGKey(0), params)
    pits = np.asarray(state.heights) == -PIT_DEPTH
    assert pits.any() and not pits[x < params.start_flat].any()
    assert float(ground(state.heights, jnp.asarray(1.0), env.cell)) == 0.0


def test_random_actions_are_deterministic_by_key_and_finite():
    env, params = envs_jax.make("Walker-v0", roughness=3.0, stump_high=0.5, gap_high=1.0)

    def episode(key):
        _obs, state = env.reset(key, params)

        def body(carry, k):
            state, total, done = carry
            action = jax.random.uniform(k, (4,), minval=-1, maxval=1)
            obs, new, reward, terminated, _ = env.step_env(k, state, action, params)
            new = jax.tree.map(lambda a, b: jnp.where(done, a, b), state, new)
            return (new, total + jnp.where(done, 0.0, reward), done | terminated), obs

        (state, total, done), observations = jax.lax.scan(
            body, (state, 0.0, False), jax.random.split(key, 100)
        )
        return total, done, observations

    keys = jax.random.split(jax.random.PRNGKey(2), 32)
    total, done, observations = jax.jit(jax.vmap(episode))(keys)
    again, _, _ = jax.jit(jax.vmap(episode))(keys)
    np.testing.assert_array_equal(np.asarray(total), np.asarray(again))
    assert bool(jnp.isfinite(observations).all()) and bool(jnp.isfinite(total).all())
    assert float(done.mean()) > 0.5  # random flailing falls (BipedalWalker's random agent scores ~ -100)


@pytest.mark.parametrize(
    "settings, needle",
    [
        ({"roughness": 11.0}, "roughness"),
        ({"stump_low": 0.6, "stump_high": 0.5}, "stump_low"),
        ({"gap_high": -1.0}, "gap_high"),
    ],
)
def test_bad_terrains_are_refused(settings, needle):
    with pytest.raises(ValueError, match=needle):
        envs_jax.make("Walker-v0", **settings)

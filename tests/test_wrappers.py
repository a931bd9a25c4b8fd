"""Code written for the gymnax 0.x five-value step trains on our envs through the wrapper."""

import jax
import numpy as np
import pytest

import envs_jax


def test_rejax_ppo_trains_unchanged_on_wrapped_gridworld():
    rejax = pytest.importorskip("rejax")
    env, params = envs_jax.make("Gridworld-v0", size=5, num_blocks=1, num_colors=1, max_steps_in_episode=20)
    algo = rejax.PPO.create(
        env=envs_jax.LegacyStepWrapper(env),
        env_params=params,
        total_timesteps=65_536,
        eval_freq=16_384,
        num_envs=32,
        num_steps=64,
        num_epochs=4,
        num_minibatches=4,
        learning_rate=1e-3,
    )
    _, (lengths, returns) = jax.jit(algo.train)(jax.random.PRNGKey(0))
    returns, lengths = np.asarray(returns).mean(axis=1), np.asarray(lengths).mean(axis=1)
    # One block, the goal: a random walk often times out (20 steps); PPO learns to walk straight to it.
    # Closed form for the trained agent: a shortest path on a 5x5 grid is at most 8 moves.
    assert returns[0] < 0.7
    assert returns[-1] > 0.95
    assert lengths[-1] < 8

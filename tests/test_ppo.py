"""PPO on single tasks: truncation bootstrap, minibatches, tiny runs (discrete, continuous, GRU), bad configs.

GAE itself is tested in test_ppo_finetune.py; this file tests what ``jaxmeta.algos.ppo`` adds.
"""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmeta import config, rollouts, runner
from jaxmeta import policy_gradient as pg
from jaxmeta.algos import ppo
from jaxmeta.algos.api import make_env


def ppo_config(run_dir, *overrides):
    return config.load(
        None,
        [
            "algo.name=ppo",
            "env.id=CartPole-v1",
            "seeds=1",
            "progress=false",
            "plots=false",
            f"run_dir={run_dir}",
            *overrides,
        ],
    )


def metric_rows(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def transitions_of(reward, terminated, truncated, value):
    """A one-environment rollout ``[T, 1]`` with only the fields the advantages read."""
    column = lambda x, dtype: jnp.asarray(x, dtype)[:, None]  # noqa: E731
    n = len(reward)
    return rollouts.Transition(
        obs=jnp.zeros((n, 1)),
        action=jnp.zeros((n, 1), jnp.int32),
        reward=column(reward, jnp.float32),
        terminated=column(terminated, bool),
        truncated=column(truncated, bool),
        next_obs=jnp.zeros((n, 1)),
        first=jnp.zeros((n, 1), bool),
        extras=ppo.StepRecord(None, None, column(value, jnp.float32), None),
    )


# ----------------------------------------------------------------------------- pieces
def test_truncated_steps_bootstrap_from_the_final_observation():
    # t=0 runs on; t=1 is cut by the time limit (its final observation is worth 10, the next
    # episode's first one V(o_2) = 3 must not be used); t=2 terminates (its next value 7 is ignored);
    # t=3 runs on and is bootstrapped with the last value 2.
    gamma, lam = 0.5, 1.0
    transitions = transitions_of(
        reward=[1.0, 1.0, 1.0, 1.0],
        terminated=[False, False, True, False],
        truncated=[False, True, False, False],
        value=[4.0, 5.0, 3.0, 6.0],
    )
    next_values = jnp.array([5.0, 10.0, 7.0, 2.0])[:, None]
    advantages, targets = ppo.advantages_and_targets(transitions, next_values, jnp.array([2.0]), gamma, lam)
    g3 = 1.0 + gamma * 2.0
    g2 = 1.0
    g1 = 1.0 + gamma * 10.0
    g0 = 1.0 + gamma * g1
    np.testing.assert_allclose(targets[:, 0], [g0, g1, g2, g3], rtol=1e-6)
    np.testing.assert_allclose(advantages[:, 0], [g0 - 4.0, g1 - 5.0, g2 - 3.0, g3 - 6.0], rtol=1e-6)
    # One-step (lambda = 0) targets: the same bootstraps, each from the next value only.
    _, targets0 = ppo.advantages_and_targets(transitions, next_values, jnp.array([2.0]), gamma, 0.0)
    np.testing.assert_allclose(targets0[:, 0], [1.0 + gamma * 5.0, g1, g2, g3], rtol=1e-6)


def test_clipped_value_loss():
    values, old, targets = jnp.array([1.0, 0.0]), jnp.array([0.0, 0.0]), jnp.array([2.0, 1.0])
    assert float(pg.clipped_value_loss(values, old, targets)) == pytest.approx((1.0 + 1.0) / 2)
    # Clipped at 0.5 from the old values, the first prediction counts as 0.5: loss max(1, 2.25).
    assert float(pg.clipped_value_loss(values, old, targets, 0.5)) == pytest.approx((2.25 + 1.0) / 2)


def batch_of(num_steps, num_envs, hidden=None):
    ids = jnp.arange(num_steps * num_envs).reshape(num_steps, num_envs)
    zeros = jnp.zeros((num_steps, num_envs))
    return ppo.Batch(ids, zeros, ids, zeros, zeros, zeros, zeros, hidden)


def test_minibatches_hold_every_step_once_per_epoch():
    batch = batch_of(8, 3)
    minis = ppo.epoch_minibatches(jax.random.key(0), batch, 4)
    assert minis.obs.shape == (4, 6)
    np.testing.assert_array_equal(np.sort(minis.obs.ravel()), np.arange(24))
    np.testing.assert_array_equal(minis.obs, minis.action)  # the fields stay aligned
    other = ppo.epoch_minibatches(jax.random.key(1), batch, 4)
    assert not np.array_equal(minis.obs, other.obs)  # shuffled anew each epoch


def test_recurrent_minibatches_keep_whole_sequences():
    num_steps, num_envs = 5, 6
    hidden = jnp.arange(num_envs, dtype=jnp.float32)[:, None] * jnp.ones((1, 2))
    minis = ppo.epoch_minibatches(jax.random.key(0), batch_of(num_steps, num_envs, hidden), 3)
    assert minis.obs.shape == (3, num_steps, 2) and minis.hidden.shape == (3, 2, 2)
    envs = minis.obs[:, 0, :] % num_envs  # the environment of each sequence
    np.testing.assert_array_equal(np.sort(envs.ravel()), np.arange(num_envs))
    # Every sequence is one environment's whole segment, with that environment's start state.
    expected = envs[:, None, :] + num_envs * jnp.arange(num_steps)[None, :, None]
    np.testing.assert_array_equal(minis.obs, expected)
    np.testing.assert_array_equal(minis.hidden[..., 0], envs)


# ----------------------------------------------------------------------------- acting and replaying
def rollout_segments(cfg, num_segments):
    """``num_segments`` consecutive rollouts of a freshly initialised PPO agent (no update between)."""
    env, env_params = make_env(cfg.env)
    algo = ppo.make(cfg)
    state = jax.jit(algo.init)(jax.random.key(0))
    network = ppo.make_network(cfg.algo, env.observation_space(env_params), env.action_space(env_params))

    def policy(params, obs, first, hidden, key):
        return ppo.act(network, params, obs, first, hidden, key)

    @jax.jit
    def segment(runner_state, hidden, key):
        return rollouts.rollout(
            env, env_params, runner_state, policy, state.params, key, cfg.algo.num_steps, hidden
        )

    out, runner_state, hidden = [], state.runner, state.hidden
    for i in range(num_segments):
        start_hidden = hidden
        runner_state, hidden, transitions = segment(runner_state, hidden, jax.random.key(i + 1))
        out.append((start_hidden, transitions))
    return network, state.params, out


def test_gru_training_pass_matches_the_acting_pass(tmp_path):
    cfg = ppo_config(
        tmp_path / "run", "algo.recurrent=true", "algo.gru_size=16", "algo.num_envs=4", "algo.num_steps=48"
    )
    network, params, segments = rollout_segments(cfg, 2)
    for start_hidden, transitions in segments:
        record = transitions.extras
        batch = ppo.Batch(
            transitions.obs,
            transitions.first,
            record.action,
            record.log_prob,
            record.value,
            None,
            None,
            start_hidden,
        )
        dist, values = jax.jit(lambda p, b: ppo.replay(network, p, b))(params, batch)
        np.testing.assert_allclose(dist.log_prob(record.action), record.log_prob, atol=1e-5)
        np.testing.assert_allclose(values, record.value, atol=1e-5)
    # The second segment starts mid-episode from a carried, non-zero state, and episodes end within it.
    start_hidden, transitions = segments[1]
    assert float(jnp.abs(start_hidden).max()) > 0 and bool(transitions.first.any())


def test_continuous_env_actions_stay_in_bounds(tmp_path):
    # A very wide Gaussian: raw samples far outside [-2, 2] must be squashed into it.
    cfg = ppo_config(tmp_path / "run", "env.id=Pendulum-v1", "algo.log_std_init=2.0", "algo.num_steps=32")
    _, _, [(_, transitions)] = rollout_segments(cfg, 1)
    actions, raw = np.asarray(transitions.action), np.asarray(transitions.extras.action)
    assert actions.shape == raw.shape == (32, 4, 1)
    assert np.all(actions >= -2.0) and np.all(actions <= 2.0)
    assert np.abs(raw).max() > 2.0
    np.testing.assert_allclose(actions, 2.0 * np.tanh(raw), atol=1e-5)


# ----------------------------------------------------------------------------- tiny runs
def test_tiny_cartpole_run_learns_with_three_seeds(tmp_path):
    # 3 seeds vmapped through the runner (init under jit(vmap): no batched QR), 40 updates = 20,480
    # steps per seed; a uniformly random policy lasts ~22 steps.
    cfg = ppo_config(
        tmp_path / "run",
        "seeds=3",
        "num_updates=40",
        "chunk_size=20",
        "eval_every=40",
        "checkpoint_every=40",
        "algo.learning_rate=1e-3",
        "algo.eval_episodes=8",
    )
    summary = runner.run(cfg, log=lambda *_: None)
    per_seed = summary["eval"]["return"]["per_seed"]
    assert len(per_seed) == 3 and min(per_seed) > 60, per_seed
    train = [r for r in metric_rows(cfg.run_dir) if r["kind"] == "train"]
    assert train[-1]["env_steps"] == 40 * 4 * 128


def test_tiny_pendulum_run_is_finite(tmp_path):
    cfg = ppo_config(
        tmp_path / "run",
        "env.id=Pendulum-v1",
        "num_updates=4",
        "chunk_size=2",
        "eval_every=4",
        "checkpoint_every=4",
        "algo.num_steps=32",
        "algo.eval_episodes=2",
    )
    runner.run(cfg, log=lambda *_: None)
    rows = metric_rows(cfg.run_dir)
    for row in rows:
        assert all(np.all(np.isfinite(v)) for k, v in row.items() if k not in ("kind", "update", "seed"))
    evals = [r for r in rows if r["kind"] == "eval"]
    assert len(evals) == 2 and -2000 < evals[-1]["eval/return"] < 0


def test_tiny_gru_run_executes(tmp_path):
    cfg = ppo_config(
        tmp_path / "run",
        "algo.recurrent=true",
        "algo.gru_size=16",
        "algo.num_minibatches=2",
        "algo.num_steps=32",
        "num_updates=4",
        "chunk_size=2",
        "eval_every=4",
        "checkpoint_every=4",
        "algo.eval_episodes=2",
        "algo.eval_greedy=true",
    )
    summary = runner.run(cfg, log=lambda *_: None)
    assert np.isfinite(summary["eval"]["return"]["mean"])
    assert summary["final_train"]["env_steps"]["mean"] == 4 * 4 * 32


# ----------------------------------------------------------------------------- bad configs
@pytest.mark.parametrize(
    "overrides, message",
    [
        (["algo.num_minibatches=3"], "algo.num_minibatches=3 must divide algo.num_envs x algo.num_steps=512"),
        (
            ["algo.recurrent=true", "algo.num_envs=6", "algo.num_minibatches=4"],
            "algo.num_minibatches=4 must divide algo.num_envs=6",
        ),
        (["algo.hidden_sizes=[]"], "algo.hidden_sizes must hold at least one width"),
        (
            ["env.id=FrozenLake-misc", "algo.flatten_obs=true"],
            "ppo cannot run on FrozenLake-misc: flatten_obs needs a Box observation space, got Discrete",
        ),
    ],
)
def test_bad_configs_are_one_line_errors(tmp_path, overrides, message):
    with pytest.raises(config.ConfigError) as err:
        ppo_config(tmp_path / "run", *overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)

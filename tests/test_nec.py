"""Neural Episodic Control (jaxmeta.algos.nec): its pieces against plain Python, and a tiny run that
learns bsuite's Catch."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from jaxmeta import config, runner
from jaxmeta.algos import nec
from jaxmeta.config import ConfigError

GAMMA = 0.9


def python_target(rewards, terminated, truncated, q_taken, bootstrap, gamma):
    """The N-step target of one window, step by step."""
    ret = 0.0
    for j, reward in enumerate(rewards):
        ret += gamma**j * reward
        if terminated[j]:
            return ret
        if truncated[j]:
            # The final observation's value, recovered from Q(s_e, a_e) = r_e + gamma V(s_{e+1}).
            return ret + gamma ** (j + 1) * (q_taken[j] - reward) / gamma
    return ret + gamma ** len(rewards) * bootstrap


@pytest.mark.parametrize("seed", range(5))
def test_n_step_targets_match_a_python_loop(seed):
    rng = np.random.default_rng(seed)
    batch, n = 64, 6
    rewards = rng.normal(size=(batch, n)).astype(np.float32)
    ends = rng.random((batch, n)) < 0.15
    terminated = ends & (rng.random((batch, n)) < 0.5)
    truncated = ends & ~terminated
    q_taken = rng.normal(size=(batch, n)).astype(np.float32)
    bootstrap = rng.normal(size=batch).astype(np.float32)
    got = nec.n_step_targets(
        jnp.asarray(rewards),
        jnp.asarray(terminated),
        jnp.asarray(truncated),
        jnp.asarray(q_taken),
        jnp.asarray(bootstrap),
        GAMMA,
    )
    want = [
        python_target(rewards[b], terminated[b], truncated[b], q_taken[b], bootstrap[b], GAMMA)
        for b in range(batch)
    ]
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_loss_counts_only_the_masked_entries():
    class Identity:
        @staticmethod
        def apply(params, obs):
            return obs * params

    obs = jnp.array([[0.0, 0.0], [1.0, 1.0]])
    keys = jnp.array([[[0.0, 0.0], [5.0, 5.0]], [[1.0, 1.0], [9.0, 9.0]]])
    values = jnp.array([[2.0, 7.0], [4.0, 1.0]])
    valid = jnp.array([[True, False], [True, True]])
    targets = jnp.array([1.0, 100.0])
    loss, q = nec.nec_loss(1.0, keys, values, Identity, obs, valid, targets, jnp.array([True, False]), 1e-3)
    assert float(q[0]) == pytest.approx(2.0)  # the one valid neighbour
    assert float(loss) == pytest.approx((2.0 - 1.0) ** 2)  # the second entry is masked out


# ----------------------------------------------------------------------------- config and runs
TINY_CATCH = (
    "algo.name=nec",
    "env.id=Catch-bsuite",
    "algo.capacity=1000",
    "algo.key_size=16",
    "algo.num_neighbours=10",
    "algo.n_step=10",
    "algo.num_envs=4",
    "algo.num_steps=8",
    "algo.buffer_size=4000",
    "algo.learning_starts=300",
    "algo.learning_rate=0.001",
    "algo.epsilon_anneal_steps=1500",
    "algo.gradient_steps=2",
    "chunk_size=25",
    "progress=false",
    "plots=false",
)


def test_tiny_catch_run_learns_with_two_vmapped_seeds(tmp_path):
    """1,600 env steps per seed: both seeds catch every ball (a random policy scores about -0.6)."""
    cfg = config.load(
        None,
        [
            *TINY_CATCH,
            f"run_dir={tmp_path / 'run'}",
            "seeds=2",
            "num_updates=50",
            "eval_every=25",
            "checkpoint_every=50",
        ],
    )
    summary = runner.run(cfg, log=lambda *_: None)
    assert summary["eval"]["return"]["per_seed"] == [1.0, 1.0]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    first_eval = [r["eval/return"] for r in rows if r["kind"] == "eval" and r["update"] == 0]
    assert max(first_eval) < 0.5
    train = [r for r in rows if r["kind"] == "train"]
    assert train[0]["loss"] == 0.0 and train[-1]["loss"] > 0.0  # gradient steps after learning_starts
    assert 0 < train[-1]["dnd_fill"] < 1
    assert train[-1]["env_steps"] == 1600


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["env.id=Pendulum-v1"], "discrete action space"),
        (["algo.capacity=20", "algo.num_neighbours=50"], "num_neighbours=50 must be <= algo.capacity=20"),
        (["algo.batch_size=64", "algo.buffer_size=32"], "larger than the replay memory"),
        (["env.id=Breakout-MinAtar", "algo.encoder_hidden=[64,64]"], "one hidden layer"),
        (["env.id=CartPole-v1", "algo.binary_obs=true"], "binary_obs"),
        (["algo.n_step=600"], "n_step=600 is longer than CartPole-v1's episodes"),
    ],
)
def test_config_mistakes_are_one_line_errors(overrides, words):
    with pytest.raises(ConfigError, match=words) as err:
        config.load(None, ["algo.name=nec", "env.id=CartPole-v1", *overrides])
    assert "\n" not in str(err.value)

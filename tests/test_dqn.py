"""DQN (jaxmeta.algos.dqn): its pieces against hand-written Python, and tiny CartPole runs that learn."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmeta import config, runner
from jaxmeta.algos import dqn
from jaxmeta.config import ConfigError
from jaxmeta.memory import replay

GAMMA = 0.9


class TableQ:
    """A stand-in Q-network: observations are integer state ids, params a ``[S, A]`` table."""

    @staticmethod
    def apply(params, obs):
        return params[obs]


def python_target(rewards, terminated, truncated, next_obs, q_target, q_online, gamma, double):
    """The n-step TD target of one window, written out step by step."""
    ret, discount = 0.0, 1.0
    for k in range(len(rewards)):
        ret += discount * rewards[k]
        discount *= gamma
        if terminated[k]:
            return ret  # nothing after a terminal step
        if truncated[k] or k == len(rewards) - 1:
            s = next_obs[k]  # bootstrap from where the window stops (a truncation too)
            a = int(np.argmax(q_online[s] if double else q_target[s]))
            return ret + discount * q_target[s, a]
    raise AssertionError("unreachable")


WINDOWS = {
    # rewards, terminated, truncated, next_obs (state ids) of windows of 3 steps of one env.
    "no end": ([1.0, 2.0, 3.0], [0, 0, 0], [0, 0, 0], [1, 2, 3]),
    "terminated first": ([1.0, 5.0, 7.0], [1, 0, 0], [0, 0, 0], [4, 0, 1]),
    "terminated second": ([0.5, -1.0, 9.0], [0, 1, 0], [0, 0, 0], [2, 5, 0]),
    "truncated second": ([1.0, 1.0, 4.0], [0, 0, 0], [0, 1, 0], [3, 6, 0]),
    "truncated last": ([2.0, 0.0, 1.0], [0, 0, 0], [0, 0, 1], [4, 5, 6]),
    "terminated and truncated": ([1.0, 3.0, 2.0], [0, 1, 0], [0, 1, 0], [1, 2, 3]),
}


def window_batch(n):
    rows = list(WINDOWS.values())
    return {
        "obs": jnp.zeros((len(rows), n), jnp.int32),
        "action": jnp.zeros((len(rows), n), jnp.int32),
        "reward": jnp.array([r[0][:n] for r in rows], jnp.float32),
        "terminated": jnp.array([r[1][:n] for r in rows], bool),
        "truncated": jnp.array([r[2][:n] for r in rows], bool),
        "next_obs": jnp.array([r[3][:n] for r in rows], jnp.int32),
    }


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("double", [False, True])
def test_td_targets_match_a_python_computation(n, double):
    rng = np.random.default_rng(0)
    q_target = rng.normal(size=(7, 3)).astype(np.float32)
    q_online = rng.normal(size=(7, 3)).astype(np.float32)
    batch = dqn.n_step_batch(window_batch(n), GAMMA)
    got = dqn.td_targets(
        batch.returns,
        batch.discount,
        TableQ.apply(jnp.asarray(q_target), batch.bootstrap_obs),
        TableQ.apply(jnp.asarray(q_online), batch.bootstrap_obs),
        double,
    )
    want = [
        python_target(r[:n], t[:n], tr[:n], s[:n], q_target, q_online, GAMMA, double)
        for r, t, tr, s in WINDOWS.values()
    ]
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)


def test_double_dqn_selects_with_online_and_values_with_target():
    next_q_target = jnp.array([[1.0, 5.0, 2.0]])
    next_q_online = jnp.array([[0.0, 0.0, 9.0]])
    returns, discount = jnp.array([1.0]), jnp.array([0.5])
    assert dqn.td_targets(returns, discount, next_q_target, next_q_online, False) == 1.0 + 0.5 * 5.0
    assert dqn.td_targets(returns, discount, next_q_target, next_q_online, True) == 1.0 + 0.5 * 2.0


@pytest.mark.parametrize("loss", ["mse", "huber"])
def test_td_loss_regresses_the_replayed_action_on_fixed_targets(loss):
    rng = np.random.default_rng(1)
    params = jnp.asarray(rng.normal(size=(7, 3)), jnp.float32)
    target_params = jnp.asarray(rng.normal(size=(7, 3)) * 3, jnp.float32)
    seq = window_batch(1)
    seq["obs"] = jnp.arange(6, dtype=jnp.int32)[:, None]
    seq["action"] = jnp.array([0, 1, 2, 0, 1, 2], jnp.int32)[:, None]
    batch = dqn.n_step_batch(seq, GAMMA)
    value, q_mean = dqn.td_loss(TableQ, params, target_params, batch, False, loss)
    q = np.asarray(params)[np.arange(6), [0, 1, 2, 0, 1, 2]]
    targets = [
        python_target(*[x[:1] for x in w], np.asarray(target_params), None, GAMMA, False)
        for w in WINDOWS.values()
    ]
    err = q - np.array(targets)
    want = (
        np.mean(err**2) if loss == "mse" else np.mean(np.where(abs(err) <= 1, 0.5 * err**2, abs(err) - 0.5))
    )
    np.testing.assert_allclose(value, want, rtol=1e-5)
    np.testing.assert_allclose(q_mean, q.mean(), rtol=1e-5)
    # No gradient flows into the targets: only the replayed (state, action) entries of the online table move.
    grads = jax.grad(lambda p: dqn.td_loss(TableQ, p, target_params, batch, False, loss)[0])(params)
    mask = np.zeros((7, 3), bool)
    mask[np.arange(6), [0, 1, 2, 0, 1, 2]] = True
    assert np.all(np.asarray(grads)[~mask] == 0)


@pytest.mark.parametrize("tau", [1.0, 0.25])
def test_target_network_schedule_matches_a_python_model(tau):
    every, per_update = 250, 100
    online, target = 0.0, 0.0
    model_target, steps = 0.0, 0
    params, target_params = jnp.float32(0.0), jnp.float32(0.0)
    for update in range(1, 21):
        online = float(update)  # the online network changes every update
        params = jnp.float32(online)
        before, steps = steps, steps + per_update
        target_params = dqn.target_update(params, target_params, before, steps, every, tau)
        # The model: every time the env-step count passes a multiple of `every`, move tau of the way.
        if any(k % every == 0 for k in range(before + 1, steps + 1)):
            model_target = tau * online + (1 - tau) * model_target
        np.testing.assert_allclose(float(target_params), model_target, rtol=1e-6)
    assert target == 0.0  # untouched Python copy: the function is pure


def test_hard_target_update_copies_exactly_when_due():
    params = {"w": jnp.array([1.0, 2.0])}
    old = {"w": jnp.array([5.0, 6.0])}
    assert dqn.target_update(params, old, 400, 500, 500, 1.0)["w"].tolist() == [1.0, 2.0]
    assert dqn.target_update(params, old, 500, 600, 500, 1.0)["w"].tolist() == [5.0, 6.0]


def test_epsilon_schedule_matches_its_closed_form():
    starts, start, end, anneal = 1000, 0.9, 0.1, 4000
    steps = np.array([0, 999, 1000, 1500, 3000, 4999, 5000, 10**6])
    got = np.asarray(dqn.epsilon_schedule(jnp.asarray(steps), starts, start, end, anneal))
    want = [1.0 if t < starts else start + (end - start) * min((t - starts) / anneal, 1.0) for t in steps]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_learning_rate_scale_is_constant_or_linear():
    assert float(dqn.learning_rate_scale(10**6, 100, 0)) == 1.0
    got = np.asarray(dqn.learning_rate_scale(jnp.array([0, 100, 600, 1100, 5000]), 100, 1000))
    np.testing.assert_allclose(got, [1.0, 1.0, 0.5, 0.0, 0.0])


def test_epsilon_greedy_explores_uniformly_and_exploits_the_argmax():
    q = jnp.tile(jnp.array([0.0, 3.0, 1.0]), (20_000, 1))
    greedy = dqn.epsilon_greedy(q, jnp.float32(0.0), jax.random.PRNGKey(0))
    assert np.all(np.asarray(greedy) == 1)
    mixed = np.asarray(dqn.epsilon_greedy(q, jnp.float32(0.3), jax.random.PRNGKey(1)))
    frequencies = np.bincount(mixed, minlength=3) / len(mixed)
    np.testing.assert_allclose(frequencies, [0.1, 0.8, 0.1], atol=0.015)


# ----------------------------------------------------------------------------- config and runs
def test_continuous_actions_are_a_one_line_config_error():
    with pytest.raises(ConfigError) as err:
        config.load(None, ["algo.name=dqn", "env.id=Pendulum-v1"])
    message = str(err.value)
    assert "\n" not in message
    assert "discrete action space" in message and "Pendulum-v1" in message


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["env.id=CartPole-v1", "algo.binary_obs=true"], "binary_obs"),
        (["env.id=CartPole-v1", "algo.n_step=6", "algo.buffer_size=10", "algo.num_envs=2"], "n_step"),
        (["env.id=Breakout-MinAtar", "algo.encoder_hidden=[64,64]"], "one hidden layer"),
    ],
)
def test_other_config_mistakes_are_one_line_errors(overrides, words):
    config.load(None, ["algo.name=dqn", "env.id=Breakout-MinAtar", "algo.binary_obs=true"])  # allowed
    with pytest.raises(ConfigError, match=words) as err:
        config.load(None, ["algo.name=dqn", *overrides])
    assert "\n" not in str(err.value)


TINY_CARTPOLE = (
    "algo.name=dqn",
    "env.id=CartPole-v1",
    "algo.num_envs=8",
    "algo.num_steps=16",
    "algo.learning_starts=512",
    "algo.buffer_size=20000",
    "algo.batch_size=64",
    "algo.gradient_steps=16",
    "algo.learning_rate=0.001",
    "algo.target_update_every=512",
    "algo.epsilon_anneal_steps=8000",
    "algo.features=64",
    "algo.hidden_sizes=[64]",
    "algo.double_dqn=true",
    "algo.eval_episodes=8",
    "chunk_size=25",
    "progress=false",
    "plots=false",
)


def tiny_run(run_dir, *overrides):
    cfg = config.load(None, [*TINY_CARTPOLE, f"run_dir={run_dir}", *overrides])
    return runner.run(cfg, log=lambda *_: None)


def test_tiny_cartpole_run_learns(tmp_path):
    """~13k env steps: the greedy policy balances far longer than a random one (~20 steps)."""
    summary = tiny_run(
        tmp_path / "run", "seeds=1", "num_updates=100", "eval_every=100", "checkpoint_every=100"
    )
    assert summary["eval"]["return"]["mean"] > 100
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    assert [r["env_steps"] for r in train[:3]] == [128, 256, 384]
    assert train[0]["loss"] == 0.0 and train[0]["epsilon"] == 1.0  # before learning_starts
    assert train[-1]["loss"] > 0.0 and train[-1]["epsilon"] < 1.0
    assert {"train/return", "train/episode_length", "train/episodes", "q_mean"} <= set(train[-1])


def test_three_seeds_run_vmapped(tmp_path):
    """Three seeds in one vmapped run (their init included), on the paths the learning test does not
    take: 3-step targets, Huber loss, Polyak averaging."""
    summary = tiny_run(
        tmp_path / "run",
        "seeds=3",
        "num_updates=25",
        "eval_every=25",
        "checkpoint_every=25",
        "algo.n_step=3",
        "algo.loss=huber",
        "algo.tau=0.5",
        "algo.target_update_every=128",
    )
    assert len(summary["eval"]["return"]["per_seed"]) == 3
    q_means = summary["final_train"]["q_mean"]["per_seed"]
    assert len(set(q_means)) == 3 and min(q_means) > 0  # independent seeds, all learning


def test_buffer_holds_next_obs_and_bootstraps_truncated_steps():
    """With a 5-step time limit every episode is truncated: the buffer's steps say so, and their
    next_obs is the last observation of the episode, not the first of the next."""
    cfg = config.load(
        None,
        [
            *TINY_CARTPOLE,
            "env.max_steps_in_episode=5",
            "algo.num_envs=2",
            "algo.num_steps=10",
            "eval_every=25",
        ],
    )
    algo = dqn.make(cfg)
    state, _ = jax.jit(algo.update)(algo.init(jax.random.PRNGKey(0)))
    data = jax.tree.map(lambda x: np.asarray(x)[:10], state.buffer.data)  # the 10 rows written
    # (No CartPole episode terminates within 5 steps of its start.)
    assert not data["terminated"].any()
    assert data["truncated"][:, 0].tolist() == ([False] * 4 + [True]) * 2
    for t in range(9):
        if data["truncated"][t, 0]:
            assert not np.allclose(data["next_obs"][t, 0], data["obs"][t + 1, 0])
        else:
            np.testing.assert_allclose(data["next_obs"][t, 0], data["obs"][t + 1, 0])
    one_step = [data[k][..., None] for k in ("reward", "terminated", "truncated")]
    _, discount, _ = replay.n_step_targets(*one_step, 0.99)
    np.testing.assert_allclose(np.asarray(discount), 0.99)  # a truncated step is bootstrapped too

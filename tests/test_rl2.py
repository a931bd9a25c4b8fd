"""RL^2: the GRU against a numpy GRU (acting = replay, the state kept across episode boundaries and
started afresh at each trial), advantages across the trial against a plain-Python loop, a tiny run on
a 2-armed bandit beating random play, and bad configs refused in one line with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmeta import config, runner
from jaxmeta.algos import rl2
from jaxmeta.trial import run_trials

ROOT = Path(__file__).resolve().parents[1]


def bandit_config(run_dir: str, updates: int, *extra: str):
    return config.load(
        None,
        [
            f"run_dir={run_dir}",
            "algo.name=rl2",
            "env.id=BernoulliBandit-v0",
            "env.num_arms=2",
            "algo.gru_size=16",
            "algo.features=16",
            "algo.obs_features=8",
            "algo.trial.num_steps=10",
            "algo.trial.batch_size=64",
            "algo.num_test_tasks=500",
            "algo.eval.num_tasks=500",
            "algo.eval.episodes=10",
            "seeds=1",
            f"num_updates={updates}",
            f"chunk_size={updates}",
            f"checkpoint_every={updates}",
            f"eval_every={updates}",
            "progress=false",
            "plots=false",
            *extra,
        ],
    )


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_gru_logits(
    params, inputs: dict, num_actions: int, reward_by_action: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Logits ``[T, A]`` and the final state of the network over one trial's inputs ``[T, ...]``,
    in numpy from the parameters (flax's GRUCell equations), the state never reset; with
    ``reward_by_action`` the one-hot previous action times the previous reward joins the input."""
    p = jax.tree.map(np.asarray, params["params"])
    enc = p["encoder"]
    obs_dense = enc["obs_encoder"]["MLP_0"]["Dense_0"]
    obs = np.maximum(inputs["obs"] @ obs_dense["kernel"] + obs_dense["bias"], 0.0)
    action = np.eye(num_actions + 1)[inputs["prev_action"]]
    x = np.concatenate([obs, action, inputs["prev_reward"][:, None], inputs["prev_done"][:, None]], axis=1)
    if reward_by_action:
        x = np.concatenate([x, action * inputs["prev_reward"][:, None]], axis=1)
    x = np.tanh(x @ enc["Dense_0"]["kernel"] + enc["Dense_0"]["bias"])  # the network's activation
    cell = p["core"]["cell"]
    h = np.zeros(cell["hr"]["kernel"].shape[0])
    logits = []
    for x_t in x:
        r = sigmoid(x_t @ cell["ir"]["kernel"] + cell["ir"]["bias"] + h @ cell["hr"]["kernel"])
        z = sigmoid(x_t @ cell["iz"]["kernel"] + cell["iz"]["bias"] + h @ cell["hz"]["kernel"])
        n = np.tanh(
            x_t @ cell["in"]["kernel"]
            + cell["in"]["bias"]
            + r * (h @ cell["hn"]["kernel"] + cell["hn"]["bias"])
        )
        h = (1.0 - z) * n + z * h
        head = p["head"]["logits"]
        logits.append(h @ head["kernel"] + head["bias"])
    return np.array(logits), h


@pytest.mark.parametrize("reward_by_action", [False, True])
def test_acting_and_replay_match_a_numpy_gru_that_never_resets_inside_a_trial(reward_by_action):
    cfg = bandit_config(
        "/tmp/unused", 2, "algo.trial.num_steps=12", f"algo.reward_by_action={reward_by_action}"
    )
    parts = rl2.make_parts(cfg)
    state = jax.jit(parts.algo.init)(jax.random.PRNGKey(0))
    net, env, params = parts.network, parts.env, parts.env_params
    tasks = jax.vmap(env.sample_task)(jax.random.split(jax.random.PRNGKey(1), 3))

    def policy(p, inputs, hidden, memory, key):
        return rl2.act(net, p, inputs, hidden, key)

    data, episodes, final_hidden = run_trials(
        env,
        params,
        policy,
        state.params,
        net.initial_hidden(),
        tasks,
        jnp.arange(3),
        jax.random.PRNGKey(2),
        12,
        "same",
    )
    assert int(episodes.count[0]) == 12  # every pull is an episode: 11 boundaries inside the trial
    inputs = rl2.trial_inputs(data, 2)
    dist, _ = rl2.replay(net, state.params, jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), inputs))
    for i in range(3):
        one = jax.tree.map(lambda x, i=i: np.asarray(x[i]), inputs)
        logits, h = numpy_gru_logits(state.params, one, 2, reward_by_action)
        np.testing.assert_allclose(np.asarray(dist.logits)[:, i], logits, atol=2e-5)
        np.testing.assert_allclose(np.asarray(final_hidden[i]), h, atol=2e-5)
        # A state reset at the episode boundaries would forget: compare with the numpy GRU run on the
        # last step alone.
        last = jax.tree.map(lambda x: x[-1:], one)
        assert not np.allclose(numpy_gru_logits(state.params, last, 2, reward_by_action)[1], h, atol=1e-3)
    # Every trial starts afresh: the first step's input is the same ("no action yet") in every trial.
    np.testing.assert_array_equal(np.asarray(inputs["prev_action"][:, 0]), [2, 2, 2])
    np.testing.assert_allclose(np.asarray(dist.logits)[0, 0], np.asarray(dist.logits)[0, 1], atol=1e-6)


def test_step_inputs_at_trial_and_episode_starts():
    from jaxmeta.trial import StepInputs

    def inputs(start, index):
        return StepInputs(
            obs=jnp.ones(1),
            prev_action=jnp.int32(1),
            prev_reward=jnp.float32(-1.0),
            episode_start=jnp.bool_(start),
            episode_index=jnp.int32(index),
            task_id=jnp.int32(0),
        )

    first = rl2.step_inputs(inputs(True, 0), 4)
    assert (
        int(first["prev_action"]) == 4 and float(first["prev_reward"]) == 0 and not bool(first["prev_done"])
    )
    boundary = rl2.step_inputs(inputs(True, 3), 4)  # a later episode's first step: the last one's end
    assert (
        int(boundary["prev_action"]) == 1
        and float(boundary["prev_reward"]) == -1
        and bool(boundary["prev_done"])
    )
    middle = rl2.step_inputs(inputs(False, 3), 4)
    assert not bool(middle["prev_done"])


def test_advantages_run_across_episode_ends_to_the_end_of_the_trial():
    rng = np.random.default_rng(0)
    steps, trials, gamma, lam = 9, 3, 0.9, 0.7
    rewards, values = rng.normal(size=(steps, trials)), rng.normal(size=(steps, trials))
    advantages, targets = rl2.trial_advantages(jnp.asarray(rewards), jnp.asarray(values), gamma, lam)
    for b in range(trials):
        expected, running = np.zeros(steps), 0.0
        for t in reversed(range(steps)):
            next_value = values[t + 1, b] if t + 1 < steps else 0.0  # nothing after the trial
            delta = rewards[t, b] + gamma * next_value - values[t, b]
            running = delta + gamma * lam * running
            expected[t] = running
        np.testing.assert_allclose(np.asarray(advantages)[:, b], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(targets), np.asarray(advantages) + values, rtol=1e-5, atol=1e-5)


def test_tiny_run_on_a_two_armed_bandit_beats_random_play(tmp_path):
    cfg = bandit_config(str(tmp_path / "run"), 60, "algo.learning_rate=0.01", "algo.gae_lambda=0.3")
    runner.run(cfg)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    total = summary["eval"]["total_return"]["mean"]
    # Random play earns 10 x E[p] = 5.0 (standard error ~0.07 over 500 tasks); a learnt policy that
    # sticks with an arm once it pays does better (greedy on the posterior mean: ~6.1; this run reached
    # 5.9 when written).
    assert total > 5.5, total


def test_regret_rewards_subtract_each_trials_best_arm():
    import envs_jax

    env, params = envs_jax.make("BernoulliBandit-v0", num_arms=3)
    probs = np.array([[0.1, 0.7, 0.3], [0.9, 0.2, 0.4], [0.5, 0.5, 0.6]], np.float32)
    tasks = env.sample_task(jax.random.PRNGKey(0), params).replace(probs=jnp.asarray(probs))
    task_ids = jnp.array([2, 0, 0, 1])  # trial b plays task task_ids[b]
    rewards = jnp.asarray(np.random.default_rng(0).integers(0, 2, (5, 4)), jnp.float32)  # [T, B]
    regret = rl2.regret_rewards(env, params, rewards, tasks, task_ids)
    best = np.array([0.6, 0.7, 0.7, 0.9])
    np.testing.assert_allclose(np.asarray(regret), np.asarray(rewards) - best[None, :], rtol=1e-6)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["env.id=Gridworld-v0", "algo.trial.num_steps=50"], "shorter than one episode"),
        (["env.id=BernoulliBandit-v0", "env.num_arms=1"], "num_arms"),
        (["env.id=BernoulliBandit-v0", "algo.trial.num_steps=0"], "num_steps"),
        (["env.id=BernoulliBandit-v0", "algo.trial.batch_size=30"], "num_minibatches"),
        (["env.id=Gridworld-v0", "algo.regret_rewards=true"], "best expected reward"),
    ],
)
def test_bad_configs_are_refused_naming_the_key(args, needle):
    with pytest.raises(config.ConfigError, match=needle):
        config.load(None, ["algo.name=rl2", *args])


def test_a_bad_config_exits_2_in_one_line_writing_nothing(tmp_path):
    args = ["algo.name=rl2", f"run_dir={tmp_path / 'r'}", "env.id=Gridworld-v0", "algo.trial.num_steps=50"]
    proc = subprocess.run(
        [sys.executable, "-m", "jaxmeta.train", *args], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "shorter than one episode" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "r").exists()


def test_tiny_gridworld_run_on_a_fixed_task_set(tmp_path):
    from helpers import tiny_config

    cfg = tiny_config(
        "rl2",
        str(tmp_path / "run"),
        2,
        "env.size=5",
        "env.max_steps_in_episode=8",
        "algo.trial.num_steps=16",
        "algo.gru_size=16",
        "algo.features=16",
        "algo.obs_features=16",
        "algo.conv_channels=[8]",
        "algo.num_minibatches=2",
        "chunk_size=2",
    )
    runner.run(cfg)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    returns = summary["eval"]["episode_return"]["mean"]
    assert len(returns) == 2 and all(-1.0 <= r <= 1.0 for r in returns)
    assert "Bayes-optimal" in summary["references"]  # Gridworld's references reach the report

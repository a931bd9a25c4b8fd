"""PPO finetune baseline: GAE and the PPO loss against closed forms, per-task finetuning, training."""

import dataclasses
import functools
import json
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import tiny_config

from envs_jax.gridworld import GridworldTask
from jaxmeta import config, runner, trial
from jaxmeta import policy_gradient as ppo
from jaxmeta.algos import ppo_finetune

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def small_config(run_dir="/tmp/unused", *extra):
    return tiny_config(
        "ppo_finetune",
        run_dir,
        12,
        "env.size=5",
        "env.num_colors=3",
        "env.max_steps_in_episode=10",
        "algo.trial.num_steps=24",
        "algo.features=16",
        "algo.hidden=16",
        *extra,
    )


# ----------------------------------------------------------------------------- GAE and returns
def gae_reference(rewards, values, dones, last_value, gamma, lam):
    """Plain-Python GAE, one column at a time."""
    T, B = rewards.shape
    adv = np.zeros((T, B))
    for b in range(B):
        running = 0.0
        for t in reversed(range(T)):
            next_value = last_value[b] if t == T - 1 else values[t + 1, b]
            if dones[t, b]:
                next_value, running = 0.0, 0.0
            delta = rewards[t, b] + gamma * next_value - values[t, b]
            running = delta + gamma * lam * running
            adv[t, b] = running
    return adv


def test_gae_and_returns_match_a_python_loop():
    rng = np.random.default_rng(0)
    T, B, gamma, lam = 17, 5, 0.9, 0.8
    rewards = rng.normal(size=(T, B)).astype(np.float32)
    values = rng.normal(size=(T, B)).astype(np.float32)
    dones = rng.random((T, B)) < 0.25
    last_value = rng.normal(size=B).astype(np.float32)
    adv, targets = jax.jit(ppo.gae, static_argnums=(4, 5))(rewards, values, dones, last_value, gamma, lam)
    expected = gae_reference(rewards, values, dones, last_value, gamma, lam)
    np.testing.assert_allclose(adv, expected, atol=1e-5)
    np.testing.assert_allclose(targets, expected + values, atol=1e-5)

    # lambda = 1 with zero values: GAE is the discounted return-to-go; compare both with a loop.
    returns = ppo.discounted_returns(rewards, dones, gamma, last_value)
    reference = np.zeros((T, B))
    for b in range(B):
        g = last_value[b]
        for t in reversed(range(T)):
            g = rewards[t, b] + (0.0 if dones[t, b] else gamma * g)
            reference[t, b] = g
    np.testing.assert_allclose(returns, reference, atol=1e-5)
    one, _ = ppo.gae(rewards, np.zeros_like(values), dones, last_value, gamma, 1.0)
    np.testing.assert_allclose(one, reference, atol=1e-5)


def test_steps_of_an_episode_cut_off_by_the_trial_are_masked_for_the_critic():
    episode_index = jnp.array([[0, 0, 1, 1, 2, 2], [0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0]])
    done = jnp.array(
        [[0, 1, 0, 1, 0, 0], [0, 0, 1, 0, 0, 1], [0, 0, 0, 0, 0, 0]], bool
    )  # row 2: one episode, never ends
    nothing = dict.fromkeys(("obs", "next_obs", "action", "reward", "success", "task_id", "extras"))
    data = trial.TrialData(
        **nothing, terminated=done, truncated=jnp.zeros_like(done), episode_index=episode_index
    )
    expected = [[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]]
    np.testing.assert_array_equal(ppo_finetune.ended_in_trial(data), np.array(expected, bool))


# ----------------------------------------------------------------------------- the PPO loss
def test_clipped_loss_gradient_is_the_policy_gradient_and_clips():
    """d loss / d logits against the closed form ``-A (onehot(a) - softmax) / n`` (ratio 1),
    zero where the ratio is clipped in the direction the advantage pushes."""
    rng = np.random.default_rng(1)
    n, A = 12, 4
    logits = rng.normal(size=(n, A)).astype(np.float32)
    actions = rng.integers(0, A, n)
    adv = rng.normal(size=n).astype(np.float32)
    mask = np.arange(n) < 9  # three padded steps
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    log_p = np.log(probs[np.arange(n), actions])
    onehot = np.eye(A)[actions]

    @jax.jit
    def loss_and_grad(old_log_probs):
        def f(lg):
            return ppo.clipped_loss(
                lg, jnp.zeros(n), actions, old_log_probs, adv, jnp.zeros(n), mask, 0.2, 0.0, 0.0
            )[0]

        return jax.value_and_grad(f)(logits)

    def grad(old_log_probs):
        loss, g = loss_and_grad(old_log_probs.astype(np.float32))
        return np.asarray(g), float(loss)

    g, loss = grad(log_p)  # rho = 1: the clip is inactive
    expected = -(mask * adv)[:, None] * (onehot - probs) / mask.sum()
    np.testing.assert_allclose(g, expected, atol=1e-6)
    np.testing.assert_allclose(loss, -(adv * mask).sum() / mask.sum(), atol=1e-6)
    # positive advantage raises log pi(a): a small step against the gradient increases it
    step = logits - 0.1 * g
    new_log_p = step - np.log(np.exp(step).sum(-1, keepdims=True))
    up = new_log_p[np.arange(n), actions] > np.log(probs[np.arange(n), actions])
    assert np.all(up[mask & (adv > 0)]) and not np.any(up[mask & (adv < 0)])

    g, loss = grad(log_p - np.log(1.5))  # rho = 1.5 > 1 + eps
    # A > 0: min(1.5 A, 1.2 A) = 1.2 A, constant -> no gradient; A < 0: 1.5 A, gradient 1.5 A dlogp
    live = mask & (adv < 0)
    expected = -(live * 1.5 * adv)[:, None] * (onehot - probs) / mask.sum()
    np.testing.assert_allclose(g, expected, atol=1e-6)
    np.testing.assert_allclose(
        loss, -np.where(adv > 0, 1.2 * adv, 1.5 * adv)[mask].sum() / mask.sum(), atol=1e-5
    )


def test_value_and_entropy_terms():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(6, 3)).astype(np.float32)
    values, targets = rng.normal(size=(2, 6)).astype(np.float32)
    mask = np.array([1, 1, 1, 1, 0, 0], bool)
    actions = np.zeros(6, np.int32)
    old = np.asarray(jax.nn.log_softmax(logits))[:, 0]
    _, aux = ppo.clipped_loss(logits, values, actions, old, np.zeros(6), targets, mask, 0.2, 1.0, 1.0)
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(aux["value_loss"], ((values - targets) ** 2)[:4].mean(), atol=1e-6)
    np.testing.assert_allclose(aux["entropy"], (-(p * np.log(p)).sum(-1))[:4].mean(), atol=1e-6)


# ----------------------------------------------------------------------------- test-time finetuning
# A 2x2 grid is a bandit: the agent starts in the top-left corner (cell 0) with the
# blocks right of it (cell 1) and below it (cell 2). "up" and "left" leave it in place
# (same observation), "right" and "down" end the episode on one block or the other.
UP, DOWN, LEFT, RIGHT = 0, 1, 2, 3
BANDIT_TASKS, HORIZON, EPISODES = 32, 8, 5


def bandit_config(*extra):
    return small_config(
        "/tmp/unused",
        "env.size=2",
        "env.num_colors=2",
        f"env.max_steps_in_episode={HORIZON}",
        "algo.num_train_tasks=2",
        "algo.num_test_tasks=2",
        "algo.eval.num_tasks=2",
        "algo.finetune_learning_rate=0.03",
        "algo.entropy_coef=0.0",
        *extra,
    )


def bandit_tasks(goal_index):
    """Block 0 (right of the start) or block 1 (below it) is the goal."""
    n = len(goal_index)
    return GridworldTask(
        block_cells=jnp.tile(jnp.array([1, 2], jnp.int32), (n, 1)),
        block_colors=jnp.tile(jnp.array([0, 1], jnp.int32), (n, 1)),
        goal_index=jnp.asarray(goal_index, jnp.int32),
        agent_start=jnp.zeros(n, jnp.int32),
    )


@pytest.fixture(scope="module")
def bandit():
    parts = ppo_finetune.make_parts(bandit_config())
    goal_index = np.arange(BANDIT_TASKS) % 2
    params = jax.jit(parts.network.init)(jax.random.PRNGKey(0), jnp.zeros(parts.setup.env.obs_shape))
    # Uniform policy and a zero critic: zero the last layer of both heads.
    inner = dict(params["params"])
    for head in ("policy_head", "value_head"):
        inner[head] = {**inner[head], "Dense_1": jax.tree.map(jnp.zeros_like, inner[head]["Dense_1"])}
    tasks = bandit_tasks(goal_index)
    return SimpleNamespace(
        parts=parts,
        params={"params": inner},
        goal_index=goal_index,
        tasks=tasks,
        start_obs=parts.setup.env.reset_to_task(None, jax.tree.map(lambda x: x[0], tasks))[0],
        run=jax.jit(functools.partial(finetune_episodes, parts), static_argnums=3),  # shared: compiled once
    )


def finetune_episodes(parts, params, tasks, key, num_episodes):
    """``(returns [K, M], success [K, M], per-task params, stats)`` of the adaptation loop."""
    env, env_params = parts.setup.env, parts.setup.params
    out = ppo_finetune.finetune_episodes(
        parts.network,
        parts.finetune_optimizer,
        parts.settings,
        env,
        env_params,
        params,
        tasks,
        key,
        num_episodes,
    )
    return out.returns, out.success, out.state[0], out.stats


def expected_return(probs, goal_action, trap_action, horizon):
    """Closed form: each step ends on the goal w.p. p_g, on the trap w.p. p_t, else stays."""
    p_goal, p_trap = probs[goal_action], probs[trap_action]
    p_stay = 1.0 - p_goal - p_trap
    return (p_goal - p_trap) * (1.0 - p_stay**horizon) / (1.0 - p_stay)


def test_finetuning_adapts_each_task_toward_its_goal(bandit):
    b = bandit
    returns, success, task_params, _ = b.run(b.params, b.tasks, jax.random.PRNGKey(1), EPISODES)
    returns, success = np.asarray(returns), np.asarray(success)
    np.testing.assert_array_equal(success, returns == 1.0)  # reaching a block ends the episode
    probs0 = np.asarray(jax.nn.softmax(b.parts.network.apply(b.params, b.start_obs)[0]))
    np.testing.assert_allclose(probs0, 0.25, atol=1e-6)  # uniform to start: expected return 0
    logits = jax.vmap(lambda p: b.parts.network.apply(p, b.start_obs)[0])(task_params)
    probs = np.asarray(jax.nn.softmax(logits))
    goal_action = np.where(b.goal_index == 0, RIGHT, DOWN)
    trap_action = np.where(b.goal_index == 0, DOWN, RIGHT)
    pairs = list(zip(goal_action, trap_action, strict=True))
    before = np.array([expected_return(probs0, g, t, HORIZON) for g, t in pairs])
    after = np.array([expected_return(p, g, t, HORIZON) for p, (g, t) in zip(probs, pairs, strict=True)])
    np.testing.assert_allclose(before, 0.0, atol=1e-6)
    # Each task learnt from its own episodes: the goal's direction differs between tasks.
    assert after.mean() > 0.3, after
    assert (after > 0).mean() >= 0.8, after
    p_goal = probs[np.arange(BANDIT_TASKS), goal_action]
    p_trap = probs[np.arange(BANDIT_TASKS), trap_action]
    assert (p_goal > p_trap).mean() >= 0.8
    # ... and it shows in the returns actually obtained (first episode: uniform policy, mean 0).
    assert returns[-2:].mean() > returns[0].mean() + 0.2, returns.mean(1)


def test_finetuning_one_task_leaves_the_others_alone(bandit):
    """Flip task 0's goal: task 0's episodes and weights change, every other task's stay bit-identical."""
    b = bandit
    key = jax.random.PRNGKey(2)
    returns, _, task_params, _ = b.run(b.params, b.tasks, key, EPISODES)
    flipped = b.goal_index.copy()
    flipped[0] = 1 - flipped[0]
    returns_f, _, task_params_f, _ = b.run(b.params, bandit_tasks(flipped), key, EPISODES)
    returns, returns_f = np.asarray(returns), np.asarray(returns_f)
    np.testing.assert_array_equal(returns[:, 1:], returns_f[:, 1:])
    assert not np.array_equal(returns[:, 0], returns_f[:, 0])
    for a, f in zip(jax.tree.leaves(task_params), jax.tree.leaves(task_params_f), strict=True):
        np.testing.assert_array_equal(np.asarray(a)[1:], np.asarray(f)[1:])
        assert not np.allclose(a[0], f[0])


def test_steps_after_the_episode_change_nothing(bandit):
    """The episode "up, left, down (trap)" then 5 padded steps: what the padding holds is irrelevant."""
    b = bandit
    obs = np.repeat(np.asarray(b.start_obs)[None], HORIZON, 0)
    valid = np.arange(HORIZON) < 3
    rng = np.random.default_rng(5)

    def episode(pad_obs, pad_action, pad_reward, pad_done):
        def mix(real, pad):
            return jnp.asarray(np.where(valid.reshape((-1,) + (1,) * (real.ndim - 1)), real, pad))

        return trial.TrialData(
            obs=mix(obs, pad_obs),
            next_obs=mix(obs, pad_obs),
            action=mix(np.array([UP, LEFT, DOWN, 0, 0, 0, 0, 0]), pad_action),
            reward=mix(np.array([0, 0, -1, 0, 0, 0, 0, 0], np.float32), pad_reward),
            terminated=mix(np.array([0, 0, 1, 0, 0, 0, 0, 0], bool), pad_done),
            truncated=jnp.zeros(HORIZON, bool),
            success=jnp.zeros(HORIZON, bool),
            task_id=jnp.zeros(HORIZON, jnp.int32),
            episode_index=jnp.asarray(1 - valid, jnp.int32),
            extras=None,
        )

    finetune = jax.jit(
        functools.partial(
            ppo_finetune.finetune, b.parts.network, b.parts.finetune_optimizer, b.parts.settings
        )
    )
    opt = b.parts.finetune_optimizer.init(b.params)
    zeros = episode(np.zeros_like(obs), np.zeros(HORIZON, int), np.zeros(HORIZON), np.zeros(HORIZON, bool))
    garbage = episode(
        rng.random(obs.shape).astype(np.float32),
        rng.integers(0, 4, HORIZON),
        rng.choice([-1.0, 1.0], HORIZON).astype(np.float32),
        rng.random(HORIZON) < 0.5,
    )
    out, _, stats = finetune(b.params, opt, zeros, jnp.asarray(valid))
    out_g, _, _ = finetune(b.params, opt, garbage, jnp.asarray(valid))
    for x, g in zip(jax.tree.leaves(out), jax.tree.leaves(out_g), strict=True):
        np.testing.assert_allclose(x, g, atol=1e-6)
    # The failure pushed the trap's probability down (all advantages negative: zero critic).
    logits = b.parts.network.apply(out, b.start_obs)[0]
    probs = np.asarray(jax.nn.softmax(logits))
    assert probs[DOWN] < 0.25 and probs[RIGHT] > 0.25, probs
    assert float(stats["kl"]) > 0


# ----------------------------------------------------------------------------- training and configs
def test_tiny_training_run_loss_falls(tmp_path):
    cfg = small_config(
        tmp_path / "run", "num_updates=24", "checkpoint_every=24", "eval_every=24", "algo.learning_rate=3e-3"
    )
    runner.run(cfg, log=lambda *_: None)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r["kind"] == "train"]
    assert np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.05
    evals = [r for r in rows if r["kind"] == "eval"]
    assert [r["update"] for r in evals] == [0, 24]
    assert len(evals[-1]["eval/episode_return"]) == 2 and len(evals[-1]["eval/episode_success"]) == 2
    assert np.isclose(evals[-1]["eval/total_return"], sum(evals[-1]["eval/episode_return"]), atol=1e-5)
    assert all(np.isfinite(r["value_loss"]) for r in rows if r["kind"] == "train")


@pytest.mark.parametrize("blocks", [2, 3])
def test_paper_configs_validate(blocks):
    cfg = config.load(str(CONFIGS / f"ppo_finetune_x{blocks}.yaml"))
    assert cfg.algo.name == "ppo_finetune" and cfg.env.num_blocks == blocks and cfg.seeds == 3
    memory = config.load(str(CONFIGS / "memory_x2.yaml"))
    # The same trials, training tasks and evaluation protocol; only how often it evaluates differs.
    assert (cfg.algo.trial, cfg.algo.eval, cfg.env) == (
        memory.algo.trial,
        memory.algo.eval,
        dataclasses.replace(memory.env, num_blocks=blocks),
    )


@pytest.mark.parametrize(
    "override, message",
    [
        ("algo.eval.num_tasks=9", "algo.eval.num_tasks"),
        ("algo.gae_lambda=1.5", "algo.gae_lambda"),
        ("algo.ppo_epochs=0", "algo.ppo_epochs"),
        ("algo.finetune_learning_rate=0", "algo.finetune_learning_rate"),
    ],
)
def test_bad_settings_are_config_errors(override, message):
    with pytest.raises(config.ConfigError, match=message):
        small_config("/tmp/unused", override)

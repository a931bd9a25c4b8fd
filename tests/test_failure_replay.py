"""The memory-bank agent: network masking and invariances, the test protocol, training."""

import collections
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import TINY_MEMORY_AGENT, TINY_MEMORY_RUN, tiny_config

import envs_jax
from envs_jax.gridworld import EnvState
from jaxmeta import config, runner, trial
from jaxmeta.algos import failure_replay
from jaxmeta.memory import failure_bank
from jaxmeta.nets.attention import GRUGate
from jaxmeta.nets.failure_memory import FailureMemoryPolicy

W, C, N, L = 5, 3, 4, 3


def small_config(run_dir="/tmp/unused", *extra):
    return tiny_config(
        "failure_replay",
        run_dir,
        12,
        f"env.size={W}",
        f"env.num_colors={C}",
        f"algo.bank_capacity={N}",
        f"algo.bank_length={L}",
        *TINY_MEMORY_AGENT,
        *extra,
    )


@pytest.fixture(scope="module")
def net_and_params():
    net = FailureMemoryPolicy(
        num_actions=4, bank_length=L, features=16, num_heads=2, hidden=16, temporal=True
    )
    key = jax.random.PRNGKey(0)
    bank = random_bank(key)
    params = jax.jit(net.init)(key, bank["obs"][0, 0], *bank_args(bank), jnp.int32(4), jnp.float32(0))
    return net, params


def random_bank(key):
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "obs": jax.random.bernoulli(k1, 0.2, (N, L, W, W, 1 + C)).astype(jnp.float32),
        "action": jax.random.randint(k2, (N, L), 0, 4),
        "reward": jax.random.choice(k3, jnp.array([-1.0, 0.0, 1.0]), (N, L)),
        "step_mask": jnp.ones((N, L), bool),
        "slot_mask": jnp.ones((N,), bool),
    }


def bank_args(bank):
    steps = {k: bank[k] for k in ("obs", "action", "reward")}
    return steps, bank["step_mask"], bank["slot_mask"]


@functools.partial(jax.jit, static_argnums=0)  # one program, not one per eager op
def logits(net, params, obs, bank):
    return net.apply(params, obs, *bank_args(bank), jnp.int32(4), jnp.float32(0))


def test_padding_slots_and_steps_never_change_the_output(net_and_params):
    net, params = net_and_params
    bank = random_bank(jax.random.PRNGKey(1))
    obs = bank["obs"][0, 0]
    bank["slot_mask"] = jnp.array([True, False, True, False])
    bank["step_mask"] = jnp.array([[False, True, True], [True, True, True], [False, False, True], [True] * 3])
    garbage = random_bank(jax.random.PRNGKey(2))
    other = dict(bank)
    keep_step = bank["step_mask"] & bank["slot_mask"][:, None]
    for name in ("obs", "action", "reward"):
        shape = (N, L) + (1,) * (bank[name].ndim - 2)
        other[name] = jnp.where(keep_step.reshape(shape), bank[name], garbage[name])
    np.testing.assert_allclose(logits(net, params, obs, bank), logits(net, params, obs, other), atol=1e-6)
    # and the garbage does change the output when it is not masked
    unmasked = {**other, "slot_mask": jnp.ones(N, bool), "step_mask": jnp.ones((N, L), bool)}
    assert not np.allclose(logits(net, params, obs, bank), logits(net, params, obs, unmasked), atol=1e-4)


def test_empty_bank_gives_zero_memory(net_and_params):
    net, params = net_and_params
    bank = random_bank(jax.random.PRNGKey(3))
    episodes = net.apply(params, *bank_args(bank)[:2], method=FailureMemoryPolicy.encode_bank)
    query = net.apply(params, bank["obs"][0, 0], method=FailureMemoryPolicy.query)
    m_empty = net.apply(params, query, episodes, jnp.zeros(N, bool), method=FailureMemoryPolicy.read_memory)
    assert np.all(np.asarray(m_empty) == 0.0)
    m_full = net.apply(params, query, episodes, jnp.ones(N, bool), method=FailureMemoryPolicy.read_memory)
    assert np.abs(np.asarray(m_full)).sum() > 0


def test_bank_slot_order_does_not_matter(net_and_params):
    net, params = net_and_params
    bank = random_bank(jax.random.PRNGKey(4))
    bank["slot_mask"] = jnp.array([True, True, False, True])
    obs = random_bank(jax.random.PRNGKey(5))["obs"][0, 0]
    perm = np.array([3, 0, 2, 1])
    permuted = {k: v[perm] for k, v in bank.items()}
    np.testing.assert_allclose(logits(net, params, obs, bank), logits(net, params, obs, permuted), atol=1e-5)


def test_gru_gate_matches_the_formula():
    gate = GRUGate(gate_bias=2.0)
    x, y = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 8))
    params = gate.init(jax.random.PRNGKey(1), x, y)["params"]

    def dense(name, v):
        p = params[name]
        return np.asarray(v) @ np.asarray(p["kernel"]) + (np.asarray(p["bias"]) if "bias" in p else 0.0)

    def sigmoid(v):
        return 1.0 / (1.0 + np.exp(-v))

    r = sigmoid(dense("w_r", y) + dense("u_r", x))
    z = sigmoid(dense("w_z", y) + dense("u_z", x) - 2.0)
    h = np.tanh(dense("w_g", y) + dense("u_g", r * np.asarray(x)))
    expected = (1 - z) * np.asarray(x) + z * h
    np.testing.assert_allclose(gate.apply({"params": params}, x, y), expected, atol=1e-5)


@pytest.mark.parametrize("temporal", [False, True])
def test_acting_and_training_compute_the_same_policy(temporal):
    """The logits trained on (whole trials at once) are those the agent acted with (step by step)."""
    cfg = small_config("/tmp/unused", f"algo.temporal={str(temporal).lower()}")
    parts = failure_replay.make_parts(cfg)
    state = jax.jit(parts.algo.init)(jax.random.PRNGKey(0))
    # Fill the banks a little so memory matters: the failures of two batches of training trials, written
    # as an update writes them (without its gradient step, which this test does not need to compile).
    collect = functools.partial(failure_replay.collect, parts.network, parts.setup, cfg.algo)

    @jax.jit
    def write_failures(state, key):
        data, episodes, pool = collect(state.replace(key=key))
        pool_task, steps, step_mask, failed = trial.failures_for_bank(
            data, episodes, cfg.algo.bank_length, cfg.algo.max_episodes_per_trial
        )
        return state.replace(
            bank=failure_bank.add(state.bank, pool.task_ids[pool_task], steps, step_mask, failed)
        )

    for key in jax.random.split(jax.random.PRNGKey(1), 2):
        state = write_failures(state, key)
    assert int(failure_bank.size(state.bank).sum()) > 0
    setup = parts.setup
    network = parts.network
    memory = jax.jit(functools.partial(failure_replay.encode_banks, network))(state.params, state.bank)
    data, _, _ = jax.jit(
        lambda key: trial.run_trials(
            setup.env,
            setup.params,
            failure_replay.policy_fn(network, greedy=True),
            state.params,
            failure_replay.empty_window(network),
            setup.train_tasks,
            jnp.arange(6) % 12,
            key,
            40,
            "diff",
            memory=memory,
        )
    )(jax.random.PRNGKey(7))
    assert int(data.episode_index[:, -1].max()) >= 2  # several episodes, windows of 4 get full
    logits = functools.partial(failure_replay.trial_logits, network)
    recomputed = jax.jit(jax.vmap(logits, in_axes=(None, 0, None)))(state.params, data, memory)
    np.testing.assert_array_equal(np.argmax(recomputed, -1), np.asarray(data.action))


def test_behaviour_cloning_labels_are_the_expert_actions():
    cfg = small_config()
    parts = failure_replay.make_parts(cfg)
    state = jax.jit(parts.algo.init)(jax.random.PRNGKey(0))
    data, _, pool = jax.jit(functools.partial(failure_replay.collect, parts.network, parts.setup, cfg.algo))(
        state
    )
    env, params, tasks = parts.setup.env, parts.setup.params, parts.setup.train_tasks
    agent_cells = np.asarray(data.obs[..., 0]).reshape(*data.action.shape, -1).argmax(-1)
    pool_ids = np.asarray(pool.task_ids)
    assert len(set(pool_ids.tolist())) == len(pool_ids) == 5  # drawn without replacement

    def expert(task_id, cell):
        task = jax.tree.map(lambda x: x[task_id], tasks)  # the full training set, not the pool
        return env.expert_action(EnvState(agent_cell=cell, task=task, time=jnp.int32(0)), params)

    expected = jax.vmap(jax.vmap(expert))(
        jnp.asarray(pool_ids[np.asarray(data.task_id)]), jnp.asarray(agent_cells)
    )
    np.testing.assert_array_equal(np.asarray(data.extras), np.asarray(expected))


def test_an_update_stores_each_failure_in_its_own_training_tasks_bank():
    """Bookkeeping through the task pool, checked against a plain-Python replay of the trials."""
    cfg = small_config()
    parts = failure_replay.make_parts(cfg)
    state = jax.jit(parts.algo.init)(jax.random.PRNGKey(3))
    data, _, pool = jax.jit(functools.partial(failure_replay.collect, parts.network, parts.setup, cfg.algo))(
        state
    )
    new_state, _ = jax.jit(parts.algo.update)(state)
    pool_ids = np.asarray(pool.task_ids)
    # Which training task failed how often: episodes that ended (done) without success.
    expected = collections.Counter()
    done, success, task, index = (
        np.asarray(x) for x in (data.done, data.success, data.task_id, data.episode_index)
    )
    for row in range(done.shape[0]):
        for t in range(done.shape[1]):
            stored_episode = index[row, t] < cfg.algo.max_episodes_per_trial
            if done[row, t] and not success[row, t] and stored_episode:
                expected[int(pool_ids[task[row, t]])] += 1
    assert sum(expected.values()) > 0, "the untrained policy should fail somewhere"
    stored = np.asarray(failure_bank.size(new_state.bank))
    for task_id in range(cfg.algo.num_train_tasks):
        assert stored[task_id] == min(expected[task_id], N), task_id


def searcher_policy(env, env_params):
    """Scripted Bayes-optimal searcher: walks to block number (failures so far), avoiding the others."""

    def policy(params, inputs, carry, memory, key):
        failures, tasks = memory
        task = jax.tree.map(lambda x: x[inputs.task_id], tasks)
        target = jnp.minimum(failures[inputs.task_id], env.num_blocks - 1)
        cell = jnp.argmax(inputs.obs[..., 0].reshape(-1))
        state = EnvState(agent_cell=cell, task=task.replace(goal_index=target), time=jnp.int32(0))
        return env.expert_action(state, env_params), carry

    return policy


@pytest.mark.parametrize("length", [1, 2])
def test_protocol_adds_only_failures_and_keeps_the_last_frames(length):
    env, env_params = envs_jax.make("Gridworld-v0", size=6, num_blocks=3, num_colors=4)
    tasks = envs_jax.make_task_set(env, jax.random.PRNGKey(0), 24, env_params)
    step_example = {"obs": jnp.zeros(env.obs_shape), "action": jnp.int32(0), "reward": jnp.float32(0)}
    bank = failure_bank.init(24, 4, length, step_example)

    def write_failures(bank, data, episodes):
        return failure_bank.add(bank, *trial.failures_for_bank(data, episodes, length, 1)), None

    out = jax.jit(
        lambda key, bank: trial.run_adaptation(
            env,
            env_params,
            searcher_policy(env, env_params),
            tasks,
            key,
            5,
            bank,
            act=lambda b: (None, (failure_bank.size(b), tasks)),
            adapt=write_failures,
        )
    )(jax.random.PRNGKey(1), bank)
    returns, success, bank = out.returns, out.success, out.state
    goal = np.asarray(tasks.goal_index)
    episode = np.arange(5)[:, None]
    # Independent reference: block k is tried in episode k; everything before the goal fails.
    np.testing.assert_array_equal(np.asarray(returns), np.where(episode < goal, -1.0, 1.0))
    np.testing.assert_array_equal(np.asarray(success), episode >= goal)
    np.testing.assert_allclose(
        np.asarray(returns).mean(1), envs_jax.optimal_returns(3, 5), atol=0.5
    )  # goals are uniform, 24 tasks
    steps, step_mask, slot_mask = failure_bank.read(bank, jnp.arange(24))
    np.testing.assert_array_equal(np.asarray(slot_mask).sum(1), goal)  # only the failures were stored
    cells = np.asarray(tasks.block_cells)
    for task in range(24):
        for slot in range(goal[task]):
            last = np.asarray(steps["obs"][task, slot, -1])
            agent_cell = last[..., 0].reshape(-1).argmax()
            assert agent_cell == cells[task, slot]  # the agent on trap number `slot`, oldest first
            assert last[..., 1:].reshape(-1, 4)[agent_cell].sum() == 1  # ... and that block drawn
            assert float(steps["reward"][task, slot, -1]) == -1.0
            assert bool(step_mask[task, slot, -1])


def test_tiny_training_run_loss_falls(tmp_path):
    cfg = tiny_config("failure_replay", tmp_path / "run", 24, *TINY_MEMORY_RUN)
    runner.run(cfg, log=lambda *_: None)
    import json

    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r["kind"] == "train"]
    assert np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.05
    fills = [r["bank_fill"] for r in rows if r["kind"] == "train"]
    assert fills[-1] > fills[0]


@pytest.mark.parametrize(
    "override, message",
    [
        ("algo.bank_length=11", "algo.bank_length"),
        ("algo.bank_capacity=0", "algo.bank_capacity"),
        ("algo.trial.reset_mode=other", "algo.trial.reset_mode"),
        ("algo.num_heads=3", "algo.num_heads"),
    ],
)
def test_bad_settings_are_config_errors(override, message):
    with pytest.raises(config.ConfigError, match=message):
        small_config("/tmp/unused", override)
    with pytest.raises(config.ConfigError, match="unknown method"):
        config.load(None, ["algo.name=memory_agent"])


def test_the_trial_gif_draws_every_step_of_every_episode(tmp_path):
    cfg = small_config()
    parts = failure_replay.make_parts(cfg)
    env, env_params = parts.setup.env, parts.setup.params
    params = jax.jit(parts.algo.init)(jax.random.PRNGKey(0)).params
    task = jax.tree.map(lambda x: x[:1], parts.setup.test_tasks)
    frames, captions = failure_replay.trial_frames(parts.network, env, env_params, params, task, 2, N)
    out = jax.jit(
        lambda p: failure_replay.evaluation_trials(
            parts.network, env, env_params, p, task, jax.random.PRNGKey(0), 2, N, keep_data=True
        )
    )(params)
    steps = (np.asarray(out.data.episode_index)[:, 0] == 0).sum(-1)  # [K]: steps of each episode
    assert len(frames) == len(captions) == int(steps.sum()) + 3 * 2  # every step, the end held 3 frames
    start = env.reset_to_task(None, jax.tree.map(lambda x: x[0], task))[1]
    np.testing.assert_array_equal(frames[0], np.asarray(env.render(start, env_params)))
    assert captions[0] == "episode 1/2, bank: 0 failures, step 0"
    held = int(failure_bank.size(jax.tree.map(lambda x: x[1], out.observed))[0])  # after episode 1
    assert captions[-1].startswith(f"episode 2/2, bank: {held} failure")
    # Each episode's last frames say how it ended: a Gridworld episode ends at the goal (+1), on a trap
    # (-1) or at the time limit (0).
    for k in range(2):
        ending = {1.0: "goal, +1", -1.0: "trap, -1", 0.0: "time limit, +0"}[float(out.returns[k, 0])]
        last = int(steps[: k + 1].sum()) + 3 * (k + 1) - 1
        assert captions[last].endswith(f"step {steps[k]}: {ending}"), captions[last]
    path = failure_replay.animate_trial(
        parts.network, env, env_params, params, task, 2, N, tmp_path / "t.gif"
    )
    assert path.stat().st_size > 0

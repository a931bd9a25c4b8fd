"""Host environments behind io_callback: the adapter against the numpy env stepped by hand, and the
runner's seed-by-seed path (a method on a host env trains, checkpoints and resumes)."""

import json
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs_jax
from envs_jax.host import HostEnvVmapError, NumpyChain
from jaxmeta import config, rollouts, runner

LENGTH, MAX_STEPS = 4, 6


def scripted_policy(params, obs, first, carry, key):
    """Right twice, then left, then right forever: reaches the goal, sometimes times out."""
    t = carry
    actions = jnp.where((t % 4) == 2, 0, 1) * jnp.ones(obs.shape[0], jnp.int32)
    actions = actions.at[0].set(0)  # env 0 only ever goes left: it times out
    return actions, t + 1, {}


def test_rollout_on_the_host_env_matches_the_numpy_env_stepped_by_hand():
    env, params = envs_jax.make("NumpyChain-host-v0", length=LENGTH, max_steps=MAX_STEPS)

    @jax.jit
    def run(key):
        runner_state = rollouts.start(env, params, key, 3)
        _, _, transitions = rollouts.rollout(env, params, runner_state, scripted_policy, None, key, 15, 0)
        return transitions

    transitions = jax.tree.map(np.asarray, run(jax.random.PRNGKey(0)))
    # The reference: the same numpy env, stepped and reset by hand.
    chain = NumpyChain(3, LENGTH, MAX_STEPS)
    obs = chain.reset(np.zeros(3, np.uint32), np.ones(3, bool))
    for t in range(15):
        actions = np.where(t % 4 == 2, 0, 1) * np.ones(3, np.int32)
        actions[0] = 0
        np.testing.assert_array_equal(transitions.obs[t], obs)
        np.testing.assert_array_equal(transitions.action[t], actions)
        next_obs, reward, terminated, truncated = chain.step(actions)
        np.testing.assert_array_equal(transitions.next_obs[t], next_obs)
        np.testing.assert_allclose(transitions.reward[t], reward)
        np.testing.assert_array_equal(transitions.terminated[t], terminated)
        np.testing.assert_array_equal(transitions.truncated[t], truncated)
        obs = chain.reset(np.zeros(3, np.uint32), terminated | truncated)
    assert transitions.terminated.any() and transitions.truncated[:, 0].any()


def test_only_the_environments_that_ended_are_reset():
    calls = []

    class CountingChain(NumpyChain):
        def reset(self, seeds, mask, tasks=None):
            calls.append(np.asarray(mask).copy())
            return super().reset(seeds, mask, tasks)

    from envs_jax.host import HostEnv
    from envs_jax.host.toy import ChainParams

    gymnax_spaces = envs_jax.make("NumpyChain-host-v0", length=LENGTH)[0]
    env = HostEnv(
        "CountingChain",
        lambda n: CountingChain(n, LENGTH, MAX_STEPS),
        gymnax_spaces.observation_space(),
        gymnax_spaces.action_space(),
        ChainParams(LENGTH, MAX_STEPS),
    )
    params = env.default_params

    @jax.jit
    def run(key):
        runner_state = rollouts.start(env, params, key, 3)
        return rollouts.rollout(env, params, runner_state, scripted_policy, None, key, 10, 0)[2]

    transitions = run(jax.random.PRNGKey(1))
    done = np.asarray(transitions.done)
    assert calls[0].all()  # the start
    # A reset after each step where some episode ended, of exactly the envs that ended; none otherwise.
    resets = np.array(calls[1:])
    np.testing.assert_array_equal(resets, done[done.any(axis=1)])
    assert done.any() and not done.all()


def chain_env(name, batch_class):
    from envs_jax.host import HostEnv
    from envs_jax.host.toy import ChainParams

    spaces_of = envs_jax.make("NumpyChain-host-v0", length=LENGTH)[0]
    return HostEnv(
        name,
        lambda n: batch_class(n, LENGTH, MAX_STEPS),
        spaces_of.observation_space(),
        spaces_of.action_space(),
        ChainParams(LENGTH, MAX_STEPS),
    )


def test_tasks_reach_the_host_batch_as_numpy_arrays():
    seen = []

    class TaskChain(NumpyChain):
        def reset(self, seeds, mask, tasks=None):
            seen.append(tasks)
            return super().reset(seeds, mask, tasks)

    env = chain_env("TaskChain", TaskChain)
    params = env.default_params
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    tasks = {"level": jnp.array([4, 5, 6], jnp.int32), "goal": jnp.ones((3, 2), jnp.float32)}

    @jax.jit
    def run(keys, tasks):
        _, state = env.reset(keys, params, tasks)
        next_obs, state, *_ = env.step(keys, state, jnp.ones(3, jnp.int32), params)
        env.reset_where(jnp.array([True, False, True]), keys, next_obs, state, params)
        return state.handle

    jax.block_until_ready(run(keys, tasks))
    assert len(seen) == 2 and seen[1] is None  # the second reset was given no tasks
    assert set(seen[0]) == {"level", "goal"}
    np.testing.assert_array_equal(seen[0]["level"], [4, 5, 6])
    assert isinstance(np.asarray(seen[0]["goal"]), np.ndarray) and seen[0]["goal"].shape == (3, 2)


def test_an_error_on_the_host_names_the_env_the_call_and_the_step():
    class BrokenChain(NumpyChain):
        def step(self, actions):
            if self.time.max() >= 2:
                raise RuntimeError("the simulator fell over")
            return super().step(actions)

    env = chain_env("BrokenChain", BrokenChain)
    params = env.default_params

    @jax.jit
    def run(key):
        runner_state = rollouts.start(env, params, key, 2)
        return rollouts.rollout(env, params, runner_state, scripted_policy, None, key, 5, 0)[2]

    with pytest.raises(
        Exception,
        match=r"BrokenChain failed in step \(host batch \d+, after 2 steps\): "
        r"RuntimeError: the simulator fell over",
    ):
        jax.block_until_ready(run(jax.random.PRNGKey(0)))
    # Outside a callback the error is the adapter's own, chained to the host's.
    from envs_jax.host.adapter import HostEnvError

    handle, _, _ = env._host_reset(0, np.zeros((2, 0), np.uint8), np.ones(2, bool), np.zeros(2, np.uint32))
    env._host_step(handle, np.zeros((2, 0), np.uint8), np.ones(2, np.int32))
    env._host_step(handle, np.zeros((2, 0), np.uint8), np.ones(2, np.int32))
    with pytest.raises(HostEnvError, match="after 2 steps") as caught:
        env._host_step(handle, np.zeros((2, 0), np.uint8), np.ones(2, np.int32))
    assert isinstance(caught.value.__cause__, RuntimeError)


def test_vmapping_a_host_env_is_refused_in_one_clear_error():
    env, params = envs_jax.make("NumpyChain-host-v0")

    def start(key):
        return rollouts.start(env, params, key, 2).obs

    with pytest.raises(HostEnvVmapError, match="cannot be vmapped"):
        jax.vmap(start)(jax.random.split(jax.random.PRNGKey(0), 2))


def test_snapshots_restore_the_host_state():
    chain = NumpyChain(2, LENGTH, MAX_STEPS)
    chain.reset(np.zeros(2, np.uint32), np.ones(2, bool))
    chain.step(np.array([1, 1]))
    snapshot = chain.get_state()
    other = NumpyChain(2, LENGTH, MAX_STEPS)
    other.set_state(snapshot)
    np.testing.assert_array_equal(other.observe(), chain.observe())
    np.testing.assert_array_equal(other.step(np.array([1, 0]))[0], chain.step(np.array([1, 0]))[0])


def test_the_fused_step_and_reset_is_one_host_call_and_equals_step_then_reset_where():
    from envs_jax.vector import step_and_reset

    env, params = envs_jax.make("NumpyChain-host-v0", length=LENGTH, max_steps=MAX_STEPS)
    actions = jnp.array([[1, 1, 0], [1, 1, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1], [1, 1, 1]], jnp.int32)

    def run(fused, key):
        keys = jax.random.split(key, 3)
        obs, state = env.reset(keys, params)
        seen = []
        for a in actions:
            if fused:
                next_obs, obs, state, reward, terminated, truncated, _ = step_and_reset(
                    env, keys, keys, state, a, params
                )
            else:
                next_obs, state, reward, terminated, truncated, _ = env.step(keys, state, a, params)
                obs, state = env.reset_where(terminated | truncated, keys, next_obs, state, params)
            seen.append((next_obs, obs, reward, terminated, truncated))
        return seen

    fused, separate = jax.jit(lambda k: run(True, k)), jax.jit(lambda k: run(False, k))
    seen = fused(jax.random.key(0))
    jax.tree.map(np.testing.assert_array_equal, seen, separate(jax.random.key(0)))
    assert np.asarray([step[3] for step in seen]).any()  # episodes ended (and were reset) on the way
    # One host call per step (plus the first reset) instead of two.
    calls = [f.lower(jax.random.key(0)).as_text().count("callback") for f in (fused, separate)]
    assert calls == [1 + len(actions), 1 + 2 * len(actions)]


def test_evicted_host_batches_are_reused_by_new_batches_of_their_size_and_start_afresh():
    from envs_jax.host import HostEnv
    from envs_jax.host.adapter import MAX_BATCHES, MAX_SPARES
    from envs_jax.host.toy import ChainParams

    built = []

    def make_batch(num_envs):
        built.append(num_envs)
        return NumpyChain(num_envs, LENGTH, MAX_STEPS)

    spaces_env = envs_jax.make("NumpyChain-host-v0", length=LENGTH)[0]
    env = HostEnv(
        "Chain",
        make_batch,
        spaces_env.observation_space(),
        spaces_env.action_space(),
        ChainParams(LENGTH, MAX_STEPS),
    )
    params = env.default_params

    @jax.jit
    def walk_right(key):  # a new host batch each call (handle 0), two steps right
        obs, state = env.reset(jax.random.split(key, 2), params)
        for _ in range(2):
            obs, state, *_ = env.step(jax.random.split(key, 2), state, jnp.ones(2, jnp.int32), params)
        return obs

    calls = MAX_BATCHES + 3
    observations = [np.asarray(walk_right(jax.random.PRNGKey(i))) for i in range(calls)]
    # Every call saw a batch that started afresh, reused or not (reference: a new NumpyChain by hand).
    reference = NumpyChain(2, LENGTH, MAX_STEPS)
    reference.reset(np.zeros(2, np.uint32), np.ones(2, bool))
    for _ in range(2):
        expected = reference.step(np.ones(2, np.int32))[0]
    for obs in observations:
        np.testing.assert_array_equal(obs, expected)
    # The first MAX_BATCHES + 1 calls built batches; after that, each new batch is an evicted one.
    assert len(built) == MAX_BATCHES + 1 and MAX_SPARES >= 1


# ----------------------------------------------------------------------------- the runner's path
PPO_ON_HOST = [
    "algo.name=ppo",
    "env.id=NumpyChain-host-v0",
    f"env.length={LENGTH}",
    f"env.max_steps={MAX_STEPS}",
    "algo.num_envs=4",
    "algo.num_steps=8",
    "algo.num_minibatches=2",
    "algo.update_epochs=1",
    "algo.eval_episodes=4",
    "algo.hidden_sizes=[16]",
    "algo.anneal_lr=false",  # an annealed rate depends on num_updates, which the interrupted run changes
    "seeds=2",
    "chunk_size=2",
    "checkpoint_every=2",
    "eval_every=4",
    "progress=false",
    "plots=false",
]


def rows(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def test_a_method_on_a_host_env_runs_its_seeds_one_after_another_and_resumes_exactly(tmp_path):
    full, parts = tmp_path / "full", tmp_path / "parts"
    logs = []
    cfg = config.load(None, [*PPO_ON_HOST, "num_updates=8", f"run_dir={full}"])
    summary = runner.run(cfg, log=logs.append)
    assert any("one seed after another" in line for line in logs), logs
    assert summary["seeds_vmapped"] is False and len(summary["eval"]["return"]["per_seed"]) == 2
    runner.run(config.load(None, [*PPO_ON_HOST, "num_updates=4", f"run_dir={parts}"]), log=lambda *_: None)
    logs = []
    runner.run(config.load(None, [*PPO_ON_HOST, "num_updates=8", f"run_dir={parts}"]), log=logs.append)
    assert runner.host_resume_note(SimpleNamespace(snapshot_size=8)) in logs, logs
    assert "restarts" in runner.host_resume_note(SimpleNamespace(snapshot_size=0))
    # The chain snapshots itself into the train state, so the resumed run is the same run.
    assert rows(full) == rows(parts)

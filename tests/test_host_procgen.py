"""Procgen on the host: the adapter inside jit against procgen stepped by hand, level resets,
snapshots, the level task sets, and the errors for a bad game or a missing install."""

import contextlib
import io
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

with contextlib.redirect_stderr(io.StringIO()):  # old gym prints a deprecation notice on import
    procgen = pytest.importorskip(
        "procgen",
        reason="Procgen is not installed: "
        'pip install -e ".[procgen]" && pip install --no-deps procgen-mirror==0.10.7 gym3==0.3.3',
    )

import envs_jax.tasks
from envs_jax.host.adapter import HostEnvVmapError
from envs_jax.host.procgen import (
    ENTRY,
    GAMES,
    HEADER_BYTES,
    STATE_BYTES,
    STATE_MAXIMA_SEEN,
    ProcgenBatch,
    check_settings,
    downsample,
    make_procgen,
    task_sets,
)

# Right+jump (8) ends CoinRun level 1 by death, level 4 by reaching the coin (reward 10), and does
# not end level 3 within MAX_STEPS: one termination each way and a truncation (checked below).
LEVELS = np.array([1, 4, 3], np.int32)
MAX_STEPS = 50
NUM_STEPS = 110


def actions(num_steps, num_envs, seed=0):
    """Mostly right+jump, with some right and noop steps mixed in."""
    rng = np.random.default_rng(seed)
    return rng.choice([8, 8, 8, 7, 4], size=(num_steps, num_envs)).astype(np.int32)


def by_hand(levels, acts, max_steps):
    """The same episodes with ``ProcgenGym3Env`` stepped directly: a new env when an episode is cut."""

    def make(level):
        return procgen.ProcgenGym3Env(
            num=1, env_name="coinrun", num_levels=1, start_level=int(level), distribution_mode="easy"
        )

    envs = [make(level) for level in levels]
    time = np.zeros(len(levels), int)
    rows = []
    for step_actions in acts:
        row = {k: [] for k in ("obs", "reward", "terminated", "truncated", "next_obs")}
        for i, env in enumerate(envs):
            env.act(step_actions[i : i + 1])
            reward, obs, first = env.observe()
            time[i] += 1
            complete = bool(env.get_info()[0]["prev_level_complete"])
            terminated = bool(first[0]) and (complete or time[i] < 1000)
            truncated = not terminated and (bool(first[0]) or time[i] >= max_steps)
            row["obs"].append(obs["rgb"][0])
            row["reward"].append(reward[0])
            row["terminated"].append(terminated)
            row["truncated"].append(truncated)
            if truncated and not first[0]:  # cut by max_steps: a fresh env starts the level again
                envs[i] = env = make(levels[i])
            if terminated or truncated:
                time[i] = 0
            row["next_obs"].append(env.observe()[1]["rgb"][0])
        rows.append({k: np.array(v) for k, v in row.items()})
    return {k: np.stack([row[k] for row in rows]) for k in rows[0]}


def rollout(env, params, levels, acts):
    """``reset`` then a ``lax.scan`` of ``step`` + ``reset_where`` (same levels), all in one jit."""
    n = len(levels)

    @jax.jit
    def run(key, levels, acts):
        obs, state = env.reset(jax.random.split(key, n), params, levels)

        def body(carry, action):
            _, state = carry
            next_obs, state, reward, terminated, truncated, _ = env.step(
                jax.random.split(key, n), state, action, params
            )
            done = terminated | truncated
            obs, state = env.reset_where(done, jax.random.split(key, n), next_obs, state, params, levels)
            out = {
                "obs": next_obs,
                "reward": reward,
                "terminated": terminated,
                "truncated": truncated,
                "next_obs": obs,
            }
            return (obs, state), out

        (_, state), out = jax.lax.scan(body, (obs, state), acts)
        return obs, out, state

    first, out, state = run(jax.random.PRNGKey(0), jnp.asarray(levels), jnp.asarray(acts))
    return np.asarray(first), jax.tree.map(np.asarray, out), state


def test_jitted_rollout_matches_procgen_stepped_by_hand():
    env = make_procgen("coinrun", max_steps=MAX_STEPS)
    acts = actions(NUM_STEPS, len(LEVELS))
    first, out, _ = rollout(env, env.default_params, LEVELS, acts)
    reference = by_hand(LEVELS, acts, MAX_STEPS)
    for name in ("obs", "reward", "terminated", "truncated", "next_obs"):
        np.testing.assert_array_equal(out[name], reference[name], err_msg=name)
    assert not (out["terminated"] & out["truncated"]).any()
    ended = out["terminated"].any(0)
    assert ended[0] and ended[1] and out["truncated"][:, 2].any()  # each way an episode can end
    assert (out["reward"][out["terminated"][:, 0], 0] == 0).all()  # level 1: deaths
    assert (out["reward"][out["terminated"][:, 1], 1] == 10).all()  # level 4: the coin
    # Every restart of a level, whichever way its episode ended, shows the level's first frame.
    for i in range(len(LEVELS)):
        done = out["terminated"][:, i] | out["truncated"][:, i]
        restarts = out["next_obs"][done, i]
        np.testing.assert_array_equal(restarts, np.broadcast_to(first[i], restarts.shape))


def test_vmapping_the_procgen_env_is_refused():
    env = make_procgen("coinrun")
    params = env.default_params

    def start(key):
        return env.reset(jax.random.split(key, 2), params, jnp.array([0, 1], jnp.int32))[0]

    with pytest.raises(HostEnvVmapError, match="cannot be vmapped"):
        jax.vmap(start)(jax.random.split(jax.random.PRNGKey(0), 2))


def test_a_level_always_starts_on_the_same_frame_and_levels_differ():
    env = make_procgen("coinrun", resolution=32)
    params = env.default_params
    levels = jnp.array([7, 7, 8], jnp.int32)
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    obs, state = jax.jit(env.reset)(keys, params, levels)
    obs = np.asarray(obs)
    assert obs.shape == (3, 32, 32, 3) and obs.dtype == np.uint8
    np.testing.assert_array_equal(obs[0], obs[1])
    assert not np.array_equal(obs[0], obs[2])
    # Mid-episode, a reset of the same level is procgen's start frame again (forced reset) ...
    for _ in range(5):
        _, state, *_ = env.step(keys, state, jnp.array([8, 7, 8], jnp.int32), params)
    again, state = env.reset_where(jnp.array([True, True, False]), keys, None, state, params, levels)
    np.testing.assert_array_equal(np.asarray(again)[:2], obs[:2])
    # ... and it is the 64 x 64 frame averaged over 2 x 2 blocks.
    batch = ProcgenBatch(1, "coinrun")
    full = batch.reset(np.zeros(1, np.uint32), np.ones(1, bool), np.array([7]))
    np.testing.assert_array_equal(downsample(full, 32)[0], obs[0])
    block = full[0, :2, :2].astype(int).sum((0, 1))
    np.testing.assert_array_equal(obs[0, 0, 0], (block + 2) // 4)


def test_a_restored_snapshot_continues_identically():
    env = make_procgen("coinrun", max_steps=30, snapshots=True)
    params = env.default_params
    acts = actions(60, len(LEVELS), seed=1)
    _, full, _ = rollout(env, params, LEVELS, acts)
    _, _, state = rollout(env, params, LEVELS, acts[:20])
    assert state.snapshot.shape == (3, env.snapshot_size) and np.asarray(state.snapshot).any()
    # A new env object has none of the old host batches: it rebuilds one from the snapshot.
    restored = make_procgen("coinrun", max_steps=30, snapshots=True)

    @jax.jit
    def resume(state, acts):
        def body(state, action):
            keys = jax.random.split(jax.random.PRNGKey(0), 3)
            next_obs, state, reward, terminated, truncated, _ = restored.step(keys, state, action, params)
            _, state = restored.reset_where(
                terminated | truncated, keys, next_obs, state, params, jnp.asarray(LEVELS)
            )
            return state, (next_obs, reward, terminated, truncated)

        return jax.lax.scan(body, state, acts)[1]

    tail = jax.tree.map(np.asarray, resume(state, jnp.asarray(acts[20:])))
    for got, name in zip(tail, ("obs", "reward", "terminated", "truncated"), strict=True):
        np.testing.assert_array_equal(got, full[name][20:], err_msg=name)
    assert (tail[2] | tail[3]).any()  # episodes ended (and restarted) after the restore
    # Each row: a 4-byte length prefix (and level, step, fresh flag), the state, zero padding.
    rows = np.asarray(state.snapshot)
    lengths = rows[:, :4].copy().view("<i4")[:, 0]
    assert env.snapshot_size == HEADER_BYTES + STATE_BYTES["coinrun"]
    assert (lengths > 30_000).all() and not rows[:, HEADER_BYTES + lengths.max() :].any()
    assert all(STATE_BYTES[game] >= STATE_MAXIMA_SEEN[game] for game in GAMES)


def test_training_and_held_out_levels_never_overlap():
    env = make_procgen("coinrun")
    params = env.default_params
    train, test = task_sets(env, params, jax.random.PRNGKey(0), 200, 100)
    np.testing.assert_array_equal(train, np.arange(200))
    np.testing.assert_array_equal(test, np.arange(200, 300))
    assert train.dtype == jnp.int32 and not np.intersect1d(train, test).size
    few_train, few_test = task_sets(env, params, jax.random.PRNGKey(0), 10, 5)
    np.testing.assert_array_equal(few_train, np.arange(10))
    np.testing.assert_array_equal(few_test, np.arange(200, 205))
    with pytest.raises(ValueError, match="asks for 201 training tasks"):
        task_sets(env, params, jax.random.PRNGKey(0), 201, 100)
    # sample_task (fresh tasks) draws from the training range only.
    drawn = np.asarray(envs_jax.tasks.task_set(env, jax.random.PRNGKey(3), 500, params))
    assert drawn.min() >= 0 and drawn.max() < 200 and len(np.unique(drawn)) > 100
    defaults = {name: setting.default for name, setting in ENTRY.settings.items()}
    ENTRY.check(defaults)
    with pytest.raises(ValueError, match=r"\[0, 200\).*\[150, 250\).*overlap"):
        check_settings({**defaults, "test_levels": 150})
    with pytest.raises(ValueError, match=r"\[250, 350\).*\[200, 300\).*overlap"):
        check_settings({**defaults, "train_levels": 250, "num_train_levels": 100})
    check_settings({**defaults, "train_levels": 300, "test_levels": 0, "num_test_levels": 300})
    # Through the runner's setup, by id: fixed sets, and a method on fresh levels is tested on held-out ones.
    from jaxmeta import config
    from jaxmeta.algos import api

    cfg = config.load(
        None, ["algo.name=ppo", "env.id=Procgen-v0", "env.test_levels=500", "run_dir=/tmp/unused"]
    )
    fixed = api.make_env_setup(cfg, 3, 4)
    np.testing.assert_array_equal(fixed.train_tasks, [0, 1, 2])
    np.testing.assert_array_equal(fixed.test_tasks, [500, 501, 502, 503])
    fresh = api.make_env_setup(cfg, 0, 4)
    assert fresh.train_tasks is None
    np.testing.assert_array_equal(fresh.test_tasks, [500, 501, 502, 503])


def test_an_unknown_game_or_mode_is_refused_naming_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown Procgen game 'pong'.*coinrun.*starpilot"):
        make_procgen("pong")
    assert len(GAMES) == 16
    with pytest.raises(ValueError, match="coinrun has no 'memory' mode"):
        make_procgen("coinrun", distribution_mode="memory")


def test_a_missing_procgen_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "procgen", None)  # import procgen now fails as if not installed
    with pytest.raises(ModuleNotFoundError, match=r'pip install -e "\.\[procgen\]" && pip install --no-deps'):
        make_procgen("coinrun")


def test_a_state_larger_than_the_fixed_snapshot_size_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(STATE_BYTES, "coinrun", 1000)
    batch = ProcgenBatch(1, "coinrun", snapshots=True)
    batch.reset(np.zeros(1, np.uint32), np.ones(1, bool), np.array([0]))
    with pytest.raises(ValueError, match=r"exceeds the fixed snapshot size of 1000 bytes \(STATE_BYTES"):
        batch.get_state()

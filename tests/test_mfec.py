"""Model-Free Episodic Control (jaxmeta.algos.mfec): the return queue against a plain-Python model, the
estimate against numpy, and a tiny run that learns bsuite's Catch."""

import collections
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmeta import config, runner
from jaxmeta.algos import mfec
from jaxmeta.config import ConfigError
from jaxmeta.memory import dnd as dnd_lib


def reference_pops(rewards, dones, horizon, gamma):
    """Per env, the (step, return) pairs in the order they leave, and the step each leaves at.

    A step's return: its discounted rewards up to its episode's end, cut after ``horizon`` rewards. It
    leaves at the first step at which it is the oldest waiting and its episode has ended before, or the
    queue holds ``horizon`` steps."""
    num_steps, num_envs = rewards.shape
    out = []
    for e in range(num_envs):
        queue, pops = collections.deque(), []
        for t in range(num_steps):
            if queue and (len(queue) == horizon or queue[0][1]):
                start, _ = queue.popleft()
                end = start
                ret = 0.0
                while True:  # the return written out from the trajectory
                    ret += gamma ** (end - start) * rewards[end, e]
                    if dones[end, e] or end - start + 1 == horizon or end + 1 == t:
                        break
                    end += 1
                pops.append((t, start, ret))
            queue.append([t, False])
            if dones[t, e]:
                for item in queue:
                    item[1] = True
        out.append(pops)
    return out


@pytest.mark.parametrize("horizon", [3, 6, 40])
def test_return_queue_matches_a_python_model(horizon):
    rng = np.random.default_rng(horizon)
    num_steps, num_envs, gamma = 40, 3, 0.9
    rewards = rng.normal(size=(num_steps, num_envs)).astype(np.float32)
    dones = rng.random((num_steps, num_envs)) < 0.15
    queue = mfec.init_queue(horizon, num_envs, key_size=1)
    step = jax.jit(mfec.queue_step, static_argnums=5)
    got = [[] for _ in range(num_envs)]
    for t in range(num_steps):
        key = jnp.full((num_envs, 1), t, jnp.float32)  # the key says which step it is
        queue, left = step(queue, key, jnp.zeros(num_envs, jnp.int32), rewards[t], dones[t], gamma)
        for e in range(num_envs):
            if bool(left["valid"][e]):
                got[e].append((t, int(left["key"][e, 0]), float(left["return"][e])))
    want = reference_pops(rewards, dones, horizon, gamma)
    for e in range(num_envs):
        assert [g[:2] for g in got[e]] == [w[:2] for w in want[e]]
        np.testing.assert_allclose([g[2] for g in got[e]], [w[2] for w in want[e]], rtol=1e-5, atol=1e-5)


def test_estimate_is_the_stored_value_for_a_seen_key_else_the_neighbours_mean():
    rng = np.random.default_rng(0)
    keys = rng.normal(size=(2, 20, 5)).astype(np.float32)
    values = rng.normal(size=(2, 20)).astype(np.float32)
    table = dnd_lib.from_arrays(keys, values, valid=np.arange(20)[None].repeat(2, 0) < [[20], [12]])
    queries = np.concatenate([keys[0, :3], rng.normal(size=(3, 5)).astype(np.float32)])
    q, _ = mfec.mfec_estimate(table, jnp.asarray(queries), 4)
    for b, query in enumerate(queries):
        for a, count in enumerate((20, 12)):
            d = ((keys[a, :count] - query) ** 2).sum(-1)
            seen = np.flatnonzero((keys[a, :count] == query).all(-1))
            want = values[a, seen[0]] if len(seen) else values[a, np.argsort(d)[:4]].mean()
            assert float(q[b, a]) == pytest.approx(float(want), rel=1e-5, abs=1e-6)


def test_random_projection_is_fixed_by_the_key_and_flattens_any_observation():
    obs = {"image": jnp.ones((3, 2, 2)), "vector": jnp.arange(3.0)}
    projection = mfec.random_projection(jax.random.PRNGKey(0), obs, 8)
    assert projection.shape == (12 + 3, 8)
    np.testing.assert_array_equal(projection, mfec.random_projection(jax.random.PRNGKey(0), obs, 8))
    batch = jax.tree.map(lambda x: jnp.stack([x, 2 * x]), obs)
    keys = mfec.project(projection, batch)
    np.testing.assert_allclose(keys[1], 2 * keys[0], rtol=1e-6)


def test_tiny_catch_run_learns_with_two_vmapped_seeds(tmp_path):
    """1,600 env steps per seed: both seeds catch every ball (a random policy scores about -0.6)."""
    cfg = config.load(
        None,
        [
            "algo.name=mfec",
            "env.id=Catch-bsuite",
            "algo.capacity=1000",
            "algo.key_size=16",
            "algo.num_envs=4",
            "algo.num_steps=8",
            "algo.epsilon_anneal_steps=1000",
            "seeds=2",
            "num_updates=50",
            "chunk_size=25",
            "eval_every=25",
            "checkpoint_every=50",
            "progress=false",
            "plots=false",
            f"run_dir={tmp_path / 'run'}",
        ],
    )
    summary = runner.run(cfg, log=lambda *_: None)
    assert summary["eval"]["return"]["per_seed"] == [1.0, 1.0]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert max(r["eval/return"] for r in rows if r["kind"] == "eval" and r["update"] == 0) < 0.5
    train = [r for r in rows if r["kind"] == "train"]
    assert 0 < train[-1]["dnd_fill"] < 1 and train[-1]["env_steps"] == 1600


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["env.id=Pendulum-v1"], "discrete action space"),
        (["algo.capacity=5", "algo.num_neighbours=11"], "num_neighbours=11 must be <= algo.capacity=5"),
    ],
)
def test_config_mistakes_are_one_line_errors(overrides, words):
    with pytest.raises(ConfigError, match=words) as err:
        config.load(None, ["algo.name=mfec", "env.id=CartPole-v1", *overrides])
    assert "\n" not in str(err.value)

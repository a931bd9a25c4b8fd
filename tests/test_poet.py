"""POET on Walker-v0 and OpenES on one terrain: the terrain mutation against a plain-Python transcription of
POET's reproducer, the flat-vector policy against numpy, episode returns against a step-by-step loop,
and the POET iteration's bookkeeping (admission, retirement, ANNECS, transfers) on crafted states."""

import itertools
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs_jax
from envs_jax.walker import RANGE_MUTATIONS, mutate_encoding
from jaxmeta import config
from jaxmeta.algos import open_es as open_es_algo
from jaxmeta.algos import poet
from jaxmeta.evolution.rollouts import FlatMLP, episode_return, population_fitness

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- the reproducer
def python_range_choices(low, high, kind):
    """POET's ``populate_array`` (reproduce_ops.py) written out: the ranges a mutation can move to."""
    (first_low, first_high), increment, cap = RANGE_MUTATIONS[kind]
    if high <= 0:
        return [(first_low, first_high)]
    choices = []
    for change0, change1 in itertools.product([increment, 0.0, -increment], repeat=2):
        new0, new1 = round(low + change0, 1), round(high + change1, 1)
        if new0 > cap or new0 < first_low or new1 > cap or new1 < first_high:
            continue
        if change0 == 0.0 and change1 == 0.0:
            continue
        if new0 > new1:
            continue
        choices.append((new0, new1))
    return choices or [(low, high)]


@pytest.mark.parametrize(
    "parent",
    [
        (0.0, 0.0, 0.0, 0.0, 0.0),  # flat: both obstacle kinds get their first range
        (2.3, 0.2, 0.6, 0.4, 1.6),
        (9.8, 0.0, 0.4, 0.0, 0.8),  # at the lowest allowed ranges and near the roughness cap
        (0.1, 4.8, 5.0, 7.6, 8.0),  # at the caps
    ],
)
def test_mutations_reach_exactly_poets_choices_uniformly(parent):
    children = np.asarray(
        jax.vmap(mutate_encoding, in_axes=(0, None))(
            jax.random.split(jax.random.PRNGKey(0), 6000), jnp.asarray(parent, jnp.float32)
        )
    )
    children = np.round(children, 4)
    for kind, columns in (("stump", [1, 2]), ("gap", [3, 4])):
        expected = python_range_choices(parent[columns[0]], parent[columns[1]], kind)
        seen = [(round(float(a), 1), round(float(b), 1)) for a, b in children[:, columns]]
        counts = {pair: seen.count(pair) for pair in set(seen)}
        assert set(counts) == {(round(a, 1), round(b, 1)) for a, b in expected}
        assert min(counts.values()) > 0.7 * len(children) / len(expected)  # about uniform
    roughness = children[:, 0]
    assert np.all(np.abs(roughness * 10 - np.round(roughness * 10)) < 1e-3)  # one decimal, as POET
    assert roughness.min() >= max(0.0, parent[0] - 0.6 - 1e-6)
    assert roughness.max() <= min(10.0, parent[0] + 0.6 + 1e-6)


def test_curriculum_scales_the_target_and_ends_on_it():
    target = jnp.array([3.0, 0.4, 1.0, 0.8, 2.4])
    stages = np.asarray(open_es_algo.curriculum(target, 4))
    expected = np.round(np.asarray(target)[None] * np.array([[0.25], [0.5], [0.75]]), 1)
    np.testing.assert_allclose(stages[:3], expected, atol=1e-6)
    np.testing.assert_array_equal(stages[3], np.asarray(target))
    assert open_es_algo.curriculum(target, 0).shape == (1, 5)


# ----------------------------------------------------------------------------- policy and episodes
def test_flat_mlp_matches_a_numpy_forward_pass():
    policy = FlatMLP((5, 7, 3))
    flat = policy.init(jax.random.PRNGKey(1)) + 0.1  # non-zero biases too
    assert flat.shape == (policy.num_params,) == (5 * 7 + 7 + 7 * 3 + 3,)
    w = np.asarray(flat)
    w1, b1 = w[:35].reshape(5, 7), w[35:42]
    w2, b2 = w[42:63].reshape(7, 3), w[63:]
    obs = np.linspace(-1, 1, 5)
    expected = np.tanh(np.tanh(obs @ w1 + b1) @ w2 + b2)
    np.testing.assert_allclose(policy.apply(flat, jnp.asarray(obs)), expected, rtol=1e-5, atol=1e-6)


def test_episode_return_stops_counting_at_the_first_done_like_a_python_loop():
    env, params = envs_jax.make("Walker-v0", gap_low=1.0, gap_high=1.0)
    policy = FlatMLP((24, 4))
    flat = policy.init(jax.random.PRNGKey(3)) * 3.0  # flails and falls early
    key = jax.random.PRNGKey(4)
    episode = jax.jit(lambda f, k: episode_return(env, params, policy, f, k, 200))(flat, key)
    reset_key, step_key = jax.random.split(key)
    obs, state = env.reset(reset_key, params)
    step = jax.jit(lambda k, s, a: env.step_env(k, s, a, params))
    total, length = 0.0, 0
    for k in jax.random.split(step_key, 200):
        obs, state, reward, done, _ = step(k, state, policy.apply(flat, obs))
        total, length = total + float(reward), length + 1
        if bool(done):
            break
    assert length < 200  # it did fall: the masking was exercised
    assert int(episode.length) == length
    assert float(episode.total) == pytest.approx(total, rel=1e-5, abs=1e-4)


def test_a_mirrored_pair_shares_its_layout_and_different_pairs_do_not():
    env, params = envs_jax.make("Walker-v0", roughness=4.0, stump_high=0.6, gap_high=1.2)
    policy = FlatMLP((24, 4))
    same = jnp.broadcast_to(policy.init(jax.random.PRNGKey(5)), (8, policy.num_params))
    encoding = env.encode(params)
    returns = np.asarray(
        jax.jit(lambda p, k: population_fitness(env, params, policy, p, encoding, k, 60))(
            same, jax.random.PRNGKey(6)
        )
    )
    np.testing.assert_array_equal(returns[:4], returns[4:])  # +/- of a pair: same layout and start
    assert len(np.unique(returns[:4])) > 1  # each pair its own layout


# ----------------------------------------------------------------------------- the POET iteration
def tiny_poet(**overrides):
    settings = {
        "algo.name": "poet",
        "env.id": "Walker-v0",
        "num_updates": 8,
        "chunk_size": 4,
        "eval_every": 4,
        "checkpoint_every": 4,
        "algo.hidden_sizes": "[4]",
        "algo.max_steps": 8,
        "algo.max_active": 2,
        "algo.archive_size": 8,
        "algo.reproduce_every": 2,
        "algo.transfer_every": 3,
        "algo.num_children": 3,
        "algo.repro_threshold": -1e9,
        "algo.mc_low": -1e9,
        "algo.mc_high": 1e9,
        "algo.solved_threshold": -1e9,
        "algo.eval_episodes": 1,
        "algo.es.population_size": 4,
        "algo.eval.episodes": 1,
        **overrides,
    }
    cfg = config.load(None, [f"{k}={v}" for k, v in settings.items()])
    return poet.build(cfg)


def test_iterations_admit_children_retire_the_oldest_and_count_annecs():
    # Direct transfers only: the proposal ES step is tested below; without it the iteration
    # compiles in a fifth less time (the CI budget).
    parts = tiny_poet(**{"algo.transfer_proposals": "false"})
    state = jax.jit(parts.init)(jax.random.PRNGKey(0))
    state, metrics = jax.jit(lambda s: jax.lax.scan(lambda c, _: parts.update(c), s, None, length=7))(state)
    # Mutations at t = 2, 4, 6, each admitting one child (the criterion passes everything here).
    np.testing.assert_array_equal(np.asarray(metrics["mutation/admitted"]), [0, 0, 1, 0, 1, 0, 1])
    assert int(state.archive_count) == 4 and int(state.active.sum()) == 2
    # Capacity 2: each later admission retired the oldest pair; the newest two terrains remain.
    rows = np.asarray(state.archive_row)
    assert sorted(rows.tolist()) == [2, 3]
    np.testing.assert_array_equal(np.asarray(state.terrain), np.asarray(state.archive)[rows])
    # Each child is one of POET's mutations of a terrain that was in the archive before it.
    archive = np.asarray(state.archive)
    for child in range(1, 4):
        parents = archive[:child]
        reachable = any(
            (round(float(archive[child, 1]), 1), round(float(archive[child, 2]), 1))
            in {
                (round(a, 1), round(b, 1)) for a, b in python_range_choices(float(p[1]), float(p[2]), "stump")
            }
            for p in parents
        )
        assert reachable
    # Every pair was solved (threshold -1e9): ANNECS counts the created terrains, not the first.
    assert float(metrics["annecs"][-1]) == 3.0
    assert bool(jnp.all(jnp.isfinite(state.es.mean)))


def test_an_impossible_minimal_criterion_admits_nothing():
    parts = tiny_poet(**{"algo.mc_low": 1e8, "algo.mc_high": 1e9})
    state = jax.jit(parts.init)(jax.random.PRNGKey(0))
    state, metrics = jax.jit(parts.mutate_envs)(
        state.replace(iteration=jnp.asarray(2)), jax.random.PRNGKey(1)
    )
    assert int(state.archive_count) == 1 and int(state.active.sum()) == 1
    assert float(metrics["mutation/children_passing_mc"]) == 0.0


@pytest.mark.parametrize("proposals", [False, True])
def test_a_transfer_replaces_only_an_agent_that_a_candidate_beats(proposals):
    parts = tiny_poet(**{"algo.transfer_proposals": str(proposals).lower()})
    state = jax.jit(parts.init)(jax.random.PRNGKey(0))
    other = parts.policy.init(jax.random.PRNGKey(9))
    state = state.replace(
        es=state.es.replace(mean=state.es.mean.at[1].set(other), m=state.es.m + 0.5),
        terrain=state.terrain.at[1].set(jnp.array([1.0, 0.0, 0.4, 0.0, 0.8])),
        active=jnp.array([True, True]),
        score=jnp.array([1e9, -1e9]),  # row 0 unbeatable, row 1 beaten by anything
        recent=jnp.array([[1e9], [-1e9]]),
    )
    state = state.replace(
        es=state.es.replace(learning_rate=jnp.array([0.004, 0.003]), sigma=jnp.array([0.02, 0.02]))
    )
    new, accepted = jax.jit(parts.transfers)(state, jax.random.PRNGKey(2))
    assert int(accepted) == 1
    np.testing.assert_array_equal(np.asarray(new.es.mean[0]), np.asarray(state.es.mean[0]))
    assert float(new.score[0]) == 1e9
    if not proposals:  # the only candidate is agent 0 as it is
        np.testing.assert_array_equal(np.asarray(new.es.mean[1]), np.asarray(state.es.mean[0]))
    assert float(new.score[1]) > -1e9
    # POET's set_theta(..., reset_optimizer=True): Adam and sigma restart, the step size stays.
    assert float(jnp.abs(new.es.m[1]).max()) == 0.0 and float(new.es.sigma[1]) == pytest.approx(0.1)
    assert float(new.es.learning_rate[1]) == pytest.approx(0.003)
    assert float(new.es.m[0, 0]) == 0.5 and float(new.es.sigma[0]) == pytest.approx(0.02)
    assert float(new.recent[1, 0]) == float(new.score[1])


def test_a_stricter_transfer_criterion_compares_with_the_best_recent_score():
    parts = tiny_poet(**{"algo.transfer_proposals": "false", "algo.transfer_history": 3})
    state = jax.jit(parts.init)(jax.random.PRNGKey(0))
    state = state.replace(
        es=state.es.replace(mean=state.es.mean.at[1].set(parts.policy.init(jax.random.PRNGKey(9)))),
        active=jnp.array([True, True]),
        score=jnp.array([-1e9, -1e9]),  # this iteration's scores: anything beats them
        recent=jnp.array([[-1e9, 1e9, 0.0], [-1e9, -1e9, -1e9]]),  # row 0 did well two iterations ago
    )
    new, accepted = jax.jit(parts.transfers)(state, jax.random.PRNGKey(2))
    assert int(accepted) == 1  # only row 1 takes a transfer
    np.testing.assert_array_equal(np.asarray(new.es.mean[0]), np.asarray(state.es.mean[0]))
    np.testing.assert_array_equal(np.asarray(new.es.mean[1]), np.asarray(state.es.mean[0]))


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "args, needle",
    [
        (["algo.name=poet", "algo.es.population_size=7"], "even"),
        (["algo.name=poet", "algo.mc_low=50", "algo.mc_high=10"], "mc_low <= algo.mc_high"),
        (["algo.name=poet", "algo.max_active=0"], "algo.max_active"),
        (["algo.name=poet", "env.roughness=11"], "roughness"),
        (["algo.name=poet", "env.id=CartPole-v1"], "Walker-v0"),
        (["algo.name=poet", "num_updates=3000", "algo.archive_size=4"], "archive_size"),
        (["algo.name=open_es", "env.stump_low=1.0", "env.stump_high=0.5"], "stump_low"),
    ],
)
def test_bad_configs_are_refused_naming_the_key(args, needle):
    overrides = args if any(a.startswith("env.id") for a in args) else [*args, "env.id=Walker-v0"]
    with pytest.raises((config.ConfigError, ValueError), match=needle):
        config.load(None, overrides)


def test_an_odd_population_exits_2_in_one_line(tmp_path):
    args = ["algo.name=poet", "env.id=Walker-v0", "algo.es.population_size=9", f"run_dir={tmp_path / 'r'}"]
    proc = subprocess.run(
        [sys.executable, "-m", "jaxmeta.train", *args], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "even" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_open_es_moves_along_the_curriculum_when_a_stage_is_passed_and_stays_on_the_target():
    overrides = {
        "algo.name": "open_es",
        "env.id": "Walker-v0",
        "env.stump_high": 1.0,
        "env.gap_high": 1.6,
        "algo.curriculum_stages": 3,
        "algo.advance_score": -1e9,  # every score passes: one stage per generation
        "algo.es.population_size": 4,
        "algo.max_steps": 8,
        "algo.hidden_sizes": "[4]",
        "algo.eval_episodes": 1,
        "algo.eval.episodes": 2,
    }
    algo = open_es_algo.make(config.load(None, [f"{k}={v}" for k, v in overrides.items()]))
    state = jax.jit(algo.init)(jax.random.PRNGKey(0))  # one program, not hundreds of eager ones
    state, metrics = jax.jit(lambda s: jax.lax.scan(lambda c, _: algo.update(c), s, None, length=4))(state)
    np.testing.assert_array_equal(np.asarray(metrics["stage"]), [0, 1, 2, 2])  # stage 2 is the target
    assert int(state.stage) == 2
    evaluation = jax.jit(algo.evaluate)(state, jax.random.PRNGKey(1))
    assert 0.0 <= float(evaluation["eval/finished"]) <= 1.0 and np.isfinite(float(evaluation["eval/return"]))

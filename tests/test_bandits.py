"""The Bernoulli bandit and the classic bandit policies against independent references.

References written here from the definitions: a plain-Python bisection for Gittins indices (one
memoised dynamic programme per candidate index), plain-numpy UCB1 / greedy / epsilon-greedy fed the
same reward uniforms as the JAX trials, exact win probabilities of Beta draws by numerical
integration (scipy) for Thompson sampling, scipy's Beta distribution for the sampler, and numpy
Monte Carlo for the optimistic variant.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import envs_jax
from envs_jax.bandits import BanditTask, BernoulliBandit
from jaxmeta import bandits


# ----------------------------------------------------------------------------- the environment
def test_env_pays_each_arm_with_its_probability_and_terminates_after_its_pulls():
    env, params = envs_jax.make("BernoulliBandit-v0", num_arms=3, max_steps_in_episode=2)
    task = BanditTask(probs=jnp.array([0.1, 0.5, 0.9], jnp.float32))
    _, state = env.reset_to_task(jax.random.PRNGKey(0), task, params)
    keys = jax.random.split(jax.random.PRNGKey(1), 20_000)
    for arm, p in enumerate([0.1, 0.5, 0.9]):
        step = jax.vmap(lambda k, a=arm: env.step_env(k, state, a, params))
        obs, _, reward, terminated, info = step(keys)
        rate = float(reward.mean())
        assert abs(rate - p) < 4 * np.sqrt(p * (1 - p) / len(keys)), (arm, rate)
        np.testing.assert_array_equal(np.asarray(info["success"]), np.asarray(reward) > 0)
        assert not bool(terminated.any())  # the first of two pulls
        np.testing.assert_array_equal(np.asarray(obs), np.ones((len(keys), 1), np.float32))
    _, state1, _, terminated1, _ = env.step_env(keys[0], state, 0, params)
    _, _, _, terminated2, _ = env.step_env(keys[1], state1, 0, params)
    assert not bool(terminated1) and bool(terminated2)
    # The episode's end is a termination, never a truncation (the project's convention).
    assert not bool(envs_jax.vector.truncation(env, state1, terminated2, params))
    _, _, _, terminated, truncated, _ = env.step(keys[1], state1, 0, params)
    assert bool(terminated) and not bool(truncated)


def test_tasks_are_uniform_arm_probabilities():
    env = BernoulliBandit(num_arms=4)
    tasks = jax.vmap(env.sample_task)(jax.random.split(jax.random.PRNGKey(2), 5000))
    probs = np.asarray(tasks.probs)
    assert probs.shape == (5000, 4) and probs.min() >= 0 and probs.max() <= 1
    assert stats.kstest(probs.ravel(), "uniform").pvalue > 1e-3


@pytest.mark.parametrize("arms", [1, 0, 2.5, True])
def test_bad_arm_counts_are_refused(arms):
    with pytest.raises(ValueError, match="num_arms"):
        envs_jax.make("BernoulliBandit-v0", num_arms=arms)


# ----------------------------------------------------------------------------- Gittins indices
def reference_index(s0: int, f0: int, discount: float, depth: int) -> float:
    """Bisection on the calibrating safe reward, each candidate judged by its own memoised DP."""

    def advantage(lam: float) -> float:
        retire = lam / (1 - discount)

        @functools.cache
        def value(s: int, f: int) -> float:
            p = (s + 1) / (s + f + 2)
            if s + f == depth:
                return max(retire, p / (1 - discount))
            pull = p * (1 + discount * value(s + 1, f)) + (1 - p) * discount * value(s, f + 1)
            return max(retire, pull)

        p = (s0 + 1) / (s0 + f0 + 2)
        return p * (1 + discount * value(s0 + 1, f0)) + (1 - p) * discount * value(s0, f0 + 1) - retire

    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if advantage(mid) > 0 else (lo, mid)
    return (lo + hi) / 2


@pytest.mark.parametrize("discount", [0.7, 0.9])
def test_gittins_indices_match_an_independent_bisection(discount):
    depth = 40
    table = np.asarray(bandits.gittins_indices(6, discount, depth=depth, grid_size=1024))
    for s, f in [(0, 0), (1, 0), (0, 1), (2, 3), (5, 0), (0, 5), (3, 2)]:
        assert table[s, f] == pytest.approx(reference_index(s, f, discount, depth), abs=2e-5), (s, f)


def test_gittins_indices_exceed_the_posterior_mean_and_grow_with_the_discount():
    low, high = (np.asarray(bandits.gittins_indices(20, d, grid_size=512)) for d in (0.8, 0.95))
    s, f = np.meshgrid(np.arange(20), np.arange(20), indexing="ij")
    used = s + f < 20
    mean = (s + 1) / (s + f + 2)
    # The value of information: above the mean (up to the grid's interpolation error), more so when
    # the future counts more.
    assert (low[used] > mean[used] - 1e-4).all() and (high[used] >= low[used] - 1e-4).all()
    assert high[0, 0] > low[0, 0] + 0.02


def test_gittins_rejects_bad_arguments():
    with pytest.raises(ValueError, match="discount"):
        bandits.gittins_indices(5, 1.0)
    with pytest.raises(ValueError, match="depth"):
        bandits.gittins_indices(5, 0.9, depth=3)


# ----------------------------------------------------------------------------- policies against numpy
def reward_uniforms(key: jax.Array, num_tasks: int, num_pulls: int) -> np.ndarray:
    """The uniform each pull's reward is drawn from in :func:`bandits.play` (its documented key use)."""
    task_keys = jax.random.split(key, num_tasks)

    def one(task_key: jax.Array) -> jax.Array:
        return jax.vmap(lambda t: jax.random.uniform(jax.random.split(jax.random.fold_in(task_key, t))[0]))(
            jnp.arange(num_pulls)
        )

    return np.asarray(jax.vmap(one)(task_keys))


def numpy_trial(probs: np.ndarray, uniforms: np.ndarray, index_fn) -> np.ndarray:
    """Rewards ``[T, n]`` of a deterministic index policy (``index_fn(s, f, t) -> scores``), lowest
    arm on ties."""
    num_tasks, num_arms = probs.shape
    rewards = np.zeros(uniforms.shape)
    for i in range(num_tasks):
        s, f = np.zeros(num_arms), np.zeros(num_arms)
        for t in range(uniforms.shape[1]):
            arm = int(np.argmax(index_fn(s, f, t)))
            r = float(uniforms[i, t] < probs[i, arm])
            s[arm] += r
            f[arm] += 1 - r
            rewards[i, t] = r
    return rewards


def numpy_ucb1(c: float):
    def index(s, f, t):
        bonus = c * np.sqrt(2 * np.log(max(t, 1)) / (s + f + 2))
        return (s + 1) / (s + f + 2) + bonus

    return index


@pytest.mark.parametrize(
    "name, setting, index_fn",
    [
        ("ucb1", 0.5, numpy_ucb1(0.5)),
        ("ucb1", 1.0, numpy_ucb1(1.0)),
        ("greedy", None, lambda s, f, t: (s + 1) / (s + f + 2)),
    ],
)
def test_deterministic_policies_match_numpy_on_the_same_draws(name, setting, index_fn):
    key = jax.random.PRNGKey(3)
    probs = np.asarray(bandits.uniform_tasks(jax.random.PRNGKey(4), 40, 4))
    ours = np.asarray(bandits.play(bandits.POLICIES[name].choose, setting, probs, 25, key))
    reference = numpy_trial(probs, reward_uniforms(key, 40, 25), index_fn)
    np.testing.assert_array_equal(ours, reference)


def test_gittins_policy_plays_the_highest_index():
    table = np.asarray(bandits.gittins_indices(15, 0.9, grid_size=512))
    key = jax.random.PRNGKey(5)
    probs = np.asarray(bandits.uniform_tasks(jax.random.PRNGKey(6), 30, 3))
    ours = np.asarray(bandits.play(bandits.gittins, jnp.asarray(table), probs, 15, key))
    reference = numpy_trial(
        probs, reward_uniforms(key, 30, 15), lambda s, f, t: table[s.astype(int), f.astype(int)]
    )
    np.testing.assert_array_equal(ours, reference)


def test_epsilon_greedy_explores_at_its_rate():
    counts = bandits.ArmCounts(jnp.array([5.0, 0.0, 1.0]), jnp.array([0.0, 5.0, 1.0]))  # arm 0 is best
    keys = jax.random.split(jax.random.PRNGKey(7), 30_000)
    arms = np.asarray(jax.vmap(lambda k: bandits.epsilon_greedy(counts, jnp.int32(12), k, 0.3))(keys))
    # Greedy picks arm 0; exploring picks each of the 3 arms with probability 1/3.
    expected = np.array([0.7 + 0.1, 0.1, 0.1])
    freq = np.bincount(arms, minlength=3) / len(arms)
    np.testing.assert_allclose(freq, expected, atol=4 * np.sqrt(0.8 * 0.2 / len(arms)))


def test_beta_sampler_matches_scipy():
    key = jax.random.PRNGKey(8)
    for a, b in [(1.0, 1.0), (2.0, 7.0), (30.0, 4.0)]:
        draws = np.asarray(bandits.beta_sample(key, jnp.full((20_000,), a), jnp.full((20_000,), b)))
        assert stats.kstest(draws, stats.beta(a, b).cdf).pvalue > 1e-3, (a, b)
    gammas = np.asarray(bandits.gamma_sample(key, jnp.full((20_000,), 3.5)))
    assert stats.kstest(gammas, stats.gamma(3.5).cdf).pvalue > 1e-3


def thompson_win_probabilities(successes, failures) -> np.ndarray:
    """P(arm i's Beta(s+1, f+1) draw is the highest), by numerical integration."""
    x = np.linspace(0, 1, 20_001)
    dists = [stats.beta(s + 1, f + 1) for s, f in zip(successes, failures, strict=True)]
    pdfs, cdfs = np.array([d.pdf(x) for d in dists]), np.array([d.cdf(x) for d in dists])
    out = []
    for i in range(len(dists)):
        others = np.prod(np.delete(cdfs, i, axis=0), axis=0)
        out.append(np.trapezoid(pdfs[i] * others, x))
    return np.array(out)


def test_thompson_sampling_chooses_each_arm_with_its_posterior_win_probability():
    successes, failures = [3.0, 1.0, 0.0], [2.0, 0.0, 0.0]
    counts = bandits.ArmCounts(jnp.array(successes), jnp.array(failures))
    keys = jax.random.split(jax.random.PRNGKey(9), 40_000)
    arms = np.asarray(jax.vmap(lambda k: bandits.thompson(counts, jnp.int32(6), k))(keys))
    freq = np.bincount(arms, minlength=3) / len(arms)
    expected = thompson_win_probabilities(successes, failures)
    np.testing.assert_allclose(freq, expected, atol=4 * np.sqrt(0.25 / len(arms)))


def test_optimistic_thompson_follows_the_most_probable_of_m_draws():
    successes, failures, m = np.array([3.0, 1.0, 0.0]), np.array([2.0, 0.0, 0.0]), 5
    counts = bandits.ArmCounts(jnp.asarray(successes), jnp.asarray(failures))
    keys = jax.random.split(jax.random.PRNGKey(10), 12_000)
    arms = np.asarray(jax.vmap(lambda k: bandits.optimistic_thompson(counts, jnp.int32(6), k, m))(keys))
    # numpy Monte Carlo of the rule with numpy's own Beta generator.
    rng = np.random.default_rng(0)
    a, b = successes + 1, failures + 1
    draws = rng.beta(a, b, size=(100_000, m, 3))
    log_density = stats.beta(a, b).logpdf(draws).sum(-1)
    chosen = draws[np.arange(len(draws)), log_density.argmax(1)].argmax(-1)
    expected = np.bincount(chosen, minlength=3) / len(chosen)
    freq = np.bincount(arms, minlength=3) / len(arms)
    np.testing.assert_allclose(freq, expected, atol=4 * np.sqrt(0.25 / len(arms)) + 0.005)


def test_trial_means_of_the_stochastic_policies_match_numpy_simulations():
    """Whole trials: Thompson sampling and random over many tasks, against plain numpy (same task
    distribution, numpy's own random numbers), within a few standard errors."""
    n, k, num_tasks = 20, 3, 4000
    probs = np.asarray(bandits.uniform_tasks(jax.random.PRNGKey(11), num_tasks, k))
    key = jax.random.PRNGKey(12)
    rng = np.random.default_rng(1)
    for name in ("thompson", "random"):
        ours = np.asarray(bandits.play(bandits.POLICIES[name].choose, None, probs, n, key).sum(-1))
        totals = np.zeros(num_tasks)
        s, f = np.zeros((num_tasks, k)), np.zeros((num_tasks, k))
        rows = np.arange(num_tasks)
        for _ in range(n):
            arm = rng.beta(s + 1, f + 1).argmax(1) if name == "thompson" else rng.integers(0, k, num_tasks)
            r = rng.uniform(size=num_tasks) < probs[rows, arm]
            s[rows, arm] += r
            f[rows, arm] += ~r
            totals += r
        stderr = np.sqrt(ours.var() / num_tasks + totals.var() / num_tasks)
        assert abs(ours.mean() - totals.mean()) < 4 * stderr, (name, ours.mean(), totals.mean())
    assert (
        abs(float(bandits.play(bandits.random_arm, None, probs, n, key).sum(-1).mean()) - n * probs.mean())
        < 0.3
    )


def test_play_rejects_bad_task_shapes():
    with pytest.raises(ValueError, match="probs"):
        bandits.play(bandits.greedy, None, jnp.ones((4,)), 3, jax.random.PRNGKey(0))

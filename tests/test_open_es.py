"""OpenES against a numpy transcription of POET's ES step, centered ranks against numpy, and
convergence on a quadratic and on Rastrigin."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmeta.evolution import open_es


def numpy_centered_ranks(x):
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[x.ravel().argsort(kind="stable")] = np.arange(x.size)
    return (ranks.reshape(x.shape) / (x.size - 1)) - 0.5


def test_centered_ranks_match_numpy():
    x = np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)
    np.testing.assert_allclose(open_es.centered_ranks(jnp.asarray(x)), numpy_centered_ranks(x), atol=1e-6)


class NumpyPoetES:
    """POET's ESOptimizer step in numpy (compute_grads with normalize_grads_by_noise_std, then its Adam on
    -g + l2 * theta, decays)."""

    def __init__(self, theta, s: open_es.Settings):
        self.theta, self.s = theta.astype(np.float64), s
        self.m, self.v, self.t = np.zeros_like(self.theta), np.zeros_like(self.theta), 0
        self.sigma, self.lr = s.sigma_init, s.learning_rate

    def step(self, noise, returns_pos, returns_neg):
        returns = np.stack([returns_pos, returns_neg], axis=1)
        proc = numpy_centered_ranks(returns)
        grads = (proc[:, 0] - proc[:, 1]) @ noise / len(returns) / self.sigma
        g = -grads + self.s.l2_coeff * self.theta
        self.t += 1
        a = self.lr * np.sqrt(1 - self.s.beta2**self.t) / (1 - self.s.beta1**self.t)
        self.m = self.s.beta1 * self.m + (1 - self.s.beta1) * g
        self.v = self.s.beta2 * self.v + (1 - self.s.beta2) * g * g
        self.theta = self.theta - a * self.m / (np.sqrt(self.v) + self.s.epsilon)
        self.sigma = max(self.sigma * self.s.sigma_decay, self.s.sigma_limit)
        self.lr = max(self.lr * self.s.learning_rate_decay, self.s.learning_rate_limit)


def test_three_generations_match_a_numpy_transcription_of_poets_step():
    settings = open_es.Settings(
        population_size=16, sigma_decay=0.5, sigma_limit=0.03, learning_rate_decay=0.9
    )
    rng = np.random.default_rng(1)
    theta = rng.normal(size=5)
    reference = NumpyPoetES(theta, settings)
    state = open_es.init(jnp.asarray(theta, jnp.float32), settings)

    def fitness_fn(x):  # any fitness: a tilted quadratic
        return -jnp.sum((x - 1.0) ** 2 * jnp.arange(1, 6), axis=-1)

    for g in range(3):
        population, noise = open_es.ask(jax.random.PRNGKey(g), state, settings)
        np.testing.assert_allclose(population[:8], state.mean + state.sigma * noise, rtol=1e-6)
        np.testing.assert_allclose(population[8:], state.mean - state.sigma * noise, rtol=1e-6)
        fitness = fitness_fn(population)
        state = open_es.tell(state, noise, fitness, settings)
        reference.step(np.asarray(noise, np.float64), np.asarray(fitness[:8]), np.asarray(fitness[8:]))
        np.testing.assert_allclose(state.mean, reference.theta, rtol=1e-5, atol=1e-6)
        assert float(state.sigma) == pytest.approx(reference.sigma)
        assert float(state.learning_rate) == pytest.approx(reference.lr)


def test_sgd_proposal_leaves_the_state_and_moves_along_the_estimate():
    settings = open_es.Settings(population_size=8, l2_coeff=0.0)
    state = open_es.init(jnp.zeros(3), settings)
    population, noise = open_es.ask(jax.random.PRNGKey(0), state, settings)
    fitness = population[:, 0]  # fitness grows with the first coordinate
    proposal = open_es.propose(state, noise, fitness, settings)
    assert float(proposal[0]) > 0  # a step uphill
    direction = open_es.ascent_direction(noise, fitness, settings, state.sigma)
    np.testing.assert_allclose(proposal, state.learning_rate * direction, rtol=1e-6)
    unnormalised = open_es.ascent_direction(
        noise, fitness, dataclasses.replace(settings, normalize_by_sigma=False)
    )
    np.testing.assert_allclose(direction, unnormalised / state.sigma, rtol=1e-6)  # POET's flag: / sigma


def test_reset_optimizer_restarts_adam_and_sigma_but_keeps_the_step_size():
    settings = open_es.Settings(population_size=4, sigma_decay=0.5, learning_rate_decay=0.5)
    state = open_es.init(jnp.ones(3), settings)
    population, noise = open_es.ask(jax.random.PRNGKey(0), state, settings)
    state = open_es.tell(state, noise, population.sum(-1), settings)
    reset = open_es.reset_optimizer(state, settings, mean=jnp.full(3, 2.0))
    np.testing.assert_array_equal(np.asarray(reset.mean), [2.0, 2.0, 2.0])
    assert float(jnp.abs(reset.m).max()) == 0.0 and int(reset.t) == 0
    assert float(reset.sigma) == pytest.approx(
        settings.sigma_init
    )  # POET's set_theta: noise_std = init_noise_std
    assert float(reset.learning_rate) == float(state.learning_rate) == pytest.approx(0.005)  # kept


@pytest.mark.parametrize("bad", [{"population_size": 7}, {"population_size": 0}, {"sigma_init": 0.0}])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError, match=r"population_size|sigma_init"):
        open_es.Settings(**bad)


def run(fitness_fn, dim, generations, settings, start):
    def body(state, key):
        return open_es.step(key, state, fitness_fn, settings)

    state = open_es.init(jnp.full(dim, start, jnp.float32), settings)
    state, _ = jax.lax.scan(body, state, jax.random.split(jax.random.PRNGKey(0), generations))
    return state.mean


def test_converges_on_a_quadratic():
    settings = open_es.Settings(population_size=64, learning_rate=0.05, l2_coeff=0.0)
    mean = run(lambda x: -jnp.sum((x - 0.5) ** 2, axis=-1), 10, 400, settings, start=-2.0)
    np.testing.assert_allclose(mean, 0.5, atol=0.05)


def test_finds_the_global_optimum_of_rastrigin_from_a_few_basins_away():
    def rastrigin(x):  # maximised: minus the Rastrigin function, optimum 0 at the origin
        return -(10 * x.shape[-1] + jnp.sum(x**2 - 10 * jnp.cos(2 * jnp.pi * x), axis=-1))

    settings = open_es.Settings(
        population_size=256, sigma_init=1.0, sigma_decay=0.99, learning_rate=0.1, l2_coeff=0.0
    )
    mean = run(rastrigin, 5, 600, settings, start=3.0)
    assert float(-rastrigin(mean)) < 1.0, mean  # the global basin (the nearest local optima score ~1 or more)


def test_generations_equal_evosax_open_es_on_the_same_noise():
    """evosax 0.3's Open_ES minimises -fitness with centered ranks and optax Adam; with a constant sigma
    and no L2 its gradient is ours / 2 (ours divides by sigma too), a positive multiple that Adam's steps
    do not see."""
    pytest.importorskip(
        "evosax", reason="evosax (the bench extra) is not installed: pip install -e '.[bench]'"
    )
    import optax
    from evosax.algorithms import Open_ES

    dim, pop = 6, 32
    settings = open_es.Settings(
        population_size=pop, sigma_init=0.05, sigma_decay=1.0, learning_rate=0.01, l2_coeff=0.0
    )
    start = jnp.asarray(np.random.default_rng(2).normal(size=dim), jnp.float32)
    es = Open_ES(
        population_size=pop,
        solution=start,
        use_antithetic_sampling=True,
        optimizer=optax.adam(0.01),
        std_schedule=optax.constant_schedule(0.05),
    )
    params = es.default_params
    theirs = es.init(jax.random.PRNGKey(0), start, params)
    ours = open_es.init(start, settings)

    def fitness_fn(x):
        return -jnp.sum((x - 0.3) ** 2, axis=-1) + 0.1 * jnp.sin(5 * x).sum(-1)

    for g in range(5):
        population, theirs_asked = es.ask(jax.random.PRNGKey(10 + g), theirs, params)
        noise = (population[: pop // 2] - theirs.mean) / theirs.std  # their directions, fed to our tell
        fitness = fitness_fn(population)
        theirs, _ = es.tell(jax.random.PRNGKey(20 + g), population, -fitness, theirs_asked, params)
        ours = open_es.tell(ours, noise, fitness, settings)
        np.testing.assert_allclose(ours.mean, theirs.mean, rtol=1e-4, atol=1e-6)

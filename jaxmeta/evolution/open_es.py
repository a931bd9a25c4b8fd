"""OpenES as POET uses it (Wang et al. 2019; OpenAI's evolution strategies), as pure functions with an
explicit state: ``init``, ``ask``, ``tell``, and ``propose`` for POET's transfer attempts.

One generation (POET's ``ESOptimizer.get_step``): draw ``population_size / 2`` Gaussian directions and
evaluate the mirrored pairs ``mean +- sigma * eps`` (antithetic sampling); turn all returns into
centered ranks in [-0.5, 0.5]; the ascent direction is ``sum_i (r_i+ - r_i-) eps_i / (pairs)``; Adam
takes a step on ``-direction + l2_coeff * mean`` (a minimiser's gradient with L2 decay, so the search
*maximises* the fitness); then ``sigma`` and the step size decay geometrically to their floors.

Adam is the one of OpenAI's ES code that POET uses: ``a = lr * sqrt(1 - b2^t) / (1 - b1^t)``,
``step = -a * m / (sqrt(v) + eps)`` (epsilon added to the uncorrected ``sqrt(v)``).

The search runs on a flat parameter vector; :func:`jax.flatten_util.ravel_pytree` turns a policy's
pytree into one and back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import struct


@dataclasses.dataclass(frozen=True)
class Settings:
    """OpenES's hyper-parameters (defaults: POET's BipedalWalker runs)."""

    population_size: int = 512  # mirrored pairs: must be even
    sigma_init: float = 0.1
    sigma_decay: float = 0.999
    sigma_limit: float = 0.01
    learning_rate: float = 0.01
    learning_rate_decay: float = 1.0
    learning_rate_limit: float = 0.001
    l2_coeff: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8
    centered_ranks: bool = True  # else returns standardised to zero mean, unit variance
    # POET's runs (--normalize_grads_by_noise_std): the estimate divided by sigma, so that it scales
    # like the gradient of the smoothed fitness and the L2 term weighs less as sigma shrinks.
    normalize_by_sigma: bool = True

    def __post_init__(self) -> None:
        if self.population_size < 2 or self.population_size % 2:
            raise ValueError(
                f"population_size must be even and >= 2 (mirrored pairs), got {self.population_size}"
            )
        for name in ("sigma_init", "sigma_limit", "learning_rate", "learning_rate_limit"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


@struct.dataclass
class ESState:
    mean: jax.Array  # [D] the search distribution's centre: the current solution
    m: jax.Array  # Adam's first moment [D]
    v: jax.Array  # Adam's second moment [D]
    t: jax.Array  # Adam steps taken
    sigma: jax.Array
    learning_rate: jax.Array
    generation: jax.Array


def init(mean: jax.Array, settings: Settings) -> ESState:
    """A fresh search around ``mean`` (flat ``[D]``)."""
    zeros = jnp.zeros_like(mean)
    return ESState(
        mean=mean,
        m=zeros,
        v=zeros,
        t=jnp.zeros((), jnp.int32),
        sigma=jnp.asarray(settings.sigma_init, mean.dtype),
        learning_rate=jnp.asarray(settings.learning_rate, mean.dtype),
        generation=jnp.zeros((), jnp.int32),
    )


def reset_optimizer(state: ESState, settings: Settings, mean: jax.Array | None = None) -> ESState:
    """Adam's moments and ``sigma`` back to their start, the step size and generation kept, the mean
    replaced by ``mean`` if given: POET's ``set_theta(theta, reset_optimizer=True)`` when a transferred
    agent replaces a niche's own."""
    fresh = init(state.mean if mean is None else mean, settings)
    return fresh.replace(learning_rate=state.learning_rate, generation=state.generation)


def ask(key: jax.Array, state: ESState, settings: Settings) -> tuple[jax.Array, jax.Array]:
    """``(population [P, D], noise [P / 2, D])``: rows ``i`` and ``P/2 + i`` are
    ``mean +- sigma * noise_i``."""
    noise = jax.random.normal(key, (settings.population_size // 2, state.mean.shape[0]), state.mean.dtype)
    population = jnp.concatenate([state.mean + state.sigma * noise, state.mean - state.sigma * noise])
    return population, noise


def centered_ranks(x: jax.Array) -> jax.Array:
    """Ranks of all entries of ``x`` (0 for the smallest) scaled to [-0.5, 0.5], in ``x``'s shape
    (POET's ``compute_centered_ranks``; ties get distinct ranks in order of position)."""
    flat = x.reshape(-1)
    ranks = (
        jnp.empty(flat.shape, jnp.float32)
        .at[jnp.argsort(flat, stable=True)]
        .set(jnp.arange(flat.shape[0], dtype=jnp.float32))
    )
    return (ranks / (flat.shape[0] - 1) - 0.5).reshape(x.shape)


def ascent_direction(
    noise: jax.Array, fitness: jax.Array, settings: Settings, sigma: jax.Array | float = 1.0
) -> jax.Array:
    """The estimate of the fitness gradient from the mirrored pairs' ``fitness [P]`` (divided by
    ``sigma`` when ``settings.normalize_by_sigma``)."""
    pairs = fitness.reshape(2, -1).T  # [P / 2, 2]: (+, -) of each direction
    if settings.centered_ranks:
        shaped = centered_ranks(pairs)
    else:
        shaped = (pairs - pairs.mean()) / (pairs.std() + 1e-5)
    direction = (shaped[:, 0] - shaped[:, 1]) @ noise / pairs.shape[0]
    return direction / sigma if settings.normalize_by_sigma else direction


def _adam_step(
    state: ESState, gradient: jax.Array, settings: Settings
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    t = state.t + 1
    a = state.learning_rate * jnp.sqrt(1 - settings.beta2**t) / (1 - settings.beta1**t)
    m = settings.beta1 * state.m + (1 - settings.beta1) * gradient
    v = settings.beta2 * state.v + (1 - settings.beta2) * gradient**2
    return -a * m / (jnp.sqrt(v) + settings.epsilon), m, v, t


def tell(state: ESState, noise: jax.Array, fitness: jax.Array, settings: Settings) -> ESState:
    """One generation's update from the fitness of the population :func:`ask` returned (maximised)."""
    gradient = -ascent_direction(noise, fitness, settings, state.sigma) + settings.l2_coeff * state.mean
    step, m, v, t = _adam_step(state, gradient, settings)
    return ESState(
        mean=state.mean + step,
        m=m,
        v=v,
        t=t,
        sigma=jnp.maximum(state.sigma * settings.sigma_decay, settings.sigma_limit),
        learning_rate=jnp.maximum(
            state.learning_rate * settings.learning_rate_decay, settings.learning_rate_limit
        ),
        generation=state.generation + 1,
    )


def propose(
    state: ESState, noise: jax.Array, fitness: jax.Array, settings: Settings, use_adam: bool = False
) -> jax.Array:
    """The mean one generation would move to, leaving the state as it is: POET's proposal for a
    transfer attempt (plain SGD by default, as POET's ``evaluate_transfer``; Adam's step if ``use_adam``)."""
    gradient = -ascent_direction(noise, fitness, settings, state.sigma) + settings.l2_coeff * state.mean
    if use_adam:
        return state.mean + _adam_step(state, gradient, settings)[0]
    return state.mean - state.learning_rate * gradient


def step(
    key: jax.Array, state: ESState, fitness_fn: Callable[[jax.Array], jax.Array], settings: Settings
) -> tuple[ESState, jax.Array]:
    """One ES step: ask, evaluate the population with ``fitness_fn([P, D]) -> [P]`` (vmapped rollouts),
    tell. Returns the new state and the population's fitness."""
    population, noise = ask(key, state, settings)
    fitness = fitness_fn(population)
    return tell(state, noise, fitness, settings), fitness


__all__ = [
    "ESState",
    "Settings",
    "ascent_direction",
    "ask",
    "centered_ranks",
    "init",
    "propose",
    "reset_optimizer",
    "step",
    "tell",
]

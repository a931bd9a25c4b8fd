"""The classic Bernoulli-bandit policies of RL^2's comparison (Duan et al. 2016, Table 1), as pure JAX.

Every policy here chooses an arm from the counts of successes and failures of each arm so far (and,
for some, the number of pulls so far and a random key), so one function plays a whole trial of ``n``
pulls with a ``lax.scan`` and ``vmap`` runs it on thousands of tasks at once (:func:`play`).

A policy is ``choose(counts, pulls_so_far, key, setting) -> arm`` where ``counts`` is an
:class:`ArmCounts` of one task and ``setting`` is the policy's one hyper-parameter (a pytree: a float,
an int, or Gittins' index table). The registry :data:`POLICIES` names them as the RL^2 table does:

- ``random``: a uniformly random arm.
- ``greedy``: the arm with the highest posterior mean ``(s + 1) / (s + f + 2)`` under a Beta(1, 1) prior
  (an untried arm counts as 0.5, so greedy still tries arms while those it knows look bad).
- ``epsilon_greedy``: greedy, but with probability ``epsilon`` (the setting) a uniformly random arm.
- ``ucb1``: UCB1 (Auer et al. 2002) on the posterior mean, ``mean + c sqrt(2 ln t / (s + f + 2))``
  with the bonus scale ``c`` the setting (``t``: pulls so far; at ``t <= 1`` the bonus is 0).
- ``thompson``: Thompson sampling, the arm whose Beta(s + 1, f + 1) draw is highest.
- ``optimistic_thompson``: the RL^2 authors' "optimistic" Thompson sampling: draw ``m`` (the setting)
  posterior draws of all arms, keep the one of highest posterior density, play its best arm.
  Larger ``m`` moves it from Thompson sampling (``m = 1``) towards greedy on the posterior mode.
  (Chapelle & Li's optimistic TS, ``max(draw, mean)``, is ``optimistic_thompson_mean``.)
- ``gittins``: the arm of highest Gittins index, read from a table over ``(s, f)`` computed for a
  discount (:func:`gittins_indices`).

Ties go to the lowest arm (``argmax``); arms are i.i.d. in every task, so this favours no arm.
Hyper-parameters the RL^2 authors tuned per setting (their baseline code: ``c`` of UCB1 over
``0, 0.1, ..., 1``, ``epsilon`` over ``0, 0.1, ..., 1``, ``m`` of optimistic TS over ``1..20``) are
tuned here the same way with :func:`tune`, on tasks apart from those the table is measured on.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class ArmCounts(NamedTuple):
    """Successes and failures of each arm so far, float32 ``[k]`` each."""

    successes: jax.Array
    failures: jax.Array

    @property
    def pulls(self) -> jax.Array:
        return self.successes + self.failures

    def posterior_mean(self) -> jax.Array:
        """Mean of the Beta(1 + s, 1 + f) posterior of each arm."""
        return (self.successes + 1.0) / (self.pulls + 2.0)


Choose = Callable[[ArmCounts, jax.Array, jax.Array, Any], jax.Array]


# ----------------------------------------------------------------------------- sampling
def gamma_sample(key: jax.Array, shape_param: jax.Array) -> jax.Array:
    """Gamma(``shape_param``, 1) draws for shape parameters >= 1, by Marsaglia & Tsang (2000).

    Exact rejection sampling done for the whole array at once: every round proposes for all entries
    and keeps the first accepted proposal of each, until all are accepted (each round accepts with
    probability > 0.95, so ~5 rounds cover 1e6 entries). About 4x faster on the CPU than
    ``jax.random.gamma``, which runs a rejection loop per entry; posterior draws of Beta(1 + s, 1 + f)
    arms never need shapes below 1.
    """
    shape_param = jnp.asarray(shape_param, jnp.float32)
    d = shape_param - 1.0 / 3.0
    c = 1.0 / jnp.sqrt(9.0 * d)

    def propose(state: tuple) -> tuple:
        key, draws, accepted = state
        key, normal_key, uniform_key = jax.random.split(key, 3)
        z = jax.random.normal(normal_key, d.shape)
        u = jax.random.uniform(uniform_key, d.shape)
        v = (1.0 + c * z) ** 3
        log_v = jnp.log(jnp.where(v > 0, v, 1.0))
        accept = (v > 0) & (jnp.log(u) < 0.5 * z * z + d - d * v + d * log_v)
        draws = jnp.where(accept & ~accepted, d * v, draws)
        return key, draws, accepted | accept

    init = (key, jnp.zeros_like(d), jnp.zeros(d.shape, bool))
    _, draws, _ = jax.lax.while_loop(lambda state: ~state[2].all(), propose, init)
    return draws


def beta_sample(
    key: jax.Array, a: jax.Array, b: jax.Array, shape: tuple[int, ...] | None = None
) -> jax.Array:
    """Beta(``a``, ``b``) draws for ``a, b >= 1`` as ``X / (X + Y)`` of two Gamma draws
    (:func:`gamma_sample`); ``shape`` defaults to the broadcast shape of ``a`` and ``b``."""
    a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
    shape = jnp.broadcast_shapes(a.shape, b.shape) if shape is None else shape
    a_key, b_key = jax.random.split(key)
    x = gamma_sample(a_key, jnp.broadcast_to(a, shape))
    y = gamma_sample(b_key, jnp.broadcast_to(b, shape))
    return x / (x + y)


# ----------------------------------------------------------------------------- the policies
def random_arm(counts: ArmCounts, t: jax.Array, key: jax.Array, setting: Any = None) -> jax.Array:
    return jax.random.randint(key, (), 0, counts.successes.shape[-1], jnp.int32)


def greedy(counts: ArmCounts, t: jax.Array, key: jax.Array, setting: Any = None) -> jax.Array:
    return jnp.argmax(counts.posterior_mean()).astype(jnp.int32)


def epsilon_greedy(counts: ArmCounts, t: jax.Array, key: jax.Array, epsilon: Any) -> jax.Array:
    explore_key, arm_key = jax.random.split(key)
    explore = jax.random.uniform(explore_key) < epsilon
    return jnp.where(explore, random_arm(counts, t, arm_key), greedy(counts, t, key))


def ucb1(counts: ArmCounts, t: jax.Array, key: jax.Array, c: Any) -> jax.Array:
    log_t = jnp.log(jnp.maximum(t, 1).astype(jnp.float32))
    bonus = c * jnp.sqrt(2.0 * log_t / (counts.pulls + 2.0))
    return jnp.argmax(counts.posterior_mean() + bonus).astype(jnp.int32)


def thompson(counts: ArmCounts, t: jax.Array, key: jax.Array, setting: Any = None) -> jax.Array:
    draws = beta_sample(key, counts.successes + 1.0, counts.failures + 1.0)
    return jnp.argmax(draws).astype(jnp.int32)


def beta_log_density(x: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
    """``log Beta(x; a, b)``, elementwise."""
    log_norm = jax.scipy.special.gammaln(a + b) - jax.scipy.special.gammaln(a) - jax.scipy.special.gammaln(b)
    return log_norm + (a - 1.0) * jnp.log(x) + (b - 1.0) * jnp.log1p(-x)


def optimistic_thompson(counts: ArmCounts, t: jax.Array, key: jax.Array, num_samples: int) -> jax.Array:
    """The RL^2 authors' optimistic TS: of ``num_samples`` joint posterior draws (a Python int: it sets
    the shape of the draws), the most probable one decides."""
    a, b = counts.successes + 1.0, counts.failures + 1.0
    draws = beta_sample(key, a, b, (int(num_samples), a.shape[-1]))
    draws = jnp.clip(draws, 1e-7, 1.0 - 1e-7)  # a draw of exactly 0 or 1 has log density -inf or inf
    log_density = beta_log_density(draws, a, b).sum(-1)
    return jnp.argmax(draws[jnp.argmax(log_density)]).astype(jnp.int32)


def optimistic_thompson_mean(
    counts: ArmCounts, t: jax.Array, key: jax.Array, setting: Any = None
) -> jax.Array:
    """Optimistic TS of Chapelle & Li (2011): each arm's draw is raised to at least its posterior mean."""
    draws = beta_sample(key, counts.successes + 1.0, counts.failures + 1.0)
    return jnp.argmax(jnp.maximum(draws, counts.posterior_mean())).astype(jnp.int32)


def gittins(counts: ArmCounts, t: jax.Array, key: jax.Array, table: jax.Array) -> jax.Array:
    """The arm of highest index ``table[s, f]`` (:func:`gittins_indices`)."""
    s = counts.successes.astype(jnp.int32)
    f = counts.failures.astype(jnp.int32)
    return jnp.argmax(table[s, f]).astype(jnp.int32)


# ----------------------------------------------------------------------------- Gittins indices
def gittins_indices(
    max_pulls: int,
    discount: float,
    depth: int | None = None,
    grid_size: int = 1024,
) -> jax.Array:
    """Gittins indices of a Bernoulli arm with a Beta(1, 1) prior, for discount ``discount``, by
    calibration: float32 ``[max_pulls, max_pulls]``, entry ``[s, f]`` for ``s + f < max_pulls``.

    The index of a state is the per-pull reward ``lambda`` of a safe arm at which one is indifferent
    between retiring to it for ever (worth ``lambda / (1 - discount)``) and pulling the arm once more and
    acting optimally after. For each ``lambda`` of a grid of ``grid_size`` on [0, 1], one backward
    dynamic programme over all states ``(s, f)`` with ``s + f <= depth`` gives, for every state, the
    advantage of pulling over retiring, which falls as ``lambda`` rises; the index is where it crosses
    zero, interpolated linearly between grid points. At the lattice's edge ``s + f = depth`` the arm's
    mean is taken as known (value ``max(lambda, p) / (1 - discount)``); ``depth`` defaults to
    ``max_pulls + 10 / (1 - discount)`` (at most ``max_pulls + 3000``), where that approximation's effect,
    discounted by ``discount^(depth - s - f)``, is negligible.
    """
    if not 0.0 < discount < 1.0:
        raise ValueError(f"discount must be in (0, 1), got {discount}")
    if max_pulls < 1:
        raise ValueError(f"max_pulls must be >= 1, got {max_pulls}")
    if depth is None:
        depth = max_pulls + min(math.ceil(10.0 / (1.0 - discount)), 3000)
    if depth < max_pulls:
        raise ValueError(f"depth={depth} must be >= max_pulls={max_pulls}")
    return _gittins_indices(max_pulls, float(discount), int(depth), int(grid_size))


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _gittins_indices(max_pulls: int, discount: float, depth: int, grid_size: int) -> jax.Array:
    lam = jnp.linspace(0.0, 1.0, grid_size, dtype=jnp.float32)  # [G]
    retire = lam / (1.0 - discount)  # [G]
    s = jnp.arange(depth + 1, dtype=jnp.float32)  # successes; at level m the failures are m - s

    def mean_at(level: jax.Array) -> jax.Array:
        return (s + 1.0) / (level.astype(jnp.float32) + 2.0)

    edge = jnp.maximum(retire[:, None], mean_at(jnp.int32(depth))[None, :] / (1.0 - discount))  # [G, S]

    def level_step(value_next: jax.Array, level: jax.Array) -> tuple[jax.Array, jax.Array]:
        p = mean_at(level)[None, :]
        after_success = jnp.concatenate([value_next[:, 1:], value_next[:, -1:]], axis=1)  # V(s + 1, f)
        pull = p * (1.0 + discount * after_success) + (1.0 - p) * discount * value_next
        advantage = pull - retire[:, None]  # decreasing in lambda
        last_positive = jnp.clip((advantage > 0).sum(0) - 1, 0, grid_size - 2)  # [S]
        lo = jnp.take_along_axis(advantage, last_positive[None, :], 0)[0]
        hi = jnp.take_along_axis(advantage, last_positive[None, :] + 1, 0)[0]
        fraction = jnp.clip(lo / jnp.where(lo - hi > 0, lo - hi, 1.0), 0.0, 1.0)
        index = (last_positive + fraction) / (grid_size - 1)
        return jnp.maximum(retire[:, None], pull), index

    levels = jnp.arange(depth - 1, -1, -1)
    _, rows = jax.lax.scan(level_step, edge, levels)  # rows[i]: level depth - 1 - i, indexed by s
    rows = rows[::-1][:max_pulls]  # [m, s] for m < max_pulls
    m = jnp.arange(max_pulls)[:, None]
    succ = jnp.arange(max_pulls)[None, :]
    f = m - succ
    table = jnp.zeros((max_pulls, max_pulls), jnp.float32)
    valid = f >= 0
    return table.at[jnp.where(valid, succ, max_pulls), jnp.where(valid, f, 0)].set(
        rows[:, :max_pulls], mode="drop"
    )


# ----------------------------------------------------------------------------- playing trials
def play(
    choose: Choose,
    setting: Any,
    probs: jax.Array,
    num_pulls: int,
    key: jax.Array,
    static_setting: bool = False,
) -> jax.Array:
    """Rewards of ``choose`` playing ``num_pulls`` pulls on each task: ``probs [T, k]`` -> ``[T, n]``.

    ``setting`` is passed to ``choose`` as an array (one compiled program for every value) or, with
    ``static_setting``, as the Python value itself (a program per value; for settings that fix shapes,
    like the number of draws of optimistic Thompson sampling).

    Pull ``t`` of task ``i`` uses ``fold_in(split(key, T)[i], t)``: its reward draw and the policy's draw
    come from separate splits of it, so two policies played with the same key meet the same reward
    draws (common random numbers: a reward is 1 where the pull's uniform is below the arm's p).
    """
    return play_with_arms(choose, setting, probs, num_pulls, key, static_setting)[0]


def play_with_arms(
    choose: Choose,
    setting: Any,
    probs: jax.Array,
    num_pulls: int,
    key: jax.Array,
    static_setting: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """:func:`play`, also returning the arm of every pull: ``(rewards [T, n], arms [T, n])``."""
    probs = jnp.asarray(probs, jnp.float32)
    if probs.ndim != 2 or probs.shape[-1] < 2:
        raise ValueError(f"probs must be [tasks, arms >= 2], got shape {probs.shape}")
    if static_setting:
        return _play(_with_setting(choose, setting), None, probs, int(num_pulls), key)
    return _play(choose, setting, probs, int(num_pulls), key)


@functools.cache
def _with_setting(choose: Choose, setting: Any) -> Choose:
    """``choose`` with a fixed Python setting; cached, so that ``_play`` compiles once per value."""

    def fixed(counts: ArmCounts, t: jax.Array, key: jax.Array, unused: Any) -> jax.Array:
        return choose(counts, t, key, setting)

    return fixed


@functools.partial(jax.jit, static_argnums=(0, 3))
def _play(
    choose: Choose, setting: Any, probs: jax.Array, num_pulls: int, key: jax.Array
) -> tuple[jax.Array, jax.Array]:
    num_arms = probs.shape[-1]

    def one_task(task_probs: jax.Array, task_key: jax.Array) -> tuple[jax.Array, jax.Array]:
        def pull(counts: ArmCounts, t: jax.Array) -> tuple[ArmCounts, tuple[jax.Array, jax.Array]]:
            reward_key, policy_key = jax.random.split(jax.random.fold_in(task_key, t))
            arm = choose(counts, t, policy_key, setting)
            reward = (jax.random.uniform(reward_key) < task_probs[arm]).astype(jnp.float32)
            one_hot = jax.nn.one_hot(arm, num_arms, dtype=jnp.float32)
            counts = ArmCounts(
                counts.successes + reward * one_hot, counts.failures + (1.0 - reward) * one_hot
            )
            return counts, (reward, arm)

        zeros = jnp.zeros((num_arms,), jnp.float32)
        return jax.lax.scan(pull, ArmCounts(zeros, zeros), jnp.arange(num_pulls))[1]

    return jax.vmap(one_task)(probs, jax.random.split(key, probs.shape[0]))


def uniform_tasks(key: jax.Array, num_tasks: int, num_arms: int) -> jax.Array:
    """``[num_tasks, num_arms]`` arm probabilities i.i.d. uniform on [0, 1] (RL^2's tasks)."""
    return jax.random.uniform(key, (num_tasks, num_arms), jnp.float32)


@dataclasses.dataclass(frozen=True)
class Policy:
    """A registered policy: its ``choose`` function and the grid its setting is tuned over (empty: none)."""

    name: str
    choose: Choose
    grid: tuple[Any, ...] = ()
    setting_name: str = ""
    static_setting: bool = False


POLICIES: dict[str, Policy] = {
    "random": Policy("random", random_arm),
    "gittins": Policy("gittins", gittins, (), "discount"),
    "thompson": Policy("thompson", thompson),
    # The RL^2 authors searched m over 1..20; each m costs m Beta draws per arm and pull, so this grid
    # keeps 8 of those values.
    "optimistic_thompson": Policy(
        "optimistic_thompson", optimistic_thompson, (1, 2, 3, 5, 7, 10, 14, 20), "m", static_setting=True
    ),
    "ucb1": Policy("ucb1", ucb1, tuple(round(0.1 * i, 1) for i in range(11)), "c"),
    "epsilon_greedy": Policy(
        "epsilon_greedy", epsilon_greedy, tuple(round(0.1 * i, 1) for i in range(11)), "epsilon"
    ),
    "greedy": Policy("greedy", greedy),
    "optimistic_thompson_mean": Policy("optimistic_thompson_mean", optimistic_thompson_mean),
}


def tune(
    policy: Policy, probs: jax.Array, num_pulls: int, key: jax.Array, grid: Any = None
) -> tuple[int, np.ndarray]:
    """``(position of the best setting, mean total reward of each setting)`` of ``policy`` on tasks
    ``probs``, over ``grid`` (default: the policy's own)."""
    grid = policy.grid if grid is None else grid
    means = np.array(
        [
            float(play(policy.choose, value, probs, num_pulls, key, policy.static_setting).sum(-1).mean())
            for value in grid
        ]
    )
    return int(np.argmax(means)), means


__all__ = [
    "POLICIES",
    "ArmCounts",
    "Policy",
    "beta_log_density",
    "beta_sample",
    "epsilon_greedy",
    "gamma_sample",
    "gittins",
    "gittins_indices",
    "greedy",
    "optimistic_thompson",
    "optimistic_thompson_mean",
    "play",
    "play_with_arms",
    "random_arm",
    "thompson",
    "tune",
    "ucb1",
    "uniform_tasks",
]

"""The MAML paper's sinusoid regression tasks (Finn et al. 2017, section 5.1), as pure functions.

A task is ``y = amplitude * sin(x - phase)`` with amplitude ~ U[0.1, 5] and phase ~ U[0, pi]; inputs
x ~ U[-5, 5]. A learner sees K (x, y) points of a new task and must predict the whole curve.
:func:`adaptation_mse` is the evaluation of the MAML paper's Fig. 2 and Meta-SGD's Table 1: the mean
squared error on held-out points of each test task after 0, 1, ..., S gradient steps on its K points.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxmeta.meta.inner import adaptation_losses
from jaxmeta.nets.mlp import MLP

AMPLITUDE = (0.1, 5.0)
PHASE = (0.0, float(jnp.pi))
INPUT_RANGE = (-5.0, 5.0)

Batch = tuple[jax.Array, jax.Array]  # (x [..., K, 1], y [..., K, 1])


class SinusoidTasks(NamedTuple):
    amplitude: jax.Array  # [num_tasks]
    phase: jax.Array  # [num_tasks]


def sample_tasks(key: jax.Array, num_tasks: int) -> SinusoidTasks:
    """``num_tasks`` sinusoids with amplitude ~ U[0.1, 5] and phase ~ U[0, pi]."""
    amplitude_key, phase_key = jax.random.split(key)
    return SinusoidTasks(
        jax.random.uniform(amplitude_key, (num_tasks,), minval=AMPLITUDE[0], maxval=AMPLITUDE[1]),
        jax.random.uniform(phase_key, (num_tasks,), minval=PHASE[0], maxval=PHASE[1]),
    )


def task_values(tasks: SinusoidTasks, x: jax.Array) -> jax.Array:
    """``y`` for inputs ``x [num_tasks, K, 1]``."""
    return tasks.amplitude[:, None, None] * jnp.sin(x - tasks.phase[:, None, None])


def sample_points(key: jax.Array, tasks: SinusoidTasks, num_points: int) -> Batch:
    """``num_points`` inputs ~ U[-5, 5] per task and their values: ``([T, K, 1], [T, K, 1])``."""
    x = jax.random.uniform(
        key, (tasks.amplitude.shape[0], num_points, 1), minval=INPUT_RANGE[0], maxval=INPUT_RANGE[1]
    )
    return x, task_values(tasks, x)


def regressor(hidden_sizes: Sequence[int]) -> MLP:
    """The MAML paper's network: ReLU layers of ``hidden_sizes`` (40, 40) and one linear output."""
    return MLP((*hidden_sizes, 1))


def mse_loss(apply_fn: Callable[[Any, jax.Array], jax.Array]) -> Callable[[Any, Batch], jax.Array]:
    """``loss(params, (x, y)) = mean((apply_fn(params, x) - y) ** 2)``: the inner and outer loss."""

    def loss(params: Any, batch: Batch) -> jax.Array:
        x, y = batch
        return jnp.mean((apply_fn(params, x) - y) ** 2)

    return loss


def adaptation_mse(
    apply_fn: Callable[[Any, jax.Array], jax.Array],
    params: Any,
    support: Batch,
    query: Batch,
    num_steps: int,
    step_size: Any,
) -> jax.Array:
    """Per task, the query MSE after 0 .. ``num_steps`` SGD steps of ``step_size`` on its support
    points (a float, or Meta-SGD's learned step sizes): ``[num_tasks, num_steps + 1]``."""
    loss = mse_loss(apply_fn)

    def one(s: Batch, q: Batch) -> jax.Array:
        return adaptation_losses(loss, params, s, loss, q, num_steps, step_size)

    return jax.vmap(one)(support, query)


def held_out_set(key: jax.Array, num_tasks: int, k_shot: int, num_query: int) -> tuple[Batch, Batch]:
    """Held-out tasks with ``k_shot`` support and ``num_query`` query points each (fixed by ``key``)."""
    _, support_key, query_key = jax.random.split(key, 3)
    tasks = held_out_tasks(key, num_tasks)
    return sample_points(support_key, tasks, k_shot), sample_points(query_key, tasks, num_query)


def held_out_tasks(key: jax.Array, num_tasks: int) -> SinusoidTasks:
    """The sinusoids of :func:`held_out_set` with the same ``key``."""
    return sample_tasks(jax.random.split(key, 3)[0], num_tasks)

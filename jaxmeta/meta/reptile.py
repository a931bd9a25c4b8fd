"""Reptile (Nichol et al. 2018), batched over tasks as in the meta-imitation seed's Algorithm 2.

Each task's parameters take ``k`` optimiser steps from the shared initialisation (SGD or Adam: any optax
transformation, with a fresh optimiser state per task), one minibatch per step; the outer step moves the
initialisation toward the adapted parameters, ``phi <- phi + beta * mean_i(phi_i - phi)``. (The seed's
Algorithm 2 prints ``phi - beta / k * sum``, a typo: with a minus sign the update would move away from
the adapted parameters; Nichol et al.'s batched version is the mean with a plus sign.)
"""

from __future__ import annotations

from typing import Any

import jax
import optax

from jaxmeta.meta.inner import LossFn


def reptile_adapt(loss_fn: LossFn, params: Any, batches: Any, optimizer: optax.GradientTransformation) -> Any:
    """One task's adapted parameters: one ``optimizer`` step per minibatch along the leading axis of
    ``batches`` (``k`` = that axis' length), starting from ``params`` and a fresh optimiser state."""

    def step(carry: tuple[Any, Any], batch: Any) -> tuple[tuple[Any, Any], None]:
        current, opt_state = carry
        grads = jax.grad(loss_fn)(current, batch)
        updates, opt_state = optimizer.update(grads, opt_state, current)
        return (optax.apply_updates(current, updates), opt_state), None

    return jax.lax.scan(step, (params, optimizer.init(params)), batches)[0][0]


def reptile_direction(params: Any, adapted: Any) -> Any:
    """``mean_i(phi_i - phi)`` over the tasks stacked on the leading axis of ``adapted``."""
    return jax.tree.map(lambda p, a: (a - p[None]).mean(0), params, adapted)


def reptile_step(
    loss_fn: LossFn,
    params: Any,
    task_batches: Any,
    optimizer: optax.GradientTransformation,
    outer_step_size: float | jax.Array,
) -> Any:
    """Batched Reptile: adapt to every task (leading axis of ``task_batches``; then one minibatch per
    inner step), then ``phi + outer_step_size * mean_i(phi_i - phi)``."""
    adapted = jax.vmap(lambda b: reptile_adapt(loss_fn, params, b, optimizer))(task_batches)
    direction = reptile_direction(params, adapted)
    return jax.tree.map(lambda p, d: p + outer_step_size * d, params, direction)

"""MAML's outer objective (Finn et al. 2017; MIL's equation 1): the loss after adaptation, averaged over
a batch of tasks, to be differentiated with respect to the initial parameters (and learned step sizes).

A task is a pair of batches, ``support`` (what the inner loop adapts on) and ``query`` (what the adapted
parameters are judged on); a batch of tasks stacks them on a leading axis. ``inner_loss`` and
``outer_loss`` may differ: MIL's two-head network computes the inner loss with one head and the outer
loss with the other, both functions of the same parameter pytree.

    meta_grads = jax.grad(maml_loss)(params, support, query, inner_loss=mse, num_steps=1, step_size=0.01)

``first_order=True`` is first-order MAML: the inner gradients are constants, so the meta-gradient is
the query-loss gradient at the adapted parameters.
"""

from __future__ import annotations

import functools
from typing import Any

import jax

from jaxmeta.meta.inner import LossFn, adapt


def task_loss(
    params: Any,
    support: Any,
    query: Any,
    *,
    inner_loss: LossFn,
    num_steps: int,
    step_size: Any,
    outer_loss: LossFn | None = None,
    first_order: bool = False,
) -> jax.Array:
    """One task's post-adaptation loss ``outer_loss(adapt(params, support), query)``."""
    adapted = adapt(inner_loss, params, support, num_steps, step_size, first_order)
    return (outer_loss or inner_loss)(adapted, query)


def maml_loss(
    params: Any,
    support: Any,
    query: Any,
    *,
    inner_loss: LossFn,
    num_steps: int,
    step_size: Any,
    outer_loss: LossFn | None = None,
    first_order: bool = False,
) -> jax.Array:
    """The mean of :func:`task_loss` over the tasks stacked on the leading axis of ``support`` and
    ``query`` (vmapped). ``step_size`` (a float or a Meta-SGD pytree) is shared by all tasks; to
    meta-learn it, differentiate a function of ``(params, step_size)`` that calls this."""

    one = functools.partial(
        task_loss,
        params,
        inner_loss=inner_loss,
        num_steps=num_steps,
        step_size=step_size,
        outer_loss=outer_loss,
        first_order=first_order,
    )
    return jax.vmap(one)(support, query).mean()

"""The inner loop of gradient-based meta-learning, for any pytree of parameters.

``adapt`` takes ``num_steps`` plain gradient steps on one task's loss,
``theta <- theta - step_size * grad L(theta)`` (MAML's equation 1; MIL's equation 1 in
``../shared/seeds/meta-imitation-reptile-lrre-memory.txt``). It is a pure function: jit, vmap over
tasks and differentiate through it (second order: the meta-gradient flows through the inner gradients;
``first_order=True`` treats them as constants, first-order MAML). ``step_size`` is a float, or a
pytree shaped like the parameters for per-parameter learned step sizes (Meta-SGD, Li et al. 2017),
which the outer objective can then train too.

    def loss_fn(params, batch):               # any model: flax, haiku, plain arrays
        x, y = batch
        return jnp.mean((model.apply(params, x) - y) ** 2)

    adapted = adapt(loss_fn, params, (x_support, y_support), num_steps=1, step_size=0.01)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

LossFn = Callable[[Any, Any], jax.Array]


def check_inner_loop(num_steps: int, step_size: Any = None) -> None:
    """A ``ValueError`` (one line) for a negative step count or a fixed step size <= 0."""
    if not isinstance(num_steps, int) or num_steps < 0:
        raise ValueError(f"num_steps must be an integer >= 0, got {num_steps!r}")
    if isinstance(step_size, int | float) and not step_size > 0:
        raise ValueError(f"step_size must be > 0, got {step_size!r}")


def _scale_like(step_size: Any, params: Any) -> Any:
    """``step_size`` as a pytree of the parameters' structure (a float is used for every leaf)."""
    if jax.tree.structure(step_size) == jax.tree.structure(params):
        return step_size
    if jnp.ndim(step_size) != 0:
        raise ValueError(
            "step_size must be a scalar or a pytree with the parameters' structure "
            f"({jax.tree.structure(params)}), got {jax.tree.structure(step_size)}"
        )
    return jax.tree.map(lambda _: step_size, params)


def sgd_step(loss_fn: LossFn, params: Any, batch: Any, step_size: Any, first_order: bool = False) -> Any:
    """One gradient step on ``loss_fn(params, batch)``; ``first_order`` stops the gradient through the
    inner gradient (dtheta'/dtheta = I)."""
    grads = jax.grad(loss_fn)(params, batch)
    if first_order:
        grads = jax.lax.stop_gradient(grads)
    return jax.tree.map(lambda p, a, g: p - a * g, params, _scale_like(step_size, params), grads)


def adapt(
    loss_fn: LossFn,
    params: Any,
    batch: Any,
    num_steps: int,
    step_size: Any,
    first_order: bool = False,
) -> Any:
    """``num_steps`` (static, >= 0) gradient steps of size ``step_size`` on ``loss_fn(params, batch)``,
    the same batch every step, as MAML does with a task's K examples. Returns the adapted parameters."""
    check_inner_loop(num_steps, step_size)
    if num_steps == 0:
        return params

    def step(current: Any, _: None) -> tuple[Any, None]:
        return sgd_step(loss_fn, current, batch, step_size, first_order), None

    # Unrolled for the few steps meta-learning takes: a scan's loop costs more than one small step.
    return jax.lax.scan(step, params, None, length=num_steps, unroll=min(num_steps, 8))[0]


def adaptation_losses(
    loss_fn: LossFn,
    params: Any,
    batch: Any,
    eval_fn: LossFn,
    eval_batch: Any,
    num_steps: int,
    step_size: Any,
) -> jax.Array:
    """``eval_fn(theta_j, eval_batch)`` after j = 0 .. ``num_steps`` steps on ``batch``: the curve of
    MAML's Fig. 2 (error on held-out points against the number of gradient steps), ``[num_steps + 1]``."""
    check_inner_loop(num_steps, step_size)

    def step(current: Any, _: None) -> tuple[Any, jax.Array]:
        return sgd_step(loss_fn, current, batch, step_size), eval_fn(current, eval_batch)

    final, before = jax.lax.scan(step, params, None, length=num_steps)
    return jnp.concatenate([before, eval_fn(final, eval_batch)[None]])


def learned_step_sizes(params: Any, initial: float) -> Any:
    """Meta-SGD's per-parameter step sizes, all ``initial`` at the start: a pytree like ``params``."""
    check_inner_loop(0, initial)
    return jax.tree.map(lambda p: jnp.full_like(p, initial), params)

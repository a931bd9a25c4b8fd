"""Pieces of policy-gradient methods (PPO, Schulman et al., 2017) that any actor-critic can reuse.

* :func:`discounted_returns`: Monte-Carlo return-to-go within each episode;
* :func:`gae`: generalised advantage estimation and its value targets;
* :func:`surrogate_loss`: PPO's clipped surrogate objective, value regression
  and entropy bonus over a masked batch of steps, for any action distribution
  (given its log-probabilities and entropies);
* :func:`clipped_loss`: the same for a categorical policy given its logits.

Arrays are time-major: axis 0 is time, any further axes are batch axes.
``dones[t]`` says that the episode ended at step ``t`` (terminated, or
truncated when the time limit is part of the task): nothing after such a step
is bootstrapped into it. Step masks are boolean, ``True`` = a real step.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def masked_mean(x: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Mean of ``x`` over the entries where ``mask`` is true (0 if none); over all of them if ``None``."""
    if mask is None:
        return x.mean()
    mask = mask.astype(x.dtype)
    return (x * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def discounted_returns(
    rewards: jax.Array, dones: jax.Array, gamma: float, last_value: Any = 0.0
) -> jax.Array:
    """``G_t = r_t + gamma * (1 - done_t) * G_{t+1}``, with ``G_T = last_value``.

    ``last_value`` bootstraps the steps after the last one (0: the data ends
    an episode, or the cut-off episode is masked out by the caller).
    """
    not_done = 1.0 - dones.astype(rewards.dtype)
    last = jnp.broadcast_to(jnp.asarray(last_value, rewards.dtype), rewards.shape[1:])

    def _step(next_return: jax.Array, step: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        reward, continues = step
        ret = reward + gamma * continues * next_return
        return ret, ret

    _, returns = jax.lax.scan(_step, last, (rewards, not_done), reverse=True)
    return returns


def gae(
    rewards: jax.Array,
    values: jax.Array,
    dones: jax.Array,
    last_value: Any,
    gamma: float,
    lam: float,
) -> tuple[jax.Array, jax.Array]:
    """Generalised advantage estimates and value targets ``(advantages, advantages + values)``.

    ``values[t] = V(o_t)``; ``last_value = V`` of the observation after the
    last step. ``delta_t = r_t + gamma (1 - done_t) V(o_{t+1}) - V(o_t)`` and
    ``A_t = delta_t + gamma lam (1 - done_t) A_{t+1}``.
    """
    not_done = 1.0 - dones.astype(rewards.dtype)
    last = jnp.broadcast_to(jnp.asarray(last_value, values.dtype), values.shape[1:])
    next_values = jnp.concatenate([values[1:], last[None]], axis=0)
    deltas = rewards + gamma * not_done * next_values - values

    def _step(next_advantage: jax.Array, step: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        delta, continues = step
        advantage = delta + gamma * lam * continues * next_advantage
        return advantage, advantage

    _, advantages = jax.lax.scan(_step, jnp.zeros_like(last), (deltas, not_done), reverse=True)
    return advantages, advantages + values


def surrogate_loss(
    log_probs: jax.Array,
    old_log_probs: jax.Array,
    advantages: jax.Array,
    values: jax.Array,
    targets: jax.Array,
    entropy: jax.Array,
    mask: jax.Array | None,
    clip_eps: float,
    value_coef: float,
    entropy_coef: float,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """PPO's loss over the masked steps of any policy; minimise it.

    ``loss = -E[min(rho A, clip(rho, 1 - eps, 1 + eps) A)] + value_coef E[(V - target)^2]
    - entropy_coef E[H]`` with ``rho = pi(a) / pi_old(a) = exp(log_probs - old_log_probs)``,
    every ``E`` a mean over the steps where ``mask`` is true; ``entropy`` is the
    policy's entropy at each step. ``advantages``, ``targets`` and
    ``old_log_probs`` are constants (gradients are not taken through them).
    Returns ``(loss, aux)``; ``aux`` holds the terms, the fraction of clipped
    steps and an estimate of ``KL(pi_old || pi)``.
    """
    advantages, targets, old_log_probs = jax.lax.stop_gradient((advantages, targets, old_log_probs))
    log_ratio = log_probs - old_log_probs
    ratio = jnp.exp(log_ratio)
    surrogate = jnp.minimum(ratio * advantages, jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages)
    policy_loss = -masked_mean(surrogate, mask)
    value_loss = masked_mean((values - targets) ** 2, mask)
    mean_entropy = masked_mean(entropy, mask)
    loss = policy_loss + value_coef * value_loss - entropy_coef * mean_entropy
    aux = {
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "entropy": mean_entropy,
        "clip_fraction": masked_mean((jnp.abs(ratio - 1.0) > clip_eps).astype(jnp.float32), mask),
        "approx_kl": masked_mean((ratio - 1.0) - log_ratio, mask),
    }
    return loss, aux


def clipped_loss(
    logits: jax.Array,
    values: jax.Array,
    actions: jax.Array,
    old_log_probs: jax.Array,
    advantages: jax.Array,
    targets: jax.Array,
    mask: jax.Array,
    clip_eps: float,
    value_coef: float,
    entropy_coef: float,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """:func:`surrogate_loss` of a categorical policy from its ``logits [..., A]`` and ``actions`` taken."""
    old_log_probs = jax.lax.stop_gradient(old_log_probs)
    log_probs_all = jax.nn.log_softmax(logits)
    log_probs = jnp.take_along_axis(log_probs_all, actions[..., None], axis=-1)[..., 0]
    entropy = -(jnp.exp(log_probs_all) * log_probs_all).sum(-1)
    return surrogate_loss(
        log_probs,
        old_log_probs,
        advantages,
        values,
        targets,
        entropy,
        mask,
        clip_eps,
        value_coef,
        entropy_coef,
    )


__all__ = ["clipped_loss", "discounted_returns", "gae", "masked_mean", "surrogate_loss"]


def bootstrap_truncated(
    rewards: jax.Array, truncated: jax.Array, next_values: jax.Array, gamma: float
) -> jax.Array:
    """Rewards with the future of truncated episodes folded in: ``r_t + gamma V(o_{t+1})`` where truncated.

    An episode cut by a time limit did not end: its return goes on past the
    last step. With this reward, the step can be treated as ``done`` (as
    :func:`gae` and :func:`discounted_returns` do) and still be bootstrapped
    with the value of its final observation ``next_values[t] = V(o_{t+1})``,
    not with that of the next episode's first one. Terminated steps keep their
    reward alone (they have no future).
    """
    return rewards + gamma * truncated.astype(rewards.dtype) * next_values


def clipped_value_loss(
    values: jax.Array, old_values: jax.Array, targets: jax.Array, clip_eps: float | None = None
) -> jax.Array:
    """The mean squared error of ``values`` against ``targets``, optionally clipped as PPO implementations do.

    With ``clip_eps``, each step's loss is the larger of ``(V - target)^2`` and
    ``(V_clip - target)^2`` with ``V_clip = old + clip(V - old, -eps, eps)``:
    the critic gains nothing by moving further than ``eps`` from the values it
    had when the data was collected (``old_values``, a constant). ``None``: plain MSE.
    """
    targets, old_values = jax.lax.stop_gradient((targets, old_values))
    losses = (values - targets) ** 2
    if clip_eps is not None:
        clipped = old_values + jnp.clip(values - old_values, -clip_eps, clip_eps)
        losses = jnp.maximum(losses, (clipped - targets) ** 2)
    return losses.mean()


__all__ += ["bootstrap_truncated", "clipped_value_loss"]

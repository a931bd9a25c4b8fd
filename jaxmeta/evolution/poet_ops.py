"""POET's bookkeeping as pure functions over fixed-capacity arrays (Wang et al. 2019; the reference
uber-research/poet, ``poet_algo.py``): the minimal criterion, novelty against the archive, the choice of
a transfer, and capacity by retiring the oldest pairs.

The active list is ``capacity`` rows with an ``active`` mask; environments are small encoding vectors
(e.g. a terrain's roughness, gap and stump ranges); the archive holds every environment ever admitted,
active ones included (``env_archive`` in the reference).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def passes_minimal_criterion(scores: jax.Array, low: float, high: float) -> jax.Array:
    """Whether a child's score with its parent's agent lies in ``[low, high]``: neither too easy nor too
    hard (``pass_mc``)."""
    return (scores >= low) & (scores <= high)


def novelty(candidates: jax.Array, archive: jax.Array, archive_valid: jax.Array, k: int = 5) -> jax.Array:
    """Per candidate ``[C, E]``, the mean Euclidean distance to its ``k`` nearest environments in the
    archive ``[N, E]`` (valid rows only; fewer than ``k`` valid: all of them), as
    ``compute_novelty_vs_archive``."""
    distances = jnp.linalg.norm(candidates[:, None, :] - archive[None, :, :], axis=-1)  # [C, N]
    distances = jnp.where(archive_valid[None, :], distances, jnp.inf)
    nearest = -jax.lax.top_k(-distances, min(k, archive.shape[0]))[0]  # [C, k], ascending
    counted = jnp.isfinite(nearest)
    return jnp.where(counted, nearest, 0.0).sum(-1) / jnp.maximum(counted.sum(-1), 1)


def admission_order(novelty_scores: jax.Array, eligible: jax.Array) -> jax.Array:
    """Candidates by novelty from high to low, the eligible ones first (ties keep their order)."""
    return jnp.argsort(jnp.where(eligible, -novelty_scores, jnp.inf), stable=True)


def choose_transfer(
    own_score: jax.Array, direct_scores: jax.Array, proposal_scores: jax.Array, is_self: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """POET's transfer choice for one target niche: the best of its own agent, every other niche's agent
    as it is (``direct_scores [M]``) and after one proposal ES step in the target (``proposal_scores
    [M]``); a candidate must beat the best so far strictly (the reference's order: own, direct, then
    proposals). ``is_self [M]`` excludes the target's own row. Returns ``(source, is_proposal,
    transferred)``: the row chosen, whether its proposal won, and whether anything beat the own agent."""
    never = jnp.full_like(direct_scores, -jnp.inf)
    scores = jnp.concatenate(
        [
            own_score[None],
            jnp.where(is_self, never, direct_scores),
            jnp.where(is_self, never, proposal_scores),
        ]
    )
    best = jnp.argmax(scores)  # the first maximum: a later candidate must be strictly better
    m = direct_scores.shape[0]
    source = jnp.where(best == 0, -1, (best - 1) % m)
    return source, best > m, best > 0


def retire_oldest(active: jax.Array, created_at: jax.Array, max_active: int) -> jax.Array:
    """The active mask after retiring the oldest active pairs beyond ``max_active`` (``remove_oldest``)."""
    excess = jnp.maximum(active.sum() - max_active, 0)
    age_order = jnp.argsort(jnp.where(active, created_at, jnp.iinfo(jnp.int32).max), stable=True)
    rank = jnp.empty_like(age_order).at[age_order].set(jnp.arange(active.shape[0]))
    return active & (rank >= excess)


__all__ = ["admission_order", "choose_transfer", "novelty", "passes_minimal_criterion", "retire_oldest"]

"""POET's bookkeeping against a plain-Python model of the reference's loops on fixed populations."""

import jax.numpy as jnp
import numpy as np

from jaxmeta.evolution import poet_ops


def test_minimal_criterion_is_inclusive():
    scores = jnp.array([24.9, 25.0, 100.0, 340.0, 340.1])
    assert poet_ops.passes_minimal_criterion(scores, 25.0, 340.0).tolist() == [False, True, True, True, False]


def python_novelty(candidate, archive, k):
    distances = sorted(float(np.linalg.norm(np.asarray(candidate) - np.asarray(a))) for a in archive)
    top = distances[:k]
    return sum(top) / len(top)


def test_novelty_is_the_mean_distance_to_the_k_nearest_valid_archive_entries():
    rng = np.random.default_rng(0)
    archive = rng.uniform(size=(12, 3))
    valid = np.array([True] * 9 + [False] * 3)
    candidates = rng.uniform(size=(4, 3))
    got = poet_ops.novelty(jnp.asarray(candidates), jnp.asarray(archive), jnp.asarray(valid), k=5)
    expected = [python_novelty(c, archive[valid], 5) for c in candidates]
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    few = np.array([True, True] + [False] * 10)  # fewer valid entries than k: their mean
    got_few = poet_ops.novelty(jnp.asarray(candidates), jnp.asarray(archive), jnp.asarray(few), k=5)
    np.testing.assert_allclose(got_few, [python_novelty(c, archive[:2], 5) for c in candidates], rtol=1e-5)


def test_admission_order_ranks_eligible_children_by_novelty():
    novelty = jnp.array([0.3, 0.9, 0.5, 0.9, 0.1])
    eligible = jnp.array([True, False, True, True, True])
    order = poet_ops.admission_order(novelty, eligible).tolist()
    python = sorted([i for i in range(5) if eligible[i]], key=lambda i: -float(novelty[i]))
    assert order[:4] == python and order[4] == 1


def python_transfer(own, direct, proposals, target):
    """The reference's update_dicts_after_transfer: strictly better replaces, direct before proposals."""
    best, source, kind = own, target, "self"
    for i, score in enumerate(direct):
        if i != target and score > best:
            best, source, kind = score, i, "theta"
    for i, score in enumerate(proposals):
        if i != target and score > best:
            best, source, kind = score, i, "proposal"
    return source, kind


def test_transfer_choice_matches_the_reference_loop():
    rng = np.random.default_rng(1)
    for trial in range(200):
        m = 5
        target = trial % m
        direct = np.round(rng.normal(size=m), 1)  # rounded: ties happen
        proposals = np.round(rng.normal(size=m), 1)
        own = float(np.round(rng.normal(), 1))
        is_self = jnp.arange(m) == target
        source, is_proposal, moved = poet_ops.choose_transfer(
            jnp.asarray(own), jnp.asarray(direct), jnp.asarray(proposals), is_self
        )
        py_source, kind = python_transfer(own, direct, proposals, target)
        assert bool(moved) == (kind != "self")
        if kind != "self":
            assert int(source) == py_source and bool(is_proposal) == (kind == "proposal")


def test_retire_oldest_keeps_the_newest_active_pairs():
    active = jnp.array([True, True, False, True, True, True])
    created = jnp.array([0, 50, 10, 25, 150, 100])
    kept = poet_ops.retire_oldest(active, created, max_active=3)
    assert kept.tolist() == [False, True, False, False, True, True]
    assert poet_ops.retire_oldest(active, created, max_active=10).tolist() == active.tolist()

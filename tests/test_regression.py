"""Regression: each method computes exactly what it computed before the platform refactor (issue 11).

``tests/data/regression_before_issue11.json`` was written by
``tests/data/record_regression_before_issue11.py`` on the code before the
refactor: each method's first 8 updates on a fixed seed and one evaluation
with a fixed key, with the task sets drawn as that code drew them
(``split(PRNGKey(task_seed))``). Since then the run's random streams are
derived so that none collide (``jaxmeta.seeding``); this test draws the task
sets the old way and passes the same keys, so any difference is a change of
behaviour. Both sides initialise with ``jax.jit(init)`` (one compiled program instead of hundreds of
eager ones; jitted and eager initialisers differ in the last bits), so the reference was re-recorded
that way from the same commit (92ceb45) on 2026-12-01.
"""

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import legacy_override, tiny_config

from jaxmeta import algos, seeding

REFERENCE = json.loads((Path(__file__).parent / "data" / "regression_before_issue11.json").read_text())


@pytest.mark.parametrize("case", sorted(REFERENCE))
def test_first_updates_and_evaluation_are_unchanged(case, monkeypatch):
    monkeypatch.setattr(seeding, "task_key", lambda task_seed: jax.random.PRNGKey(task_seed))
    name = case.removesuffix("_temporal")
    overrides = [legacy_override(o) for o in REFERENCE[case]["overrides"]]
    cfg = tiny_config(name, "/tmp/unused", 8, *overrides)
    algo = algos.REGISTRY[name].make(cfg)
    state = jax.jit(algo.init)(jax.random.PRNGKey(0))
    state, metrics = jax.jit(lambda s: jax.lax.scan(lambda c, _: algo.update(c), s, None, length=8))(state)
    evaluation = jax.jit(algo.evaluate)(state, jax.random.PRNGKey(7))
    for kind, got in (("train", metrics), ("eval", evaluation)):
        for key, expected in REFERENCE[case][kind].items():
            value = np.asarray(got[key])
            np.testing.assert_array_equal(
                value, np.asarray(expected, value.dtype), err_msg=f"{case} {kind} {key}"
            )

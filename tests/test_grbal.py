"""GrBAL's pieces against brute force and numpy: the planner picks the best of enumerated action
sequences on a toy model with a known optimum; the masked transition loss; bad configs refused."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmeta import config
from jaxmeta.algos import grbal

ROOT = Path(__file__).resolve().parents[1]
UNIT_SCALES = (jnp.ones(1), jnp.ones(1), jnp.ones(1))


class Integrator(nn.Module):
    """A toy model whose prediction is exact for s' = s + a: its input is [s, a], its output a."""

    @nn.compact
    def __call__(self, x):
        return x[..., 1:2]


def test_planner_picks_the_best_enumerated_sequence_on_a_toy_model():
    target = 0.9

    def reward_fn(states, actions):  # reward of the state an action is taken in
        return -((states[..., 0] - target) ** 2)

    grid = (-1.0, 0.0, 1.0)
    sequences = np.array(list(itertools.product(grid, repeat=4)))  # 81 sequences of 4 steps
    first, totals = grbal.plan(
        Integrator(),
        {},
        jnp.zeros(1),
        jnp.asarray(sequences[..., None]),
        reward_fn=reward_fn,
        scales=UNIT_SCALES,
    )
    expected = [
        -sum((s - target) ** 2 for s in np.concatenate([[0.0], np.cumsum(seq)[:-1]])) for seq in sequences
    ]
    np.testing.assert_allclose(totals, expected, rtol=1e-6, atol=1e-6)
    # The optimum: step to 1 (closest to 0.9 on the grid) at once, then stay: first action 1.
    assert float(first[0]) == 1.0 and float(totals.max()) == pytest.approx(-(0.81 + 3 * 0.01))


def test_transition_loss_averages_only_the_valid_steps():
    loss = grbal.transition_loss(Integrator(), UNIT_SCALES)
    obs = jnp.array([[0.0], [1.0], [2.0], [3.0]])
    action = jnp.array([[1.0], [1.0], [-1.0], [0.5]])
    next_obs = jnp.array([[1.0], [3.0], [0.0], [9.0]])  # errors of the predicted delta: 0, 1, -1, 5.5
    mask = jnp.array([1.0, 1.0, 1.0, 0.0])
    assert float(loss({}, (obs, action, next_obs, mask))) == pytest.approx((0 + 1 + 1) / 3)
    assert float(loss({}, (obs, action, next_obs, jnp.zeros(4)))) == 0.0  # nothing valid yet


@pytest.mark.parametrize(
    "args, needle",
    [
        (["env.id=CartPole-v1"], "continuous"),
        (["env.id=AdaptivePendulum-v0", "algo.horizon=0"], "algo.horizon"),
        (["env.id=AdaptivePendulum-v0", "algo.inner_steps=0"], "algo.inner_steps"),
        (["env.id=AdaptivePendulum-v0", "env.max_steps_in_episode=20"], "fit in one episode"),
    ],
)
def test_bad_configs_are_refused_naming_the_key(args, needle):
    with pytest.raises(config.ConfigError, match=needle):
        config.load(None, ["algo.name=grbal", *args])


def test_grbal_on_a_discrete_env_exits_2_in_one_line(tmp_path):
    args = ["algo.name=grbal", "env.id=CartPole-v1", f"run_dir={tmp_path / 'r'}"]
    proc = subprocess.run(
        [sys.executable, "-m", "jaxmeta.train", *args], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "continuous" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr

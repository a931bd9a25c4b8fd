"""MAML, Reptile and the pretrained baseline on sinusoid regression: trained a little, judged against
closed forms (the best predictor that does not adapt), and bad settings refused in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmeta import config
from jaxmeta.algos import REGISTRY, train
from jaxmeta.algos.api import make_regression_setup
from jaxmeta.meta import sinusoid

ROOT = Path(__file__).resolve().parents[1]
# Over amplitude ~ U[0.1, 5] and phase ~ U[0, pi], E[y | x] = E[A] E[sin(x - phase)] = -(2.55 * 2 / pi) cos x
# and E[y^2] = E[A^2] / 2; the best predictor that does not adapt to the task has the MSE
# E[y^2] - E[E[y | x]^2] (x ~ U[-5, 5]): 3.0.
MEAN_AMPLITUDE = 2.55
MEAN_SQUARE = (0.1**2 + 0.1 * 5 + 5**2) / 3 / 2
X = np.linspace(-5, 5, 2001)
BEST_NON_ADAPTIVE_MSE = MEAN_SQUARE - np.mean((2 * MEAN_AMPLITUDE / np.pi * np.cos(X)) ** 2)


def load(method: str, *extra: str):
    return config.load(
        None,
        [
            f"algo.name={method}",
            "seeds=1",
            "algo.eval.num_tasks=200",
            "algo.eval.steps=3",
            "progress=false",
            *extra,
        ],
    )


def trained(method: str, updates: int, *extra: str):
    cfg = load(method, *extra)
    algo = REGISTRY[method].make(cfg)
    state, metrics = jax.jit(lambda k: train(algo, k, updates))(jax.random.PRNGKey(0))
    return algo, state, metrics


def test_pretrained_network_fits_the_mean_over_tasks():
    """Joint training on all tasks converges to E[y | x] = -1.62 cos x, and so to its held-out MSE."""
    algo, state, _ = trained("pretrain", 3000)
    x = jnp.asarray(X[:, None], jnp.float32)
    prediction = np.asarray(sinusoid.regressor((40, 40)).apply(state.params, x))[:, 0]
    expected = -2 * MEAN_AMPLITUDE / np.pi * np.cos(X)
    assert np.sqrt(np.mean((prediction - expected) ** 2)) < 0.25
    metrics = algo.evaluate(state, jax.random.PRNGKey(1))
    # The closed-form predictor on the same held-out points (200 tasks: ~0.25 from the population value).
    _, (x_query, y_query) = make_regression_setup(load("pretrain")).held_out
    reference = np.mean(
        (-2 * MEAN_AMPLITUDE / np.pi * np.cos(np.asarray(x_query)) - np.asarray(y_query)) ** 2
    )
    assert abs(reference - BEST_NON_ADAPTIVE_MSE) < 0.6
    assert abs(float(metrics["eval/mse_after_0"]) - reference) < 0.1 * reference, (metrics, reference)


@pytest.mark.parametrize(
    "extra", [(), ("algo.first_order=true",), ("algo.meta_sgd=true",)], ids=["maml", "fomaml", "metasgd"]
)
def test_maml_adapts_below_the_best_non_adaptive_predictor(extra):
    algo, state, metrics = trained("maml", 1500, *extra)
    after = algo.evaluate(state, jax.random.PRNGKey(1))
    assert set(after) >= {f"eval/mse_after_{j}" for j in range(4)} | {"eval/mse_ci95_after_1"}
    # One step on 10 points must beat every predictor that ignores them (2.93): it has adapted.
    assert float(after["eval/mse_after_1"]) < 0.8 * BEST_NON_ADAPTIVE_MSE, after
    assert float(metrics["tasks"][-1]) == 1500 * 25


def test_reptile_moves_the_initialisation_toward_adapted_parameters():
    algo, state, metrics = trained("reptile", 1500, "num_updates=1500")
    after = algo.evaluate(state, jax.random.PRNGKey(1))
    assert float(after["eval/mse_after_3"]) < 0.8 * BEST_NON_ADAPTIVE_MSE, after
    beta = np.asarray(metrics["outer_step_size"])
    np.testing.assert_allclose(beta[[0, 750, 1499]], [1.0, 0.5, 1 / 1500], rtol=1e-4)  # linear to 0


@pytest.mark.parametrize(
    "args, needle",
    [
        (["algo.name=maml", "algo.inner_steps=0"], "algo.inner_steps"),
        (["algo.name=maml", "algo.inner_step_size=0"], "algo.inner_step_size"),
        (["algo.name=reptile", "algo.inner_step_size=-0.1"], "algo.inner_step_size"),
        (["algo.name=maml", "algo.eval.steps=0"], "algo.eval.steps"),
        (["algo.name=pretrain", "algo.problem.k_shot=0"], "algo.problem.k_shot"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(args, needle):
    with pytest.raises(config.ConfigError, match=needle.replace(".", r"\.")):
        config.load(None, args)


def test_a_bad_setting_exits_2_in_one_line_writing_nothing(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jaxmeta.train",
            "algo.name=maml",
            "algo.inner_steps=0",
            f"run_dir={tmp_path / 'r'}",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "algo.inner_steps" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "r").exists()

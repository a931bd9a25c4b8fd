"""MAML (Finn et al. 2017) on few-shot sinusoid regression: second order, first order or Meta-SGD.

An update is one meta-iteration of the MAML paper's Algorithm 2: draw ``meta_batch_size`` fresh
tasks, adapt the shared initialisation to each task's K support points with ``inner_steps`` SGD steps
(:func:`jaxmeta.meta.adapt`), and take an Adam step on the mean query loss of the adapted models
(:func:`jaxmeta.meta.maml_loss`), differentiating through the inner steps (``first_order: false``) or
treating their gradients as constants (``first_order: true``: first-order MAML). With ``meta_sgd: true``
the inner step sizes are per-parameter and meta-learned with the initialisation (Li et al. 2017).

Evaluation (every method of ``jaxmeta.meta`` alike): on 600 held-out tasks drawn from ``task_seed``, the
MSE on 100 points per task after 0 .. 10 SGD steps on the task's K points (``algo.eval``; with
Meta-SGD, steps of its learned sizes).

Read top to bottom: config, ``make`` (init, update, evaluate).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxmeta import meta
from jaxmeta.algos.api import (
    AdaptationEvalConfig,
    Algo,
    Metrics,
    RegressionConfig,
    TrainState,
    make_regression_setup,
    regression_eval_metrics,
    training_tasks,
)
from jaxmeta.config import param, section
from jaxmeta.reports import regression_report

NEEDS_ENV = False


@dataclasses.dataclass
class Config:
    name: str = param("maml", "method: MAML on few-shot regression (second or first order, Meta-SGD)")
    meta_batch_size: int = param(25, "tasks per meta-iteration (MAML: 25)", min=1)
    inner_steps: int = param(1, "SGD steps of adaptation in training (MAML's sinusoid: 1)", min=1)
    inner_step_size: float = param(
        0.01, "inner SGD step size (MAML: 0.01; Meta-SGD: the initial value)", min=0.0, min_exclusive=True
    )
    first_order: bool = param(False, "first-order MAML: no gradient through the inner gradients")
    meta_sgd: bool = param(False, "Meta-SGD: per-parameter inner step sizes learned with the weights")
    learning_rate: float = param(
        1e-3, "Adam step size of the meta-update (MAML: 1e-3)", min=0.0, min_exclusive=True
    )
    problem: RegressionConfig = section(RegressionConfig, "the sinusoid regression tasks")
    eval: AdaptationEvalConfig = section(AdaptationEvalConfig, "evaluation: MSE after test-time steps")


def make(cfg: Any) -> Algo:
    """Build ``init``, ``update`` and ``evaluate`` for a validated run config."""
    algo_cfg = cfg.algo
    setup = make_regression_setup(cfg)
    optimizer = optax.adam(algo_cfg.learning_rate)

    def step_size(params: Any) -> Any:
        return params["step_size"] if algo_cfg.meta_sgd else algo_cfg.inner_step_size

    def objective(params: Any, support: Any, query: Any) -> jax.Array:
        return meta.maml_loss(
            params["net"],
            support,
            query,
            inner_loss=setup.loss,
            num_steps=algo_cfg.inner_steps,
            step_size=step_size(params),
            first_order=algo_cfg.first_order,
        )

    def init(key: jax.Array) -> TrainState:
        key, init_key = jax.random.split(key)
        params = {"net": setup.network.init(init_key, setup.x_example)}
        if algo_cfg.meta_sgd:
            params["step_size"] = meta.learned_step_sizes(params["net"], algo_cfg.inner_step_size)
        return TrainState(params, optimizer.init(params), key, jnp.zeros((), jnp.int32))

    def update(state: TrainState) -> tuple[TrainState, Metrics]:
        key, task_key = jax.random.split(state.key)
        support, query = training_tasks(task_key, algo_cfg.meta_batch_size, algo_cfg.problem)
        loss, grads = jax.value_and_grad(objective)(state.params, support, query)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        step = state.update_step + 1
        metrics = {"loss": loss, "tasks": (step * algo_cfg.meta_batch_size).astype(jnp.float32)}
        return TrainState(optax.apply_updates(state.params, updates), opt_state, key, step), metrics

    def evaluate(state: TrainState, key: jax.Array) -> Metrics:
        size = state.params["step_size"] if algo_cfg.meta_sgd else algo_cfg.eval.step_size
        return regression_eval_metrics(setup, state.params["net"], size, algo_cfg.eval)

    kind = "Meta-SGD" if algo_cfg.meta_sgd else ("first-order MAML" if algo_cfg.first_order else "MAML")
    describe = (
        f"{kind}: {algo_cfg.meta_batch_size} tasks x K={algo_cfg.problem.k_shot}, "
        f"{algo_cfg.inner_steps} inner step(s)"
    )
    return Algo("maml", init, update, evaluate, regression_report(describe, algo_cfg.eval.steps))

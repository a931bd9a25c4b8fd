"""The MAML paper's "pretrained" baseline on few-shot sinusoid regression: one network trained on
points of all tasks jointly (no meta-learning), then fine-tuned at test time with the same SGD steps
on a task's K points as the meta-learners (``algo.eval``).

An update draws ``meta_batch_size`` fresh tasks with K + num_query points each (the data one MAML
meta-iteration sees) and takes an Adam step on the mean squared error over all of them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

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
    name: str = param("pretrain", "method: joint training on all tasks, fine-tuned at test (MAML's baseline)")
    meta_batch_size: int = param(25, "tasks per update (their K + num_query points each)", min=1)
    learning_rate: float = param(1e-3, "Adam step size", min=0.0, min_exclusive=True)
    problem: RegressionConfig = section(RegressionConfig, "the sinusoid regression tasks")
    eval: AdaptationEvalConfig = section(AdaptationEvalConfig, "evaluation: MSE after test-time steps")


def make(cfg: Any) -> Algo:
    """Build ``init``, ``update`` and ``evaluate`` for a validated run config."""
    algo_cfg = cfg.algo
    setup = make_regression_setup(cfg)
    optimizer = optax.adam(algo_cfg.learning_rate)

    def init(key: jax.Array) -> TrainState:
        key, init_key = jax.random.split(key)
        params = setup.network.init(init_key, setup.x_example)
        return TrainState(params, optimizer.init(params), key, jnp.zeros((), jnp.int32))

    def update(state: TrainState) -> tuple[TrainState, Metrics]:
        key, task_key = jax.random.split(state.key)
        support, query = training_tasks(task_key, algo_cfg.meta_batch_size, algo_cfg.problem)
        points = jax.tree.map(lambda s, q: jnp.concatenate([s, q], axis=1), support, query)
        loss, grads = jax.value_and_grad(setup.loss)(state.params, points)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        step = state.update_step + 1
        metrics = {"loss": loss, "tasks": (step * algo_cfg.meta_batch_size).astype(jnp.float32)}
        return TrainState(optax.apply_updates(state.params, updates), opt_state, key, step), metrics

    def evaluate(state: TrainState, key: jax.Array) -> Metrics:
        return regression_eval_metrics(setup, state.params, algo_cfg.eval.step_size, algo_cfg.eval)

    points = algo_cfg.problem.k_shot + algo_cfg.problem.num_query
    describe = f"joint training: {algo_cfg.meta_batch_size} tasks x {points} points"
    return Algo("pretrain", init, update, evaluate, regression_report(describe, algo_cfg.eval.steps))

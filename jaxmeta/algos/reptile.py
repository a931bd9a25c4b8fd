"""Reptile (Nichol et al. 2018), batched over tasks as in the meta-imitation seed's Algorithm 2, on
few-shot sinusoid regression.

An update draws ``meta_batch_size`` fresh tasks; each task's copy of the initialisation takes
``inner_steps`` optimiser steps (SGD or Adam, a fresh optimiser state per task), each on K fresh points
of the task (:func:`jaxmeta.meta.reptile_adapt`); the initialisation then moves toward the adapted
copies, ``phi <- phi + beta * mean_i(phi_i - phi)`` (:func:`jaxmeta.meta.reptile_step`), with ``beta``
annealed linearly to 0 over the run as Nichol et al. do (``anneal_outer_step``). Batched, ``beta``
starts at 1.0 as in Nichol et al.'s batched few-shot runs (``--meta-step 1``); the serial sinusoid demo's
0.1 (one task per step) moves the initialisation 25x less per task here and barely learns in 1,500
meta-iterations (held-out MSE 3.6 after 3 steps, against 1.1 with 1.0).

At test time, Reptile adapts like every method here: SGD steps on the task's K points
(``algo.eval``), so its curve is comparable with MAML's.
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
)
from jaxmeta.config import param, section
from jaxmeta.meta import sinusoid
from jaxmeta.reports import regression_report

NEEDS_ENV = False


@dataclasses.dataclass
class Config:
    name: str = param("reptile", "method: batched Reptile on few-shot regression")
    meta_batch_size: int = param(25, "tasks per meta-iteration", min=1)
    inner_steps: int = param(5, "optimiser steps per task, each on K fresh points of it", min=1)
    inner_optimizer: str = param("sgd", "the inner loop's optimiser", choices=("sgd", "adam"))
    inner_step_size: float = param(
        0.02, "inner step size (Nichol et al.'s sinusoid: SGD 0.02)", min=0.0, min_exclusive=True
    )
    outer_step_size: float = param(
        1.0,
        "beta: the meta step toward the mean adapted parameters (batched Reptile: 1.0, Nichol et al.)",
        min=0.0,
        min_exclusive=True,
    )
    anneal_outer_step: bool = param(True, "anneal beta linearly to 0 over num_updates (Nichol et al.)")
    problem: RegressionConfig = section(RegressionConfig, "the sinusoid regression tasks")
    eval: AdaptationEvalConfig = section(AdaptationEvalConfig, "evaluation: MSE after test-time steps")


def make(cfg: Any) -> Algo:
    """Build ``init``, ``update`` and ``evaluate`` for a validated run config."""
    algo_cfg = cfg.algo
    setup = make_regression_setup(cfg)
    make_inner = optax.sgd if algo_cfg.inner_optimizer == "sgd" else optax.adam
    inner_optimizer = make_inner(algo_cfg.inner_step_size)
    k_shot, steps = algo_cfg.problem.k_shot, algo_cfg.inner_steps

    def init(key: jax.Array) -> TrainState:
        key, init_key = jax.random.split(key)
        params = setup.network.init(init_key, setup.x_example)
        return TrainState(params, (), key, jnp.zeros((), jnp.int32))

    def update(state: TrainState) -> tuple[TrainState, Metrics]:
        key, task_key, point_key = jax.random.split(state.key, 3)
        tasks = sinusoid.sample_tasks(task_key, algo_cfg.meta_batch_size)
        # [steps, tasks, K, 1] -> [tasks, steps, K, 1]: one minibatch of K fresh points per inner step
        x, y = jax.vmap(lambda k: sinusoid.sample_points(k, tasks, k_shot))(
            jax.random.split(point_key, steps)
        )
        batches = (jnp.swapaxes(x, 0, 1), jnp.swapaxes(y, 0, 1))
        progress = jnp.minimum(
            state.update_step / cfg.num_updates, 1.0
        )  # a run extended on resume stays at 0
        beta = algo_cfg.outer_step_size * ((1.0 - progress) if algo_cfg.anneal_outer_step else 1.0)
        params = meta.reptile_step(setup.loss, state.params, batches, inner_optimizer, beta)
        first_batch = jax.tree.map(lambda b: b[:, 0], batches)
        loss = jax.vmap(setup.loss, in_axes=(None, 0))(state.params, first_batch).mean()
        step = state.update_step + 1
        metrics = {
            "loss": loss,  # before adaptation, on each task's first minibatch
            "outer_step_size": beta,
            "tasks": (step * algo_cfg.meta_batch_size).astype(jnp.float32),
        }
        return TrainState(params, (), key, step), metrics

    def evaluate(state: TrainState, key: jax.Array) -> Metrics:
        return regression_eval_metrics(setup, state.params, algo_cfg.eval.step_size, algo_cfg.eval)

    describe = (
        f"Reptile: {algo_cfg.meta_batch_size} tasks x {steps} {algo_cfg.inner_optimizer} steps on K={k_shot}"
    )
    return Algo("reptile", init, update, evaluate, regression_report(describe, algo_cfg.eval.steps))

"""OpenES on one terrain, from scratch or along a hand-made curriculum: the controls of POET's claim
(Wang et al. 2019, section 4: "ES alone fails where POET succeeds"; their "direct-path curriculum").

The target terrain is the env section's (``Walker-v0``'s ``roughness``, ``stump_*``, ``gap_*``). With
``curriculum_stages`` 0 or 1 every generation trains on it (ES from scratch). With ``N > 1`` stages
the agent trains on stage ``i = 1 .. N`` in turn, the target with every encoding value times ``i/N``
(rounded to 0.1 as POET's encodings; stage ``N`` is the target), and moves on when its score there
(the mean return over ``eval_episodes`` fresh layouts, computed after every generation) reaches
``advance_score``. Every update is one ES generation (``jaxmeta.evolution.open_es``: mirrored
sampling, centered ranks, POET's Adam), on a fresh layout per mirrored pair.

Evaluation is always on the target: the mean return over ``eval.episodes`` fresh layouts and the
fraction of those episodes that reach the finish line.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from jaxmeta.algos.api import Algo, Metrics, Report, TerrainESConfig, terrain_setup
from jaxmeta.config import param, section
from jaxmeta.evolution import open_es
from jaxmeta.evolution.rollouts import evaluate_on_terrain, population_fitness, walkers_gif


@dataclasses.dataclass
class EvalConfig:
    episodes: int = param(32, "fresh layouts of the target terrain per evaluation", min=1)


@dataclasses.dataclass
class Config(TerrainESConfig):
    name: str = param("open_es", "method: OpenES on one terrain (from scratch or a curriculum)")
    curriculum_stages: int = param(
        0, "stages of a direct-path curriculum to the target; 0 or 1: from scratch", min=0
    )
    advance_score: float = param(
        150.0, "score on a stage that moves the curriculum on (POET's solved, x 2/3)"
    )
    solved_threshold: float = param(150.0, "evaluation score that counts as solving the target")
    eval_episodes: int = param(5, "fresh layouts per score on the current stage (POET: 5)", min=1)
    eval: EvalConfig = section(EvalConfig, "evaluation on the target terrain")


def validate_config(cfg: Any) -> None:
    terrain_setup(cfg)


@struct.dataclass
class ESRunState:
    es: open_es.ESState
    stage: jax.Array  # int32 in [0, stages]; the last is the target
    score: jax.Array  # the latest score on the current stage
    key: jax.Array
    update_step: jax.Array


def curriculum(target: jax.Array, stages: int) -> jax.Array:
    """``[max(stages, 1), E]``: the target scaled by ``i / stages`` for ``i = 1 .. stages - 1`` (rounded to
    0.1, as POET's encodings), then the target itself."""
    if stages <= 1:
        return target[None]
    scale = jnp.arange(1, stages, dtype=jnp.float32)[:, None] / stages
    return jnp.concatenate([jnp.round(target[None] * scale * 10.0) / 10.0, target[None]])


def make(cfg: Any) -> Algo:
    algo_cfg = cfg.algo
    env, env_params, settings, policy = terrain_setup(cfg)
    steps, target = algo_cfg.max_steps, env.encode(env_params)
    stages = curriculum(target, algo_cfg.curriculum_stages)
    last = stages.shape[0] - 1

    def init(key: jax.Array) -> ESRunState:
        key, policy_key = jax.random.split(key)
        return ESRunState(
            open_es.init(policy.init(policy_key), settings),
            jnp.zeros((), jnp.int32),
            jnp.zeros(()),
            key,
            jnp.zeros((), jnp.int32),
        )

    def update(state: ESRunState) -> tuple[ESRunState, Metrics]:
        key, ask_key, play_key, eval_key = jax.random.split(state.key, 4)
        terrain = stages[state.stage]
        population, noise = open_es.ask(ask_key, state.es, settings)
        fitness = population_fitness(env, env_params, policy, population, terrain, play_key, steps)
        es = open_es.tell(state.es, noise, fitness, settings)
        score = evaluate_on_terrain(
            env, env_params, policy, es.mean, terrain, eval_key, algo_cfg.eval_episodes, steps
        )[0]
        advance = (score >= algo_cfg.advance_score) & (state.stage < last)
        step = state.update_step + 1
        metrics = {
            "fitness/mean": fitness.mean(),
            "fitness/max": fitness.max(),
            "score": score,
            "stage": state.stage.astype(jnp.float32),
            "sigma": es.sigma,
            "episodes": (step * (algo_cfg.es.population_size + algo_cfg.eval_episodes)).astype(jnp.float32),
        }
        new = ESRunState(
            es,
            jnp.where(advance, state.stage + 1, state.stage),
            jnp.where(advance, 0.0, score),
            key,
            step,
        )
        return new, metrics

    def evaluate(state: ESRunState, key: jax.Array) -> Metrics:
        score, episodes = evaluate_on_terrain(
            env, env_params, policy, state.es.mean, target, key, algo_cfg.eval.episodes, steps
        )
        return {
            "eval/return": score,
            "eval/finished": episodes.info["finished"].astype(jnp.float32).mean(),
            "eval/solved": (score >= algo_cfg.solved_threshold).astype(jnp.float32),
            "eval/stage": state.stage.astype(jnp.float32),
        }

    kind = (
        f"a {algo_cfg.curriculum_stages}-stage curriculum to"
        if algo_cfg.curriculum_stages > 1
        else "from scratch on"
    )
    describe = f"OpenES {algo_cfg.es.population_size} x {steps}-step episodes, {kind} the target terrain"
    report = Report(
        describe=describe,
        headline="eval/return",
        progress=(("score", "score"), ("stage", "stage")),
        samples="episodes",
        curves=(
            ("eval/return", "return on the target terrain"),
            ("eval/finished", "episodes finishing the course"),
            ("stage", "curriculum stage"),
        ),
        animation=lambda state, plots_dir: [
            walkers_gif(
                env,
                env_params,
                policy,
                [state.es.mean] * 3,
                [target] * 3,
                [0, 1, 2],
                steps,
                f"OpenES on the target, update {int(state.update_step)}",
                Path(plots_dir) / "target_walker.gif",
            )
        ],
    )
    return Algo("open_es", init, update, evaluate, report)

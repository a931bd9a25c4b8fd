"""What every method in :mod:`jaxmeta.algos` provides, and the pieces they share.

A method is three pure functions over a train-state pytree (the DESIGN.md
contract): ``init(key) -> state``, ``update(state) -> (state, metrics)`` and
``evaluate(state, key) -> metrics``. ``train(key)`` is ``init`` then a
``lax.scan`` of ``update``; the runner instead jits chunks of updates, vmaps
them over seeds and checkpoints between chunks. With them comes a
:class:`Report`: what the runner prints and draws for the method, and the
references its numbers are compared with, so that the runner names no method
and no environment.

A method module defines ``Config`` (its ``algo`` section), ``make(cfg) ->
Algo``, optionally ``validate_config(cfg)`` (raising ``ConfigError``) and
``NEEDS_ENV = False`` if it runs without an environment.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

import envs_jax
from envs_jax.registry import EnvUnavailableError
from jaxmeta import seeding
from jaxmeta.config import ConfigError, env_settings, param, section
from jaxmeta.trial import EpisodeStats, TrialData, run_trials

Metrics = dict[str, jax.Array]


def _no_references() -> dict[str, Any]:
    return {}


def _no_lines(summary: dict[str, Any]) -> list[str]:
    return []


def _no_plots(run_dir: Path, table: dict[str, Any], summary: dict[str, Any]) -> list[Path]:
    return []


class Report(NamedTuple):
    """What the runner shows of a method: host-side, no jitted code.

    * ``describe``: one line on what an update is (e.g. "32 trials x 80 steps");
    * ``headline``: the evaluation metric summarised in the progress bar;
    * ``progress``: ``(label, train metric)`` pairs shown in the progress bar;
    * ``samples``: the train metric that counts samples so far (env steps,
      frames, fitness evaluations), the x axis of the learning curves;
    * ``curves``: ``(metric, title)`` pairs drawn as learning curves (train or eval metrics);
    * ``references()``: numbers the results are compared with (e.g. the
      Bayes-optimal return per episode), computed once at the end and stored
      in ``summary.json``;
    * ``lines(summary)``: the table printed at the end of a run;
    * ``plots(run_dir, table, summary)``: figures of the method's own, written
      under ``run_dir/plots`` (``table`` as :func:`jaxmeta.plots.read_metrics`);
    * ``animation(state, plots_dir)``: pictures of the trained agent at work
      (e.g. a GIF of one held-out trial), given seed 0's final train state; or None.
    """

    describe: str = ""
    headline: str | None = None
    progress: tuple[tuple[str, str], ...] = ()
    samples: str | None = None
    curves: tuple[tuple[str, str], ...] = ()
    references: Callable[[], dict[str, Any]] = _no_references
    lines: Callable[[dict[str, Any]], list[str]] = _no_lines
    plots: Callable[[Path, dict[str, Any], dict[str, Any]], list[Path]] = _no_plots
    animation: Callable[[Any, Path], list[Path]] | None = None


class Algo(NamedTuple):
    """A method's pure functions, its report, and whether its seeds can be vmapped.

    ``vmappable`` is false when the method steps a host environment (through
    callbacks): the runner then runs its seeds one after another.
    """

    name: str
    init: Callable[[jax.Array], Any]
    update: Callable[[Any], tuple[Any, Metrics]]
    evaluate: Callable[[Any, jax.Array], Metrics]
    report: Report = Report()
    vmappable: bool = True


@struct.dataclass
class TrainState:
    """The training state of a method with nothing but parameters to carry across updates."""

    params: Any
    opt_state: Any
    key: jax.Array
    update_step: jax.Array


def clipped_adam(learning_rate: float, max_grad_norm: float) -> optax.GradientTransformation:
    """Adam after clipping gradients to a global norm: the optimiser most methods here use."""
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.adam(learning_rate))


def train(algo: Algo, key: jax.Array, num_updates: int) -> tuple[Any, Metrics]:
    """``init`` then ``num_updates`` updates in one ``lax.scan`` (jit it yourself)."""
    state = algo.init(key)
    return jax.lax.scan(lambda s, _: algo.update(s), state, None, length=num_updates)


# ----------------------------------------------------------------------------- config sections
@dataclasses.dataclass
class TrialConfig:
    num_steps: int = param(80, "steps per training trial T (paper: NH=80, LH=300)", min=1)
    reset_mode: str = param(
        "diff",
        "after an episode ends: 'same' task again or a 'diff' task from the set",
        choices=("same", "diff"),
    )
    batch_size: int = param(64, "trials per update", min=1)


@dataclasses.dataclass
class EpisodesEvalConfig:
    episodes: int = param(5, "episodes per evaluation trial, same task throughout", min=1)
    num_tasks: int = param(256, "held-out test tasks, one evaluation trial each", min=1)
    greedy: bool = param(False, "act with the most likely action instead of sampling")


def check_eval_tasks(cfg: Any) -> None:
    """``algo.eval.num_tasks`` must fit in the held-out set ``algo.num_test_tasks``."""
    evaluation, test_tasks = cfg.algo.eval, cfg.algo.num_test_tasks
    if evaluation.num_tasks > test_tasks:
        raise ConfigError(
            f"algo.eval.num_tasks must be <= algo.num_test_tasks={test_tasks}, got {evaluation.num_tasks}"
        )


def require_discrete_actions(cfg: Any) -> None:
    """A ``ConfigError`` unless the configured environment has a discrete action space."""
    from gymnax.environments import spaces

    env, params = make_env(cfg.env)
    space = env.action_space(params)
    if not isinstance(space, spaces.Discrete):
        raise ConfigError(
            f"{cfg.algo.name} needs a discrete action space; {cfg.env.id} has {type(space).__name__}"
            f"{getattr(space, 'shape', '')}: choose another env.id or method"
        )


def check_binary_obs(cfg: Any) -> None:
    """With ``algo.binary_obs`` (0/1 observations stored as bool), a ``ConfigError`` unless the
    environment's observations lie in [0, 1]."""
    import numpy as np
    from gymnax.environments import spaces

    if not cfg.algo.binary_obs:
        return
    env, params = make_env(cfg.env)
    space = env.observation_space(params)
    zero_one = isinstance(space, spaces.Box) and np.min(space.low) >= 0 and np.max(space.high) <= 1
    if not zero_one:
        raise ConfigError(
            f"algo.binary_obs needs 0/1 observations; {cfg.env.id} observes {space!r}: set it false"
        )


def require_task_interface(cfg: Any, expert: bool = False) -> None:
    """A ``ConfigError`` unless the configured environment has tasks and, with ``expert``, an
    ``expert_action`` to imitate. A pure-JAX env needs ``sample_task`` and ``reset_to_task``; a host env
    (``envs_jax.host``: it steps its own batch) needs ``sample_task`` only, since its batch takes the
    tasks at reset."""
    env, _ = make_env(cfg.env)
    needed = ("sample_task",) if getattr(env, "batched", False) else ("sample_task", "reset_to_task")
    needed += ("expert_action",) if expert else ()
    missing = [name for name in needed if not hasattr(env, name)]
    if missing:
        raise ConfigError(
            f"{cfg.algo.name} trains on task sets; {cfg.env.id} has no task interface "
            f"({', '.join(missing)} missing): choose an environment with tasks, e.g. Gridworld-v0"
        )


# ----------------------------------------------------------------------------- environments and tasks
def make_env(env_cfg: Any) -> tuple[Any, Any]:
    """The environment and its params from an ``env`` config section."""
    settings = env_settings(env_cfg)
    try:
        return envs_jax.make(env_cfg.id, **settings["constructor"], **settings["params"])
    except (ValueError, ModuleNotFoundError, EnvUnavailableError) as err:
        # A bad setting, a missing optional install (the message names the pip install), a machine
        # that cannot run the env: one line before anything is written.
        raise ConfigError(f"env: {' '.join(str(err).split())}") from None


class EnvSetup(NamedTuple):
    """The environment and the fixed task sets of a run."""

    env: Any
    params: Any
    train_tasks: Any  # tasks stacked on a leading axis; None for fresh tasks
    test_tasks: Any  # held out: no test task equals a train task


def make_env_setup(cfg: Any, num_train_tasks: int, num_test_tasks: int) -> EnvSetup:
    """The configured environment and its disjoint train/test task sets (drawn with ``cfg.task_seed``).
    ``num_train_tasks = 0``: a method that trains on fresh tasks from the env's distribution; only the
    held-out set is drawn (``train_tasks`` is None)."""
    env, params = make_env(cfg.env)
    if num_train_tasks == 0:
        key, held_out = seeding.task_key(cfg.task_seed), envs_jax.entry(cfg.env.id).held_out
        if held_out is not None:  # an env whose held-out tasks are not its training distribution's
            test_tasks = held_out(env, params, key, num_test_tasks)
        else:
            test_tasks = envs_jax.tasks.task_set(env, key, num_test_tasks, params)
        return EnvSetup(env, params, None, test_tasks)
    settings = env_settings(cfg.env)
    train_tasks, test_tasks = envs_jax.make_task_sets(
        cfg.env.id,
        env,
        params,
        seeding.task_key(cfg.task_seed),
        num_train_tasks,
        num_test_tasks,
        **settings["tasks"],
    )
    return EnvSetup(env, params, train_tasks, test_tasks)


def first_tasks(tasks: Any, count: int) -> Any:
    """The first ``count`` tasks of a stacked task set."""
    return jax.tree.map(lambda leaf: leaf[:count], tasks)


# ----------------------------------------------------------------------------- metrics
def episode_metrics(episodes: EpisodeStats, prefix: str) -> Metrics:
    """Mean return and success of the episodes that ended, over a batch of trials."""
    ended = episodes.ended.astype(jnp.float32)
    count = jnp.maximum(ended.sum(), 1.0)
    return {
        f"{prefix}return_per_episode": (episodes.returns * ended).sum() / count,
        f"{prefix}success_rate": (episodes.success * ended).sum() / count,
        f"{prefix}episodes_per_trial": ended.sum(-1).mean(),
    }


def per_episode_metrics(episodes: EpisodeStats, prefix: str = "eval/") -> Metrics:
    """Return and success of episode 1..K of the trial (the paper's test protocol).

    ``episodes`` has a batch axis ``[num_trials, K]``; an episode the trial
    did not reach counts as return 0 and no success.
    """
    valid = episodes.mask.astype(jnp.float32)
    returns = (episodes.returns * valid).mean(0)
    return {
        f"{prefix}episode_return": returns,
        f"{prefix}episode_success": (episodes.success * valid).mean(0),
        f"{prefix}total_return": returns.sum(),
    }


def adaptation_metrics(returns: jax.Array, success: jax.Array, prefix: str = "eval/") -> Metrics:
    """:func:`per_episode_metrics` of an adaptation loop's ``returns``/``success`` ``[K, M]``."""
    mean_returns = returns.mean(axis=1)
    return {
        f"{prefix}episode_return": mean_returns,
        f"{prefix}episode_success": success.mean(axis=1),
        f"{prefix}total_return": mean_returns.sum(),
    }


def trial_env_steps(update_step: jax.Array, trial_cfg: TrialConfig) -> jax.Array:
    """Training env steps after ``update_step + 1`` updates of ``batch_size`` trials of ``num_steps``."""
    return (update_step + 1) * (trial_cfg.batch_size * trial_cfg.num_steps)


def labelled_trials(
    setup: EnvSetup,
    trial_cfg: TrialConfig,
    policy: Any,
    params: Any,
    carry: Any,
    task_set: Any,
    num_tasks: int,
    task_key: jax.Array,
    trial_key: jax.Array,
    memory: Any = None,
    max_episodes: int | None = None,
) -> tuple[TrialData, EpisodeStats]:
    """A training batch: ``trial_cfg.batch_size`` trials by ``policy`` on tasks drawn uniformly
    from the first ``num_tasks`` of ``task_set``, every step labelled with the expert's action
    (in ``data.extras``): the data every imitation method here learns from."""
    env, env_params = setup.env, setup.params
    task_ids = jax.random.randint(task_key, (trial_cfg.batch_size,), 0, num_tasks)
    data, episodes, _ = run_trials(
        env,
        env_params,
        policy,
        params,
        carry,
        task_set,
        task_ids,
        trial_key,
        trial_cfg.num_steps,
        trial_cfg.reset_mode,
        memory=memory,
        max_episodes=max_episodes,
        record_fn=lambda env_state: env.expert_action(env_state, env_params),
    )
    return data, episodes


__all__ = [
    "Algo",
    "EnvSetup",
    "EpisodesEvalConfig",
    "Metrics",
    "Report",
    "TrainState",
    "TrialConfig",
    "adaptation_metrics",
    "check_eval_tasks",
    "clipped_adam",
    "episode_metrics",
    "first_tasks",
    "labelled_trials",
    "make_env",
    "make_env_setup",
    "per_episode_metrics",
    "require_discrete_actions",
    "require_task_interface",
    "train",
    "trial_env_steps",
]


# ----------------------------------------------------------------------------- few-shot regression
# The methods of jaxmeta.meta (maml, reptile, pretrain) run on the MAML paper's sinusoid tasks with no
# environment (NEEDS_ENV = False); they share the problem's settings, its held-out tasks and evaluation.
@dataclasses.dataclass
class RegressionConfig:
    k_shot: int = param(10, "K: points of a task the model adapts on (support set)", min=1)
    num_query: int = param(10, "points of each training task the adapted model is judged on", min=1)
    hidden_sizes: list[int] = param([40, 40], "widths of the regressor's ReLU layers (MAML: 40, 40)", min=1)


@dataclasses.dataclass
class AdaptationEvalConfig:
    num_tasks: int = param(600, "held-out sinusoid tasks (the MAML paper: 600)", min=1)
    num_query: int = param(100, "points of each held-out task the MSE is measured on", min=1)
    steps: int = param(10, "test-time SGD steps: the MSE is reported after 0 .. steps of them", min=1)
    step_size: float = param(0.01, "test-time SGD step size (MAML: 0.01)", min=0.0, min_exclusive=True)


class RegressionSetup(NamedTuple):
    network: Any  # flax module: x [..., 1] -> y [..., 1]
    loss: Callable[[Any, Any], jax.Array]  # MSE(params, (x, y))
    held_out: tuple[Any, Any]  # (support, query) of the evaluation tasks, the same for every seed
    x_example: jax.Array


def make_regression_setup(cfg: Any) -> RegressionSetup:
    """The regressor, its loss and the held-out tasks (drawn from ``task_seed``: every seed and method
    is measured on the same tasks and points)."""
    from jaxmeta.meta import sinusoid

    problem, evaluation = cfg.algo.problem, cfg.algo.eval
    network = sinusoid.regressor(tuple(problem.hidden_sizes))
    held_out = sinusoid.held_out_set(
        seeding.task_key(cfg.task_seed), evaluation.num_tasks, problem.k_shot, evaluation.num_query
    )
    return RegressionSetup(network, sinusoid.mse_loss(network.apply), held_out, jnp.zeros((1, 1)))


def training_tasks(key: jax.Array, num_tasks: int, problem: RegressionConfig) -> tuple[Any, Any]:
    """Fresh sinusoid tasks for one meta-batch: ``(support [T, K, 1] x2, query [T, Q, 1] x2)``."""
    from jaxmeta.meta import sinusoid

    task_key, support_key, query_key = jax.random.split(key, 3)
    tasks = sinusoid.sample_tasks(task_key, num_tasks)
    return (
        sinusoid.sample_points(support_key, tasks, problem.k_shot),
        sinusoid.sample_points(query_key, tasks, problem.num_query),
    )


def regression_eval_metrics(setup: RegressionSetup, params: Any, step_size: Any, evaluation: Any) -> Metrics:
    """``eval/mse_after_J`` (mean over the held-out tasks) for J = 0 .. ``eval.steps`` test-time SGD steps,
    and the half-width of its 95% interval over tasks at 1 and ``eval.steps`` steps."""
    from jaxmeta.meta import sinusoid

    mse = sinusoid.adaptation_mse(setup.network.apply, params, *setup.held_out, evaluation.steps, step_size)
    mean = mse.mean(0)
    half_width = 1.96 * mse.std(0) / jnp.sqrt(mse.shape[0])
    metrics = {f"eval/mse_after_{j}": mean[j] for j in range(evaluation.steps + 1)}
    for j in sorted({1, evaluation.steps}):
        metrics[f"eval/mse_ci95_after_{j}"] = half_width[j]
    return metrics


# ----------------------------------------------------------------------------- evolution strategies
@dataclasses.dataclass
class ESConfig:
    """OpenES's settings (:class:`jaxmeta.evolution.open_es.Settings`); defaults: POET's runs."""

    population_size: int = param(512, "candidates per generation, mirrored pairs (even; POET: 512)", min=2)
    sigma: float = param(0.1, "initial noise std (POET: 0.1)", min=0.0, min_exclusive=True)
    sigma_decay: float = param(0.999, "sigma's factor per generation (POET: 0.999)", min=0.0, max=1.0)
    sigma_limit: float = param(0.01, "sigma's floor (POET: 0.01)", min=0.0, min_exclusive=True)
    learning_rate: float = param(0.01, "Adam's step size (POET: 0.01)", min=0.0, min_exclusive=True)
    learning_rate_decay: float = param(
        0.9999, "step size factor per generation (POET: 0.9999)", min=0.0, max=1.0
    )
    learning_rate_limit: float = param(0.001, "step size floor (POET: 0.001)", min=0.0, min_exclusive=True)
    l2_coeff: float = param(0.01, "L2 decay of the weights (POET: 0.01)", min=0.0)


def es_settings(es: ESConfig) -> Any:
    """The OpenES settings of a config section; an odd population is a ``ConfigError``."""
    from jaxmeta.evolution import open_es

    if es.population_size % 2:
        raise ConfigError(f"es.population_size must be even (mirrored pairs), got {es.population_size}")
    return open_es.Settings(
        population_size=es.population_size,
        sigma_init=es.sigma,
        sigma_decay=es.sigma_decay,
        sigma_limit=es.sigma_limit,
        learning_rate=es.learning_rate,
        learning_rate_decay=es.learning_rate_decay,
        learning_rate_limit=es.learning_rate_limit,
        l2_coeff=es.l2_coeff,
    )


def require_terrain_interface(cfg: Any) -> Any:
    """``(env, params)`` of an env with POET's terrain interface and continuous actions, else a
    ``ConfigError`` naming one that has it."""
    from gymnax.environments import spaces

    env, params = make_env(cfg.env)
    if not hasattr(env, "mutate_encoding") or not isinstance(env.action_space(params), spaces.Box):
        raise ConfigError(
            f"{cfg.algo.name} evolves walkers on parameterised terrains; {cfg.env.id} has no terrain "
            "encoding (encode / with_encoding / mutate_encoding) or no continuous actions: use Walker-v0"
        )
    return env, params


@dataclasses.dataclass
class TerrainESConfig:
    """The ``algo`` keys every method that evolves walker policies on terrains shares (POET, OpenES):
    the policy, the episode, the score and the OpenES section; each method adds its own."""

    name: str = param("", "method name")
    hidden_sizes: list[int] = param([40, 40], "policy MLP widths, tanh (POET: 40-40)", min=1)
    max_steps: int = param(300, "steps per episode (0.04 s each: 12 s for the 24 m course)", min=1)
    solved_threshold: float = param(
        150.0, "evaluation score that counts as solved (Enhanced POET: 230, x 2/3)"
    )
    eval_episodes: int = param(5, "fresh layouts per score (POET: 5)", min=1)
    es: ESConfig = section(ESConfig, "OpenES")


class TerrainSetup(NamedTuple):
    """What a terrain method builds from its config: the env, its params, the OpenES settings and the
    flat-vector policy over the env's observation and action sizes."""

    env: Any
    env_params: Any
    settings: Any  # jaxmeta.evolution.open_es.Settings
    policy: Any  # jaxmeta.evolution.rollouts.FlatMLP


def terrain_setup(cfg: Any) -> TerrainSetup:
    """:class:`TerrainSetup` of a run config whose ``algo`` section is a :class:`TerrainESConfig`
    (``ConfigError`` for an env without the terrain interface or an odd population)."""
    from jaxmeta.evolution.rollouts import FlatMLP

    env, env_params = require_terrain_interface(cfg)
    settings = es_settings(cfg.algo.es)
    obs_dim = env.observation_space(env_params).shape[0]
    policy = FlatMLP((obs_dim, *cfg.algo.hidden_sizes, env.action_space(env_params).shape[0]))
    return TerrainSetup(env, env_params, settings, policy)

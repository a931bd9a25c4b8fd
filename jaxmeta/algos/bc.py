"""Behaviour cloning of the path-planning expert with a memoryless policy.

The agent acts with its own policy on multi-episode trials; every visited
state is labelled with the environment's ``expert_action`` (a shortest path to
the goal that never enters a trap), so the policy also learns to recover from
states its own mistakes lead to (DAgger-style labels on on-policy data).

The policy sees only the current observation, ``a_t = pi(o_t)``. The goal is
never in the observation, so with X blocks its best return is (2 - X) / X per
episode whatever the episode index; the Bayes-optimal agent that remembers its
failures does better from the second episode on (``envs_jax.optimal_returns``).
This gap is what the memory-based methods close.

Read top to bottom: config, the policy (``act``), ``make`` (init, update, evaluate).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from envs_jax.tasks import num_tasks
from jaxmeta.algos.api import (
    Algo,
    EpisodesEvalConfig,
    Metrics,
    TrainState,
    TrialConfig,
    check_eval_tasks,
    clipped_adam,
    episode_metrics,
    first_tasks,
    labelled_trials,
    make_env_setup,
    per_episode_metrics,
    require_discrete_actions,
    require_task_interface,
    trial_env_steps,
)
from jaxmeta.config import param, section
from jaxmeta.nets import MemorylessPolicy
from jaxmeta.reports import episodes_report
from jaxmeta.trial import StepInputs, run_trials


@dataclasses.dataclass
class Config:
    name: str = param("bc", "method: behaviour cloning of the expert, memoryless policy")
    learning_rate: float = param(1e-3, "Adam step size", min=0.0, min_exclusive=True)
    hidden_sizes: list[int] = param([128, 128], "widths of the policy MLP's hidden layers", min=1)
    max_grad_norm: float = param(1.0, "clip gradients to this global norm", min=0.0, min_exclusive=True)
    sgd_steps: int = param(1, "gradient steps on each batch of trials", min=1)
    num_train_tasks: int = param(1000, "fixed training tasks", min=1)
    num_test_tasks: int = param(
        256, "held-out test tasks (evaluation uses algo.eval.num_tasks of them)", min=1
    )
    trial: TrialConfig = section(TrialConfig, "training trials")
    eval: EpisodesEvalConfig = section(EpisodesEvalConfig, "evaluation: episodes of held-out tasks")


def validate_config(cfg: Any) -> None:
    require_task_interface(cfg, expert=True)
    require_discrete_actions(cfg)
    check_eval_tasks(cfg)


def act(
    network: MemorylessPolicy,
    params: Any,
    inputs: StepInputs,
    carry: Any,
    key: jax.Array,
    greedy: bool = False,
) -> tuple[jax.Array, Any]:
    """The policy's action on one trial step: sampled from its logits, or the most likely with ``greedy``."""
    logits = network.apply(params, inputs.obs)
    action = jnp.argmax(logits, axis=-1) if greedy else jax.random.categorical(key, logits)
    return action, carry


def make(cfg: Any) -> Algo:
    """Build ``init``, ``update`` and ``evaluate`` for a validated run config."""
    algo_cfg = cfg.algo
    setup = make_env_setup(cfg, algo_cfg.num_train_tasks, algo_cfg.num_test_tasks)
    env, env_params = setup.env, setup.params
    network = MemorylessPolicy(hidden_sizes=tuple(algo_cfg.hidden_sizes), num_actions=env.num_actions)
    optimizer = clipped_adam(algo_cfg.learning_rate, algo_cfg.max_grad_norm)
    obs_example = jnp.zeros(env.observation_space(env_params).shape, env.observation_space(env_params).dtype)
    eval_episodes = algo_cfg.eval.episodes
    test_tasks = first_tasks(setup.test_tasks, algo_cfg.eval.num_tasks)

    def sample_policy(params: Any, inputs: StepInputs, carry: Any, memory: Any, key: jax.Array) -> Any:
        return act(network, params, inputs, carry, key)

    def greedy_policy(params: Any, inputs: StepInputs, carry: Any, memory: Any, key: jax.Array) -> Any:
        return act(network, params, inputs, carry, key, greedy=True)

    def init(key: jax.Array) -> TrainState:
        key, init_key = jax.random.split(key)
        params = network.init(init_key, obs_example)
        return TrainState(params, optimizer.init(params), key, jnp.zeros((), jnp.int32))

    def update(state: TrainState) -> tuple[TrainState, Metrics]:
        key, task_key, trial_key = jax.random.split(state.key, 3)
        data, episodes = labelled_trials(
            setup,
            algo_cfg.trial,
            sample_policy,
            state.params,
            None,
            setup.train_tasks,
            num_tasks(setup.train_tasks),
            task_key,
            trial_key,
        )
        labels = data.extras

        def loss_fn(params: Any) -> tuple[jax.Array, jax.Array]:
            logits = network.apply(params, data.obs)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            accuracy = (jnp.argmax(logits, -1) == labels).mean()
            return loss, accuracy

        def _sgd_step(carry: tuple[Any, Any], _: None) -> tuple[tuple[Any, Any], tuple[jax.Array, jax.Array]]:
            params, opt_state = carry
            (loss, accuracy), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), (loss, accuracy)

        (params, opt_state), (losses, accuracies) = jax.lax.scan(
            _sgd_step, (state.params, state.opt_state), None, length=algo_cfg.sgd_steps
        )
        metrics = {
            "loss": losses[0],
            "accuracy": accuracies[0],
            "env_steps": trial_env_steps(state.update_step, algo_cfg.trial),
            **episode_metrics(episodes, "train/"),
        }
        return TrainState(params, opt_state, key, state.update_step + 1), metrics

    def evaluate(state: TrainState, key: jax.Array) -> Metrics:
        """The paper's protocol: eval.episodes episodes on each held-out task."""
        policy = greedy_policy if algo_cfg.eval.greedy else sample_policy
        num_tasks = jax.tree.leaves(test_tasks)[0].shape[0]
        _, episodes, _ = run_trials(
            env,
            env_params,
            policy,
            state.params,
            None,
            test_tasks,
            jnp.arange(num_tasks),
            key,
            eval_episodes * env_params.max_steps_in_episode,
            "same",
            max_episodes=eval_episodes,
        )
        return per_episode_metrics(episodes)

    trial = algo_cfg.trial
    report = episodes_report(
        env,
        env_params,
        test_tasks,
        eval_episodes,
        cfg.task_seed,
        describe=f"{trial.batch_size} trials x {trial.num_steps} steps",
        memoryless=True,
    )
    return Algo("bc", init, update, evaluate, report)

"""PPO finetune: a memoryless imitation policy finetuned with PPO after every test episode.

Baseline (2) of Chen & Agrawal (2020): "We first trained a memoryless
base-policy (i.e., a_t = pi(o_t)) using expert demonstrations. At test time,
we finetune this policy after every episode using PPO." Instead of a memory,
the agent adapts by gradient steps on its own weights.

Network (``jaxmeta.nets.actor_critic.ActorCritic``): the paper's encoder ``MLP(CNN(o_t))``
shared by a policy head (action logits) and a value head ``V(o_t)``.

Pretraining (``update``), as :mod:`jaxmeta.algos.bc` but on this network:

1. A batch of trials of ``T = algo.trial.num_steps`` steps on training tasks with the current
   policy, sampling actions; every visited state is labelled with the
   path-planning expert's action (DAgger-style labels on on-policy data).
2. The actor is trained by cross-entropy on the labels. The critic regresses
   the discounted Monte-Carlo return-to-go of the same on-policy episodes,
   computed inside each episode, so that it is a usable baseline at test time.
   An episode cut off by the end of the trial has no known return: its steps
   are masked out of the value loss (never bootstrapped with 0).

Evaluation (the paper's protocol, one copy of the agent per held-out task):
each test task gets its own copy of the pretrained parameters and its own
Adam state (vmapped over tasks). For ``algo.eval.episodes`` episodes (a
``lax.scan``): run one episode per task, record its return and success, then
finetune that task's copy with PPO on that episode alone: GAE advantages from
the value head, the clipped surrogate, value loss and entropy bonus,
``ppo_epochs`` full-batch gradient steps, the steps after the episode's end
masked. Advantages are not normalised: with one short episode per update, a
failure must push down the actions that led to it (the paper's explanation
of why the baseline works on CoinRun). Time-limit truncation ends an episode
like a termination (the episode's return is what is measured), so nothing is
bootstrapped past it. The finetuning after the last episode is computed and
discarded (it keeps the scan uniform).

Read top to bottom: config, the policy and the finetuning step (module-level pure
functions), ``make_parts`` (init, update, evaluate).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from envs_jax.tasks import num_tasks
from jaxmeta import policy_gradient as pg
from jaxmeta.algos.api import (
    Algo,
    EnvSetup,
    EpisodesEvalConfig,
    Metrics,
    TrainState,
    TrialConfig,
    adaptation_metrics,
    check_eval_tasks,
    clipped_adam,
    episode_metrics,
    first_tasks,
    labelled_trials,
    make_env_setup,
    require_discrete_actions,
    require_task_interface,
    trial_env_steps,
)
from jaxmeta.config import param, section
from jaxmeta.nets.actor_critic import ActorCritic
from jaxmeta.reports import episodes_report
from jaxmeta.trial import Adaptation, StepInputs, TrialData, run_adaptation


@dataclasses.dataclass
class Config:
    name: str = param("ppo_finetune", "method: memoryless imitation policy, PPO-finetuned per test episode")
    features: int = param(64, "E: width of the observation embedding MLP(CNN(o))", min=1)
    hidden: int = param(128, "hidden width of the encoder MLP and of the policy and value heads", min=1)
    learning_rate: float = param(3e-4, "Adam step size of pretraining", min=0.0, min_exclusive=True)
    max_grad_norm: float = param(
        1.0, "clip gradients to this global norm (pretraining and finetuning)", min=0.0, min_exclusive=True
    )
    gamma: float = param(0.99, "discount of the value targets and of GAE", min=0.0, max=1.0)
    value_coef: float = param(0.5, "weight of the value loss (pretraining and finetuning)", min=0.0)
    finetune_learning_rate: float = param(
        3e-4, "Adam step size of the test-time PPO finetuning", min=0.0, min_exclusive=True
    )
    ppo_epochs: int = param(4, "full-batch PPO gradient steps on each test episode", min=1)
    clip_eps: float = param(0.2, "PPO clips the probability ratio to [1 - eps, 1 + eps]", min=0.0, max=1.0)
    gae_lambda: float = param(0.95, "GAE lambda", min=0.0, max=1.0)
    entropy_coef: float = param(0.01, "weight of the entropy bonus in finetuning", min=0.0)
    num_train_tasks: int = param(1000, "fixed training tasks", min=1)
    num_test_tasks: int = param(
        256, "held-out test tasks (evaluation uses algo.eval.num_tasks of them)", min=1
    )
    trial: TrialConfig = section(TrialConfig, "training (pretraining) trials")
    eval: EpisodesEvalConfig = section(EpisodesEvalConfig, "evaluation: episodes of held-out tasks")


def validate_config(cfg: Any) -> None:
    require_task_interface(cfg, expert=True)
    require_discrete_actions(cfg)
    check_eval_tasks(cfg)


class FinetuneSettings(NamedTuple):
    """PPO's settings for the test-time finetuning on one episode."""

    gamma: float
    gae_lambda: float
    clip_eps: float
    value_coef: float
    entropy_coef: float
    epochs: int


# ----------------------------------------------------------------------------- the policy, piece by piece
def act(
    network: ActorCritic, params: Any, inputs: StepInputs, carry: Any, key: jax.Array, greedy: bool = False
) -> tuple[jax.Array, Any]:
    """The policy's action on one step: sampled from its logits, or the most likely with ``greedy``."""
    logits, _ = network.apply(params, inputs.obs)
    action = jnp.argmax(logits, axis=-1) if greedy else jax.random.categorical(key, logits)
    return action, carry


def ended_in_trial(data: TrialData) -> jax.Array:
    """``[..., T]`` bool: the step's episode ended inside the trial (its return is known)."""
    last_index = data.episode_index[..., -1:]
    return data.episode_index < last_index + data.done[..., -1:].astype(last_index.dtype)


def finetune(
    network: ActorCritic,
    optimizer: optax.GradientTransformation,
    settings: FinetuneSettings,
    params: Any,
    opt_state: Any,
    data: TrialData,
    valid: jax.Array,
) -> tuple[Any, Any, dict[str, jax.Array]]:
    """PPO on one task's episode: ``data`` leaves ``[T, ...]``, ``valid [T]`` its real steps.

    The episode must end at or before the last step (``done``), as an
    episode run for the episode limit does: nothing is bootstrapped past it.
    Returns the finetuned ``(params, opt_state)`` and ``{"kl", "value_loss"}``.
    """
    old_logits, old_values = network.apply(params, data.obs)
    old_log_probs_all = jax.nn.log_softmax(old_logits)
    old_log_probs = jnp.take_along_axis(old_log_probs_all, data.action[:, None], axis=-1)[:, 0]
    advantages, targets = pg.gae(data.reward, old_values, data.done, 0.0, settings.gamma, settings.gae_lambda)

    def loss_fn(params: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
        logits, values = network.apply(params, data.obs)
        return pg.clipped_loss(
            logits,
            values,
            data.action,
            old_log_probs,
            advantages,
            targets,
            valid,
            settings.clip_eps,
            settings.value_coef,
            settings.entropy_coef,
        )

    def _update_epoch(carry: tuple[Any, Any], _: None) -> tuple[tuple[Any, Any], dict[str, jax.Array]]:
        params, opt_state = carry
        grads, aux = jax.grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), aux

    (params, opt_state), aux = jax.lax.scan(_update_epoch, (params, opt_state), None, length=settings.epochs)
    new_log_probs_all = jax.nn.log_softmax(network.apply(params, data.obs)[0])
    kl = (jnp.exp(old_log_probs_all) * (old_log_probs_all - new_log_probs_all)).sum(-1)
    stats = {"kl": pg.masked_mean(kl, valid), "value_loss": aux["value_loss"][0]}
    return params, opt_state, stats


def finetune_episodes(
    network: ActorCritic,
    optimizer: optax.GradientTransformation,
    settings: FinetuneSettings,
    env: Any,
    env_params: Any,
    params: Any,
    tasks: Any,
    key: jax.Array,
    num_episodes: int,
    greedy: bool = False,
) -> Adaptation:
    """``num_episodes`` episodes on each of ``tasks``, PPO-finetuning each task's copy of ``params``
    after each one.

    The adaptation loop (:func:`jaxmeta.trial.run_adaptation`) with one
    ``(params, opt_state)`` per task; ``Adaptation.state`` holds the per-task
    parameters after the last finetuning (leading axis ``M``), ``stats`` the
    finetuning statistics ``[K, M]``.
    """
    num_tasks = jax.tree.leaves(tasks)[0].shape[0]
    task_params = jax.tree.map(lambda x: jnp.broadcast_to(x, (num_tasks, *x.shape)), params)

    def policy(params: Any, inputs: StepInputs, carry: Any, memory: Any, key: jax.Array) -> Any:
        return act(network, params, inputs, carry, key, greedy)

    def adapt(state: tuple[Any, Any], data: TrialData, episodes: Any) -> tuple[tuple[Any, Any], Any]:
        valid = data.episode_index == 0
        one_task = functools.partial(finetune, network, optimizer, settings)
        task_params, opt_states, stats = jax.vmap(one_task)(*state, data, valid)
        return (task_params, opt_states), stats

    return run_adaptation(
        env,
        env_params,
        policy,
        tasks,
        key,
        num_episodes,
        (task_params, jax.vmap(optimizer.init)(task_params)),
        act=lambda state: (state[0], None),
        adapt=adapt,
        params_per_task=True,
    )


# ----------------------------------------------------------------------------- wiring
class Parts(NamedTuple):
    """What :func:`make` wires together, for tests and for users composing their own loop."""

    algo: Algo
    network: ActorCritic
    setup: EnvSetup  # env, params, train and test tasks
    finetune_optimizer: optax.GradientTransformation
    settings: FinetuneSettings


def make(cfg: Any) -> Algo:
    """Build ``init``, ``update`` and ``evaluate`` for a validated run config."""
    return make_parts(cfg).algo


def make_parts(cfg: Any) -> Parts:
    """The method's wiring: network, optimisers, task sets, and the pure functions of the contract."""
    algo_cfg = cfg.algo
    setup = make_env_setup(cfg, algo_cfg.num_train_tasks, algo_cfg.num_test_tasks)
    env, env_params = setup.env, setup.params
    network = ActorCritic(num_actions=env.num_actions, features=algo_cfg.features, hidden=algo_cfg.hidden)
    optimizer = clipped_adam(algo_cfg.learning_rate, algo_cfg.max_grad_norm)
    finetune_optimizer = clipped_adam(algo_cfg.finetune_learning_rate, algo_cfg.max_grad_norm)
    settings = FinetuneSettings(
        algo_cfg.gamma,
        algo_cfg.gae_lambda,
        algo_cfg.clip_eps,
        algo_cfg.value_coef,
        algo_cfg.entropy_coef,
        algo_cfg.ppo_epochs,
    )
    obs_space = env.observation_space(env_params)
    obs_example = jnp.zeros(obs_space.shape, obs_space.dtype)
    test_tasks = first_tasks(setup.test_tasks, algo_cfg.eval.num_tasks)

    def sample_policy(params: Any, inputs: StepInputs, carry: Any, memory: Any, key: jax.Array) -> Any:
        return act(network, params, inputs, carry, key)

    def init(key: jax.Array) -> TrainState:
        key, init_key = jax.random.split(key)
        params = network.init(init_key, obs_example)
        return TrainState(params, optimizer.init(params), key, jnp.zeros((), jnp.int32))

    def update(state: TrainState) -> tuple[TrainState, Metrics]:
        """Pretraining: imitation of the expert on a batch of trials; the critic regresses the
        return-to-go of each episode, masked where the trial cut the episode off."""
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
        returns = jax.vmap(pg.discounted_returns, in_axes=(0, 0, None))(
            data.reward, data.done, algo_cfg.gamma
        )
        value_mask = ended_in_trial(data)
        labels = data.extras

        def loss_fn(params: Any) -> tuple[jax.Array, tuple[jax.Array, ...]]:
            logits, values = network.apply(params, data.obs)
            imitation = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            value_loss = pg.masked_mean((values - returns) ** 2, value_mask)
            accuracy = (jnp.argmax(logits, -1) == labels).mean()
            return imitation + algo_cfg.value_coef * value_loss, (imitation, value_loss, accuracy)

        (_, (imitation, value_loss, accuracy)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params
        )
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": imitation,
            "accuracy": accuracy,
            "value_loss": value_loss,
            "env_steps": trial_env_steps(state.update_step, algo_cfg.trial),
            **episode_metrics(episodes, "train/"),
        }
        return TrainState(params, opt_state, key, state.update_step + 1), metrics

    def evaluate(state: TrainState, key: jax.Array) -> Metrics:
        """Held-out tasks, one finetuned copy of the policy each, ``algo.eval.episodes`` episodes."""
        out = finetune_episodes(
            network,
            finetune_optimizer,
            settings,
            env,
            env_params,
            state.params,
            test_tasks,
            key,
            algo_cfg.eval.episodes,
            algo_cfg.eval.greedy,
        )
        return {
            **adaptation_metrics(out.returns, out.success),
            "eval/finetune_kl": out.stats["kl"].mean(axis=1),
        }

    trial = algo_cfg.trial
    report = episodes_report(
        env,
        env_params,
        test_tasks,
        algo_cfg.eval.episodes,
        cfg.task_seed,
        describe=f"{trial.batch_size} trials x {trial.num_steps} steps",
    )
    algo = Algo("ppo_finetune", init, update, evaluate, report)
    return Parts(algo, network, setup, finetune_optimizer, settings)

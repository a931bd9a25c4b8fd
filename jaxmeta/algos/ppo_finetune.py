"""PPO finetune: a memoryless imitation policy finetuned with PPO after every test episode.

Baseline (2) of Chen & Agrawal (2020): "We first trained a memoryless
base-policy (i.e., a_t = pi(o_t)) using expert demonstrations. At test time,
we finetune this policy after every episode using PPO." Instead of a memory,
the agent adapts by gradient steps on its own weights.

Network (``jaxmeta.nets.actor_critic.ActorCritic``): the paper's encoder ``MLP(CNN(o_t))``
shared by a policy head (action logits) and a value head ``V(o_t)``.

Pretraining (``update``), as :mod:`jaxmeta.algos.bc` but on this network:

1. A batch of trials of ``T`` steps on training tasks with the current
   policy, sampling actions; every visited state is labelled with the
   path-planning expert's action (DAgger-style labels on on-policy data).
2. The actor is trained by cross-entropy on the labels. The critic regresses
   the discounted Monte-Carlo return-to-go of the same on-policy episodes,
   computed inside each episode, so that it is a usable baseline at test time.
   An episode cut off by the end of the trial has no known return: its steps
   are masked out of the value loss (never bootstrapped with 0).

Evaluation (the paper's protocol, one copy of the agent per held-out task):
each test task gets its own copy of the pretrained parameters and its own
Adam state (vmapped over tasks). For ``eval.episodes`` episodes (a
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

Read top to bottom: config, state, ``make_parts`` (policy, init, update,
finetuning, evaluate).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxmeta import ppo
from jaxmeta.algos.api import (
    Algo,
    Metrics,
    TrainState,
    clipped_adam,
    episode_metrics,
    labelled_trials,
    make_env_setup,
)
from jaxmeta.config import param
from jaxmeta.nets.actor_critic import ActorCritic
from jaxmeta.trial import StepInputs, TrialData, run_trial


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
    num_test_tasks: int = param(256, "held-out test tasks (evaluation uses eval.num_tasks of them)", min=1)


class Parts(NamedTuple):
    """The method's pieces, for tests and for users composing their own loop."""

    algo: Algo
    network: ActorCritic
    setup: Any  # EnvSetup: env, params, train and test tasks
    sample_policy: Any
    greedy_policy: Any
    collect: Any  # state -> (data, episodes, value_targets, value_mask): one batch of training trials
    finetune: Any  # (params, opt_state, data, valid) -> (params, opt_state, stats): one task's PPO update
    finetune_optimizer: optax.GradientTransformation
    finetune_episodes: Any  # (params, tasks, key, num_episodes) -> (returns, success, task_params, stats)


def make(cfg: Any) -> Algo:
    """Build ``init``, ``update`` and ``evaluate`` for a validated run config."""
    return make_parts(cfg).algo


def ended_in_trial(data: TrialData) -> jax.Array:
    """``[..., T]`` bool: the step's episode ended inside the trial (its return is known)."""
    last_index = data.episode_index[..., -1:]
    return data.episode_index < last_index + data.done[..., -1:].astype(last_index.dtype)


def make_parts(cfg: Any) -> Parts:
    """Everything :func:`make` builds, by name."""
    algo_cfg = cfg.algo
    setup = make_env_setup(cfg.env, algo_cfg.num_train_tasks, algo_cfg.num_test_tasks, cfg.task_seed)
    env, env_params = setup.env, setup.params
    network = ActorCritic(num_actions=env.num_actions, features=algo_cfg.features, hidden=algo_cfg.hidden)
    optimizer = clipped_adam(algo_cfg.learning_rate, algo_cfg.max_grad_norm)
    finetune_optimizer = clipped_adam(algo_cfg.finetune_learning_rate, algo_cfg.max_grad_norm)
    obs_space = env.observation_space(env_params)
    obs_example = jnp.zeros(obs_space.shape, obs_space.dtype)
    test_tasks = jax.tree.map(lambda leaf: leaf[: cfg.eval.num_tasks], setup.test_tasks)
    gamma = algo_cfg.gamma

    def sample_policy(params: Any, inputs: StepInputs, carry: Any, memory: Any, key: jax.Array) -> Any:
        logits, _ = network.apply(params, inputs.obs)
        return jax.random.categorical(key, logits), carry

    def greedy_policy(params: Any, inputs: StepInputs, carry: Any, memory: Any, key: jax.Array) -> Any:
        logits, _ = network.apply(params, inputs.obs)
        return jnp.argmax(logits, axis=-1), carry

    def init(key: jax.Array) -> TrainState:
        key, init_key = jax.random.split(key)
        params = network.init(init_key, obs_example)
        return TrainState(params, optimizer.init(params), key, jnp.zeros((), jnp.int32))

    # ------------------------------------------------------------ pretraining
    def collect(state: TrainState) -> tuple[TrialData, Any, jax.Array, jax.Array]:
        """A batch of trials by the current policy, expert labels in ``data.extras``,
        and the critic's targets: return-to-go in each episode, masked where cut off."""
        _, task_key, trial_key = jax.random.split(state.key, 3)
        data, episodes = labelled_trials(
            setup,
            cfg.trial,
            sample_policy,
            state.params,
            None,
            setup.train_tasks,
            algo_cfg.num_train_tasks,
            task_key,
            trial_key,
        )
        returns = jax.vmap(ppo.discounted_returns, in_axes=(0, 0, None))(data.reward, data.done, gamma)
        return data, episodes, returns, ended_in_trial(data)

    def update(state: TrainState) -> tuple[TrainState, Metrics]:
        key = jax.random.split(state.key, 3)[0]  # collect uses the other two
        data, episodes, returns, value_mask = collect(state)
        labels = data.extras

        def loss_fn(params: Any) -> tuple[jax.Array, tuple[jax.Array, ...]]:
            logits, values = network.apply(params, data.obs)
            imitation = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            value_loss = ppo.masked_mean((values - returns) ** 2, value_mask)
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
            **episode_metrics(episodes, "train/"),
        }
        return TrainState(params, opt_state, key, state.update_step + 1), metrics

    # ------------------------------------------------------------- finetuning
    def finetune(
        params: Any, opt_state: Any, data: TrialData, valid: jax.Array
    ) -> tuple[Any, Any, dict[str, jax.Array]]:
        """PPO on one task's episode: ``data`` leaves ``[T, ...]``, ``valid [T]`` its real steps.

        The episode must end at or before the last step (``done``), as an
        episode run for the episode limit does: nothing is bootstrapped past it.
        """
        old_logits, old_values = network.apply(params, data.obs)
        old_log_probs_all = jax.nn.log_softmax(old_logits)
        old_log_probs = jnp.take_along_axis(old_log_probs_all, data.action[:, None], axis=-1)[:, 0]
        advantages, targets = ppo.gae(data.reward, old_values, data.done, 0.0, gamma, algo_cfg.gae_lambda)

        def loss_fn(params: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
            logits, values = network.apply(params, data.obs)
            return ppo.clipped_loss(
                logits,
                values,
                data.action,
                old_log_probs,
                advantages,
                targets,
                valid,
                algo_cfg.clip_eps,
                algo_cfg.value_coef,
                algo_cfg.entropy_coef,
            )

        def _update_epoch(carry: tuple[Any, Any], _: None) -> tuple[tuple[Any, Any], dict[str, jax.Array]]:
            params, opt_state = carry
            grads, aux = jax.grad(loss_fn, has_aux=True)(params)
            updates, opt_state = finetune_optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), aux

        (params, opt_state), aux = jax.lax.scan(
            _update_epoch, (params, opt_state), None, length=algo_cfg.ppo_epochs
        )
        new_log_probs_all = jax.nn.log_softmax(network.apply(params, data.obs)[0])
        kl = (jnp.exp(old_log_probs_all) * (old_log_probs_all - new_log_probs_all)).sum(-1)
        stats = {"kl": ppo.masked_mean(kl, valid), "value_loss": aux["value_loss"][0]}
        return params, opt_state, stats

    def finetune_episodes(
        params: Any, tasks: Any, key: jax.Array, num_episodes: int
    ) -> tuple[jax.Array, jax.Array, Any, dict[str, jax.Array]]:
        """``num_episodes`` episodes on each of ``tasks``, PPO-finetuning each task's copy after each.

        Returns ``(returns [K, M], success [K, M], task_params, stats)`` for
        ``M`` tasks: the per-task parameters after the last finetuning (leading
        axis ``M``) and per-episode finetuning statistics ``[K, M]``.
        """
        num_tasks = jax.tree.leaves(tasks)[0].shape[0]
        task_params = jax.tree.map(lambda x: jnp.broadcast_to(x, (num_tasks, *x.shape)), params)
        opt_states = jax.vmap(finetune_optimizer.init)(task_params)
        policy = greedy_policy if cfg.eval.greedy else sample_policy
        episode_limit = env_params.max_steps_in_episode

        def one_episode(params: Any, task_id: jax.Array, key: jax.Array) -> tuple[TrialData, Any]:
            # A trial as long as the episode limit: its episode 0 is the episode.
            data, episodes, _ = run_trial(
                env,
                env_params,
                policy,
                params,
                None,
                tasks,
                task_id,
                key,
                episode_limit,
                "same",
                max_episodes=1,
            )
            return data, episodes

        def _episode(carry: tuple[Any, Any], key: jax.Array) -> tuple[tuple[Any, Any], Any]:
            task_params, opt_states = carry
            data, episodes = jax.vmap(one_episode)(
                task_params, jnp.arange(num_tasks), jax.random.split(key, num_tasks)
            )
            valid = data.episode_index == 0
            task_params, opt_states, stats = jax.vmap(finetune)(task_params, opt_states, data, valid)
            return (task_params, opt_states), (episodes.returns[:, 0], episodes.success[:, 0], stats)

        (task_params, _), (returns, success, stats) = jax.lax.scan(
            _episode, (task_params, opt_states), jax.random.split(key, num_episodes)
        )
        return returns, success, task_params, stats

    def evaluate(state: TrainState, key: jax.Array) -> Metrics:
        """Held-out tasks, one finetuned copy of the policy each, ``eval.episodes`` episodes."""
        returns, success, _, stats = finetune_episodes(state.params, test_tasks, key, cfg.eval.episodes)
        mean_returns = returns.mean(axis=1)  # [K]
        return {
            "eval/episode_return": mean_returns,
            "eval/episode_success": success.mean(axis=1),
            "eval/total_return": mean_returns.sum(),
            "eval/finetune_kl": stats["kl"].mean(axis=1),
        }

    algo = Algo("ppo_finetune", init, update, evaluate)
    return Parts(
        algo,
        network,
        setup,
        sample_policy,
        greedy_policy,
        collect,
        finetune,
        finetune_optimizer,
        finetune_episodes,
    )

"""RL^2 (Duan et al., 2016): a recurrent policy whose hidden state learns within a trial.

A *trial* is several episodes of one task. The policy is a GRU over RL^2's input at each step: the
observation, the previous action (one-hot; "none" at the trial's first step), the previous reward and
whether the previous step ended an episode (:class:`jaxmeta.nets.encoders.TrialStepEncoder`). Its
hidden state starts at zero at the trial's first step and is **kept across episode boundaries**, so
what the agent learnt about the task in earlier episodes (fast learning, in the activations) shapes
how it acts in later ones; the weights learn slowly, across many tasks, how to do that.

Training is PPO (the paper used TRPO; its authors' later code PPO) on the trial as one long episode:

1. ``algo.trial.batch_size`` trials of ``algo.trial.num_steps`` steps run with the current policy
   (sampling) on tasks drawn afresh from the environment's distribution (``algo.num_train_tasks =
   0``, as RL^2 does) or from a fixed training set. Episodes inside a trial reset to the same task.
2. One pass of the GRU over the recorded trials gives ``log pi(a_t)`` and ``V_t`` (the same network
   and parameters that acted, so the same numbers).
3. Advantages (GAE, ``gamma``, ``gae_lambda``) run **across the whole trial**: an episode's end does not
   cut them, since the objective is the trial's return; the trial's last step is terminal.
4. ``update_epochs`` epochs of Adam on PPO's clipped surrogate, value loss and entropy bonus, over
   ``num_minibatches`` minibatches of whole trials, each replayed from a zero hidden state
   (:func:`jaxmeta.algos.ppo.train_epochs`).

Evaluation: on held-out tasks, one trial per task of ``algo.eval.episodes`` episodes played to their
end, the hidden state carried through; the return of each episode and of the whole trial.

On the Bernoulli bandit (:mod:`envs_jax.bandits`) an episode is one pull and a trial of n pulls is n
episodes, the RL^2 paper's setup.

Read top to bottom: config, the policy's pieces (module-level pure functions), ``make_parts``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import envs_jax
from jaxmeta import policy_gradient as pg
from jaxmeta.algos import ppo
from jaxmeta.algos.api import (
    Algo,
    EpisodesEvalConfig,
    Metrics,
    Report,
    TrainState,
    check_eval_tasks,
    episode_metrics,
    first_tasks,
    make_env,
    make_env_setup,
    per_episode_metrics,
    require_discrete_actions,
    require_task_interface,
)
from jaxmeta.config import ConfigError, param, section
from jaxmeta.nets.encoders import TrialStepEncoder, encoder_for
from jaxmeta.nets.heads import head_for
from jaxmeta.nets.policies import RecurrentActorCritic
from jaxmeta.reports import IMITATION_CURVES, episode_references, episode_table, plot_episode_returns
from jaxmeta.trial import StepInputs, TrialData, run_trials


@dataclasses.dataclass
class TrialConfig:
    num_steps: int = param(100, "steps per training trial; episodes inside it reset to the same task", min=1)
    batch_size: int = param(64, "trials per update", min=1)


@dataclasses.dataclass
class Config:
    name: str = param("rl2", "method: RL^2, a GRU policy whose state carries across a trial's episodes")
    gru_size: int = param(256, "GRU state width (RL^2's bandits: 256)", min=1)
    features: int = param(64, "width of the step embedding fed to the GRU", min=1)
    obs_features: int = param(32, "width of the observation's own embedding", min=1)
    conv_channels: list[int] = param([16, 16], "channels of the 3x3 convolutions (image observations)", min=1)
    encoder_hidden: list[int] = param([], "hidden widths of the observation encoder's MLP", min=1)
    hidden_sizes: list[int] = param([], "hidden widths of the actor's and critic's MLP after the GRU", min=1)
    activation: str = param("tanh", "activation of the MLPs after the GRU", choices=("tanh", "relu"))
    learning_rate: float = param(1e-3, "Adam step size", min=0.0, min_exclusive=True)
    anneal_lr: bool = param(False, "decay the learning rate linearly towards 0 over num_updates")
    update_epochs: int = param(4, "passes over each update's trials", min=1)
    num_minibatches: int = param(4, "minibatches of whole trials per epoch", min=1)
    gamma: float = param(0.99, "discount factor, across the whole trial", min=0.0, max=1.0)
    gae_lambda: float = param(0.95, "GAE lambda", min=0.0, max=1.0)
    clip_eps: float = param(0.2, "clip range of the probability ratio (and of the value)", min=0.0)
    clip_value: bool = param(True, "clip the value loss around the old values by clip_eps")
    ent_coef: float = param(0.01, "weight of the entropy bonus", min=0.0)
    vf_coef: float = param(0.5, "weight of the value loss (0.5 x MSE)", min=0.0)
    reward_scale: float = param(
        1.0,
        "rewards times this for the critic and the advantages (returns near 1 suit PPO's value clip)",
        min=0.0,
        min_exclusive=True,
    )
    reward_by_action: bool = param(
        False,
        "also feed the previous action one-hot times the previous reward (not in RL^2): each action's "
        "own reward input, which the GRU can add up per action",
    )
    regret_rewards: bool = param(
        False,
        "train on each step's reward minus the task's best expected reward (its regret; the env's "
        "best_expected_reward, e.g. the bandits'): the same optimum over fixed-length trials, without the "
        "spread of returns between easy and hard tasks. Training only: evaluation reports rewards",
    )
    max_grad_norm: float = param(0.5, "clip gradients to this global norm", min=0.0, min_exclusive=True)
    normalize_advantages: bool = param(True, "normalise advantages within each minibatch")
    num_train_tasks: int = param(
        0, "fixed training tasks; 0: a fresh task from the environment for every training trial", min=0
    )
    num_test_tasks: int = param(1000, "held-out tasks (evaluation uses algo.eval.num_tasks of them)", min=1)
    trial: TrialConfig = section(TrialConfig, "training trials")
    eval: EpisodesEvalConfig = section(EpisodesEvalConfig, "evaluation: episodes of held-out tasks")


def validate_config(cfg: Any) -> None:
    algo = cfg.algo
    require_task_interface(cfg)
    require_discrete_actions(cfg)
    check_eval_tasks(cfg)
    if algo.trial.batch_size % algo.num_minibatches:
        raise ConfigError(
            f"algo.num_minibatches={algo.num_minibatches} must divide algo.trial.batch_size="
            f"{algo.trial.batch_size} (minibatches are whole trials)"
        )
    env, env_params = make_env(cfg.env)
    if algo.regret_rewards and not hasattr(env, "best_expected_reward"):
        raise ConfigError(
            f"algo.regret_rewards needs an environment that knows a task's best expected reward per step "
            f"(best_expected_reward, as BernoulliBandit-v0); {cfg.env.id} does not"
        )
    episode = int(getattr(env_params, "max_steps_in_episode", 1))
    if algo.trial.num_steps < episode:
        raise ConfigError(
            f"algo.trial.num_steps={algo.trial.num_steps} is shorter than one episode of {cfg.env.id} "
            f"(up to {episode} steps): a trial must hold whole episodes; "
            f"use algo.trial.num_steps >= {episode}"
        )


# ----------------------------------------------------------------------------- the policy, piece by piece
def make_network(algo_cfg: Config, obs_space: Any, num_actions: int) -> RecurrentActorCritic:
    """The GRU actor-critic over RL^2's step inputs."""
    from gymnax.environments import spaces

    obs_encoder = encoder_for(
        obs_space,
        algo_cfg.obs_features,
        hidden=tuple(algo_cfg.encoder_hidden),
        conv_channels=tuple(algo_cfg.conv_channels),
    )
    return RecurrentActorCritic(
        TrialStepEncoder(obs_encoder, num_actions, algo_cfg.features, algo_cfg.reward_by_action),
        head_for(spaces.Discrete(num_actions)),
        gru_size=algo_cfg.gru_size,
        hidden_sizes=tuple(algo_cfg.hidden_sizes),
        activation=algo_cfg.activation,
    )


def step_inputs(inputs: StepInputs, num_actions: int) -> dict[str, jax.Array]:
    """RL^2's input at one acting step: "no action" and reward 0 at the trial's first step, and
    whether the previous step ended an episode (never at the trial's first step)."""
    trial_start = inputs.episode_start & (inputs.episode_index == 0)
    return {
        "obs": inputs.obs,
        "prev_action": jnp.where(trial_start, num_actions, inputs.prev_action).astype(jnp.int32),
        "prev_reward": jnp.where(trial_start, 0.0, inputs.prev_reward),
        "prev_done": inputs.episode_start & ~trial_start,
    }


def trial_inputs(data: TrialData, num_actions: int) -> dict[str, jax.Array]:
    """The same inputs for every step of recorded trials ``[B, T]``, rebuilt from what happened."""

    def shifted(x: jax.Array, first: Any) -> jax.Array:
        start = jnp.full_like(x[:, :1], first)
        return jnp.concatenate([start, x[:, :-1]], axis=1)

    return {
        "obs": data.obs,
        "prev_action": shifted(data.action.astype(jnp.int32), num_actions),
        "prev_reward": shifted(data.reward, 0.0),
        "prev_done": shifted(data.done, False),
    }


def act(
    network: RecurrentActorCritic,
    params: Any,
    inputs: StepInputs,
    hidden: jax.Array,
    key: jax.Array,
    greedy: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """One step of one trial: read the step, advance the hidden state (never reset inside a trial),
    sample (or, ``greedy``, take the most likely) action."""
    step = step_inputs(inputs, network.head.num_actions)
    hidden, dist, _ = network.apply(params, hidden, step, jnp.zeros((), bool), method=network.step)
    action = dist.mode() if greedy else dist.sample(key)[0]
    return action.astype(jnp.int32), hidden


def replay(network: RecurrentActorCritic, params: Any, inputs: dict[str, jax.Array]) -> tuple[Any, jax.Array]:
    """Distributions and values of every step of trials ``[T, B]`` from a zero state (time leading)."""
    batch = jax.tree.leaves(inputs)[0].shape[1]
    reset = jnp.zeros(jax.tree.leaves(inputs)[0].shape[:2], bool)
    _, dist, values = network.apply(params, network.initial_hidden((batch,)), inputs, reset)
    return dist, values


def trial_advantages(
    rewards: jax.Array, values: jax.Array, gamma: float, gae_lambda: float
) -> tuple[jax.Array, jax.Array]:
    """GAE over whole trials ``[T, B]``: episode ends inside a trial do not cut it, the last step is
    terminal (nothing follows a trial)."""
    trial_end = jnp.zeros(rewards.shape, bool).at[-1].set(True)
    return pg.gae(rewards, values, trial_end, 0.0, gamma, gae_lambda)


def regret_rewards(
    env: Any, env_params: Any, rewards: jax.Array, tasks: Any, task_ids: jax.Array
) -> jax.Array:
    """Each step's regret: ``rewards [T, B]`` minus the best expected reward per step of trial ``b``'s
    task (``tasks`` indexed by ``task_ids [B]``; ``env.best_expected_reward``). The subtracted amount is
    the same for every policy at every step of a fixed-length trial, so the best policy is unchanged;
    what goes is the spread of returns between easy and hard tasks, which the advantages must otherwise
    see past."""
    trial_tasks = jax.tree.map(lambda x: x[task_ids], tasks)
    best = jax.vmap(env.best_expected_reward, in_axes=(0, None))(trial_tasks, env_params)
    return rewards - best[None, :]


# ----------------------------------------------------------------------------- wiring
class Parts(NamedTuple):
    """What :func:`make` wires together, for tests and for users composing their own loop."""

    algo: Algo
    network: RecurrentActorCritic
    env: Any
    env_params: Any
    test_tasks: Any


def make(cfg: Any) -> Algo:
    """Build ``init``, ``update`` and ``evaluate`` for a validated run config."""
    return make_parts(cfg).algo


def make_parts(cfg: Any) -> Parts:
    algo_cfg = cfg.algo
    trial_cfg = algo_cfg.trial
    fresh_tasks = algo_cfg.num_train_tasks == 0
    env, env_params, train_tasks, test_tasks = make_env_setup(
        cfg, algo_cfg.num_train_tasks, algo_cfg.num_test_tasks
    )
    if not fresh_tasks:
        num_train = envs_jax.tasks.num_tasks(train_tasks)  # train_every_goal completes whole groups
    num_actions = int(env.action_space(env_params).n)
    network = make_network(algo_cfg, env.observation_space(env_params), num_actions)
    optimizer = ppo.make_optimizer(algo_cfg, cfg.num_updates)
    eval_tasks = first_tasks(test_tasks, algo_cfg.eval.num_tasks)
    eval_episodes = algo_cfg.eval.episodes
    eval_steps = eval_episodes * int(getattr(env_params, "max_steps_in_episode", 1))
    zero_hidden = network.initial_hidden()
    batch = trial_cfg.batch_size

    def policy(greedy: bool) -> Any:
        def policy_fn(params: Any, inputs: StepInputs, hidden: jax.Array, memory: Any, key: jax.Array) -> Any:
            return act(network, params, inputs, hidden, key, greedy)

        return policy_fn

    def init(key: jax.Array) -> TrainState:
        key, init_key = jax.random.split(key)
        obs_space = env.observation_space(env_params)
        example = {
            "obs": jnp.zeros((1, 1, *obs_space.shape), obs_space.dtype),
            "prev_action": jnp.zeros((1, 1), jnp.int32),
            "prev_reward": jnp.zeros((1, 1), jnp.float32),
            "prev_done": jnp.zeros((1, 1), bool),
        }
        params = network.init(init_key, network.initial_hidden((1,)), example, jnp.zeros((1, 1), bool))
        return TrainState(params, optimizer.init(params), key, jnp.zeros((), jnp.int32))

    def update(state: TrainState) -> tuple[TrainState, Metrics]:
        key, task_key, trial_key, train_key = jax.random.split(state.key, 4)
        if fresh_tasks:
            tasks = jax.vmap(env.sample_task, in_axes=(0, None))(
                jax.random.split(task_key, batch), env_params
            )
            task_ids = jnp.arange(batch)
        else:
            tasks = train_tasks
            task_ids = jax.random.randint(task_key, (batch,), 0, num_train)
        data, episodes, _ = run_trials(
            env,
            env_params,
            policy(False),
            state.params,
            zero_hidden,
            tasks,
            task_ids,
            trial_key,
            trial_cfg.num_steps,
            "same",
        )
        # Time leading ([T, B]) as PPO's batch; the recorded trials replayed once for log pi and V.
        inputs = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), trial_inputs(data, num_actions))
        actions, rewards = data.action.T, data.reward.T
        dist, values = replay(network, state.params, inputs)
        train_rewards = rewards
        if algo_cfg.regret_rewards:
            train_rewards = regret_rewards(env, env_params, rewards, tasks, task_ids)
        # The critic learns the scaled return: PPO's value clipping (clip_eps) is absolute, and a trial's
        # return of ~60 would let the value move by 0.2 an update; the policy sees normalised advantages.
        advantages, targets = trial_advantages(
            algo_cfg.reward_scale * train_rewards, values, algo_cfg.gamma, algo_cfg.gae_lambda
        )
        ppo_batch = ppo.Batch(
            obs=inputs,
            first=jnp.zeros(rewards.shape, bool),
            action=actions,
            log_prob=dist.log_prob(actions),
            value=values,
            advantages=advantages,
            targets=targets,
            hidden=network.initial_hidden((batch,)),
        )
        params, opt_state, losses = ppo.train_epochs(
            network, optimizer, state.params, state.opt_state, ppo_batch, train_key, algo_cfg
        )
        metrics = {
            "env_steps": (state.update_step + 1) * jnp.int32(batch * trial_cfg.num_steps),
            "train/trial_return": rewards.sum(0).mean(),
            **episode_metrics(episodes, "train/"),
            **losses,
        }
        return TrainState(params, opt_state, key, state.update_step + 1), metrics

    def evaluate(state: TrainState, key: jax.Array) -> Metrics:
        """Held-out tasks: one trial of ``eval.episodes`` episodes each, the hidden state carried through."""
        _, episodes, _ = run_trials(
            env,
            env_params,
            policy(algo_cfg.eval.greedy),
            state.params,
            zero_hidden,
            eval_tasks,
            jnp.arange(algo_cfg.eval.num_tasks),
            key,
            eval_steps,
            "same",
            max_episodes=eval_episodes,
        )
        return per_episode_metrics(episodes)

    describe = (
        f"{batch} trials x {trial_cfg.num_steps} steps, GRU {algo_cfg.gru_size}, "
        f"{algo_cfg.update_epochs} epochs x {algo_cfg.num_minibatches} minibatches"
    )
    report = trial_report(env, env_params, eval_tasks, eval_episodes, cfg.task_seed, describe)
    return Parts(Algo("rl2", init, update, evaluate, report), network, env, env_params, test_tasks)


def trial_report(
    env: Any, env_params: Any, tasks: Any, num_episodes: int, task_seed: int, describe: str
) -> Report:
    """The per-episode table for trials of a few episodes (Gridworld); for long trials of one-step
    episodes (bandits) the trial's return and the mean reward per step early and late in the trial."""
    num_tasks = jax.tree.leaves(tasks)[0].shape[0]

    def references() -> dict[str, Any]:
        return episode_references(env, env_params, tasks, num_episodes, task_seed)

    def lines(summary: dict[str, Any]) -> list[str]:
        if num_episodes <= 10:
            return episode_table(summary, num_tasks)
        ev = summary["eval"]
        per_seed = ", ".join(f"{v:.2f}" for v in ev["total_return"]["per_seed"])
        per_episode = np.asarray(ev["episode_return"]["mean"])
        tenth = max(1, len(per_episode) // 10)
        return [
            f"Held-out tasks ({num_tasks}), trial return {ev['total_return']['mean']:.2f} +- "
            f"{ev['total_return']['std']:.2f} over seeds (per seed: {per_seed}).",
            f"Return per episode: {per_episode[:tenth].mean():.3f} in the first tenth of the trial, "
            f"{per_episode[-tenth:].mean():.3f} in the last.",
        ]

    return Report(
        describe=describe,
        headline="eval/total_return",
        progress=(("trial", "train/trial_return"), ("loss", "loss")),
        samples="env_steps",
        curves=(
            ("train/trial_return", "training trials' return"),
            ("entropy", "policy entropy"),
            IMITATION_CURVES[-1],
        ),
        references=references,
        lines=lines,
        plots=plot_episode_returns,
    )


__all__ = [
    "Config",
    "Parts",
    "TrialConfig",
    "act",
    "make",
    "make_network",
    "make_parts",
    "replay",
    "step_inputs",
    "trial_advantages",
    "trial_inputs",
    "trial_report",
    "validate_config",
]

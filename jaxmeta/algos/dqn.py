"""Deep Q-networks (Mnih et al., 2015) on persistent vectorised environments, PureJaxRL style.

A Q-network ``Q(o, .)`` scores every discrete action; the agent acts
epsilon-greedily on it and learns by regression towards bootstrapped targets
computed with a slowly moving copy of itself (the *target network*), on
transitions replayed from a buffer of recent experience.

One update (``make``'s ``update``), all of it with fixed shapes so the compiled
update is the same program every time:

1. ``num_envs`` environments, carried in the train state across updates
   (:mod:`jaxmeta.rollouts`), are stepped ``num_steps`` times with
   epsilon-greedy actions: ``num_envs * num_steps`` env steps per update.
   Epsilon (:func:`epsilon_schedule`) is 1 (uniformly random actions) for the
   first ``learning_starts`` env steps, then falls linearly from
   ``epsilon_start`` to ``epsilon_end`` over ``epsilon_anneal_steps`` env steps
   and stays there; an update uses the value at its first env step.
2. The steps go into the replay buffer (:mod:`jaxmeta.memory.replay`), one
   ring per environment, with the observation each action led to
   (``next_obs``, the final one of an episode before the auto-reset), so that
   a step cut by the time limit bootstraps from where it really ended.
3. Once ``learning_starts`` env steps have been collected, ``gradient_steps``
   Adam steps (after clipping the gradient's global norm), each on
   ``batch_size`` windows of ``n_step`` consecutive steps of one environment
   drawn uniformly from the buffer (the step size may fall linearly to 0 over
   ``learning_rate_decay_steps`` env steps: :func:`learning_rate_scale`). The
   target of the first step of a window is the n-step return up to the first
   step that ends an episode, plus the discounted target-network value of the
   observation after it (none after a termination; a truncation bootstraps):
   :func:`td_targets`. Double DQN
   (``double_dqn``) picks the bootstrap action with the online network and
   values it with the target network. The loss is the mean squared or Huber
   TD error. Before ``learning_starts`` the gradient step is skipped
   (``lax.cond``) and the optimiser state does not move.
4. The target network moves whenever the env-step count crosses a multiple
   of ``target_update_every``: ``target <- tau * online + (1 - tau) * target``
   (:func:`target_update`; ``tau = 1`` is the classic hard copy, ``tau < 1``
   Polyak averaging).

Evaluation plays ``eval_episodes`` fresh episodes to their end with
epsilon ``eval_epsilon`` (default 0: greedy; Atari papers use 0.05, Dopamine
0.001) and reports their mean return and length.

Defaults are PureJaxRL's CartPole DQN: 10 envs, a gradient step of 128 after
every vectorised step (PureJaxRL's ``TRAINING_INTERVAL`` of 10 counts the env
steps of all 10 envs), i.e. 10 per update of 10 x 10 env steps; buffer 10,000;
first gradient step after 10,000 env steps; target copy every 500 env steps;
Adam 2.5e-4; epsilon 1 -> 0.05 over 250,000 env steps; gamma 0.99; MSE; MLP
120-84. Unlike PureJaxRL, epsilon is 1 until ``learning_starts`` and anneals
from there, as in the MinAtar and Dopamine agents, and gradients are clipped.
``configs/dqn_cartpole.yaml`` holds settings tuned to solve CartPole in ~2e5
env steps.

Read top to bottom: config, state, the pieces of the method (module-level
pure functions), ``make`` (init, update, evaluate).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from envs_jax.vector import as_batched
from jaxmeta import rollouts
from jaxmeta.algos.api import Algo, Metrics, check_binary_obs, make_env, require_discrete_actions
from jaxmeta.config import ConfigError, param
from jaxmeta.memory import replay
from jaxmeta.nets.policies import QNetwork, q_network_for
from jaxmeta.reports import returns_report


@dataclasses.dataclass
class Config:
    name: str = param("dqn", "method: deep Q-network with replay and a target network (Mnih et al. 2015)")
    num_envs: int = param(10, "environments stepped together (persistent across updates)", min=1)
    num_steps: int = param(
        10, "steps of each environment per update: an update collects num_envs * num_steps env steps", min=1
    )
    buffer_size: int = param(
        10_000,
        "replay capacity in env steps (transitions), over all environments; rounded up to a multiple "
        "of num_envs; the oldest are overwritten",
        min=1,
    )
    learning_starts: int = param(
        10_000, "env steps of uniformly random actions collected before the first gradient step", min=0
    )
    batch_size: int = param(128, "sampled transitions (n-step windows) per gradient step", min=1)
    gradient_steps: int = param(10, "gradient steps per update, once learning has started", min=1)
    n_step: int = param(1, "n of the n-step return targets (1: one-step Q-learning)", min=1)
    gamma: float = param(0.99, "discount factor", min=0.0, max=1.0)
    double_dqn: bool = param(False, "double DQN: online network picks the bootstrap action, target values it")
    loss: str = param("mse", "TD loss: mean squared error or Huber (delta 1)", choices=("mse", "huber"))
    learning_rate: float = param(2.5e-4, "Adam step size", min=0.0, min_exclusive=True)
    learning_rate_decay_steps: int = param(
        0,
        "env steps, counted from learning_starts, over which the step size falls linearly to 0 (0: constant)",
        min=0,
    )
    adam_eps: float = param(
        1e-8, "Adam epsilon (Dopamine's MinAtar DQN: 3.125e-4)", min=0.0, min_exclusive=True
    )
    max_grad_norm: float = param(10.0, "clip gradients to this global norm", min=0.0, min_exclusive=True)
    target_update_every: int = param(
        500, "env steps between target-network updates (at each crossing of a multiple)", min=1
    )
    tau: float = param(
        1.0,
        "target <- tau * online + (1 - tau) * target at each target update (1: hard copy, < 1: Polyak)",
        min=0.0,
        max=1.0,
        min_exclusive=True,
    )
    epsilon_start: float = param(1.0, "exploration epsilon when learning starts", min=0.0, max=1.0)
    epsilon_end: float = param(0.05, "exploration epsilon after annealing", min=0.0, max=1.0)
    epsilon_anneal_steps: int = param(
        250_000, "env steps, counted from learning_starts, over which epsilon falls linearly", min=1
    )
    eval_episodes: int = param(10, "fresh episodes per evaluation, played to their end", min=1)
    eval_epsilon: float = param(
        0.0,
        "epsilon of the evaluation policy (0: greedy; Atari convention 0.05, Dopamine 0.001)",
        min=0.0,
        max=1.0,
    )
    features: int = param(120, "width of the observation encoder's output (first hidden layer)", min=1)
    hidden_sizes: list[int] = param([84], "widths of the Q-network's hidden layers after the encoder", min=1)
    encoder_hidden: list[int] = param(
        [], "hidden widths of the encoder's MLP (images: exactly one, default 128)", min=1
    )
    conv_channels: list[int] = param([32, 32], "channels of the 3x3 convolutions (image observations)", min=1)
    binary_obs: bool = param(
        False, "observations are 0/1 only (e.g. MinAtar): store them as bool in the buffer (4x less memory)"
    )


def validate_config(cfg: Any) -> None:
    algo = cfg.algo
    require_discrete_actions(cfg)
    capacity = buffer_capacity(algo)
    if algo.n_step > capacity:
        raise ConfigError(
            f"algo.n_step={algo.n_step} must be <= the buffer's steps per environment "
            f"ceil(algo.buffer_size / algo.num_envs) = {capacity}"
        )
    env, params = make_env(cfg.env)
    space = env.observation_space(params)
    try:
        make_network(algo, space, env.action_space(params))
    except ValueError as err:
        raise ConfigError(f"algo: {' '.join(str(err).split())}") from None
    check_binary_obs(cfg)


@struct.dataclass
class TrainState:
    params: Any  # online Q-network
    target_params: Any  # target Q-network
    opt_state: Any
    buffer: replay.ReplayBuffer
    runner: rollouts.EnvRunner  # the persistent environments
    key: jax.Array
    env_steps: jax.Array  # int32: env steps collected so far, over all environments


class NStepBatch(NamedTuple):
    """Replayed windows reduced to what the TD error needs, each ``[B, ...]``."""

    obs: Any  # the observation the first action was chosen on
    action: jax.Array  # int32: the first action
    returns: jax.Array  # n-step discounted return up to the first episode end
    discount: jax.Array  # the factor on the bootstrap value: gamma^k, 0 after a termination
    bootstrap_obs: Any  # the observation to bootstrap from (next_obs of the last step counted)


# ----------------------------------------------------------------------------- the method, piece by piece
def buffer_capacity(algo_cfg: Config) -> int:
    """Time rows per environment of the replay buffer: ``buffer_size / num_envs``, rounded up."""
    return math.ceil(algo_cfg.buffer_size / algo_cfg.num_envs)


def make_network(algo_cfg: Config, obs_space: Any, action_space: Any) -> QNetwork:
    """The Q-network of a config's ``algo`` section for the spaces (ReLU MLP, or CNN for images)."""
    return q_network_for(
        obs_space,
        action_space,
        features=algo_cfg.features,
        hidden_sizes=tuple(algo_cfg.hidden_sizes),
        encoder_hidden=tuple(algo_cfg.encoder_hidden),
        conv_channels=tuple(algo_cfg.conv_channels),
    )


def make_optimizer(algo_cfg: Config) -> optax.GradientTransformation:
    """Adam after clipping gradients to a global norm."""
    return optax.chain(
        optax.clip_by_global_norm(algo_cfg.max_grad_norm),
        optax.adam(algo_cfg.learning_rate, eps=algo_cfg.adam_eps),
    )


def epsilon_schedule(
    env_steps: jax.Array, learning_starts: int, start: float, end: float, anneal_steps: int
) -> jax.Array:
    """Exploration epsilon after ``env_steps`` env steps: 1 before ``learning_starts``, then linear from
    ``start`` to ``end`` over the next ``anneal_steps`` env steps, then ``end``."""
    env_steps = jnp.asarray(env_steps, jnp.float32)
    progress = jnp.clip((env_steps - learning_starts) / anneal_steps, 0.0, 1.0)
    annealed = start + (end - start) * progress
    return jnp.where(env_steps < learning_starts, 1.0, annealed).astype(jnp.float32)


def learning_rate_scale(env_steps: jax.Array, learning_starts: int, decay_steps: int) -> jax.Array:
    """The factor on ``learning_rate`` after ``env_steps`` env steps: 1 until ``learning_starts``, then
    linearly down to 0 over ``decay_steps`` env steps (always 1 if ``decay_steps`` is 0)."""
    if decay_steps == 0:
        return jnp.ones((), jnp.float32)
    env_steps = jnp.asarray(env_steps, jnp.float32)
    return (1.0 - jnp.clip((env_steps - learning_starts) / decay_steps, 0.0, 1.0)).astype(jnp.float32)


def epsilon_greedy(q_values: jax.Array, epsilon: jax.Array, key: jax.Array) -> jax.Array:
    """Per row of ``q_values [..., A]``: a uniformly random action with probability ``epsilon``, else the
    greedy one (int32 ``[...]``)."""
    explore_key, action_key = jax.random.split(key)
    greedy = jnp.argmax(q_values, axis=-1).astype(jnp.int32)
    random = jax.random.randint(action_key, greedy.shape, 0, q_values.shape[-1], dtype=jnp.int32)
    return jnp.where(jax.random.uniform(explore_key, greedy.shape) < epsilon, random, greedy)


def replay_steps(transitions: rollouts.Transition, binary_obs: bool) -> dict[str, Any]:
    """What the buffer keeps of a rollout's steps (leaves ``[T, N, ...]``)."""

    def stored(obs: Any) -> Any:
        return jax.tree.map(lambda x: x.astype(bool), obs) if binary_obs else obs

    return {
        "obs": stored(transitions.obs),
        "action": transitions.action.astype(jnp.int32),
        "reward": transitions.reward.astype(jnp.float32),
        "terminated": transitions.terminated,
        "truncated": transitions.truncated,
        "next_obs": stored(transitions.next_obs),
    }


def n_step_batch(sequences: dict[str, Any], gamma: float) -> NStepBatch:
    """Windows ``[B, n, ...]`` of :func:`replay.sample_sequences` -> the n-step pieces of their first step."""
    returns, discount, last = replay.n_step_targets(
        sequences["reward"], sequences["terminated"], sequences["truncated"], gamma
    )
    return NStepBatch(
        obs=jax.tree.map(lambda x: x[:, 0], sequences["obs"]),
        action=sequences["action"][:, 0],
        returns=returns,
        discount=discount,
        bootstrap_obs=replay.select_step(sequences["next_obs"], last),
    )


def td_targets(
    returns: jax.Array,
    discount: jax.Array,
    next_q_target: jax.Array,
    next_q_online: jax.Array,
    double_dqn: bool,
) -> jax.Array:
    """``returns + discount * Q_target(s', a*)``, with ``a* = argmax Q_target(s', .)`` or, for double DQN,
    ``argmax Q_online(s', .)``. ``next_q_*`` are ``[B, A]``; the rest ``[B]``."""
    chooser = next_q_online if double_dqn else next_q_target
    best = jnp.argmax(chooser, axis=-1)
    bootstrap = jnp.take_along_axis(next_q_target, best[:, None], axis=-1)[:, 0]
    return returns + discount * bootstrap


def td_loss(
    network: Any,
    params: Any,
    target_params: Any,
    batch: NStepBatch,
    double_dqn: bool,
    loss: str,
) -> tuple[jax.Array, jax.Array]:
    """``(loss, mean Q of the replayed actions)``; the targets are held fixed (no gradient through them)."""
    next_q_target = network.apply(target_params, batch.bootstrap_obs)
    next_q_online = network.apply(params, batch.bootstrap_obs) if double_dqn else next_q_target
    targets = jax.lax.stop_gradient(
        td_targets(batch.returns, batch.discount, next_q_target, next_q_online, double_dqn)
    )
    q = network.apply(params, batch.obs)
    chosen = jnp.take_along_axis(q, batch.action[:, None], axis=-1)[:, 0]
    errors = chosen - targets
    if loss == "huber":
        value = optax.huber_loss(errors, delta=1.0).mean()
    else:
        value = jnp.square(errors).mean()
    return value, chosen.mean()


def target_update(
    params: Any, target_params: Any, steps_before: jax.Array, steps_after: jax.Array, every: int, tau: float
) -> Any:
    """The target network after an update that took the env-step count from ``steps_before`` to
    ``steps_after``: moved ``tau`` of the way to ``params`` if a multiple of ``every`` was crossed, else
    unchanged (once per update, however many multiples were crossed)."""
    due = steps_after // every > steps_before // every
    moved = params if tau == 1.0 else optax.incremental_update(params, target_params, tau)
    return jax.tree.map(lambda new, old: jnp.where(due, new, old), moved, target_params)


# ----------------------------------------------------------------------------- wiring
def make(cfg: Any) -> Algo:
    """Build ``init``, ``update`` and ``evaluate`` for a validated run config."""
    algo_cfg = cfg.algo
    env, env_params = make_env(cfg.env)
    obs_space = env.observation_space(env_params)
    network = make_network(algo_cfg, obs_space, env.action_space(env_params))
    optimizer = make_optimizer(algo_cfg)
    capacity = buffer_capacity(algo_cfg)
    steps_per_update = algo_cfg.num_envs * algo_cfg.num_steps

    def policy(policy_params: Any, obs: Any, first: jax.Array, carry: Any, key: jax.Array) -> Any:
        params, epsilon = policy_params
        return epsilon_greedy(network.apply(params, obs), epsilon, key), carry, None

    def as_observed(obs: Any, like: Any) -> Any:
        # Stored bool observations back to the dtype the network acts on.
        return jax.tree.map(lambda x, y: x.astype(y.dtype), obs, like)

    def init(key: jax.Array) -> TrainState:
        key, net_key, env_key = jax.random.split(key, 3)
        runner = rollouts.start(env, env_params, env_key, algo_cfg.num_envs)
        params = network.init(net_key, runner.obs)
        one_step = jax.tree.map(lambda x: x[0], replay_steps(_first_step(runner), algo_cfg.binary_obs))
        return TrainState(
            params=params,
            target_params=params,
            opt_state=optimizer.init(params),
            buffer=replay.init(capacity, algo_cfg.num_envs, one_step),
            runner=runner,
            key=key,
            env_steps=jnp.zeros((), jnp.int32),
        )

    def gradient_step(
        carry: tuple[Any, Any],
        key: jax.Array,
        buffer: replay.ReplayBuffer,
        target_params: Any,
        obs_like: Any,
        lr_scale: jax.Array,
    ) -> tuple[tuple[Any, Any], tuple[jax.Array, jax.Array]]:
        params, opt_state = carry
        sequences, _ = replay.sample_sequences(buffer, key, algo_cfg.batch_size, algo_cfg.n_step)
        sequences = {
            **sequences,
            "obs": as_observed(sequences["obs"], obs_like),
            "next_obs": as_observed(sequences["next_obs"], obs_like),
        }
        batch = n_step_batch(sequences, algo_cfg.gamma)
        (loss, q_mean), grads = jax.value_and_grad(td_loss, argnums=1, has_aux=True)(
            network, params, target_params, batch, algo_cfg.double_dqn, algo_cfg.loss
        )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        # Adam's step is proportional to its step size: scaling it is a scheduled step size.
        updates = jax.tree.map(lambda u: u * lr_scale, updates)
        return (optax.apply_updates(params, updates), opt_state), (loss, q_mean)

    def update(state: TrainState) -> tuple[TrainState, Metrics]:
        key, rollout_key, learn_key = jax.random.split(state.key, 3)
        epsilon = epsilon_schedule(
            state.env_steps,
            algo_cfg.learning_starts,
            algo_cfg.epsilon_start,
            algo_cfg.epsilon_end,
            algo_cfg.epsilon_anneal_steps,
        )
        runner, _, transitions = rollouts.rollout(
            env, env_params, state.runner, policy, (state.params, epsilon), rollout_key, algo_cfg.num_steps
        )
        buffer = replay.add_batch(state.buffer, replay_steps(transitions, algo_cfg.binary_obs))
        env_steps = state.env_steps + steps_per_update
        learning = (env_steps >= algo_cfg.learning_starts) & replay.can_sample(buffer, algo_cfg.n_step)
        obs_like = jax.tree.map(lambda x: x[0], state.runner.obs)
        lr_scale = learning_rate_scale(
            state.env_steps, algo_cfg.learning_starts, algo_cfg.learning_rate_decay_steps
        )

        def learn(carry: tuple[Any, Any]) -> tuple[tuple[Any, Any], jax.Array, jax.Array]:
            def step(c: tuple[Any, Any], k: jax.Array) -> Any:
                return gradient_step(c, k, buffer, state.target_params, obs_like, lr_scale)

            carry, (losses, q_means) = jax.lax.scan(
                step, carry, jax.random.split(learn_key, algo_cfg.gradient_steps)
            )
            return carry, losses.mean(), q_means.mean()

        def wait(carry: tuple[Any, Any]) -> tuple[tuple[Any, Any], jax.Array, jax.Array]:
            return carry, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32)

        (params, opt_state), loss, q_mean = jax.lax.cond(
            learning, learn, wait, (state.params, state.opt_state)
        )
        target_params = target_update(
            params,
            state.target_params,
            state.env_steps,
            env_steps,
            algo_cfg.target_update_every,
            algo_cfg.tau,
        )
        metrics = {
            "env_steps": env_steps,
            **rollouts.episode_metrics(transitions, runner),
            "loss": loss,
            "q_mean": q_mean,
            "epsilon": epsilon,
        }
        new_state = TrainState(params, target_params, opt_state, buffer, runner, key, env_steps)
        return new_state, metrics

    def evaluate(state: TrainState, key: jax.Array) -> Metrics:
        """``eval_episodes`` fresh episodes with epsilon ``eval_epsilon``, played to their end."""
        epsilon = jnp.asarray(algo_cfg.eval_epsilon, jnp.float32)
        return rollouts.evaluation_metrics(
            env, env_params, policy, (state.params, epsilon), key, algo_cfg.eval_episodes
        )

    describe = (
        f"{algo_cfg.num_envs} envs x {algo_cfg.num_steps} steps, "
        f"{algo_cfg.gradient_steps} gradient step(s) of {algo_cfg.batch_size}"
    )
    report = returns_report(
        describe, extra_curves=(("q_mean", "mean Q of replayed actions"), ("epsilon", "exploration epsilon"))
    )
    vmappable = getattr(as_batched(env), "vmappable", True)
    return Algo("dqn", init, update, evaluate, report, vmappable=vmappable)


def _first_step(runner: rollouts.EnvRunner) -> rollouts.Transition:
    """A stand-in step of the runner's shapes and dtypes (for the buffer's layout)."""
    num_envs = runner.first.shape[0]
    return rollouts.Transition(
        obs=runner.obs,
        action=jnp.zeros((num_envs,), jnp.int32),
        reward=jnp.zeros((num_envs,), jnp.float32),
        terminated=jnp.zeros((num_envs,), bool),
        truncated=jnp.zeros((num_envs,), bool),
        next_obs=runner.obs,
        first=runner.first,
        extras=None,
    )


__all__ = [
    "Config",
    "NStepBatch",
    "TrainState",
    "buffer_capacity",
    "epsilon_greedy",
    "epsilon_schedule",
    "make",
    "make_network",
    "make_optimizer",
    "n_step_batch",
    "target_update",
    "td_loss",
    "td_targets",
    "validate_config",
]

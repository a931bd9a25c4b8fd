"""Proximal policy optimisation (Schulman et al., 2017) on one task, in the PureJaxRL manner.

``algo.num_envs`` environments run on, across updates (their state lives in
the train state, see :mod:`jaxmeta.rollouts`). Each update:

1. steps every environment ``algo.num_steps`` times with the current policy,
   recording the stored action, its log-probability and the value ``V(o_t)``;
2. computes GAE advantages and value targets (``gamma``, ``gae_lambda``),
   bootstrapped with the value of the observation after the last step;
3. runs ``update_epochs`` epochs, each over ``num_minibatches`` shuffled
   minibatches, of Adam steps (gradients clipped to ``max_grad_norm``; the
   learning rate optionally annealed linearly to zero over ``num_updates``)
   on the clipped surrogate, the value loss (optionally clipped around the
   old values) and an entropy bonus; advantages are normalised within each
   minibatch (optional).

Truncation is not termination. A terminated episode has no future and its
last step is not bootstrapped. An episode cut by the time limit
(``Transition.truncated``) would have gone on: the value of its final
observation (``Transition.next_obs``, seen before the auto-reset) is folded
into that step's reward, ``r_t + gamma V(next_obs_t)``
(:func:`jaxmeta.policy_gradient.bootstrap_truncated`), and the step is then
treated as done, so nothing of the next episode leaks into it. ``V(next_obs)``
is computed with the parameters that collected the data, like ``V(o_t)``.

Networks come from the spaces (:mod:`jaxmeta.nets.policies`): PureJaxRL's
separate actor and critic MLPs for vectors (``hidden_sizes`` [64, 64]:
the encoder's Dense layer and one more), a CNN for images unless
``flatten_obs`` (an MLP on the flattened frame, as gymnax's MinAtar baseline),
a categorical head for discrete actions and a tanh-Gaussian for boxes (the
rollout stores the pre-squash sample and sends ``dist.to_env`` of it to the
environment). ``recurrent`` puts a GRU after the encoder (PureJaxRL's
``ppo_rnn``): the rollout carries the hidden state, and training replays each
environment's whole segment from its stored initial hidden state with the
episode-start flags, so minibatches are drawn over environments, never over
time steps.

Read top to bottom: config, the network and its two uses (acting, replaying),
the pieces of an update (module-level pure functions), ``make``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct
from gymnax.environments import spaces

from jaxmeta import policy_gradient as pg
from jaxmeta import rollouts
from jaxmeta.algos.api import Algo, Metrics, make_env
from jaxmeta.config import ConfigError, param
from jaxmeta.nets.encoders import VectorEncoder
from jaxmeta.nets.heads import head_for
from jaxmeta.nets.policies import (
    ActorCriticNet,
    RecurrentActorCritic,
    actor_critic_for,
    recurrent_actor_critic_for,
)
from jaxmeta.reports import returns_report


@dataclasses.dataclass
class Config:
    name: str = param("ppo", "method: PPO on a single task (PureJaxRL-style, vectorised environments)")
    num_envs: int = param(4, "environments stepped in parallel", min=1)
    num_steps: int = param(128, "steps of every environment per update", min=1)
    update_epochs: int = param(4, "passes over each update's data", min=1)
    num_minibatches: int = param(
        4, "minibatches per epoch (of steps; of whole environments with recurrent)", min=1
    )
    learning_rate: float = param(
        2.5e-4, "Adam step size (the start, with anneal_lr)", min=0.0, min_exclusive=True
    )
    anneal_lr: bool = param(True, "decay the learning rate linearly towards 0 over num_updates")
    gamma: float = param(0.99, "discount factor", min=0.0, max=1.0)
    gae_lambda: float = param(0.95, "GAE lambda", min=0.0, max=1.0)
    clip_eps: float = param(
        0.2, "clip range of the probability ratio (and of the value, with clip_value)", min=0.0
    )
    ent_coef: float = param(0.01, "weight of the entropy bonus", min=0.0)
    vf_coef: float = param(0.5, "weight of the value loss (which is 0.5 x MSE, as PureJaxRL)", min=0.0)
    max_grad_norm: float = param(0.5, "clip gradients to this global norm", min=0.0, min_exclusive=True)
    hidden_sizes: list[int] = param(
        [64, 64], "hidden widths of the actor's and of the critic's MLP (after the CNN for images)", min=1
    )
    activation: str = param("tanh", "activation of the MLPs", choices=("tanh", "relu"))
    flatten_obs: bool = param(
        False,
        "image observations: an MLP on the flattened frame instead of a CNN (gymnax's MinAtar baseline)",
    )
    normalize_advantages: bool = param(True, "normalise advantages within each minibatch")
    clip_value: bool = param(True, "clip the value loss around the old values by clip_eps (PureJaxRL)")
    reward_scale: float = param(
        1.0,
        "multiply rewards by this for learning (reported returns are unscaled)",
        min=0.0,
        min_exclusive=True,
    )
    recurrent: bool = param(False, "a GRU between encoder and heads; minibatches are whole environments")
    gru_size: int = param(128, "GRU state width (with recurrent)", min=1)
    log_std_init: float = param(0.0, "initial log standard deviation of a continuous policy")
    eval_episodes: int = param(32, "fresh episodes per evaluation", min=1)
    eval_greedy: bool = param(False, "evaluate with the most likely action instead of sampling")


def validate_config(cfg: Any) -> None:
    algo = cfg.algo
    if algo.recurrent and algo.num_envs % algo.num_minibatches:
        raise ConfigError(
            f"algo.num_minibatches={algo.num_minibatches} must divide algo.num_envs={algo.num_envs} "
            "(recurrent minibatches are whole environments)"
        )
    batch = algo.num_envs * algo.num_steps
    if not algo.recurrent and batch % algo.num_minibatches:
        raise ConfigError(
            f"algo.num_minibatches={algo.num_minibatches} must divide algo.num_envs x algo.num_steps={batch}"
        )
    if not algo.hidden_sizes:
        raise ConfigError("algo.hidden_sizes must hold at least one width (the encoder's)")
    env, env_params = make_env(cfg.env)
    try:
        make_network(algo, env.observation_space(env_params), env.action_space(env_params))
    except ValueError as err:
        raise ConfigError(f"ppo cannot run on {cfg.env.id}: {' '.join(str(err).split())}") from None


# ----------------------------------------------------------------------------- the network
def make_network(
    algo_cfg: Config, obs_space: Any, action_space: Any
) -> ActorCriticNet | RecurrentActorCritic:
    """The actor-critic of a config for the spaces (``ValueError`` for spaces it cannot serve)."""
    features, hidden = int(algo_cfg.hidden_sizes[0]), tuple(int(h) for h in algo_cfg.hidden_sizes[1:])
    common = {"hidden_sizes": hidden, "activation": algo_cfg.activation}
    if algo_cfg.flatten_obs:
        if not isinstance(obs_space, spaces.Box):
            raise ValueError(f"flatten_obs needs a Box observation space, got {type(obs_space).__name__}")

        def encoder() -> VectorEncoder:
            return VectorEncoder(features, obs_ndim=len(obs_space.shape))

        head = head_for(action_space, log_std_init=algo_cfg.log_std_init)
        if algo_cfg.recurrent:
            return RecurrentActorCritic(encoder(), head, gru_size=algo_cfg.gru_size, **common)
        return ActorCriticNet(encoder(), head, critic_encoder=encoder(), **common)
    kwargs = {"features": features, "log_std_init": algo_cfg.log_std_init, **common}
    if algo_cfg.recurrent:
        return recurrent_actor_critic_for(obs_space, action_space, gru_size=algo_cfg.gru_size, **kwargs)
    return actor_critic_for(obs_space, action_space, **kwargs)


class StepRecord(NamedTuple):
    """What the rollout records of each step for learning (leaves ``[T, N, ...]`` after a rollout)."""

    action: jax.Array  # the stored action (pre-squash for a tanh-Gaussian)
    log_prob: jax.Array
    value: jax.Array  # V(o_t)
    hidden: Any  # recurrent: the GRU state after reading o_t (to value next_obs); else None


def act(
    network: Any, params: Any, obs: Any, first: jax.Array, hidden: Any, key: jax.Array, greedy: bool = False
) -> tuple[jax.Array, Any, StepRecord]:
    """One step of the policy on a batch ``[N]``: ``(env action, hidden, record)``.

    ``hidden`` is the GRU state ``[N, G]`` for a recurrent network (reset where
    ``first``), ``None`` otherwise. ``greedy`` takes the distribution's mode.
    """
    if isinstance(network, RecurrentActorCritic):
        hidden, dist, value = network.apply(params, hidden, obs, first, method=network.step)
    else:
        dist, value = network.apply(params, obs)
    if greedy:
        action = dist.mode()
        log_prob = dist.log_prob(action)
    else:
        action, log_prob = dist.sample(key)
    record = StepRecord(
        action, log_prob, value, hidden if isinstance(network, RecurrentActorCritic) else None
    )
    return dist.to_env(action), hidden, record


def values_of(network: Any, params: Any, obs: Any, hidden: Any, first: jax.Array) -> jax.Array:
    """``V(obs)`` over any batch dims; a recurrent network reads ``obs`` from state ``hidden``
    (zeroed where ``first``), as its next step would."""
    if isinstance(network, RecurrentActorCritic):
        return network.apply(params, hidden, obs, first, method=network.step)[2]
    return network.apply(params, obs)[1]


def replay(network: Any, params: Any, batch: Batch) -> tuple[Any, jax.Array]:
    """The distributions and values of a minibatch under ``params``: ``(dist, values)``.

    Feed-forward: steps ``[B]``, each on its own. Recurrent: sequences
    ``[T, n]`` replayed from ``batch.hidden [n, G]`` with the reset flags
    ``batch.first``, exactly as the rollout computed them (same scan).
    """
    if isinstance(network, RecurrentActorCritic):
        _, dist, values = network.apply(params, batch.hidden, batch.obs, batch.first)
        return dist, values
    return network.apply(params, batch.obs)


# ----------------------------------------------------------------------------- the pieces of an update
@struct.dataclass
class Batch:
    """An update's training data: leaves ``[T, N, ...]`` (``hidden``: ``[N, G]`` or None)."""

    obs: Any
    first: jax.Array
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    advantages: jax.Array
    targets: jax.Array
    hidden: Any  # recurrent: the GRU state each environment's segment started from


def advantages_and_targets(
    transitions: rollouts.Transition,
    next_values: jax.Array,
    last_value: jax.Array,
    gamma: float,
    gae_lambda: float,
    reward_scale: float = 1.0,
) -> tuple[jax.Array, jax.Array]:
    """GAE advantages and value targets ``[T, N]`` of a rollout.

    ``next_values[t] = V(next_obs_t)`` bootstraps truncated steps (see the
    module docstring); ``last_value = V`` of the observations after the last
    step bootstraps the segment's end. Rewards are multiplied by ``reward_scale``.
    """
    rewards = transitions.reward * reward_scale
    rewards = pg.bootstrap_truncated(rewards, transitions.truncated, next_values, gamma)
    return pg.gae(rewards, transitions.extras.value, transitions.done, last_value, gamma, gae_lambda)


def shuffled_minibatches(key: jax.Array, batch: Any, num_minibatches: int, axis: int = 0) -> Any:
    """``batch`` shuffled along ``axis`` and cut into ``num_minibatches`` equal parts (a new axis 0).

    Every leaf must have the same size along ``axis``, divisible by
    ``num_minibatches``; every element appears in exactly one minibatch.
    """
    size = jax.tree.leaves(batch)[0].shape[axis]
    order = jax.random.permutation(key, size)

    def split(x: jax.Array) -> jax.Array:
        x = jnp.take(x, order, axis=axis)
        x = x.reshape((*x.shape[:axis], num_minibatches, size // num_minibatches, *x.shape[axis + 1 :]))
        return jnp.moveaxis(x, axis, 0)

    return jax.tree.map(split, batch)


def epoch_minibatches(key: jax.Array, batch: Batch, num_minibatches: int) -> Batch:
    """One epoch's minibatches (leading axis ``num_minibatches``).

    Feed-forward (``batch.hidden is None``): the ``T x N`` steps are shuffled
    together. Recurrent: the ``N`` environments are shuffled and each
    minibatch keeps whole sequences ``[T, N / num_minibatches]``.
    """
    if batch.hidden is None:
        flat = jax.tree.map(lambda x: x.reshape((-1, *x.shape[2:])), batch)
        return shuffled_minibatches(key, flat, num_minibatches, axis=0)
    # The same key, so the same permutation of the environments, for the sequences and their start states.
    mini = shuffled_minibatches(key, batch.replace(hidden=None), num_minibatches, axis=1)
    hidden = shuffled_minibatches(key, batch.hidden, num_minibatches, axis=0)
    return mini.replace(hidden=hidden)


def ppo_loss(
    network: Any, params: Any, batch: Batch, algo_cfg: Config
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """PPO's loss on a minibatch: clipped surrogate + vf_coef x 0.5 x value loss - ent_coef x entropy."""
    dist, values = replay(network, params, batch)
    advantages = batch.advantages
    if algo_cfg.normalize_advantages:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    mask = None  # every step of a minibatch is real
    log_prob, entropy = dist.log_prob_and_entropy(batch.action)
    policy_loss, aux = pg.surrogate_loss(
        log_prob,
        batch.log_prob,
        advantages,
        values,
        batch.targets,
        entropy,
        mask,
        algo_cfg.clip_eps,
        0.0,
        algo_cfg.ent_coef,
    )
    value_loss = pg.clipped_value_loss(
        values, batch.value, batch.targets, algo_cfg.clip_eps if algo_cfg.clip_value else None
    )
    loss = policy_loss + algo_cfg.vf_coef * 0.5 * value_loss
    return loss, {**aux, "value_loss": value_loss, "loss": loss}


def make_optimizer(algo_cfg: Config, num_updates: int) -> optax.GradientTransformation:
    """Adam (eps 1e-5) after global-norm clipping; with ``anneal_lr`` the rate falls linearly per update,
    ``lr * (1 - k / num_updates)`` during update ``k`` (PureJaxRL's schedule), never below 0."""
    steps_per_update = algo_cfg.update_epochs * algo_cfg.num_minibatches
    learning_rate: Any = algo_cfg.learning_rate
    if algo_cfg.anneal_lr:

        def learning_rate(count: jax.Array) -> jax.Array:
            done = (count // steps_per_update).astype(jnp.float32)
            return algo_cfg.learning_rate * jnp.maximum(1.0 - done / num_updates, 0.0)

    return optax.chain(optax.clip_by_global_norm(algo_cfg.max_grad_norm), optax.adam(learning_rate, eps=1e-5))


def train_epochs(
    network: Any,
    optimizer: optax.GradientTransformation,
    params: Any,
    opt_state: Any,
    batch: Batch,
    key: jax.Array,
    algo_cfg: Config,
) -> tuple[Any, Any, dict[str, jax.Array]]:
    """``update_epochs`` epochs of minibatch Adam steps; returns the new params, optimiser state and the
    mean of the loss terms over all steps."""

    def _step(carry: tuple[Any, Any], minibatch: Batch) -> tuple[tuple[Any, Any], dict[str, jax.Array]]:
        params, opt_state = carry
        grads, aux = jax.grad(lambda p: ppo_loss(network, p, minibatch, algo_cfg), has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), aux

    def _epoch(carry: tuple[Any, Any], epoch_key: jax.Array) -> tuple[tuple[Any, Any], dict[str, jax.Array]]:
        minibatches = epoch_minibatches(epoch_key, batch, algo_cfg.num_minibatches)
        return jax.lax.scan(_step, carry, minibatches)

    keys = jax.random.split(key, algo_cfg.update_epochs)
    (params, opt_state), aux = jax.lax.scan(_epoch, (params, opt_state), keys)
    return params, opt_state, jax.tree.map(jnp.mean, aux)


# ----------------------------------------------------------------------------- init, update, evaluate
@struct.dataclass
class TrainState:
    params: Any
    opt_state: Any
    runner: rollouts.EnvRunner  # the environments, continued across updates
    hidden: Any  # recurrent: the GRU state [N, G] of each environment; else None
    key: jax.Array
    update_step: jax.Array


def make(cfg: Any) -> Algo:
    """Build ``init``, ``update`` and ``evaluate`` for a validated run config."""
    algo_cfg = cfg.algo
    env, env_params = make_env(cfg.env)
    network = make_network(algo_cfg, env.observation_space(env_params), env.action_space(env_params))
    recurrent = isinstance(network, RecurrentActorCritic)
    optimizer = make_optimizer(algo_cfg, cfg.num_updates)
    num_envs, num_steps = algo_cfg.num_envs, algo_cfg.num_steps

    def initial_hidden(batch: int) -> Any:
        return network.initial_hidden((batch,)) if recurrent else None

    def policy(greedy: bool) -> rollouts.RolloutPolicy:
        def policy_fn(params: Any, obs: Any, first: jax.Array, hidden: Any, key: jax.Array) -> Any:
            return act(network, params, obs, first, hidden, key, greedy)

        return policy_fn

    def init(key: jax.Array) -> TrainState:
        key, env_key, net_key = jax.random.split(key, 3)
        runner = rollouts.start(env, env_params, env_key, num_envs)
        if recurrent:
            example = (
                initial_hidden(num_envs),
                jax.tree.map(lambda x: x[None], runner.obs),
                runner.first[None],
            )
            params = network.init(net_key, *example)
        else:
            params = network.init(net_key, runner.obs)
        opt_state = optimizer.init(params)
        return TrainState(params, opt_state, runner, initial_hidden(num_envs), key, jnp.zeros((), jnp.int32))

    def update(state: TrainState) -> tuple[TrainState, Metrics]:
        key, rollout_key, train_key = jax.random.split(state.key, 3)
        params = state.params
        runner, hidden, transitions = rollouts.rollout(
            env, env_params, state.runner, policy(False), params, rollout_key, num_steps, state.hidden
        )
        record = transitions.extras
        no_reset = jnp.zeros(transitions.done.shape, bool)
        next_values = values_of(network, params, transitions.next_obs, record.hidden, no_reset)
        # The observation after the last step is that step's next_obs unless the episode ended there,
        # and then GAE does not bootstrap it (done): next_values[-1] serves as the last value.
        last_value = next_values[-1]
        advantages, targets = advantages_and_targets(
            transitions, next_values, last_value, algo_cfg.gamma, algo_cfg.gae_lambda, algo_cfg.reward_scale
        )
        batch = Batch(
            obs=transitions.obs,
            first=transitions.first,
            action=record.action,
            log_prob=record.log_prob,
            value=record.value,
            advantages=advantages,
            targets=targets,
            hidden=state.hidden,
        )
        params, opt_state, losses = train_epochs(
            network, optimizer, params, state.opt_state, batch, train_key, algo_cfg
        )
        metrics = {
            "env_steps": (state.update_step + 1) * jnp.int32(num_envs * num_steps),
            **rollouts.episode_metrics(transitions, runner),
            **losses,
        }
        new_state = TrainState(params, opt_state, runner, hidden, key, state.update_step + 1)
        return new_state, metrics

    def evaluate(state: TrainState, key: jax.Array) -> Metrics:
        """``eval_episodes`` fresh episodes played to their end by the current policy."""
        episodes = algo_cfg.eval_episodes
        return rollouts.evaluation_metrics(
            env,
            env_params,
            policy(algo_cfg.eval_greedy),
            state.params,
            key,
            episodes,
            policy_carry=initial_hidden(episodes),
        )

    describe = (
        f"{num_envs} envs x {num_steps} steps ({num_envs * num_steps} env steps), "
        f"{algo_cfg.update_epochs} epochs x {algo_cfg.num_minibatches} minibatches"
        + (f", GRU {algo_cfg.gru_size}" if recurrent else "")
    )
    return Algo("ppo", init, update, evaluate, returns_report(describe))

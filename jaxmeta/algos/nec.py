"""Neural Episodic Control (Pritzel et al., 2017) on persistent vectorised environments.

The agent's Q-values come from memory, not from a network's output layer: a convolutional (or MLP)
embedding ``h = f(s)`` is looked up in one differentiable neural dictionary per action
(:mod:`jaxmeta.memory.dnd`), and ``Q(s, a)`` is the kernel-weighted mean of the values of ``h``'s ``k``
nearest keys in action ``a``'s table, ``w_i = 1 / (|h - h_i|^2 + delta)``. Experience is written into
the tables at once (tabular, fast), while the embedding learns slowly by gradient.

One update (``make``'s ``update``), all of it fixed-shape:

1. ``num_steps`` times: the ``num_envs`` environments show ``s_t``; each is embedded and looked up in
   every action's table (the rows used become the most recently used), and acts epsilon-greedily on
   the estimates (:func:`jaxmeta.algos.dqn.epsilon_schedule`, counted in env steps).
2. Each step waits in a queue of the last ``n_step`` steps of each environment (a
   :mod:`jaxmeta.memory.replay` ring of ``n_step`` rows) until its N-step return is known. When step
   ``t - N`` leaves the queue at step ``t``, its target is
   ``Q_N = sum_{j<N} gamma^j r_{t-N+j} + gamma^N max_a Q(s_t, a)``, the returns stopping at the first
   episode end inside the window (:func:`n_step_targets`): no bootstrap after a termination; after a
   time-limit truncation at step ``e`` the value of the final observation is taken as
   ``(Q(s_e, a_e) - r_e) / gamma``, from the estimate the agent acted on at step ``e`` (the final
   observation itself is never looked up: that would be a second lookup on every step).
3. ``(h_{t-N}, Q_N)`` is written into the table of ``a_{t-N}``: a stored key moves its value towards
   ``Q_N`` by ``alpha``, a new key replaces the least recently used row. ``(s_{t-N}, a_{t-N}, Q_N)``
   goes into a replay memory of ``buffer_size`` entries.
4. Once ``learning_starts`` env steps have been collected, ``gradient_steps`` times: a minibatch of
   ``batch_size`` replayed entries is embedded with the current network, its neighbours are found in
   the table of the replayed action, and the squared error ``(Q(s, a) - Q_N)^2`` is minimised: RMSProp
   on the embedding network, and plain gradient steps on the values (``value_learning_rate``) and keys
   (``key_learning_rate``) of the neighbours used (:func:`jaxmeta.memory.dnd.update_rows`), as in the
   paper, where the gradient reaches the dictionary too.

Evaluation plays ``eval_episodes`` fresh episodes with epsilon ``eval_epsilon``, reading the tables
without writing them.

Defaults follow the paper where it gives them: ``k = 50``, ``delta = 1e-3``, ``N = 100``,
``alpha = 0.1``, keys of 128, RMSProp with step size 7.92e-6, a replay memory of 1e5 and minibatches of
32, ``gamma = 0.99``. The paper's tables hold 5e5 entries per action; the default here is 5e4 (a
lookup reads the whole table, and this project's runs are sized for a 2-core CPU). The exploration
schedule, ``learning_starts``, the step sizes on the dictionary and the number of gradient steps per
env step are this implementation's choices (the paper does not state them all); see the MinAtar
configs. A key's gradient grows like ``1 / (d^2 + delta)^2`` for a near neighbour, hence the key's much
smaller step.

Read top to bottom: config, state, the pieces of the method (module-level pure functions), ``make``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from envs_jax.vector import as_batched
from jaxmeta import rollouts
from jaxmeta.algos.api import Algo, Metrics, check_binary_obs, make_env, require_discrete_actions
from jaxmeta.algos.dqn import epsilon_greedy, epsilon_schedule
from jaxmeta.config import ConfigError, param
from jaxmeta.memory import dnd as dnd_lib
from jaxmeta.memory import replay
from jaxmeta.nets.encoders import encoder_for
from jaxmeta.reports import returns_report


@dataclasses.dataclass
class Config:
    name: str = param("nec", "method: Neural Episodic Control (Pritzel et al. 2017)")
    num_envs: int = param(4, "environments stepped together (persistent across updates)", min=1)
    num_steps: int = param(
        4, "steps of each environment per update: an update collects num_envs * num_steps env steps", min=1
    )
    capacity: int = param(50_000, "rows of each action's dictionary (paper: 500,000)", min=1)
    key_size: int = param(128, "size of the embedding, the dictionaries' keys (paper: 128)", min=1)
    num_neighbours: int = param(50, "k nearest neighbours per lookup (paper: 50)", min=1)
    delta: float = param(1e-3, "kernel w = 1 / (d^2 + delta) (paper: 1e-3)", min=0.0, min_exclusive=True)
    alpha: float = param(
        0.1,
        "tabular step of a write to a stored key: v <- v + alpha (Q_N - v) (paper: 0.1)",
        min=0.0,
        max=1.0,
    )
    n_step: int = param(100, "N of the N-step return targets (paper: 100)", min=1)
    gamma: float = param(0.99, "discount factor", min=0.0, max=1.0, min_exclusive=True)
    buffer_size: int = param(
        100_000, "replay memory of (s, a, Q_N) entries, over all environments (paper: 100,000)", min=1
    )
    batch_size: int = param(32, "replayed entries per gradient step (paper: 32)", min=1)
    gradient_steps: int = param(1, "gradient steps per update, once learning has started", min=0)
    learning_starts: int = param(
        1_000, "env steps of uniformly random actions before the first gradient step", min=0
    )
    learning_rate: float = param(
        7.92e-6, "RMSProp step size of the embedding network (paper: 7.92e-6)", min=0.0, min_exclusive=True
    )
    rmsprop_decay: float = param(0.95, "RMSProp decay of the squared-gradient average", min=0.0, max=1.0)
    rmsprop_eps: float = param(0.01, "RMSProp epsilon", min=0.0, min_exclusive=True)
    value_learning_rate: float = param(
        0.05,
        "gradient step on the values of the neighbours used (0: values change only by writes); "
        "0.05 = alpha / 2 makes it the tabular rule's step when one neighbour dominates",
        min=0.0,
    )
    key_learning_rate: float = param(
        1e-4, "gradient step on the keys of the neighbours used (0: keys stay as written)", min=0.0
    )
    epsilon_start: float = param(1.0, "exploration epsilon when learning starts", min=0.0, max=1.0)
    epsilon_end: float = param(0.01, "exploration epsilon after annealing", min=0.0, max=1.0)
    epsilon_anneal_steps: int = param(
        100_000, "env steps, counted from learning_starts, over which epsilon falls linearly", min=1
    )
    eval_episodes: int = param(10, "fresh episodes per evaluation, played to their end", min=1)
    eval_epsilon: float = param(0.0, "epsilon of the evaluation policy (0: greedy)", min=0.0, max=1.0)
    encoder_hidden: list[int] = param(
        [], "hidden widths of the embedding's MLP (images: exactly one, default 128)", min=1
    )
    conv_channels: list[int] = param([16], "channels of the 3x3 convolutions (image observations)", min=1)
    binary_obs: bool = param(
        False, "observations are 0/1 only (e.g. MinAtar): store them as bool in the replay (4x less memory)"
    )


def validate_config(cfg: Any) -> None:
    algo = cfg.algo
    require_discrete_actions(cfg)
    if algo.num_neighbours > algo.capacity:
        raise ConfigError(
            f"algo.num_neighbours={algo.num_neighbours} must be <= algo.capacity={algo.capacity} "
            "(a lookup needs that many rows)"
        )
    capacity = buffer_capacity(algo)
    if algo.batch_size > capacity * algo.num_envs:
        raise ConfigError(
            f"algo.batch_size={algo.batch_size} is larger than the replay memory "
            f"({capacity * algo.num_envs} entries)"
        )
    env, params = make_env(cfg.env)
    limit = getattr(params, "max_steps_in_episode", None)
    if limit is not None and algo.n_step > int(limit):
        raise ConfigError(
            f"algo.n_step={algo.n_step} is longer than {cfg.env.id}'s episodes (at most {int(limit)} steps): "
            f"every window would end inside its episode; use algo.n_step <= {int(limit)}"
        )
    space = env.observation_space(params)
    try:
        make_network(algo, space)
    except ValueError as err:
        raise ConfigError(f"algo: {' '.join(str(err).split())}") from None
    check_binary_obs(cfg)


@struct.dataclass
class TrainState:
    params: Any  # the embedding network
    opt_state: Any
    dnd: dnd_lib.DND
    pending: replay.ReplayBuffer  # the last n_step steps of each env, waiting for their N-step returns
    buffer: replay.ReplayBuffer  # (obs, action, target) entries
    runner: rollouts.EnvRunner
    key: jax.Array
    env_steps: jax.Array  # int32: env steps collected so far, over all environments


# ----------------------------------------------------------------------------- the method, piece by piece
def buffer_capacity(algo_cfg: Config) -> int:
    """Time rows per environment of the replay memory: ``buffer_size / num_envs``, rounded up."""
    return math.ceil(algo_cfg.buffer_size / algo_cfg.num_envs)


def make_network(algo_cfg: Config, obs_space: Any) -> Any:
    """The embedding ``obs -> [key_size]``: the observation space's encoder, its output linear."""
    return encoder_for(
        obs_space,
        algo_cfg.key_size,
        hidden=tuple(algo_cfg.encoder_hidden),
        conv_channels=tuple(algo_cfg.conv_channels),
    )


def make_optimizer(algo_cfg: Config) -> optax.GradientTransformation:
    """RMSProp on the embedding network."""
    return optax.rmsprop(algo_cfg.learning_rate, decay=algo_cfg.rmsprop_decay, eps=algo_cfg.rmsprop_eps)


def n_step_targets(
    rewards: jax.Array,
    terminated: jax.Array,
    truncated: jax.Array,
    q_taken: jax.Array,
    bootstrap: jax.Array,
    gamma: float,
) -> jax.Array:
    """N-step targets of the first step of windows ``[..., N]`` (time last).

    ``sum_{j <= last} gamma^j r_j`` up to the first episode end ``last`` (``N - 1`` if none), plus
    ``gamma^N * bootstrap`` (the value of the state after the window, ``[...]``) if no episode ended,
    nothing after a termination, and ``gamma^(last + 1) (q_taken[last] - r[last]) / gamma`` after a
    truncation: the final observation's value recovered from the estimate ``Q(s_e, a_e)`` acted on.
    """
    returns, discount, last = replay.n_step_targets(rewards, terminated, truncated, gamma)
    ended = (terminated | truncated).any(-1)
    at_last = lambda x: jnp.take_along_axis(x, last[..., None], axis=-1)[..., 0]  # noqa: E731
    after_truncation = (at_last(q_taken) - at_last(rewards)) / gamma
    return returns + discount * jnp.where(ended, after_truncation, bootstrap)


def nec_loss(
    params: Any,
    neighbour_keys: jax.Array,
    neighbour_values: jax.Array,
    network: Any,
    obs: Any,
    valid: jax.Array,
    targets: jax.Array,
    mask: jax.Array,
    delta: float,
) -> tuple[jax.Array, jax.Array]:
    """``(mean (Q(s, a) - Q_N)^2 over the entries where mask, Q(s, a))``, differentiable in the network
    and in the neighbours' rows.

    ``neighbour_keys [B, k, D]`` and ``neighbour_values [B, k]`` are the rows the search found for each
    replayed ``(s, a)``; ``valid [B, k]`` says which exist; ``mask [B]`` which entries count.
    """
    queries = network.apply(params, obs)
    q = dnd_lib.kernel_estimate(queries, neighbour_keys, neighbour_values, valid, delta)
    errors = jnp.where(mask, jnp.square(q - targets), 0.0)
    return errors.sum() / jnp.maximum(mask.sum(), 1), q


# ----------------------------------------------------------------------------- wiring
def make(cfg: Any) -> Algo:
    """Build ``init``, ``update`` and ``evaluate`` for a validated run config."""
    algo_cfg = cfg.algo
    env, env_params = make_env(cfg.env)
    obs_space = env.observation_space(env_params)
    num_actions = int(env.action_space(env_params).n)
    network = make_network(algo_cfg, obs_space)
    optimizer = make_optimizer(algo_cfg)
    num_envs, k = algo_cfg.num_envs, algo_cfg.num_neighbours
    steps_per_update = num_envs * algo_cfg.num_steps

    def stored(obs: Any) -> Any:
        return jax.tree.map(lambda x: x.astype(bool), obs) if algo_cfg.binary_obs else obs

    def acting_policy(policy_params: Any, obs: Any, first: jax.Array, table: Any, key: jax.Array) -> Any:
        """Embed, look up every action's table (refreshing the rows used), act epsilon-greedily."""
        params, epsilon = policy_params
        embedding = network.apply(params, obs)
        q, table, _ = dnd_lib.lookup(table, embedding, k, algo_cfg.delta)
        action = epsilon_greedy(q, epsilon, key)
        q_taken = jnp.take_along_axis(q, action[:, None], axis=-1)[:, 0]
        return action, table, (embedding, q_taken, q.max(-1))

    def evaluation_policy(policy_params: Any, obs: Any, first: jax.Array, carry: Any, key: jax.Array) -> Any:
        """Read-only: the tables are neither written nor aged during evaluation."""
        params, table, epsilon = policy_params
        q, _, _ = dnd_lib.lookup(table, network.apply(params, obs), k, algo_cfg.delta)
        return epsilon_greedy(q, epsilon, key), carry, None

    def init(key: jax.Array) -> TrainState:
        key, net_key, env_key = jax.random.split(key, 3)
        runner = rollouts.start(env, env_params, env_key, num_envs)
        params = network.init(net_key, runner.obs)
        one_obs = jax.tree.map(lambda x: x[0], stored(runner.obs))
        entry = {"obs": one_obs, "action": jnp.int32(0), "target": jnp.float32(0), "valid": jnp.bool_(False)}
        waiting = {
            "embedding": jnp.zeros((algo_cfg.key_size,), jnp.float32),
            "obs": one_obs,
            "action": jnp.int32(0),
            "reward": jnp.float32(0),
            "terminated": jnp.bool_(False),
            "truncated": jnp.bool_(False),
            "q_taken": jnp.float32(0),
        }
        return TrainState(
            params=params,
            opt_state=optimizer.init(params),
            dnd=dnd_lib.init(num_actions, algo_cfg.capacity, algo_cfg.key_size),
            pending=replay.init(algo_cfg.n_step, num_envs, waiting),
            buffer=replay.init(buffer_capacity(algo_cfg), num_envs, entry),
            runner=runner,
            key=key,
            env_steps=jnp.zeros((), jnp.int32),
        )

    def env_step(carry: tuple, key: jax.Array) -> tuple[tuple, rollouts.Transition]:
        """One step of every environment, then the oldest pending step written and replaced."""
        runner, table, pending, buffer, params, epsilon = carry
        runner, table, transitions = rollouts.rollout(
            env, env_params, runner, acting_policy, (params, epsilon), key, 1, table
        )
        step = jax.tree.map(lambda x: x[0], transitions)
        embedding, q_taken, q_max = step.extras
        # The oldest pending step's window is complete now that max_a Q(s_t, a) is known.
        # Only the small per-step fields are put in time order (every call copies what it orders).
        scalars = {name: pending.data[name] for name in ("reward", "terminated", "truncated", "q_taken")}
        window = jax.tree.map(lambda x: x.T, replay.time_ordered(pending, scalars))  # [E, N]
        targets = n_step_targets(
            window["reward"],
            window["terminated"],
            window["truncated"],
            window["q_taken"],
            q_max,
            algo_cfg.gamma,
        )
        full = replay.size(pending) == algo_cfg.n_step
        oldest = replay.oldest(pending)
        table = dnd_lib.write(
            table,
            oldest["action"],
            oldest["embedding"],
            targets,
            algo_cfg.alpha,
            mask=jnp.broadcast_to(full, (num_envs,)),
        )
        buffer = replay.add(
            buffer,
            {
                "obs": oldest["obs"],
                "action": oldest["action"],
                "target": targets,
                "valid": jnp.broadcast_to(full, (num_envs,)),
            },
        )
        pending = replay.add(
            pending,
            {
                "embedding": embedding,
                "obs": stored(step.obs),
                "action": step.action,
                "reward": step.reward.astype(jnp.float32),
                "terminated": step.terminated,
                "truncated": step.truncated,
                "q_taken": q_taken,
            },
        )
        return (runner, table, pending, buffer, params, epsilon), step.replace(extras=None)

    def gradient_step(carry: tuple, key: jax.Array, buffer: replay.ReplayBuffer, obs_like: Any) -> tuple:
        params, opt_state, table = carry
        entries, _ = replay.sample(buffer, key, algo_cfg.batch_size)
        obs = jax.tree.map(lambda x, y: x.astype(y.dtype), entries["obs"], obs_like)
        neighbours = dnd_lib.search(table, network.apply(params, obs), k)
        # Only the replayed action's neighbours enter the loss.
        pick = lambda x: x[jnp.arange(algo_cfg.batch_size), entries["action"]]  # noqa: E731
        rows, valid = pick(neighbours.indices), pick(neighbours.valid)
        action = entries["action"][:, None]
        keys, values = table.keys[action, rows], table.values[action, rows]
        mask = entries["valid"]  # entries written before the first window was complete do not count
        (loss, q), (param_grads, key_grads, value_grads) = jax.value_and_grad(
            nec_loss, argnums=(0, 1, 2), has_aux=True
        )(params, keys, values, network, obs, valid, entries["target"], mask, algo_cfg.delta)
        updates, opt_state = optimizer.update(param_grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        key_steps = -algo_cfg.key_learning_rate * key_grads
        value_steps = -algo_cfg.value_learning_rate * value_grads
        table = dnd_lib.update_rows(table, action, rows, key_steps, value_steps, valid)
        return (params, opt_state, table), (loss, (q * mask).sum() / jnp.maximum(mask.sum(), 1))

    def update(state: TrainState) -> tuple[TrainState, Metrics]:
        key, rollout_key, learn_key = jax.random.split(state.key, 3)
        epsilon = epsilon_schedule(
            state.env_steps,
            algo_cfg.learning_starts,
            algo_cfg.epsilon_start,
            algo_cfg.epsilon_end,
            algo_cfg.epsilon_anneal_steps,
        )
        carry = (state.runner, state.dnd, state.pending, state.buffer, state.params, epsilon)
        carry, transitions = jax.lax.scan(env_step, carry, jax.random.split(rollout_key, algo_cfg.num_steps))
        runner, table, pending, buffer, _, _ = carry
        env_steps = state.env_steps + steps_per_update
        obs_like = jax.tree.map(lambda x: x[0], state.runner.obs)

        def learn(learn_carry: tuple) -> tuple:
            def step(c: tuple, k_: jax.Array) -> tuple:
                return gradient_step(c, k_, buffer, obs_like)

            learn_carry, (losses, q_means) = jax.lax.scan(
                step, learn_carry, jax.random.split(learn_key, algo_cfg.gradient_steps)
            )
            return learn_carry, losses.mean(), q_means.mean()

        def wait(learn_carry: tuple) -> tuple:
            return learn_carry, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32)

        learning = env_steps >= algo_cfg.learning_starts
        if algo_cfg.gradient_steps:
            (params, opt_state, table), loss, q_mean = jax.lax.cond(
                learning, learn, wait, (state.params, state.opt_state, table)
            )
        else:
            (params, opt_state, table), loss, q_mean = wait((state.params, state.opt_state, table))
        metrics = {
            "env_steps": env_steps,
            **rollouts.episode_metrics(transitions, runner),
            "loss": loss,
            "q_mean": q_mean,
            "epsilon": epsilon,
            "dnd_fill": dnd_lib.count(table).mean() / algo_cfg.capacity,
        }
        new_state = TrainState(params, opt_state, table, pending, buffer, runner, key, env_steps)
        return new_state, metrics

    def evaluate(state: TrainState, key: jax.Array) -> Metrics:
        """``eval_episodes`` fresh episodes with epsilon ``eval_epsilon``, played to their end."""
        epsilon = jnp.asarray(algo_cfg.eval_epsilon, jnp.float32)
        return rollouts.evaluation_metrics(
            env,
            env_params,
            evaluation_policy,
            (state.params, state.dnd, epsilon),
            key,
            algo_cfg.eval_episodes,
        )

    describe = (
        f"{num_envs} envs x {algo_cfg.num_steps} steps, {algo_cfg.gradient_steps} gradient step(s) of "
        f"{algo_cfg.batch_size}, {num_actions} dictionaries of {algo_cfg.capacity:,} x {algo_cfg.key_size}"
    )
    report = returns_report(
        describe,
        extra_curves=(
            ("q_mean", "mean Q of replayed actions"),
            ("dnd_fill", "dictionary rows filled"),
            ("epsilon", "exploration epsilon"),
        ),
    )
    return Algo("nec", init, update, evaluate, report, vmappable=getattr(as_batched(env), "vmappable", True))


__all__ = [
    "Config",
    "TrainState",
    "buffer_capacity",
    "make",
    "make_network",
    "make_optimizer",
    "n_step_targets",
    "nec_loss",
    "validate_config",
]

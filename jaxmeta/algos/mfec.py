"""Model-Free Episodic Control (Blundell et al., 2016): the episodic baseline of the NEC paper.

No network learns here. A fixed random projection of the observation is the key; one dictionary per
action (:mod:`jaxmeta.memory.dnd`) keeps, for each key seen, the best discounted return that followed
taking the action there. ``Q(s, a)`` is the stored value when ``s``'s key is in action ``a``'s table,
otherwise the plain mean of the values of its ``k`` nearest keys (:func:`mfec_estimate`).

One update (``make``'s ``update``), fixed-shape:

1. ``num_steps`` times: the ``num_envs`` environments show ``s_t``; each is projected, looked up in every
   action's table (the rows used become the most recently used) and acts epsilon-greedily.
2. Each step waits in a first-in first-out queue of each environment (:class:`ReturnQueue`, at most
   ``horizon`` steps) while its discounted return ``sum_j gamma^j r_{t+j}`` accumulates, reward by
   reward, until its episode ends (terminated or at its time limit: nothing is bootstrapped, as in the
   paper). Each step, every environment's oldest waiting step is written if its episode has ended, or if
   the queue is full (its return then stops after ``horizon`` rewards). Steps of an ended episode thus
   leave one per env step, in order, while the next episode's steps queue behind them.
3. ``(key, return)`` is written into the table of the action taken with the max rule: a stored key keeps
   ``max(value, return)``, a new key replaces the least recently used row.

Evaluation plays ``eval_episodes`` fresh episodes with epsilon ``eval_epsilon``, reading the tables
without writing them.

Defaults follow the paper where it gives them: ``k = 11``, random projections to 64 dimensions, epsilon
0.005 after a short annealing (this implementation's). The paper's tables hold 1e6 entries per action;
the default here is 5e4 (a lookup reads the whole table).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from envs_jax.vector import as_batched
from jaxmeta import rollouts
from jaxmeta.algos.api import Algo, Metrics, make_env, require_discrete_actions
from jaxmeta.algos.dqn import epsilon_greedy, epsilon_schedule
from jaxmeta.config import ConfigError, param
from jaxmeta.memory import dnd as dnd_lib
from jaxmeta.reports import returns_report


@dataclasses.dataclass
class Config:
    name: str = param("mfec", "method: Model-Free Episodic Control (Blundell et al. 2016)")
    num_envs: int = param(4, "environments stepped together (persistent across updates)", min=1)
    num_steps: int = param(
        4, "steps of each environment per update: an update collects num_envs * num_steps env steps", min=1
    )
    capacity: int = param(50_000, "rows of each action's dictionary (paper: 1,000,000)", min=1)
    key_size: int = param(
        64, "dimensions of the random projection, the dictionaries' keys (paper: 64)", min=1
    )
    num_neighbours: int = param(11, "k nearest neighbours averaged for an unseen state (paper: 11)", min=1)
    gamma: float = param(0.99, "discount factor of the Monte-Carlo returns", min=0.0, max=1.0)
    horizon: int = param(
        0,
        "most steps waiting per environment; a return is cut after this many rewards (0: twice the "
        "env's max_steps_in_episode, so that every return is complete)",
        min=0,
    )
    epsilon_start: float = param(1.0, "exploration epsilon at the start", min=0.0, max=1.0)
    epsilon_end: float = param(0.005, "exploration epsilon after annealing (paper: 0.005)", min=0.0, max=1.0)
    epsilon_anneal_steps: int = param(
        10_000, "env steps over which epsilon falls linearly from epsilon_start to epsilon_end", min=1
    )
    eval_episodes: int = param(10, "fresh episodes per evaluation, played to their end", min=1)
    eval_epsilon: float = param(0.0, "epsilon of the evaluation policy (0: greedy)", min=0.0, max=1.0)


def return_horizon(algo_cfg: Config, env_params: Any) -> int:
    """The queue length: ``horizon``, or twice the env's episode limit when it is 0 (a whole episode
    waits while the previous one's steps are still leaving, one per env step)."""
    if algo_cfg.horizon:
        return algo_cfg.horizon
    return 2 * int(env_params.max_steps_in_episode)


def validate_config(cfg: Any) -> None:
    algo = cfg.algo
    require_discrete_actions(cfg)
    if algo.num_neighbours > algo.capacity:
        raise ConfigError(
            f"algo.num_neighbours={algo.num_neighbours} must be <= algo.capacity={algo.capacity} "
            "(a lookup needs that many rows)"
        )
    _, params = make_env(cfg.env)
    if not algo.horizon and not hasattr(params, "max_steps_in_episode"):
        raise ConfigError(f"{cfg.env.id} has no max_steps_in_episode: set algo.horizon")


@struct.dataclass
class ReturnQueue:
    """Per environment a first-in first-out queue of steps whose returns are still accumulating: rings
    of ``horizon`` rows, leaves ``[horizon, E, ...]``. All envs push to row ``tail``; each pops from its
    own ``head``."""

    key: jax.Array  # [H, E, D]
    action: jax.Array  # [H, E] int32
    returns: jax.Array  # [H, E] float32: discounted rewards so far
    discount: jax.Array  # [H, E] float32: gamma^(rewards so far), the weight of the next reward
    open: jax.Array  # [H, E] bool: the step's episode has not ended yet
    waiting: jax.Array  # [H, E] bool: the row holds a step not yet written
    head: jax.Array  # [E] int32: each env's oldest waiting row
    tail: jax.Array  # int32: the row the next step goes to


@struct.dataclass
class TrainState:
    projection: jax.Array  # [obs_size, key_size], fixed
    dnd: dnd_lib.DND
    pending: ReturnQueue
    runner: rollouts.EnvRunner
    key: jax.Array
    env_steps: jax.Array  # int32: env steps collected so far, over all environments


# ----------------------------------------------------------------------------- the method, piece by piece
def random_projection(key: jax.Array, obs: Any, key_size: int) -> jax.Array:
    """A fixed Gaussian matrix ``[obs_size, key_size]`` for observations shaped like ``obs`` (one env's,
    any pytree; its leaves are flattened and concatenated)."""
    obs_size = sum(int(jnp.size(x)) for x in jax.tree.leaves(obs))
    return jax.random.normal(key, (obs_size, key_size), jnp.float32)


def project(projection: jax.Array, obs: Any) -> jax.Array:
    """Keys ``[B, key_size]`` of a batch of observations (leaves ``[B, ...]``)."""
    flat = [x.reshape(x.shape[0], -1).astype(jnp.float32) for x in jax.tree.leaves(obs)]
    return jnp.concatenate(flat, axis=-1) @ projection


def init_queue(horizon: int, num_envs: int, key_size: int) -> ReturnQueue:
    """An empty queue of ``horizon`` rows per environment."""
    zeros = jnp.zeros((horizon, num_envs), jnp.float32)
    return ReturnQueue(
        key=jnp.zeros((horizon, num_envs, key_size), jnp.float32),
        action=jnp.zeros((horizon, num_envs), jnp.int32),
        returns=zeros,
        discount=zeros,
        open=jnp.zeros((horizon, num_envs), bool),
        waiting=jnp.zeros((horizon, num_envs), bool),
        head=jnp.zeros((num_envs,), jnp.int32),
        tail=jnp.zeros((), jnp.int32),
    )


def queue_step(
    queue: ReturnQueue,
    key: jax.Array,
    action: jax.Array,
    reward: jax.Array,
    done: jax.Array,
    gamma: float,
) -> tuple[ReturnQueue, dict[str, jax.Array]]:
    """One env step of every environment: first each env's oldest waiting step leaves if its episode
    has ended or the queue is full (its return then holds ``horizon`` rewards); then the new step
    (``key [E, D]``, ``action [E]``) joins, ``reward [E]`` is added to the returns of every waiting step
    of its episode (the new one included), and ``done [E]`` closes that episode.

    Returns the queue and the step that left ``{"key", "action", "return", "valid"}`` (``valid [E]``:
    whether one left).
    """
    horizon, num_envs = queue.action.shape
    envs = jnp.arange(num_envs)
    tail = queue.tail
    full = queue.waiting[tail]  # [E]: the ring is full, its oldest step sits in the row to be written
    head = jnp.where(full, tail, queue.head)
    leaves = queue.waiting[head, envs] & (full | ~queue.open[head, envs])
    left = {
        "key": queue.key[head, envs],
        "action": queue.action[head, envs],
        "return": queue.returns[head, envs],
        "valid": leaves,
    }
    waiting = queue.waiting.at[head, envs].set(queue.waiting[head, envs] & ~leaves)
    head = jnp.where(leaves, (head + 1) % horizon, head)
    waiting = waiting.at[tail].set(True)
    returns = queue.returns.at[tail].set(0.0)
    discount = queue.discount.at[tail].set(1.0)
    is_open = queue.open.at[tail].set(True)
    gets = waiting & is_open
    queue = ReturnQueue(
        key=queue.key.at[tail].set(key),
        action=queue.action.at[tail].set(action),
        returns=returns + jnp.where(gets, discount * reward[None], 0.0),
        discount=jnp.where(gets, discount * gamma, discount),
        open=is_open & ~done[None],
        waiting=waiting,
        head=head,
        tail=(tail + 1) % horizon,
    )
    return queue, left


def mfec_estimate(table: dnd_lib.DND, keys: jax.Array, k: int) -> tuple[jax.Array, dnd_lib.DND]:
    """``Q [B, A]``: the stored value where the exact key is in the action's table, else the mean value
    of the ``k`` nearest keys (0 for an empty table); and the table with the used rows refreshed."""
    neighbours = dnd_lib.search(table, keys, k)
    # All k keys are gathered though only the nearest is compared: indexing the nearest key alone
    # (table.keys[action, indices[..., 0]]) made a vmapped update 11x slower on the CPU (measured).
    neighbour_keys, values = dnd_lib.gather(table, neighbours)  # [B, A, k, D], [B, A, k]
    # The exact key, if stored, is the nearest one (distance 0); compare it element by element.
    exact = neighbours.valid[..., 0] & (neighbour_keys[..., 0, :] == keys[:, None]).all(-1)
    # Averaged rows: only the nearest where it is the exact key, else every valid neighbour. (Written as
    # weights: a where() choosing between two estimates made the whole update ~5x slower on CPU.)
    counted = jnp.where(exact[..., None], jnp.arange(k) == 0, neighbours.valid)
    q = jnp.where(counted, values, 0.0).sum(-1) / jnp.maximum(counted.sum(-1), 1)
    return q, dnd_lib.touch(table, neighbours)


# ----------------------------------------------------------------------------- wiring
def make(cfg: Any) -> Algo:
    """Build ``init``, ``update`` and ``evaluate`` for a validated run config."""
    algo_cfg = cfg.algo
    env, env_params = make_env(cfg.env)
    num_actions = int(env.action_space(env_params).n)
    num_envs, k = algo_cfg.num_envs, algo_cfg.num_neighbours
    horizon = return_horizon(algo_cfg, env_params)
    steps_per_update = num_envs * algo_cfg.num_steps

    def acting_policy(policy_params: Any, obs: Any, first: jax.Array, table: Any, key: jax.Array) -> Any:
        projection, epsilon = policy_params
        keys = project(projection, obs)
        q, table = mfec_estimate(table, keys, k)
        return epsilon_greedy(q, epsilon, key), table, keys

    def evaluation_policy(policy_params: Any, obs: Any, first: jax.Array, carry: Any, key: jax.Array) -> Any:
        """Read-only: the tables are neither written nor aged during evaluation."""
        projection, table, epsilon = policy_params
        q, _ = mfec_estimate(table, project(projection, obs), k)
        return epsilon_greedy(q, epsilon, key), carry, None

    def init(key: jax.Array) -> TrainState:
        key, projection_key, env_key = jax.random.split(key, 3)
        runner = rollouts.start(env, env_params, env_key, num_envs)
        one_obs = jax.tree.map(lambda x: x[0], runner.obs)
        return TrainState(
            projection=random_projection(projection_key, one_obs, algo_cfg.key_size),
            dnd=dnd_lib.init(num_actions, algo_cfg.capacity, algo_cfg.key_size),
            pending=init_queue(horizon, num_envs, algo_cfg.key_size),
            runner=runner,
            key=key,
            env_steps=jnp.zeros((), jnp.int32),
        )

    def env_step(carry: tuple, key: jax.Array) -> tuple[tuple, rollouts.Transition]:
        """One step of every environment, then the oldest pending step written and replaced."""
        runner, table, pending, projection, epsilon = carry
        runner, table, transitions = rollouts.rollout(
            env, env_params, runner, acting_policy, (projection, epsilon), key, 1, table
        )
        step = jax.tree.map(lambda x: x[0], transitions)
        pending, left = queue_step(
            pending, step.extras, step.action, step.reward.astype(jnp.float32), step.done, algo_cfg.gamma
        )
        table = dnd_lib.write(
            table, left["action"], left["key"], left["return"], rule="max", mask=left["valid"]
        )
        return (runner, table, pending, projection, epsilon), step.replace(extras=None)

    def update(state: TrainState) -> tuple[TrainState, Metrics]:
        key, rollout_key = jax.random.split(state.key)
        epsilon = epsilon_schedule(
            state.env_steps, 0, algo_cfg.epsilon_start, algo_cfg.epsilon_end, algo_cfg.epsilon_anneal_steps
        )
        carry = (state.runner, state.dnd, state.pending, state.projection, epsilon)
        carry, transitions = jax.lax.scan(env_step, carry, jax.random.split(rollout_key, algo_cfg.num_steps))
        runner, table, pending, _, _ = carry
        env_steps = state.env_steps + steps_per_update
        metrics = {
            "env_steps": env_steps,
            **rollouts.episode_metrics(transitions, runner),
            "epsilon": epsilon,
            "dnd_fill": dnd_lib.count(table).mean() / algo_cfg.capacity,
        }
        return TrainState(state.projection, table, pending, runner, key, env_steps), metrics

    def evaluate(state: TrainState, key: jax.Array) -> Metrics:
        """``eval_episodes`` fresh episodes with epsilon ``eval_epsilon``, played to their end."""
        epsilon = jnp.asarray(algo_cfg.eval_epsilon, jnp.float32)
        return rollouts.evaluation_metrics(
            env,
            env_params,
            evaluation_policy,
            (state.projection, state.dnd, epsilon),
            key,
            algo_cfg.eval_episodes,
        )

    describe = (
        f"{num_envs} envs x {algo_cfg.num_steps} steps, returns of up to {horizon} steps, "
        f"{num_actions} dictionaries of {algo_cfg.capacity:,} x {algo_cfg.key_size}"
    )
    report = returns_report(
        describe, extra_curves=(("dnd_fill", "dictionary rows filled"), ("epsilon", "exploration epsilon"))
    )
    return Algo("mfec", init, update, evaluate, report, vmappable=getattr(as_batched(env), "vmappable", True))


__all__ = [
    "Config",
    "ReturnQueue",
    "TrainState",
    "init_queue",
    "make",
    "mfec_estimate",
    "project",
    "queue_step",
    "random_projection",
    "return_horizon",
    "validate_config",
]

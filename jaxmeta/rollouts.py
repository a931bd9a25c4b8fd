"""Persistent-environment rollouts: ``N`` environments stepped for ``T`` steps at a time, across updates.

The PureJaxRL way of single-task RL: the environments' states live in the
train state (:class:`EnvRunner`) and every update continues them for ``T``
more steps; an episode that ends is reset at once (auto-reset, see
``envs_jax.vector``; a host environment resets only the ones that ended).
Episodes therefore cross update boundaries, and the running return of each
environment is carried so that finished episodes can be reported.

The policy acts on the whole batch at once::

    policy_fn(params, obs [N, ...], first [N], carry, key) -> (action [N, ...], carry, extras)

``first`` marks observations that start an episode (a recurrent policy
resets its state there); ``carry`` is the policy's recurrent state (``None``
for a memoryless one); ``extras`` is anything the learner needs recorded per
step (log-probabilities, values, the pre-squash action of a tanh-Gaussian).

:func:`evaluation_returns` plays fresh episodes to their end, for evaluation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from envs_jax.vector import as_batched, step_and_reset
from jaxmeta.trial import action_spec

RolloutPolicy = Callable[[Any, Any, jax.Array, Any, jax.Array], tuple[jax.Array, Any, Any]]


@struct.dataclass
class EnvRunner:
    """The environments of a persistent rollout, carried in the train state across updates."""

    obs: Any  # [N, ...] the observation each environment shows now
    state: Any  # [N] environment states
    first: jax.Array  # [N] bool: ``obs`` starts an episode
    episode_return: jax.Array  # [N] float32: return of the current episode so far
    episode_length: jax.Array  # [N] int32: steps of the current episode so far
    last_return: jax.Array  # [N] float32: return of the last episode that ended (0 before any)
    last_length: jax.Array  # [N] int32: its length
    episodes: jax.Array  # [N] int32: episodes ended so far


@struct.dataclass
class Transition:
    """One step of ``N`` environments; a rollout stacks ``T`` of them (leaves ``[T, N, ...]``)."""

    obs: Any  # the observation the action was chosen on
    action: jax.Array
    reward: jax.Array  # float32
    terminated: jax.Array  # bool
    truncated: jax.Array  # bool: time limit reached without termination (envs_jax.vector.truncation)
    next_obs: Any  # the observation the action led to (the final one when the episode ended)
    first: jax.Array  # bool: ``obs`` started an episode
    extras: Any  # the policy's extras for this step

    @property
    def done(self) -> jax.Array:
        return jnp.logical_or(self.terminated, self.truncated)


def start(env: Any, env_params: Any, key: jax.Array, num_envs: int) -> EnvRunner:
    """``num_envs`` environments at the start of an episode each (a host environment: its own batch)."""
    batch_env = as_batched(env)
    obs, state = batch_env.reset(jax.random.split(key, num_envs), env_params)
    return EnvRunner(
        obs=obs,
        state=state,
        first=jnp.ones((num_envs,), bool),
        episode_return=jnp.zeros((num_envs,), jnp.float32),
        episode_length=jnp.zeros((num_envs,), jnp.int32),
        last_return=jnp.zeros((num_envs,), jnp.float32),
        last_length=jnp.zeros((num_envs,), jnp.int32),
        episodes=jnp.zeros((num_envs,), jnp.int32),
    )


def rollout(
    env: Any,
    env_params: Any,
    runner: EnvRunner,
    policy_fn: RolloutPolicy,
    policy_params: Any,
    key: jax.Array,
    num_steps: int,
    policy_carry: Any = None,
) -> tuple[EnvRunner, Any, Transition]:
    """``num_steps`` steps of every environment of ``runner``; returns the runner and policy carry
    after the last step and the :class:`Transition` of each step (leaves ``[T, N, ...]``).

    The keys of all steps come from one ``split(key, (T, 1 + 2N))``: per step,
    the policy's key, then one key per environment for the step and one for the
    reset.
    """
    batch_env = as_batched(env)
    num_envs = runner.first.shape[0]
    action_shape, action_dtype = action_spec(batch_env, env_params)

    def _env_step(
        carry: tuple[EnvRunner, Any], step_keys: jax.Array
    ) -> tuple[tuple[EnvRunner, Any], Transition]:
        runner, policy_carry = carry
        policy_key, env_keys, reset_keys = (
            step_keys[0],
            step_keys[1 : 1 + num_envs],
            step_keys[1 + num_envs :],
        )
        action, policy_carry, extras = policy_fn(
            policy_params, runner.obs, runner.first, policy_carry, policy_key
        )
        action = jnp.asarray(action, action_dtype)
        if action.shape != (num_envs, *action_shape):
            raise ValueError(
                f"the policy returned actions of shape {action.shape}; expected {(num_envs, *action_shape)} "
                "(one action of the env's action space per environment)"
            )
        next_obs, obs, state, reward, terminated, truncated, _ = step_and_reset(
            batch_env, env_keys, reset_keys, runner.state, action, env_params
        )
        done = terminated | truncated
        episode_return = runner.episode_return + reward
        episode_length = runner.episode_length + 1
        transition = Transition(
            obs=runner.obs,
            action=action,
            reward=reward,
            terminated=terminated,
            truncated=truncated,
            next_obs=next_obs,
            first=runner.first,
            extras=extras,
        )
        runner = EnvRunner(
            obs=obs,
            state=state,
            first=done,
            episode_return=jnp.where(done, 0.0, episode_return),
            episode_length=jnp.where(done, 0, episode_length),
            last_return=jnp.where(done, episode_return, runner.last_return),
            last_length=jnp.where(done, episode_length, runner.last_length),
            episodes=runner.episodes + done.astype(jnp.int32),
        )
        return (runner, policy_carry), transition

    # Every key of the rollout in one vectorised split, outside the sequential loop.
    keys = jax.random.split(key, (num_steps, 1 + 2 * num_envs))  # typed or raw keys alike
    (runner, policy_carry), transitions = jax.lax.scan(_env_step, (runner, policy_carry), keys)
    return runner, policy_carry, transitions


def episode_metrics(
    transitions: Transition, runner: EnvRunner, prefix: str = "train/"
) -> dict[str, jax.Array]:
    """Training episodes' return and length, and how many ended in this rollout.

    The return and length are those of each environment's most recent finished
    episode (``runner`` after the rollout), averaged over the environments
    that have finished one, as PureJaxRL logs them: defined even in a rollout
    in which no episode ended (e.g. 512 steps of CartPole's 500-step
    episodes). ``episodes`` counts the episodes that ended in this rollout.
    """
    finished = (runner.episodes > 0).astype(jnp.float32)
    safe = jnp.maximum(finished.sum(), 1.0)
    return {
        f"{prefix}return": (runner.last_return * finished).sum() / safe,
        f"{prefix}episode_length": (runner.last_length * finished).sum() / safe,
        f"{prefix}episodes": transitions.done.astype(jnp.float32).sum(),
    }


def evaluation_returns(
    env: Any,
    env_params: Any,
    policy_fn: RolloutPolicy,
    policy_params: Any,
    key: jax.Array,
    num_episodes: int,
    max_steps: int | None = None,
    policy_carry: Any = None,
) -> tuple[jax.Array, jax.Array]:
    """The return and length of ``num_episodes`` fresh episodes, one per environment, played to their end.

    Runs ``max_steps`` steps (default: the env's ``max_steps_in_episode``,
    which no episode outlasts) and counts each environment's first episode;
    an episode still running after ``max_steps`` counts with its return so far.
    Returns ``(returns [num_episodes], lengths [num_episodes])``.
    """
    steps = int(env_params.max_steps_in_episode) if max_steps is None else max_steps
    start_key, rollout_key = jax.random.split(key)
    runner = start(env, env_params, start_key, num_episodes)
    _, _, transitions = rollout(
        env, env_params, runner, policy_fn, policy_params, rollout_key, steps, policy_carry
    )
    done = transitions.done
    # Steps up to and including each environment's first episode end.
    ended_before = jnp.cumsum(done, axis=0) - done > 0
    in_first = ~ended_before
    returns = (transitions.reward * in_first).sum(0)
    lengths = in_first.sum(0).astype(jnp.int32)
    return returns, lengths


def evaluation_metrics(
    env: Any,
    env_params: Any,
    policy_fn: RolloutPolicy,
    policy_params: Any,
    key: jax.Array,
    num_episodes: int,
    policy_carry: Any = None,
) -> dict[str, jax.Array]:
    """:func:`evaluation_returns` as a method reports it: ``{"eval/return", "eval/episode_length"}``,
    the means over the episodes."""
    returns, lengths = evaluation_returns(
        env, env_params, policy_fn, policy_params, key, num_episodes, policy_carry=policy_carry
    )
    return {"eval/return": returns.mean(), "eval/episode_length": lengths.mean()}


__all__ = [
    "EnvRunner",
    "RolloutPolicy",
    "Transition",
    "episode_metrics",
    "evaluation_metrics",
    "evaluation_returns",
    "rollout",
    "start",
]

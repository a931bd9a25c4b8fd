"""A batch of environments stepped together: the interface rollouts and trials are written against.

Rollouts and multi-episode trials step ``B`` environments at once. A pure-JAX
environment is batched by ``vmap`` (:class:`VmapEnv`); an environment that
lives on the host (stepped through callbacks, see ``envs_jax.host``) is
batched by nature and implements the same methods itself. Every method takes
and returns arrays with a leading batch axis ``B``:

* ``reset(keys, params, tasks=None) -> (obs, state)``: start an episode in
  every environment (of ``tasks[i]`` when tasks are given);
* ``step(keys, state, action, params) -> (obs, state, reward, terminated,
  truncated, info)``: one transition, **no** auto-reset; ``obs`` is the
  observation the action led to (the final one when the episode ended);
* ``reset_where(done, keys, obs, state, params, tasks=None) -> (obs, state)``:
  start a new episode where ``done`` and keep the rest. A pure-JAX batch
  computes the reset everywhere and selects (under ``vmap`` both branches
  run anyway, and this keeps the step branch-free); a host batch resets only
  the environments that are done.

``truncated`` follows one convention project-wide (:func:`truncation`): the
time limit was reached and the transition did not terminate.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def truncation(env: Any, state: Any, terminated: Any, params: Any = None) -> jax.Array:
    """Whether a step that led to ``state`` ended its episode by the time limit.

    This is the project-wide convention for ``truncated``, used by every loop
    that steps an environment with ``step_env`` (trials, rollouts, evaluation,
    references) and by ``Gridworld.step``: ``truncated = env.is_truncated(state,
    params) & ~terminated``. An episode that ends on a terminal transition
    exactly at the time limit is terminated, not truncated, so the two flags
    are exclusive and ``done = terminated | truncated``. (gymnax's base
    ``step`` sets both in that case; bootstrapping code must not, since a
    terminal transition has no future.) ``state`` is the state *after* the
    step, ``terminated`` that step's flag; works for any gymnax environment.
    """
    params = env.default_params if params is None else params
    return jnp.logical_and(env.is_truncated(state, params), jnp.logical_not(terminated))


def select_tree(pred: jax.Array, on_true: Any, on_false: Any) -> Any:
    """Leaf-wise ``lax.select`` with a scalar predicate (vmap it for a batch)."""
    return jax.tree.map(lambda a, b: jax.lax.select(pred, a, b), on_true, on_false)


class VmapEnv:
    """A batch of copies of one pure-JAX gymnax environment, by ``vmap``.

    Other attributes (``action_space``, ``observation_space``,
    ``default_params``, ``expert_action``, ...) fall through to the wrapped
    environment, which is ``unwrapped``.
    """

    vmappable = True
    batched = True

    def __init__(self, env: Any) -> None:
        self.unwrapped = env

    def __getattr__(self, name: str) -> Any:
        if name == "unwrapped":  # copy/pickle look attributes up before __init__ has set it
            raise AttributeError(name)
        return getattr(self.unwrapped, name)

    def reset(self, keys: jax.Array, params: Any, tasks: Any = None) -> tuple[Any, Any]:
        env = self.unwrapped
        if tasks is None:
            return jax.vmap(env.reset_env, in_axes=(0, None))(keys, params)
        return jax.vmap(env.reset_to_task, in_axes=(0, 0, None))(keys, tasks, params)

    def step(
        self, keys: jax.Array, state: Any, action: jax.Array, params: Any
    ) -> tuple[Any, Any, jax.Array, jax.Array, jax.Array, dict[str, Any]]:
        env = self.unwrapped

        def one(key: jax.Array, state: Any, action: jax.Array) -> tuple[Any, ...]:
            obs, state, reward, terminated, info = env.step_env(key, state, action, params)
            truncated = truncation(env, state, terminated, params)
            return obs, state, jnp.asarray(reward, jnp.float32), terminated, truncated, info

        return jax.vmap(one)(keys, state, action)

    def reset_where(
        self, done: jax.Array, keys: jax.Array, obs: Any, state: Any, params: Any, tasks: Any = None
    ) -> tuple[Any, Any]:
        reset_obs, reset_state = self.reset(keys, params, tasks)
        return jax.vmap(select_tree)(done, (reset_obs, reset_state), (obs, state))


def step_and_reset(
    batch_env: Any,
    keys: jax.Array,
    reset_keys: jax.Array,
    state: Any,
    action: jax.Array,
    params: Any,
    tasks: Any = None,
) -> tuple[Any, Any, Any, jax.Array, jax.Array, jax.Array, dict[str, Any]]:
    """One step of every env of a batch, then a new episode (of ``tasks[i]``) where it ended:
    ``(next_obs, obs, state, reward, terminated, truncated, info)``, ``next_obs`` what the action led
    to (the final observation when the episode ended), ``obs`` what the policy sees next.

    ``step`` then ``reset_where``, unless the batch fuses them (``step_and_reset_where``): a host
    batch does, so a step of a trial or rollout is one host callback, not two. ``tasks`` are used
    only where an episode ended, so a caller may pass the next task of every env whether or not it
    ends now.
    """
    fused = getattr(batch_env, "step_and_reset_where", None)
    if fused is not None:
        return fused(keys, reset_keys, state, action, params, tasks)
    next_obs, next_state, reward, terminated, truncated, info = batch_env.step(keys, state, action, params)
    done = jnp.logical_or(terminated, truncated)
    obs, state = batch_env.reset_where(done, reset_keys, next_obs, next_state, params, tasks)
    return next_obs, obs, state, reward, terminated, truncated, info


def as_batched(env: Any) -> Any:
    """``env`` if it already steps a batch (a host environment, a :class:`VmapEnv`), else ``VmapEnv(env)``."""
    return env if getattr(env, "batched", False) else VmapEnv(env)


__all__ = ["VmapEnv", "as_batched", "select_tree", "step_and_reset", "truncation"]

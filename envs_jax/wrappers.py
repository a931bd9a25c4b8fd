"""Wrappers that let code written for other gymnax conventions use our envs."""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp


class LegacyStepWrapper:
    """Presents the gymnax < 1.0 five-value ``step``: ``obs, state, reward, done, info``.

    ``done = terminated | truncated``; ``info`` keeps ``terminated``,
    ``truncated`` and ``final_observation``. PureJaxRL, rejax and other code
    written against gymnax 0.x train on a wrapped envs_jax environment
    unchanged (``tests/test_wrappers.py`` trains rejax's PPO on it). Other
    attributes (``action_space``, ``default_params``, ``expert_action``, ...)
    fall through to the wrapped environment.
    """

    def __init__(self, env: Any) -> None:
        self._env = env

    def __getattr__(self, name: str) -> Any:
        # Guard: copy/pickle look attributes up before __init__ has set _env.
        if name == "_env":
            raise AttributeError(name)
        return getattr(self._env, name)

    @property
    def unwrapped(self) -> Any:
        return self._env

    @partial(jax.jit, static_argnames=("self",))
    def reset(self, key: jax.Array, params: Any = None) -> tuple[Any, Any]:
        return self._env.reset(key, params)

    @partial(jax.jit, static_argnames=("self",))
    def step(
        self, key: jax.Array, state: Any, action: int | jax.Array, params: Any = None
    ) -> tuple[Any, Any, jax.Array, jax.Array, dict[str, Any]]:
        obs, state, reward, terminated, truncated, info = self._env.step(key, state, action, params)
        return obs, state, reward, jnp.logical_or(terminated, truncated), info

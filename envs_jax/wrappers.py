"""Wrappers that let code written for other gymnax conventions use our envs."""

from __future__ import annotations

from typing import Any

from gymnax.wrappers.compat import LegacyStepAPIWrapper


class LegacyStepWrapper(LegacyStepAPIWrapper):
    """Presents the gymnax < 1.0 five-value ``step``: ``obs, state, reward, done, info``.

    ``done = terminated | truncated``; ``info`` keeps ``terminated``,
    ``truncated`` and ``final_observation``. PureJaxRL, rejax and other code
    written against gymnax 0.x train on a wrapped envs_jax environment
    unchanged. Attribute look-ups (``action_space``, ``default_params``,
    ``expert_action``, ...) fall through to the wrapped environment.
    """

    def __init__(self, env: Any) -> None:
        super().__init__(env)

    @property
    def unwrapped(self) -> Any:
        return self._env

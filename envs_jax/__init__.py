"""Pure-JAX environments with the gymnax 1.x API and a meta-RL task interface.

``make(env_id, **overrides) -> (env, params)`` mirrors ``gymnax.make``.
Overrides name either a constructor argument (shape-defining, static) or a
field of the environment's params (dynamic); anything else is a ``ValueError``
naming the allowed keys.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from typing import Any

import numpy as np

from envs_jax.gridworld import Gridworld, GridworldTask, make_task_set, optimal_returns
from envs_jax.wrappers import LegacyStepWrapper

_REGISTRY: dict[str, Callable[..., Any]] = {"Gridworld-v0": Gridworld}
_CONSTRUCTOR_KEYS: dict[str, tuple[str, ...]] = {
    "Gridworld-v0": ("size", "num_blocks", "num_colors", "obs_mode"),
}


def registered() -> list[str]:
    """Ids accepted by :func:`make`."""
    return sorted(_REGISTRY)


def make(env_id: str, **overrides: Any) -> tuple[Any, Any]:
    """Build a registered environment; returns ``(env, params)`` like ``gymnax.make``."""
    if env_id not in _REGISTRY:
        close = difflib.get_close_matches(env_id, registered(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown env {env_id!r}{hint}; registered: {', '.join(registered())}")
    ctor_keys = _CONSTRUCTOR_KEYS[env_id]
    env = _REGISTRY[env_id](**{k: v for k, v in overrides.items() if k in ctor_keys})
    params = env.default_params
    param_keys = tuple(f.name for f in dataclasses.fields(params))
    unknown = [k for k in overrides if k not in ctor_keys and k not in param_keys]
    if unknown:
        allowed = ctor_keys + param_keys
        raise ValueError(f"{env_id} has no setting {unknown[0]!r}; allowed: {', '.join(allowed)}")
    param_overrides = {k: v for k, v in overrides.items() if k in param_keys}
    for key, value in param_overrides.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{key} must be an integer >= 1, got {value!r}")
    return env, params.replace(**{k: int(v) for k, v in param_overrides.items()})


__all__ = [
    "Gridworld",
    "GridworldTask",
    "LegacyStepWrapper",
    "make",
    "make_task_set",
    "optimal_returns",
    "registered",
]

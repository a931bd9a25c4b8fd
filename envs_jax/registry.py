"""The environment registry: ids, their settings, and how to build them.

Every environment the project can run is an :class:`EnvEntry`: an id, a
function that builds it, and its *settings* — each constructor argument
(shape-defining, static), each field of its ``EnvParams`` (dynamic, floats
allowed) and any option of how its task sets are drawn — with a default, a
meaning and an allowed range. The command line builds its ``env`` config
section from these settings, so ``--help`` and error messages describe the
chosen environment.

This project's environments are registered here by hand; every gymnax id is
served through gymnax's own ``make``, its settings read off the
environment's constructor signature and default ``EnvParams`` when the id is
first asked for (building some gymnax environments loads data, so nothing is
built for ids nobody asks for).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

TARGETS = ("constructor", "params", "tasks")


class EnvUnavailableError(RuntimeError):
    """An environment that cannot run on this machine as set up (no display and no headless OpenGL,
    ...): the message says what is missing. A missing optional install is a ``ModuleNotFoundError``
    naming the ``pip install`` that brings it."""


@dataclasses.dataclass(frozen=True)
class Setting:
    """One setting of an environment.

    ``target`` says where it goes: ``"constructor"`` (a static, often
    shape-defining argument), ``"params"`` (a field of the env's params, may
    change between calls) or ``"tasks"`` (how task sets are drawn; see
    :func:`envs_jax.tasks.disjoint_task_sets`). ``optional`` settings may be
    ``None``, meaning the environment's own default.
    """

    default: Any
    help: str
    target: str = "params"
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] | None = None
    optional: bool = False

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"Setting.target must be one of {TARGETS}, got {self.target!r}")

    @property
    def kind(self) -> type:
        """The Python type values must have (bool, int, float or str)."""
        value = self.default
        if value is None:
            return int
        for kind in (bool, int, float, str):
            if isinstance(value, kind):
                return kind
        raise TypeError(f"setting default {value!r} is not a bool, int, float or str")


@dataclasses.dataclass(frozen=True)
class EnvEntry:
    """A registered environment.

    ``build(**constructor_settings) -> env``; ``task_sets(env, params, key,
    num_train, num_test, **task_settings) -> (train, test)`` draws the fixed
    task sets of a run (default: :func:`envs_jax.tasks.disjoint_task_sets`);
    ``check(settings)`` raises ``ValueError`` for settings that are each
    allowed but not together; ``held_out(env, params, key, num_test) -> test``
    is the held-out set of a run whose method trains on fresh tasks (default:
    drawn with the env's ``sample_task``; Procgen's are its held-out levels).
    ``host`` marks an environment stepped on the host (through callbacks): it
    cannot be vmapped, so a runner runs its seeds apart.
    """

    id: str
    build: Callable[..., Any]
    settings: Mapping[str, Setting]
    description: str = ""
    source: str = "jaxmeta"
    host: bool = False
    task_sets: Callable[..., Any] | None = None
    check: Callable[[Mapping[str, Any]], None] | None = None
    held_out: Callable[..., Any] | None = None

    def split(self, values: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """``{target: {name: value}}`` for the given setting values (``None`` = env default dropped)."""
        out: dict[str, dict[str, Any]] = {target: {} for target in TARGETS}
        for name, value in values.items():
            setting = self.settings.get(name)
            if setting is None:
                raise ValueError(self.unknown_message(name))
            if value is None and setting.optional:
                continue
            out[setting.target][name] = value
        return out

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(str(name), list(self.settings), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        allowed = ", ".join(self.settings) or "none"
        return f"{self.id} has no setting {name!r}{hint}; its settings: {allowed}"


_ENTRIES: dict[str, EnvEntry] = {}
_GYMNAX_CACHE: dict[str, EnvEntry] = {}

# Hand-written meanings and ranges for the gymnax settings this project's configs use;
# the others get a generic description read off gymnax.
_GYMNAX_HELP: dict[str, dict[str, tuple[str, float | None, float | None]]] = {
    "CartPole-v1": {
        "max_steps_in_episode": ("episode time limit (CartPole-v1: 500)", 1, None),
        "gravity": ("gravitational acceleration, m/s^2", 0.0, None),
        "force_mag": ("force of a push, N", 0.0, None),
    },
    "Pendulum-v1": {
        "max_steps_in_episode": ("episode time limit (Pendulum-v1: 200)", 1, None),
        "max_torque": ("largest torque the agent may apply (the action range)", 0.0, None),
        "g": ("gravitational acceleration, m/s^2", 0.0, None),
    },
    "Breakout-MinAtar": {
        "max_steps_in_episode": ("episode time limit", 1, None),
        "use_minimal_action_set": ("3 actions (no-op, left, right) instead of all 6", None, None),
    },
}


def register(entry: EnvEntry) -> EnvEntry:
    """Add an environment to the registry (its id must be new)."""
    if not isinstance(entry.id, str) or not entry.id:
        raise ValueError(f"an environment id must be a non-empty string, got {entry.id!r}")
    if entry.id in _ENTRIES or entry.id in _gymnax_ids():
        raise ValueError(f"{entry.id} is already registered")
    _ENTRIES[entry.id] = entry
    return entry


def registered() -> list[str]:
    """Every id :func:`entry` and :func:`envs_jax.make` accept: this project's, then gymnax's."""
    return sorted(_ENTRIES) + [i for i in _gymnax_ids() if i not in _ENTRIES]


def entry(env_id: Any) -> EnvEntry:
    """The registered environment ``env_id``; a ``ValueError`` listing the ids otherwise."""
    if not isinstance(env_id, str):
        raise ValueError(f"an environment id must be a string, got {env_id!r}; registered: {_listing()}")
    if env_id in _ENTRIES:
        return _ENTRIES[env_id]
    if env_id in _gymnax_ids():
        if env_id not in _GYMNAX_CACHE:
            _GYMNAX_CACHE[env_id] = _gymnax_entry(env_id)
        return _GYMNAX_CACHE[env_id]
    close = difflib.get_close_matches(env_id, registered(), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown environment {env_id!r}{hint}; registered: {_listing()}")


def _listing() -> str:
    return ", ".join(registered())


def check_value(env_id: str, name: str, setting: Setting, value: Any) -> Any:
    """``value`` checked against ``setting`` (ints pass for floats); a ``ValueError`` says what is allowed."""
    if value is None:
        if setting.optional:
            return None
        raise ValueError(f"{name} must be {describe(setting)}, got None")
    kind = setting.kind
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is int and isinstance(value, np.integer):
        value, ok = int(value), True
    if (
        kind is float
        and isinstance(value, (int, float, np.integer, np.floating))
        and not isinstance(value, bool)
    ):
        value, ok = float(value), np.isfinite(value)
    if not ok:
        raise ValueError(f"{name} must be {describe(setting)}, got {value!r}")
    if setting.choices is not None and value not in setting.choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, setting.choices))}; got {value!r}")
    if (setting.min is not None and value < setting.min) or (setting.max is not None and value > setting.max):
        raise ValueError(f"{name} must be {describe(setting)}, got {value!r}")
    return value


def describe(setting: Setting) -> str:
    """``"an integer >= 1"``-style description of the allowed values."""
    kind = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}[setting.kind]
    if setting.min is not None and setting.max is not None:
        return f"{kind} in [{setting.min}, {setting.max}]"
    if setting.min is not None:
        return f"{kind} >= {setting.min}"
    if setting.max is not None:
        return f"{kind} <= {setting.max}"
    return kind


# ----------------------------------------------------------------------------- gymnax
def _gymnax_ids() -> list[str]:
    import gymnax

    return list(gymnax.registered_envs)


def _gymnax_entry(env_id: str) -> EnvEntry:
    """Settings read off a gymnax environment: simple constructor keywords and scalar params fields."""
    import gymnax
    from gymnax import registration

    factory = registration._registry[env_id]
    notes = _GYMNAX_HELP.get(env_id, {})
    settings: dict[str, Setting] = {}
    for name, parameter in inspect.signature(factory).parameters.items():
        default = parameter.default
        if parameter.kind is not inspect.Parameter.KEYWORD_ONLY and parameter.kind is not (
            inspect.Parameter.POSITIONAL_OR_KEYWORD
        ):
            continue
        if isinstance(default, (bool, int, float, str)) and default is not inspect.Parameter.empty:
            help_text, low, high = notes.get(name, (f"constructor argument of gymnax's {env_id}", None, None))
            settings[name] = Setting(default, help_text, target="constructor", min=low, max=high)
    _, params = gymnax.make(env_id)
    for field in dataclasses.fields(params):
        value = getattr(params, field.name)
        if isinstance(value, np.ndarray | np.generic) or hasattr(value, "shape"):
            if np.ndim(value) != 0:
                continue  # array-valued params are not configurable from the command line
            value = value.item()
        if not isinstance(value, (bool, int, float)):
            continue
        help_text, low, high = notes.get(field.name, (f"env param of gymnax's {env_id}", None, None))
        settings[field.name] = Setting(value, help_text, target="params", min=low, max=high)
    return EnvEntry(
        id=env_id,
        build=lambda **kwargs: gymnax.make(env_id, **kwargs)[0],
        settings=settings,
        description=f"gymnax {env_id}",
        source="gymnax",
    )


__all__ = [
    "EnvEntry",
    "EnvUnavailableError",
    "Setting",
    "check_value",
    "describe",
    "entry",
    "register",
    "registered",
]

"""Pure-JAX environments with the gymnax 1.x API and a meta-RL task interface.

``make(env_id, **settings) -> (env, params)`` mirrors ``gymnax.make`` and
serves this project's environments and every gymnax id; ``registered()``
lists them. Settings name a constructor argument (static, shape-defining) or
a field of the environment's params (dynamic); anything else is a
``ValueError`` naming the allowed settings. ``make_task_sets`` draws the
fixed, disjoint training and held-out task sets of an environment with the
task interface (``sample_task``, ``reset_to_task``).
"""

from __future__ import annotations

from typing import Any

import jax

from envs_jax import tasks
from envs_jax.adaptive_pendulum import AdaptivePendulum, PendulumTask
from envs_jax.bandits import BanditTask, BernoulliBandit
from envs_jax.gridworld import Gridworld, GridworldTask, make_task_set, optimal_returns
from envs_jax.registry import EnvEntry, Setting, check_value, entry, register, registered
from envs_jax.vector import VmapEnv, as_batched
from envs_jax.walker import Walker
from envs_jax.wrappers import LegacyStepWrapper


def make(env_id: str, **settings: Any) -> tuple[Any, Any]:
    """Build a registered environment; returns ``(env, params)`` like ``gymnax.make``.

    ``settings`` are the environment's constructor arguments and params
    fields (see ``envs_jax.entry(env_id).settings``); a value that is not
    allowed raises a ``ValueError`` naming the setting and what is allowed.
    """
    spec = entry(env_id)
    checked = {}
    for name, value in settings.items():
        if name not in spec.settings:
            raise ValueError(spec.unknown_message(name))
        checked[name] = check_value(env_id, name, spec.settings[name], value)
    parts = spec.split(checked)
    if parts["tasks"]:
        name = next(iter(parts["tasks"]))
        raise ValueError(
            f"{name} is a setting of {env_id}'s task sets, not of the environment: "
            "pass it to envs_jax.make_task_sets"
        )
    if spec.check is not None:
        spec.check({**{k: s.default for k, s in spec.settings.items()}, **checked})
    defaults = {
        name: setting.default
        for name, setting in spec.settings.items()
        if setting.target == "constructor" and setting.default is not None
    }
    env = spec.build(**{**defaults, **parts["constructor"]})
    params = env.default_params
    if parts["params"]:
        params = params.replace(**parts["params"])
    return env, params


def make_task_sets(
    env_id: str, env: Any, params: Any, key: jax.Array, num_train: int, num_test: int, **task_settings: Any
) -> tuple[Any, Any]:
    """Disjoint training and held-out task sets of ``env`` (built by ``make(env_id, ...)``).

    ``task_settings`` are the environment's settings with target ``"tasks"``
    (e.g. Gridworld's ``train_every_goal``).
    """
    spec = entry(env_id)
    for name, value in task_settings.items():
        setting = spec.settings.get(name)
        if setting is None or setting.target != "tasks":
            raise ValueError(f"{env_id} has no task-set setting {name!r}")
        check_value(env_id, name, setting, value)
    if spec.task_sets is not None:
        return spec.task_sets(env, params, key, num_train, num_test, **task_settings)
    return tasks.disjoint_task_sets(env, params, key, num_train, num_test)


# ----------------------------------------------------------------------------- this project's environments
def _gridworld_task_sets(
    env: Gridworld, params: Any, key: jax.Array, num_train: int, num_test: int, train_every_goal: bool = False
) -> tuple[Any, Any]:
    train = None
    if train_every_goal:
        train_key, _ = jax.random.split(key)
        train = make_task_set(env, train_key, num_train, params, every_goal=True)
    return tasks.disjoint_task_sets(env, params, key, num_train, num_test, train_tasks=train)


def _gridworld_check(values: dict[str, Any]) -> None:
    Gridworld(values["size"], values["num_blocks"], values["num_colors"], values["obs_mode"])


register(
    EnvEntry(
        id="Gridworld-v0",
        build=Gridworld,
        description="the gridworld of Chen & Agrawal (2020): a goal block, X-1 trap blocks, goal never shown",
        settings={
            "size": Setting(7, "grid width W (cells per side)", "constructor", min=2, max=64),
            "num_blocks": Setting(3, "blocks X: one goal and X-1 traps", "constructor", min=1),
            "num_colors": Setting(6, "palette size C (>= num_blocks)", "constructor", min=1),
            "obs_mode": Setting(
                "multihot",
                "observation: multi-hot W x W x (1+C) or rgb",
                "constructor",
                choices=("multihot", "rgb"),
            ),
            "max_steps_in_episode": Setting(
                None, "episode time limit; null means the env default (2*W*W)", "params", min=1, optional=True
            ),
            "train_every_goal": Setting(
                False,
                "training tasks come in groups of X with the same layout and each block as the goal once "
                "(the layout never tells the goal; a count that is not a multiple of X is completed to "
                "whole groups); held-out tasks are drawn independently",
                "tasks",
            ),
        },
        task_sets=_gridworld_task_sets,
        check=_gridworld_check,
    )
)


register(
    EnvEntry(
        id="BernoulliBandit-v0",
        build=BernoulliBandit,
        description="the k-armed Bernoulli bandit of RL^2: arm probabilities uniform on [0, 1] per task, "
        "one pull per step, nothing observed but the rewards",
        settings={
            "num_arms": Setting(5, "arms k", "constructor", min=2, max=4096),
            "max_steps_in_episode": Setting(
                1,
                "pulls per episode (RL^2: 1, a trial of n episodes); the episode then terminates",
                "params",
                min=1,
            ),
        },
    )
)


def _pendulum_check(values: dict[str, Any]) -> None:
    if values["crippled_gain_min"] > values["crippled_gain_max"]:
        raise ValueError(
            f"AdaptivePendulum-v0: crippled_gain_min ({values['crippled_gain_min']}) is above "
            f"crippled_gain_max ({values['crippled_gain_max']})"
        )


register(
    EnvEntry(
        id="AdaptivePendulum-v0",
        build=AdaptivePendulum,
        description="a pendulum swing-up whose mass, length, friction and motor gain vary by task, the "
        "motor crippled mid-episode in half of the tasks (GrBAL's kind of change)",
        settings={
            "max_steps_in_episode": Setting(100, "steps per episode (dt 0.1 s)", "params", min=1),
            "change_probability": Setting(
                0.5,
                "probability that a task's motor is crippled within the episode",
                "params",
                min=0.0,
                max=1.0,
            ),
            "dt": Setting(0.1, "seconds per step", "params", min=0.001),
            "crippled_gain_min": Setting(
                0.2,
                "lowest factor on the motor's gain after the change (negative: the motor reverses)",
                "params",
                min=-2.0,
                max=2.0,
            ),
            "crippled_gain_max": Setting(
                0.6, "highest factor on the motor's gain after the change", "params", min=-2.0, max=2.0
            ),
        },
        check=_pendulum_check,
    )
)


def _walker_check(settings: dict[str, Any]) -> None:
    from envs_jax.walker import check_terrain

    check_terrain(settings)


register(
    EnvEntry(
        id="Walker-v0",
        build=Walker,
        description="a planar two-legged walker on POET's parameterised obstacle course (roughness, stump "
        "heights, gap widths): a simplified pure-JAX model of BipedalWalkerHardcore",
        settings={
            "course_length": Setting(24.0, "metres to the finish", "constructor", min=1.0, max=500.0),
            "cell": Setting(0.2, "spacing of the height field, metres", "constructor", min=0.05, max=1.0),
            "roughness": Setting(0.0, "ground roughness (POET: 0-10)", "params", min=0.0, max=10.0),
            "stump_low": Setting(
                0.0, "lowest stump height, POET's terrain units (0.3 m)", "params", min=0.0, max=5.0
            ),
            "stump_high": Setting(0.0, "highest stump height; 0: no stumps", "params", min=0.0, max=5.0),
            "gap_low": Setting(
                0.0, "narrowest gap, POET's terrain units (0.3 m)", "params", min=0.0, max=8.0
            ),
            "gap_high": Setting(0.0, "widest gap; 0: no gaps", "params", min=0.0, max=8.0),
            "seed": Setting(0, "the terrain layout's seed", "params", min=0),
            "max_steps_in_episode": Setting(500, "step cap (0.04 s per step)", "params", min=1),
        },
        check=_walker_check,
    )
)


def _numpy_chain(length: int, max_steps: int) -> Any:
    from envs_jax.host.toy import make_numpy_chain  # imported when asked for: the host path is optional

    return make_numpy_chain(length, max_steps)


register(
    EnvEntry(
        id="NumpyChain-host-v0",
        build=_numpy_chain,
        description="a tiny numpy chain stepped on the host through io_callback (tests the host-env path)",
        settings={
            "length": Setting(
                6, "cells of the chain; the last one is the goal", "constructor", min=2, max=64
            ),
            "max_steps": Setting(20, "episode time limit", "constructor", min=1),
        },
        host=True,
    )
)


def _register_host_entries() -> None:
    """Procgen and the Miniworld room: their modules import neither package until an env is built."""
    from envs_jax.host import miniworld_room, procgen

    register(procgen.ENTRY)
    register(miniworld_room.ENTRY)


_register_host_entries()


__all__ = [
    "AdaptivePendulum",
    "BanditTask",
    "BernoulliBandit",
    "EnvEntry",
    "Gridworld",
    "GridworldTask",
    "LegacyStepWrapper",
    "PendulumTask",
    "Setting",
    "VmapEnv",
    "Walker",
    "as_batched",
    "entry",
    "make",
    "make_task_set",
    "make_task_sets",
    "optimal_returns",
    "register",
    "registered",
    "tasks",
]

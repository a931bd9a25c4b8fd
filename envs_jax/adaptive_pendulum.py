"""A pendulum whose physics vary by task and whose motor can be crippled in the middle of an episode:
the environment of GrBAL (Clavera, Nagabandi et al. 2019, "Learning to Adapt in Dynamic, Real-World
Environments through Meta-Reinforcement Learning"), in pure JAX.

Why a pendulum family: GrBAL's claim is that a dynamics model meta-trained for one-gradient-step
adaptation follows changes of the dynamics online (its experiments: a half-cheetah or ant with a
crippled leg or joint, sloped terrain, changed buoyancy). A *task* here is the pendulum's mass, length
and joint friction, its motor's gain, and a step at which the motor loses part of its power (a crippled
actuator, as GrBAL's crippled joints: the same action moves the body less) or, with a negative
``crippled_gain`` range, reverses (a miswired actuator); the observation never shows
any of them, so a model that does not adapt predicts wrongly after the change. It is cheap enough for a
2-core CPU to meta-train a model and run a 1000-sequence MPC at every step.

Dynamics (gymnax's Pendulum-v1 plus friction and a motor gain), semi-implicit Euler with ``dt``:
``thdd = 3 g / (2 l) sin(th) + 3 / (m l^2) * (gain(t) * u - friction * thd)``, ``thd`` clipped to
``max_speed``, ``gain(t) = gain`` before ``change_step`` and ``gain * crippled_gain`` from it on.
Reward as Pendulum: ``-(angle(th)^2 + 0.1 thd^2 + 0.001 u^2)`` (upright is 0). Observation
``[cos th, sin th, thd]``; action: torque in ``[-max_torque, max_torque]`` (3, not Pendulum's 2: see
``EnvParams``). Episodes are
``max_steps_in_episode`` steps and then truncate.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

# Task ranges: the nominal pendulum (mass 1, length 1, no friction, full gain) lies inside each.
MASS = (0.5, 1.5)
LENGTH = (0.7, 1.3)
FRICTION = (0.0, 0.4)
GAIN = (0.7, 1.3)
NO_CHANGE = 2**30  # change_step of a task whose motor stays whole


@struct.dataclass
class PendulumTask:
    mass: jax.Array
    length: jax.Array
    friction: jax.Array
    gain: jax.Array
    crippled_gain: jax.Array  # the motor keeps this fraction of its gain from change_step on
    change_step: jax.Array  # int32; NO_CHANGE: never


@struct.dataclass
class EnvState(environment.EnvState):
    theta: jax.Array
    theta_dot: jax.Array
    task: PendulumTask
    time: jax.Array


@struct.dataclass
class EnvParams(environment.EnvParams):
    max_speed: float = 8.0
    # gymnax's Pendulum: 2.0. With 3.0 a 10-step random-shooting MPC that knows the true dynamics swings
    # up and holds (-219 per episode against -448 with 2.0; random actions: -844).
    max_torque: float = 3.0
    dt: float = 0.1
    g: float = 10.0
    max_steps_in_episode: int = 100
    change_probability: float = 0.5  # of a sampled task's motor being crippled within the episode
    # The factor on the motor's gain from the change on, uniform in [min, max]. The default, 20-60% of
    # the gain left, is a weakened motor; a negative range is a reversed one (a miswired or
    # miscalibrated actuator, like the pose miscalibration of GrBAL's real robot): the same command
    # turns the pendulum the other way, which feedback alone cannot correct but one adapted model can.
    crippled_gain_min: float = 0.2
    crippled_gain_max: float = 0.6


def angle_normalize(x: jax.Array) -> jax.Array:
    return ((x + jnp.pi) % (2 * jnp.pi)) - jnp.pi


def motor_gain(task: PendulumTask, time: jax.Array) -> jax.Array:
    """The motor's gain at step ``time`` of an episode of ``task``."""
    return task.gain * jnp.where(time >= task.change_step, task.crippled_gain, 1.0)


def reward(obs: jax.Array, action: jax.Array, params: EnvParams) -> jax.Array:
    """The reward of taking ``action`` (torque, before clipping) in the state observed as ``obs``: a
    function of what a planner sees, as GrBAL's MPC needs it."""
    theta = jnp.arctan2(obs[..., 1], obs[..., 0])
    torque = jnp.clip(action[..., 0], -params.max_torque, params.max_torque)
    return -(angle_normalize(theta) ** 2 + 0.1 * obs[..., 2] ** 2 + 0.001 * torque**2)


class AdaptivePendulum(environment.Environment[EnvState, EnvParams]):
    """Build it with ``envs_jax.make("AdaptivePendulum-v0")``; see the module docstring."""

    @property
    def default_params(self) -> EnvParams:
        return EnvParams()

    @property
    def name(self) -> str:
        return "AdaptivePendulum-v0"

    @property
    def num_actions(self) -> int:
        return 1

    def action_space(self, params: EnvParams | None = None) -> spaces.Box:
        params = params or self.default_params
        return spaces.Box(-params.max_torque, params.max_torque, (1,), jnp.float32)

    def observation_space(self, params: EnvParams | None = None) -> spaces.Box:
        params = params or self.default_params
        high = jnp.array([1.0, 1.0, params.max_speed], jnp.float32)
        return spaces.Box(-high, high, (3,), jnp.float32)

    def state_space(self, params: EnvParams) -> spaces.Dict:
        return spaces.Dict(
            {
                "theta": spaces.Box(-jnp.inf, jnp.inf, (), jnp.float32),
                "theta_dot": spaces.Box(-params.max_speed, params.max_speed, (), jnp.float32),
                "time": spaces.Discrete(params.max_steps_in_episode + 1),
            }
        )

    def step_env(
        self, key: jax.Array, state: EnvState, action: jax.Array, params: EnvParams
    ) -> tuple[jax.Array, EnvState, jax.Array, jax.Array, dict[str, Any]]:
        task = state.task
        torque = jnp.clip(jnp.reshape(action, ()), -params.max_torque, params.max_torque)
        r = reward(self.get_obs(state), torque[None], params)
        accel = 3 * params.g / (2 * task.length) * jnp.sin(state.theta) + 3.0 / (
            task.mass * task.length**2
        ) * (motor_gain(task, state.time) * torque - task.friction * state.theta_dot)
        theta_dot = jnp.clip(state.theta_dot + accel * params.dt, -params.max_speed, params.max_speed)
        theta = state.theta + theta_dot * params.dt
        state = EnvState(theta=theta, theta_dot=theta_dot, task=task, time=state.time + 1)
        info = {"discount": jnp.ones(()), "crippled": state.time >= task.change_step}
        # Nothing ends an episode but its time limit: gymnax's is_truncated reports that.
        return self.get_obs(state), state, r.astype(jnp.float32), jnp.zeros((), bool), info

    def reset_env(self, key: jax.Array, params: EnvParams) -> tuple[jax.Array, EnvState]:
        task_key, start_key = jax.random.split(key)
        return self.reset_to_task(start_key, self.sample_task(task_key, params), params)

    def get_obs(self, state: EnvState, params: EnvParams | None = None, key: Any = None) -> jax.Array:
        return jnp.stack([jnp.cos(state.theta), jnp.sin(state.theta), state.theta_dot]).astype(jnp.float32)

    def is_terminal(self, state: EnvState, params: EnvParams) -> jax.Array:
        return jnp.zeros((), bool)

    def planning_reward(self, obs: jax.Array, action: jax.Array, params: EnvParams) -> jax.Array:
        """The reward as a function of what a model-based planner sees (:func:`reward`)."""
        return reward(obs, action, params)

    # ------------------------------------------------------------ task interface
    def sample_task(self, key: jax.Array, params: EnvParams | None = None) -> PendulumTask:
        """Physics uniform in the module's ranges; with ``change_probability`` the motor is crippled
        at a step uniform in the middle half of the episode."""
        params = params or self.default_params
        keys = jax.random.split(key, 7)

        def uniform(k: jax.Array, bounds: tuple[float, float]) -> jax.Array:
            return jax.random.uniform(k, (), jnp.float32, *bounds)

        horizon = params.max_steps_in_episode
        step = jax.random.randint(keys[5], (), horizon // 4, 3 * horizon // 4 + 1)
        changes = jax.random.uniform(keys[6]) < params.change_probability
        return PendulumTask(
            mass=uniform(keys[0], MASS),
            length=uniform(keys[1], LENGTH),
            friction=uniform(keys[2], FRICTION),
            gain=uniform(keys[3], GAIN),
            crippled_gain=uniform(keys[4], (params.crippled_gain_min, params.crippled_gain_max)),
            change_step=jnp.where(changes, step, NO_CHANGE).astype(jnp.int32),
        )

    def reset_to_task(
        self, key: jax.Array, task: PendulumTask, params: EnvParams | None = None
    ) -> tuple[jax.Array, EnvState]:
        """Start hanging near the bottom (the swing-up is the task), as a random angle in
        ``pi +- 0.4`` with a small speed."""
        angle_key, speed_key = jax.random.split(key)
        theta = jnp.pi + jax.random.uniform(angle_key, (), jnp.float32, -0.4, 0.4)
        theta_dot = jax.random.uniform(speed_key, (), jnp.float32, -0.5, 0.5)
        state = EnvState(theta=theta, theta_dot=theta_dot, task=task, time=jnp.zeros((), jnp.int32))
        return self.get_obs(state), state


__all__ = [
    "AdaptivePendulum",
    "EnvParams",
    "EnvState",
    "PendulumTask",
    "angle_normalize",
    "motor_gain",
    "reward",
]

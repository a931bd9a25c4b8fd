"""The k-armed Bernoulli bandit of RL^2 (Duan et al. 2016, section 3.1), in pure JAX.

A *task* is the vector of the arms' success probabilities, drawn i.i.d. uniform on ``[0, 1]``
(:class:`BanditTask`). Each step is one pull: action ``a`` in ``[0, k)`` gives reward 1 with probability
``probs[a]``, else 0. Nothing is observed but the rewards: the observation is the constant ``[1.0]``
(a bias input), so a policy can only learn about a task from the rewards of its own pulls, which is
what a meta-learner such as RL^2 must carry in its memory.

An episode is ``max_steps_in_episode`` pulls (default 1) and then *terminates* (not truncates): its
return is complete, nothing follows it. RL^2's bandit experiments use episodes of one pull and a
trial of ``n`` episodes on the same task (the RL^2 authors' ``MultiEnv(MABEnv, n_episodes=n,
episode_horizon=1)``), so that the previous-reward and done inputs of a recurrent policy see every pull.
A trial of ``n`` pulls is then ``jaxmeta.trial.run_trials(env, ..., num_steps=n)`` on one task.

``reset`` draws a fresh task; ``reset_to_task`` starts an episode of a given one (the meta-RL task
interface used by :mod:`jaxmeta.trial` and :mod:`envs_jax.tasks`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces


@struct.dataclass
class BanditTask:
    """One bandit: the success probability of each arm, float32 ``[k]``."""

    probs: jax.Array


@struct.dataclass
class EnvState(environment.EnvState):
    task: BanditTask
    time: jax.Array  # pulls so far in this episode


@struct.dataclass
class EnvParams(environment.EnvParams):
    max_steps_in_episode: int = 1  # pulls per episode; the episode terminates after the last


class BernoulliBandit(environment.Environment[EnvState, EnvParams]):
    """``num_arms`` Bernoulli arms with probabilities drawn uniform on [0, 1] per task.

    Build it with ``envs_jax.make("BernoulliBandit-v0", num_arms=k)``. Observation: float32 ``[1]``,
    always 1. Reward: float32 0 or 1. ``info["success"]`` is the reward as a bool.
    """

    def __init__(self, num_arms: int = 5) -> None:
        super().__init__()
        if isinstance(num_arms, bool) or not isinstance(num_arms, int) or num_arms < 2:
            raise ValueError(
                f"num_arms must be an integer >= 2 (a bandit with one arm has no choice), got {num_arms!r}"
            )
        self.num_arms = num_arms

    @property
    def default_params(self) -> EnvParams:
        return EnvParams()

    @property
    def name(self) -> str:
        return "BernoulliBandit-v0"

    @property
    def num_actions(self) -> int:
        return self.num_arms

    def action_space(self, params: EnvParams | None = None) -> spaces.Discrete:
        return spaces.Discrete(self.num_arms)

    def observation_space(self, params: EnvParams | None = None) -> spaces.Box:
        return spaces.Box(1.0, 1.0, (1,), jnp.float32)

    def state_space(self, params: EnvParams) -> spaces.Dict:
        return spaces.Dict(
            {
                "probs": spaces.Box(0.0, 1.0, (self.num_arms,), jnp.float32),
                "time": spaces.Discrete(params.max_steps_in_episode + 1),
            }
        )

    def step_env(
        self, key: jax.Array, state: EnvState, action: int | jax.Array, params: EnvParams
    ) -> tuple[jax.Array, EnvState, jax.Array, jax.Array, dict[str, Any]]:
        success = jax.random.uniform(key) < state.task.probs[action]
        state = EnvState(task=state.task, time=state.time + 1)
        terminated = self.is_terminal(state, params)
        info = {"success": success, "discount": 1.0 - terminated.astype(jnp.float32)}
        return self.get_obs(state), state, success.astype(jnp.float32), terminated, info

    def reset_env(self, key: jax.Array, params: EnvParams) -> tuple[jax.Array, EnvState]:
        return self.reset_to_task(key, self.sample_task(key, params), params)

    def get_obs(self, state: EnvState, params: EnvParams | None = None, key: Any = None) -> jax.Array:
        return jnp.ones((1,), jnp.float32)

    def is_terminal(self, state: EnvState, params: EnvParams) -> jax.Array:
        return state.time >= params.max_steps_in_episode

    def is_truncated(self, state: EnvState, params: EnvParams) -> jax.Array:
        """Never: an episode's pulls are all it has, so its end is a termination (gymnax's base class
        would also call it a truncation)."""
        return jnp.zeros((), bool)

    # ------------------------------------------------------------ task interface
    def sample_task(self, key: jax.Array, params: EnvParams | None = None) -> BanditTask:
        """Arm probabilities i.i.d. uniform on [0, 1] (RL^2's task distribution)."""
        return BanditTask(probs=jax.random.uniform(key, (self.num_arms,), jnp.float32))

    def reset_to_task(
        self, key: jax.Array, task: BanditTask, params: EnvParams | None = None
    ) -> tuple[jax.Array, EnvState]:
        del key, params
        state = EnvState(task=task, time=jnp.zeros((), jnp.int32))
        return self.get_obs(state), state

    def best_expected_reward(self, task: BanditTask, params: EnvParams | None = None) -> jax.Array:
        """The expected reward of a step on the best action of ``task``: its best arm's probability.
        A pull's reward minus this is its regret (``algo.regret_rewards`` of ``rl2``)."""
        del params
        return task.probs.max(-1)


__all__ = ["BanditTask", "BernoulliBandit", "EnvParams", "EnvState"]

"""Multi-episode trials: the unit of meta-RL experience.

A trial is a fixed number ``T`` of steps on one task. Episodes end on success,
failure (``terminated``) or timeout (``truncated``) and the environment is
reset, but the policy's carry persists across those boundaries, so a policy
with memory can use what happened in earlier episodes of the trial.

Reset modes, after an episode ends:

* ``"same"``: reset to the same task (RL^2, SNAIL; the seed paper's RESET_SAME);
* ``"diff"``: reset to a task drawn uniformly from the task set (RESET_DIFF).

The policy is a pure function::

    policy_fn(params, inputs: StepInputs, carry, memory, key) -> (action, carry)

``inputs`` holds the observation and what a meta-learner conditions on (the
previous action and reward, whether this step starts an episode, the episode
index and the current task id). ``memory`` is passed through unchanged for
the whole trial (e.g. failure banks, indexed by ``inputs.task_id``); ``carry``
is the policy's own recurrent state. A memoryless policy ignores both.

One ``lax.scan`` runs the ``T`` steps; :func:`run_trials` vmaps a batch. Works
for any envs_jax environment with the task interface (``sample_task``,
``reset_to_task``) and gymnax's ``step_env``/``is_truncated``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

RESET_MODES = ("same", "diff")

PolicyFn = Callable[[Any, "StepInputs", Any, Any, jax.Array], tuple[jax.Array, Any]]


@struct.dataclass
class StepInputs:
    """What the policy sees at one step of a trial."""

    obs: Any
    prev_action: jax.Array  # int32; 0 at the first step of the trial
    prev_reward: jax.Array  # float32; 0 at the first step of the trial
    episode_start: jax.Array  # bool: first step of an episode
    episode_index: jax.Array  # int32: episodes completed so far in this trial
    task_id: jax.Array  # int32: index of the current task in the task set


@struct.dataclass
class TrialData:
    """Per-step record of a trial; every leaf has leading axis ``T``."""

    obs: Any  # observation the action was chosen on
    next_obs: Any  # observation the action led to (the final one when done, before reset)
    action: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    success: jax.Array  # the step reached the goal
    task_id: jax.Array
    episode_index: jax.Array
    extras: Any  # record_fn(env_state) before acting, e.g. expert labels; None if not asked

    @property
    def done(self) -> jax.Array:
        return jnp.logical_or(self.terminated, self.truncated)


@struct.dataclass
class EpisodeStats:
    """Per-episode results as fixed-size arrays over ``max_episodes`` slots."""

    returns: jax.Array  # float32 [E]: sum of rewards of the episode
    success: jax.Array  # bool [E]: the episode reached the goal
    length: jax.Array  # int32 [E]: steps in the trial belonging to the episode
    ended: jax.Array  # bool [E]: the episode ended inside the trial (else cut off by T)
    task_id: jax.Array  # int32 [E]: the episode's task
    mask: jax.Array  # bool [E]: the episode started inside the trial

    @property
    def count(self) -> jax.Array:
        return jnp.sum(self.mask, axis=-1)


@struct.dataclass
class _Carry:
    env_state: Any
    obs: Any
    policy_carry: Any
    prev_action: jax.Array
    prev_reward: jax.Array
    episode_start: jax.Array
    episode_index: jax.Array
    task_id: jax.Array
    key: jax.Array


def run_trial(
    env: Any,
    env_params: Any,
    policy_fn: PolicyFn,
    policy_params: Any,
    policy_carry: Any,
    task_set: Any,
    task_id: jax.Array,
    key: jax.Array,
    num_steps: int,
    reset_mode: str = "same",
    memory: Any = None,
    max_episodes: int | None = None,
    record_fn: Callable[[Any], Any] | None = None,
) -> tuple[TrialData, EpisodeStats, Any]:
    """Run one trial of ``num_steps`` steps starting on ``task_set[task_id]``.

    Args:
      task_set: tasks stacked on a leading axis (e.g. ``envs_jax.make_task_set``).
      task_id: int32 scalar, the trial's first task.
      reset_mode: ``"same"`` or ``"diff"`` (see module docstring).
      memory: passed to every policy call unchanged.
      max_episodes: size of the per-episode arrays (default ``num_steps``);
        episodes beyond it still run but are not counted.
      record_fn: ``env_state -> pytree`` recorded per step before acting
        (e.g. ``lambda s: env.expert_action(s, env_params)``).

    Returns:
      ``(data, episodes, policy_carry)``: per-step :class:`TrialData`
      (leading axis ``num_steps``), per-episode :class:`EpisodeStats` and the
      policy carry after the last step.
    """
    if reset_mode not in RESET_MODES:
        raise ValueError(f"reset_mode must be one of {RESET_MODES}, got {reset_mode!r}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    max_episodes = num_steps if max_episodes is None else max_episodes
    num_tasks = jax.tree.leaves(task_set)[0].shape[0]
    task_id = jnp.asarray(task_id, jnp.int32)

    def task_at(index: jax.Array) -> Any:
        return jax.tree.map(lambda leaf: leaf[index], task_set)

    key, reset_key = jax.random.split(key)
    obs, env_state = env.reset_to_task(reset_key, task_at(task_id), env_params)
    init = _Carry(
        env_state=env_state,
        obs=obs,
        policy_carry=policy_carry,
        prev_action=jnp.zeros((), jnp.int32),
        prev_reward=jnp.zeros((), jnp.float32),
        episode_start=jnp.ones((), bool),
        episode_index=jnp.zeros((), jnp.int32),
        task_id=task_id,
        key=key,
    )

    def _env_step(carry: _Carry, _: None) -> tuple[_Carry, TrialData]:
        key, policy_key, step_key, task_key, reset_key = jax.random.split(carry.key, 5)
        inputs = StepInputs(
            obs=carry.obs,
            prev_action=carry.prev_action,
            prev_reward=carry.prev_reward,
            episode_start=carry.episode_start,
            episode_index=carry.episode_index,
            task_id=carry.task_id,
        )
        extras = None if record_fn is None else record_fn(carry.env_state)
        action, policy_carry = policy_fn(policy_params, inputs, carry.policy_carry, memory, policy_key)
        action = jnp.asarray(action, jnp.int32)
        next_obs, next_state, reward, terminated, info = env.step_env(
            step_key, carry.env_state, action, env_params
        )
        truncated = jnp.logical_and(env.is_truncated(next_state, env_params), ~terminated)
        done = terminated | truncated
        success = info.get("success", jnp.logical_and(terminated, reward > 0))

        if reset_mode == "diff":
            drawn = jax.random.randint(task_key, (), 0, num_tasks, jnp.int32)
            next_task_id = jnp.where(done, drawn, carry.task_id)
        else:
            next_task_id = carry.task_id
        reset_obs, reset_state = env.reset_to_task(reset_key, task_at(next_task_id), env_params)
        new_carry = _Carry(
            env_state=_select(done, reset_state, next_state),
            obs=_select(done, reset_obs, next_obs),
            policy_carry=policy_carry,
            prev_action=action,
            prev_reward=jnp.asarray(reward, jnp.float32),
            episode_start=done,
            episode_index=carry.episode_index + done.astype(jnp.int32),
            task_id=next_task_id,
            key=key,
        )
        record = TrialData(
            obs=carry.obs,
            next_obs=next_obs,
            action=action,
            reward=jnp.asarray(reward, jnp.float32),
            terminated=terminated,
            truncated=truncated,
            success=success,
            task_id=carry.task_id,
            episode_index=carry.episode_index,
            extras=extras,
        )
        return new_carry, record

    final, data = jax.lax.scan(_env_step, init, None, length=num_steps)
    return data, episode_stats(data, max_episodes), final.policy_carry


def episode_stats(data: TrialData, max_episodes: int) -> EpisodeStats:
    """Per-episode returns, success, length, task and masks of one trial's data."""
    idx = data.episode_index

    def scatter_add(values: jax.Array, dtype: Any) -> jax.Array:
        return jnp.zeros(max_episodes, dtype).at[idx].add(values.astype(dtype), mode="drop")

    length = scatter_add(jnp.ones_like(idx), jnp.int32)
    return EpisodeStats(
        returns=scatter_add(data.reward, jnp.float32),
        success=scatter_add(data.success, jnp.int32) > 0,
        length=length,
        ended=scatter_add(data.done, jnp.int32) > 0,
        task_id=jnp.zeros(max_episodes, jnp.int32).at[idx].max(data.task_id, mode="drop"),
        mask=length > 0,
    )


def run_trials(
    env: Any,
    env_params: Any,
    policy_fn: PolicyFn,
    policy_params: Any,
    policy_carry: Any,
    task_set: Any,
    task_ids: jax.Array,
    key: jax.Array,
    num_steps: int,
    reset_mode: str = "same",
    memory: Any = None,
    max_episodes: int | None = None,
    record_fn: Callable[[Any], Any] | None = None,
) -> tuple[TrialData, EpisodeStats, Any]:
    """:func:`run_trial` for a batch of trials (``task_ids`` of shape ``[B]``).

    ``policy_params``, ``task_set`` and ``memory`` are shared; ``policy_carry``
    is broadcast to every trial. Outputs gain a leading batch axis.
    """
    keys = jax.random.split(key, task_ids.shape[0])

    def one(task_id: jax.Array, trial_key: jax.Array) -> tuple[TrialData, EpisodeStats, Any]:
        return run_trial(
            env,
            env_params,
            policy_fn,
            policy_params,
            policy_carry,
            task_set,
            task_id,
            trial_key,
            num_steps,
            reset_mode,
            memory,
            max_episodes,
            record_fn,
        )

    return jax.vmap(one)(task_ids, keys)


def _select(pred: jax.Array, on_true: Any, on_false: Any) -> Any:
    return jax.tree.map(lambda a, b: jax.lax.select(pred, a, b), on_true, on_false)


def failures_for_bank(
    data: TrialData, episodes: EpisodeStats, length: int, max_episodes: int
) -> tuple[jax.Array, dict, jax.Array, jax.Array]:
    """What a batch of trials writes into failure banks: ``failure_bank.add``'s arguments.

    Every episode of every trial (``[B, ...]`` inputs) is cut to its last
    ``length`` steps, stored as ``{"obs": next_obs, "action", "reward"}`` so the
    last stored frame is the one the final action led to (the agent on the
    block that ended the episode). Failed = ended inside the trial without
    success (a trap or a timeout); episodes cut off by the trial's end are not
    failures. Returns flat ``(task_ids [B*E], steps [B*E, L, ...],
    step_mask [B*E, L], is_failure [B*E])`` with ``E = max_episodes``.
    """
    from jaxmeta.memory import failure_bank

    steps, mask, ended = jax.vmap(failure_bank.last_steps, in_axes=(0, 0, 0, None, None))(
        {"obs": data.next_obs, "action": data.action, "reward": data.reward},
        data.episode_index,
        data.done,
        length,
        max_episodes,
    )
    failed = ended & ~episodes.success[:, :max_episodes]

    def flat(x: jax.Array) -> jax.Array:
        return x.reshape((-1, *x.shape[2:]))

    return flat(episodes.task_id[:, :max_episodes]), jax.tree.map(flat, steps), flat(mask), flat(failed)


def run_episodes_with_failure_bank(
    env: Any,
    env_params: Any,
    policy_fn: PolicyFn,
    policy_params: Any,
    policy_carry: Any,
    tasks: Any,
    key: jax.Array,
    num_episodes: int,
    bank: Any,
    memory_fn: Callable[[Any], Any],
) -> tuple[jax.Array, jax.Array, Any]:
    """The seed paper's test protocol on a set of tasks, one bank per task.

    For each task, ``num_episodes`` episodes in a row; the policy reads
    ``memory_fn(bank)`` (e.g. the bank's encoded episodes), and after each
    failed episode its last ``bank.length`` steps are added to its task's bank
    before the next episode. The policy carry restarts every episode. Returns
    ``(returns [K, M], success [K, M], bank)`` for ``M`` tasks.
    """
    from jaxmeta.memory import failure_bank

    num_tasks = jax.tree.leaves(tasks)[0].shape[0]
    task_ids = jnp.arange(num_tasks)

    def _episode(bank: Any, episode_key: jax.Array) -> tuple[Any, tuple[jax.Array, jax.Array]]:
        # One episode per task: a trial as long as the episode limit, whose episode 0 counts.
        data, episodes, _ = run_trials(
            env,
            env_params,
            policy_fn,
            policy_params,
            policy_carry,
            tasks,
            task_ids,
            episode_key,
            env_params.max_steps_in_episode,
            "same",
            memory=memory_fn(bank),
            max_episodes=1,
        )
        bank = failure_bank.add(bank, *failures_for_bank(data, episodes, bank.length, 1))
        return bank, (episodes.returns[:, 0], episodes.success[:, 0])

    bank, (returns, success) = jax.lax.scan(_episode, bank, jax.random.split(key, num_episodes))
    return returns, success, bank


__all__ = [
    "RESET_MODES",
    "EpisodeStats",
    "PolicyFn",
    "StepInputs",
    "TrialData",
    "episode_stats",
    "failures_for_bank",
    "run_episodes_with_failure_bank",
    "run_trial",
    "run_trials",
]

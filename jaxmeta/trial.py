"""Multi-episode trials and the adaptation loop: the units of meta-RL experience.

A trial is a fixed number ``T`` of steps on one task. Episodes end on success,
failure (``terminated``) or timeout (``truncated``) and the environment is
reset, but the policy's carry persists across those boundaries, so a policy
with memory can use what happened in earlier episodes of the trial.

Reset modes, after an episode ends:

* ``"same"``: reset to the same task (RL^2, SNAIL; the seed paper's RESET_SAME);
* ``"diff"``: reset to a task drawn uniformly from the task set (RESET_DIFF).

The policy is a pure function of one trial's step::

    policy_fn(params, inputs: StepInputs, carry, memory, key) -> (action, carry)

``inputs`` holds the observation and what a meta-learner conditions on (the
previous action and reward, whether this step starts an episode, the episode
index and the current task id). ``memory`` is passed through unchanged for
the whole trial (e.g. failure banks, indexed by ``inputs.task_id``); ``carry``
is the policy's own recurrent state. A memoryless policy ignores both.

:func:`run_trials` runs a batch of ``B`` trials in one ``lax.scan`` over the
``T`` steps; each step calls the policy once per trial (``vmap``) and the
environments once for the whole batch (``envs_jax.vector``), so a host
environment, which steps its batch itself, runs trials too. Actions take
their dtype and shape from the env's action space (discrete or continuous);
observations may be any pytree.

:func:`run_adaptation` is the test protocol of every method that adapts
between episodes: episode after episode on the same tasks, with an
adaptation step in between (a failure-bank write, PPO finetuning, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from envs_jax.tasks import num_tasks as count_tasks
from envs_jax.vector import as_batched, step_and_reset

RESET_MODES = ("same", "diff")

PolicyFn = Callable[[Any, "StepInputs", Any, Any, jax.Array], tuple[jax.Array, Any]]


@struct.dataclass
class StepInputs:
    """What the policy sees at one step of a trial."""

    obs: Any
    prev_action: jax.Array  # the action space's dtype and shape; zeros at the first step of the trial
    prev_reward: jax.Array  # float32; 0 at the first step of the trial
    episode_start: jax.Array  # bool: first step of an episode
    episode_index: jax.Array  # int32: episodes completed so far in this trial
    task_id: jax.Array  # int32: index of the current task in the task set


@struct.dataclass
class TrialData:
    """Per-step record of a trial; every leaf has leading axis ``T`` (``[B, T]`` for a batch)."""

    obs: Any  # observation the action was chosen on
    next_obs: Any  # observation the action led to (the final one when done, before reset)
    action: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array  # time limit reached without termination (envs_jax.vector.truncation)
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


def action_spec(env: Any, env_params: Any) -> tuple[tuple[int, ...], Any]:
    """``(shape, dtype)`` of one action of ``env``: ``((), int32)`` for a discrete space."""
    space = env.action_space(env_params)
    return tuple(getattr(space, "shape", ())), jnp.dtype(getattr(space, "dtype", jnp.int32))


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
    params_per_trial: bool = False,
) -> tuple[TrialData, EpisodeStats, Any]:
    """A batch of trials of ``num_steps`` steps, trial ``i`` starting on ``task_set[task_ids[i]]``.

    Args:
      env: an envs_jax environment with the task interface, or a batch of
        them (``envs_jax.vector``; a host environment's batch must have
        ``len(task_ids)`` environments).
      task_set: tasks stacked on a leading axis (e.g. ``envs_jax.make_task_sets``).
      task_ids: int32 ``[B]``, each trial's first task.
      key: split into one key per trial; trial ``i`` uses ``split(key, B)[i]``.
      reset_mode: ``"same"`` or ``"diff"`` (see module docstring).
      memory: passed to every policy call unchanged.
      max_episodes: size of the per-episode arrays (default ``num_steps``);
        episodes beyond it still run but are not counted.
      record_fn: ``env_state -> pytree`` recorded per step before acting
        (e.g. ``lambda s: env.expert_action(s, env_params)``): one env's
        state for a pure-JAX env (vmapped here), the whole batch's state for
        a host env (its ``expert_action`` labels the batch; leading axis ``B``).
      params_per_trial: ``policy_params`` has a leading ``[B]`` axis, one
        set of parameters per trial (e.g. per-task finetuned copies);
        otherwise all trials share them.

    Returns:
      ``(data, episodes, policy_carry)`` with a leading batch axis: per-step
      :class:`TrialData` ``[B, T, ...]``, per-episode :class:`EpisodeStats`
      ``[B, E]`` and the policy carry after the last step.
    """
    keys = jax.random.split(key, task_ids.shape[0])
    return _run_batch(
        env,
        env_params,
        policy_fn,
        policy_params,
        policy_carry,
        task_set,
        task_ids,
        keys,
        num_steps,
        reset_mode,
        memory,
        max_episodes,
        record_fn,
        params_per_trial,
    )


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
    """One trial of ``num_steps`` steps starting on ``task_set[task_id]`` (``task_id`` an int32 scalar).

    The same as :func:`run_trials` for a batch of one trial that uses ``key``
    itself; outputs have no batch axis.
    """
    task_ids = jnp.asarray(task_id, jnp.int32)[None]
    out = _run_batch(
        env,
        env_params,
        policy_fn,
        policy_params,
        policy_carry,
        task_set,
        task_ids,
        key[None],
        num_steps,
        reset_mode,
        memory,
        max_episodes,
        record_fn,
        False,
    )
    return jax.tree.map(lambda x: x[0], out)


def _run_batch(
    env: Any,
    env_params: Any,
    policy_fn: PolicyFn,
    policy_params: Any,
    policy_carry: Any,
    task_set: Any,
    task_ids: jax.Array,
    keys: jax.Array,
    num_steps: int,
    reset_mode: str,
    memory: Any,
    max_episodes: int | None,
    record_fn: Callable[[Any], Any] | None,
    params_per_trial: bool,
) -> tuple[TrialData, EpisodeStats, Any]:
    if reset_mode not in RESET_MODES:
        raise ValueError(f"reset_mode must be one of {RESET_MODES}, got {reset_mode!r}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    max_episodes = num_steps if max_episodes is None else max_episodes
    batch_env = as_batched(env)
    num_trials = task_ids.shape[0]
    num_tasks = count_tasks(task_set)
    action_shape, action_dtype = action_spec(batch_env, env_params)
    task_ids = jnp.asarray(task_ids, jnp.int32)

    def task_at(index: jax.Array) -> Any:
        return jax.tree.map(lambda leaf: leaf[index], task_set)

    def split(keys: jax.Array, num: int) -> tuple[jax.Array, ...]:
        parts = jax.vmap(lambda k: jax.random.split(k, num))(keys)
        return tuple(parts[:, i] for i in range(num))

    keys, reset_keys = split(keys, 2)
    obs, env_state = batch_env.reset(reset_keys, env_params, task_at(task_ids))
    init = _Carry(
        env_state=env_state,
        obs=obs,
        policy_carry=jax.tree.map(lambda x: jnp.broadcast_to(x, (num_trials, *jnp.shape(x))), policy_carry),
        prev_action=jnp.zeros((num_trials, *action_shape), action_dtype),
        prev_reward=jnp.zeros((num_trials,), jnp.float32),
        episode_start=jnp.ones((num_trials,), bool),
        episode_index=jnp.zeros((num_trials,), jnp.int32),
        task_id=task_ids,
        key=keys,
    )
    act = jax.vmap(policy_fn, in_axes=(0 if params_per_trial else None, 0, 0, None, 0))
    # A pure-JAX batch's state is per env (vmap the recorder); a host batch's state is the batch's own
    # (a handle and [B, ...] snapshots): its recorder labels the whole batch at once.
    record_batch = record_fn
    if record_fn is not None and getattr(batch_env, "vmappable", True):
        record_batch = jax.vmap(record_fn)

    def _env_step(carry: _Carry, _: None) -> tuple[_Carry, TrialData]:
        key, policy_key, step_key, task_key, reset_key = split(carry.key, 5)
        inputs = StepInputs(
            obs=carry.obs,
            prev_action=carry.prev_action,
            prev_reward=carry.prev_reward,
            episode_start=carry.episode_start,
            episode_index=carry.episode_index,
            task_id=carry.task_id,
        )
        extras = None if record_batch is None else record_batch(carry.env_state)
        action, policy_carry = act(policy_params, inputs, carry.policy_carry, memory, policy_key)
        action = jnp.asarray(action, action_dtype)
        if action.shape != (num_trials, *action_shape):
            raise ValueError(
                f"the policy returned actions of shape {action.shape[1:]}; the env's action space has "
                f"shape {action_shape}"
            )
        # The task of each env's next episode, should this step end it (only those envs are reset).
        if reset_mode == "diff":
            drawn = jax.vmap(lambda k: jax.random.randint(k, (), 0, num_tasks, jnp.int32))(task_key)
        else:
            drawn = carry.task_id
        next_obs, obs, state, reward, terminated, truncated, info = step_and_reset(
            batch_env, step_key, reset_key, carry.env_state, action, env_params, task_at(drawn)
        )
        done = terminated | truncated
        success = info["success"] if "success" in info else jnp.logical_and(terminated, reward > 0)
        next_task_id = jnp.where(done, drawn, carry.task_id)
        new_carry = _Carry(
            env_state=state,
            obs=obs,
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
    data = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), data)  # [T, B, ...] -> [B, T, ...]
    episodes = jax.vmap(episode_stats, in_axes=(0, None))(data, max_episodes)
    return data, episodes, final.policy_carry


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


# ----------------------------------------------------------------------------- adaptation
class Adaptation(NamedTuple):
    """What :func:`run_adaptation` returns; ``K`` episodes on each of ``M`` tasks."""

    returns: jax.Array  # float32 [K, M]
    success: jax.Array  # bool [K, M]
    state: Any  # the adaptation state after the last adaptation step
    stats: Any  # adapt's statistics of each episode, leaves [K, ...]
    observed: Any  # observe(state) before each episode, leaves [K, ...]; None without observe
    data: Any  # each episode's TrialData [K, M, T, ...] when keep_data, else None


def run_adaptation(
    env: Any,
    env_params: Any,
    policy_fn: PolicyFn,
    tasks: Any,
    key: jax.Array,
    num_episodes: int,
    state: Any,
    act: Callable[[Any], tuple[Any, Any]],
    adapt: Callable[[Any, TrialData, EpisodeStats], tuple[Any, Any]],
    policy_carry: Any = None,
    params_per_task: bool = False,
    episode_steps: int | None = None,
    observe: Callable[[Any], Any] | None = None,
    keep_data: bool = False,
    record_fn: Callable[[Any], Any] | None = None,
) -> Adaptation:
    """``num_episodes`` episodes in a row on each of ``tasks``, adapting between episodes.

    For each episode ``k`` (one ``lax.scan`` step): ``act(state)`` gives the
    ``(policy_params, memory)`` to act with (``policy_params`` with a leading
    task axis when ``params_per_task``); one episode per task runs (a trial
    as long as the episode limit, or ``episode_steps``, whose episode 0
    counts; the policy carry restarts each episode); then ``adapt(state,
    data, episodes)`` returns the next state and statistics. ``data`` and
    ``episodes`` have a leading task axis ``[M]`` (``episodes`` one slot
    each; the steps after the episode's end are in ``data`` with
    ``episode_index > 0``). Episode ``k`` uses ``split(key, num_episodes)[k]``.

    ``record_fn(env_state)`` is recorded before each action into the kept
    data's ``extras`` (e.g. the env state itself, to draw the episode).

    Examples of ``state`` and ``adapt``: per-task failure banks and a bank
    write (the memory agent); per-task parameters and optimiser states and a
    PPO step (finetuning); a MAML inner step.
    """
    task_ids = jnp.arange(count_tasks(tasks), dtype=jnp.int32)
    steps = env_params.max_steps_in_episode if episode_steps is None else episode_steps

    def _episode(state: Any, episode_key: jax.Array) -> tuple[Any, tuple[Any, ...]]:
        params, memory = act(state)
        data, episodes, _ = run_trials(
            env,
            env_params,
            policy_fn,
            params,
            policy_carry,
            tasks,
            task_ids,
            episode_key,
            steps,
            "same",
            memory=memory,
            max_episodes=1,
            record_fn=record_fn,
            params_per_trial=params_per_task,
        )
        seen = None if observe is None else observe(state)
        state, stats = adapt(state, data, episodes)
        kept = data if keep_data else None
        return state, (episodes.returns[:, 0], episodes.success[:, 0], stats, seen, kept)

    state, (returns, success, stats, seen, kept) = jax.lax.scan(
        _episode, state, jax.random.split(key, num_episodes)
    )
    return Adaptation(returns, success, state, stats, seen, kept)


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


__all__ = [
    "RESET_MODES",
    "Adaptation",
    "EpisodeStats",
    "PolicyFn",
    "StepInputs",
    "TrialData",
    "action_spec",
    "episode_stats",
    "failures_for_bank",
    "run_adaptation",
    "run_trial",
    "run_trials",
]

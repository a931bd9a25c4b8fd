"""What every method in :mod:`jaxmeta.algos` provides, and the pieces they share.

A method is three pure functions over a train-state pytree (the DESIGN.md
contract): ``init(key) -> state``, ``update(state) -> (state, metrics)`` and
``evaluate(state, key) -> metrics``. ``train(key)`` is ``init`` then a
``lax.scan`` of ``update``; the runner instead jits chunks of updates, vmaps
them over seeds and checkpoints between chunks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

import envs_jax
from envs_jax.gridworld import where_tasks
from jaxmeta.trial import EpisodeStats, TrialData, run_trials

Metrics = dict[str, jax.Array]


class Algo(NamedTuple):
    """A method's pure functions; ``name`` labels its output."""

    name: str
    init: Callable[[jax.Array], Any]
    update: Callable[[Any], tuple[Any, Metrics]]
    evaluate: Callable[[Any, jax.Array], Metrics]


@struct.dataclass
class TrainState:
    """The training state of a method with nothing but parameters to carry across updates."""

    params: Any
    opt_state: Any
    key: jax.Array
    update_step: jax.Array


def clipped_adam(learning_rate: float, max_grad_norm: float) -> optax.GradientTransformation:
    """Adam after clipping gradients to a global norm: the optimiser every method here uses."""
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.adam(learning_rate))


def train(algo: Algo, key: jax.Array, num_updates: int) -> tuple[Any, Metrics]:
    """``init`` then ``num_updates`` updates in one ``lax.scan`` (jit it yourself)."""
    state = algo.init(key)
    return jax.lax.scan(lambda s, _: algo.update(s), state, None, length=num_updates)


class EnvSetup(NamedTuple):
    """The environment and the fixed task sets of a run."""

    env: Any
    params: Any
    train_tasks: Any  # tasks stacked on a leading axis
    test_tasks: Any  # held out: no test task equals a train task


def make_env_setup(env_cfg: Any, num_train_tasks: int, num_test_tasks: int, task_seed: int) -> EnvSetup:
    """Build the env from its config section and draw disjoint train/test task sets."""
    overrides = {
        "size": env_cfg.size,
        "num_blocks": env_cfg.num_blocks,
        "num_colors": env_cfg.num_colors,
        "obs_mode": env_cfg.obs_mode,
    }
    if env_cfg.max_steps_in_episode is not None:
        overrides["max_steps_in_episode"] = env_cfg.max_steps_in_episode
    env, params = envs_jax.make(env_cfg.id, **overrides)
    train_key, test_key = jax.random.split(jax.random.PRNGKey(task_seed))
    train_tasks = envs_jax.make_task_set(
        env, train_key, num_train_tasks, params, every_goal=env_cfg.train_every_goal
    )
    test_tasks = envs_jax.make_task_set(env, test_key, num_test_tasks, params)
    train_rows = {_task_bytes(train_tasks, i) for i in range(num_train_tasks)}
    duplicate = np.array([_task_bytes(test_tasks, i) in train_rows for i in range(num_test_tasks)])
    if duplicate.any():
        # Redraw held-out tasks that happen to equal a training task.
        fresh = envs_jax.make_task_set(env, jax.random.fold_in(test_key, 1), num_test_tasks, params)
        test_tasks = where_tasks(~duplicate, test_tasks, fresh)
    return EnvSetup(env, params, train_tasks, test_tasks)


def _task_bytes(tasks: Any, i: int) -> bytes:
    return b"".join(np.asarray(leaf[i]).tobytes() for leaf in jax.tree.leaves(tasks))


def episode_metrics(episodes: EpisodeStats, prefix: str) -> Metrics:
    """Mean return and success of the episodes that ended, over a batch of trials."""
    ended = episodes.ended.astype(jnp.float32)
    count = jnp.maximum(ended.sum(), 1.0)
    return {
        f"{prefix}return_per_episode": (episodes.returns * ended).sum() / count,
        f"{prefix}success_rate": (episodes.success * ended).sum() / count,
        f"{prefix}episodes_per_trial": ended.sum(-1).mean(),
    }


def per_episode_metrics(episodes: EpisodeStats, prefix: str = "eval/") -> Metrics:
    """Return and success of episode 1..K of the trial (the paper's test protocol).

    ``episodes`` has a batch axis ``[num_trials, K]``; an episode the trial
    did not reach counts as return 0 and no success.
    """
    valid = episodes.mask.astype(jnp.float32)
    returns = (episodes.returns * valid).mean(0)
    return {
        f"{prefix}episode_return": returns,
        f"{prefix}episode_success": (episodes.success * valid).mean(0),
        f"{prefix}total_return": returns.sum(),
    }


def labelled_trials(
    setup: EnvSetup,
    trial_cfg: Any,
    policy: Any,
    params: Any,
    carry: Any,
    task_set: Any,
    num_tasks: int,
    task_key: jax.Array,
    trial_key: jax.Array,
    memory: Any = None,
    max_episodes: int | None = None,
) -> tuple[TrialData, EpisodeStats]:
    """A training batch: ``trial_cfg.batch_size`` trials by ``policy`` on tasks drawn uniformly
    from the first ``num_tasks`` of ``task_set``, every step labelled with the expert's action
    (in ``data.extras``): the data every imitation method here learns from."""
    env, env_params = setup.env, setup.params
    task_ids = jax.random.randint(task_key, (trial_cfg.batch_size,), 0, num_tasks)
    data, episodes, _ = run_trials(
        env,
        env_params,
        policy,
        params,
        carry,
        task_set,
        task_ids,
        trial_key,
        trial_cfg.num_steps,
        trial_cfg.reset_mode,
        memory=memory,
        max_episodes=max_episodes,
        record_fn=lambda env_state: env.expert_action(env_state, env_params),
    )
    return data, episodes

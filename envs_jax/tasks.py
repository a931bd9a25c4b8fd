"""Fixed task sets for any environment with the task interface.

A meta-RL run trains on a fixed set of tasks and tests on another, disjoint
one. Both are drawn with the environment's own ``sample_task`` (vmapped over
keys); an environment may reject some draws with an ``is_valid_task(task,
params) -> bool`` method (Gridworld rejects layouts where a block is walled
off), which are redrawn. Tasks are pytrees stacked on a leading axis.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

MAX_REDRAWS = 100


@partial(jax.jit, static_argnums=0)
def sample_tasks(env: Any, keys: jax.Array, params: Any) -> Any:
    """``env.sample_task`` for each key of ``keys [N]``: tasks stacked on a leading axis."""
    return jax.vmap(env.sample_task, in_axes=(0, None))(keys, params)


@partial(jax.jit, static_argnums=0)
def _valid(env: Any, tasks: Any, params: Any) -> jax.Array:
    return jax.vmap(env.is_valid_task, in_axes=(0, None))(tasks, params)


def where_tasks(keep: Any, tasks: Any, replacements: Any) -> Any:
    """Row-wise choice between stacked task sets: ``tasks[i]`` where ``keep[i]``, else ``replacements[i]``."""
    keep = jnp.asarray(keep)
    return jax.tree.map(
        lambda old, new: jnp.where(keep.reshape((-1,) + (1,) * (old.ndim - 1)), old, new), tasks, replacements
    )


def task_set(env: Any, key: jax.Array, num_tasks: int, params: Any, valid_only: bool = True) -> Any:
    """``num_tasks`` tasks drawn with ``key``; with ``valid_only`` the env's invalid draws are redrawn.

    Task ``i`` is drawn with ``split(key, num_tasks)[i]``; each round of
    redraws uses the next ``split`` of ``key``, so the set depends only on
    the key and the count.
    """
    if isinstance(num_tasks, bool) or not isinstance(num_tasks, (int, np.integer)) or num_tasks < 1:
        raise ValueError(f"num_tasks must be an integer >= 1, got {num_tasks!r}")
    tasks = sample_tasks(env, jax.random.split(key, num_tasks), params)
    if not valid_only or not hasattr(env, "is_valid_task"):
        return tasks
    for _ in range(MAX_REDRAWS):
        ok = np.asarray(_valid(env, tasks, params))
        if ok.all():
            return tasks
        key, sub = jax.random.split(key)
        tasks = where_tasks(ok, tasks, sample_tasks(env, jax.random.split(sub, num_tasks), params))
    raise RuntimeError(
        f"could not draw {num_tasks} valid tasks of {env.name} in {MAX_REDRAWS} rounds of redraws: "
        "its settings may leave almost no valid task"
    )


def task_rows(tasks: Any) -> np.ndarray:
    """Each task as one row of bytes ``[N, bytes]`` (every leaf's values side by side): equal rows,
    equal tasks."""
    leaves = [np.ascontiguousarray(np.asarray(leaf)) for leaf in jax.tree.leaves(tasks)]
    n = leaves[0].shape[0]
    return np.concatenate([leaf.reshape(n, -1).view(np.uint8).reshape(n, -1) for leaf in leaves], axis=1)


def contained_in(tasks: Any, reference: Any) -> np.ndarray:
    """``[N]`` bool: ``tasks[i]`` equals some task of ``reference`` (vectorised: one sort of all rows)."""
    rows, ref_rows = task_rows(tasks), task_rows(reference)
    _, inverse = np.unique(np.concatenate([ref_rows, rows]), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    return np.isin(inverse[len(ref_rows) :], inverse[: len(ref_rows)])


def disjoint_task_sets(
    env: Any,
    params: Any,
    key: jax.Array,
    num_train: int,
    num_test: int,
    train_tasks: Any = None,
) -> tuple[Any, Any]:
    """Training and held-out task sets with no held-out task equal to a training task.

    ``key`` is split into a training and a test key. Held-out tasks that
    equal a training task are redrawn (with ``fold_in(test_key, round)``)
    until none does. ``train_tasks``, if given, replaces the drawn training
    set (an environment that groups its training tasks draws them itself).
    """
    train_key, test_key = jax.random.split(key)
    if train_tasks is None:
        train_tasks = task_set(env, train_key, num_train, params)
    test_tasks = task_set(env, test_key, num_test, params)
    for attempt in range(1, MAX_REDRAWS + 1):
        duplicate = contained_in(test_tasks, train_tasks)
        if not duplicate.any():
            return train_tasks, test_tasks
        fresh = task_set(env, jax.random.fold_in(test_key, attempt), num_test, params)
        test_tasks = where_tasks(~duplicate, test_tasks, fresh)
    raise RuntimeError(
        f"could not draw {num_test} held-out tasks of {env.name} unlike the {num_train} training tasks: "
        "the environment may have too few distinct tasks"
    )


def num_tasks(tasks: Any) -> int:
    """How many tasks a stacked task set holds."""
    return jax.tree.leaves(tasks)[0].shape[0]


__all__ = [
    "contained_in",
    "disjoint_task_sets",
    "num_tasks",
    "sample_tasks",
    "task_rows",
    "task_set",
    "where_tasks",
]

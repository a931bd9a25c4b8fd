"""The random streams of a run, each derived from its seeds so that no two collide.

* Training seed ``s`` (``seed``, ``seed + 1``, ... of a run) starts from
  ``PRNGKey(s)``, which the method's ``init`` splits further.
* Evaluation at update ``u`` uses ``fold_in(fold_in(PRNGKey(s), EVAL_STREAM), u)``.
* The fixed task sets use ``fold_in(PRNGKey(task_seed), TASK_STREAM)``; simulations
  of reference policies on them fold ``REFERENCE_STREAM`` into that key.

The stream tags are large on purpose: with JAX's (partitionable) threefry,
``fold_in(k, i)`` equals ``split(k, n)[i]`` for ``i < n``, so a small tag would
reproduce a key the training stream also derives by splitting. No split here
asks for anywhere near 2**30 keys.
"""

from __future__ import annotations

import jax

EVAL_STREAM = 0x4556414C  # "EVAL"
TASK_STREAM = 0x5441534B  # "TASK"
REFERENCE_STREAM = 0x52454646  # "REFF": simulations of reference policies, folded into the task key


def training_key(seed: int) -> jax.Array:
    """The key training seed ``seed`` starts from (what ``init`` receives)."""
    return jax.random.PRNGKey(seed)


def evaluation_key(seed: int, update: int) -> jax.Array:
    """The key the evaluation of training seed ``seed`` at ``update`` uses."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), EVAL_STREAM), update)


def task_key(task_seed: int) -> jax.Array:
    """The key the fixed train/test task sets of a run are drawn with."""
    return jax.random.fold_in(jax.random.PRNGKey(task_seed), TASK_STREAM)


__all__ = ["EVAL_STREAM", "REFERENCE_STREAM", "TASK_STREAM", "evaluation_key", "task_key", "training_key"]

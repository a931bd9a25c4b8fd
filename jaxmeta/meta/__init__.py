"""Gradient-based meta-learning as pure functions over any pytree of parameters.

* :mod:`jaxmeta.meta.inner`: ``adapt`` (the inner loop, second or first order, fixed or Meta-SGD
  step sizes), ``sgd_step``, ``adaptation_losses`` (error against inner steps);
* :mod:`jaxmeta.meta.maml`: ``maml_loss`` (the outer objective over a batch of tasks; separate inner
  and outer losses for two-head networks) and ``task_loss``;
* :mod:`jaxmeta.meta.reptile`: ``reptile_adapt``, ``reptile_direction``, ``reptile_step``;
* :mod:`jaxmeta.meta.sinusoid`: the MAML paper's sinusoid regression tasks.
"""

from jaxmeta.meta.inner import adapt, adaptation_losses, check_inner_loop, learned_step_sizes, sgd_step
from jaxmeta.meta.maml import maml_loss, task_loss
from jaxmeta.meta.reptile import reptile_adapt, reptile_direction, reptile_step

__all__ = [
    "adapt",
    "adaptation_losses",
    "check_inner_loop",
    "learned_step_sizes",
    "maml_loss",
    "reptile_adapt",
    "reptile_direction",
    "reptile_step",
    "sgd_step",
    "task_loss",
]

"""One method per file; ``REGISTRY`` maps ``algo.name`` to its module.

Each module defines ``Config`` (its ``algo`` config section, a dataclass),
``make(cfg: RunConfig) -> Algo`` and optionally ``validate_config(cfg)``.
"""

from jaxmeta.algos import (
    bc,
    dqn,
    failure_replay,
    grbal,
    maml,
    mfec,
    nec,
    open_es,
    poet,
    ppo,
    ppo_finetune,
    pretrain,
    reptile,
    rl2,
    snail,
)
from jaxmeta.algos.api import Algo, train

REGISTRY = {
    "bc": bc,
    "dqn": dqn,
    "failure_replay": failure_replay,
    "grbal": grbal,
    "maml": maml,
    "mfec": mfec,
    "nec": nec,
    "open_es": open_es,
    "poet": poet,
    "ppo": ppo,
    "ppo_finetune": ppo_finetune,
    "pretrain": pretrain,
    "reptile": reptile,
    "rl2": rl2,
    "snail": snail,
}

__all__ = ["REGISTRY", "Algo", "train"]

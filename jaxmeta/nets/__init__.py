"""Flax (linen) modules shared by the methods: encoders, MLPs, policy heads."""

from jaxmeta.nets.encoders import DictEncoder, DiscreteEncoder, TrialStepEncoder, VectorEncoder, encoder_for
from jaxmeta.nets.heads import (
    ActionDist,
    CategoricalDist,
    CategoricalHead,
    TanhGaussianDist,
    TanhGaussianHead,
    head_for,
)
from jaxmeta.nets.mlp import MLP, MemorylessPolicy
from jaxmeta.nets.policies import (
    ActorCriticNet,
    QNetwork,
    RecurrentActorCritic,
    ResetGRU,
    Torso,
    actor_critic_for,
    q_network_for,
    recurrent_actor_critic_for,
)

__all__ = [
    "MLP",
    "ActionDist",
    "ActorCriticNet",
    "CategoricalDist",
    "CategoricalHead",
    "DictEncoder",
    "DiscreteEncoder",
    "MemorylessPolicy",
    "QNetwork",
    "RecurrentActorCritic",
    "ResetGRU",
    "TanhGaussianDist",
    "TanhGaussianHead",
    "Torso",
    "TrialStepEncoder",
    "VectorEncoder",
    "actor_critic_for",
    "encoder_for",
    "head_for",
    "q_network_for",
    "recurrent_actor_critic_for",
]

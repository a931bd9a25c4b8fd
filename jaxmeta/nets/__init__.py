"""Flax (linen) modules shared by the methods: encoders, MLPs, policy heads."""

from jaxmeta.nets.mlp import MLP, MemorylessPolicy

__all__ = ["MLP", "MemorylessPolicy"]

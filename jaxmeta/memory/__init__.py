"""Fixed-shape, jit/vmap-safe memories for meta-RL agents."""

from jaxmeta.memory import failure_bank

__all__ = ["failure_bank"]

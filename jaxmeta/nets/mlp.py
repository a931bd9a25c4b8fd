"""Multi-layer perceptrons and the memoryless policy ``a_t = pi(o_t)``."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class MLP(nn.Module):
    """Dense layers with ReLU between them (none after the last)."""

    features: Sequence[int]
    activate_last: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i, width in enumerate(self.features):
            x = nn.Dense(width)(x)
            if i < len(self.features) - 1 or self.activate_last:
                x = nn.relu(x)
        return x


class MemorylessPolicy(nn.Module):
    """Action logits from the current observation alone.

    The observation (any shape; uint8 pixels are scaled to [0, 1]) is
    flattened and passed through an MLP. It cannot remember earlier episodes:
    the baseline that memory-based methods must beat.
    """

    hidden_sizes: Sequence[int]
    num_actions: int

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        if obs.dtype == jnp.uint8:
            obs = obs.astype(jnp.float32) / 255.0
        x = obs.reshape((*obs.shape[:-3], -1)).astype(jnp.float32)
        return MLP((*self.hidden_sizes, self.num_actions))(x)

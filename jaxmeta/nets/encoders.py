"""Encoders of observations and of single steps (observation, action, reward).

``ObsEncoder`` is the paper's ``MLP(CNN(o))``; ``StepEncoder`` is its Phi,
which merges a frame with embeddings of the action that led to it and the
reward received. A step token is always "frame + the action and reward that
produced it": for a stored episode ``(o_{t+1}, a_t, r_t)``, for the current
episode ``(o_t, a_{t-1}, r_{t-1})``, with action index ``num_actions`` meaning
"no action yet" at an episode's first step.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmeta.nets.mlp import MLP


def as_float_image(obs: jax.Array) -> jax.Array:
    """Multi-hot float frames as they are; uint8 pixels scaled to [0, 1]."""
    if obs.dtype == jnp.uint8:
        return obs.astype(jnp.float32) / 255.0
    return obs.astype(jnp.float32)


class PatchConv(nn.Module):
    """A 3x3 (``kernel``) same-padded convolution written as patches times a dense kernel.

    Same function as ``nn.Conv``, but under ``vmap`` over parameters (one
    network per seed) it stays a batched matrix product, whereas a vmapped
    ``nn.Conv`` becomes a grouped convolution that XLA runs several times
    slower on CPU.
    """

    features: int
    kernel: int = 3

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, (h, w) = self.kernel, x.shape[-3:-1]
        lo = (k - 1) // 2
        padded = jnp.pad(x, [(0, 0)] * (x.ndim - 3) + [(lo, k - 1 - lo), (lo, k - 1 - lo), (0, 0)])
        # The k*k shifted views side by side: each pixel's neighbourhood as one vector.
        patches = jnp.concatenate(
            [padded[..., i : i + h, j : j + w, :] for i in range(k) for j in range(k)], axis=-1
        )
        return nn.Dense(self.features)(patches)


class ObsEncoder(nn.Module):
    """``MLP(CNN(o))``: 3x3 convolutions (same padding) then an MLP to ``features``."""

    features: int
    conv_channels: Sequence[int] = (32, 32)
    hidden: int = 128

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = as_float_image(obs)
        lead = x.shape[:-3]
        x = x.reshape((-1, *x.shape[-3:]))
        for channels in self.conv_channels:
            x = nn.relu(PatchConv(channels)(x))
        x = x.reshape((x.shape[0], -1))
        x = MLP((self.hidden, self.features))(x)
        return x.reshape((*lead, self.features))


class StepEncoder(nn.Module):
    """Phi: a frame merged with embeddings of an action and a reward.

    ``obs_encoder`` is passed in so the same CNN serves the current
    observation and the stored steps.
    """

    features: int
    num_actions: int
    obs_encoder: nn.Module

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array, reward: jax.Array) -> jax.Array:
        frame = self.obs_encoder(obs)
        # Index num_actions is "no action yet" (first step of an episode).
        action_emb = nn.Embed(self.num_actions + 1, self.features)(action)
        reward_emb = nn.Dense(self.features)(reward[..., None].astype(jnp.float32))
        merged = jnp.concatenate([frame, action_emb, reward_emb], axis=-1)
        return MLP((self.features, self.features))(nn.relu(merged))

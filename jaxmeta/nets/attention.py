"""Attention pieces: masked multi-head attention, transformer layers, GRU gating.

Masks are boolean, ``True`` = attend. A query whose keys are all masked gets
uniform weights from flax's softmax (no NaN); callers zero such outputs where
"nothing to attend to" must mean zero.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmeta.nets.mlp import MLP


def key_mask(valid: jax.Array, num_queries: int) -> jax.Array:
    """``[..., K]`` key validity -> ``[..., 1, Q, K]`` attention mask (one head axis)."""
    return jnp.broadcast_to(valid[..., None, None, :], (*valid.shape[:-1], 1, num_queries, valid.shape[-1]))


def causal_mask(length: int) -> jax.Array:
    """``[1, L, L]``: query ``i`` may attend to keys ``j <= i``."""
    return jnp.tril(jnp.ones((length, length), bool))[None]


class TransformerLayer(nn.Module):
    """Pre-norm transformer layer: self-attention then an MLP, both residual."""

    num_heads: int
    mlp_ratio: int = 2

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        features = x.shape[-1]
        h = nn.LayerNorm()(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.num_heads, qkv_features=features)(
            h, h, h, mask=mask
        )
        h = nn.LayerNorm()(x)
        return x + MLP((features * self.mlp_ratio, features))(h)


class QueryDecoder(nn.Module):
    """Summarise a masked sequence ``[..., L, E]`` into one vector with a learned query ``g``.

    The paper's trajectory decoder: ``v = Decoder(g, e)``, cross-attention from
    ``g`` to the step embeddings, then an MLP, both residual.
    """

    num_heads: int

    @nn.compact
    def __call__(self, seq: jax.Array, valid: jax.Array) -> jax.Array:
        features = seq.shape[-1]
        g = self.param("g", nn.initializers.normal(0.02), (features,))
        query = jnp.broadcast_to(g, (*seq.shape[:-2], 1, features))
        mha = nn.MultiHeadDotProductAttention(num_heads=self.num_heads, qkv_features=features)
        keys = nn.LayerNorm()(seq)
        x = query + mha(nn.LayerNorm()(query), keys, keys, mask=key_mask(valid, 1))
        x = x + MLP((features * 2, features))(nn.LayerNorm()(x))
        return x[..., 0, :]


class GRUGate(nn.Module):
    """Gated residual of Parisotto et al. (2019): merges ``y`` into the stream ``x``.

    ``r = s(W_r y + U_r x)``, ``z = s(W_z y + U_z x - b_g)``,
    ``h = tanh(W_g y + U_g (r * x))``, output ``(1 - z) * x + z * h``. The bias
    ``b_g > 0`` starts the gate near the identity (``x`` passes through).
    """

    gate_bias: float = 2.0

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
        features = x.shape[-1]

        def dense(name: str, use_bias: bool = True) -> nn.Dense:
            return nn.Dense(features, use_bias=use_bias, name=name)

        r = nn.sigmoid(dense("w_r")(y) + dense("u_r", False)(x))
        z = nn.sigmoid(dense("w_z")(y) + dense("u_z", False)(x) - self.gate_bias)
        h = jnp.tanh(dense("w_g")(y) + dense("u_g", False)(r * x))
        return (1.0 - z) * x + z * h

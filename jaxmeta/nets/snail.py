"""SNAIL (Mishra et al., 2017): temporal convolutions and causal soft attention over a sequence.

Building blocks, for sequences ``x [..., L, C]`` with a validity mask
``valid [..., L]`` (``True`` = a real step):

* :class:`DenseBlock` ``(dilation d, filters F)``: a causal dilated 1-D
  convolution with kernel size 2 and a gated activation,
  ``z_t = W_0 x_{t-d} + W_1 x_t + b`` (``x_{t-d} = 0`` before the sequence),
  ``y_t = tanh(z^f_t) * sigmoid(z^g_t)``; the output is ``[x, y]`` (``C + F``
  channels).
* :class:`TCBlock` ``(seq_len, F)``: DenseBlocks with dilations ``1, 2, 4, ...``
  (``ceil(log2 seq_len)`` of them, at least one), so its receptive field
  ``2 ** ceil(log2 seq_len)`` covers the whole sequence. (The SNAIL paper
  writes dilations ``2, 4, ...``, which would only ever mix even offsets.)
* :class:`AttentionBlock` ``(key_size, value_size)``: single-head causal
  soft attention; query, keys and values are linear maps of ``x``; the output
  is ``[x, read]``.
* :class:`SNAIL`: a stack of those blocks, e.g. TC, TC, attention, TC,
  attention (the paper's RL architecture).

Padding: positions with ``valid = False`` are zero in every layer's output,
exactly as the zero padding before the start of a sequence. So running the
stack over a right-aligned window ``[pad ... pad, s_0 ... s_t]`` gives at
position ``s_t`` exactly what running it over ``[s_0 ... s_T]`` gives at ``t``:
acting step by step over a fixed window and training on whole sequences
compute the same function.

:class:`SnailPolicy` adds the RL parts: a step token
``[Phi(o_t, a_{t-1}, r_{t-1}), episode_start_t]`` per step and an MLP head from
the stack's features to action logits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmeta.nets.encoders import ObsEncoder, StepEncoder
from jaxmeta.nets.mlp import MLP

BLOCK_KINDS = ("tc", "attention")


def dilations(seq_len: int) -> tuple[int, ...]:
    """Dilations of a :class:`TCBlock` over ``seq_len`` steps: ``1, 2, ..., 2 ** (n - 1)``,
    ``n = max(1, ceil(log2 seq_len))``."""
    count = max(1, (seq_len - 1).bit_length())
    return tuple(2**i for i in range(count))


def causal_shift(x: jax.Array, shift: int) -> jax.Array:
    """``x`` moved ``shift`` steps later along axis -2, zeros shifted in: ``out_t = x_{t-shift}``."""
    length = x.shape[-2]
    if shift >= length:
        return jnp.zeros_like(x)
    pad = [(0, 0)] * (x.ndim - 2) + [(shift, 0), (0, 0)]
    return jnp.pad(x, pad)[..., :length, :]


def _zero_invalid(x: jax.Array, valid: jax.Array) -> jax.Array:
    return x * valid[..., None].astype(x.dtype)


class DenseBlock(nn.Module):
    """Causal dilated convolution (kernel 2), gated activation, concatenated to the input.

    ``kernel[0]`` multiplies the step ``dilation`` steps back, ``kernel[1]`` the
    current step; the first ``filters`` output channels are the filter branch,
    the last ``filters`` the gate. ``x`` must be zero where ``valid`` is false.
    """

    dilation: int
    filters: int

    @nn.compact
    def __call__(self, x: jax.Array, valid: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (2, channels, 2 * self.filters))
        bias = self.param("bias", nn.initializers.zeros, (2 * self.filters,))
        z = causal_shift(x, self.dilation) @ kernel[0] + x @ kernel[1] + bias
        filt, gate = jnp.split(z, 2, axis=-1)
        return jnp.concatenate([x, _zero_invalid(jnp.tanh(filt) * nn.sigmoid(gate), valid)], axis=-1)


class TCBlock(nn.Module):
    """DenseBlocks with dilations ``1, 2, 4, ...`` covering ``seq_len`` steps."""

    seq_len: int
    filters: int

    @nn.compact
    def __call__(self, x: jax.Array, valid: jax.Array) -> jax.Array:
        for dilation in dilations(self.seq_len):
            x = DenseBlock(dilation, self.filters)(x, valid)
        return x


class AttentionBlock(nn.Module):
    """Single-head causal soft attention over the valid steps so far, concatenated to the input."""

    key_size: int
    value_size: int

    @nn.compact
    def __call__(self, x: jax.Array, valid: jax.Array) -> jax.Array:
        length = x.shape[-2]
        projected = nn.Dense(2 * self.key_size + self.value_size, name="query_key_value")(x)
        query, keys, values = jnp.split(projected, [self.key_size, 2 * self.key_size], axis=-1)
        scores = query @ jnp.swapaxes(keys, -1, -2) / math.sqrt(self.key_size)  # [..., L(query), L(key)]
        allowed = jnp.tril(jnp.ones((length, length), bool)) & valid[..., None, :]
        # A masked score of -1e30 has weight exactly 0 next to any allowed one. A padding query
        # with no allowed key gets uniform weights; its output is zeroed below.
        weights = jax.nn.softmax(jnp.where(allowed, scores, -1e30), axis=-1)
        return jnp.concatenate([x, _zero_invalid(weights @ values, valid)], axis=-1)


class SNAIL(nn.Module):
    """A stack of TC and attention blocks (``blocks``, names from :data:`BLOCK_KINDS`).

    ``x [..., L, C] -> [..., L, C + growth]``, causal along ``L``; invalid
    steps are zero in the input and in every block's output.
    """

    seq_len: int
    blocks: Sequence[str] = ("tc", "tc", "attention", "tc", "attention")
    filters: int = 32
    key_size: int = 32
    value_size: int = 32

    @nn.compact
    def __call__(self, x: jax.Array, valid: jax.Array) -> jax.Array:
        x = _zero_invalid(x, valid)
        for kind in self.blocks:
            if kind == "tc":
                x = TCBlock(self.seq_len, self.filters)(x, valid)
            elif kind == "attention":
                x = AttentionBlock(self.key_size, self.value_size)(x, valid)
            else:
                raise ValueError(f"unknown SNAIL block {kind!r}; allowed: {', '.join(BLOCK_KINDS)}")
        return x


class SnailPolicy(nn.Module):
    """SNAIL for RL: step tokens of the whole trial so far -> action logits of the last step.

    A step token is ``[Phi(o_t, a_{t-1}, r_{t-1}), episode_start_t]``
    (:class:`~jaxmeta.nets.encoders.StepEncoder`, ``features + 1`` channels);
    action index ``num_actions`` means "no previous action" (first step of the
    trial). ``context`` is the longest sequence the stack is built for (it
    sets the dilations of the TC blocks).
    """

    num_actions: int
    context: int
    features: int = 32
    filters: int = 32
    key_size: int = 32
    value_size: int = 32
    hidden: int = 128
    conv_channels: Sequence[int] = (16, 16)
    blocks: Sequence[str] = ("tc", "tc", "attention", "tc", "attention")

    def setup(self) -> None:
        obs_encoder = ObsEncoder(self.features, conv_channels=tuple(self.conv_channels), hidden=self.hidden)
        self.step_encoder = StepEncoder(self.features, self.num_actions, obs_encoder)
        self.stack = SNAIL(self.context, tuple(self.blocks), self.filters, self.key_size, self.value_size)
        self.head = MLP((self.hidden, self.num_actions))

    def token(
        self, obs: jax.Array, prev_action: jax.Array, prev_reward: jax.Array, episode_start: jax.Array
    ) -> jax.Array:
        """The step token ``[..., features + 1]``."""
        phi = self.step_encoder(obs, prev_action, prev_reward)
        return jnp.concatenate([phi, episode_start[..., None].astype(phi.dtype)], axis=-1)

    def logits(self, tokens: jax.Array, valid: jax.Array) -> jax.Array:
        """Logits of every step ``[..., L, A]`` from tokens ``[..., L, features + 1]`` (causal)."""
        return self.head(self.stack(tokens, valid))

    def last_logits(self, tokens: jax.Array, valid: jax.Array) -> jax.Array:
        """Logits of the last step only ``[..., A]``: acting over a right-aligned window."""
        return self.head(self.stack(tokens, valid)[..., -1, :])

    def __call__(
        self, obs: jax.Array, prev_action: jax.Array, prev_reward: jax.Array, episode_start: jax.Array
    ) -> jax.Array:
        """The first step of a trial from an empty window (initialises every parameter)."""
        token = self.token(obs, prev_action, prev_reward, episode_start)
        window = jnp.zeros((*token.shape[:-1], self.context, token.shape[-1]), token.dtype)
        window = window.at[..., -1, :].set(token)
        valid = jnp.zeros((*token.shape[:-1], self.context), bool).at[..., -1].set(True)
        return self.last_logits(window, valid)

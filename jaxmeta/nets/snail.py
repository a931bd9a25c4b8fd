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
exactly as the zero padding before the start of a sequence.

Acting one step at a time (:meth:`SNAIL.step`): every block outputs
``[input, new channels]``, so the input of every layer at a position is a
prefix of the stack's final features there. The window (a ring buffer over
the last positions, zero where invalid) keeps per position its final features
followed by each attention block's key and value there
(:meth:`SNAIL.window_width` channels). A new position needs only its own pass:
a dense block reads its input ``d`` steps back from the window, an attention
block attends to the keys and values of the window's positions and its own
(only ``key_size + value_size`` channels per position are read: acting is
bound by reading the window, not by arithmetic); the new position's row then
replaces the oldest one. Stepping through a sequence no longer than the window
gives exactly what :meth:`SNAIL.__call__` gives on the whole sequence.

:class:`SnailPolicy` adds the RL parts: a step token
``[Phi(o_t, a_{t-1}, r_{t-1}), episode_start_t]`` per step and an MLP head from
the stack's features to action logits. It acts over a window of the last
``context`` positions (the new one included). In longer sequences each
position keeps the features, keys and values computed when it was the newest
(as Transformer-XL's memory): attention reads the last ``context`` positions
and a dense block its input at most ``context - 1`` steps back, but those
features summarise what came before them, so steps older than the window still
matter. For ``context >= 2`` this equals the whole-sequence pass with attention
limited to the last ``context`` positions; it is not the stack run afresh over
the last ``context`` steps alone.
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


def output_width(in_channels: int, seq_len: int, blocks: Sequence[str], filters: int, value_size: int) -> int:
    """Channels of a :class:`SNAIL` stack's output for ``in_channels`` input channels."""
    growth = {"tc": len(dilations(seq_len)) * filters, "attention": value_size}
    return in_channels + sum(growth[kind] for kind in blocks)


def window_width(
    in_channels: int, seq_len: int, blocks: Sequence[str], filters: int, key_size: int, value_size: int
) -> int:
    """Channels of a row of the acting window: the stack's output, then each attention block's
    key and value."""
    attention_blocks = sum(kind == "attention" for kind in blocks)
    return output_width(in_channels, seq_len, blocks, filters, value_size) + attention_blocks * (
        key_size + value_size
    )


def causal_shift(x: jax.Array, shift: int) -> jax.Array:
    """``x`` moved ``shift`` steps later along axis -2, zeros shifted in: ``out_t = x_{t-shift}``."""
    length = x.shape[-2]
    if shift >= length:
        return jnp.zeros_like(x)
    pad = [(0, 0)] * (x.ndim - 2) + [(shift, 0), (0, 0)]
    return jnp.pad(x, pad)[..., :length, :]


def _zero_invalid(x: jax.Array, valid: jax.Array) -> jax.Array:
    return x * valid[..., None].astype(x.dtype)


def _cached_input(
    cache: jax.Array, cache_valid: jax.Array, newest: jax.Array, back: int, channels: int
) -> jax.Array:
    """A layer's input ``back`` positions before the new one: the first ``channels`` cached
    features there, zero if that position is invalid or not in the cache."""
    size = cache.shape[-2]
    if back > size:
        return jnp.zeros((*cache.shape[:-2], channels), cache.dtype)
    index = (newest + 1 - back) % size
    past = jax.lax.dynamic_index_in_dim(cache, index, cache.ndim - 2, keepdims=False)[..., :channels]
    return _zero_invalid(past, jax.lax.dynamic_index_in_dim(cache_valid, index, cache_valid.ndim - 1, False))


# Every block takes either a whole sequence or one new position:
#   cache None: x [..., L, C] (zero where invalid), valid [..., L];
#   cache given: x [..., C] the new position's input, valid [...] its validity, and
#     cache_valid [..., M] the validity of the M positions before it (a ring buffer whose newest
#     entry is at index `newest`, an int; the one d steps back at (newest + 1 - d) mod M), with
#     a TC block: cache [..., M, width > C], the window's rows there (zero where invalid), whose
#       first C channels are the block's input (a row starts with the stack's final features);
#     an attention block: cache_kv [..., M, key_size + value_size], its keys and values there.
# Both share the same parameters.


class DenseBlock(nn.Module):
    """Causal dilated convolution (kernel 2), gated activation, concatenated to the input.

    ``kernel[0]`` multiplies the step ``dilation`` steps back, ``kernel[1]`` the
    current step; the first ``filters`` output channels are the filter branch,
    the last ``filters`` the gate. ``x`` must be zero where ``valid`` is false.
    """

    dilation: int
    filters: int

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        valid: jax.Array,
        cache: jax.Array | None = None,
        cache_valid: jax.Array | None = None,
        newest: jax.Array | None = None,
    ) -> jax.Array:
        channels = x.shape[-1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (2, channels, 2 * self.filters))
        bias = self.param("bias", nn.initializers.zeros, (2 * self.filters,))
        if cache is None:
            past = causal_shift(x, self.dilation)
        else:
            past = _cached_input(cache, cache_valid, newest, self.dilation, channels)
        z = past @ kernel[0] + x @ kernel[1] + bias
        filt, gate = jnp.split(z, 2, axis=-1)
        return jnp.concatenate([x, _zero_invalid(jnp.tanh(filt) * nn.sigmoid(gate), valid)], axis=-1)


class TCBlock(nn.Module):
    """DenseBlocks with dilations ``1, 2, 4, ...`` covering ``seq_len`` steps."""

    seq_len: int
    filters: int

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        valid: jax.Array,
        cache: jax.Array | None = None,
        cache_valid: jax.Array | None = None,
        newest: jax.Array | None = None,
    ) -> jax.Array:
        for dilation in dilations(self.seq_len):
            x = DenseBlock(dilation, self.filters)(x, valid, cache, cache_valid, newest)
        return x


class AttentionBlock(nn.Module):
    """Single-head causal soft attention over the valid steps so far, concatenated to the input.

    For one new position (``cache_kv`` given) it attends to the cached keys and
    values and its own, and also returns its own ``[key, value]`` (zero if
    invalid) for the window.
    """

    key_size: int
    value_size: int

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        valid: jax.Array,
        cache_kv: jax.Array | None = None,
        cache_valid: jax.Array | None = None,
    ) -> jax.Array | tuple[jax.Array, jax.Array]:
        dense = nn.Dense(2 * self.key_size + self.value_size, name="query_key_value")
        query, keys, values = jnp.split(dense(x), [self.key_size, 2 * self.key_size], axis=-1)
        scale = 1.0 / math.sqrt(self.key_size)
        if cache_kv is None:
            length = x.shape[-2]
            scores = query @ jnp.swapaxes(keys, -1, -2) * scale  # [..., L(query), L(key)]
            allowed = jnp.tril(jnp.ones((length, length), bool)) & valid[..., None, :]
            # A masked score of -1e30 has weight exactly 0 next to any allowed one. A padding query
            # with no allowed key gets uniform weights; its output is zeroed below.
            weights = jax.nn.softmax(jnp.where(allowed, scores, -1e30), axis=-1)
            return jnp.concatenate([x, _zero_invalid(weights @ values, valid)], axis=-1)
        # One new position: keys are the cached positions (in any order), then itself.
        past_keys, past_values = jnp.split(cache_kv, [self.key_size], axis=-1)
        past_scores = jnp.einsum("...mk,...k->...m", past_keys, query)
        own_score = jnp.sum(query * keys, axis=-1, keepdims=True)
        scores = jnp.concatenate([past_scores, own_score], axis=-1) * scale
        allowed = jnp.concatenate([cache_valid, jnp.ones((*cache_valid.shape[:-1], 1), bool)], axis=-1)
        weights = jax.nn.softmax(jnp.where(allowed, scores, -1e30), axis=-1)
        past_weights, own_weight = weights[..., :-1], weights[..., -1:]
        read = jnp.einsum("...m,...mv->...v", past_weights, past_values) + own_weight * values
        own_kv = _zero_invalid(jnp.concatenate([keys, values], axis=-1), valid)
        return jnp.concatenate([x, _zero_invalid(read, valid)], axis=-1), own_kv


class SNAIL(nn.Module):
    """A stack of TC and attention blocks (``blocks``, names from :data:`BLOCK_KINDS`).

    ``x [..., L, C] -> [..., L, C + growth]``, causal along ``L``; invalid
    steps are zero in the input and in every block's output. With a ``cache``
    (one new position, see :meth:`step`) it returns the new position's output
    ``[..., C + growth]`` and its attention blocks' keys and values.
    """

    seq_len: int
    blocks: Sequence[str] = ("tc", "tc", "attention", "tc", "attention")
    filters: int = 32
    key_size: int = 32
    value_size: int = 32

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        valid: jax.Array,
        cache: jax.Array | None = None,
        cache_valid: jax.Array | None = None,
        newest: jax.Array | None = None,
    ) -> jax.Array | tuple[jax.Array, jax.Array]:
        x = _zero_invalid(x, valid)
        kv_size = self.key_size + self.value_size
        if cache is not None:  # the window's rows: final features, then keys and values
            kv_start = self.output_width(x.shape[-1])
            if cache.shape[-1] != self.window_width(x.shape[-1]):
                raise ValueError(
                    f"the window has {cache.shape[-1]} channels; for {x.shape[-1]} input channels "
                    f"it needs window_width({x.shape[-1]}) = {self.window_width(x.shape[-1])}"
                )
        own_kvs = []
        for kind in self.blocks:
            if kind == "tc":
                x = TCBlock(self.seq_len, self.filters)(x, valid, cache, cache_valid, newest)
            elif kind == "attention":
                attention = AttentionBlock(self.key_size, self.value_size)
                if cache is None:
                    x = attention(x, valid)
                else:
                    start = kv_start + len(own_kvs) * kv_size
                    x, own_kv = attention(x, valid, cache[..., start : start + kv_size], cache_valid)
                    own_kvs.append(own_kv)
            else:
                raise ValueError(f"unknown SNAIL block {kind!r}; allowed: {', '.join(BLOCK_KINDS)}")
        if cache is None:
            return x
        return x, jnp.concatenate(own_kvs, axis=-1) if own_kvs else x[..., :0]

    def output_width(self, in_channels: int) -> int:
        """Channels of the output for ``in_channels`` input channels."""
        return output_width(in_channels, self.seq_len, self.blocks, self.filters, self.value_size)

    def window_width(self, in_channels: int) -> int:
        """Channels of a row of the acting window (:meth:`step`) for ``in_channels`` input channels."""
        return window_width(
            in_channels, self.seq_len, self.blocks, self.filters, self.key_size, self.value_size
        )

    def step(
        self,
        x: jax.Array,
        window: jax.Array,
        window_valid: jax.Array,
        newest: jax.Array,
        valid: jax.Array | bool = True,
    ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        """One new position with input ``x [..., C]``, over a window of the last ``W``
        positions: ``window [..., W, window_width(C)]`` (each row the position's output, then
        its attention blocks' keys and values; zero where invalid) and ``window_valid [..., W]``,
        a ring buffer whose newest entry is at index ``newest`` (an int). The new position
        takes the oldest one's place: it reads the ``W - 1`` others (attention sees ``W``
        positions with itself). Returns its output ``[..., C + growth]`` and the window
        ``(window, window_valid, newest)`` with it in. Stepping through a sequence of at most
        ``W`` positions from an empty (all-zero) window gives :meth:`__call__`'s outputs."""
        valid = jnp.broadcast_to(jnp.asarray(valid, bool), x.shape[:-1])
        slot = (newest + 1) % window.shape[-2]  # the oldest entry, leaving the window
        window_valid = window_valid.at[..., slot].set(False)
        out, own_kv = self(x, valid, window, window_valid, newest)
        row = jnp.concatenate([out, own_kv], axis=-1)
        return out, window.at[..., slot, :].set(row), window_valid.at[..., slot].set(valid), slot


class SnailPolicy(nn.Module):
    """SNAIL for RL: step tokens of the whole trial so far -> action logits of the last step.

    A step token is ``[Phi(o_t, a_{t-1}, r_{t-1}), episode_start_t]``
    (:class:`~jaxmeta.nets.encoders.StepEncoder`, ``features + 1`` channels);
    action index ``num_actions`` means "no previous action" (first step of the
    trial). ``context`` is the longest sequence the stack is built for (it
    sets the dilations of the TC blocks) and the acting window.
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

    @property
    def window_shape(self) -> tuple[int, int]:
        """The acting window (:meth:`SNAIL.step`): ``(context, channels)``."""
        width = window_width(
            self.features + 1, self.context, self.blocks, self.filters, self.key_size, self.value_size
        )
        return self.context, width

    def token(
        self, obs: jax.Array, prev_action: jax.Array, prev_reward: jax.Array, episode_start: jax.Array
    ) -> jax.Array:
        """The step token ``[..., features + 1]``."""
        phi = self.step_encoder(obs, prev_action, prev_reward)
        return jnp.concatenate([phi, episode_start[..., None].astype(phi.dtype)], axis=-1)

    def logits(self, tokens: jax.Array, valid: jax.Array) -> jax.Array:
        """Logits of every step ``[..., L, A]`` from tokens ``[..., L, features + 1]`` (causal)."""
        return self.head(self.stack(tokens, valid))

    def step_logits(
        self, token: jax.Array, window: jax.Array, window_valid: jax.Array, newest: jax.Array
    ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        """One acting step: ``token [..., features + 1]`` and the window of the last
        ``context`` positions (``window [..., *window_shape]``,
        ``window_valid [..., context]``, a ring buffer with the newest at ``newest``; see
        :meth:`SNAIL.step`) -> the new position's logits ``[..., A]`` and the window with it
        in place of the oldest."""
        features, *window = self.stack.step(token, window, window_valid, newest)
        return self.head(features), *window

    def __call__(
        self, obs: jax.Array, prev_action: jax.Array, prev_reward: jax.Array, episode_start: jax.Array
    ) -> jax.Array:
        """The logits of a one-step trial (initialises every parameter)."""
        token = self.token(obs, prev_action, prev_reward, episode_start)
        return self.logits(token[..., None, :], jnp.ones((*token.shape[:-1], 1), bool))[..., 0, :]

"""Encoders of observations and of single steps (observation, action, reward).

``ObsEncoder`` is the paper's ``MLP(CNN(o))``; ``StepEncoder`` is its Phi,
which merges a frame with embeddings of the action that led to it and the
reward received. A step token is always "frame + the action and reward that
produced it": for a stored episode ``(o_{t+1}, a_t, r_t)``, for the current
episode ``(o_t, a_{t-1}, r_{t-1})``, with action index ``num_actions`` meaning
"no action yet" at an episode's first step.

``encoder_for`` picks an encoder from a gymnax observation space (pixels,
vectors, discrete observations, dicts of them); every encoder maps
``[..., *obs_shape]`` to a linear (not activated) embedding ``[..., features]``,
as ``ObsEncoder`` does, and the network that uses it applies its own
nonlinearity.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import FrozenDict
from gymnax.environments import spaces

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


class TrialStepEncoder(nn.Module):
    """RL^2's input (Duan et al. 2016): the observation with the previous action, reward and done flag.

    ``{"obs", "prev_action", "prev_reward", "prev_done"}`` (leaves ``[..., ...]``) -> ``[..., features]``:
    ``obs_encoder(obs)`` (ReLU), the previous action one-hot over ``num_actions + 1`` (index
    ``num_actions``: no action yet, the trial's first step), the previous reward and whether the previous
    step ended an episode, concatenated and mapped by one Dense layer (a linear embedding).
    ``reward_by_action`` also feeds the one-hot action times the reward (not in RL^2): what the previous
    action earned, on that action's own input, which a memory can add up per action.
    """

    obs_encoder: nn.Module
    num_actions: int
    features: int
    reward_by_action: bool = False

    @nn.compact
    def __call__(self, inputs: dict[str, jax.Array]) -> jax.Array:
        obs = nn.relu(self.obs_encoder(inputs["obs"]))
        action = jax.nn.one_hot(inputs["prev_action"], self.num_actions + 1, dtype=jnp.float32)
        reward = inputs["prev_reward"].astype(jnp.float32)[..., None]
        done = inputs["prev_done"].astype(jnp.float32)[..., None]
        parts = [obs, action, reward, done]
        if self.reward_by_action:
            parts.append(action * reward)
        return nn.Dense(self.features)(jnp.concatenate(parts, axis=-1))


class VectorEncoder(nn.Module):
    """``[..., *obs_shape]`` -> ``[..., features]``: flatten the last ``obs_ndim`` dims, then an MLP.

    ReLU between layers and none after the last (a linear embedding, like
    ``ObsEncoder``'s). ``hidden_sizes=()`` is a single Dense layer. uint8
    inputs are scaled to [0, 1] (``as_float_image``), anything else cast to float32.
    """

    features: int
    hidden_sizes: Sequence[int] = ()
    obs_ndim: int = 1  # trailing dims that make one observation; the rest are batch dims

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = as_float_image(obs)
        lead = x.shape[: x.ndim - self.obs_ndim]
        # math.prod(()) == 1: a scalar observation becomes a 1-vector.
        x = x.reshape((*lead, math.prod(x.shape[len(lead) :])))
        return MLP((*self.hidden_sizes, self.features))(x)


class DiscreteEncoder(nn.Module):
    """Integer observations ``[...]`` in ``[0, num_categories)`` -> ``[..., features]``.

    One-hot, then an MLP (``VectorEncoder``).
    """

    features: int
    num_categories: int
    hidden_sizes: Sequence[int] = ()

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = jax.nn.one_hot(obs, self.num_categories, dtype=jnp.float32)
        return VectorEncoder(self.features, self.hidden_sizes, obs_ndim=1)(x)


class DictEncoder(nn.Module):
    """Dict observations: each key through its own encoder, concatenated in sorted key order, then a Dense.

    ``{key: [..., *shape_key]}`` -> ``[..., features]``. ``encoders`` maps each
    observation key to an encoder; a plain dict is frozen on construction
    (flax module attributes must be hashable). Parameters live under
    ``encoders_<key>`` and ``Dense_0``.
    """

    features: int
    encoders: Mapping[str, nn.Module]

    def __post_init__(self) -> None:
        if not isinstance(self.encoders, FrozenDict):
            object.__setattr__(self, "encoders", FrozenDict(self.encoders))
        super().__post_init__()

    @nn.compact
    def __call__(self, obs: Mapping[str, jax.Array]) -> jax.Array:
        # Sorted, not insertion order: the layout of the concatenation must not
        # depend on how the dict was built.
        parts = [self.encoders[key](obs[key]) for key in sorted(self.encoders)]
        return nn.Dense(self.features)(jnp.concatenate(parts, axis=-1))


def encoder_for(
    space: spaces.Space,
    features: int = 64,
    *,
    hidden: Sequence[int] = (),
    conv_channels: Sequence[int] = (32, 32),
) -> nn.Module:
    """An encoder ``[..., *space.shape]`` -> ``[..., features]`` chosen from a gymnax observation space.

    * ``Box`` with 3 dims ``(H, W, C)``: ``ObsEncoder`` (3x3 convolutions with
      ``conv_channels``, then an MLP with one hidden layer, so ``hidden`` must
      hold exactly one width; ``hidden=()`` means 128, ObsEncoder's default).
    * ``Box`` with 0-2 dims: ``VectorEncoder`` over the flattened observation.
    * ``Discrete``: ``DiscreteEncoder`` (one-hot, then an MLP).
    * ``Dict``: ``DictEncoder`` with ``encoder_for`` of each subspace (same
      ``features``, ``hidden``, ``conv_channels``).

    ``hidden`` lists the MLP's hidden widths (``()``: a single Dense layer).
    Any other space raises ``ValueError``.
    """
    hidden = tuple(int(h) for h in hidden)
    if isinstance(space, spaces.Box):
        shape = tuple(int(d) for d in space.shape)
        if len(shape) == 3:
            if len(hidden) > 1:
                raise ValueError(
                    f"image observations ({space!r}) use ObsEncoder, which has one hidden layer; "
                    f"got hidden={hidden}"
                )
            return ObsEncoder(features, tuple(conv_channels), hidden=hidden[0] if hidden else 128)
        if len(shape) <= 2:
            return VectorEncoder(features, hidden, obs_ndim=len(shape))
        raise ValueError(f"no encoder for {space!r}: Box observations must have 0-3 dims, got shape {shape}")
    if isinstance(space, spaces.Discrete):
        return DiscreteEncoder(features, int(space.n), hidden)
    if isinstance(space, spaces.Dict):
        return DictEncoder(
            features,
            {
                key: encoder_for(sub, features, hidden=hidden, conv_channels=conv_channels)
                for key, sub in space.spaces.items()
            },
        )
    raise ValueError(
        f"no encoder for observation space {space!r}: supported are Box (0-3 dims), Discrete and Dict"
    )

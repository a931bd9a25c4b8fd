"""The memory-bank policy of Chen & Agrawal (2020), section 2.

Pieces, in the paper's notation:

* ``v'_o = MLP(CNN(o_t))`` — :class:`~jaxmeta.nets.encoders.ObsEncoder`, the
  query into memory;
* ``e = Encoder(Phi(tau))``, ``v_tau = Decoder(g, e)`` — each stored episode
  (its last ``L`` steps, masked) becomes one vector (:meth:`encode_bank`);
* ``m_d = MultiHead(v'_o, v_tau, v_tau)``, ``m = GRU(v'_o, m_d)`` — attention
  over the ``N`` episodes of the task's bank, masked by the slot mask, then GRU
  gating; an empty bank gives ``m = 0`` exactly (:meth:`read_memory`);
* Temporal variant: ``v_o = MLP(MultiHead(v_tau_t, v_tau_t, v_tau_t) ⊕ v_tau_t)[-1]``,
  causal self-attention over the steps of the current episode so far (at
  most ``temporal_window`` of them), taken at the current step
  (:meth:`temporal_features`); without it ``v_o = v'_o``;
* ``pi = MLP[MLP(v_o) ⊕ m]`` over the discrete actions (:meth:`logits`).

Step tokens are "frame + the action and reward that produced it" (see
:mod:`jaxmeta.nets.encoders`), plus a learned embedding of the step's
position: its index among the stored ``L`` steps, or its time in the
current episode (capped at the window).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmeta.nets.attention import GRUGate, QueryDecoder, TransformerLayer, key_mask
from jaxmeta.nets.encoders import ObsEncoder, StepEncoder
from jaxmeta.nets.mlp import MLP


class FailureMemoryPolicy(nn.Module):
    num_actions: int
    bank_length: int  # L, steps per stored episode
    features: int = 64  # E
    num_heads: int = 4
    encoder_layers: int = 1
    hidden: int = 128
    temporal: bool = False
    temporal_window: int = 32
    conv_channels: tuple[int, ...] = (16, 16)

    def setup(self) -> None:
        e = self.features
        self.obs_encoder = ObsEncoder(e, conv_channels=tuple(self.conv_channels), hidden=self.hidden)
        self.step_encoder = StepEncoder(e, self.num_actions, self.obs_encoder)
        self.bank_positions = self.param(
            "bank_positions", nn.initializers.normal(0.02), (self.bank_length, e)
        )
        self.trajectory_layers = [TransformerLayer(self.num_heads) for _ in range(self.encoder_layers)]
        self.decoder = QueryDecoder(self.num_heads)
        self.memory_attention = nn.MultiHeadDotProductAttention(num_heads=self.num_heads, qkv_features=e)
        self.memory_gate = GRUGate()
        if self.temporal:
            self.time_positions = self.param(
                "time_positions", nn.initializers.normal(0.02), (self.temporal_window, e)
            )
            self.temporal_attention = nn.MultiHeadDotProductAttention(
                num_heads=self.num_heads, qkv_features=e
            )
            self.temporal_mlp = MLP((self.hidden, e))
        self.obs_mlp = MLP((e,))
        self.head = MLP((self.hidden, self.num_actions))

    # -------------------------------------------------------------- memory
    def encode_bank(self, steps: dict, step_mask: jax.Array) -> jax.Array:
        """``steps`` leaves ``[..., N, L, ...]`` -> episode vectors ``[..., N, E]``."""
        tokens = self.step_encoder(steps["obs"], steps["action"], steps["reward"]) + self.bank_positions
        mask = key_mask(step_mask, self.bank_length)
        for layer in self.trajectory_layers:
            tokens = layer(tokens, mask)
        return self.decoder(tokens, step_mask)

    def query(self, obs: jax.Array) -> jax.Array:
        """``v'_o``: the current observation's embedding ``[..., E]``."""
        return self.obs_encoder(obs)

    def read_memory(self, query: jax.Array, episodes: jax.Array, slot_mask: jax.Array) -> jax.Array:
        """``m``: gated attention from ``query [..., E]`` over ``episodes [..., N, E]``."""
        attended = self.memory_attention(query[..., None, :], episodes, episodes, mask=key_mask(slot_mask, 1))
        m = self.memory_gate(query, attended[..., 0, :])
        return jnp.where(jnp.any(slot_mask, axis=-1, keepdims=True), m, 0.0)

    # ------------------------------------------------------------ temporal
    def step_token(
        self, obs: jax.Array, prev_action: jax.Array, prev_reward: jax.Array, time_in_episode: jax.Array
    ) -> jax.Array:
        """Token of the current step for the temporal attention ``[..., E]``."""
        position = jnp.minimum(time_in_episode, self.temporal_window - 1)
        return self.step_encoder(obs, prev_action, prev_reward) + self.time_positions[position]

    def temporal_features(self, queries: jax.Array, keys: jax.Array, mask: jax.Array) -> jax.Array:
        """``v_o``: attention from step tokens ``queries [..., Q, E]`` over the tokens of
        their episode so far ``keys [..., K, E]`` (``mask [..., 1, Q, K]``), merged with
        the query token by an MLP. Training runs it on a whole trial (``Q = K = T``,
        causal same-episode mask); acting runs it on one step over a window (``Q = 1``)."""
        attended = self.temporal_attention(queries, keys, keys, mask=mask)
        return self.temporal_mlp(jnp.concatenate([attended, queries], axis=-1))

    def act(
        self,
        obs: jax.Array,
        prev_action: jax.Array,
        prev_reward: jax.Array,
        time_in_episode: jax.Array,
        window: jax.Array,
        window_valid: jax.Array,
        episodes: jax.Array,
        slot_mask: jax.Array,
    ) -> tuple[jax.Array, jax.Array]:
        """Logits of one step while acting, and the episode window with this step appended.

        ``window [..., K, E]`` holds the tokens of the current episode so far
        (newest last), ``window_valid [..., K]`` which of them are real; the
        caller clears it at an episode start. Without the temporal variant the
        window passes through unchanged.
        """
        query = self.query(obs)
        m = self.read_memory(query, episodes, slot_mask)
        if not self.temporal:
            return self.logits(query, m), window
        token = self.step_token(obs, prev_action, prev_reward, time_in_episode)
        window = jnp.concatenate([window[..., 1:, :], token[..., None, :]], axis=-2)
        v_o = self.temporal_features(token[..., None, :], window, key_mask(window_valid, 1))[..., 0, :]
        return self.logits(v_o, m), window

    # ---------------------------------------------------------------- head
    def logits(self, v_o: jax.Array, m: jax.Array) -> jax.Array:
        return self.head(jnp.concatenate([self.obs_mlp(v_o), m], axis=-1))

    def __call__(
        self,
        obs: jax.Array,
        bank_steps: dict,
        bank_step_mask: jax.Array,
        bank_slot_mask: jax.Array,
        prev_action: jax.Array,
        prev_reward: jax.Array,
    ) -> jax.Array:
        """One first step of an episode from scratch (initialises every parameter; used in tests).

        Shapes: ``obs [..., W, W, C]``, bank leaves ``[..., N, L, ...]``.
        """
        episodes = self.encode_bank(bank_steps, bank_step_mask)
        window = jnp.zeros((*obs.shape[:-3], self.temporal_window, self.features))
        valid = jnp.zeros((*obs.shape[:-3], self.temporal_window), bool).at[..., -1].set(True)
        time = jnp.zeros(prev_action.shape, jnp.int32)
        logits, _ = self.act(obs, prev_action, prev_reward, time, window, valid, episodes, bank_slot_mask)
        return logits

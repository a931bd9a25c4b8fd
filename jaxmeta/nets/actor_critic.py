"""A memoryless actor-critic on the paper's observation encoder.

``z = relu(MLP(CNN(o_t)))`` (:class:`~jaxmeta.nets.encoders.ObsEncoder`) is
shared; a policy head maps it to action logits and a value head to ``V(o_t)``,
each a small MLP of its own. The policy sees only the current observation,
``a_t = pi(o_t)``.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from jaxmeta.nets.encoders import ObsEncoder
from jaxmeta.nets.mlp import MLP


class ActorCritic(nn.Module):
    num_actions: int
    features: int = 64  # width of the shared embedding
    hidden: int = 128  # hidden width of the encoder MLP and of both heads

    def setup(self) -> None:
        self.encoder = ObsEncoder(self.features, hidden=self.hidden)
        self.policy_head = MLP((self.hidden, self.num_actions))
        self.value_head = MLP((self.hidden, 1))

    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``obs [..., W, W, C]`` -> ``(logits [..., A], value [...])``."""
        z = nn.relu(self.encoder(obs))
        return self.policy_head(z), self.value_head(z)[..., 0]

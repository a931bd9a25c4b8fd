"""Networks for RL built from gymnax spaces: actor-critic (feed-forward and GRU) and Q-networks.

The observation encoder comes from :func:`~jaxmeta.nets.encoders.encoder_for`
and the action head from :func:`~jaxmeta.nets.heads.head_for`; the ``*_for``
builders pick both from the spaces. Encoders give linear embeddings; these
networks apply ``activation`` to them. No initialiser here uses a QR
decomposition (see :mod:`jaxmeta.nets.heads`), so ``jit(vmap(init))`` over
seeds is safe.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from gymnax.environments import spaces

from jaxmeta.nets.encoders import encoder_for
from jaxmeta.nets.heads import HIDDEN_INIT, VALUE_INIT, ActionDist, head_for

_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {"tanh": nn.tanh, "relu": nn.relu}


def _activation(name: str) -> Callable[[jax.Array], jax.Array]:
    if name not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {name!r}")
    return _ACTIVATIONS[name]


class Torso(nn.Module):
    """``[..., F]`` -> ``[..., hidden_sizes[-1]]``: Dense layers, each followed by ``activation``.

    ``hidden_sizes=()`` is the identity.
    """

    hidden_sizes: Sequence[int]
    activation: str = "tanh"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = _activation(self.activation)
        for width in self.hidden_sizes:
            x = act(nn.Dense(width, kernel_init=HIDDEN_INIT)(x))
        return x


def _actor_critic_heads(
    module: nn.Module, actor_in: jax.Array, critic_in: jax.Array
) -> tuple[ActionDist, jax.Array]:
    """Torso(s), the action head and a scalar value head, as submodules of ``module``."""
    hidden, activation = tuple(module.hidden_sizes), module.activation
    if module.shared_torso:
        actor_in = critic_in = Torso(hidden, activation, name="torso")(actor_in)
    else:
        actor_in = Torso(hidden, activation, name="actor_torso")(actor_in)
        critic_in = Torso(hidden, activation, name="critic_torso")(critic_in)
    value = nn.Dense(1, kernel_init=VALUE_INIT, name="value")(critic_in)[..., 0]
    return module.head(actor_in), value


class ActorCriticNet(nn.Module):
    """``obs [..., *obs_shape]`` -> ``(ActionDist over [...], value [...])``.

    ``z = activation(encoder(obs))``, then an actor MLP (``hidden_sizes``,
    activation after each layer) and ``head``, and a critic MLP and a Dense to
    the value. ``shared_torso=False`` (default) gives actor and critic MLPs of
    their own; ``True`` one MLP for both. ``critic_encoder`` (a separate module
    instance, only without a shared torso) gives the critic its own encoder;
    ``None`` shares ``encoder``.
    """

    encoder: nn.Module
    head: nn.Module
    critic_encoder: nn.Module | None = None
    hidden_sizes: Sequence[int] = (64,)
    activation: str = "tanh"
    shared_torso: bool = False

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[ActionDist, jax.Array]:
        if self.shared_torso and self.critic_encoder is not None:
            raise ValueError("a shared torso needs a shared encoder: pass critic_encoder=None")
        act = _activation(self.activation)
        z = act(self.encoder(obs))
        z_critic = z if self.critic_encoder is None else act(self.critic_encoder(obs))
        return _actor_critic_heads(self, z, z_critic)


class QNetwork(nn.Module):
    """``obs [..., *obs_shape]`` -> Q-values ``[..., num_actions]``: encoder, MLP, Dense."""

    encoder: nn.Module
    num_actions: int
    hidden_sizes: Sequence[int] = (64,)
    activation: str = "relu"

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = _activation(self.activation)(self.encoder(obs))
        x = Torso(tuple(self.hidden_sizes), self.activation, name="torso")(x)
        return nn.Dense(self.num_actions, name="q")(x)


class ResetGRU(nn.Module):
    """A GRU scanned over time, its state zeroed where ``reset`` is true.

    ``(hidden [B..., size], (x [T, B..., F], reset [T, B...]))`` ->
    ``(hidden [B..., size], outputs [T, B..., size])``. ``reset[t]`` true means
    ``x[t]`` starts a new episode: the state is zeroed *before* step ``t``.
    The recurrent kernel is lecun-normal, not flax's default orthogonal.
    """

    size: int

    @functools.partial(
        nn.scan, variable_broadcast="params", split_rngs={"params": False}, in_axes=0, out_axes=0
    )
    @nn.compact
    def __call__(self, hidden: jax.Array, inputs: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        x, reset = inputs
        hidden = jnp.where(reset[..., None], jnp.zeros_like(hidden), hidden)
        cell = nn.GRUCell(self.size, recurrent_kernel_init=nn.initializers.lecun_normal(), name="cell")
        return cell(hidden, x)


class RecurrentActorCritic(nn.Module):
    """Actor-critic with a GRU between the encoder and the heads.

    Training, over a sequence (the call): ``(hidden [B..., G], obs [T, B..., *obs_shape],
    reset [T, B...]) -> (hidden [B..., G], ActionDist over [T, B...], value [T, B...])``.
    Acting, one step (:meth:`step`): the same without the ``T`` axis. Both run
    the same scan (``step`` is a sequence of length 1), so they agree exactly.
    ``reset[t]`` zeroes the state before ``obs[t]`` is read: pass "``obs[t]``
    is an episode's first observation" (the previous step's ``done``).
    """

    encoder: nn.Module
    head: nn.Module
    gru_size: int = 128
    hidden_sizes: Sequence[int] = (64,)
    activation: str = "tanh"
    shared_torso: bool = False

    def initial_hidden(self, batch_shape: Sequence[int] = ()) -> jax.Array:
        """Zeros ``[*batch_shape, gru_size]``; needs no parameters."""
        return jnp.zeros((*batch_shape, self.gru_size), jnp.float32)

    @nn.compact
    def __call__(
        self, hidden: jax.Array, obs: jax.Array, reset: jax.Array
    ) -> tuple[jax.Array, ActionDist, jax.Array]:
        z = _activation(self.activation)(self.encoder(obs))
        hidden, out = ResetGRU(self.gru_size, name="core")(hidden, (z, reset))
        dist, value = _actor_critic_heads(self, out, out)
        return hidden, dist, value

    def step(
        self, hidden: jax.Array, obs: jax.Array, reset: jax.Array
    ) -> tuple[jax.Array, ActionDist, jax.Array]:
        """One step: ``(hidden [B..., G], obs [B..., *obs_shape], reset [B...])`` -> ``(hidden, dist, value)``

        ``dist`` and ``value`` are over ``[B...]``. This is a sequence of length 1
        through the call, so it matches the sequence path exactly.
        """
        hidden, dist, value = self(hidden, jax.tree.map(lambda x: x[None], obs), reset[None])
        return hidden, jax.tree.map(lambda x: x[0], dist), value[0]


def _has_image(space: spaces.Space) -> bool:
    if isinstance(space, spaces.Box):
        return len(space.shape) == 3
    if isinstance(space, spaces.Dict):
        return any(_has_image(sub) for sub in space.spaces.values())
    return False


def actor_critic_for(
    obs_space: spaces.Space,
    action_space: spaces.Space,
    *,
    features: int = 64,
    hidden_sizes: Sequence[int] = (64,),
    activation: str = "tanh",
    shared_torso: bool = False,
    separate_encoders: bool | None = None,
    encoder_hidden: Sequence[int] = (),
    conv_channels: Sequence[int] = (32, 32),
    log_std_init: float = 0.0,
) -> ActorCriticNet:
    """An :class:`ActorCriticNet` for the spaces.

    The defaults on a vector observation are PureJaxRL's classic-control
    network: separate actor and critic, each ``Dense(64)-tanh-Dense(64)-tanh``
    (the encoder's single Dense layer, then ``hidden_sizes``). ``separate_encoders``
    (default: yes unless the observation holds images, whose CNN is costly to
    duplicate) gives the critic its own encoder; it is ignored with
    ``shared_torso``. ``encoder_hidden`` and ``conv_channels`` go to
    :func:`encoder_for`, ``log_std_init`` to :func:`head_for`.
    """

    def encoder() -> nn.Module:
        return encoder_for(obs_space, features, hidden=encoder_hidden, conv_channels=conv_channels)

    if separate_encoders is None:
        separate_encoders = not _has_image(obs_space)
    return ActorCriticNet(
        encoder(),
        head_for(action_space, log_std_init=log_std_init),
        critic_encoder=encoder() if separate_encoders and not shared_torso else None,
        hidden_sizes=tuple(hidden_sizes),
        activation=activation,
        shared_torso=shared_torso,
    )


def recurrent_actor_critic_for(
    obs_space: spaces.Space,
    action_space: spaces.Space,
    *,
    gru_size: int = 128,
    features: int = 64,
    hidden_sizes: Sequence[int] = (64,),
    activation: str = "tanh",
    shared_torso: bool = False,
    encoder_hidden: Sequence[int] = (),
    conv_channels: Sequence[int] = (32, 32),
    log_std_init: float = 0.0,
) -> RecurrentActorCritic:
    """A :class:`RecurrentActorCritic` for the spaces (one encoder and GRU, shared by actor and critic)."""
    return RecurrentActorCritic(
        encoder_for(obs_space, features, hidden=encoder_hidden, conv_channels=conv_channels),
        head_for(action_space, log_std_init=log_std_init),
        gru_size=gru_size,
        hidden_sizes=tuple(hidden_sizes),
        activation=activation,
        shared_torso=shared_torso,
    )


def q_network_for(
    obs_space: spaces.Space,
    action_space: spaces.Space,
    *,
    features: int = 64,
    hidden_sizes: Sequence[int] = (64,),
    activation: str = "relu",
    encoder_hidden: Sequence[int] = (),
    conv_channels: Sequence[int] = (32, 32),
) -> QNetwork:
    """A :class:`QNetwork` for the spaces; the action space must be ``Discrete``."""
    if not isinstance(action_space, spaces.Discrete):
        raise ValueError(f"a Q-network needs a Discrete action space, got {action_space!r}")
    return QNetwork(
        encoder_for(obs_space, features, hidden=encoder_hidden, conv_channels=conv_channels),
        int(action_space.n),
        hidden_sizes=tuple(hidden_sizes),
        activation=activation,
    )

"""Action heads: features ``[..., F]`` -> a distribution over a gymnax action space.

Every head returns an :class:`ActionDist`, one small pytree with the same
methods whatever the action space, so PPO/DQN-style code need not know which
kind it has:

* ``sample(key) -> (stored_action, log_prob)``: one sample per batch element;
* ``log_prob(stored_action) -> [...]``, ``entropy() -> [...]``, ``mode() -> stored_action``;
* ``to_env(stored_action) -> env_action``: what ``env.step`` takes.

The *stored* action is what a rollout keeps and later scores with
``log_prob``. For ``Discrete`` spaces it is the action index itself. For
``Box`` spaces it is the pre-squash Gaussian sample ``raw``
(``[..., *action_shape]``), and the env action is
``low + (high - low) * (tanh(raw) + 1) / 2``: scoring ``raw`` needs no
``atanh`` of an action at the bounds, where it is infinite in float32.

Initialisers are variance-scaling ones with the entry scales of the
orthogonal gains PPO implementations use (sqrt(2) hidden, 0.01 policy, 1.0
value), because a batched QR under ``jit(vmap(init))`` can deadlock jaxlib
0.10.2 on CPU, and the runner vmaps ``init`` over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import spaces

# variance_scaling(s, "fan_in") draws entries of variance s / fan_in, as an
# orthogonal matrix with gain g has (g**2 / fan_in) when fan_in >= fan_out.
HIDDEN_INIT = nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")  # orthogonal(sqrt(2))
POLICY_INIT = nn.initializers.variance_scaling(0.01**2, "fan_in", "truncated_normal")  # orthogonal(0.01)
VALUE_INIT = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")  # orthogonal(1.0)

_LOG_2 = math.log(2.0)
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


class ActionDist(Protocol):
    """What every head returns; shapes are for batch dims ``[...]``."""

    def sample(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(stored_action, log_prob [...])``, one independent sample per batch element."""
        ...

    def log_prob(self, action: jax.Array) -> jax.Array:
        """Log-probability (density for continuous actions) of a stored action, ``[...]``."""
        ...

    def entropy(self) -> jax.Array:
        """``[...]``; for the tanh-Gaussian, the entropy of the Gaussian before squashing."""
        ...

    def log_prob_and_entropy(self, action: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(log_prob(action), entropy())``, sharing what they have in common."""
        ...

    def mode(self) -> jax.Array:
        """The most likely stored action (greedy/evaluation action)."""
        ...

    def to_env(self, action: jax.Array) -> jax.Array:
        """The action to pass to ``env.step``."""
        ...


@struct.dataclass
class CategoricalDist:
    """Categorical over ``A`` actions; stored and env actions are the int32 indices ``[...]``."""

    logits: jax.Array  # [..., A]

    @property
    def distribution(self) -> distrax.Categorical:
        return distrax.Categorical(logits=self.logits)

    def sample(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        action = jax.random.categorical(key, self.logits).astype(jnp.int32)
        return action, self.log_prob(action)

    def log_prob(self, action: jax.Array) -> jax.Array:
        log_probs = jax.nn.log_softmax(self.logits)
        return jnp.take_along_axis(log_probs, jnp.asarray(action, jnp.int32)[..., None], axis=-1)[..., 0]

    def entropy(self) -> jax.Array:
        log_probs = jax.nn.log_softmax(self.logits)
        return -(jnp.exp(log_probs) * log_probs).sum(-1)

    def log_prob_and_entropy(self, action: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Both at once, from one ``log_softmax`` (what a PPO loss needs)."""
        log_probs = jax.nn.log_softmax(self.logits)
        taken = jnp.take_along_axis(log_probs, jnp.asarray(action, jnp.int32)[..., None], axis=-1)[..., 0]
        return taken, -(jnp.exp(log_probs) * log_probs).sum(-1)

    def mode(self) -> jax.Array:
        return jnp.argmax(self.logits, axis=-1).astype(jnp.int32)

    def to_env(self, action: jax.Array) -> jax.Array:
        return action


def _sum_event(x: jax.Array, event_ndim: int) -> jax.Array:
    return x.sum(axis=tuple(range(x.ndim - event_ndim, x.ndim)))


@struct.dataclass
class TanhGaussianDist:
    """Diagonal Gaussian on ``raw [..., *action_shape]``, squashed by tanh and rescaled to ``[low, high]``.

    Stored actions are ``raw``; ``log_prob(raw)`` is the density of the env
    action ``to_env(raw)`` (change of variables), summed over action dims.
    ``entropy()`` is the base Gaussian's: a tanh-Gaussian's has no closed form,
    and the Gaussian's is the usual stand-in for PPO's entropy bonus.
    """

    mean: jax.Array  # [..., *action_shape]
    log_std: jax.Array  # [..., *action_shape], state-independent but broadcast to the batch
    action_shape: tuple[int, ...] = struct.field(pytree_node=False)
    low: tuple[float, ...] = struct.field(pytree_node=False)  # flattened action_shape
    high: tuple[float, ...] = struct.field(pytree_node=False)

    def _bounds(self) -> tuple[jax.Array, jax.Array]:
        low = np.asarray(self.low, np.float64).reshape(self.action_shape)
        high = np.asarray(self.high, np.float64).reshape(self.action_shape)
        return jnp.asarray(low, jnp.float32), jnp.asarray(high, jnp.float32)

    @property
    def distribution(self) -> distrax.Distribution:
        """The same law as a distrax distribution over *env* actions.

        Its ``log_prob`` inverts tanh, which is inaccurate near the bounds: score
        stored ``raw`` actions with :meth:`log_prob` instead.
        """
        low, high = self._bounds()
        event_ndim = len(self.action_shape)
        base = distrax.Independent(distrax.Normal(self.mean, jnp.exp(self.log_std)), event_ndim)
        squash = distrax.Chain(
            [distrax.ScalarAffine(shift=(low + high) / 2, scale=(high - low) / 2), distrax.Tanh()]
        )
        return distrax.Transformed(base, distrax.Block(squash, event_ndim))

    def sample(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        noise = jax.random.normal(key, self.mean.shape, self.mean.dtype)
        raw = self.mean + jnp.exp(self.log_std) * noise
        return raw, self.log_prob(raw)

    def log_prob(self, action: jax.Array) -> jax.Array:
        raw = action
        low, high = self._bounds()
        z = (raw - self.mean) * jnp.exp(-self.log_std)
        normal = -0.5 * z**2 - self.log_std - _HALF_LOG_2PI
        # log(1 - tanh(raw)**2) in a form that neither overflows nor loses
        # precision at large |raw|.
        log_dtanh = 2.0 * (_LOG_2 - raw - jax.nn.softplus(-2.0 * raw))
        log_scale = jnp.log((high - low) / 2)
        return _sum_event(normal - log_dtanh - log_scale, len(self.action_shape))

    def entropy(self) -> jax.Array:
        return _sum_event(0.5 + _HALF_LOG_2PI + self.log_std, len(self.action_shape))

    def log_prob_and_entropy(self, action: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.log_prob(action), self.entropy()

    def mode(self) -> jax.Array:
        return self.mean

    def to_env(self, action: jax.Array) -> jax.Array:
        low, high = self._bounds()
        # The clip only absorbs rounding: tanh is within [-1, 1] already.
        return jnp.clip((low + high) / 2 + (high - low) / 2 * jnp.tanh(action), low, high)


class CategoricalHead(nn.Module):
    """``[..., F]`` -> :class:`CategoricalDist` over ``num_actions`` (one Dense layer to logits).

    Small initial weights (``POLICY_INIT``) make the initial policy nearly uniform.
    """

    num_actions: int

    @nn.compact
    def __call__(self, x: jax.Array) -> CategoricalDist:
        return CategoricalDist(nn.Dense(self.num_actions, kernel_init=POLICY_INIT, name="logits")(x))


def _as_bounds(value: float | Sequence[float] | np.ndarray, shape: tuple[int, ...]) -> tuple[float, ...]:
    """Bounds broadcast to ``shape``, flattened; an already flat tuple of ``prod(shape)`` passes as is."""
    array = np.asarray(value, np.float64)
    if array.ndim == 1 and array.size == math.prod(shape):
        array = array.reshape(shape)
    return tuple(float(v) for v in np.broadcast_to(array, shape).reshape(-1))


class TanhGaussianHead(nn.Module):
    """``[..., F]`` -> :class:`TanhGaussianDist` on actions of ``action_shape`` in ``[low, high]``.

    The mean is a Dense layer with small initial weights (``POLICY_INIT``), so
    the initial env-action mean is the middle of the box; the log-std is one
    state-independent parameter per action dim (param ``log_std``),
    initialised to ``log_std_init`` and not clipped. ``action_shape`` may be
    an int; ``low``/``high`` may be scalars or anything broadcastable to
    ``action_shape``; they are stored as tuples of floats (flattened) to keep
    the module hashable, and must be finite with ``low < high``.
    """

    action_shape: tuple[int, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    log_std_init: float = 0.0

    def __post_init__(self) -> None:
        shape = (self.action_shape,) if isinstance(self.action_shape, int) else tuple(self.action_shape)
        low, high = _as_bounds(self.low, shape), _as_bounds(self.high, shape)
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(np.less(low, high))):
            raise ValueError(
                f"TanhGaussianHead needs finite bounds with low < high, got low={low}, high={high}"
            )
        object.__setattr__(self, "action_shape", shape)
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array) -> TanhGaussianDist:
        mean = nn.Dense(math.prod(self.action_shape), kernel_init=POLICY_INIT, name="mean")(x)
        mean = mean.reshape((*x.shape[:-1], *self.action_shape))
        log_std = self.param("log_std", nn.initializers.constant(self.log_std_init), self.action_shape)
        return TanhGaussianDist(
            mean, jnp.broadcast_to(log_std, mean.shape), self.action_shape, self.low, self.high
        )


def head_for(action_space: spaces.Space, *, log_std_init: float = 0.0) -> nn.Module:
    """The head for a gymnax action space: ``Discrete`` -> categorical, bounded ``Box`` -> tanh-Gaussian."""
    if isinstance(action_space, spaces.Discrete):
        return CategoricalHead(int(action_space.n))
    if isinstance(action_space, spaces.Box):
        shape = tuple(int(d) for d in action_space.shape)
        low, high = _as_bounds(action_space.low, shape), _as_bounds(action_space.high, shape)
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            raise ValueError(f"no head for {action_space!r}: a tanh-Gaussian needs finite bounds")
        return TanhGaussianHead(shape, low, high, log_std_init)
    raise ValueError(
        f"no action head for {action_space!r}: supported are Discrete (categorical) "
        "and Box with finite bounds (tanh-Gaussian)"
    )

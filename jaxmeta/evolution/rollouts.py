"""Episodes of a flat-vector policy, for evolution strategies: what one candidate's fitness is.

ES searches a flat parameter vector (:mod:`jaxmeta.evolution.open_es`). :class:`FlatMLP` is POET's
policy (a tanh MLP, 40-40 hidden units, tanh outputs in ``[-1, 1]``) over that vector, and
:func:`episode_return` plays one episode of a gymnax environment with it: a ``lax.scan`` of
``max_steps`` steps whose rewards stop counting at the first ``done`` (fixed length, so that a
population vmaps). Terrains, tasks and layouts all live in the env params, so one program vmaps over
candidates and over environments.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class FlatMLP(NamedTuple):
    """A tanh MLP ``obs -> action in [-1, 1]^A`` whose weights are one flat vector (weights, then
    biases, layer by layer)."""

    sizes: tuple[int, ...]  # (obs_dim, *hidden, action_dim)

    @property
    def num_params(self) -> int:
        return sum(a * b + b for a, b in zip(self.sizes[:-1], self.sizes[1:], strict=True))

    def init(self, key: jax.Array) -> jax.Array:
        """Normal weights scaled by 1/sqrt(fan_in), zero biases: ``[num_params]``."""
        layers = list(zip(self.sizes[:-1], self.sizes[1:], strict=True))
        parts = []
        for k, (fan_in, fan_out) in zip(jax.random.split(key, len(layers)), layers, strict=True):
            parts += [jax.random.normal(k, (fan_in * fan_out,)) / math.sqrt(fan_in), jnp.zeros(fan_out)]
        return jnp.concatenate(parts)

    def apply(self, flat: jax.Array, obs: jax.Array) -> jax.Array:
        h, offset = obs, 0
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:], strict=True):
            w = flat[offset : offset + fan_in * fan_out].reshape(fan_in, fan_out)
            offset += fan_in * fan_out
            b = flat[offset : offset + fan_out]
            offset += fan_out
            h = jnp.tanh(h @ w + b)
        return h


class Episode(NamedTuple):
    total: jax.Array  # the return, rewards after the first done not counted
    length: jax.Array  # steps until the first done (max_steps if none)
    info: dict[str, jax.Array]  # the env's info at the last counted step


def episode_return(
    env: Any, env_params: Any, policy: FlatMLP, flat: jax.Array, key: jax.Array, max_steps: int
) -> Episode:
    """Play one episode of ``env`` (gymnax API, ``step_env``: no auto-reset) with ``policy`` at ``flat``."""
    reset_key, step_key = jax.random.split(key)
    obs, state = env.reset(reset_key, env_params)

    def step(carry: tuple, k: jax.Array) -> tuple[tuple, dict[str, jax.Array]]:
        obs, state, total, length, done = carry
        next_obs, next_state, reward, terminated, info = env.step_env(
            k, state, policy.apply(flat, obs), env_params
        )
        total = total + jnp.where(done, 0.0, reward)
        length = length + jnp.where(done, 0, 1)
        return (next_obs, next_state, total, length, done | terminated), info

    zero = jnp.zeros((), jnp.float32)
    carry = (obs, state, zero, jnp.zeros((), jnp.int32), jnp.zeros((), bool))
    (_, _, total, length, _), infos = jax.lax.scan(step, carry, jax.random.split(step_key, max_steps))
    last = jax.tree.map(lambda x: x[jnp.maximum(length - 1, 0)], infos)
    return Episode(total, length, last)


def mean_return(
    env: Any,
    env_params: Any,
    policy: FlatMLP,
    flat: jax.Array,
    keys: jax.Array,
    max_steps: int,
    with_params: Any = None,
) -> tuple[jax.Array, Episode]:
    """The mean return of ``flat`` over one episode per key (``keys [E, 2]``); ``with_params(params,
    key) -> params`` may vary the env per episode (e.g. a fresh terrain layout). Returns ``(mean,
    episodes)``."""

    def one(key: jax.Array) -> Episode:
        layout_key, play_key = jax.random.split(key)
        params = env_params if with_params is None else with_params(env_params, layout_key)
        return episode_return(env, params, policy, flat, play_key, max_steps)

    episodes = jax.vmap(one)(keys)
    return episodes.total.mean(), episodes


__all__ = ["Episode", "FlatMLP", "episode_return", "mean_return"]


# ----------------------------------------------------------------------------- ES on parameterised terrains
# An environment with POET's terrain interface (``Walker-v0``) carries its terrain as an encoding vector
# and its layout as a seed in the env params: ``env.with_encoding(params, encoding, seed)``.
def on_terrain(env: Any, env_params: Any, encoding: jax.Array, key: jax.Array) -> Any:
    """The env params of terrain ``encoding`` with a layout drawn from ``key``."""
    seed = jax.random.randint(key, (), 0, jnp.iinfo(jnp.int32).max)
    return env.with_encoding(env_params, encoding, seed)


def evaluate_on_terrain(
    env: Any,
    env_params: Any,
    policy: FlatMLP,
    flat: jax.Array,
    encoding: jax.Array,
    key: jax.Array,
    episodes: int,
    max_steps: int,
) -> tuple[jax.Array, Episode]:
    """The mean return of ``flat`` over ``episodes`` fresh layouts of terrain ``encoding``."""
    return mean_return(
        env,
        env_params,
        policy,
        flat,
        jax.random.split(key, episodes),
        max_steps,
        with_params=lambda params, k: on_terrain(env, params, encoding, k),
    )


def population_fitness(
    env: Any,
    env_params: Any,
    policy: FlatMLP,
    population: jax.Array,
    encoding: jax.Array,
    key: jax.Array,
    max_steps: int,
) -> jax.Array:
    """Returns of an OpenES population ``[P, D]`` (rows ``i`` and ``P/2 + i`` a mirrored pair) on terrain
    ``encoding``: one episode each, a mirrored pair on the same layout and start (their difference is
    the signal; different pairs see different layouts, as POET's workers draw theirs)."""
    pair_keys = jax.random.split(key, population.shape[0] // 2)
    keys = jnp.concatenate([pair_keys, pair_keys])

    def one(flat: jax.Array, k: jax.Array) -> jax.Array:
        layout_key, play_key = jax.random.split(k)
        params = on_terrain(env, env_params, encoding, layout_key)
        return episode_return(env, params, policy, flat, play_key, max_steps).total

    return jax.vmap(one)(population, keys)


__all__ += ["evaluate_on_terrain", "on_terrain", "population_fitness"]


def episode_states(
    env: Any, env_params: Any, policy: FlatMLP, flat: jax.Array, key: jax.Array, max_steps: int
) -> tuple[Any, jax.Array, jax.Array]:
    """The states of one episode for pictures: ``(states [T + 1], rewards [T], done [T])`` (``done``:
    the episode had ended at or before that step)."""
    reset_key, step_key = jax.random.split(key)
    obs, state = env.reset(reset_key, env_params)

    def step(carry: tuple, k: jax.Array) -> tuple[tuple, tuple]:
        obs, state, done = carry
        next_obs, next_state, reward, terminated, _ = env.step_env(
            k, state, policy.apply(flat, obs), env_params
        )
        done = done | terminated
        return (next_obs, next_state, done), (next_state, reward, done)

    _, (states, rewards, done) = jax.lax.scan(
        step, (obs, state, jnp.zeros((), bool)), jax.random.split(step_key, max_steps)
    )
    states = jax.tree.map(lambda first, rest: jnp.concatenate([first[None], rest]), state, states)
    return states, rewards, done


def counted_return(rewards: jax.Array, done: jax.Array) -> jax.Array:
    """The return of :func:`episode_states`' rewards: up to and including the step that ended it."""
    before = jnp.concatenate([jnp.zeros((1,), bool), done[:-1]])
    return jnp.where(before, 0.0, rewards).sum()


__all__ += ["counted_return", "episode_states"]


def terrain_label(encoding: Any, short: bool = True) -> str:
    """``rough 1.2, stumps 0.0-0.4, gaps 0.4-1.2`` for a ``Walker-v0`` encoding (POET's units: 0.3 m);
    ``short=False`` spells out ``roughness`` (tables; the short form fits a GIF caption)."""
    r, s0, s1, g0, g1 = (float(x) for x in encoding)
    rough = "rough" if short else "roughness"
    return f"{rough} {r:.1f}, stumps {s0:.1f}-{s1:.1f}, gaps {g0:.1f}-{g1:.1f}"


def walkers_gif(
    env: Any,
    env_params: Any,
    policy: FlatMLP,
    agents: Any,
    terrains: Any,
    layouts: list[int],
    max_steps: int,
    title: str,
    path: Any,
) -> Any:
    """A GIF (host side) of walkers one above the other: agent ``i`` (a flat vector) on layout
    ``PRNGKey(layouts[i])`` of terrain ``i``, each film labelled with its terrain and return and
    holding its last frame until the longest ends; every frame captioned ``title, t = ... s``."""
    from envs_jax import walker_render
    from jaxmeta.plots import write_gif

    every = 2  # frames: every second step
    play = jax.jit(lambda flat, params, key: episode_states(env, params, policy, flat, key, max_steps))
    films = []
    for flat, encoding, layout in zip(agents, terrains, layouts, strict=True):
        key = jax.random.PRNGKey(layout)
        states, rewards, done = play(flat, on_terrain(env, env_params, encoding, key), key)
        label = f"{terrain_label(encoding)}  return {float(counted_return(rewards, done)):.0f}"
        films.append(walker_render.film(env, states, done, label, every=every))
    frames = walker_render.stack(films)
    step_s = every * float(env_params.dt)
    captions = [f"{title}, t = {step_s * t:4.1f} s" for t in range(len(frames))]
    return write_gif(frames, captions, path, fps=12)


__all__ += ["terrain_label", "walkers_gif"]

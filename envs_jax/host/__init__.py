"""Environments that run on the host, stepped from jitted code through ``io_callback``.

:class:`HostEnv` adapts a batch of Python environments (:class:`HostBatch`) to
the batched interface of ``envs_jax.vector``; ``toy.NumpyChain`` is a tiny
numpy environment that exercises the path without optional installs.
"""

from envs_jax.host.adapter import MAX_BATCHES, HostBatch, HostEnv, HostEnvError, HostEnvVmapError, HostState
from envs_jax.host.toy import NumpyChain, make_numpy_chain

__all__ = [
    "MAX_BATCHES",
    "HostBatch",
    "HostEnv",
    "HostEnvError",
    "HostEnvVmapError",
    "HostState",
    "NumpyChain",
    "make_numpy_chain",
]

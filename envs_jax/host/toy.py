"""A tiny numpy environment run on the host, to test the host-environment path end to end.

``NumpyChain``: an agent on a chain of ``length`` cells starts in cell 0;
action 1 moves right, 0 left (the left end holds it in place). Reaching the
last cell ends the episode with reward +1; every other step costs 0.01; the
time limit ``max_steps`` truncates. The observation is the one-hot cell,
float32. Plain numpy, a whole batch at once: what a Procgen or Miniworld
adapter looks like to :class:`envs_jax.host.HostEnv`, without their installs.
The state (cell and time of each env) snapshots into 8 bytes per env, so
runs on it resume exactly.
"""

from __future__ import annotations

import numpy as np
from flax import struct
from gymnax.environments import spaces

STEP_COST = 0.01


class NumpyChain:
    """``num_envs`` chains stepped together; see the module docstring."""

    def __init__(self, num_envs: int, length: int = 6, max_steps: int = 20) -> None:
        if length < 2 or max_steps < 1:
            raise ValueError(f"NumpyChain needs length >= 2 and max_steps >= 1, got {length}, {max_steps}")
        self.num_envs, self.length, self.max_steps = num_envs, length, max_steps
        self.cell = np.zeros(num_envs, np.int32)
        self.time = np.zeros(num_envs, np.int32)

    def observe(self) -> np.ndarray:
        return np.eye(self.length, dtype=np.float32)[self.cell]

    def reset(self, seeds: np.ndarray, mask: np.ndarray, tasks: object = None) -> np.ndarray:
        """Start over in cell 0 where ``mask [N]``; return every one-hot cell ``[N, length]`` float32.

        The chain is deterministic and has a single task: ``seeds`` and ``tasks`` are ignored."""
        self.cell = np.where(mask, 0, self.cell).astype(np.int32)
        self.time = np.where(mask, 0, self.time).astype(np.int32)
        return self.observe()

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        move = np.where(np.asarray(actions) == 1, 1, -1)
        self.cell = np.clip(self.cell + move, 0, self.length - 1).astype(np.int32)
        self.time = self.time + 1
        terminated = self.cell == self.length - 1
        reward = np.where(terminated, 1.0, -STEP_COST).astype(np.float32)
        truncated = (self.time >= self.max_steps) & ~terminated
        return self.observe(), reward, terminated, truncated

    def get_state(self) -> np.ndarray:
        return np.stack([self.cell, self.time], axis=1).astype("<i4").view(np.uint8).reshape(self.num_envs, 8)

    def set_state(self, snapshot: np.ndarray) -> None:
        cells_times = np.ascontiguousarray(snapshot, np.uint8).view("<i4").reshape(self.num_envs, 2)
        self.cell, self.time = cells_times[:, 0].copy(), cells_times[:, 1].copy()


@struct.dataclass
class ChainParams:
    """The chain's fixed settings, where gymnax keeps env params (static: the host batch owns them)."""

    length: int = struct.field(pytree_node=False, default=6)
    max_steps_in_episode: int = struct.field(pytree_node=False, default=20)


def make_numpy_chain(length: int = 6, max_steps: int = 20) -> object:
    """The chain as a :class:`envs_jax.host.HostEnv` (``envs_jax.make("NumpyChain-host-v0", ...)``)."""
    from envs_jax.host.adapter import HostEnv

    return HostEnv(
        name="NumpyChain-host-v0",
        make_batch=lambda num_envs: NumpyChain(num_envs, length, max_steps),
        observation_space=spaces.Box(0.0, 1.0, (length,), np.float32),
        action_space=spaces.Discrete(2),
        params=ChainParams(length, max_steps),
        snapshot_size=8,
    )


__all__ = ["ChainParams", "NumpyChain", "make_numpy_chain"]

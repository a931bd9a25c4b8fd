"""Procgen games (Cobbe et al. 2020) on the host, one level seed per task.

Chen & Agrawal (2020, sec. 3.3) meta-train on Procgen's CoinRun, Climber and
Ninja with 200 training levels and test on 100 held-out levels; a trial is
several episodes of the same level. Here a *task* is a level seed (an int32
scalar, so a task set is an int32 array ``[N]``) and :class:`ProcgenBatch`
is the :class:`envs_jax.host.HostBatch` that plays it: env ``i`` is its own
``ProcgenGym3Env(num=1, num_levels=1, start_level=level)``, because one
procgen vector env plays one level range for all its envs.

Facts measured with procgen-mirror 0.10.7 (timings on a busy 2-core machine,
so they are rough):

* With ``num_levels=1`` every episode of a level is the same: the layout and
  the in-episode randomness are seeded by the level seed at each episode
  start (``rand_seed`` only picks levels from a range, so it does not
  matter here). Two episodes of one level under the same actions are
  identical, frame for frame.
* Procgen ends episodes itself (death, success, or its own time limit,
  1000 steps for CoinRun, Climber and Ninja; 500 for Maze and Leaper, up to
  6000 for BigFish) and resets at once: the observation after the last step
  is the first frame of the next episode, with ``first=True`` and the last
  step's reward. It never shows the terminal frame.
* Creating an env costs 0.7-1.2 ms (after the first in a process, which
  loads the assets in about 0.3 s), the time of 10-20 steps; a step costs
  about 0.07 ms; ``get_state`` 0.12-0.25 ms and ``set_state`` 0.16-0.28 ms
  for a 38 KB CoinRun state (2-4 steps' worth).
* A batch of 8 CoinRun envs on 8 levels: about 3900 batch steps/s stepping
  the procgen envs in a Python loop, 3200/s through :class:`ProcgenBatch`
  (``step`` and ``reset``), 1000/s through :class:`HostEnv` in a jitted
  ``lax.scan`` (two ordered callbacks a step: ``step`` and ``reset_where``),
  330/s with snapshots on.

No procgen import happens when this module is imported: ``make_procgen``
and :class:`ProcgenBatch` import it, and a missing install raises
``ModuleNotFoundError`` naming the command that installs it.
"""

from __future__ import annotations

import contextlib
import io
import struct as pystruct
import warnings
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import spaces

from envs_jax.registry import EnvEntry, Setting

INSTALL = 'pip install -e ".[procgen]" && pip install --no-deps procgen-mirror==0.10.7 gym3==0.3.3'

#: Procgen's 16 games; any of them may be played.
GAMES = (
    "bigfish",
    "bossfight",
    "caveflyer",
    "chaser",
    "climber",
    "coinrun",
    "dodgeball",
    "fruitbot",
    "heist",
    "jumper",
    "leaper",
    "maze",
    "miner",
    "ninja",
    "plunder",
    "starpilot",
)
#: The games of Chen & Agrawal (2020), the ones the project's experiments use.
PAPER_GAMES = ("coinrun", "climber", "ninja")

#: Distribution modes and the games that support them (None: every game). Procgen aborts the whole
#: process (a C ``fassert``) on a game that does not support its mode, so this is checked first.
#: ("exploration" is left out: it fixes the level, which here is the task.)
MODES: dict[str, frozenset[str] | None] = {
    "easy": None,
    "hard": None,
    "extreme": frozenset({"chaser", "dodgeball", "leaper", "starpilot"}),
    "memory": frozenset({"caveflyer", "dodgeball", "heist", "jumper", "maze", "miner"}),
}

NUM_ACTIONS = 15  # procgen's fixed action set (9 moves, 6 special keys), the same for every game
FRAME = 64  # procgen renders 64 x 64 RGB frames
RESOLUTIONS = (8, 16, 32, 64)  # divisors of 64: each pixel averages a whole block of frame pixels
MAX_LEVEL = 2**31 - 2  # procgen's level seeds are int32 and it needs start_level + 1 to fit as well

#: The largest procgen state (``get_state`` bytes) a snapshot holds, per game. Procgen states vary in
#: size: entities come and go (CoinRun's enemies leave a trail of short-lived entities) and the
#: random generators are stored as text. Measured with random actions, 1000 steps on each of many
#: random levels, every mode the game has (``STATE_MAXIMA_SEEN``): CoinRun 1800 levels a mode,
#: its bound from procgen's level generator (at most about 40 enemies with ~9 trail entities each,
#: ~85 KB) rounded up; Climber and Ninja 1800 levels a mode, 1.5 x the largest seen; the other
#: games 150 levels a mode, 2 x the largest seen (rougher: an agent that lives long in a game that
#: keeps spawning, e.g. BigFish or StarPilot, may see more). All rounded up to 4 KiB. A state
#: over its bound raises a ``ValueError`` naming this table.
STATE_BYTES: dict[str, int] = {
    "bigfish": 48 * 1024,
    "bossfight": 96 * 1024,
    "caveflyer": 88 * 1024,
    "chaser": 52 * 1024,
    "climber": 40 * 1024,
    "coinrun": 96 * 1024,
    "dodgeball": 64 * 1024,
    "fruitbot": 72 * 1024,
    "heist": 48 * 1024,
    "jumper": 60 * 1024,
    "leaper": 68 * 1024,
    "maze": 48 * 1024,
    "miner": 52 * 1024,
    "ninja": 56 * 1024,
    "plunder": 52 * 1024,
    "starpilot": 72 * 1024,
}
#: The largest states seen in those measurements (bytes), for the record.
STATE_MAXIMA_SEEN: dict[str, int] = {
    "bigfish": 24366,
    "bossfight": 47564,
    "caveflyer": 44596,
    "chaser": 26245,
    "climber": 27545,
    "coinrun": 61119,
    "dodgeball": 32180,
    "fruitbot": 36007,
    "heist": 23934,
    "jumper": 29926,
    "leaper": 32838,
    "maze": 24406,
    "miner": 25583,
    "ninja": 37853,
    "plunder": 24629,
    "starpilot": 35327,
}

#: A snapshot row: four little-endian int32 (procgen state length, level, step in the episode,
#: whether the env waits at the start of an unplayed episode), then the state, then zeros.
HEADER_BYTES = 16


def snapshot_size(game: str) -> int:
    """Bytes per env of a :class:`ProcgenBatch` snapshot of ``game`` (header + largest state)."""
    return HEADER_BYTES + STATE_BYTES[_checked_game(game)]


def _checked_game(game: Any) -> str:
    if game not in GAMES:
        raise ValueError(f"unknown Procgen game {game!r}; the games are: {', '.join(GAMES)}")
    return game


def _check_mode(game: str, distribution_mode: Any) -> str:
    if distribution_mode not in MODES:
        raise ValueError(
            f"unknown Procgen distribution_mode {distribution_mode!r}; the modes are: {', '.join(MODES)}"
        )
    games = MODES[distribution_mode]
    if games is not None and game not in games:
        raise ValueError(
            f"Procgen's {game} has no {distribution_mode!r} mode (only {', '.join(sorted(games))} have it)"
        )
    return distribution_mode


def _import_procgen() -> Any:
    """``procgen.ProcgenGym3Env``, imported quietly (old gym prints a notice to stderr on import)."""
    try:
        with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from procgen import ProcgenGym3Env
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            f"Procgen is not installed ({err.name} is missing); install it with: {INSTALL}"
        ) from err
    return ProcgenGym3Env


def level_env(game: str, level: int, distribution_mode: str = "easy", num: int = 1) -> Any:
    """A ``ProcgenGym3Env`` of ``num`` envs all playing ``level`` of ``game`` (every episode of the
    level the same), stepping in the calling thread (one level needs no thread pool)."""
    return _import_procgen()(
        num=num,
        env_name=game,
        num_levels=1,
        start_level=level,
        distribution_mode=distribution_mode,
        render_mode=None,
        rand_seed=0,  # irrelevant with num_levels=1 (it only draws levels from the range)
        num_threads=0,
    )


def parse_state_header(state: bytes) -> dict[str, Any]:
    """The leading fields of a procgen state (``get_state`` bytes, serialisation version 0).

    Returns ``game``, ``time_limit`` (procgen's own episode limit), ``level``, ``time`` (steps
    into the current episode) and ``end`` (the byte offset after them, where the game's own
    fields begin: ``procgen_expert.parse_state`` reads on from there). Used to read the time
    limit off the game itself and to refuse a foreign snapshot before procgen's ``set_state``,
    which aborts the process on a mismatch.
    """
    offset = 0

    def ints(count: int) -> tuple[int, ...]:
        nonlocal offset
        values = pystruct.unpack_from(f"<{count}i", state, offset)
        offset += 4 * count
        return values

    def text() -> bytes:
        nonlocal offset
        (size,) = ints(1)
        if not 0 <= size <= len(state) - offset:
            raise ValueError("not a procgen state")
        offset += size
        return state[offset - size : offset]

    try:
        (version,) = ints(1)
        if version != 0:
            raise ValueError(f"procgen state version {version}, expected 0")
        game = text().decode("ascii")
        ints(12 + 5)  # render options; grid step, level range, game type, env index
        for _ in range(2):  # the level and step random generators: a flag, then the state as text
            ints(1)
            text()
        ints(4)  # last reward (float bits), done, level complete, action
        (time_limit,) = ints(1)
        level, _, _, _, _, _, _, _, time = ints(9)
    except (pystruct.error, UnicodeDecodeError) as err:
        raise ValueError(f"not a procgen state ({err})") from None
    return {"game": game, "time_limit": time_limit, "level": level, "time": time, "end": offset}


def downsample(frames: np.ndarray, resolution: int) -> np.ndarray:
    """``[..., 64, 64, 3]`` uint8 frames averaged over ``64 // resolution`` squared blocks, rounded
    half up: ``[..., resolution, resolution, 3]`` uint8.

    Area averaging (not striding) keeps every pixel's contribution, so small sprites (coins, stars)
    do not vanish; integer arithmetic makes it exact and the same on every machine.
    """
    if resolution == FRAME:
        return frames
    factor = FRAME // resolution
    lead = frames.shape[:-3]
    blocks = frames.reshape(*lead, resolution, factor, resolution, factor, 3)
    area = factor * factor  # at most 64: sums fit uint16 (numpy's sum over strided axes is 5x slower)
    total = np.full((*lead, resolution, resolution, 3), area // 2, np.uint16)
    for dy in range(factor):
        for dx in range(factor):
            total += blocks[..., :, dy, :, dx, :]
    return (total // area).astype(np.uint8)


class ProcgenBatch:
    """``num_envs`` Procgen envs, env ``i`` playing level ``tasks[i]``: a :class:`HostBatch`.

    * ``reset(seeds, mask, tasks)``: where ``mask``, env ``i`` starts an episode of level
      ``tasks[i]`` (int, ``[0, 2**31 - 2]``). Its ``ProcgenGym3Env`` is created only when its level
      changes (0.7-1.2 ms); a reset of the same level hands out the first frame procgen already
      produced when the last episode ended (free, and exactly the level's start), or, when the
      episode was cut by ``max_steps``, forces procgen's reset (action ``-1``, one step's cost).
      Without tasks, env ``i`` plays level ``start + seeds[i] % count`` of ``default_levels``.
    * ``step(actions [N])``: ``(obs, reward [N] f32, terminated [N], truncated [N])`` of the step
      taken, no reset: an episode procgen ended is ``terminated`` unless it reached procgen's own
      time limit without completing the level (``truncated``; procgen does not say why an episode
      ended, so a death on that very step counts as truncated too), or ``truncated`` at
      ``max_steps``; the two are exclusive.
      Procgen shows no terminal frame: the ``obs`` of a step where procgen ended the episode is the
      next episode's first frame (what every procgen agent sees); cut episodes with a ``max_steps``
      below procgen's limit to get true final frames for bootstrapping a truncation.
    * ``obs``: uint8 ``[N, resolution, resolution, 3]`` (see :func:`downsample`).
    * ``get_state() -> [N, snapshot_size]`` uint8 and ``set_state`` when ``snapshots``: a row is
      :data:`HEADER_BYTES` of header, the procgen state, zeros up to the game's fixed size.
    """

    def __init__(
        self,
        num_envs: int,
        game: str = "coinrun",
        distribution_mode: str = "easy",
        resolution: int = FRAME,
        max_steps: int | None = None,
        snapshots: bool = False,
        default_levels: tuple[int, int] = (0, 200),
    ) -> None:
        self.game = _checked_game(game)
        self.distribution_mode = _check_mode(self.game, distribution_mode)
        if resolution not in RESOLUTIONS:
            raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {resolution!r}")
        if max_steps is not None and max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 (or None: procgen's own limit), got {max_steps!r}")
        start, count = default_levels
        if count < 1 or start < 0 or start + count - 1 > MAX_LEVEL:
            raise ValueError(f"default_levels must be (start >= 0, count >= 1) within [0, {MAX_LEVEL}]")
        _import_procgen()  # fails here, naming the install command, when procgen is missing
        self.num_envs = int(num_envs)
        self.resolution = resolution
        self.max_steps = max_steps
        self.snapshot_size = snapshot_size(self.game) if snapshots else 0
        self.default_levels = (int(start), int(count))
        self.time_limit = 0  # procgen's own episode limit, read off the first env's state
        self._envs: list[Any] = [None] * self.num_envs
        self._levels = np.full(self.num_envs, -1, np.int64)
        self._time = np.zeros(self.num_envs, np.int64)  # steps into the current episode
        self._fresh = np.zeros(self.num_envs, bool)  # at the start of an episode not played yet
        self._frames = np.zeros((self.num_envs, FRAME, FRAME, 3), np.uint8)  # a step's raw frames
        self._obs = np.zeros((self.num_envs, resolution, resolution, 3), np.uint8)  # what observe shows
        # get_state's rows, re-serialised only for the envs that changed since (a reset_where that
        # resets few envs then costs few procgen get_states).
        self._rows = np.zeros((self.num_envs, self.snapshot_size), np.uint8)
        self._dirty = np.ones(self.num_envs, bool)

    # ------------------------------------------------------------------ the HostBatch interface
    def reset(self, seeds: np.ndarray, mask: np.ndarray, tasks: Any = None) -> np.ndarray:
        """New episodes where ``mask [N]`` (levels ``tasks [N]``); every env's observation."""
        mask = np.asarray(mask, bool).reshape(self.num_envs)
        levels = self._levels_for(seeds, tasks)
        for i in np.flatnonzero(mask):
            level = int(levels[i])
            if self._envs[i] is None or self._levels[i] != level:
                self._create(i, level)
            elif not self._fresh[i]:  # cut short by max_steps: procgen's forced reset
                env = self._envs[i]
                env.act(np.array([-1], np.int32))
                self._show(i, env.observe()[1]["rgb"][0])
            self._time[i] = 0
            self._fresh[i] = True
            self._dirty[i] = True
        return self.observe()

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One step of every env: ``(obs, reward, terminated, truncated)``; see the class docstring."""
        actions = np.asarray(actions).reshape(self.num_envs)
        if not np.issubdtype(actions.dtype, np.integer) or ((actions < 0) | (actions >= NUM_ACTIONS)).any():
            raise ValueError(f"Procgen actions are integers in [0, {NUM_ACTIONS}), got {actions}")
        reward = np.zeros(self.num_envs, np.float32)
        terminated = np.zeros(self.num_envs, bool)
        truncated = np.zeros(self.num_envs, bool)
        for i, env in enumerate(self._envs):
            if env is None:
                raise RuntimeError(f"Procgen env {i} was stepped before its first reset")
            env.act(actions[i : i + 1].astype(np.int32))
            rew, obs, first = env.observe()
            self._frames[i] = obs["rgb"][0]  # downsampled for the whole batch at once, below
            reward[i] = rew[0]
            self._time[i] += 1
            if first[0]:  # procgen ended the episode and is already at the next one's start
                complete = bool(env.get_info()[0]["prev_level_complete"])
                truncated[i] = not complete and self._time[i] >= self.time_limit
                terminated[i] = not truncated[i]
                self._fresh[i] = True
            else:
                truncated[i] = self.max_steps is not None and self._time[i] >= self.max_steps
                self._fresh[i] = False
        self._obs[:] = downsample(self._frames, self.resolution)
        self._dirty[:] = True
        return self.observe(), reward, terminated, truncated

    def observe(self) -> np.ndarray:
        """Every env's current observation, ``[N, resolution, resolution, 3]`` uint8."""
        return self._obs.copy()

    def get_state(self) -> np.ndarray:
        """``[N, snapshot_size]`` uint8: each env's level, episode step and procgen state."""
        if not self.snapshot_size:
            raise RuntimeError("this ProcgenBatch was made without snapshots")
        limit = self.snapshot_size - HEADER_BYTES
        rows = self._rows
        for i in np.flatnonzero(self._dirty):
            env = self._envs[i]
            rows[i] = 0
            if env is None:
                continue  # never reset: an all-zero row (length 0)
            state = env.callmethod("get_state")[0]
            if len(state) > limit:
                raise ValueError(
                    f"a Procgen {self.game} state of {len(state)} bytes exceeds the fixed snapshot size of "
                    f"{limit} bytes (STATE_BYTES[{self.game!r}] in envs_jax/host/procgen.py); raise it"
                )
            header = np.array([len(state), self._levels[i], self._time[i], self._fresh[i]], "<i4")
            rows[i, :HEADER_BYTES] = header.view(np.uint8)
            rows[i, HEADER_BYTES : HEADER_BYTES + len(state)] = np.frombuffer(state, np.uint8)
        self._dirty[:] = False
        return rows.copy()

    def set_state(self, snapshot: np.ndarray) -> None:
        """Restore every env from ``get_state``'s rows (envs created as their levels need)."""
        if not self.snapshot_size:
            raise RuntimeError("this ProcgenBatch was made without snapshots")
        rows = np.ascontiguousarray(snapshot, np.uint8).reshape(self.num_envs, self.snapshot_size)
        for i, row in enumerate(rows):
            length, level, time, fresh = (int(v) for v in row[:HEADER_BYTES].view("<i4"))
            if length == 0:
                self._close(i)
                continue
            if not 0 < length <= self.snapshot_size - HEADER_BYTES:
                raise ValueError(f"snapshot row {i} is not a Procgen {self.game} snapshot (length {length})")
            state = row[HEADER_BYTES : HEADER_BYTES + length].tobytes()
            header = parse_state_header(state)
            if header["game"] != self.game or header["level"] != level:
                raise ValueError(
                    f"snapshot row {i} holds {header['game']} level {header['level']}, not {self.game} "
                    f"level {level}"
                )
            if self._envs[i] is None or self._levels[i] != level:
                self._create(i, level)
            env = self._envs[i]
            env.callmethod("set_state", [state])
            self._show(i, env.observe()[1]["rgb"][0])
            self._time[i], self._fresh[i] = time, bool(fresh)
            self._dirty[i] = True

    def close(self) -> None:
        """Free every procgen env now (they are freed when collected otherwise)."""
        for i in range(self.num_envs):
            self._close(i)

    # ------------------------------------------------------------------ helpers
    def _levels_for(self, seeds: np.ndarray, tasks: Any) -> np.ndarray:
        if tasks is None:
            start, count = self.default_levels
            return start + np.asarray(seeds, np.int64).reshape(self.num_envs) % count
        leaves = jax.tree.leaves(tasks)
        if len(leaves) != 1:
            raise ValueError(f"a Procgen task is one level seed; got a task pytree of {len(leaves)} leaves")
        levels = np.asarray(leaves[0])
        if levels.shape != (self.num_envs,) or not np.issubdtype(levels.dtype, np.integer):
            raise ValueError(
                f"Procgen tasks are integer level seeds [{self.num_envs}], got {levels.dtype} {levels.shape}"
            )
        if ((levels < 0) | (levels > MAX_LEVEL)).any():
            raise ValueError(f"Procgen level seeds must lie in [0, {MAX_LEVEL}], got {levels}")
        return levels.astype(np.int64)

    def _create(self, i: int, level: int) -> None:
        self._close(i)
        env = level_env(self.game, level, self.distribution_mode)
        if not self.time_limit:
            self.time_limit = parse_state_header(env.callmethod("get_state")[0])["time_limit"]
        self._envs[i] = env
        self._levels[i] = level
        self._show(i, env.observe()[1]["rgb"][0])

    def _show(self, i: int, frame: np.ndarray) -> None:
        """Env ``i``'s observation from its 64 x 64 frame."""
        self._obs[i] = downsample(frame, self.resolution)

    def _close(self, i: int) -> None:
        if self._envs[i] is not None:
            self._envs[i].close()
        self._envs[i] = None
        self._levels[i] = -1
        self._time[i] = 0
        self._fresh[i] = False
        self._dirty[i] = True


# ----------------------------------------------------------------------------- the JAX side
@struct.dataclass
class ProcgenParams:
    """Procgen's settings where gymnax keeps env params (static: the host batch owns the game).

    ``max_steps_in_episode`` is the episode limit in force (``max_steps`` or procgen's own);
    the level ranges define the training distribution (``sample_task``) and the task sets.
    """

    game: str = struct.field(pytree_node=False, default="coinrun")
    distribution_mode: str = struct.field(pytree_node=False, default="easy")
    max_steps_in_episode: int = struct.field(pytree_node=False, default=1000)
    train_levels: int = struct.field(pytree_node=False, default=0)
    num_train_levels: int = struct.field(pytree_node=False, default=200)
    test_levels: int = struct.field(pytree_node=False, default=200)
    num_test_levels: int = struct.field(pytree_node=False, default=100)


def sample_level(key: jax.Array, params: ProcgenParams) -> jax.Array:
    """A level seed drawn uniformly from the training range (int32 scalar)."""
    start = params.train_levels
    return jax.random.randint(key, (), start, start + params.num_train_levels, dtype=jnp.int32)


def make_procgen(
    game: str = "coinrun",
    distribution_mode: str = "easy",
    resolution: int = FRAME,
    max_steps: int | None = None,
    snapshots: bool = False,
    train_levels: int = 0,
    num_train_levels: int = 200,
    test_levels: int = 200,
    num_test_levels: int = 100,
) -> Any:
    """A Procgen game as a :class:`envs_jax.host.HostEnv` whose tasks are level seeds.

    Observations are uint8 ``[resolution, resolution, 3]``, 15 discrete actions. ``max_steps``
    cuts episodes earlier than procgen's own limit (``None``: procgen's, 1000 steps for CoinRun,
    Climber and Ninja). ``snapshots`` carries each env's procgen state in the JAX state after
    every call, so checkpoints resume exactly; it is off by default because it costs a
    ``get_state`` per env per step (0.12-0.25 ms, a few steps' worth) and copies the fixed
    snapshot (``snapshot_size(game)`` bytes per env, 96 KiB for CoinRun) through every callback:
    a jitted rollout of 8 CoinRun envs ran about 3 x slower with them (330 against 1000 batch
    steps/s). Without snapshots a resumed run restarts its envs, on training levels picked by
    seed until their next reset hands them their tasks again.
    ``sample_task`` draws a level from the training range; :func:`task_sets` gives the fixed
    level sets. CoinRun, Ninja and Climber get ``expert_action`` (labels for behaviour cloning:
    ``envs_jax.host.procgen_expert``'s search over saved states, built on first use). Builds one
    env at once to read procgen's time limit (and to fail early when procgen is missing:
    ``ModuleNotFoundError`` naming the install command).
    """
    from envs_jax.host.adapter import HostEnv

    game = _checked_game(game)
    distribution_mode = _check_mode(game, distribution_mode)
    check_settings(
        {
            "resolution": resolution,
            "max_steps": max_steps,
            "train_levels": train_levels,
            "num_train_levels": num_train_levels,
            "test_levels": test_levels,
            "num_test_levels": num_test_levels,
        }
    )
    probe = ProcgenBatch(1, game, distribution_mode, FRAME)  # raises if procgen is missing
    probe.reset(np.zeros(1, np.uint32), np.ones(1, bool), np.zeros(1, np.int32))
    time_limit = probe.time_limit
    probe.close()
    params = ProcgenParams(
        game=game,
        distribution_mode=distribution_mode,
        max_steps_in_episode=min(max_steps, time_limit) if max_steps else time_limit,
        train_levels=train_levels,
        num_train_levels=num_train_levels,
        test_levels=test_levels,
        num_test_levels=num_test_levels,
    )
    env = HostEnv(
        name=f"Procgen-v0 ({game}, {distribution_mode})",
        make_batch=lambda num_envs: ProcgenBatch(
            num_envs,
            game,
            distribution_mode,
            resolution,
            max_steps,
            snapshots,
            default_levels=(train_levels, num_train_levels),
        ),
        observation_space=spaces.Box(0, 255, (resolution, resolution, 3), jnp.uint8),
        action_space=spaces.Discrete(NUM_ACTIONS),
        params=params,
        snapshot_size=snapshot_size(game) if snapshots else 0,
        sample_task=sample_level,
    )
    from envs_jax.host import procgen_expert  # imports this module: here, not at the top

    if game in procgen_expert.GAMES:  # the search expert, for the imitation methods' labels
        procgen_expert.install_expert(env)
    return env


# ----------------------------------------------------------------------------- task sets and the registry
def _ranges_text(values: Mapping[str, Any]) -> tuple[str, str]:
    train = (values["train_levels"], values["train_levels"] + values["num_train_levels"])
    test = (values["test_levels"], values["test_levels"] + values["num_test_levels"])
    return f"[{train[0]}, {train[1]})", f"[{test[0]}, {test[1]})"


def check_settings(values: Mapping[str, Any]) -> None:
    """``ValueError`` for settings that are each allowed but not together: overlapping training and
    held-out level ranges, a range past the largest level seed, a game without that mode."""
    if "game" in values:
        game = _checked_game(values["game"])
        if "distribution_mode" in values:
            _check_mode(game, values["distribution_mode"])
    if values.get("resolution", FRAME) not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {values['resolution']!r}")
    for name in ("train_levels", "num_train_levels", "test_levels", "num_test_levels"):
        value = values[name]
        low = 1 if name.startswith("num") else 0
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    train, test = _ranges_text(values)
    for name, first, count, text in (
        ("train_levels", values["train_levels"], values["num_train_levels"], train),
        ("test_levels", values["test_levels"], values["num_test_levels"], test),
    ):
        if first + count - 1 > MAX_LEVEL:
            raise ValueError(f"{name}: the level range {text} runs past the largest level seed {MAX_LEVEL}")
    train_end = values["train_levels"] + values["num_train_levels"]
    test_end = values["test_levels"] + values["num_test_levels"]
    if values["train_levels"] < test_end and values["test_levels"] < train_end:
        raise ValueError(
            f"test_levels: the training levels {train} and the held-out levels {test} overlap: held-out "
            "levels must never be trained on (move test_levels past the training range)"
        )


def _first_levels(kind: str, setting: str, first: int, available: int, wanted: int) -> jax.Array:
    if wanted > available:
        raise ValueError(
            f"the run asks for {wanted} {kind} tasks but Procgen has {available} {kind} levels "
            f"({setting}={available}): raise {setting} or ask for fewer tasks"
        )
    return jnp.arange(first, first + wanted, dtype=jnp.int32)


def task_sets(
    env: Any, params: ProcgenParams, key: jax.Array, num_train: int, num_test: int
) -> tuple[jax.Array, jax.Array]:
    """The fixed level sets ``(train [num_train], test [num_test])`` int32: the first levels of the
    training and held-out ranges (the paper's split: levels are a fixed list, not drawn; ``key``
    is unused). A run asking for more tasks than a range holds is a ``ValueError``."""
    del env, key
    values = dataclass_values(params)
    check_settings(values)
    train = _first_levels(
        "training", "num_train_levels", params.train_levels, params.num_train_levels, num_train
    )
    test = _first_levels("held-out", "num_test_levels", params.test_levels, params.num_test_levels, num_test)
    return train, test


def held_out_levels(env: Any, params: ProcgenParams, key: jax.Array, num_test: int) -> jax.Array:
    """The held-out levels of a run whose method trains on fresh levels (``sample_task`` draws those
    from the training range): the first ``num_test`` of the held-out range, as in :func:`task_sets`."""
    return task_sets(env, params, key, 0, num_test)[1]


def dataclass_values(params: ProcgenParams) -> dict[str, Any]:
    """The level-range fields of ``params`` as a settings mapping (for :func:`check_settings`)."""
    names = ("train_levels", "num_train_levels", "test_levels", "num_test_levels")
    return {name: getattr(params, name) for name in names}


ENTRY = EnvEntry(
    id="Procgen-v0",
    build=make_procgen,
    description=(
        "Procgen games on the host (task: a level seed; Chen & Agrawal 2020 use coinrun, climber and "
        "ninja with 200 training and 100 held-out levels)"
    ),
    settings={
        "game": Setting(
            "coinrun",
            f"the Procgen game; the paper's are {', '.join(PAPER_GAMES)}",
            "constructor",
            choices=GAMES,
        ),
        "distribution_mode": Setting(
            "easy",
            "Procgen's level distribution (extreme and memory only for some games)",
            "constructor",
            choices=tuple(MODES),
        ),
        "resolution": Setting(
            FRAME,
            "observation side in pixels: the 64 x 64 frame averaged over square blocks",
            "constructor",
            choices=RESOLUTIONS,
        ),
        "max_steps": Setting(
            None,
            "episode time limit, below procgen's own (null: procgen's: 1000 steps for coinrun, climber and "
            "ninja)",
            "constructor",
            min=1,
            optional=True,
        ),
        "snapshots": Setting(
            False,
            "carry each env's procgen state in the JAX state so checkpoints resume exactly (costs a "
            "get_state per env per step)",
            "constructor",
        ),
        "train_levels": Setting(0, "first training level seed", "constructor", min=0, max=MAX_LEVEL),
        "num_train_levels": Setting(200, "training levels (the task set's size limit)", "constructor", min=1),
        "test_levels": Setting(200, "first held-out level seed", "constructor", min=0, max=MAX_LEVEL),
        "num_test_levels": Setting(100, "held-out levels", "constructor", min=1),
    },
    host=True,
    task_sets=task_sets,
    check=check_settings,
    held_out=held_out_levels,
)


__all__ = [
    "ENTRY",
    "GAMES",
    "HEADER_BYTES",
    "INSTALL",
    "MODES",
    "PAPER_GAMES",
    "RESOLUTIONS",
    "STATE_BYTES",
    "STATE_MAXIMA_SEEN",
    "ProcgenBatch",
    "ProcgenParams",
    "check_settings",
    "downsample",
    "level_env",
    "make_procgen",
    "parse_state_header",
    "sample_level",
    "snapshot_size",
    "task_sets",
]

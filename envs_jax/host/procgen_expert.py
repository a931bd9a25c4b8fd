"""A search expert for Procgen's platformers (CoinRun, Ninja, Climber): labels any state with a good action.

Chen & Agrawal (2020, sec. 3.3) clone their memory agents from "expert demonstrations, collected by
training a PPO policy". A PPO expert per game costs 4-7 CPU-hours on this 2-core machine; this module
buys the labels with search instead, which procgen makes cheap and exact:

* a procgen env saves and restores its whole state (``get_state``/``set_state``, 0.1-0.15 ms each),
  and with ``num_levels=1`` a level is deterministic given the actions (``envs_jax.host.procgen``);
* a step costs about 0.035 ms, so a few hundred simulated steps per label cost ~10-20 ms.

**The search.** At a state, :class:`SearchExpert` restores the state into its own scratch env (one
``ProcgenGym3Env`` with one sub-env per candidate plan, so every candidate steps in the same C call;
the live env is only read, never touched), plays a fixed set of candidate plans and returns the first
action of the best one. Plans (:func:`platformer_plans`): for CoinRun a first move held for 1-8
steps (run, jump, stand, back off) then run right, hop right or stand (34 plans x 32 steps); for
Ninja and Climber "walk, jump, steer" plans (the run-up sets a jump's length: air control is weak)
ending with :data:`SETTLE` steps of standing still. Scores (:func:`plan_scores`): completing the
level beats everything (sooner is better), dying (an episode ended without completing the level)
loses to everything (later is better), and a plan still alive at its end scores its progress read
off the final state (:func:`parse_state`, :func:`progress`): the agent's x for CoinRun and Ninja (the
goal is at the far right), coins collected then height for Climber; Ninja and Climber plans that end
in the air lose :data:`AIRBORNE`, and in Ninja (nothing else moves) plans that start by waiting on
the ground are ruled out (see :meth:`SearchExpert.scores`: without these the expert procrastinates,
pushing a risky jump past its horizon forever). Ties go to the earlier plan, so the label is a
deterministic function of the state. It is closed-loop: it labels whatever state the learner is in
(a receding-horizon planner, re-run at every step).

Measured (``benchmarks/procgen_expert.py``, results in ``benchmarks/results/procgen_expert.json``):
CoinRun easy, one episode per level played by the expert: 50/50 training levels, about 47 ms and
~970 simulated steps per label on this busy 2-core machine. Ninja and Climber are weaker and far
costlier per label (see that file): the x-progress heuristic does not plan routes between platforms.

**Using it from JAX.** :func:`make_expert_action` returns ``expert_action(state, params) -> int32
[N]`` for a :class:`envs_jax.host.HostEnv` built by ``make_procgen``: one ordered ``io_callback`` that
finds the live host batch by its handle and labels each env's current procgen state. Install it
with ``env.expert_action = make_expert_action(env)``; ``jaxmeta.trial.run_trials(...,
record_fn=lambda s: env.expert_action(s, params))`` then records the labels before each action.

The state layout (procgen's serialisation version 0, checked against procgen-mirror 0.10.7):
``Game::serialize`` (parsed by :func:`envs_jax.host.procgen.parse_state_header` up to ``cur_time``),
``is_waiting_for_step``, then ``BasicAbstractGame::serialize``: ``grid_size``, the entities (a count,
then 31 four-byte fields each: x, y, vx, vy, rx, ry, type, ...), 19 scalar fields, the asset random
generator, 9 more scalars, the grid (width, height, then ``width * height`` cell types, row-major
from the bottom row), then the game's own fields and an end marker.
"""

from __future__ import annotations

import struct as pystruct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from envs_jax.host.procgen import HEADER_BYTES, NUM_ACTIONS, ProcgenBatch, level_env, parse_state_header

# Procgen's action set (``ProcgenGym3Env.get_combos``): 9 moves (x = a // 3 - 1, y = a % 3 - 1), then
# six special keys (Ninja throws stars with them; the other platformers ignore them).
LEFT_DOWN, LEFT, LEFT_UP, DOWN, NOOP, UP, RIGHT_DOWN, RIGHT, RIGHT_UP = range(9)
ACTION_NAMES = (
    "LEFT-DOWN",
    "LEFT",
    "LEFT-UP",
    "DOWN",
    "NOOP",
    "UP",
    "RIGHT-DOWN",
    "RIGHT",
    "RIGHT-UP",
    "D",
    "A",
    "W",
    "S",
    "Q",
    "E",
)
GAMES = ("coinrun", "ninja", "climber")  # the games the expert knows how to score

ENTITY_WORDS = 31  # four-byte fields per serialised entity (entity.cpp)
PLAYER = 0  # the agent's entity type (object-ids.h)
COMPLETION_REWARD = 10.0  # all three games pay 10 for completing the level (Climber's coins pay 1 each)
SETTLE = 12  # Ninja and Climber plans end with this many NOOP steps (see platformer_plans)
AIRBORNE = 1e3  # the progress lost by a Ninja or Climber plan that ends in the air
WALLS = {"coinrun": (15, 16), "ninja": (20,), "climber": (15, 16)}  # the grid cells that hold the agent
STATIC_WORLDS = ("ninja",)  # games where nothing but the agent moves (no enemies, no moving saws)
EXCLUDED = -2e6  # the score of a plan ruled out before it is scored (below any death)
WIN = 1e6  # plan scores: a completed level beats any progress, a death loses to any
LOSS = -1e6


# ----------------------------------------------------------------------------- reading procgen states
@dataclass(frozen=True)
class ParsedState:
    """What the expert reads off a procgen state: time, the entities, the grid and the game's tail."""

    game: str
    level: int
    time: int  # steps into the episode
    time_limit: int
    entities: np.ndarray  # float32 [E, 6]: x, y, vx, vy, rx, ry
    types: np.ndarray  # int32 [E]
    grid: np.ndarray  # int32 [height, width], grid[y, x] (y up, as procgen's world)
    tail: np.ndarray  # int32 words after the grid: the game's own fields (then the end marker)

    @property
    def agent(self) -> np.ndarray:
        """float32 [6]: the agent's x, y, vx, vy, rx, ry (procgen keeps the last PLAYER entity)."""
        return self.entities[np.flatnonzero(self.types == PLAYER)[-1]]


def parse_state(state: bytes) -> ParsedState:
    """Parse a procgen ``get_state`` of one of the basic platformer games (any ``BasicAbstractGame``).

    Raises ``ValueError`` on bytes that do not parse as a procgen state.
    """
    offset = 0

    def words(count: int, kind: str = "i") -> tuple[Any, ...]:
        nonlocal offset
        values = pystruct.unpack_from(f"<{count}{kind}", state, offset)
        offset += 4 * count
        return values

    def text() -> bytes:
        nonlocal offset
        (size,) = words(1)
        if not 0 <= size <= len(state) - offset:
            raise ValueError("not a procgen state")
        offset += size
        return state[offset - size : offset]

    try:
        header = parse_state_header(state)  # Game::serialize up to cur_time
        game, level, cur_time, time_limit = (
            header["game"],
            header["level"],
            header["time"],
            header["time_limit"],
        )
        offset = header["end"]
        words(2)  # is_waiting_for_step, grid_size
        (count,) = words(1)
        block = np.frombuffer(state, "<f4", count * ENTITY_WORDS, offset).reshape(count, ENTITY_WORDS)
        offset += 4 * count * ENTITY_WORDS
        words(19)  # BasicAbstractGame's scalars (background, speeds, action, centre, step_rand_int)
        words(1)  # the asset random generator: a flag, then its state as text
        text()
        words(9)  # world size, out-of-bounds object, view geometry
        width, height, cells = words(3)
        if cells != width * height or cells < 0:
            raise ValueError("not a procgen state (grid size)")
        grid = np.frombuffer(state, "<i4", cells, offset).reshape(height, width)
        offset += 4 * cells
        tail = np.frombuffer(state, "<i4", (len(state) - offset) // 4, offset)
    except (pystruct.error, UnicodeDecodeError) as err:
        raise ValueError(f"not a procgen state ({err})") from None
    except ValueError as err:
        raise ValueError(f"not a procgen state ({err})") from None
    return ParsedState(
        game=game,
        level=level,
        time=cur_time,
        time_limit=time_limit,
        entities=block[:, :6].astype(np.float32),
        types=block[:, 6].view("<i4").astype(np.int32),
        grid=grid.astype(np.int32),
        tail=tail.astype(np.int32),
    )


# ----------------------------------------------------------------------------- candidate plans
def _unique(plans: Sequence[np.ndarray]) -> np.ndarray:
    """The plans without repeats, in their first order."""
    seen: set[bytes] = set()
    kept = []
    for plan in plans:
        if plan.tobytes() not in seen:
            seen.add(plan.tobytes())
            kept.append(plan)
    return np.stack(kept)


def _segments(parts: Sequence[tuple[int, int]], tail: Sequence[int], horizon: int) -> np.ndarray:
    """Each ``(action, steps)`` of ``parts`` in turn, then ``tail`` repeated, cut to ``horizon`` steps."""
    head = [action for action, steps in parts for _ in range(steps)]
    rest = max(horizon - len(head), 0)
    return np.array(head + list(tail) * (-(-rest // len(tail))), np.int32)[:horizon]


def platformer_plans(game: str, horizon: int) -> np.ndarray:
    """The candidate plans ``int32 [K, horizon]`` of a platformer, simplest first (ties go to them).

    CoinRun: a first move held for 1-8 steps (run right, jump, stand, back off), then run right,
    hop right (jump whenever on the ground) or stand. Ninja and Climber need precise jumps between
    platforms over deadly or empty space, so their plans are "walk, jump, steer": run (or stand,
    or back off) for 0-8 steps (the run-up sets the jump's length: air control is weak), jump,
    then steer right, not at all or left until the horizon (standing still after landing is what
    keeps a plan alive on a small platform). Ninja jumps when UP is *released* (holding it
    charges the jump; one step charges fully in easy mode), so its jump is one UP step followed by
    a step without UP; CoinRun and Climber jump on the step UP is pressed on the ground.
    """
    plans = []
    if game == "coinrun":
        for first, hold in (
            [(RIGHT, h) for h in (1, 2, 4, 8)]
            + [(NOOP, h) for h in (2, 4, 8)]
            + [(LEFT, h) for h in (2, 4, 8)]
            + [(RIGHT_UP, 1), (UP, 1), (LEFT_UP, 1)]
        ):
            for tail in ((RIGHT,), (RIGHT_UP,), (NOOP,)):
                plans.append(_segments([(first, hold)], tail, horizon))
        return _unique(plans)
    steer = (RIGHT, NOOP, LEFT) if game == "climber" else (RIGHT, NOOP)
    for move in (RIGHT, NOOP, LEFT):  # walk
        for hold in (1, 2, 4, 8):
            for tail in steer:
                plans.append(_segments([(move, hold)], (tail,), horizon))
    for move in (RIGHT, NOOP):  # run-up, jump right or up, steer
        for hold in (0, 1, 2, 3, 4, 6, 8):
            for jump in (RIGHT_UP, UP):
                for tail in steer:
                    plans.append(_segments([(move, hold), (jump, 1)], (tail,), horizon))
    for hold in (0, 2, 4):  # back-off, jump left, steer
        for tail in (LEFT, NOOP):
            plans.append(_segments([(LEFT, hold), (LEFT_UP, 1)], (tail,), horizon))
    hop = (RIGHT_UP, RIGHT) if game == "ninja" else (RIGHT_UP,)
    for hold in (0, 2, 4):  # keep hopping right
        plans.append(_segments([(RIGHT, hold)], hop, horizon))
    # Every plan ends standing still for SETTLE steps: a plan that is alive at its horizon only
    # because its fall has not ended yet must not look better than one that landed (without this
    # the expert procrastinates: "wait, then jump to my death" always puts the death past the horizon).
    plans = [np.concatenate([plan, np.full(SETTLE, NOOP, np.int32)]) for plan in plans]
    return _unique(plans)


# ----------------------------------------------------------------------------- scoring
def standing(game: str, parsed: ParsedState) -> bool:
    """Whether the agent stands on a wall cell (either foot), as the games test support."""
    x, y, _, _, rx, ry = (float(v) for v in parsed.agent)
    height, width = parsed.grid.shape
    row = int(np.floor(y - (ry + 0.01)))
    for foot in (x - (rx - 0.01), x + (rx - 0.01)):
        col = int(np.floor(foot))
        if not (0 <= row < height and 0 <= col < width) or parsed.grid[row, col] in WALLS[game]:
            return True
    return False


def progress(game: str, parsed: ParsedState, reward: float) -> float:
    """How far a plan got, for plans alive at the horizon (higher is better).

    CoinRun and Ninja: the agent's x (the goal is at the far right); Climber: coins collected (the
    reward, 1 each), then height (the coins lie on rising platforms). Ninja and Climber plans that
    end in the air lose :data:`AIRBORNE` (their plans end standing still, so one still in the air
    is falling to its death or somewhere unknown).
    """
    x, y = float(parsed.agent[0]), float(parsed.agent[1])
    if game == "coinrun":
        return x + 10.0 * reward
    score = 100.0 * reward + y if game == "climber" else x + 10.0 * reward
    return score if standing(game, parsed) else score - AIRBORNE


def plan_scores(
    game: str,
    outcome: np.ndarray,
    end_step: np.ndarray,
    reward: np.ndarray,
    finals: Sequence[ParsedState | None],
) -> np.ndarray:
    """Score per plan: a win (``outcome`` 1) beats everything, sooner better; a death (-1) loses to
    everything, later better; a plan alive at the horizon (0) scores its :func:`progress`."""
    scores = np.empty(len(outcome), np.float64)
    for k, result in enumerate(outcome):
        if result > 0:
            scores[k] = WIN - end_step[k]
        elif result < 0:
            scores[k] = LOSS + end_step[k]
        else:
            scores[k] = progress(game, finals[k], float(reward[k]))
    return scores


# ----------------------------------------------------------------------------- the expert
@dataclass
class SearchStats:
    """Counters of a :class:`SearchExpert` since it was made (for the benchmark)."""

    labels: int = 0
    simulated_steps: int = 0
    seconds: float = 0.0

    @property
    def ms_per_label(self) -> float:
        return 1e3 * self.seconds / max(self.labels, 1)

    @property
    def steps_per_label(self) -> float:
        return self.simulated_steps / max(self.labels, 1)


@dataclass
class SearchExpert:
    """Receding-horizon search over fixed candidate plans from a saved procgen state (module docstring).

    ``act(state_bytes) -> int`` labels one state; ``label(states) -> int32 [N]`` a batch. The scratch
    env (one sub-env per plan) is made on first use and restored from the given state for every
    label, so labels never depend on what was searched before.
    """

    game: str = "coinrun"
    distribution_mode: str = "easy"
    horizon: int = 32
    plans: np.ndarray | None = None
    stats: SearchStats = field(default_factory=SearchStats)
    _env: Any = field(default=None, repr=False)
    _buffer: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.game not in GAMES:
            raise ValueError(f"the search expert knows {', '.join(GAMES)}, not {self.game!r}")
        if self.plans is None:
            self.plans = platformer_plans(self.game, self.horizon)
        self.plans = np.ascontiguousarray(self.plans, np.int32)
        if self.plans.ndim != 2 or ((self.plans < 0) | (self.plans >= NUM_ACTIONS)).any():
            raise ValueError("plans must be int32 [K, horizon] of procgen actions")
        self.horizon = self.plans.shape[1]

    @property
    def num_plans(self) -> int:
        return int(self.plans.shape[0])

    def _scratch(self) -> Any:
        if self._env is None:
            # Level 0: irrelevant, set_state brings the level with the state.
            self._env = level_env(self.game, 0, self.distribution_mode, num=self.num_plans)
            self._buffer = self._env._ffi.new("char[1048576]")  # get_state's buffer, reused
        return self._env

    def _read_state(self, env: Any, index: int) -> bytes:
        size = env.call_c_func("get_state", index, self._buffer, len(self._buffer))
        return bytes(self._env._ffi.buffer(self._buffer, size))

    def scores(self, state: bytes) -> np.ndarray:
        """float64 [K]: every plan's score from ``state`` (procgen ``get_state`` bytes of this game)."""
        parsed = parse_state(state)
        if parsed.game != self.game:
            raise ValueError(f"a {parsed.game} state given to the {self.game} expert")
        env = self._scratch()
        start = time.perf_counter()
        num = self.num_plans
        for k in range(num):
            env.call_c_func("set_state", k, state, len(state))
        outcome = np.zeros(num, np.int32)
        end_step = np.zeros(num, np.int32)
        reward = np.zeros(num, np.float64)
        steps = 0
        for t in range(self.horizon):
            env.act(self.plans[:, t])
            rew, _, first = env.observe()
            steps += num
            live = outcome == 0
            reward[live] += rew[live]
            ended = live & first.astype(bool)
            if ended.any():
                info = env.get_info()
                for k in np.flatnonzero(ended):
                    outcome[k] = 1 if info[k]["prev_level_complete"] else -1
                    end_step[k] = t + 1
                if (outcome != 0).all():
                    break
        finals = [parse_state(self._read_state(env, k)) if outcome[k] == 0 else None for k in range(num)]
        scores = plan_scores(self.game, outcome, end_step, reward, finals)
        if self.game in STATIC_WORLDS and standing(self.game, parsed):
            # Waiting on the ground in a world where nothing else moves gains nothing, and a plan that
            # waits first can look best only because its risky part then falls past the horizon;
            # choosing it would repeat (the state after the wait is nearly the same state).
            scores[self.plans[:, 0] == NOOP] = EXCLUDED
        self.stats.labels += 1
        self.stats.simulated_steps += steps
        self.stats.seconds += time.perf_counter() - start
        return scores

    def act(self, state: bytes) -> int:
        """The first action of the best plan from ``state`` (ties: the earliest plan)."""
        return int(self.plans[int(np.argmax(self.scores(state))), 0])

    def label(self, states: Sequence[bytes]) -> np.ndarray:
        """int32 [N]: :meth:`act` of each state."""
        return np.array([self.act(s) for s in states], np.int32)

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
        self._env = None


# ----------------------------------------------------------------------------- the JAX side
def make_expert_action(env: Any, expert: SearchExpert | None = None) -> Callable[..., Any]:
    """``expert_action(state: HostState, params=None) -> int32 [N]`` for a ``make_procgen`` HostEnv.

    One ordered ``io_callback`` (so it runs between the env's own ordered calls, in program order)
    that finds the live host batch by ``state.handle`` and labels each env's current procgen state
    with ``expert`` (a :class:`SearchExpert` of the env's game by default). Install it with
    ``env.expert_action = make_expert_action(env)``. Not vmappable, like the env itself.
    """
    import jax
    import jax.numpy as jnp
    from jax.experimental import io_callback

    from envs_jax.host.adapter import _unbatched

    params = env.default_params
    expert = expert or SearchExpert(params.game, params.distribution_mode)
    if expert.game != params.game:
        raise ValueError(f"a {expert.game} expert for a {params.game} env")

    def host_label(handle: Any, snapshot: Any) -> np.ndarray:
        batch = env._batches.get(int(handle))
        if batch is not None:
            return expert.label(batch_states(batch))
        snapshot = np.asarray(snapshot)
        if snapshot.shape[1] > HEADER_BYTES:  # a batch not live (a restored state): its snapshot
            return expert.label(snapshot_states(snapshot))
        raise RuntimeError(
            f"expert_action: no live host batch {int(handle)} and no snapshot to label from (reset the "
            "env first, or make it with snapshots=True)"
        )

    def expert_action(state: Any, params: Any = None) -> jax.Array:
        del params
        num_envs = state.snapshot.shape[0]
        shape = jax.ShapeDtypeStruct((num_envs,), jnp.int32)
        return _unbatched(env.name, lambda *a: io_callback(host_label, shape, *a, ordered=True))(
            state.handle, state.snapshot
        )

    return expert_action


def install_expert(env: Any) -> None:
    """Give a ``make_procgen`` env ``env.expert_action`` (:func:`make_expert_action`), building the
    search expert (its scratch procgen env) when a trial first asks for labels, not with the env."""
    built: list[Callable[..., Any]] = []

    def expert_action(state: Any, params: Any = None) -> Any:
        if not built:
            built.append(make_expert_action(env))
        return built[0](state, params)

    env.expert_action = expert_action


def snapshot_states(snapshot: np.ndarray) -> list[bytes]:
    """The procgen states held by :class:`ProcgenBatch` snapshot rows ``uint8 [N, K]``."""
    rows = np.ascontiguousarray(snapshot, np.uint8)
    lengths = rows[:, :HEADER_BYTES].copy().view("<i4")[:, 0]
    return [row[HEADER_BYTES : HEADER_BYTES + int(n)].tobytes() for row, n in zip(rows, lengths, strict=True)]


def batch_states(batch: ProcgenBatch) -> list[bytes]:
    """Each env's current procgen state (``get_state`` bytes) of a live :class:`ProcgenBatch`."""
    states = []
    for i, env in enumerate(batch._envs):
        if env is None:
            raise RuntimeError(f"expert_action: Procgen env {i} was never reset")
        states.append(env.callmethod("get_state")[0])
    return states


__all__ = [
    "ACTION_NAMES",
    "GAMES",
    "ParsedState",
    "SearchExpert",
    "SearchStats",
    "batch_states",
    "install_expert",
    "make_expert_action",
    "parse_state",
    "plan_scores",
    "platformer_plans",
    "progress",
    "snapshot_states",
    "standing",
]

"""The 3D three-box room of Chen & Agrawal (2020, section 3.2) in Miniworld, stepped on the host.

A 4 m x 4 m room holds three coloured boxes. Touching one ends the episode:
+1 for the goal box, -1 for either trap box. Which box is the goal varies
between tasks and is never shown, so within a trial (several episodes of one
layout) an agent with memory can avoid the traps it hit before. The agent
sees a first-person RGB view and has three actions: move forward 0.3 m, turn
left 18 degrees, turn right 18 degrees.

**Frame.** Positions are ``(x, z)`` in metres, the room spans ``[0, 4]`` on
both axes. A heading ``h`` (radians, Miniworld's ``agent.dir``) faces the
unit vector ``(cos h, -sin h)``; turning left adds 18 degrees.

**Bodies.** The agent is Miniworld's disc of radius ``AGENT_RADIUS = 0.4``
with its camera (1.5 m high, level, 60-degree vertical field of view). A box
is ``BOX_SIZE = 0.6 x 1.2 x 0.6`` m (width x height x depth), axis aligned;
its footprint counts as its bounding circle, radius ``BOX_RADIUS = 0.424``.
The small footprint leaves room to walk around boxes in a 4 m room; the
height keeps a box in view until it is touched (when touching, the box's
near face is at least 0.52 m away, where the lower edge of the view is
1.2 m above the floor; a 0.8 m box would drop out of view two steps before).

**Touching.** A box is *touched* when a forward move's path meets it: the
segment from the agent's centre to where the move would take it comes
within ``TOUCH_DISTANCE = AGENT_RADIUS + BOX_RADIUS`` (0.824 m) of the box's
centre. The first box met along the segment counts; the agent stays where
it was, and the episode terminates with +1 (goal) or -1 (trap). Turning
never touches. A forward move that touches nothing but would bring the
agent within its radius of a wall is blocked (the agent stays, Miniworld's
rule). The time limit ``max_steps`` truncates with reward 0.

**Determinism.** No domain randomisation: the step sizes, lights, textures
and colours are Miniworld's defaults without noise. The pose is kept in
float32 (rounded after every move), so a snapshot of ``SNAPSHOT_SIZE`` bytes
per env (pose, time, layout) continues an episode exactly.

**Tasks.** :func:`sample_layout` (pure JAX) draws a :class:`RoomTask`; the
three colours are distinct, drawn from the five chromatic Miniworld colours
(grey is left out: it is the colour of the concrete walls), so the colour
of the goal is uniform over the palette and tells nothing across tasks, as
in the ``Gridworld-v0`` palette. :func:`is_valid_task` rejects the rare
layouts whose goal the planner cannot reach without touching a trap.

**Expert.** :func:`expert_action` (pure JAX) plans on a 10 cm grid: a
shortest-path distance field to the goal box with the traps inflated, the
next waypoint the grid cell in straight sight that minimises straight-line
distance plus distance-to-go; it turns toward the waypoint unless the
heading error is at most half a turn (9 degrees), else moves forward, never
into a trap or a wall. It reaches the goal from the start of every valid
layout (9584 of 9584 tried; mean 10.9 steps, at most 42), so the default
time limit of 100 steps leaves a learner more than twice the expert's
worst case. :func:`snapshot_expert_action` labels a batch from its host
snapshot.

**Host side.** :class:`RoomBatch` is the :class:`envs_jax.host.HostBatch` of
``num_envs`` :class:`ThreeBoxRoom` (a ``miniworld.MiniWorldEnv``). OpenGL
contexts must be used on the thread that made them current: pyglet ignores
``eglMakeCurrent`` failing with ``EGL_BAD_ACCESS`` when a context is still
current on another live thread, and the GL calls then go to whichever
context that thread had. ``io_callback`` calls from XLA's threads, so every
batch runs all its Miniworld work on one process-wide worker thread.
Rendering is headless (EGL; pyglet's ``headless`` option is set before
Miniworld is imported).

Importing this module imports neither Miniworld nor pyglet; building the
environment needs ``pip install -e ".[miniworld]"``.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import spaces

from envs_jax.registry import EnvEntry, EnvUnavailableError, Setting

ENV_ID = "MiniworldThreeBoxes-v0"
INSTALL_HINT = 'pip install -e ".[miniworld]"'

# ----------------------------------------------------------------------------- geometry (metres, radians)
ROOM_SIZE = 4.0
AGENT_RADIUS = 0.4  # Miniworld's agent
BOX_SIZE = (0.6, 1.2, 0.6)  # width (x), height (y), depth (z)
BOX_RADIUS = math.hypot(BOX_SIZE[0], BOX_SIZE[2]) / 2  # bounding circle of the footprint: 0.424
TOUCH_DISTANCE = AGENT_RADIUS + BOX_RADIUS  # 0.824
FORWARD_STEP = 0.3
TURN_DEGREES = 18.0
TURN_STEP = math.radians(TURN_DEGREES)
NUM_BOXES = 3
COLOR_NAMES = ("blue", "green", "purple", "red", "yellow")  # Miniworld colour names, grey left out
FORWARD, TURN_LEFT, TURN_RIGHT = 0, 1, 2
ACTION_NAMES = ("forward", "turn_left", "turn_right")

# ----------------------------------------------------------------------------- layout constraints
BOX_WALL_CLEARANCE = BOX_RADIUS + 0.2  # box centre to each wall: a 0.2 m gap behind the box
BOX_SEPARATION = 1.2  # between box centres: 0.35 m between their bounding circles
START_WALL_CLEARANCE = AGENT_RADIUS + 0.2  # agent start to each wall
START_BOX_SEPARATION = TOUCH_DISTANCE + FORWARD_STEP + 0.2  # no box within a step and a margin
LAYOUT_CANDIDATES = 256  # draws per sample_layout call; the first that keeps the constraints is used

# ----------------------------------------------------------------------------- the environment
DEFAULT_RESOLUTION = (60, 80)  # (height, width): Miniworld's own default, 4:3
DEFAULT_MAX_STEPS = 100  # the expert needs at most 42 steps (mean 11): room to explore
SNAPSHOT_SIZE = 56  # bytes per env, see RoomBatch.get_state

# ----------------------------------------------------------------------------- planner
GRID_STEP = 0.1  # planning grid: GRID_CELLS x GRID_CELLS cell centres 0.05 m, 0.15 m, ... 3.95 m
GRID_CELLS = round(ROOM_SIZE / GRID_STEP)
PLAN_WALL_CLEARANCE = AGENT_RADIUS + 0.1  # the planned path keeps the agent 0.1 m off the walls
PLAN_TRAP_CLEARANCE = TOUCH_DISTANCE + 0.15  # grid cells this near a trap centre are blocked
SIGHT_TRAP_CLEARANCE = TOUCH_DISTANCE + 0.08  # a line to a waypoint keeps this far from traps
SIGHT_LOST = 1e6  # cost offset of a waypoint out of sight (see _waypoint)
_MAX_RELAXATIONS = 4 * GRID_CELLS  # far above the longest path (in cells) a layout allows
_NEIGHBOURS = tuple(
    (di, dj, GRID_STEP * math.hypot(di, dj)) for di in (-1, 0, 1) for dj in (-1, 0, 1) if di or dj
)


@struct.dataclass
class RoomTask:
    """One layout (a task). Leaves are arrays; a task set stacks them on a leading axis.

    ``box_pos``: float32 ``[3, 2]`` box centres ``(x, z)`` in metres;
    ``box_color``: int32 ``[3]`` distinct indices into :data:`COLOR_NAMES`;
    ``goal``: int32 ``[]`` the box that gives +1 (the other two give -1);
    ``agent_pos``: float32 ``[2]`` the agent's start ``(x, z)``;
    ``agent_heading``: float32 ``[]`` its start heading in radians, in ``[-pi, pi)``.
    """

    box_pos: Any
    box_color: Any
    goal: Any
    agent_pos: Any
    agent_heading: Any


@struct.dataclass
class RoomParams:
    """The room's fixed settings, where gymnax keeps env params (static: the host batch owns them)."""

    obs_height: int = struct.field(pytree_node=False, default=DEFAULT_RESOLUTION[0])
    obs_width: int = struct.field(pytree_node=False, default=DEFAULT_RESOLUTION[1])
    max_steps_in_episode: int = struct.field(pytree_node=False, default=DEFAULT_MAX_STEPS)


# ============================================================================= layouts
def _layout_ok(box_pos: Any, agent_pos: Any, xp: Any = jnp) -> Any:
    """Whether boxes ``[3, 2]`` and start ``[2]`` keep every separation constraint (numpy or JAX)."""
    box_in = (box_pos >= BOX_WALL_CLEARANCE) & (box_pos <= ROOM_SIZE - BOX_WALL_CLEARANCE)
    start_in = (agent_pos >= START_WALL_CLEARANCE) & (agent_pos <= ROOM_SIZE - START_WALL_CLEARANCE)
    diff = box_pos[:, None, :] - box_pos[None, :, :]
    pair = xp.sqrt(xp.sum(diff * diff, axis=-1)) + xp.eye(NUM_BOXES) * ROOM_SIZE  # ignore the diagonal
    to_start = xp.sqrt(xp.sum((box_pos - agent_pos) ** 2, axis=-1))
    return (
        xp.all(box_in)
        & xp.all(start_in)
        & xp.all(pair >= BOX_SEPARATION)
        & xp.all(to_start >= START_BOX_SEPARATION)
    )


def sample_layout(key: jax.Array, params: Any = None) -> RoomTask:
    """A random layout (pure JAX, jittable, vmappable; deterministic in ``key``).

    Draws :data:`LAYOUT_CANDIDATES` candidate placements at once — box
    centres uniform in ``[BOX_WALL_CLEARANCE, 4 - BOX_WALL_CLEARANCE]^2``, the
    start uniform in ``[START_WALL_CLEARANCE, 4 - START_WALL_CLEARANCE]^2`` —
    and keeps the first with box centres ``BOX_SEPARATION`` apart and the
    start ``START_BOX_SEPARATION`` from every box (a fixed-size rejection
    sampler: about 1 candidate in 43 passes, so all fail with probability
    ~0.3%, and then :func:`is_valid_task` rejects the draw). Colours: three
    distinct of :data:`COLOR_NAMES`; goal: uniform over the boxes; heading:
    uniform in ``[-pi, pi)``. ``params`` is unused (the task interface's slot).
    """
    del params
    k_box, k_start, k_color, k_goal, k_heading = jax.random.split(key, 5)
    boxes = jax.random.uniform(
        k_box,
        (LAYOUT_CANDIDATES, NUM_BOXES, 2),
        minval=BOX_WALL_CLEARANCE,
        maxval=ROOM_SIZE - BOX_WALL_CLEARANCE,
    )
    starts = jax.random.uniform(
        k_start, (LAYOUT_CANDIDATES, 2), minval=START_WALL_CLEARANCE, maxval=ROOM_SIZE - START_WALL_CLEARANCE
    )
    first = jnp.argmax(jax.vmap(_layout_ok)(boxes, starts))  # 0 when none passes
    colors = jax.random.choice(k_color, len(COLOR_NAMES), (NUM_BOXES,), replace=False)
    return RoomTask(
        box_pos=boxes[first].astype(jnp.float32),
        box_color=colors.astype(jnp.int32),
        goal=jax.random.randint(k_goal, (), 0, NUM_BOXES, dtype=jnp.int32),
        agent_pos=starts[first].astype(jnp.float32),
        agent_heading=jax.random.uniform(k_heading, (), jnp.float32, -jnp.pi, jnp.pi),
    )


def is_valid_task(task: RoomTask, params: Any = None) -> jax.Array:
    """Whether a layout keeps the separation constraints and its goal is reachable (bool scalar, JAX).

    Reachable: the planner of :func:`expert_action` finds a path from the
    start to the goal box that keeps :data:`PLAN_TRAP_CLEARANCE` from both
    traps and :data:`PLAN_WALL_CLEARANCE` from the walls. ``task_set`` redraws
    the layouts that fail (about 4% of draws: a trap near a wall can cut the goal off).
    """
    del params
    colors = jnp.asarray(task.box_color)
    distinct = (colors[0] != colors[1]) & (colors[0] != colors[2]) & (colors[1] != colors[2])
    in_palette = jnp.all((colors >= 0) & (colors < len(COLOR_NAMES)))
    goal_ok = (task.goal >= 0) & (task.goal < NUM_BOXES)
    reachable = _start_reachable(task, plan_distances(task), jnp)
    return _layout_ok(task.box_pos, task.agent_pos) & distinct & in_palette & goal_ok & reachable


def sample_layout_numpy(rng: np.random.Generator) -> RoomTask:
    """A valid layout drawn with numpy (the host's draw when a reset gets no task).

    Same distributions and constraints as :func:`sample_layout` and
    :func:`is_valid_task`, redrawn until valid, but not the same numbers:
    host code never calls JAX (a callback that calls back into JAX can
    deadlock). Leaves are numpy arrays.
    """
    lo, hi = BOX_WALL_CLEARANCE, ROOM_SIZE - BOX_WALL_CLEARANCE
    while True:
        boxes = rng.uniform(lo, hi, (NUM_BOXES, 2)).astype(np.float32)
        start = rng.uniform(START_WALL_CLEARANCE, ROOM_SIZE - START_WALL_CLEARANCE, 2).astype(np.float32)
        if not _layout_ok(boxes, start, np):
            continue
        task = RoomTask(
            box_pos=boxes,
            box_color=rng.choice(len(COLOR_NAMES), NUM_BOXES, replace=False).astype(np.int32),
            goal=np.int32(rng.integers(NUM_BOXES)),
            agent_pos=start,
            agent_heading=np.float32(rng.uniform(-np.pi, np.pi)),
        )
        if _start_reachable(task, _distance_field(task, np), np):
            return task


# ============================================================================= motion
def wrap_angle(angle: Any, xp: Any = jnp) -> Any:
    """``angle`` (radians) wrapped into ``[-pi, pi)``."""
    return angle - 2 * np.pi * xp.floor((angle + np.pi) / (2 * np.pi))


def touched_box(pos: Any, heading: Any, box_pos: Any, xp: Any = jnp) -> Any:
    """Which box a forward move from ``pos [2]`` at ``heading`` touches: its index, or -1 (int32).

    The move's segment ``pos -> pos + FORWARD_STEP * (cos h, -sin h)`` touches
    a box when it comes within :data:`TOUCH_DISTANCE` of the box centre; of
    several, the one met first along the segment (ties: the lower index).
    Works on numpy (float64, the host env's rule) or JAX (float32) arrays.
    """
    move = FORWARD_STEP * xp.stack([xp.cos(heading), -xp.sin(heading)])
    rel = pos - box_pos  # [3, 2]
    a = xp.sum(move * move)
    b = 2 * xp.sum(rel * move, axis=-1)
    c = xp.sum(rel * rel, axis=-1) - TOUCH_DISTANCE**2
    disc = b * b - 4 * a * c
    t = (-b - xp.sqrt(xp.maximum(disc, 0.0))) / (2 * a)  # first crossing of the circle
    t = xp.where(c <= 0, 0.0, t)  # already within reach: touched at once
    hit = (disc >= 0) & (t >= 0) & (t <= 1)
    first = xp.where(hit, t, np.inf)
    return xp.where(xp.any(hit), xp.argmin(first), -1).astype(xp.int32)


def wall_blocks(pos: Any, heading: Any, xp: Any = jnp) -> Any:
    """Whether a forward move from ``pos`` would bring the agent within its radius of a wall."""
    end = pos + FORWARD_STEP * xp.stack([xp.cos(heading), -xp.sin(heading)])
    return xp.any((end < AGENT_RADIUS) | (end > ROOM_SIZE - AGENT_RADIUS))


def move_agent(pos: jax.Array, heading: jax.Array, action: Any, task: RoomTask) -> tuple[Any, Any, Any]:
    """One step of the room's motion without rendering (pure JAX): ``(pos, heading, touched)``.

    Mirrors :meth:`ThreeBoxRoom.step` (``touched``: box index or -1) in
    float32; the host computes the move in float64 before rounding, so a
    position may differ in the last bit. For planning checks and tests.
    """
    pos, heading = jnp.asarray(pos, jnp.float32), jnp.asarray(heading, jnp.float32)
    forward = action == FORWARD
    touched = jnp.where(forward, touched_box(pos, heading, task.box_pos), -1)
    moves = forward & (touched < 0) & ~wall_blocks(pos, heading)
    step = FORWARD_STEP * jnp.stack([jnp.cos(heading), -jnp.sin(heading)])
    turn = jnp.where(action == TURN_LEFT, TURN_STEP, jnp.where(action == TURN_RIGHT, -TURN_STEP, 0.0))
    new_heading = wrap_angle(heading + turn).astype(jnp.float32)
    return jnp.where(moves, pos + step, pos).astype(jnp.float32), new_heading, touched


# ============================================================================= planner
def _grid(xp: Any) -> Any:
    """Cell centres ``[G, G, 2]``: ``[i, j] = (x_i, z_j)``."""
    c = ((xp.arange(GRID_CELLS) + 0.5) * GRID_STEP).astype(xp.float32)
    return xp.stack(xp.meshgrid(c, c, indexing="ij"), axis=-1)


def _cells(task: RoomTask, xp: Any) -> tuple[Any, Any]:
    """Planning masks ``[G, G]``: cells the agent's centre may cross, and the goal cells (cost 0)."""
    grid = _grid(xp)
    dist = xp.sqrt(xp.sum((grid[None] - xp.asarray(task.box_pos)[:, None, None, :]) ** 2, axis=-1))
    is_goal = xp.arange(NUM_BOXES) == task.goal
    inside = xp.all((grid >= PLAN_WALL_CLEARANCE) & (grid <= ROOM_SIZE - PLAN_WALL_CLEARANCE), axis=-1)
    near_trap = xp.any((dist < PLAN_TRAP_CLEARANCE) & ~is_goal[:, None, None], axis=0)
    goal_dist = xp.sum(xp.where(is_goal[:, None, None], dist, 0.0), axis=0)
    passable = inside & ~near_trap
    return passable, passable & (goal_dist < TOUCH_DISTANCE)


def _relax(dist: Any, passable: Any, xp: Any) -> Any:
    """One Bellman-Ford sweep of the 8-connected grid (costs in metres)."""
    padded = xp.pad(dist, 1, constant_values=np.inf)
    best = dist
    for di, dj, cost in _NEIGHBOURS:
        best = xp.minimum(best, padded[1 + di : 1 + di + GRID_CELLS, 1 + dj : 1 + dj + GRID_CELLS] + cost)
    return xp.where(passable, best, np.inf).astype(xp.float32)


def _distance_field(task: RoomTask, xp: Any) -> Any:
    """Path length in metres from each cell to the nearest goal cell, inf if cut off ``[G, G]``."""
    passable, goal = _cells(task, xp)
    dist = xp.where(goal, 0.0, np.inf).astype(xp.float32)
    if xp is np:
        for _ in range(_MAX_RELAXATIONS):
            new = _relax(dist, passable, np)
            if np.array_equal(new, dist):
                break
            dist = new
        return dist

    def cond(carry: Any) -> Any:
        _, changed, i = carry
        return changed & (i < _MAX_RELAXATIONS)

    def body(carry: Any) -> Any:
        d, _, i = carry
        new = _relax(d, passable, jnp)
        return new, jnp.any(new != d), i + 1

    return jax.lax.while_loop(cond, body, (dist, jnp.array(True), jnp.array(0)))[0]


def plan_distances(task: RoomTask) -> jax.Array:
    """The expert's distance field of one layout: float32 ``[G, G]`` metres to the goal (pure JAX).

    ``G = GRID_CELLS`` (40) cells of ``GRID_STEP`` (0.1 m); cell ``[i, j]``
    is centred on ``((i + 0.5) * 0.1, (j + 0.5) * 0.1)``. Cells within
    :data:`PLAN_TRAP_CLEARANCE` of a trap or :data:`PLAN_WALL_CLEARANCE` of a
    wall are blocked (inf); goal cells are those within
    :data:`TOUCH_DISTANCE` of the goal box. Depends on the layout only:
    compute it once per task and pass it to :func:`expert_action`.
    """
    return _distance_field(task, jnp)


def _start_reachable(task: RoomTask, dist: Any, xp: Any) -> Any:
    """Whether the grid cell holding the start is connected to the goal (finite distance)."""
    cell = xp.clip(xp.floor(xp.asarray(task.agent_pos) / GRID_STEP), 0, GRID_CELLS - 1).astype(xp.int32)
    return xp.isfinite(dist[cell[0], cell[1]])


def _waypoint(pos: Any, task: RoomTask, dist: Any, xp: Any) -> tuple[Any, Any]:
    """``(cost, waypoint [2])`` from ``pos``: of the cells in straight sight, the one minimising
    ``|pos - cell| + dist[cell]`` (that sum is the cost). In sight: the segment keeps
    ``SIGHT_TRAP_CLEARANCE`` from each trap centre, or, from a ``pos`` nearer than that, gets no
    nearer than ``pos`` is. With no connected cell in sight (the agent strayed), the nearest
    connected cell, at a cost above ``SIGHT_LOST``; inf when no cell is connected."""
    cells = _grid(xp).reshape(-1, 2)
    pos = xp.asarray(pos, xp.float32)
    seg = cells - pos  # [M, 2]
    seg_len2 = xp.sum(seg * seg, axis=-1)
    clear = xp.ones(cells.shape[0], bool)
    box_pos = xp.asarray(task.box_pos, xp.float32)
    for b in range(NUM_BOXES):
        rel = box_pos[b] - pos
        s = xp.clip(seg @ rel / xp.maximum(seg_len2, 1e-12), 0.0, 1.0)
        gap = xp.sqrt(xp.sum((pos + s[:, None] * seg - box_pos[b]) ** 2, axis=-1))
        need = xp.minimum(SIGHT_TRAP_CLEARANCE, xp.sqrt(xp.sum(rel * rel)) - 1e-3)
        clear = clear & ((gap >= need) | (b == task.goal))
    flat = dist.reshape(-1)
    length = xp.sqrt(seg_len2)
    cost = xp.where(clear, length + flat, xp.where(xp.isfinite(flat), SIGHT_LOST + length, np.inf))
    best = xp.argmin(cost)
    return cost[best], cells[best]


# Candidate headings relative to the current one, in turns of 18 degrees; ties go to fewer turns, left first.
_TURNS = np.array([0] + [k for n in range(1, 10) for k in (n, -n)] + [10], np.int32)


def expert_action(
    agent_pos: jax.Array, agent_heading: jax.Array, task: RoomTask, distances: jax.Array | None = None
) -> jax.Array:
    """The path-planning expert's action (int32 scalar: 0 forward, 1 left, 2 right), pure JAX.

    ``agent_pos``: ``[2]`` metres; ``agent_heading``: radians (Miniworld's
    ``agent.dir``); ``task``: one :class:`RoomTask`; ``distances``: its
    :func:`plan_distances`, computed here when not given. vmap it for a
    batch. Rule: move forward if that touches the goal box; else take the
    waypoint, the grid cell in straight sight (the line keeps
    :data:`SIGHT_TRAP_CLEARANCE` from the traps) that minimises straight-line
    distance plus :func:`plan_distances` (so the farthest cell along the path
    that can be seen), or, when the agent strayed where no connected cell is
    in sight, the nearest connected cell; then pick, among the 20 headings
    reachable by turning whose forward move neither touches a trap nor is
    blocked by a wall, the one nearest the waypoint's direction: forward if
    it is the current heading (the error is then at most 9 degrees, half a
    turn), else one turn toward it. The choice is stable while turning, so
    the expert never turns back and forth, and it never touches a trap.

    Measured with :func:`move_agent` (the room's motion in JAX): from the
    start of every one of 9584 valid layouts (two sets of 5000 draws) it
    touches the goal, in 10.9 steps on average (99th percentile 26, at most
    42); from 2197 random poses in the planner's free space, all reach it.
    """
    pos = jnp.asarray(agent_pos, jnp.float32)
    heading = jnp.asarray(agent_heading, jnp.float32)
    dist = plan_distances(task) if distances is None else distances
    _, target = _waypoint(pos, task, dist, jnp)
    headings = heading + jnp.asarray(_TURNS, jnp.float32) * TURN_STEP
    touched = jax.vmap(lambda h: touched_box(pos, h, task.box_pos))(headings)
    blocked = jax.vmap(lambda h: wall_blocks(pos, h))(headings)
    hits_goal = touched == task.goal
    safe = hits_goal | ((touched < 0) & ~blocked)
    to_target = target - pos
    wanted = jnp.arctan2(-to_target[1], to_target[0])
    error = jnp.abs(wrap_angle(headings - wanted))
    turns = jnp.asarray(_TURNS)[jnp.argmin(jnp.where(safe, error, jnp.inf))]
    turn_action = jnp.where(turns > 0, TURN_LEFT, TURN_RIGHT)
    action = jnp.where(hits_goal[0] | (turns == 0), FORWARD, turn_action)
    return jnp.where(jnp.any(safe), action, TURN_LEFT).astype(jnp.int32)


# ============================================================================= snapshots
def _pack_row(pos: Any, heading: float, time: int, task: RoomTask) -> np.ndarray:
    """One env's snapshot: ``SNAPSHOT_SIZE`` bytes (little-endian float32/int32 fields)."""
    parts = [
        np.asarray([pos[0], pos[1], heading], "<f4"),
        np.asarray([time], "<i4"),
        np.asarray(task.box_pos, "<f4").reshape(-1),
        np.asarray(task.box_color, "<i4").reshape(-1),
        np.asarray([task.goal], "<i4").reshape(-1),
    ]
    return np.concatenate([p.view(np.uint8) for p in parts])


def _unpack_row(row: np.ndarray) -> tuple[np.ndarray, np.float32, int, RoomTask]:
    row = np.ascontiguousarray(row, np.uint8)
    f = row.view("<f4")
    i = row.view("<i4")
    pos, heading, time = f[0:2].astype(np.float32), np.float32(f[2]), int(i[3])
    task = RoomTask(
        box_pos=f[4:10].reshape(NUM_BOXES, 2).astype(np.float32),
        box_color=i[10:13].astype(np.int32),
        goal=np.int32(i[13]),
        agent_pos=pos.copy(),
        agent_heading=heading,
    )
    return pos, heading, time, task


def decode_snapshot(snapshot: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, RoomTask]:
    """A host snapshot ``uint8 [..., SNAPSHOT_SIZE]`` as ``(pos [..., 2], heading [...], time [...],
    task)`` in JAX (bitcasts, jittable): the pose now, the steps taken this episode, and the layout
    (its ``agent_pos``/``agent_heading`` are the current pose; the episode's start is not kept).

    Byte layout (little-endian): float32 x, z, heading; int32 time; float32
    box centres ``[3, 2]``; int32 colours ``[3]``; int32 goal.
    """
    snap = jnp.asarray(snapshot, jnp.uint8)
    words = snap.reshape(*snap.shape[:-1], SNAPSHOT_SIZE // 4, 4)
    f = jax.lax.bitcast_convert_type(words, jnp.float32)
    i = jax.lax.bitcast_convert_type(words, jnp.int32)
    pos, heading = f[..., 0:2], f[..., 2]
    task = RoomTask(
        box_pos=f[..., 4:10].reshape(*f.shape[:-1], NUM_BOXES, 2),
        box_color=i[..., 10:13],
        goal=i[..., 13],
        agent_pos=pos,
        agent_heading=heading,
    )
    return pos, heading, i[..., 3], task


def snapshot_expert_action(snapshot: jax.Array) -> jax.Array:
    """:func:`expert_action` for every env of a host batch from its snapshot ``uint8 [N, K]`` ->
    int32 ``[N]`` (pure JAX). A HostEnv state carries the snapshot after every call, so jitted
    trials can label their steps with it (the factory installs it as ``env.expert_action``)."""
    pos, heading, _, task = decode_snapshot(snapshot)
    return jax.vmap(expert_action)(pos, heading, task)


# ============================================================================= Miniworld (lazy)
def require_miniworld() -> Any:
    """Import Miniworld for headless rendering and return the module.

    Sets ``pyglet.options["headless"] = True`` (EGL, no display needed)
    unless pyglet already chose a window system; then it needs a display.
    Raises ``ModuleNotFoundError`` naming the install command when Miniworld
    is missing, and ``RuntimeError`` when no headless context can be had.
    """
    try:
        import pyglet
    except ModuleNotFoundError:
        raise ModuleNotFoundError(f"{ENV_ID} needs miniworld: {INSTALL_HINT}") from None
    # Mesa's software rasteriser (llvmpipe) splits each frame over worker threads; frames of a few
    # thousand pixels draw faster on the calling thread (~15% per step here). Read at context creation.
    os.environ.setdefault("LP_NUM_THREADS", "0")
    if "pyglet.gl" not in sys.modules:
        # pyglet checks glGetError after every GL call (~130 per step in immediate mode): a quarter of
        # a step's time. The room's drawing is fixed code, so the checks find nothing to report.
        pyglet.options["debug_gl"] = False
    if "pyglet.window" not in sys.modules:
        pyglet.options["headless"] = True
    elif not pyglet.options["headless"] and not os.environ.get("DISPLAY"):
        raise EnvUnavailableError(
            f"{ENV_ID} renders headless, but pyglet was imported with a window system and there is no "
            "DISPLAY: set pyglet.options['headless'] = True before miniworld or pyglet.window is imported"
        )
    try:
        import miniworld
        import miniworld.miniworld
    except ModuleNotFoundError:
        raise ModuleNotFoundError(f"{ENV_ID} needs miniworld: {INSTALL_HINT}") from None
    return miniworld


_RENDERING_CHECKED = False


def check_rendering() -> None:
    """Build and close one tiny room (once per process), so a machine that cannot render headless
    fails when the env is made, in one line (:class:`EnvUnavailableError`), not at the first reset
    inside a jitted trial."""
    global _RENDERING_CHECKED
    if not _RENDERING_CHECKED:
        RoomBatch(1, (8, 8), 1).close()
        _RENDERING_CHECKED = True


def _task_numpy(task: Any) -> RoomTask:
    """A task given as a RoomTask, dict or NamedTuple of (numpy or JAX) arrays, as numpy leaves."""
    get = task.get if isinstance(task, dict) else lambda name: getattr(task, name)
    return RoomTask(
        box_pos=np.asarray(get("box_pos"), np.float32).reshape(NUM_BOXES, 2),
        box_color=np.asarray(get("box_color"), np.int32).reshape(NUM_BOXES),
        goal=np.int32(np.asarray(get("goal"))),
        agent_pos=np.asarray(get("agent_pos"), np.float32).reshape(2),
        agent_heading=np.float32(np.asarray(get("agent_heading"))),
    )


def _task_row(tasks: Any, i: int) -> RoomTask:
    """Row ``i`` of a stacked task pytree (RoomTask, dict or NamedTuple)."""
    get = tasks.get if isinstance(tasks, dict) else lambda name: getattr(tasks, name)
    return _task_numpy({name: np.asarray(get(name))[i] for name in RoomTask.__dataclass_fields__})


_ROOM_CLASS: Any = None


def _room_class() -> type:
    """Define :class:`ThreeBoxRoom` on first use (it subclasses ``miniworld.MiniWorldEnv``)."""
    global _ROOM_CLASS
    if _ROOM_CLASS is not None:
        return _ROOM_CLASS
    require_miniworld()
    from gymnasium import spaces as gym_spaces
    from miniworld import opengl
    from miniworld.entity import COLOR_NAMES as MW_COLORS
    from miniworld.entity import Box
    from miniworld.miniworld import MiniWorldEnv
    from miniworld.params import DEFAULT_PARAMS

    missing = set(COLOR_NAMES) - set(MW_COLORS)
    if missing:
        raise RuntimeError(f"{ENV_ID}: this miniworld has no colours {sorted(missing)}")
    params = DEFAULT_PARAMS.no_random()
    params.set("forward_step", FORWARD_STEP)
    params.set("forward_drift", 0.0)
    params.set("turn_step", TURN_DEGREES)

    class ThreeBoxRoom(MiniWorldEnv):
        """The three-box room as a gymnasium ``MiniWorldEnv`` (see the module docstring).

        ``resolution``: ``(height, width)`` of the RGB observation;
        ``max_steps``: steps before truncation. ``reset(seed=, options={"task":
        task})`` starts an episode of a layout (a :class:`RoomTask` of one
        env, numpy or JAX leaves); without a task it draws one with
        :func:`sample_layout_numpy` from the env's seeded generator.
        ``step(action)`` returns ``(obs, reward, terminated, truncated,
        {"touched": box or -1})``. Use an instance on the thread that made
        it (OpenGL); :class:`RoomBatch` takes care of that.
        """

        def __init__(
            self,
            resolution: tuple[int, int] = DEFAULT_RESOLUTION,
            max_steps: int = DEFAULT_MAX_STEPS,
            render_mode: str | None = None,
        ) -> None:
            height, width = (int(v) for v in resolution)
            if height < 8 or width < 8 or max_steps < 1:
                raise ValueError(f"{ENV_ID} needs a resolution >= 8 x 8 and max_steps >= 1")
            self._next_task: RoomTask | None = None
            self.task: RoomTask | None = None
            # Miniworld prints when it lowers its frame buffers' sample counts: keep that quiet.
            opengl.print = lambda *args, **kwargs: None
            try:
                super().__init__(
                    max_episode_steps=int(max_steps),
                    obs_width=width,
                    obs_height=height,
                    window_width=width,  # the human-view buffer is never used: keep it small
                    window_height=height,
                    params=params,
                    domain_rand=False,
                    render_mode=render_mode,
                )
            except Exception as error:  # pyglet's errors when no (EGL) context can be had; others pass
                from_gl = type(error).__module__.startswith("pyglet") or isinstance(
                    error, OSError | ImportError
                )
                if not from_gl:
                    raise
                raise EnvUnavailableError(
                    f"{ENV_ID} could not create a headless OpenGL (EGL) context: {error!r}; it needs "
                    "EGL and Mesa (e.g. Debian's libegl1 and libgl1-mesa-dri) or a GPU driver"
                ) from error
            finally:
                del opengl.print
            self.action_space = gym_spaces.Discrete(len(ACTION_NAMES))

        def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
            """Start an episode of ``options["task"]`` (or a drawn layout); returns ``(obs, {})``."""
            task = (options or {}).get("task")
            self._next_task = None if task is None else _task_numpy(task)
            return super().reset(seed=seed, options=options)

        def _gen_world(self) -> None:
            self.add_rect_room(min_x=0, max_x=ROOM_SIZE, min_z=0, max_z=ROOM_SIZE)
            task = self._next_task if self._next_task is not None else sample_layout_numpy(self.np_random)
            self.task = task
            self.boxes = [
                self.place_entity(
                    Box(color=COLOR_NAMES[int(c)], size=list(BOX_SIZE)),
                    pos=np.array([float(x), 0.0, float(z)]),
                    dir=0.0,
                )
                for (x, z), c in zip(task.box_pos, task.box_color, strict=True)
            ]
            x, z = task.agent_pos
            self.place_agent(pos=np.array([float(x), 0.0, float(z)]), dir=float(task.agent_heading))

        @property
        def pose(self) -> tuple[np.ndarray, np.float32]:
            """``(pos float32 [2], heading float32)`` of the agent now."""
            return np.array([self.agent.pos[0], self.agent.pos[2]], np.float32), np.float32(self.agent.dir)

        def set_pose(self, pos: Any, heading: Any, time: int) -> None:
            """Put the agent at ``pos`` facing ``heading`` with ``time`` steps taken (no render)."""
            self.agent.pos = np.array([float(np.float32(pos[0])), 0.0, float(np.float32(pos[1]))])
            self.agent.dir = float(np.float32(heading))
            self.step_count = int(time)

        def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
            """One action (0 forward 0.3 m, 1 left 18 deg, 2 right 18 deg); see the module docstring."""
            action = int(action)
            if action not in (FORWARD, TURN_LEFT, TURN_RIGHT):
                raise ValueError(f"{ENV_ID}: action must be 0, 1 or 2, got {action}")
            self.step_count += 1
            pos, heading = self.pose
            touched = -1
            if action == FORWARD:
                touched = int(touched_box(pos.astype(np.float64), float(heading), self.task.box_pos, np))
                if touched < 0 and self.move_agent(FORWARD_STEP, 0.0):
                    self.set_pose((self.agent.pos[0], self.agent.pos[2]), heading, self.step_count)
            else:
                turn = TURN_STEP if action == TURN_LEFT else -TURN_STEP
                self.agent.dir = float(np.float32(wrap_angle(float(heading) + turn, np)))
            obs = self.render_obs()
            terminated = touched >= 0
            reward = 0.0 if not terminated else (1.0 if touched == int(self.task.goal) else -1.0)
            truncated = not terminated and self.step_count >= self.max_episode_steps
            return obs, reward, terminated, truncated, {"touched": touched}

        def get_state_row(self) -> np.ndarray:
            """This env's snapshot, ``uint8 [SNAPSHOT_SIZE]`` (see :func:`decode_snapshot`)."""
            pos, heading = self.pose
            return _pack_row(pos, heading, self.step_count, self.task)

        def set_state_row(self, row: np.ndarray) -> np.ndarray:
            """Continue from a snapshot row: rebuild its layout, restore pose and time; returns the view."""
            pos, heading, time, task = _unpack_row(row)
            self.reset(options={"task": task})
            self.set_pose(pos, heading, time)
            return self.render_obs()

    ThreeBoxRoom.__module__ = __name__
    _ROOM_CLASS = ThreeBoxRoom
    return ThreeBoxRoom


def __getattr__(name: str) -> Any:
    if name == "ThreeBoxRoom":
        return _room_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ============================================================================= the GL worker thread
_GL_LOCK = threading.Lock()
_GL_EXECUTOR: ThreadPoolExecutor | None = None
_GL_THREAD: int | None = None


def on_gl_thread(fn: Any, *args: Any) -> Any:
    """Run ``fn(*args)`` on the process's one Miniworld thread and return its result.

    Every OpenGL context of every :class:`RoomBatch` is made and used there
    (see the module docstring); calls from that thread run directly.
    """
    global _GL_EXECUTOR, _GL_THREAD
    if threading.get_ident() == _GL_THREAD:
        return fn(*args)
    with _GL_LOCK:
        if _GL_EXECUTOR is None:
            _GL_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="miniworld-gl")
            _GL_THREAD = _GL_EXECUTOR.submit(threading.get_ident).result()
        executor = _GL_EXECUTOR
    return executor.submit(fn, *args).result()


def _close_rooms(rooms: list) -> None:
    """Release the rooms' OpenGL contexts (on the GL thread; a finaliser may run anywhere)."""

    def close() -> None:
        for room in rooms:
            room.shadow_window.close()
        rooms.clear()

    with contextlib.suppress(RuntimeError):  # the worker is gone (shutdown): the process frees all
        on_gl_thread(close)


class RoomBatch:
    """``num_envs`` :class:`ThreeBoxRoom` stepped together: the :class:`envs_jax.host.HostBatch`.

    ``resolution``: ``(height, width)`` of each observation (default
    ``DEFAULT_RESOLUTION``); ``max_steps``: the episode's time limit. All
    Miniworld work runs on :func:`on_gl_thread`, so any thread may call.
    Observations are ``uint8 [N, H, W, 3]``; no auto-reset.
    """

    def __init__(
        self,
        num_envs: int,
        resolution: tuple[int, int] = DEFAULT_RESOLUTION,
        max_steps: int = DEFAULT_MAX_STEPS,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"RoomBatch needs num_envs >= 1, got {num_envs}")
        self.num_envs = int(num_envs)
        self.resolution = (int(resolution[0]), int(resolution[1]))
        self.max_steps = int(max_steps)
        room_class = _room_class()

        def build() -> tuple[list, np.ndarray]:
            rooms = [room_class(self.resolution, self.max_steps) for _ in range(self.num_envs)]
            return rooms, np.stack([room.render_obs() for room in rooms])

        self._rooms, self._obs = on_gl_thread(build)
        self._finalizer = weakref.finalize(self, _close_rooms, self._rooms)
        self._finalizer.atexit = False

    @property
    def rooms(self) -> list:
        """The ThreeBoxRoom instances (use them only through :func:`on_gl_thread`)."""
        return self._rooms

    def reset(self, seeds: np.ndarray, mask: np.ndarray, tasks: Any = None) -> np.ndarray:
        """New episodes where ``mask [N]``: of ``tasks`` row i (a pytree with leading axis N), or,
        when ``tasks`` is None, of a layout drawn from ``seeds [N]`` (uint32). Other envs keep their
        state. Returns every env's current observation ``uint8 [N, H, W, 3]``."""
        seeds = np.asarray(seeds, np.uint32).reshape(self.num_envs)
        mask = np.asarray(mask, bool).reshape(self.num_envs)
        rows = {i: (None if tasks is None else _task_row(tasks, i)) for i in np.flatnonzero(mask)}

        def run() -> np.ndarray:
            for i, task in rows.items():
                options = None if task is None else {"task": task}
                self._obs[i] = self._rooms[i].reset(seed=int(seeds[i]), options=options)[0]
            return self._obs.copy()

        return on_gl_thread(run)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One action per env ``[N]`` -> ``(obs uint8 [N,H,W,3], reward float32 [N], terminated
        bool [N], truncated bool [N])``; truncated only without termination; no auto-reset."""
        actions = np.asarray(actions).reshape(self.num_envs)

        def run() -> tuple[np.ndarray, ...]:
            reward = np.zeros(self.num_envs, np.float32)
            terminated = np.zeros(self.num_envs, bool)
            truncated = np.zeros(self.num_envs, bool)
            for i, room in enumerate(self._rooms):
                self._obs[i], reward[i], terminated[i], truncated[i], _ = room.step(actions[i])
            return self._obs.copy(), reward, terminated, truncated

        return on_gl_thread(run)

    def get_state(self) -> np.ndarray:
        """Every env's snapshot ``uint8 [N, SNAPSHOT_SIZE]``: pose, time and layout (exact)."""
        return on_gl_thread(lambda: np.stack([room.get_state_row() for room in self._rooms]))

    def set_state(self, snapshot: np.ndarray) -> None:
        """Continue every env from ``snapshot uint8 [N, SNAPSHOT_SIZE]`` (from :meth:`get_state`)."""
        snapshot = np.asarray(snapshot, np.uint8).reshape(self.num_envs, SNAPSHOT_SIZE)

        def run() -> None:
            for i, room in enumerate(self._rooms):
                self._obs[i] = room.set_state_row(snapshot[i])

        on_gl_thread(run)

    def observe(self) -> np.ndarray:
        """Every env's current observation ``uint8 [N, H, W, 3]`` (no rendering)."""
        return self._obs.copy()

    def close(self) -> None:
        """Release the OpenGL contexts now (also done when the batch is garbage-collected)."""
        self._finalizer()


# ============================================================================= the HostEnv
def make_miniworld_room(
    resolution: tuple[int, int] = DEFAULT_RESOLUTION, max_steps: int = DEFAULT_MAX_STEPS
) -> Any:
    """The three-box room as a :class:`envs_jax.host.HostEnv` (``MiniworldThreeBoxes-v0``).

    Observation ``uint8 [H, W, 3]`` with ``(H, W) = resolution``; 3 actions;
    snapshots of :data:`SNAPSHOT_SIZE` bytes (exact resume); tasks drawn by
    :func:`sample_layout` and checked by :func:`is_valid_task`;
    ``env.expert_action(state, params)`` is :func:`snapshot_expert_action` of
    the state's snapshot. Raises ``ModuleNotFoundError`` (with the install
    command) when Miniworld is missing and ``EnvUnavailableError`` when no
    headless OpenGL context can be had (checked once, by building a tiny room).
    """
    from envs_jax.host.adapter import HostEnv

    height, width = (int(v) for v in resolution)
    if height < 8 or width < 8 or int(max_steps) < 1:
        raise ValueError(f"{ENV_ID} needs a resolution >= 8 x 8 and max_steps >= 1")
    require_miniworld()
    check_rendering()
    env = HostEnv(
        name=ENV_ID,
        make_batch=lambda num_envs: RoomBatch(num_envs, (height, width), int(max_steps)),
        observation_space=spaces.Box(0, 255, (height, width, 3), jnp.uint8),
        action_space=spaces.Discrete(len(ACTION_NAMES)),
        params=RoomParams(height, width, int(max_steps)),
        snapshot_size=SNAPSHOT_SIZE,
        sample_task=sample_layout,
        is_valid_task=is_valid_task,
        # A room holds an OpenGL context (~7-14 MB with Mesa): trials and evaluations start a batch
        # per call, and one at a time is in use; exact snapshots restore any evicted one.
        max_batches=2,
    )
    env.expert_action = lambda state, params=None: snapshot_expert_action(state.snapshot)
    env.episode_references = episode_references
    return env


def episode_references(params: Any, tasks: Any, num_episodes: int, key: Any) -> dict[str, np.ndarray]:
    """Reference returns per episode of a trial in the room (``jaxmeta.reports`` shows them beside
    the agent's): the Bayes-optimal searcher, which tries one untried box per episode until it has
    found the goal (Gridworld's :func:`envs_jax.gridworld.optimal_returns` with three blocks: the
    argument only needs every box reachable and the goal's colour uniform and unseen), and the best
    memoryless agent that ends every episode on a box, ``(2 - 3) / 3``."""
    from envs_jax.gridworld import optimal_returns

    del params, tasks, key  # the same for every layout
    return {
        "Bayes-optimal": optimal_returns(NUM_BOXES, num_episodes),
        "memoryless optimum": np.full(num_episodes, (2 - NUM_BOXES) / NUM_BOXES),
    }


def _build(obs_height: int, obs_width: int, max_steps: int) -> Any:
    return make_miniworld_room((obs_height, obs_width), max_steps)


ENTRY = EnvEntry(
    id=ENV_ID,
    build=_build,
    description="Chen & Agrawal's 3D Miniworld room (section 3.2): 4 m x 4 m, three coloured boxes, one "
    "goal (+1) and two traps (-1), goal never shown; first-person RGB view; forward 0.3 m / turn 18 "
    "degrees; stepped on the host",
    settings={
        "obs_height": Setting(
            DEFAULT_RESOLUTION[0], "observation height in pixels", "constructor", min=8, max=512
        ),
        "obs_width": Setting(
            DEFAULT_RESOLUTION[1], "observation width in pixels", "constructor", min=8, max=512
        ),
        "max_steps": Setting(DEFAULT_MAX_STEPS, "episode time limit (steps)", "constructor", min=1),
    },
    host=True,
)


__all__ = [
    "ACTION_NAMES",
    "AGENT_RADIUS",
    "BOX_RADIUS",
    "BOX_SIZE",
    "COLOR_NAMES",
    "DEFAULT_MAX_STEPS",
    "DEFAULT_RESOLUTION",
    "ENTRY",
    "FORWARD",
    "FORWARD_STEP",
    "ROOM_SIZE",
    "SNAPSHOT_SIZE",
    "TOUCH_DISTANCE",
    "TURN_LEFT",
    "TURN_RIGHT",
    "TURN_STEP",
    "RoomBatch",
    "RoomParams",
    "RoomTask",
    "check_rendering",
    "decode_snapshot",
    "episode_references",
    "expert_action",
    "is_valid_task",
    "make_miniworld_room",
    "move_agent",
    "on_gl_thread",
    "plan_distances",
    "require_miniworld",
    "sample_layout",
    "sample_layout_numpy",
    "snapshot_expert_action",
    "touched_box",
    "wall_blocks",
    "wrap_angle",
]

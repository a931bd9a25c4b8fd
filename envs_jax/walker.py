"""A planar two-legged walker on a parameterised obstacle course: POET's BipedalWalkerHardcore variant
(Wang et al. 2019), rewritten as a purpose-written simplified model in pure JAX so that one program vmaps
over terrains and agents.

The model (``docs/walker.md`` compares it with jax2d, the rigid-body engine under Kinetix):

* **Body.** One rigid hull (mass ``hull_mass``, planar pose ``x, y, angle``) carries two legs of a
  thigh and a shin each, attached at one hip point below the hull's centre, as BipedalWalker's. The legs
  are massless and their four joints are velocity-controlled motors: an action in ``[-1, 1]^4`` sets
  each joint's speed (``max_joint_speed`` rad/s), within BipedalWalker's joint limits.
* **Contact.** Each foot meets the ground with a spring-damper normal force and a viscous friction
  saturated at Coulomb's cone; the forces act on the hull at the foot. The ground is a height field
  interpolated linearly between points ``cell`` apart: stumps are steep ramps the feet must clear.
  Four substeps of ``dt / 4`` per control step keep the stiff contact stable.
* **Course.** Flat for ``start_flat`` metres, then an obstacle every ``obstacle_spacing`` metres: a gap
  (a pit) of width ~ U[gap_low, gap_high] or a stump of height ~ U[stump_low, stump_high] (each kind drawn
  when its range is not zero; both in POET's terrain units, ``TERRAIN_UNIT`` = 0.3 m here: BipedalWalker's
  terrain step scaled to this walker's legs), on ground whose heights follow a smoothed random walk
  scaled by ``roughness``. The encoding ``(roughness, stump_low, stump_high, gap_low, gap_high)`` is
  POET's; the layout is drawn from the env params' ``seed``, so a terrain is a point in ``EnvParams`` and
  programs vmap over them.
* **Reward and end.** Like BipedalWalker's: ``130 / 30`` per metre gained (the default 24 m course is
  worth 104, plus ``finish_bonus`` 100 on reaching its end, so that a finished course scores about 200,
  and BipedalWalker's ~300 for its 90 m: POET's minimal criterion [25, 340] is rescaled by 2/3 for it),
  the change of ``-5 x |hull angle|`` (shaping) and a motor cost of ``0.00035 * 80 * sum|a|``; the hull
  touching the ground or falling into a gap ends the episode with ``-100``. ``max_steps_in_episode``
  caps the rest (truncation).
* **Known simplification.** Massless legs driven at a commanded speed can push the hull as hard as the
  contact allows: the motors have a speed limit but no torque limit. ``docs/walker.md`` says what this
  changes against BipedalWalker.

Observation (24 floats, BipedalWalker's layout): hull angle, angular speed, x and y speed, per leg hip
angle and speed, knee angle and speed, foot contact; then 10 "lidar" heights: the ground 0.5 .. 5 m ahead
relative to the hull, clipped to [-2, 2].
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

HULL_HALF_WIDTH, HULL_HALF_HEIGHT, HIP_DROP = 0.7, 0.25, 0.25
THIGH, SHIN = 0.7, 0.7
HIP_LIMITS, KNEE_LIMITS = (-0.8, 1.1), (-1.6, -0.1)
NUM_LIDAR, LIDAR_SPACING = 10, 0.5
SUBSTEPS = 4
PIT_DEPTH = 20.0  # a gap's floor: deep enough that falling in ends the episode


@struct.dataclass
class EnvParams(environment.EnvParams):
    # The terrain (POET's encoding) and its layout seed.
    roughness: float = 0.0
    stump_low: float = 0.0
    stump_high: float = 0.0
    gap_low: float = 0.0
    gap_high: float = 0.0
    seed: int = 0
    # The model (the course's length and cell are the constructor's: they fix the height field's shape).
    start_flat: float = 4.0
    obstacle_spacing: float = 3.0
    dt: float = 0.04
    gravity: float = 10.0
    hull_mass: float = 5.0
    hull_inertia: float = 2.0
    stiffness: float = 2000.0
    damping: float = 100.0
    friction: float = 1.5
    viscous_friction: float = 100.0
    max_joint_speed: float = 6.0
    finish_bonus: float = 100.0
    max_steps_in_episode: int = 500


@struct.dataclass
class EnvState(environment.EnvState):
    pose: jax.Array  # [3] hull x, y, angle
    velocity: jax.Array  # [3] their rates
    joints: jax.Array  # [4] hip, knee of leg 0, hip, knee of leg 1
    joint_speed: jax.Array  # [4] the last commanded joint speeds
    heights: jax.Array  # [num_cells] the ground
    time: jax.Array


# Stump heights and gap widths are in POET's units: BipedalWalker's terrain step (14/30 m) scaled by this
# walker's legs against BipedalWalker's (1.4 m / 2.27 m), so that POET's encodings and mutation steps
# mean the same obstacle relative to the body (a stump of 1.0 is 0.3 m, a third of a thigh or so).
TERRAIN_UNIT = 0.3  # metres

TERRAIN_LIMITS = {  # POET's parameter space (its reproducer's caps): a range check for configs and mutations
    "roughness": (0.0, 10.0),
    "stump_low": (0.0, 5.0),
    "stump_high": (0.0, 5.0),
    "gap_low": (0.0, 8.0),
    "gap_high": (0.0, 8.0),
}


def check_terrain(encoding: dict[str, float]) -> None:
    """A ``ValueError`` naming the parameter for a terrain outside POET's ranges or an empty range."""
    for name, (low, high) in TERRAIN_LIMITS.items():
        value = encoding.get(name, 0.0)
        if not low <= value <= high:
            raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    for kind in ("stump", "gap"):
        if encoding.get(f"{kind}_low", 0.0) > encoding.get(f"{kind}_high", 0.0):
            low, high = encoding[f"{kind}_low"], encoding[f"{kind}_high"]
            raise ValueError(f"{kind}_low must be <= {kind}_high, got {low} > {high}")


# ----------------------------------------------------------------------------- POET's terrain encoding
ENCODING = ("roughness", "stump_low", "stump_high", "gap_low", "gap_high")
# POET's reproducer (uber-research/poet ``reproduce_ops.py``): roughness moves by U(-0.6, 0.6); a stump
# or gap range, once it exists, moves each end by -inc, 0 or +inc (not both 0), never below its first
# range's ends, never above the cap, low <= high. In POET's units (TERRAIN_UNIT), with its caps.
ROUGHNESS_STEP = 0.6
RANGE_MUTATIONS = {  # (first range, increment, cap)
    "stump": ((0.0, 0.4), 0.2, TERRAIN_LIMITS["stump_high"][1]),
    "gap": ((0.0, 0.8), 0.4, TERRAIN_LIMITS["gap_high"][1]),
}


def encode(params: EnvParams) -> jax.Array:
    """A terrain's encoding ``[5]``: ``ENCODING``'s fields of ``params``."""
    return jnp.stack([jnp.asarray(getattr(params, name), jnp.float32) for name in ENCODING])


def with_encoding(params: EnvParams, encoding: jax.Array, seed: jax.Array | None = None) -> EnvParams:
    """``params`` on the terrain ``encoding`` (and layout ``seed``, if given)."""
    fields = {name: encoding[i] for i, name in enumerate(ENCODING)}
    if seed is not None:
        fields["seed"] = seed
    return params.replace(**fields)


def _round1(x: jax.Array) -> jax.Array:
    return jnp.round(x * 10.0) / 10.0


def _mutate_range(key: jax.Array, low: jax.Array, high: jax.Array, kind: str) -> tuple[jax.Array, jax.Array]:
    (first_low, first_high), increment, cap = RANGE_MUTATIONS[kind]
    changes = jnp.array([increment, 0.0, -increment])
    new_low = _round1(low + changes)[:, None] * jnp.ones((1, 3))  # [3, 3]: (change of low, of high)
    new_high = _round1(high + changes)[None, :] * jnp.ones((3, 1))
    moved = ~((changes[:, None] == 0) & (changes[None, :] == 0))
    allowed = (
        moved
        & (new_low <= cap)
        & (new_low >= first_low)
        & (new_high <= cap)
        & (new_high >= first_high)
        & (new_low <= new_high)
    ).reshape(-1)
    pick = jax.random.categorical(key, jnp.where(allowed, 0.0, -jnp.inf))
    some = allowed.any()
    low2 = jnp.where(some, new_low.reshape(-1)[pick], low)
    high2 = jnp.where(some, new_high.reshape(-1)[pick], high)
    empty = high <= 0.0  # no obstacles of this kind yet: the first range
    return jnp.where(empty, first_low, low2), jnp.where(empty, first_high, high2)


def mutate_encoding(key: jax.Array, encoding: jax.Array) -> jax.Array:
    """A child terrain of ``encoding`` by POET's reproducer (``RANGE_MUTATIONS``): every part moves."""
    rough_key, stump_key, gap_key = jax.random.split(key, 3)
    roughness = _round1(
        encoding[0] + jax.random.uniform(rough_key, (), minval=-ROUGHNESS_STEP, maxval=ROUGHNESS_STEP)
    )
    roughness = jnp.clip(roughness, *TERRAIN_LIMITS["roughness"])
    stump = _mutate_range(stump_key, encoding[1], encoding[2], "stump")
    gap = _mutate_range(gap_key, encoding[3], encoding[4], "gap")
    return jnp.stack([roughness, *stump, *gap]).astype(jnp.float32)


def terrain_heights(params: EnvParams, course_length: float, cell: float, count: int) -> jax.Array:
    """The ground height at ``count`` points ``cell`` apart from x = 0, drawn from ``params.seed``."""
    key = jax.random.PRNGKey(params.seed)
    walk_key, kind_key, size_key = jax.random.split(key, 3)
    x = jnp.arange(count) * cell
    # Rough ground: a random walk smoothed by a moving average, 0 on the flat start.
    steps = jax.random.normal(walk_key, (count,)) * cell
    walk = jnp.cumsum(steps)
    kernel = jnp.ones(9) / 9
    smooth = jnp.convolve(walk, kernel, mode="same")
    rough = params.roughness * 0.1 * (smooth - smooth[0])
    rough = jnp.where(
        x < params.start_flat,
        0.0,
        rough - jnp.interp(params.start_flat, x, smooth - smooth[0]) * params.roughness * 0.1,
    )
    # Obstacles: one every obstacle_spacing metres after the flat start.
    max_obstacles = 64
    centres = params.start_flat + params.obstacle_spacing * (jnp.arange(max_obstacles) + 0.5)
    has_stumps, has_gaps = params.stump_high > 0, params.gap_high > 0
    is_gap = jax.random.bernoulli(
        kind_key, jnp.where(has_stumps & has_gaps, 0.5, jnp.where(has_gaps, 1.0, 0.0)), (max_obstacles,)
    )
    is_stump = ~is_gap & has_stumps
    u = jax.random.uniform(size_key, (max_obstacles,))
    stump = (params.stump_low + u * (params.stump_high - params.stump_low)) * TERRAIN_UNIT
    gap = (params.gap_low + u * (params.gap_high - params.gap_low)) * TERRAIN_UNIT
    within = centres < course_length
    dist = jnp.abs(x[:, None] - centres[None, :])  # [count, obstacles]
    stump_cover = (dist <= 0.3) & (is_stump & within)[None, :]
    gap_cover = (dist <= gap[None, :] / 2) & (is_gap & within & (gap > 0))[None, :]
    raised = jnp.max(jnp.where(stump_cover, stump[None, :], 0.0), axis=1)
    pit = jnp.any(gap_cover, axis=1)
    return jnp.where(pit, -PIT_DEPTH, rough + raised)


def ground(heights: jax.Array, x: jax.Array, cell: float) -> jax.Array:
    """The ground's height at ``x`` (linear between points ``cell`` apart; constant beyond them)."""
    return jnp.interp(x, jnp.arange(heights.shape[0]) * cell, heights)


def rotate(angle: jax.Array, v: jax.Array) -> jax.Array:
    c, s = jnp.cos(angle), jnp.sin(angle)
    return jnp.stack([c * v[..., 0] - s * v[..., 1], s * v[..., 0] + c * v[..., 1]], axis=-1)


def feet(pose: jax.Array, joints: jax.Array) -> jax.Array:
    """The two feet's positions ``[2, 2]`` for a hull pose and joint angles (angles from straight down)."""
    hip = pose[:2] + rotate(pose[2], jnp.array([0.0, -HIP_DROP]))
    q = joints.reshape(2, 2)
    thigh_angle = pose[2] + q[:, 0]
    shin_angle = thigh_angle + q[:, 1]
    down = lambda a: jnp.stack([jnp.sin(a), -jnp.cos(a)], axis=-1)  # noqa: E731
    return hip[None, :] + THIGH * down(thigh_angle) + SHIN * down(shin_angle)


def hull_corners(pose: jax.Array) -> jax.Array:
    corners = jnp.array(
        [
            [-HULL_HALF_WIDTH, -HULL_HALF_HEIGHT],
            [HULL_HALF_WIDTH, -HULL_HALF_HEIGHT],
            [-HULL_HALF_WIDTH, HULL_HALF_HEIGHT],
            [HULL_HALF_WIDTH, HULL_HALF_HEIGHT],
        ]
    )
    return pose[:2] + rotate(pose[2], corners)


def substep(
    state: EnvState, speed: jax.Array, params: EnvParams, dt: float, cell: float
) -> tuple[EnvState, jax.Array]:
    """Advance ``dt`` seconds with joint speeds ``speed``; returns the new state and the feet's contact."""
    foot, foot_velocity = jax.jvp(feet, (state.pose, state.joints), (state.velocity, speed))
    floor = ground(state.heights, foot[:, 0], cell)
    depth = floor - foot[:, 1]
    touching = depth > 0
    normal = jnp.where(
        touching, jnp.maximum(params.stiffness * depth - params.damping * foot_velocity[:, 1], 0.0), 0.0
    )
    limit = params.friction * normal
    tangent = jnp.clip(-params.viscous_friction * foot_velocity[:, 0], -limit, limit)
    force = jnp.stack([tangent, normal], axis=-1)  # [2 feet, 2]
    lever = foot - state.pose[None, :2]
    torque = jnp.sum(lever[:, 0] * force[:, 1] - lever[:, 1] * force[:, 0])
    total = force.sum(0) + jnp.array([0.0, -params.gravity * params.hull_mass])
    accel = jnp.concatenate([total / params.hull_mass, (torque / params.hull_inertia)[None]])
    velocity = state.velocity + dt * accel
    pose = state.pose + dt * velocity
    low = jnp.array([HIP_LIMITS[0], KNEE_LIMITS[0]] * 2)
    high = jnp.array([HIP_LIMITS[1], KNEE_LIMITS[1]] * 2)
    joints = jnp.clip(state.joints + dt * speed, low, high)
    return state.replace(pose=pose, velocity=velocity, joints=joints, joint_speed=speed), touching


class Walker(environment.Environment[EnvState, EnvParams]):
    """Build it with ``envs_jax.make("Walker-v0", roughness=..., stump_high=...)``; see the module.
    ``course_length`` (metres to the finish) and ``cell`` (the height field's spacing) are static."""

    def __init__(self, course_length: float = 24.0, cell: float = 0.2) -> None:
        super().__init__()
        if not course_length > 0 or not cell > 0:
            raise ValueError(f"course_length and cell must be > 0, got {course_length}, {cell}")
        self.course_length, self.cell = float(course_length), float(cell)
        self.num_cells = round((course_length + 10.0) / cell) + 1  # 10 m of run-out past the finish

    @property
    def default_params(self) -> EnvParams:
        return EnvParams()

    @property
    def name(self) -> str:
        return "Walker-v0"

    @property
    def num_actions(self) -> int:
        return 4

    def action_space(self, params: EnvParams | None = None) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, (4,), jnp.float32)

    def observation_space(self, params: EnvParams | None = None) -> spaces.Box:
        return spaces.Box(-jnp.inf, jnp.inf, (14 + NUM_LIDAR,), jnp.float32)

    def state_space(self, params: EnvParams) -> spaces.Dict:
        return spaces.Dict({"time": spaces.Discrete(params.max_steps_in_episode + 1)})

    def step_env(
        self, key: jax.Array, state: EnvState, action: jax.Array, params: EnvParams
    ) -> tuple[jax.Array, EnvState, jax.Array, jax.Array, dict[str, Any]]:
        action = jnp.clip(jnp.reshape(action, (4,)), -1.0, 1.0)
        speed = action * params.max_joint_speed
        start_x = state.pose[0]
        shaping_before = -5.0 * jnp.abs(state.pose[2])
        # Substeps of dt / 4 keep the stiff contact stable (stiffness, damping and friction times the
        # hull's lever arm squared over its inertia stay well inside explicit Euler's bound).
        quarter = params.dt / SUBSTEPS

        def one(state: EnvState, _: None) -> tuple[EnvState, jax.Array]:
            return substep(state, speed, params, quarter, self.cell)

        state, touching = jax.lax.scan(one, state, None, length=SUBSTEPS)
        touching = touching[-1]
        state = state.replace(time=state.time + 1)
        corners = hull_corners(state.pose)
        fell = jnp.any(corners[:, 1] < ground(state.heights, corners[:, 0], self.cell)) | (
            state.pose[1] < -2.0
        )
        finished = state.pose[0] >= self.course_length
        progress = 130.0 / 30.0 * (state.pose[0] - start_x)
        shaping = -5.0 * jnp.abs(state.pose[2]) - shaping_before
        reward = progress + shaping - 0.00035 * 80.0 * jnp.abs(action).sum()
        reward = jnp.where(fell, -100.0, reward + jnp.where(finished, params.finish_bonus, 0.0))
        terminated = fell | finished
        info = {
            "discount": 1.0 - terminated.astype(jnp.float32),
            "fell": fell,
            "finished": finished,
            "x": state.pose[0],
            "contact": touching,
        }
        return self.observation(state, touching, params), state, reward.astype(jnp.float32), terminated, info

    def observation(self, state: EnvState, touching: jax.Array, params: EnvParams) -> jax.Array:
        ahead = state.pose[0] + LIDAR_SPACING * (jnp.arange(NUM_LIDAR) + 1)
        lidar = jnp.clip(ground(state.heights, ahead, self.cell) - state.pose[1], -2.0, 2.0)
        legs = jnp.stack(
            [state.joints.reshape(2, 2), state.joint_speed.reshape(2, 2) / params.max_joint_speed], -1
        )
        per_leg = jnp.concatenate(
            [legs.reshape(2, 4), touching[:, None].astype(jnp.float32)], axis=1
        )  # [2, 5]
        hull = jnp.stack(
            [state.pose[2], state.velocity[2] * 0.2, state.velocity[0] * 0.3, state.velocity[1] * 0.3]
        )
        return jnp.concatenate([hull, per_leg.reshape(-1), lidar]).astype(jnp.float32)

    def reset_env(self, key: jax.Array, params: EnvParams) -> tuple[jax.Array, EnvState]:
        heights = terrain_heights(params, self.course_length, self.cell, self.num_cells)
        joints = jnp.array([0.3, -0.6, -0.3, -0.6])
        # Stand with the lower foot on the ground.
        pose = jnp.array([1.5, 0.0, 0.0])
        lowest = jnp.min(feet(pose, joints)[:, 1])
        pose = pose.at[1].set(-lowest + 0.01 + heights[0])
        state = EnvState(
            pose=pose,
            velocity=jnp.zeros(3),
            joints=joints,
            joint_speed=jnp.zeros(4),
            heights=heights,
            time=jnp.zeros((), jnp.int32),
        )
        return self.observation(state, jnp.zeros(2, bool), params), state

    def is_terminal(self, state: EnvState, params: EnvParams) -> jax.Array:
        return jnp.zeros((), bool)

    # ------------------------------------------------------------ POET's terrain interface
    encoding_names = ENCODING

    def encode(self, params: EnvParams) -> jax.Array:
        return encode(params)

    def with_encoding(
        self, params: EnvParams, encoding: jax.Array, seed: jax.Array | None = None
    ) -> EnvParams:
        return with_encoding(params, encoding, seed)

    def mutate_encoding(self, key: jax.Array, encoding: jax.Array) -> jax.Array:
        return mutate_encoding(key, encoding)

    def render_points(self, state: EnvState) -> dict[str, jax.Array]:
        """Hull corners, hip, knees and feet, for drawing (``benchmarks`` GIFs)."""
        hip = state.pose[:2] + rotate(state.pose[2], jnp.array([0.0, -HIP_DROP]))
        q = state.joints.reshape(2, 2)
        thigh = state.pose[2] + q[:, 0]
        knees = hip[None] + THIGH * jnp.stack([jnp.sin(thigh), -jnp.cos(thigh)], -1)
        return {
            "hull": hull_corners(state.pose),
            "hip": hip,
            "knees": knees,
            "feet": feet(state.pose, state.joints),
        }


__all__ = [
    "ENCODING",
    "RANGE_MUTATIONS",
    "TERRAIN_LIMITS",
    "TERRAIN_UNIT",
    "EnvParams",
    "EnvState",
    "Walker",
    "check_terrain",
    "encode",
    "feet",
    "ground",
    "mutate_encoding",
    "terrain_heights",
    "with_encoding",
]

"""Walker-v0's simplified physics against jax2d (the rigid-body engine under Kinetix) on the same biped:
env steps per second of random-action episodes, timed side by side in one process, and a check that the
jax2d walker behaves sanely.

The same work on both sides: ``jax.jit(jax.vmap(episode))`` over 512 walkers, 200 control steps of
0.04 s each inside one ``lax.scan``, actions uniform in [-1, 1]^4 scaled to joint speeds of at most
6 rad/s, on flat ground.

* **Ours**: ``envs_jax`` ``Walker-v0`` (``env.reset`` then ``env.step_env``: 4 explicit substeps of
  0.01 s, plus the observation, reward and termination of the env step), and its physics alone
  (``envs_jax.walker.substep`` x 4, no observation or reward).
* **jax2d** (``jax2d==1.0.2``): a hull box 1.4 x 0.5 m of mass 5 and two legs of a thigh and a shin
  (0.7 m boxes of real mass, ``THIGH_MASS`` / ``SHIN_MASS``) on revolute joints at one hip point 0.25 m
  below the hull's centre, as Walker-v0's; jax2d's joint motors (the action sets each motor's target
  speed), BipedalWalker's joint limits (hip -0.8..1.1, knee -1.6..-0.1 rad), a static 200 x 2 m box as
  the ground, the same starting pose. One control step is ``J2D_SUBSTEPS`` = 4 engine steps of
  ``dt`` = 0.01 s, each with jax2d's default solver (10 iterations, batches of 16 contact manifolds,
  warm starting); only the physics is stepped (no observation or reward).

Timing: compile time apart; then a first call of each program (untimed, unless it takes >= 10 s: then
it counts as a timed call) and ``--repeats`` timed blocks each (0.3 s of repeated calls, or one call of a
slower program), alternating between the programs, the order rotated every round; the summary is the
median. One jax2d call at batch 512 takes ~40 s on 2 shared cores: its repeats are cut (never below 3)
so that its timed calls after the first fit ``--budget-s`` (default 100 s), said in the result's
``repeats_note``. Other jobs may share the CPU: the load averages and each call's CPU time are recorded.

Sanity (jax2d, one walker, 200 steps): with zero actions (jax2d's motors are off for an action of
exactly 0: the joints go limp), with a tiny action 1e-6 (the motors on, aiming at about zero joint
speed, as Walker-v0's zero action holds its joints) and Walker-v0's zero action for reference: the
hull's height at the start and end, its lowest corner, its angle, no NaN.

    python benchmarks/walker_physics.py [--repeats 5] [--budget-s 100] [--quick] [--out PATH]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # run as `python benchmarks/walker_physics.py`
    sys.path.insert(0, str(_ROOT))

import envs_jax  # noqa: E402
from benchmarks import _common  # noqa: E402
from envs_jax import walker as wk  # noqa: E402

BATCH, STEPS, REPEATS = 512, 200, 5
SANITY_STEPS = 200
BLOCK_S = 0.3  # a timed block: this long of repeated calls, or one call of a slower program
SLOW_S = 10.0  # a first call this slow counts as a timed call (as benchmarks._common.compile_and_time)
BUDGET_S = 100.0  # default --budget-s: the timed calls of the slowest program beyond its first
MIN_REPEATS = 3

# ---- the jax2d walker
J2D_DT, J2D_SUBSTEPS = 0.01, 4  # 4 x 0.01 s = one 0.04 s control step, Walker-v0's own substeps
SOLVER_ITERATIONS, SOLVER_BATCH = 10, 16  # jax2d's defaults (StaticSimParams)
THIGH_WIDTH, SHIN_WIDTH = 0.2, 0.16  # metres
THIGH_MASS, SHIN_MASS = 0.4, 0.4  # kg (Walker-v0's legs are massless)
MOTOR_POWER = 1.0  # jax2d's per-joint factor on SimParams.base_motor_power (Kinetix's motors use 1)
GROUND_WIDTH, GROUND_DEPTH = 200.0, 2.0  # a static box, top face at y = 0
CLIP_POSITION = 1000.0  # jax2d clips every position to +-15 m by default (Kinetix's scene is 5 m)
# Body order in jax2d's polygon arrays: the ground first (the only static polygon), then the walker.
GROUND, HULL, THIGH0, SHIN0, THIGH1, SHIN1 = range(6)


def _down(angle: float) -> np.ndarray:
    return np.array([math.sin(angle), -math.cos(angle)])


def _box_corners(centre: np.ndarray, angle: float, width: float, height: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    half = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * np.array([width, height]) / 2
    return centre + half @ np.array([[c, s], [-s, c]])


def walker_start(env: Any, params: Any) -> tuple[np.ndarray, np.ndarray]:
    """Walker-v0's starting hull pose ``[3]`` and joint angles ``[4]`` (its reset on flat ground)."""
    _, state = env.reset(jax.random.PRNGKey(0), params)
    return np.asarray(state.pose, np.float64), np.asarray(state.joints, np.float64)


def leg_poses(pose: np.ndarray, joints: np.ndarray) -> list[tuple[np.ndarray, float, float, float]]:
    """``(centre, angle, width, length)`` of thigh 0, shin 0, thigh 1, shin 1 for a hull pose and joints
    (Walker-v0's convention: angles from straight down, counter-clockwise positive)."""
    hip = pose[:2] + np.array([math.sin(pose[2]), -math.cos(pose[2])]) * wk.HIP_DROP
    out = []
    for leg in range(2):
        thigh_angle = pose[2] + joints[2 * leg]
        shin_angle = thigh_angle + joints[2 * leg + 1]
        knee = hip + wk.THIGH * _down(thigh_angle)
        out.append((hip + wk.THIGH / 2 * _down(thigh_angle), thigh_angle, THIGH_WIDTH, wk.THIGH))
        out.append((knee + wk.SHIN / 2 * _down(shin_angle), shin_angle, SHIN_WIDTH, wk.SHIN))
    return out


def build_jax2d(pose: np.ndarray, joints: np.ndarray, gravity: float, hull_mass: float, mu: float) -> dict:
    """The jax2d scene: engine, parameters, the walker's starting state (lowest corner 0.01 m above the
    ground) and what the settings are."""
    from jax2d import scene
    from jax2d.engine import PhysicsEngine, create_empty_sim
    from jax2d.sim_state import SimParams, StaticSimParams

    static = StaticSimParams(
        num_polygons=6,
        num_circles=2,
        num_joints=4,
        num_thrusters=1,
        max_polygon_vertices=4,
        num_solver_iterations=SOLVER_ITERATIONS,
        solver_batch_size=SOLVER_BATCH,
        do_warm_starting=True,
        num_static_fixated_polys=1,
    )
    sim_params = SimParams(dt=J2D_DT, clip_position=CLIP_POSITION)
    # jax2d mixes two shapes' friction as sqrt((f1 b)^2 + (f2 b)^2), b = base_friction: the same f on
    # every shape gives Walker-v0's coefficient mu
    friction = mu / (sim_params.base_friction * math.sqrt(2.0))
    legs = leg_poses(pose, joints)
    lowest = min(_box_corners(c, a, w, h)[:, 1].min() for c, a, w, h in legs)
    lift = 0.01 - lowest
    state = create_empty_sim(static, add_floor=False, add_walls_and_ceiling=False)
    state = state.replace(gravity=jnp.array([0.0, -gravity]))

    def box(state: Any, centre: np.ndarray, angle: float, width: float, height: float, mass: float | None):
        return scene.add_rectangle_to_scene(
            state,
            static,
            position=jnp.asarray(centre, jnp.float32),
            dimensions=jnp.array([width, height], jnp.float32),
            rotation=float(angle),
            density=1.0 if mass is None else mass / (width * height),
            friction=friction,
            fixated=mass is None,
        )[0]

    state = box(state, np.array([0.0, -GROUND_DEPTH / 2]), 0.0, GROUND_WIDTH, GROUND_DEPTH, None)
    hull_centre = pose[:2] + np.array([0.0, lift])
    state = box(state, hull_centre, pose[2], 2 * wk.HULL_HALF_WIDTH, 2 * wk.HULL_HALF_HEIGHT, hull_mass)
    for (centre, angle, width, length), mass in zip(legs, (THIGH_MASS, SHIN_MASS) * 2, strict=True):
        state = box(state, centre + np.array([0.0, lift]), angle, width, length, mass)
    motor_speed = 1.0  # x SimParams.base_motor_speed (6 rad/s) = Walker-v0's max_joint_speed
    for leg in range(2):
        thigh, shin = (THIGH0, SHIN0) if leg == 0 else (THIGH1, SHIN1)
        for a, b, a_pos, b_pos, limits in (
            (HULL, thigh, (0.0, -wk.HIP_DROP), (0.0, wk.THIGH / 2), wk.HIP_LIMITS),
            (thigh, shin, (0.0, -wk.THIGH / 2), (0.0, wk.SHIN / 2), wk.KNEE_LIMITS),
        ):
            state, _ = scene.add_revolute_joint_to_scene(
                state,
                static,
                a_index=a,
                b_index=b,
                a_relative_pos=jnp.array(a_pos),
                b_relative_pos=jnp.array(b_pos),
                motor_on=True,
                motor_speed=motor_speed,
                motor_power=MOTOR_POWER,
                has_joint_limits=True,
                min_rotation=limits[0],
                max_rotation=limits[1],
            )
    masses = [round(float(x), 4) for x in 1.0 / np.asarray(state.polygon.inverse_mass[HULL:])]
    inertias = [round(float(x), 4) for x in 1.0 / np.asarray(state.polygon.inverse_inertia[HULL:])]
    settings = {
        "dt_s": J2D_DT,
        "substeps_per_control_step": J2D_SUBSTEPS,
        "control_step_s": J2D_DT * J2D_SUBSTEPS,
        "num_solver_iterations": SOLVER_ITERATIONS,
        "solver_batch_size": SOLVER_BATCH,
        "do_warm_starting": True,
        "shapes": "6 polygons (static ground box, hull, 2 thighs, 2 shins), 4 joints; 2 circles and 1 "
        "thruster unused and inactive (jax2d 1.0.2 fails to build an engine with fewer)",
        "masses_kg": {"hull": masses[0], "thigh": masses[1], "shin": masses[2]},
        "inertias_kg_m2": {"hull": inertias[0], "thigh": inertias[1], "shin": inertias[2]},
        "widths_m": {"thigh": THIGH_WIDTH, "shin": SHIN_WIDTH},
        "joint_limits_rad": {"hip": list(wk.HIP_LIMITS), "knee": list(wk.KNEE_LIMITS)},
        "motors": f"revolute joint motors: target speed = action x motor_speed {motor_speed} x "
        f"base_motor_speed {sim_params.base_motor_speed} rad/s; motor_power {MOTOR_POWER} x base_motor_power "
        f"{sim_params.base_motor_power} (impulse per step = power x dt x axial inertia x "
        "tanh(0.1 x speed error): torque limited by the legs' inertia)",
        "friction": f"{friction:.3f} per shape x base_friction {sim_params.base_friction}: mu = {mu}",
        "gravity": gravity,
        "ground": f"static box {GROUND_WIDTH:.0f} x {GROUND_DEPTH:.0f} m, top at y = 0",
        "clip_position_m": CLIP_POSITION,
        "start_lift_m": round(float(lift), 4),
    }
    return {"engine": PhysicsEngine(static), "params": sim_params, "state": state, "settings": settings}


def jax2d_episode(j2d: dict, steps: int, action_fn: Any) -> Any:
    """``episode(key) -> summary`` of one jax2d walker: ``steps`` control steps of ``J2D_SUBSTEPS``."""
    engine, sim_params, state0 = j2d["engine"], j2d["params"], j2d["state"]

    def episode(key: jax.Array) -> dict[str, jax.Array]:
        def control(state: Any, k: jax.Array) -> tuple[Any, jax.Array]:
            # jax2d's action vector: one entry per joint motor, then one per thruster (one inactive)
            action = jnp.concatenate([action_fn(k), jnp.zeros(1)])

            def sub(s: Any, _: None) -> tuple[Any, None]:
                return engine.step(s, sim_params, action)[0], None

            state, _ = jax.lax.scan(sub, state, None, length=J2D_SUBSTEPS)
            return state, state.polygon.position[HULL, 1]

        state, hull_y = jax.lax.scan(control, state0, jax.random.split(key, steps))
        corners = jax.vmap(
            lambda c, r, v: c + v @ jnp.array([[jnp.cos(r), jnp.sin(r)], [-jnp.sin(r), jnp.cos(r)]])
        )(state.polygon.position, state.polygon.rotation, state.polygon.vertices)
        finite = jnp.isfinite(state.polygon.position).all() & jnp.isfinite(state.polygon.velocity).all()
        return {
            "hull_y": hull_y,
            "hull_x_end": state.polygon.position[HULL, 0],
            "hull_angle_end": state.polygon.rotation[HULL],
            "hull_lowest_corner_end": corners[HULL, :, 1].min(),
            "joints_end": jnp.stack(
                [
                    state.polygon.rotation[b] - state.polygon.rotation[a]
                    for a, b in ((HULL, THIGH0), (THIGH0, SHIN0), (HULL, THIGH1), (THIGH1, SHIN1))
                ]
            ),
            "finite": finite & jnp.isfinite(hull_y).all(),
        }

    return episode


def ours_episode(env: Any, params: Any, steps: int, action_fn: Any) -> Any:
    """``episode(key) -> summary`` of one Walker-v0 walker: ``env.reset``, then ``steps`` ``step_env``."""

    def episode(key: jax.Array) -> dict[str, jax.Array]:
        reset_key, step_key = jax.random.split(key)
        _, state = env.reset(reset_key, params)

        def control(state: Any, k: jax.Array) -> tuple[Any, tuple]:
            obs, state, reward, _, _ = env.step_env(k, state, action_fn(k), params)
            return state, (state.pose[1], reward, obs.sum())

        state, (hull_y, reward, obs) = jax.lax.scan(control, state, jax.random.split(step_key, steps))
        corners = wk.hull_corners(state.pose)
        return {
            "hull_y": hull_y,
            "hull_x_end": state.pose[0],
            "hull_angle_end": state.pose[2],
            "hull_lowest_corner_end": corners[:, 1].min(),
            "joints_end": state.joints,
            "finite": jnp.isfinite(state.pose).all() & jnp.isfinite(reward).all() & jnp.isfinite(obs).all(),
        }

    return episode


def ours_physics_episode(env: Any, params: Any, steps: int, action_fn: Any) -> Any:
    """Walker-v0's physics alone: ``SUBSTEPS`` x ``walker.substep`` per control step, no observation,
    reward or termination."""
    quarter = params.dt / wk.SUBSTEPS

    def episode(key: jax.Array) -> dict[str, jax.Array]:
        reset_key, step_key = jax.random.split(key)
        _, state = env.reset(reset_key, params)

        def control(state: Any, k: jax.Array) -> tuple[Any, jax.Array]:
            speed = action_fn(k) * params.max_joint_speed

            def sub(s: Any, _: None) -> tuple[Any, None]:
                return wk.substep(s, speed, params, quarter, env.cell)[0], None

            state, _ = jax.lax.scan(sub, state, None, length=wk.SUBSTEPS)
            return state, state.pose[1]

        state, hull_y = jax.lax.scan(control, state, jax.random.split(step_key, steps))
        return {"hull_y": hull_y, "hull_x_end": state.pose[0], "finite": jnp.isfinite(state.pose).all()}

    return episode


def uniform_action(k: jax.Array) -> jax.Array:
    return jax.random.uniform(k, (4,), minval=-1.0, maxval=1.0)


def _float(x: Any) -> float:
    return round(float(x), 4)


def _case(r: dict[str, Any], start_y: float) -> dict[str, Any]:
    y = np.asarray(r["hull_y"])
    return {
        "hull_y_start": _float(start_y),
        "hull_y_after_1_step": _float(y[0]),
        "hull_y_end": _float(y[-1]),
        "hull_y_min": _float(y.min()),
        "hull_y_max": _float(y.max()),
        "hull_angle_end_rad": _float(r["hull_angle_end"]),
        "hull_lowest_corner_end_m": _float(r["hull_lowest_corner_end"]),
        "hull_x_end": _float(r["hull_x_end"]),
        "joints_end_rad": [_float(q) for q in np.asarray(r["joints_end"])],
        "no_nan": bool(r["finite"]),
    }


def sanity(env: Any, params: Any, j2d: dict, steps: int) -> dict[str, Any]:
    """One walker, ``steps`` steps, no (or a tiny) action: where the hull ends up, no NaN."""
    key = jax.random.PRNGKey(0)

    def j2d_constant(c: jax.Array) -> dict[str, jax.Array]:  # one program for both jax2d cases
        return jax2d_episode(j2d, steps, lambda k: jnp.full(4, c))(key)

    both = jax.jit(jax.vmap(j2d_constant))(jnp.array([0.0, 1e-6]))
    j2d_start = float(j2d["state"].polygon.position[HULL, 1])
    ours = jax.jit(ours_episode(env, params, steps, lambda k: jnp.zeros(4)))(key)
    return {
        "jax2d, action 0 (motors off: limp joints)": _case(jax.tree.map(lambda x: x[0], both), j2d_start),
        "jax2d, action 1e-6 (motors on, hold at ~0 rad/s)": _case(
            jax.tree.map(lambda x: x[1], both), j2d_start
        ),
        "Walker-v0, action 0 (joints held)": _case(ours, float(env.reset(key, params)[1].pose[1])),
    }


def jax2d_fit(env: Any) -> dict[str, Any]:
    """What of Walker-v0 jax2d 1.0.2 does not fit, with the pair count a Walker-v0 course would cost."""
    from jax2d.engine import calc_nrr
    from jax2d.sim_state import StaticSimParams

    segments = env.num_cells - 1  # the height field as one convex quad per cell
    walker = StaticSimParams(num_polygons=6, num_static_fixated_polys=1)
    course = StaticSimParams(num_polygons=segments + 5, num_static_fixated_polys=segments)
    return {
        "joint_limits": "supported on revolute joints (soft: a Baumgarte impulse once past the limit, and "
        "the motor weakens within motor_joint_limit = 0.1 rad of it); the limits are overshot by a few "
        "hundredths of a radian under load (sanity: joints_end_rad)",
        "motors": "a velocity servo whose torque is base_motor_power x motor_power x the joint's axial "
        "inertia x tanh(0.1 x speed error): with light legs it cannot carry the 5 kg hull (sanity: the "
        "hull sinks onto legs folded at their limits with the motors on as with them off); raising "
        "motor_power past ~2 at dt = 0.01 s makes the per-step velocity gain (0.9 x motor_power) exceed "
        "2 and the joint speed oscillates; an action of exactly 0 turns a motor off (limp joint), unlike "
        "Walker-v0 where 0 holds the joint",
        "ground": "no height field: the ground is convex polygons of at most max_polygon_vertices (4 by "
        "default) vertices; a rough course would be a chain of quads (one per 0.2 m cell), a stump a box, "
        "a gap a missing stretch of quads, each a slot in the fixed-size polygon arrays",
        "fixed_sizes": "num_polygons, num_circles, num_joints and num_thrusters are static (array shapes); "
        "jax2d 1.0.2 fails to build an engine with fewer than 2 circles or 1 thruster (index errors on "
        "empty pair lists), so 2 circles and 1 thruster sit unused in this scene (their 12 circle-polygon "
        "and 1 circle-circle pairs are still computed every step)",
        "collision_pairs": {
            "this_scene_polygon_pairs": calc_nrr(walker),
            f"walker_on_a_{segments}_quad_course": calc_nrr(course),
            "note": "every polygon pair not both static gets a manifold (2 contact points) computed and "
            "solved every engine step, whether near or not: a course of quads multiplies the contact work "
            "by the ratio unless a window of nearby quads is swapped in each step (custom code)",
        },
        "positions": "clipped to +-clip_position (15 m by default, Kinetix's scenes are 5 m): set to 1000 m "
        "here; Walker-v0's course is 24 m plus 10 m of run-out",
    }


def batch_summary(out: dict[str, jax.Array]) -> dict[str, Any]:
    """Random-action episodes: NaN count and the hull's heights over the batch."""
    y = np.asarray(out["hull_y"])
    finite = np.asarray(out["finite"])
    return {
        "episodes": int(finite.size),
        "episodes_with_nan": int((~finite).sum()),
        "hull_y_end_median": _float(np.nanmedian(y[:, -1])),
        "hull_y_min_over_batch": _float(np.nanmin(y)),
        "hull_y_max_over_batch": _float(np.nanmax(y)),
        "hull_x_end_median": _float(np.nanmedian(np.asarray(out["hull_x_end"]))),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument(
        "--budget-s",
        type=float,
        default=BUDGET_S,
        help="seconds for the slowest program's timed calls after its first: fewer repeats (>= 3) past it",
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: batch 8, 20 steps")
    parser.add_argument("--out", default=str(_common.RESULTS_DIR / "walker_physics.json"))
    args = parser.parse_args(argv)
    try:
        import jax2d  # noqa: F401
    except ImportError:
        print("walker_physics needs jax2d: pip install jax2d==1.0.2", file=sys.stderr)
        raise SystemExit(2) from None
    from importlib.metadata import version

    batch, steps = (8, 20) if args.quick else (BATCH, STEPS)
    repeats = 2 if args.quick else args.repeats
    env, params = envs_jax.make("Walker-v0")  # flat ground (no roughness, stumps or gaps)
    pose, joints = walker_start(env, params)
    j2d = build_jax2d(pose, joints, params.gravity, params.hull_mass, params.friction)

    programs = {
        "ours (Walker-v0 step_env)": ours_episode(env, params, steps, uniform_action),
        "ours (physics substeps only)": ours_physics_episode(env, params, steps, uniform_action),
        "jax2d (physics only)": jax2d_episode(j2d, steps, uniform_action),
    }
    keys = [jax.random.split(jax.random.PRNGKey(100 + i), batch) for i in range(repeats + 1)]
    compiled, compile_s = {}, {}
    for name, episode in programs.items():
        start = time.perf_counter()
        compiled[name] = jax.jit(jax.vmap(episode)).lower(keys[0]).compile()
        compile_s[name] = time.perf_counter() - start
        print(f"compiled {name} in {compile_s[name]:.1f} s", flush=True)

    load_start = _common.load_average()
    names = list(programs)
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    first_s, outputs, calls = {}, {}, {}

    def call(name: str, keys: jax.Array) -> tuple[float, float, Any]:
        cpu0, start = time.process_time(), time.perf_counter()
        out = jax.block_until_ready(compiled[name](keys))
        return time.perf_counter() - start, time.process_time() - cpu0, out

    for name in names:  # the first call: untimed unless slow (then its one-off costs do not matter)
        seconds, cpu_s, outputs[name] = call(name, keys[0])
        first_s[name] = seconds
        if seconds >= SLOW_S:
            wall[name].append(seconds)
            cpu[name].append(cpu_s)
        calls[name] = max(1, round(BLOCK_S / max(seconds, 1e-6)))  # calls per timed block
        print(f"first call {name}: {seconds:.2f} s", flush=True)
    note = None
    slowest = max(first_s.values())
    if slowest * (repeats - 1) > args.budget_s and repeats > MIN_REPEATS:
        fit = max(MIN_REPEATS, 1 + int(args.budget_s // slowest))
        note = (
            f"repeats cut from {repeats} to {fit}: the slowest program takes {slowest:.0f} s a call and "
            f"--budget-s is {args.budget_s:.0f} s (the machine's 2 cores are shared)"
        )
        repeats = fit
    rounds = 0
    while any(len(wall[name]) < repeats for name in names):
        for name in names[rounds % len(names) :] + names[: rounds % len(names)]:
            if len(wall[name]) >= repeats:
                continue
            block_wall = block_cpu = 0.0
            for _ in range(calls[name]):
                seconds, cpu_s, _ = call(name, keys[1 + rounds % repeats])
                block_wall, block_cpu = block_wall + seconds, block_cpu + cpu_s
            wall[name].append(block_wall / calls[name])
            cpu[name].append(block_cpu / calls[name])
        rounds += 1
    median = {name: statistics.median(wall[name]) for name in names}
    rates = {name: batch * steps / median[name] for name in names}
    ours, physics, other = names
    report = {
        "command": _common.command_line(__file__, argv if argv is not None else sys.argv[1:]),
        "work": f"jax.jit(jax.vmap(episode)) over {batch} walkers, {steps} control steps of 0.04 s in one "
        "lax.scan, actions uniform in [-1, 1]^4 (joint speeds up to 6 rad/s), flat ground",
        "jax2d_version": version("jax2d"),
        "env_steps_per_s": rates,
        "ratio_ours_over_jax2d": rates[ours] / rates[other],
        "ratio_ours_physics_over_jax2d": rates[physics] / rates[other],
        "compile_s": compile_s,
        "first_call_s": first_s,
        "calls_per_timed_block": calls,
        "timing": f"per program: the median of {repeats} timed blocks (each {BLOCK_S} s of calls or one "
        f"call, alternating between programs, order rotated); a first call of >= {SLOW_S:.0f} s counts "
        "as a timed block (else it is an untimed warm-up)",
        "median_s_per_call": median,
        "seconds_per_call": wall,
        "cpu_s_per_call": cpu,
        "repeats": repeats,
        "repeats_note": note,
        "jax2d_settings": j2d["settings"],
        "ours_settings": {
            "substeps_per_control_step": wk.SUBSTEPS,
            "dt_s": params.dt / wk.SUBSTEPS,
            "hull_mass_kg": params.hull_mass,
            "hull_inertia_kg_m2": params.hull_inertia,
            "legs": "massless, joints at the commanded speed (no torque limit), joint limits by clipping",
            "contact": f"penalty feet on a height field: stiffness {params.stiffness}, "
            f"damping {params.damping}, mu {params.friction}",
        },
        "random_action_episodes": {name: batch_summary(out) for name, out in outputs.items()},
        "sanity": sanity(env, params, j2d, SANITY_STEPS),
        "jax2d_fit": jax2d_fit(env),
        "notes": [
            "ours steps on after a fall (step_env, no reset) and its hull has no contact with the ground "
            "(the env ends the episode when the hull touches it), so its random-action hull heights go "
            "below 0, and feet driven deep under the height field then meet huge penalty forces that can "
            "launch the hull (tens to hundreds of metres): states past the episode's end; while the "
            "episodes are alive (random actions end them at step ~19, median) the hull stays within "
            "0.08..3.2 m (a separate check, not run here); jax2d's hull collides with the ground",
            "the jax2d walker's lowest corner starts 0.01 m above the ground, as Walker-v0's foot point: its "
            "hull starts higher by start_lift_m - 0.01 (the shins' width)",
        ],
        "quick": args.quick,
    }
    for name in names:
        print(
            f"{name:>30}: {rates[name]:12,.0f} env steps/s  "
            f"(median {median[name]:.3f} s, compile {compile_s[name]:.1f} s)"
        )
    print(f"ours / jax2d: {report['ratio_ours_over_jax2d']:.1f}x")
    for name, case in report["sanity"].items():
        print(f"{name}: hull y {case['hull_y_start']} -> {case['hull_y_end']}, no NaN: {case['no_nan']}")
    out = None if args.quick and args.out == parser.get_default("out") else args.out
    return _common.finish_report(report, load_start, out)


if __name__ == "__main__":
    main()

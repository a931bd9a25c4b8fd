"""The Miniworld three-box room on the host: layouts, the path-planning expert on the real room,
touching a trap, what the camera shows, masked resets, snapshots, the time limit, the HostEnv
inside jit, and the one-line errors for a missing install or display."""

import subprocess
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

INSTALL = 'Miniworld is not installed: pip install -e ".[miniworld]"'
pyglet = pytest.importorskip("pyglet", reason=INSTALL)
if "pyglet.window" not in sys.modules:
    pyglet.options["headless"] = True  # before miniworld imports pyglet.window: render with EGL
pytest.importorskip("miniworld", reason=INSTALL)

import envs_jax.tasks  # noqa: E402
from envs_jax.host import miniworld_room as mr  # noqa: E402

NUM_ENVS = 8
NUM_LAYOUTS = 24
LABEL = jax.jit(mr.snapshot_expert_action)  # the expert's actions from a batch's snapshot
COLOR_RGB = {
    "blue": (0.0, 0.0, 1.0),
    "green": (0.0, 1.0, 0.0),
    "purple": (0.44, 0.15, 0.76),
    "red": (1.0, 0.0, 0.0),
    "yellow": (1.0, 1.0, 0.0),
}


@pytest.fixture(scope="module")
def env():
    return mr.make_miniworld_room()


@pytest.fixture(scope="module")
def layouts(env):
    """24 valid layouts as numpy arrays (leading axis 24)."""
    tasks = envs_jax.tasks.task_set(env, jax.random.key(7), NUM_LAYOUTS, env.default_params)
    return jax.tree.map(np.asarray, tasks)


@pytest.fixture(scope="module")
def batch():
    return mr.RoomBatch(NUM_ENVS)


def rows(tasks, start, stop):
    return jax.tree.map(lambda x: x[start:stop], tasks)


def reset_all(batch, tasks):
    return batch.reset(np.zeros(batch.num_envs, np.uint32), np.ones(batch.num_envs, bool), tasks)


def poses(batch):
    """``(pos [N, 2], heading [N], time [N])`` decoded from the batch's snapshot with numpy."""
    snap = batch.get_state()
    f, i = snap.view("<f4"), snap.view("<i4")
    return f[:, 0:2], f[:, 2], i[:, 3]


def colour_pixels(frame, name):
    """Pixels whose colour points the way of Miniworld's colour ``name`` (any shading)."""
    rgb = frame.reshape(-1, 3).astype(np.float64)
    ref = np.asarray(COLOR_RGB[name])
    cosine = rgb @ ref / (np.linalg.norm(rgb, axis=1) * np.linalg.norm(ref) + 1e-9)
    return int(np.sum((cosine > 0.98) & (rgb.max(axis=1) > 40)))


def test_importing_the_module_imports_neither_miniworld_nor_pyglet():
    code = (
        "import sys; import envs_jax.host.miniworld_room as m; "
        "assert 'miniworld' not in sys.modules and 'pyglet' not in sys.modules; "
        "assert m.ENTRY.id == 'MiniworldThreeBoxes-v0' and m.ENTRY.host"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=mr.__file__.rsplit("/envs_jax/", 1)[0])


def test_layouts_are_deterministic_in_the_key_and_keep_their_distances(env, layouts):
    params = env.default_params
    again = envs_jax.tasks.task_set(env, jax.random.key(7), NUM_LAYOUTS, params)
    for a, b in zip(jax.tree.leaves(layouts), jax.tree.leaves(again), strict=True):
        np.testing.assert_array_equal(a, b)
    other = envs_jax.tasks.task_set(env, jax.random.key(8), NUM_LAYOUTS, params)
    assert not np.array_equal(layouts.box_pos, other.box_pos)

    boxes, start = layouts.box_pos, layouts.agent_pos  # [L, 3, 2], [L, 2]
    assert boxes.dtype == np.float32 and boxes.shape == (NUM_LAYOUTS, 3, 2)
    lo, hi = mr.BOX_WALL_CLEARANCE, mr.ROOM_SIZE - mr.BOX_WALL_CLEARANCE
    assert np.all((boxes >= lo) & (boxes <= hi))
    lo, hi = mr.START_WALL_CLEARANCE, mr.ROOM_SIZE - mr.START_WALL_CLEARANCE
    assert np.all((start >= lo) & (start <= hi))
    for a, b in [(0, 1), (0, 2), (1, 2)]:
        assert np.all(np.linalg.norm(boxes[:, a] - boxes[:, b], axis=-1) >= mr.BOX_SEPARATION)
    assert np.all(np.linalg.norm(boxes - start[:, None], axis=-1) >= mr.START_BOX_SEPARATION)
    colors = np.sort(layouts.box_color, axis=1)
    assert np.all(np.diff(colors, axis=1) > 0) and colors.min() >= 0 and colors.max() < len(mr.COLOR_NAMES)
    assert set(np.unique(layouts.goal)) <= {0, 1, 2} and len(np.unique(layouts.goal)) > 1
    assert np.all(np.abs(layouts.agent_heading) <= np.pi)
    # A layout the sampler would not draw is invalid (boxes overlapping).
    bad = jax.tree.map(lambda x: x[0], layouts)
    bad = bad.replace(box_pos=bad.box_pos.copy())
    bad.box_pos[1] = bad.box_pos[0] + 0.5
    valid = jax.jit(mr.is_valid_task)
    assert bool(valid(jax.tree.map(lambda x: x[0], layouts))) and not bool(valid(bad))


def test_the_expert_touches_the_goal_box_from_the_start_of_every_layout(layouts, batch):
    lengths = []
    for group in range(NUM_LAYOUTS // NUM_ENVS):
        tasks = rows(layouts, group * NUM_ENVS, (group + 1) * NUM_ENVS)
        reset_all(batch, tasks)
        pos, heading, time = poses(batch)
        np.testing.assert_array_equal(pos, tasks.agent_pos)
        np.testing.assert_array_equal(heading, tasks.agent_heading)
        assert np.all(time == 0)
        done = np.zeros(NUM_ENVS, bool)
        result = np.zeros(NUM_ENVS, np.float32)
        length = np.zeros(NUM_ENVS, int)
        for _ in range(batch.max_steps):
            actions = np.asarray(LABEL(batch.get_state()))
            _, reward, terminated, truncated = batch.step(np.where(done, mr.TURN_LEFT, actions))
            result = np.where(done, result, reward)
            length += ~done
            assert not np.any(truncated & ~done), "the expert ran out of time"
            done |= terminated
            if done.all():
                break
        np.testing.assert_array_equal(result, np.ones(NUM_ENVS, np.float32))
        lengths += list(length)
    assert max(lengths) <= batch.max_steps // 2


def test_walking_into_a_trap_gives_minus_one_and_ends_the_episode(layouts, batch):
    # A layout and trap whose straight line from the start passes no other box.
    for index in range(NUM_LAYOUTS):
        task = jax.tree.map(lambda x, i=index: x[i], layouts)
        for trap in {0, 1, 2} - {int(task.goal)}:
            start, target = task.agent_pos, task.box_pos[trap]
            line = target - start
            s = np.clip((task.box_pos - start) @ line / (line @ line), 0, 1)
            gaps = np.linalg.norm(start + s[:, None] * line - task.box_pos, axis=1)
            if all(gaps[b] > mr.TOUCH_DISTANCE + 0.3 for b in range(3) if b != trap):
                break
        else:
            continue
        break
    else:
        pytest.fail("no layout with a clear line to a trap")
    reset_all(batch, jax.tree.map(lambda x: np.stack([x] * NUM_ENVS), task))
    for step in range(60):  # noqa: B007 (checked after the loop)
        pos, heading, _ = poses(batch)
        to_trap = task.box_pos[trap] - pos[0]
        error = mr.wrap_angle(np.arctan2(-to_trap[1], to_trap[0]) - heading[0], np)
        action = (
            mr.FORWARD if abs(error) <= mr.TURN_STEP / 2 else (mr.TURN_LEFT if error > 0 else mr.TURN_RIGHT)
        )
        before = poses(batch)[0][0]
        obs, reward, terminated, truncated = batch.step(np.full(NUM_ENVS, action))
        if terminated[0]:
            break
        assert reward[0] == 0 and not truncated[0]
    else:
        pytest.fail("never touched the trap")
    assert step > 0 and action == mr.FORWARD
    np.testing.assert_array_equal(reward, -np.ones(NUM_ENVS, np.float32))
    assert terminated.all() and not truncated.any()
    after = poses(batch)[0][0]
    np.testing.assert_array_equal(after, before)  # the touching move does not move the agent
    assert np.linalg.norm(after - task.box_pos[trap]) >= mr.TOUCH_DISTANCE
    # The box stays in view until it is touched (it is 1.2 m tall).
    assert colour_pixels(obs[0], mr.COLOR_NAMES[task.box_color[trap]]) > 50


def test_the_view_shows_the_goal_box_when_facing_it_and_not_when_facing_away(layouts, batch):
    tasks = rows(layouts, 0, NUM_ENVS)
    reset_all(batch, tasks)
    snap = batch.get_state()
    to_goal = tasks.box_pos[np.arange(NUM_ENVS), tasks.goal] - tasks.agent_pos
    facing = np.arctan2(-to_goal[:, 1], to_goal[:, 0]).astype("<f4")
    # Envs where no other box stands between the start and the goal box (it could hide it).
    in_sight = []
    for i in range(NUM_ENVS):
        s = np.clip((tasks.box_pos[i] - tasks.agent_pos[i]) @ to_goal[i] / (to_goal[i] @ to_goal[i]), 0, 1)
        gaps = np.linalg.norm(tasks.agent_pos[i] + s[:, None] * to_goal[i] - tasks.box_pos[i], axis=1)
        in_sight.append(all(gaps[b] > mr.BOX_RADIUS + 0.1 for b in range(3) if b != tasks.goal[i]))
    assert sum(in_sight) >= NUM_ENVS // 2
    for turn, seen in [(0.0, True), (np.pi, False)]:
        heading = mr.wrap_angle(facing + np.float32(turn), np).astype("<f4")
        snap[:, 8:12] = heading.reshape(-1, 1).view(np.uint8)
        batch.set_state(snap)
        frames = batch.observe()
        for i in range(NUM_ENVS):
            goal_colour = mr.COLOR_NAMES[tasks.box_color[i, tasks.goal[i]]]
            if in_sight[i] or not seen:
                assert (colour_pixels(frames[i], goal_colour) > 20) == seen, (i, goal_colour, turn)
        assert frames.dtype == np.uint8 and frames.shape == (NUM_ENVS, *mr.DEFAULT_RESOLUTION, 3)


def test_a_masked_reset_leaves_the_other_environments_as_they_were(layouts, batch):
    reset_all(batch, rows(layouts, 0, NUM_ENVS))
    rng = np.random.default_rng(0)
    for _ in range(4):
        batch.step(rng.integers(0, 3, NUM_ENVS))
    before_state, before_obs = batch.get_state(), batch.observe()
    mask = np.arange(NUM_ENVS) % 2 == 0
    fresh = rows(layouts, NUM_ENVS, 2 * NUM_ENVS)
    obs = batch.reset(np.zeros(NUM_ENVS, np.uint32), mask, fresh)
    state = batch.get_state()
    np.testing.assert_array_equal(state[~mask], before_state[~mask])
    np.testing.assert_array_equal(obs[~mask], before_obs[~mask])
    pos, heading, time = poses(batch)
    np.testing.assert_array_equal(pos[mask], fresh.agent_pos[mask])
    np.testing.assert_array_equal(heading[mask], fresh.agent_heading[mask])
    assert np.all(time[mask] == 0) and np.all(time[~mask] == 4)
    decoded = mr.decode_snapshot(state)[3]
    np.testing.assert_array_equal(np.asarray(decoded.box_pos)[mask], fresh.box_pos[mask])
    np.testing.assert_array_equal(np.asarray(decoded.goal)[mask], fresh.goal[mask])
    assert not np.array_equal(obs[mask], before_obs[mask])
    # Without tasks the masked envs draw a layout from their seeds: the same seed, the same layout.
    batch.reset(np.full(NUM_ENVS, 5, np.uint32), mask, None)
    drawn = batch.get_state()[mask]
    assert np.all(drawn == drawn[0])


def test_a_snapshot_continues_exactly_in_a_new_batch_and_from_another_thread(layouts, batch):
    reset_all(batch, rows(layouts, 0, NUM_ENVS))
    rng = np.random.default_rng(1)
    actions = rng.choice(3, (25, NUM_ENVS), p=[0.6, 0.2, 0.2])
    for a in actions[:5]:
        batch.step(a)
    snapshot = batch.get_state()
    expected = [batch.step(a) for a in actions[5:]]
    assert any(e[2].any() for e in expected), "no episode ended: the check would be weak"

    replayed = {}

    def replay():
        other = mr.RoomBatch(NUM_ENVS)
        other.set_state(snapshot)
        replayed["steps"] = [other.step(a) for a in actions[5:]]
        other.close()

    thread = threading.Thread(target=replay)
    thread.start()
    thread.join()
    for want, got in zip(expected, replayed["steps"], strict=True):
        for w, g in zip(want, got, strict=True):
            np.testing.assert_array_equal(w, g)


def test_the_time_limit_truncates():
    short = mr.RoomBatch(2, resolution=(24, 32), max_steps=5)
    for t in range(1, 6):
        obs, reward, terminated, truncated = short.step(np.full(2, mr.TURN_LEFT))
        assert obs.shape == (2, 24, 32, 3)
        assert not terminated.any() and np.all(reward == 0)
        assert truncated.all() == (t == 5) and truncated.any() == (t == 5)
    short.close()


def test_the_host_env_steps_the_room_inside_jit_and_labels_with_the_expert(env, layouts):
    params = env.default_params
    tasks = jax.tree.map(jnp.asarray, rows(layouts, 0, NUM_ENVS))
    keys = jax.random.split(jax.random.key(0), NUM_ENVS)
    obs, state = jax.jit(env.reset)(keys, params, tasks)
    assert obs.shape == (NUM_ENVS, *mr.DEFAULT_RESOLUTION, 3) and obs.dtype == jnp.uint8
    pos, heading, time, _ = mr.decode_snapshot(state.snapshot)
    np.testing.assert_array_equal(pos, tasks.agent_pos)
    np.testing.assert_array_equal(heading, tasks.agent_heading)
    assert np.all(np.asarray(time) == 0)

    @jax.jit
    def act_and_step(state):
        action = env.expert_action(state, params)
        obs, state, reward, terminated, truncated, _ = env.step(keys, state, action, params)
        return action, obs, state, reward, terminated | truncated

    direct = LABEL(state.snapshot)
    action, obs, state, reward, done = act_and_step(state)
    np.testing.assert_array_equal(action, direct)
    assert obs.shape == (NUM_ENVS, *mr.DEFAULT_RESOLUTION, 3)
    assert np.all(np.asarray(reward) == 0) and not np.asarray(done).any()  # no box within a step
    assert np.all(np.asarray(mr.decode_snapshot(state.snapshot)[2]) == 1)


def test_a_missing_miniworld_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "miniworld", None)
    with pytest.raises(ModuleNotFoundError, match=r'pip install -e "\.\[miniworld\]"'):
        mr.make_miniworld_room()


def test_pyglet_with_a_window_system_and_no_display_is_one_clear_error(monkeypatch):
    assert "pyglet.window" in sys.modules  # imported by miniworld above: too late to go headless
    monkeypatch.setitem(pyglet.options, "headless", False)
    monkeypatch.delenv("DISPLAY", raising=False)
    with pytest.raises(RuntimeError, match=r"headless.*no DISPLAY") as error:
        mr.require_miniworld()
    assert "\n" not in str(error.value)


def test_trials_on_the_room_record_the_experts_labels_for_the_whole_batch(env, layouts):
    """``run_trials`` hands a host env's recorder the batch's state: the labels equal the expert's
    on a RoomBatch stepped by hand with the same actions (always forward)."""
    from jaxmeta.trial import run_trials

    params, steps = env.default_params, 6
    tasks = jax.tree.map(jnp.asarray, rows(layouts, 0, NUM_ENVS))
    forward = lambda p, inputs, carry, memory, key: (jnp.int32(mr.FORWARD), carry)  # noqa: E731
    data, _, _ = jax.jit(
        lambda key: run_trials(
            env,
            params,
            forward,
            None,
            jnp.zeros(()),
            tasks,
            jnp.arange(NUM_ENVS),
            key,
            steps,
            record_fn=lambda state: env.expert_action(state, params),
        )
    )(jax.random.key(3))
    assert data.extras.shape == (NUM_ENVS, steps)
    by_hand = mr.RoomBatch(NUM_ENVS)
    reset_all(by_hand, rows(layouts, 0, NUM_ENVS))
    for t in range(steps):
        np.testing.assert_array_equal(data.extras[:, t], LABEL(jnp.asarray(by_hand.get_state())))
        _, reward, terminated, truncated = by_hand.step(np.full(NUM_ENVS, mr.FORWARD))
        np.testing.assert_array_equal(data.reward[:, t], reward)
        done = terminated | truncated
        if done.any():  # a box touched: the trial starts the task again, as the batch by hand does
            by_hand.reset(np.zeros(NUM_ENVS, np.uint32), done, rows(layouts, 0, NUM_ENVS))


def test_the_memory_agent_on_the_room_is_a_valid_config_and_its_gif_shows_what_the_agent_saw(tmp_path):
    import imageio.v2 as imageio

    from jaxmeta import config
    from jaxmeta.algos import failure_replay

    cfg = config.load(
        None,
        [
            "algo.name=failure_replay",
            "env.id=MiniworldThreeBoxes-v0",
            "env.obs_height=12",
            "env.obs_width=16",
            "env.max_steps=4",
            "algo.features=8",
            "algo.num_heads=2",
            "algo.hidden=16",
            "algo.conv_channels=[4]",
            "algo.num_train_tasks=4",
            "algo.num_test_tasks=2",
            "algo.eval.num_tasks=2",
            "algo.eval.episodes=2",
        ],
    )  # a host env has no reset_to_task: its batch takes the tasks at reset
    parts = failure_replay.make_parts(cfg)
    state = jax.jit(parts.algo.init)(jax.random.key(0))
    env, params = parts.setup.env, parts.setup.params
    task = jax.tree.map(lambda x: x[:1], parts.setup.test_tasks)
    path = failure_replay.animate_trial(
        parts.network, env, params, state.params, task, 2, 8, tmp_path / "trial.gif"
    )
    frames = imageio.mimread(path)
    # The first frame is the start of the layout as the room shows it, enlarged 10x (12 rows -> 120).
    by_hand = mr.RoomBatch(1, (12, 16), 4)
    start = by_hand.reset(np.zeros(1, np.uint32), np.ones(1, bool), jax.tree.map(np.asarray, task))[0]
    shown = frames[0][18 : 18 + 120, :160]  # below the caption
    np.testing.assert_allclose(shown[::10, ::10].astype(int), start.astype(int), atol=12)  # GIF palette
    assert len(frames) >= 2 * (1 + 3)  # two episodes, each at least one step and its held ending


def test_the_rooms_references_are_the_three_box_searchers_closed_form(env):
    # Episode j of the searcher ends on the goal with probability j/3 (one untried box per episode).
    refs = env.episode_references(env.default_params, None, 5, None)
    np.testing.assert_allclose(refs["Bayes-optimal"], [1 / 3 - 2 / 3, 2 / 3 - 1 / 3, 1, 1, 1])
    np.testing.assert_allclose(refs["memoryless optimum"], [-1 / 3] * 5)

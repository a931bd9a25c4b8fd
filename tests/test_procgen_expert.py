"""The Procgen search expert: its state parser against the game's own rules, its search against the live env.

Facts checked against procgen's source (not against this code): where each game puts the agent at a
level's start (coinrun.cpp, ninja.cpp, climber.cpp ``game_reset``), the world sizes, the clock, the
direction RIGHT and LEFT move the agent; and against the env itself: a restored state plays on
exactly like the original, the search leaves the live env as it was, and the expert completes a
CoinRun level that holding RIGHT never does.
"""

import contextlib
import io

import numpy as np
import pytest

try:
    with contextlib.redirect_stderr(io.StringIO()):
        import procgen  # noqa: F401
except ModuleNotFoundError as err:  # pragma: no cover - depends on the install
    print(f"skipping the Procgen expert tests: {err}")
    pytest.skip(f"procgen is not installed ({err})", allow_module_level=True)

from envs_jax.host import procgen_expert as pe
from envs_jax.host.procgen import ProcgenBatch, level_env

EXPERT_LEVEL = 0  # a CoinRun level the expert completes and holding RIGHT does not (a wall stops it)


def state_of(env):
    return env.callmethod("get_state")[0]


def play(env, actions):
    for action in actions:
        env.act(np.array([action], np.int32))
        env.observe()


@pytest.fixture(scope="module")
def expert():
    search = pe.SearchExpert("coinrun")
    yield search
    search.close()


@pytest.mark.parametrize(
    ("game", "start", "size"),
    # game_reset: agent at (1 + rx, 1 + ry) with rx = .5 and ry = .5787 (CoinRun), .5 (Climber);
    # Ninja starts at height main_height / 2 + ry. Worlds: 64 x 64; Climber easy is 16 wide.
    [
        ("coinrun", (1.5, 1.5787), (64, 64)),
        ("ninja", (1.5, 32.5), (64, 64)),
        ("climber", (1.5, 1.5), (64, 16)),
    ],
)
def test_parser_reads_the_start_of_a_level(game, start, size):
    parsed = pe.parse_state(state_of(level_env(game, 3)))
    assert parsed.game == game and parsed.level == 3 and parsed.time == 0 and parsed.time_limit == 1000
    assert parsed.agent[:2] == pytest.approx(start, abs=1e-4)
    assert parsed.agent[2:4] == pytest.approx((0, 0))  # at rest
    assert parsed.grid.shape == size
    assert pe.standing(game, parsed)  # every level starts on the ground


def test_parser_follows_right_and_left_presses():
    env = level_env("coinrun", 5)
    x0 = pe.parse_state(state_of(env)).agent[0]
    play(env, [pe.RIGHT] * 6)
    after_right = pe.parse_state(state_of(env))
    assert after_right.time == 6
    assert after_right.agent[0] > x0 + 1 and after_right.agent[2] > 0  # moved right, moving right
    play(env, [pe.LEFT] * 10)
    assert pe.parse_state(state_of(env)).agent[0] < after_right.agent[0] - 1


def test_restored_state_plays_on_like_the_original():
    env, twin = level_env("coinrun", 7), level_env("coinrun", 11)  # the twin starts on another level
    play(env, [pe.RIGHT] * 5 + [pe.RIGHT_UP] + [pe.RIGHT] * 4)
    saved = state_of(env)
    twin.callmethod("set_state", [saved])
    assert pe.parse_state(state_of(twin)).agent == pytest.approx(pe.parse_state(saved).agent)
    actions = [pe.RIGHT_UP, pe.RIGHT, pe.RIGHT, pe.NOOP, pe.LEFT] * 3
    play(env, actions)
    play(twin, actions)
    assert state_of(twin) == state_of(env)  # byte for byte: a level is deterministic given the actions


def test_expert_is_deterministic(expert):
    env = level_env("coinrun", 4)
    play(env, [pe.RIGHT] * 3)
    state = state_of(env)
    first = expert.scores(state)
    again = pe.SearchExpert("coinrun")
    try:
        assert np.array_equal(expert.scores(state), first)  # the same expert, searched again
        assert np.array_equal(again.scores(state), first)  # a fresh expert
        assert again.act(state) == expert.act(state)
    finally:
        again.close()


def test_search_leaves_the_live_env_as_it_was(expert):
    batch, twin = ProcgenBatch(2, "coinrun"), ProcgenBatch(2, "coinrun")
    levels = np.array([2, 9])
    for b in (batch, twin):
        b.reset(np.zeros(2, np.uint32), np.ones(2, bool), levels)
        b.step(np.array([pe.RIGHT, pe.RIGHT]))
    before = pe.batch_states(batch)
    labels = expert.label(before)
    assert labels.dtype == np.int32 and labels.shape == (2,)
    assert pe.batch_states(batch) == before
    for _ in range(5):  # and it plays on exactly as a batch nobody searched from
        assert np.array_equal(batch.step(labels)[0], twin.step(labels)[0])
    assert pe.batch_states(batch) == pe.batch_states(twin)


def play_to_end(env, choose, limit):
    for step in range(1, limit + 1):
        env.act(np.array([choose(env)], np.int32))
        _, _, first = env.observe()
        if first[0]:
            return bool(env.get_info()[0]["prev_level_complete"]), step
    return False, limit


def test_expert_completes_a_level_that_holding_right_does_not(expert):
    right_done, _ = play_to_end(level_env("coinrun", EXPERT_LEVEL), lambda env: pe.RIGHT, 300)
    assert not right_done
    done, steps = play_to_end(level_env("coinrun", EXPERT_LEVEL), lambda env: expert.act(state_of(env)), 150)
    assert done, f"the expert did not complete CoinRun level {EXPERT_LEVEL} in {steps} steps"


def test_trials_on_procgen_record_the_installed_experts_labels_of_the_live_batch():
    """``make_procgen`` installs the expert; a jitted trial records its labels before each action,
    equal to a fresh expert's labels of a batch stepped by hand with the same actions."""
    import jax
    import jax.numpy as jnp

    from envs_jax.host.procgen import make_procgen
    from jaxmeta.trial import run_trials

    with contextlib.redirect_stderr(io.StringIO()):
        env = make_procgen("coinrun", max_steps=50)
    params, levels, steps = env.default_params, np.array([3, 8], np.int32), 3
    right = lambda p, inputs, carry, memory, key: (jnp.int32(pe.RIGHT), carry)  # noqa: E731
    data, _, _ = jax.jit(
        lambda key: run_trials(
            env,
            params,
            right,
            None,
            jnp.zeros(()),
            jnp.asarray(levels),
            jnp.arange(2),
            key,
            steps,
            record_fn=lambda state: env.expert_action(state, params),
        )
    )(jax.random.PRNGKey(0))
    assert data.extras.dtype == jnp.int32 and data.extras.shape == (2, steps)
    by_hand = ProcgenBatch(2, "coinrun", "easy", 64, 50)
    by_hand.reset(np.zeros(2, np.uint32), np.ones(2, bool), levels)
    reference = pe.SearchExpert("coinrun")
    try:
        for t in range(steps):
            np.testing.assert_array_equal(data.extras[:, t], reference.label(pe.batch_states(by_hand)))
            by_hand.step(np.full(2, pe.RIGHT, np.int32))
    finally:
        reference.close()
        by_hand.close()

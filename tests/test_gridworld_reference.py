"""Tests of ``envs_jax.gridworld.imitation_returns``, the expert-imitation reference.

The simulated policy samples each action from the posterior mixture of the
goal-knowing experts over the blocks not yet seen to be traps. The references
here share no code with it: a plain-Python BFS expert, an exact dynamic
programme over cells for the probability of ending an episode on each block
(time limit included), and the Markov chain of the known-trap set across the
episodes of a trial; plus the closed forms of ``optimal_returns``.
"""

from __future__ import annotations

import collections
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs_jax import make, make_task_set, optimal_returns
from envs_jax.gridworld import Gridworld, GridworldTask, imitation_reference, imitation_returns

MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))  # up, down, left, right
SIGMAS = 4.5  # Monte-Carlo tolerance, in standard errors


# --------------------------------------------------------------------------
# Plain-Python reference: expert, mixture policy, exact episode outcomes.
# --------------------------------------------------------------------------
def py_move(size: int, cell: int, action: int) -> int:
    r, c = divmod(cell, size)
    nr, nc = r + MOVES[action][0], c + MOVES[action][1]
    return nr * size + nc if 0 <= nr < size and 0 <= nc < size else cell


def py_field(size: int, blocks: list[int], goal: int) -> dict[int, int]:
    """BFS distance to block ``goal`` through free cells (other blocks are walls)."""
    source = blocks[goal]
    walls = set(blocks) - {source}
    dist, queue = {source: 0}, collections.deque([source])
    while queue:
        cell = queue.popleft()
        for action in range(4):
            nxt = py_move(size, cell, action)
            if nxt not in walls and nxt not in dist:
                dist[nxt] = dist[cell] + 1
                queue.append(nxt)
    return dist


def py_expert(size: int, blocks: list[int], goal: int, cell: int) -> int:
    """Lowest-index action one step closer to the goal (the cell must reach it)."""
    field = py_field(size, blocks, goal)
    return next(a for a in range(4) if field.get(py_move(size, cell, a)) == field[cell] - 1)


def py_mixture(size: int, blocks: list[int], candidates: frozenset[int], cell: int) -> list[float]:
    votes = [0.0] * 4
    for g in candidates:
        votes[py_expert(size, blocks, g, cell)] += 1.0
    return [v / len(candidates) for v in votes]


def py_episode_outcomes(
    size: int, blocks: list[int], start: int, candidates: frozenset[int], max_steps: int
) -> tuple[list[float], float]:
    """Exact ``(P(episode ends on block b) for each b, P(timeout))`` by DP over cells."""
    reach = [0.0] * len(blocks)
    mass = {start: 1.0}
    for _ in range(max_steps):
        nxt_mass: dict[int, float] = collections.defaultdict(float)
        for cell, p in mass.items():
            for action, q in enumerate(py_mixture(size, blocks, candidates, cell)):
                if q == 0.0:
                    continue
                nxt = py_move(size, cell, action)
                if nxt in blocks:
                    reach[blocks.index(nxt)] += p * q
                else:
                    nxt_mass[nxt] += p * q
        mass = nxt_mass
    return reach, sum(mass.values())


def py_trial(task: dict, size: int, max_steps: int, num_episodes: int) -> dict[str, np.ndarray]:
    """Per-episode P(success), P(timeout), E[return] and Var[return], exactly.

    The set of blocks not known to be traps is a Markov chain over the
    episodes: a trap leaves it, a success or a timeout keeps it.
    """
    blocks, goal = task["blocks"], task["goal"]
    chain = {frozenset(range(len(blocks))): 1.0}
    out = {k: np.zeros(num_episodes) for k in ("success", "timeout", "mean", "var")}
    for j in range(num_episodes):
        nxt_chain: dict[frozenset[int], float] = collections.defaultdict(float)
        trap = 0.0
        for candidates, p in chain.items():
            reach, timeout = py_episode_outcomes(size, blocks, task["start"], candidates, max_steps)
            out["timeout"][j] += p * timeout
            nxt_chain[candidates] += p * timeout
            for b, q in enumerate(reach):
                if b == goal:
                    out["success"][j] += p * q
                    nxt_chain[candidates] += p * q
                else:
                    trap += p * q
                    nxt_chain[candidates - {b}] += p * q
        mean = out["success"][j] - trap
        out["mean"][j] = mean
        out["var"][j] = out["success"][j] + trap - mean**2
        chain = nxt_chain
    return out


def stack_copies(task: dict, copies: int) -> GridworldTask:
    one = GridworldTask(
        block_cells=jnp.asarray(task["blocks"], jnp.int32),
        block_colors=jnp.arange(len(task["blocks"]), dtype=jnp.int32),
        goal_index=jnp.asarray(task["goal"], jnp.int32),
        agent_start=jnp.asarray(task["start"], jnp.int32),
    )
    return jax.tree.map(lambda a: jnp.broadcast_to(a, (copies, *a.shape)), one)


def assert_within(sample_mean: np.ndarray, expected: np.ndarray, variance: np.ndarray, n: int, what: str):
    bound = SIGMAS * np.sqrt(np.maximum(variance, 0.0) / n) + 1e-9
    assert np.all(np.abs(sample_mean - expected) <= bound), (what, sample_mean, expected, bound)


# --------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------
def test_reference_dp_on_the_3x3_walk_by_hand():
    """The DP itself, on a case worked out by hand.

    3x3, start in the centre, blocks in opposite corners 0 and 8. Both experts
    disagree everywhere on the way (up/down at the centre; at 1 one says left,
    the other down; at 7 right or up), so every two steps the mixture ends on
    a block with probability 1/2, each corner equally likely.
    """
    reach, timeout = py_episode_outcomes(3, [0, 8], 4, frozenset({0, 1}), 6)
    np.testing.assert_allclose(reach, [7 / 16, 7 / 16])
    assert timeout == pytest.approx(1 / 8)
    reach, timeout = py_episode_outcomes(3, [0, 8], 4, frozenset({0}), 6)  # 8 known to be a trap
    assert reach == [1.0, 0.0] and timeout == 0.0
    exact = py_trial({"blocks": [0, 8], "goal": 0, "start": 4}, 3, 6, 3)
    # Episode 1: 7/16 goal, 7/16 trap. Episode 2: after the trap (7/16) the goal surely; else as episode 1.
    np.testing.assert_allclose(exact["success"][:2], [7 / 16, 7 / 16 + 9 / 16 * 7 / 16])
    np.testing.assert_allclose(exact["mean"][0], 0.0, atol=1e-12)


CASES = [
    # (size, blocks, goal, start, time limit): the 3x3 walk above with timeouts; an
    # asymmetric 4x4 layout; three blocks, where the experts' votes are 2 to 1 and
    # the known-trap set takes several values.
    (3, [0, 8], 0, 4, 6),
    (3, [0, 8], 1, 4, 6),
    (4, [2, 13], 1, 4, 7),
    (4, [3, 9, 12], 2, 5, 9),
    (4, [3, 9, 12], 0, 5, 9),
]
COPIES, EPISODES = 4096, 4


@functools.cache
def tiny_env(size: int, num_blocks: int) -> Gridworld:
    return Gridworld(size=size, num_blocks=num_blocks, num_colors=num_blocks)


@pytest.mark.parametrize(("size", "blocks", "goal", "start", "max_steps"), CASES)
def test_simulation_matches_exact_mixture_trial(size, blocks, goal, start, max_steps):
    task = {"blocks": blocks, "goal": goal, "start": start}
    for b in range(len(blocks)):  # solvable: every block reachable from the start
        assert start in py_field(size, blocks, b)
    exact = py_trial(task, size, max_steps, EPISODES)
    assert 0.0 < exact["success"][0] < 1.0
    env = tiny_env(size, len(blocks))
    params = env.default_params.replace(max_steps_in_episode=max_steps)
    returns, success = imitation_returns(
        env, params, stack_copies(task, COPIES), jax.random.key(size * 100 + goal), EPISODES
    )
    returns, success = np.asarray(returns, np.float64), np.asarray(success)
    assert returns.shape == success.shape == (EPISODES, COPIES)
    assert set(np.unique(returns).tolist()) <= {-1.0, 0.0, 1.0}
    np.testing.assert_array_equal(success, returns == 1.0)
    p_success, p_timeout = exact["success"], exact["timeout"]
    assert_within(success.mean(1), p_success, p_success * (1 - p_success), COPIES, "success")
    assert_within((returns == 0).mean(1), p_timeout, p_timeout * (1 - p_timeout), COPIES, "timeout")
    assert_within(returns.mean(1), exact["mean"], exact["var"], COPIES, "return")


def test_one_block_is_always_the_goal():
    """X = 1: the only block is the goal, the expert walks straight to it, no timeouts."""
    env, params = make("Gridworld-v0", num_blocks=1)
    np.testing.assert_array_equal(imitation_reference(env, params, jax.random.key(3), 256, 3), [1.0] * 3)
    tasks = make_task_set(env, jax.random.key(4), 256, params)
    returns, success = imitation_returns(env, params, tasks, jax.random.key(5), 2)
    assert np.asarray(success).all() and (np.asarray(returns) == 1.0).all()


@pytest.mark.parametrize("num_blocks", [2, 3])
def test_never_beats_the_bayes_optimal_searcher(num_blocks):
    """Per episode: success <= min(j/X, 1) and return <= optimal_returns + P(timeout).

    Episode 1 matches the searcher's success rate (1 - P(timeout)) / X, since
    the policy does not depend on the goal; later episodes fall clearly below
    it because a success is forgotten (the committing searcher of
    ``test_gridworld.test_optimal_returns_matches_real_env_trials`` reaches the
    optimum on the same env, which is why a trained agent can beat this reference).
    """
    env, params = make("Gridworld-v0", num_blocks=num_blocks)
    n, episodes = 2048, 5
    tasks = make_task_set(env, jax.random.key(10 + num_blocks), n, params)
    returns, success = imitation_returns(env, params, tasks, jax.random.key(20 + num_blocks), episodes)
    returns, success = np.asarray(returns, np.float64), np.asarray(success, np.float64)
    timeout = (returns == 0).mean(1)
    se_success = np.sqrt(0.25 / n)
    se_return = returns.std(1, ddof=1) / np.sqrt(n)
    j = np.arange(1, episodes + 1)
    assert np.all(success.mean(1) <= np.minimum(j / num_blocks, 1.0) + SIGMAS * se_success)
    optimal = optimal_returns(num_blocks, episodes)
    assert np.all(returns.mean(1) <= optimal + timeout + SIGMAS * se_return)
    assert abs(success[0].mean() - (1 - timeout[0]) / num_blocks) <= SIGMAS * se_success
    assert returns[1].mean() < optimal[1] - 0.2  # a success is forgotten: re-guessed in episode 2
    assert timeout.max() < 0.02  # the mixture rarely dithers until the time limit


@pytest.mark.parametrize(("num_blocks", "independent"), [(2, 3.26), (3, 1.68)])
def test_total_agrees_with_the_independent_estimate(num_blocks, independent):
    """The 5-episode total on the default 7x7 grid, against an estimate made separately.

    (3.26 at X=2 and 1.68 at X=3; 4096 tasks each here, total standard error
    about 0.010 and 0.018.)
    """
    env, params = make("Gridworld-v0", num_blocks=num_blocks)
    n = 4096
    tasks = make_task_set(env, jax.random.key(30 + num_blocks), n, params)
    returns, _ = imitation_returns(env, params, tasks, jax.random.key(40 + num_blocks), 5)
    total = np.asarray(returns, np.float64).sum(0)
    se = total.std(ddof=1) / np.sqrt(n)
    assert abs(total.mean() - independent) <= SIGMAS * se + 0.02, (total.mean(), se)


def test_expert_action_table_matches_expert_action():
    """Row g, cell c of the table is ``expert_action`` of the task with goal g at c."""
    env, params = make("Gridworld-v0", size=5, num_blocks=3, num_colors=3)
    tasks = make_task_set(env, jax.random.key(50), 8, params, solvable_only=False)
    tables = np.asarray(jax.jit(jax.vmap(env.expert_action_table))(tasks))
    assert tables.shape == (8, 3, 25) and tables.dtype == np.int32

    def expert_everywhere(task: GridworldTask) -> jax.Array:
        def at(goal: jax.Array, cell: jax.Array) -> jax.Array:
            state = env.state_at_start(task.replace(goal_index=goal, agent_start=cell))
            return env.expert_action(state, params)

        cells = jnp.arange(25, dtype=jnp.int32)
        return jax.vmap(lambda g: jax.vmap(lambda c: at(g, c))(cells))(jnp.arange(3, dtype=jnp.int32))

    np.testing.assert_array_equal(tables, np.asarray(jax.jit(jax.vmap(expert_everywhere))(tasks)))
    for i in range(8):
        blocks = np.asarray(tasks.block_cells[i]).tolist()
        for g in range(3):
            field = py_field(5, blocks, g)
            for cell in range(25):
                if cell not in blocks and cell in field:
                    assert tables[i, g, cell] == py_expert(5, blocks, g, cell), (i, g, cell)


def test_imitation_returns_rejects_bad_episode_count():
    env, params = make("Gridworld-v0", size=3, num_blocks=2, num_colors=2)
    tasks = make_task_set(env, jax.random.key(0), 2, params)
    with pytest.raises(ValueError, match="num_episodes"):
        imitation_returns(env, params, tasks, jax.random.key(0), 0)

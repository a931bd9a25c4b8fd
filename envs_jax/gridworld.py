"""Meta-RL Gridworld of Chen & Agrawal (2020), section 3.1, in pure JAX.

A ``size`` x ``size`` grid holds the agent and ``num_blocks`` coloured blocks.
One block is the goal (+1, episode ends), the others are traps (-1, episode
ends); every other step gives 0 and the time limit truncates. Which block is
the goal is never shown: an agent can only find out by trying, which is what
makes a trial of several episodes on the same task a meta-learning problem.

An episode that reaches a block on the last allowed step is *terminated*, not
truncated: ``truncated = time limit reached & ~terminated``, the project-wide
convention (:func:`truncation`), so ``terminated`` and ``truncated`` never
both hold.

A *task* fixes the block cells, their colours, the goal and the agent's start
(:class:`GridworldTask`). ``reset`` samples a fresh task; ``reset_to_task``
starts an episode of a given one (the meta-RL task interface used by
:mod:`jaxmeta.trial`).

Cells are numbered row-major, ``cell = row * size + col``. Actions:
0 up, 1 down, 2 left, 3 right; moving into the border leaves the agent in place.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces

from envs_jax.tasks import task_set, where_tasks
from envs_jax.vector import truncation

ACTION_NAMES = ("up", "down", "left", "right")
# (row, col) displacement of each action.
_ACTION_DELTAS = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]], dtype=np.int32)

OBS_MODES = ("multihot", "rgb")


@struct.dataclass
class GridworldTask:
    """Everything that differs between two tasks. All leaves are int32."""

    block_cells: jax.Array  # (num_blocks,) distinct cells
    block_colors: jax.Array  # (num_blocks,) distinct palette indices in [0, num_colors)
    goal_index: jax.Array  # () which block is the goal
    agent_start: jax.Array  # () start cell, never a block cell


@struct.dataclass
class EnvState(environment.EnvState):
    agent_cell: jax.Array
    task: GridworldTask
    time: jax.Array


@struct.dataclass
class EnvParams(environment.EnvParams):
    max_steps_in_episode: int = 98


def distinct_integers(key: jax.Array, n: int, k: int) -> jax.Array:
    """``k`` distinct integers drawn uniformly without replacement from ``[0, n)``.

    Every ordered ``k``-tuple of distinct values is equally likely (up to the
    ``n / 2**32`` bias of :func:`uniform_below`). Costs one random draw and
    O(k^2) comparisons, no sort or permutation of all ``n`` values, which keeps
    environment resets cheap under ``vmap``.
    """
    if not 0 <= k <= n:
        raise ValueError(f"distinct_integers needs 0 <= k <= n, got k={k}, n={n}")
    return _distinct_from_ranks(uniform_below(key, n - np.arange(k)))


def uniform_below(key: jax.Array, bounds: Any) -> jax.Array:
    """One integer uniform in ``[0, bounds[i])`` per entry, from a single 32-bit draw each.

    Multiply-high of a uniform 32-bit word by the bound (Lemire's method
    without rejection): bias at most ``bound / 2**32``, and far fewer hash
    evaluations than one ``jax.random.randint`` call per bound.
    """
    bounds = jnp.asarray(bounds, jnp.uint32)
    bits = jax.random.bits(key, bounds.shape, jnp.uint32)
    return jax.lax.mulhi(bits, bounds).astype(jnp.int32)


def _distinct_from_ranks(ranks: jax.Array) -> jax.Array:
    """Map ``ranks[i]`` in ``[0, n - i)`` to the ``ranks[i]``-th value not chosen before."""
    k = ranks.shape[0]
    chosen: list[jax.Array] = []
    for i in range(k):
        # The ranks[i]-th integer (0-based) not yet chosen is the least fixed
        # point of v = rank + #{chosen <= v}; i iterations reach it from below.
        value = ranks[i]
        for _ in range(i):
            value = ranks[i] + sum((c <= value).astype(jnp.int32) for c in chosen)
        chosen.append(value)
    return jnp.stack(chosen) if chosen else jnp.zeros((0,), jnp.int32)


def default_palette(num_colors: int) -> np.ndarray:
    """``num_colors`` well-separated RGB colours (uint8), none black or white."""
    base = np.array(
        [
            [230, 25, 75],  # red
            [60, 180, 75],  # green
            [0, 130, 200],  # blue
            [255, 225, 25],  # yellow
            [245, 130, 48],  # orange
            [145, 30, 180],  # purple
            [70, 240, 240],  # cyan
            [240, 50, 230],  # magenta
            [128, 128, 0],  # olive
            [0, 128, 128],  # teal
            [170, 110, 40],  # brown
            [128, 0, 0],  # maroon
        ],
        dtype=np.uint8,
    )
    if num_colors <= len(base):
        return base[:num_colors]
    hues = np.arange(num_colors) / num_colors
    rgb = np.stack([_hue_to_rgb(h) for h in hues])
    return (rgb * 220 + 20).astype(np.uint8)


def _hue_to_rgb(hue: float) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0]) + hue * 6.0) % 6.0
    return 1.0 - np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


class Gridworld(environment.Environment[EnvState, EnvParams]):
    """The seed paper's gridworld with a goal block and trap blocks.

    Shape-defining settings (``size``, ``num_blocks``, ``num_colors``,
    ``obs_mode``) are constructor arguments; ``max_steps_in_episode`` lives in
    :class:`EnvParams`. Build it with ``envs_jax.make("Gridworld-v0", **overrides)``.

    Observation (``obs_mode="multihot"``): float32 ``(size, size, 1 + num_colors)``;
    channel 0 marks the agent, channel ``1 + c`` the block of colour ``c``. A
    block stays drawn when the agent stands on it, so the final frame of an
    episode shows which block ended it. ``obs_mode="rgb"``: uint8
    ``(size, size, 3)`` pixels (white floor, palette blocks, black agent; the
    agent on a block shows as the block's colour at half brightness).
    """

    def __init__(
        self,
        size: int = 7,
        num_blocks: int = 3,
        num_colors: int = 6,
        obs_mode: str = "multihot",
    ) -> None:
        super().__init__()
        _check_int("size", size, low=2)
        _check_int("num_blocks", num_blocks, low=1)
        _check_int("num_colors", num_colors, low=1)
        if num_blocks + 1 > size * size:
            raise ValueError(
                f"num_blocks must be at most size*size - 1 = {size * size - 1} "
                f"(one cell is the agent's), got num_blocks={num_blocks} with size={size}"
            )
        if num_colors < num_blocks:
            raise ValueError(
                f"num_colors must be >= num_blocks={num_blocks} (each block has its "
                f"own colour), got num_colors={num_colors}"
            )
        if obs_mode not in OBS_MODES:
            raise ValueError(f"obs_mode must be one of {OBS_MODES}, got {obs_mode!r}")
        self.size = size
        self.num_blocks = num_blocks
        self.num_colors = num_colors
        self.obs_mode = obs_mode
        self.palette = default_palette(num_colors)

    # ------------------------------------------------------------------ gymnax
    @property
    def default_params(self) -> EnvParams:
        return EnvParams(max_steps_in_episode=2 * self.size * self.size)

    @property
    def name(self) -> str:
        return "Gridworld-v0"

    @property
    def num_actions(self) -> int:
        return 4

    @property
    def num_cells(self) -> int:
        return self.size * self.size

    @property
    def obs_shape(self) -> tuple[int, int, int]:
        if self.obs_mode == "rgb":
            return (self.size, self.size, 3)
        return (self.size, self.size, 1 + self.num_colors)

    def action_space(self, params: EnvParams | None = None) -> spaces.Discrete:
        return spaces.Discrete(4)

    def observation_space(self, params: EnvParams | None = None) -> spaces.Box:
        if self.obs_mode == "rgb":
            return spaces.Box(0, 255, self.obs_shape, jnp.uint8)
        return spaces.Box(0.0, 1.0, self.obs_shape, jnp.float32)

    def state_space(self, params: EnvParams) -> spaces.Dict:
        n, x = self.num_cells, self.num_blocks
        return spaces.Dict(
            {
                "agent_cell": spaces.Discrete(n),
                "block_cells": spaces.Box(0, n - 1, (x,), jnp.int32),
                "block_colors": spaces.Box(0, self.num_colors - 1, (x,), jnp.int32),
                "goal_index": spaces.Discrete(x),
                "agent_start": spaces.Discrete(n),
                "time": spaces.Discrete(params.max_steps_in_episode),
            }
        )

    @partial(jax.jit, static_argnames=("self",))
    def step(
        self,
        key: jax.Array,
        state: EnvState,
        action: int | jax.Array,
        params: EnvParams | None = None,
    ) -> tuple[jax.Array, EnvState, jax.Array, jax.Array, jax.Array, dict[str, Any]]:
        """gymnax 1.x ``step`` with auto-reset, rendering one observation per step.

        Same contract as the base class (a new random task after ``terminated``
        or ``truncated``; ``info["final_observation"]`` is the frame before the
        reset), except that ``truncated`` follows the project's convention
        (:func:`truncation`): a block reached on the last allowed step
        terminates the episode and is not also a truncation (gymnax's base
        class would set both). The reset builds only a state, the two states
        are selected first and the observation is drawn once: under ``vmap``
        both branches run on every step, so this halves the rendering work.
        ``step_env`` is deterministic, so the reset may use ``key`` itself.
        """
        params = self.default_params if params is None else params
        obs_st, state_st, reward, terminated, info = self.step_env(key, state, action, params)
        truncated = truncation(self, state_st, terminated, params)
        done = jnp.logical_or(terminated, truncated)
        task = self.sample_task(key, params)
        state_re = self.state_at_start(task)
        state = jax.tree.map(lambda re, st: jax.lax.select(done, re, st), state_re, state_st)
        info = {**info, "terminated": terminated, "truncated": truncated, "final_observation": obs_st}
        return self.get_obs(state), state, reward, terminated, truncated, info

    def step_env(
        self,
        key: jax.Array,
        state: EnvState,
        action: int | jax.Array,
        params: EnvParams,
    ) -> tuple[jax.Array, EnvState, jax.Array, jax.Array, dict[str, Any]]:
        del key  # transitions are deterministic
        deltas = jnp.asarray(_ACTION_DELTAS)[action]
        row = jnp.clip(state.agent_cell // self.size + deltas[0], 0, self.size - 1)
        col = jnp.clip(state.agent_cell % self.size + deltas[1], 0, self.size - 1)
        agent_cell = row * self.size + col
        on_block = state.task.block_cells == agent_cell
        terminated = jnp.any(on_block)
        success = on_block[state.task.goal_index]
        reward = jnp.where(success, 1.0, jnp.where(terminated, -1.0, 0.0))
        state = EnvState(agent_cell=agent_cell, task=state.task, time=state.time + 1)
        info = {"success": success, "discount": 1.0 - terminated.astype(jnp.float32)}
        return self.get_obs(state), state, reward.astype(jnp.float32), terminated, info

    def reset_env(self, key: jax.Array, params: EnvParams) -> tuple[jax.Array, EnvState]:
        return self.reset_to_task(key, self.sample_task(key, params), params)

    def get_obs(self, state: EnvState, params: EnvParams | None = None, key: Any = None) -> jax.Array:
        if self.obs_mode == "rgb":
            return self._rgb_cells(state).reshape(self.size, self.size, 3)
        obs = jnp.zeros((self.num_cells, 1 + self.num_colors), jnp.float32)
        obs = obs.at[state.agent_cell, 0].set(1.0)
        obs = obs.at[state.task.block_cells, 1 + state.task.block_colors].set(1.0)
        return obs.reshape(self.obs_shape)

    def is_terminated(self, state: EnvState, params: EnvParams) -> jax.Array:
        return jnp.any(state.task.block_cells == state.agent_cell)

    # ------------------------------------------------------------ task interface
    def sample_task(self, key: jax.Array, params: EnvParams | None = None) -> GridworldTask:
        """A random task: block cells, distinct colours, goal and start cell."""
        n, x, c = self.num_cells, self.num_blocks, self.num_colors
        # One random draw for everything: ranks of the X+1 cells, of the X colours, and the goal.
        bounds = np.concatenate([n - np.arange(x + 1), c - np.arange(x), [x]])
        draws = uniform_below(key, bounds)
        cells = _distinct_from_ranks(draws[: x + 1])
        colors = _distinct_from_ranks(draws[x + 1 : 2 * x + 1])
        goal = draws[-1]
        return GridworldTask(
            block_cells=cells[:-1], block_colors=colors, goal_index=goal, agent_start=cells[-1]
        )

    def reset_to_task(
        self, key: jax.Array, task: GridworldTask, params: EnvParams | None = None
    ) -> tuple[jax.Array, EnvState]:
        """Start an episode of ``task`` (the start cell is part of the task)."""
        del key, params
        state = self.state_at_start(task)
        return self.get_obs(state), state

    def state_at_start(self, task: GridworldTask) -> EnvState:
        """The state at the start of an episode of ``task`` (no observation drawn)."""
        return EnvState(agent_cell=task.agent_start, task=task, time=jnp.zeros((), jnp.int32))

    # ---------------------------------------------------------------- planning
    def distance_to_goal(self, task: GridworldTask) -> jax.Array:
        """Shortest number of moves from each cell to the goal without entering a trap.

        A BFS distance field, ``(size*size,)`` int32; trap cells and cells that
        cannot reach the goal hold ``size*size`` (unreachable).
        """
        w, n = self.size, self.num_cells
        unreachable = jnp.int32(n)
        is_trap = jnp.zeros(n, bool).at[task.block_cells].set(True)
        goal_cell = task.block_cells[task.goal_index]
        is_trap = is_trap.at[goal_cell].set(False)
        dist0 = jnp.full(n, unreachable).at[goal_cell].set(0).reshape(w, w)
        trap = is_trap.reshape(w, w)
        pad = jnp.full((1, w), unreachable)
        padc = jnp.full((w, 1), unreachable)

        def relax(dist: jax.Array) -> jax.Array:
            up = jnp.concatenate([dist[1:], pad], axis=0)  # value of the cell below
            down = jnp.concatenate([pad, dist[:-1]], axis=0)
            left = jnp.concatenate([dist[:, 1:], padc], axis=1)
            right = jnp.concatenate([padc, dist[:, :-1]], axis=1)
            best = jnp.minimum(jnp.minimum(up, down), jnp.minimum(left, right)) + 1
            new = jnp.minimum(dist, jnp.minimum(best, unreachable))
            return jnp.where(trap, unreachable, new)

        def not_converged(carry: tuple[jax.Array, jax.Array]) -> jax.Array:
            dist, prev = carry
            return jnp.any(dist != prev)

        def body(carry: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
            dist, _ = carry
            return relax(dist), dist

        dist, _ = jax.lax.while_loop(not_converged, body, (relax(dist0), dist0))
        return dist.reshape(n)

    def expert_action(self, state: EnvState, params: EnvParams | None = None) -> jax.Array:
        """First move of a shortest path to the goal that never enters a trap.

        Ties go to the lowest action index (up, down, left, right). If the goal
        cannot be reached without crossing a trap (a rare task, see
        :meth:`is_solvable`), the expert returns a move that keeps off traps.
        """
        return self._expert_move(state.task, self.distance_to_goal(state.task), state.agent_cell)

    def expert_action_table(self, task: GridworldTask) -> jax.Array:
        """:meth:`expert_action` at every cell, for each choice of goal block.

        ``(num_blocks, size*size)`` int32: row ``g`` is the expert of the task
        with ``goal_index = g``. Costs ``num_blocks`` distance fields, once, so
        a rollout that consults the experts of several goals on every step
        (:func:`imitation_returns`) only looks moves up.
        """

        def one_goal(goal: jax.Array) -> jax.Array:
            task_g = task.replace(goal_index=goal)
            dist = self.distance_to_goal(task_g)
            cells = jnp.arange(self.num_cells, dtype=jnp.int32)
            return jax.vmap(lambda cell: self._expert_move(task_g, dist, cell))(cells)

        return jax.vmap(one_goal)(jnp.arange(self.num_blocks, dtype=jnp.int32))

    def _expert_move(self, task: GridworldTask, dist: jax.Array, cell: jax.Array) -> jax.Array:
        w = self.size
        row, col = cell // w, cell % w
        deltas = jnp.asarray(_ACTION_DELTAS)
        nrow = jnp.clip(row + deltas[:, 0], 0, w - 1)
        ncol = jnp.clip(col + deltas[:, 1], 0, w - 1)
        nxt = nrow * w + ncol
        # Traps and unreachable cells both hold size*size in ``dist``; rank traps
        # last so that, when the goal is unreachable, argmin picks a safe move.
        goal_cell = task.block_cells[task.goal_index]
        is_trap = jnp.any(nxt[:, None] == task.block_cells[None, :], axis=1) & (nxt != goal_cell)
        return jnp.argmin(jnp.where(is_trap, self.num_cells + 1, dist[nxt])).astype(jnp.int32)

    def is_valid_task(self, task: GridworldTask, params: EnvParams | None = None) -> jax.Array:
        """Task sets keep only solvable tasks (:meth:`is_solvable`; see ``envs_jax.tasks.task_set``)."""
        return self.is_solvable(task)

    def episode_references(
        self, params: EnvParams, tasks: GridworldTask, num_episodes: int, key: jax.Array, repeats: int = 16
    ) -> dict[str, np.ndarray]:
        """Reference returns per episode of a ``num_episodes``-episode trial on ``tasks``.

        * ``"Bayes-optimal"``: the searcher of :func:`optimal_returns` (remembers every
          failure, one untried block per episode);
        * ``"expert imitation"``: a perfect imitator of the goal-knowing expert under the
          failure-bank protocol (:func:`imitation_returns`), simulated ``repeats`` times on
          each task (the Monte-Carlo error of the mean is about ``0.6 / sqrt(M * repeats)``
          per episode);
        * ``"memoryless optimum"``: the best a policy that cannot remember earlier episodes
          and ends each one on a block can do, ``(2 - X) / X`` per episode.
        """
        num_tasks = jax.tree.leaves(tasks)[0].shape[0]
        tiled = jax.tree.map(lambda leaf: jnp.concatenate([leaf] * repeats), tasks)
        returns, _ = imitation_returns(self, params, tiled, key, num_episodes)
        x = self.num_blocks
        return {
            "Bayes-optimal": optimal_returns(x, num_episodes),
            "expert imitation": np.asarray(returns, np.float64)
            .reshape(num_episodes, repeats * num_tasks)
            .mean(1),
            "memoryless optimum": np.full(num_episodes, (2 - x) / x),
        }

    def is_solvable(self, task: GridworldTask) -> jax.Array:
        """Whether every block can be reached from the start without crossing another.

        Only then can an agent that does not know the goal try each block in
        turn, the assumption behind :func:`optimal_returns`.
        """
        reach = []
        for j in range(self.num_blocks):
            dist = self.distance_to_goal(task.replace(goal_index=jnp.int32(j)))
            reach.append(dist[task.agent_start] < self.num_cells)
        return jnp.all(jnp.stack(reach))

    # ---------------------------------------------------------------- rendering
    def _rgb_cells(self, state: EnvState) -> jax.Array:
        cells = jnp.arange(self.num_cells, dtype=jnp.int32)
        palette = jnp.asarray(self.palette, jnp.int32)
        is_block = cells[:, None] == state.task.block_cells[None, :]
        block_rgb = is_block.astype(jnp.int32) @ palette[state.task.block_colors]
        has_block = jnp.any(is_block, axis=1, keepdims=True)
        agent = (cells == state.agent_cell)[:, None]
        rgb = jnp.where(has_block, block_rgb, 255)
        rgb = jnp.where(agent, jnp.where(has_block, block_rgb // 2, 0), rgb)
        return rgb.astype(jnp.uint8)

    def render(self, state: EnvState, params: EnvParams | None = None, cell_pixels: int = 24) -> jax.Array:
        """An RGB picture (uint8, ``(size*cell_pixels,)*2 + (3,)``) for figures and GIFs.

        Grid lines are grey, the goal gets a thin gold frame so a person sees
        which block is which (the agent's observation never shows this).
        """
        rgb = self._rgb_cells(state).reshape(self.size, self.size, 3)
        img = jnp.repeat(jnp.repeat(rgb, cell_pixels, axis=0), cell_pixels, axis=1)
        p = jnp.arange(self.size * cell_pixels) % cell_pixels
        line = (p == 0) | (p == cell_pixels - 1)
        grid = line[:, None] | line[None, :]
        img = jnp.where(grid[..., None], jnp.uint8(160), img)
        goal_cell = state.task.block_cells[state.task.goal_index]
        gr, gc = goal_cell // self.size, goal_cell % self.size
        rows = jnp.arange(self.size * cell_pixels) // cell_pixels
        in_goal = (rows[:, None] == gr) & (rows[None, :] == gc)
        frame = (p >= 1) & (p <= 2) | (p >= cell_pixels - 3) & (p <= cell_pixels - 2)
        frame2d = frame[:, None] | frame[None, :]
        gold = jnp.array([212, 175, 55], jnp.uint8)
        return jnp.where((in_goal & frame2d)[..., None], gold, img)


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value}")


def optimal_returns(num_blocks: int, num_episodes: int) -> np.ndarray:
    """Expected return of each episode of a trial for the Bayes-optimal searcher.

    The ceiling every method is measured against: the best an agent can do
    that must end each episode on a block (an agent that idles until the time
    limit scores 0 but learns nothing). The agent knows the task's layout but
    not which of the ``X = num_blocks`` blocks is the goal (uniform prior); it
    remembers every block it has tried and, until it has found the goal, walks
    to one untried block per episode; once found, it walks back to the goal.

    Derivation: fix the order in which the blocks would be tried (it cannot
    depend on the unknown goal). Episode ``j`` (1-based, ``j <= X``) ends on
    the goal exactly when the goal is among the first ``j`` blocks of that
    order (found at episode ``j`` or earlier and revisited since), which has
    probability ``j/X`` under the uniform goal; otherwise it ends on the
    ``j``-th tried block, a trap, with probability ``(X - j)/X``. Hence
    ``E[R_j] = j/X - (X - j)/X = (2j - X)/X`` for ``j <= X``, and 1 for
    ``j >= X`` (the goal is known by then).

    No agent succeeds more often: until it first reaches the goal, the blocks
    an agent reaches do not depend on which block is the goal (every outcome
    so far was -1), so it has reached the goal by episode ``j`` with
    probability at most ``j/X``. As ``E[R_j] = 2 P(success at j) - 1 +
    P(timeout at j)``, an agent beats these returns only by timing out (0
    instead of -1), never by finding the goal sooner.
    """
    _check_int("num_blocks", num_blocks, low=1)
    _check_int("num_episodes", num_episodes, low=1)
    j = np.arange(1, num_episodes + 1, dtype=np.float64)
    return np.where(j <= num_blocks, (2 * j - num_blocks) / num_blocks, 1.0)


def task_set_size(env: Gridworld, num_tasks: int, every_goal: bool = False) -> int:
    """How many tasks :func:`make_task_set` returns when asked for ``num_tasks``.

    ``num_tasks`` itself, except with ``every_goal`` when it is not a multiple
    of ``num_blocks``: then the last layout's group is completed, giving
    ``ceil(num_tasks / num_blocks) * num_blocks``.
    """
    _check_int("num_tasks", num_tasks, low=1)
    if not every_goal:
        return num_tasks
    return -(-num_tasks // env.num_blocks) * env.num_blocks


def make_task_set(
    env: Gridworld,
    key: jax.Array,
    num_tasks: int,
    params: EnvParams | None = None,
    solvable_only: bool = True,
    every_goal: bool = False,
) -> GridworldTask:
    """A fixed set of tasks stacked on a leading axis (``num_tasks`` of them, see below).

    With ``solvable_only`` (default) tasks where some block cannot be reached
    without crossing another are redrawn, so every task admits the
    Bayes-optimal behaviour of :func:`optimal_returns`.

    With ``every_goal`` each drawn layout (blocks, colours, start) appears
    once per choice of goal block, consecutively: task ``i`` is layout
    ``i // X`` with goal ``i % X``. Then the layout alone never tells which
    block is the goal, so an agent trained on the set cannot succeed by
    recognising layouts it has seen; it has to find the goal by trying, as
    on a new task.

    **Group completion.** If ``num_tasks`` is not a multiple of ``X =
    num_blocks``, a cut-short last group would show its layout with fewer
    than ``X`` goals and so give its goal away; instead the group is
    completed and the set holds ``ceil(num_tasks / X) * X`` tasks, up to
    ``X - 1`` more than asked (:func:`task_set_size`). The layouts and their
    order do not depend on this rule (``ceil(num_tasks / X)`` layouts are
    drawn from ``key`` either way), so the first ``num_tasks`` rows are the
    tasks that earlier versions returned for the same call (e.g. the X=3
    configs' 1000 training tasks); only the last group's missing goals are
    appended. Callers must size what they index by the set's length
    (``tasks.goal_index.shape[0]``), not by ``num_tasks``, or the appended
    goals are never used and the last layout still gives its goal away.
    """
    size = task_set_size(env, num_tasks, every_goal)
    params = env.default_params if params is None else params
    num_blocks = env.num_blocks
    num_layouts = size // num_blocks if every_goal else size
    tasks = task_set(env, key, num_layouts, params, valid_only=solvable_only)
    if not every_goal:
        return tasks
    layout = jnp.arange(size) // num_blocks
    goals = (jnp.arange(size) % num_blocks).astype(tasks.goal_index.dtype)
    return jax.tree.map(lambda leaf: leaf[layout], tasks).replace(goal_index=goals)


def imitation_returns(
    env: Gridworld,
    params: EnvParams | None,
    tasks: GridworldTask,
    key: jax.Array,
    num_episodes: int = 5,
) -> tuple[jax.Array, jax.Array]:
    """Returns of a perfect imitator of the goal-knowing expert, under the paper's test protocol.

    The headline agent is cloned from :meth:`Gridworld.expert_action`, an
    expert that knows the goal. At test time it plays ``num_episodes``
    episodes of one task, seeing the layout and a memory bank of its *failed*
    episodes only (a trap's final frame shows which block was a trap;
    successes and timeouts are not stored; no frame shows the goal). A
    policy that imitates the expert perfectly from those inputs, i.e. matches
    the expert's action distribution given them, is the posterior mixture of
    the experts: with ``C`` the blocks not yet seen to be traps in this trial
    (the goal is uniform over them), each step samples

        ``P(a) = (1/|C|) * sum_{g in C} 1[expert_g(state) = a]``,

    ``expert_g`` being the expert of the task whose goal is block ``g``. A
    trap ends the episode with -1 and leaves ``C``; the goal ends it with +1
    and, not being stored, teaches nothing, so the next episode guesses among
    the same ``C`` again; the time limit ends it with 0 and reveals nothing.

    This simulates that policy on ``env`` (its own ``step_env`` and the
    :func:`truncation` convention) for each of the ``M`` stacked ``tasks``
    independently: each task's ``X`` experts are tabulated once
    (:meth:`Gridworld.expert_action_table`), then one ``lax.scan`` over the
    steps of each episode, vectorised over the tasks. Returns ``(returns,
    success)``, each ``(num_episodes, M)``: the return of episode ``j`` of
    task ``i``'s trial (+1, -1, or 0 for a timeout) and whether it reached
    the goal.

    **How it compares with** :func:`optimal_returns`. Episode 1 succeeds with
    probability ``(1 - P(timeout)) / X``, as for the Bayes-optimal searcher
    (the policy does not depend on the goal). Later episodes do worse: a known
    trap is never entered again (every expert in ``C`` avoids it), but a
    success is forgotten, so the next episode may walk to another untried
    block, a trap. The success rate of episode ``j`` never exceeds
    ``min(j/X, 1)``, and its return exceeds :func:`optimal_returns` only
    through timeouts (0 instead of -1).

    **Why a trained agent can beat it.** This is the reference for *sampling*
    from a perfectly cloned policy, not a ceiling. A policy that commits
    deterministically to one block for each (layout, known traps), e.g.
    greedy decoding or a network sharper than the true posterior, goes back
    to the same block after a success and so re-finds it in every later
    episode, reaching the Bayes-optimal returns; a trained agent sampling
    from an imperfect but confident imitation can likewise land between this
    reference and :func:`optimal_returns`.
    """
    params = env.default_params if params is None else params
    _check_int("num_episodes", num_episodes, low=1)
    max_steps = int(params.max_steps_in_episode)
    return _imitation_returns(env, params, tasks, key, num_episodes, max_steps)


@partial(jax.jit, static_argnums=(0, 4, 5))
def _imitation_returns(
    env: Gridworld,
    params: EnvParams,
    tasks: GridworldTask,
    key: jax.Array,
    num_episodes: int,
    max_steps: int,
) -> tuple[jax.Array, jax.Array]:
    tables = jax.vmap(env.expert_action_table)(tasks)  # (M, X, cells)
    num_tasks = tables.shape[0]
    step_key = jax.random.key(0)  # step_env is deterministic

    def act_and_step(
        table: jax.Array, candidates: jax.Array, state: EnvState, u: jax.Array
    ) -> tuple[EnvState, jax.Array, jax.Array]:
        # Votes of the experts in C; sample an action with probability votes / |C|.
        votes = jnp.zeros(4, jnp.float32).at[table[:, state.agent_cell]].add(candidates.astype(jnp.float32))
        cum = jnp.cumsum(votes)
        action = jnp.argmax(cum > u * cum[-1]).astype(jnp.int32)
        _, next_state, reward, terminated, _ = env.step_env(step_key, state, action, params)
        ended = terminated | truncation(env, next_state, terminated, params)
        return next_state, reward, ended

    def episode(candidates: jax.Array, episode_key: jax.Array) -> tuple[jax.Array, tuple]:
        start = jax.vmap(env.state_at_start)(tasks)
        uniforms = jax.random.uniform(episode_key, (max_steps, num_tasks))

        def step(carry: tuple, u: jax.Array) -> tuple[tuple, None]:
            state, done, ret = carry
            next_state, reward, ended = jax.vmap(act_and_step)(tables, candidates, state, u)
            ret = ret + jnp.where(done, 0.0, reward)
            state = jax.tree.map(
                lambda old, new: jnp.where(done.reshape((-1,) + (1,) * (old.ndim - 1)), old, new),
                state,
                next_state,
            )
            return (state, done | ended, ret), None

        init = (start, jnp.zeros(num_tasks, bool), jnp.zeros(num_tasks, jnp.float32))
        (state, _, ret), _ = jax.lax.scan(step, init, uniforms)
        # An episode that ended on a trap leaves the agent on it: that block leaves C.
        on_block = tasks.block_cells == state.agent_cell[:, None]
        candidates = candidates & ~(on_block & (ret < 0)[:, None])
        return candidates, (ret, ret > 0)

    candidates = jnp.ones((num_tasks, env.num_blocks), bool)
    _, (returns, success) = jax.lax.scan(episode, candidates, jax.random.split(key, num_episodes))
    return returns, success


def imitation_reference(
    env: Gridworld,
    params: EnvParams | None,
    key: jax.Array,
    num_tasks: int = 4096,
    num_episodes: int = 5,
) -> np.ndarray:
    """Mean per-episode return of :func:`imitation_returns` over fresh solvable tasks.

    ``(num_episodes,)`` float64: the expected return of episode ``j`` of a
    trial for a policy that samples from the perfectly cloned expert mixture,
    estimated on ``num_tasks`` tasks drawn by :func:`make_task_set` (uniform
    goal). Its sum is comparable to a method's total return over the
    trial; the Monte-Carlo standard error of each entry is at most
    ``1/sqrt(num_tasks)``.
    """
    task_key, policy_key = jax.random.split(key)
    tasks = make_task_set(env, task_key, num_tasks, params)
    returns, _ = imitation_returns(env, params, tasks, policy_key, num_episodes)
    return np.asarray(returns, np.float64).mean(axis=1)


__all__ = [
    "ACTION_NAMES",
    "EnvParams",
    "EnvState",
    "Gridworld",
    "GridworldTask",
    "distinct_integers",
    "imitation_reference",
    "imitation_returns",
    "make_task_set",
    "optimal_returns",
    "task_set_size",
    "truncation",
    "where_tasks",
]

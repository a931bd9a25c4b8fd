"""An animated held-out trial of a trained memory agent on Gridworld: the grid next to its failure bank.

:func:`render_gif` restores a ``failure_replay`` run and plays the paper's
test protocol on one held-out task through ``failure_replay.evaluation_trials``
(the adaptation loop the run's own evaluation uses), keeping each episode's
steps and the bank that episode read; :func:`memory_trial_gif` draws them.
Gridworld- and paper-specific, so it lives here rather than in ``jaxmeta.plots``.

    python benchmarks/paper_figures.py --gif runs/memory_x3   # writes docs/figures/memory_trial.gif
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def memory_trial_gif(
    env: Any,
    env_params: Any,
    task: Any,
    episodes: list[dict[str, np.ndarray]],
    path: str | Path,
    title: str = "",
    cell_pixels: int = 24,
    fps: int = 4,
) -> Path:
    """Animate one test trial of a memory agent: the grid next to its task's bank.

    ``episodes[k]`` holds ``agent_cells [S]`` (the agent's cell at each frame of
    episode k, the final frame included), ``return`` and ``bank_obs [N, ...]``
    with ``bank_valid [N]``: the stored last frames the agent could read during
    that episode. The goal has a gold frame in the picture (the agent never sees it).
    """
    import imageio.v2 as imageio
    import jax.numpy as jnp
    from PIL import Image, ImageDraw

    from envs_jax.gridworld import EnvState

    thumb = max(6, cell_pixels // 3)

    def picture(cell: int, pixels: int) -> np.ndarray:
        state = EnvState(agent_cell=jnp.int32(cell), task=task, time=jnp.int32(0))
        return np.asarray(env.render(state, env_params, cell_pixels=pixels))

    def stored(obs: np.ndarray) -> np.ndarray:
        return picture(int(obs[..., 0].reshape(-1).argmax()), thumb)  # channel 0: the agent

    frames = []
    for k, ep in enumerate(episodes):
        bank = [stored(o) if v else None for o, v in zip(ep["bank_obs"], ep["bank_valid"], strict=True)]
        for i, cell in enumerate(ep["agent_cells"]):
            board = picture(int(cell), cell_pixels)
            size = board.shape[0]
            rows = (len(bank) + 1) // 2
            slot = min(size // 2 - 4, (size - 6 * rows) // rows)  # all slots fit next to the grid
            panel_w = max(2 * (slot + 6) + 10, 170)  # room for the label
            canvas = Image.new("RGB", (size + panel_w + 20, size + 46), "white")
            canvas.paste(Image.fromarray(board), (10, 36))
            draw = ImageDraw.Draw(canvas)
            last = i == len(ep["agent_cells"]) - 1
            outcome = (
                {1.0: "goal!", -1.0: "trap", 0.0: "timeout"}.get(float(ep["return"]), "") if last else ""
            )
            draw.text((10, 4), f"{title}  episode {k + 1}/{len(episodes)}  step {i}  {outcome}", fill="black")
            draw.text((size + 20, 22), "failure bank (last frames)", fill="black")
            for j, img in enumerate(bank):
                x0 = size + 20 + (j % 2) * (slot + 6)
                y0 = 36 + (j // 2) * (slot + 6)
                if img is None:
                    draw.rectangle([x0, y0, x0 + slot, y0 + slot], outline=(200, 200, 200))
                else:
                    canvas.paste(Image.fromarray(img).resize((slot, slot), Image.NEAREST), (x0, y0))
            frames.append(np.asarray(canvas))
            if last:
                frames += [np.asarray(canvas)] * 2  # linger on the outcome
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimsave(path, frames, duration=1.0 / fps, loop=0)
    return path


def trial_episodes(adaptation: Any, task_index: int = 0) -> list[dict[str, np.ndarray]]:
    """What :func:`memory_trial_gif` draws of one task of an evaluation kept with its data.

    ``adaptation`` is ``failure_replay.evaluation_trials(..., keep_data=True)``'s
    result (``data`` ``[K, M, T, ...]``, ``observed`` the banks each episode
    read). Each episode is its trial's steps of episode 0 (the trial runs on
    after the episode's end); its agent cells are read from the multihot
    frames' channel 0, the final frame (the one the last action led to) included.
    """
    from jaxmeta.memory import failure_bank

    data, banks = adaptation.data, adaptation.observed
    episodes = []
    for k in range(int(adaptation.returns.shape[0])):
        in_episode = np.asarray(data.episode_index[k, task_index]) == 0
        length = int(in_episode.sum())
        obs = np.asarray(data.obs[k, task_index, :length, ..., 0])
        final = np.asarray(data.next_obs[k, task_index, length - 1, ..., 0])
        cells = obs.reshape(length, -1).argmax(-1)
        bank = failure_bank.read(_index(banks, k), np.array([task_index]))
        episodes.append(
            {
                "agent_cells": np.append(cells, final.reshape(-1).argmax()),
                "return": float(adaptation.returns[k, task_index]),
                "bank_obs": np.asarray(bank[0]["obs"][0, :, -1]),  # each slot's last stored frame
                "bank_valid": np.asarray(bank[2][0]),
            }
        )
    return episodes


def _index(tree: Any, k: int) -> Any:
    import jax

    return jax.tree.map(lambda leaf: leaf[k], tree)


def held_out_trial(
    run_dir: Path, task_index: int = 0, seed_index: int = 0, key: Any = None
) -> tuple[Any, Any, Any]:
    """Restore a trained failure_replay run and play the test protocol on one held-out task: task
    ``task_index`` of the run's held-out set, the parameters of seed ``seed_index``, the run's
    ``algo.eval`` settings, ``key`` (default ``PRNGKey(0)``). Returns ``(run, task, adaptation)``:
    the ``benchmarks._common.MemoryRun``, the task, and ``failure_replay.evaluation_trials``'s result
    with each episode's data and the banks it read (``keep_data=True``) for a batch of that one task."""
    import jax
    import jax.numpy as jnp

    from benchmarks import _common
    from jaxmeta.algos import failure_replay

    run = _common.restore_memory_run(run_dir)
    cfg, parts = run.cfg, run.parts
    if cfg.env.id != "Gridworld-v0" or cfg.env.obs_mode != "multihot":
        raise SystemExit(f"{run_dir}: the GIF draws Gridworld-v0 runs with multihot observations")
    params = jax.tree.map(lambda x: jnp.asarray(x)[seed_index], run.params)
    env, env_params = parts.setup.env, parts.setup.params
    tasks = jax.tree.map(lambda x: x[task_index : task_index + 1], parts.setup.test_tasks)
    evaluation = cfg.algo.eval
    out = failure_replay.evaluation_trials(
        parts.network,
        env,
        env_params,
        params,
        tasks,
        jax.random.PRNGKey(0) if key is None else key,
        evaluation.episodes,
        cfg.algo.bank_capacity,
        evaluation.greedy,
        keep_data=True,
    )
    return run, _index(tasks, 0), out


def render_gif(run_dir: Path, path: Path, task_index: int = 0, seed_index: int = 0, key: Any = None) -> Path:
    """Animate one held-out trial of a trained failure_replay run (:func:`held_out_trial`) to ``path``."""
    run, task, out = held_out_trial(run_dir, task_index, seed_index, key)
    setup = run.parts.setup
    return memory_trial_gif(setup.env, setup.params, task, trial_episodes(out), path, title=run.cfg.name)

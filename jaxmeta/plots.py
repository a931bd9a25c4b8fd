"""Figures of a run directory: learning curves and per-episode return vs the optimum."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt
import numpy as np

CURVES = (
    ("loss", "imitation loss"),
    ("accuracy", "agreement with expert"),
    ("train/return_per_episode", "train return per episode"),
    ("eval/total_return", "held-out return, whole trial"),
)


def read_metrics(path: Path) -> dict[str, dict[str, dict[int, dict[int, Any]]]]:
    """``{kind: {metric: {update: {seed: value}}}}`` from a metrics.jsonl file."""
    table: dict[str, Any] = defaultdict(lambda: defaultdict(lambda: defaultdict(dict)))
    for line in path.read_text().splitlines():
        if not line:
            continue
        row = json.loads(line)
        for key, value in row.items():
            if key not in ("kind", "update", "seed"):
                table[row["kind"]][key][row["update"]][row["seed"]] = value
    return table


def seed_curve(series: dict[int, dict[int, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(updates, mean, std)`` over seeds of one metric of ``read_metrics``."""
    updates = np.array(sorted(series))
    values = np.array([[float(v) for v in series[u].values()] for u in updates])
    return updates, values.mean(1), values.std(1)


def plot_run(run_dir: str | Path) -> list[Path]:
    """Write ``plots/learning_curves.png`` and ``plots/episode_returns.png``."""
    run_dir = Path(run_dir)
    out = run_dir / "plots"
    out.mkdir(exist_ok=True)
    table = read_metrics(run_dir / "metrics.jsonl")
    summary = json.loads((run_dir / "summary.json").read_text())
    written = []

    present = [(k, t) for k, t in CURVES if k in table["train"] or k in table["eval"]]
    fig, axes = plt.subplots(1, len(present), figsize=(4.2 * len(present), 3.4), squeeze=False)
    for ax, (key, title) in zip(axes[0], present, strict=True):
        series = table["train"].get(key) or table["eval"][key]
        updates, mean, std = seed_curve(series)
        ax.plot(updates, mean, color="C0")
        ax.fill_between(updates, mean - std, mean + std, color="C0", alpha=0.25, linewidth=0)
        if key == "eval/total_return":
            optimum = float(np.sum(summary["optimal_episode_return"]))
            ax.axhline(optimum, color="k", linestyle="--", linewidth=1, label="Bayes-optimal")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("update")
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"{summary['name']}: {summary['algo']} on {summary['env']} (X={summary['num_blocks']}), "
        f"{summary['seeds']} seed(s), mean +- std",
        fontsize=10,
    )
    fig.tight_layout()
    written.append(out / "learning_curves.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    ev = summary["eval"]["episode_return"]
    mean, std = np.array(ev["mean"]), np.array(ev["std"])
    episodes = np.arange(1, len(mean) + 1)
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot(episodes, mean, marker="o", color="C0", label=summary["algo"])
    ax.fill_between(episodes, mean - std, mean + std, color="C0", alpha=0.25, linewidth=0)
    ax.plot(episodes, summary["optimal_episode_return"], "k--", marker=".", label="Bayes-optimal")
    ax.set_xticks(episodes)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel("episode within the trial")
    ax.set_ylabel("return (held-out tasks)")
    ax.set_title(f"Return per episode, X={summary['num_blocks']}", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    written.append(out / "episode_returns.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)
    return written


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

    def grid(cell: int) -> np.ndarray:
        state = EnvState(agent_cell=jnp.int32(cell), task=task, time=jnp.int32(0))
        return np.asarray(env.render(state, env_params, cell_pixels=cell_pixels))

    def stored(obs: np.ndarray) -> np.ndarray:
        cell = int(obs[..., 0].reshape(-1).argmax())
        return np.asarray(
            env.render(
                EnvState(agent_cell=jnp.int32(cell), task=task, time=jnp.int32(0)),
                env_params,
                cell_pixels=thumb,
            )
        )

    frames = []
    for k, ep in enumerate(episodes):
        bank = [stored(o) if v else None for o, v in zip(ep["bank_obs"], ep["bank_valid"], strict=True)]
        for i, cell in enumerate(ep["agent_cells"]):
            board = grid(int(cell))
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

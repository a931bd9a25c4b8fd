"""Figures of a run directory: generic helpers; each method decides what else to draw.

:func:`plot_run` draws the learning curves a method's report names, against
updates and, when the method counts samples, against samples
(``plots/learning_curves.png``), then asks the report for the method's own
figures. :func:`per_episode_axes` draws a return-per-episode curve next to
reference curves, the picture of every method that adapts across episodes.
Nothing here knows an environment or a method.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt
import numpy as np


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
    """``(updates, mean, std)`` over seeds of one metric of ``read_metrics`` (over the seeds that have
    a value at each update: merged single-seed runs may not all have got as far)."""
    updates = np.array(sorted(series))
    values = [np.array([float(v) for v in series[u].values()]) for u in updates]
    return updates, np.array([v.mean() for v in values]), np.array([v.std() for v in values])


def samples_at(table: Mapping[str, Any], samples: str, updates: np.ndarray) -> np.ndarray | None:
    """The mean sample count (train metric ``samples``) after each of ``updates`` (0 at update 0)."""
    series = table["train"].get(samples)
    if not series:
        return None
    known = {u: float(np.mean([float(v) for v in seeds.values()])) for u, seeds in series.items()}
    known[0] = 0.0
    if any(int(u) not in known for u in updates):
        return None
    return np.array([known[int(u)] for u in updates])


def compact_number(value: float, _: Any = None) -> str:
    """``1200000 -> "1.2M"``, ``250000 -> "250k"``: tick labels that do not overlap."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}"


def band(ax: Any, x: np.ndarray, mean: np.ndarray, std: np.ndarray, color: str, **style: Any) -> None:
    """A mean curve with a +- std band (points marked when there are few of them)."""
    if len(x) <= 25 and "marker" not in style:
        style = {**style, "marker": "o", "markersize": 3}
    ax.plot(x, mean, color=color, **style)
    ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.25, linewidth=0)


def plot_run(run_dir: str | Path, report: Any) -> list[Path]:
    """Write ``plots/learning_curves.png`` (the report's curves and headline, mean +- std over seeds,
    against updates and samples) and the report's own figures; returns the paths written."""
    run_dir = Path(run_dir)
    out = run_dir / "plots"
    out.mkdir(exist_ok=True)
    table = read_metrics(run_dir / "metrics.jsonl")
    summary = json.loads((run_dir / "summary.json").read_text())
    written = []

    wanted = list(report.curves)
    if report.headline and report.headline not in [k for k, _ in wanted]:
        wanted.append((report.headline, f"held-out {report.headline.removeprefix('eval/')}"))
    present = [(k, t) for k, t in wanted if k in table["train"] or k in table["eval"]]
    if present:
        rows = 2 if report.samples and report.samples in table["train"] else 1
        fig, axes = plt.subplots(rows, len(present), figsize=(4.2 * len(present), 3.3 * rows), squeeze=False)
        for col, (key, title) in enumerate(present):
            series = table["train"].get(key) or table["eval"][key]
            updates, mean, std = seed_curve(series)
            x_axes = [("update", updates)]
            if rows == 2:
                x_axes.append((report.samples.replace("_", " "), samples_at(table, report.samples, updates)))
            for row, (label, x) in enumerate(x_axes):
                ax = axes[row][col]
                if x is None:
                    ax.set_visible(False)
                    continue
                band(ax, x, mean, std, "C0")
                ax.set_title(title, fontsize=10)
                ax.set_xlabel(label)
                ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(compact_number))
                ax.grid(alpha=0.3)
        env = summary.get("env") or "no environment"
        fig.suptitle(
            f"{summary['name']}: {summary['algo']} on {env}, {summary['seeds']} seed(s), mean +- std",
            fontsize=10,
        )
        fig.tight_layout()
        written.append(out / "learning_curves.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    written += report.plots(run_dir, table, summary)
    return written


def per_episode_axes(
    ax: Any,
    mean: Sequence[float],
    std: Sequence[float],
    label: str,
    references: Mapping[str, Sequence[float]] = {},
    color: str = "C0",
) -> None:
    """Return per episode index (mean +- std) next to dashed reference curves."""
    mean, std = np.asarray(mean, float), np.asarray(std, float)
    episodes = np.arange(1, len(mean) + 1)
    band(ax, episodes, mean, std, color, marker="o", label=label)
    styles = ["k--", "k:", "k-."]
    for i, (name, values) in enumerate(references.items()):
        values = np.asarray(values, float)
        if values.ndim == 1 and len(values) == len(mean):
            ax.plot(episodes, values, styles[i % len(styles)], marker=".", label=name, linewidth=1)
    ax.set_xticks(episodes)
    ax.set_xlabel("episode within the trial")
    ax.set_ylabel("return (held-out tasks)")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)


def write_gif(frames: Sequence[np.ndarray], captions: Sequence[str], path: str | Path, fps: int = 5) -> Path:
    """An animated GIF of RGB ``frames`` (uint8 ``[H, W, 3]``), each under a one-line caption."""
    import imageio.v2 as imageio
    from PIL import Image, ImageDraw

    out = []
    width = max(max(np.asarray(f).shape[1] for f in frames), 6 * max(len(c) for c in captions) + 8)
    for frame, caption in zip(frames, captions, strict=True):
        frame = np.asarray(frame, np.uint8)
        canvas = Image.new("RGB", (width, frame.shape[0] + 18), "white")
        canvas.paste(Image.fromarray(frame), (0, 18))
        ImageDraw.Draw(canvas).text((4, 3), caption, fill="black")
        out.append(np.asarray(canvas))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimsave(path, out, duration=1.0 / fps, loop=0)
    return path


__all__ = [
    "band",
    "compact_number",
    "per_episode_axes",
    "plot_run",
    "read_metrics",
    "samples_at",
    "seed_curve",
    "write_gif",
]

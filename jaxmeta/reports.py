"""Reports shared by families of methods (what the runner prints and draws for them).

:func:`episodes_report` serves every method evaluated by the adaptation
protocol (``K`` episodes of each held-out task): the table of return per
episode, mean +- std over seeds, next to the environment's reference policies
(``env.episode_references``, e.g. Gridworld's Bayes-optimal searcher), and a
figure of the same. :func:`returns_report` serves single-task RL (the mean
return of evaluation episodes, curves against env steps).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import matplotlib.pyplot as plt
import numpy as np

from jaxmeta import plots, seeding
from jaxmeta.algos.api import Report

IMITATION_PROGRESS = (("loss", "loss"), ("acc", "accuracy"), ("ret", "train/return_per_episode"))
IMITATION_CURVES = (
    ("loss", "imitation loss"),
    ("accuracy", "agreement with the expert"),
    ("train/return_per_episode", "train return per episode"),
    ("eval/total_return", "held-out return, whole trial"),
)


def episode_references(
    env: Any, params: Any, tasks: Any, num_episodes: int, task_seed: int
) -> dict[str, Any]:
    """The environment's reference returns per episode on ``tasks`` (``{}`` if it has none)."""
    references = getattr(env, "episode_references", None)
    if references is None:
        return {}
    key = jax.random.fold_in(seeding.task_key(task_seed), seeding.REFERENCE_STREAM)
    return {name: np.asarray(v).tolist() for name, v in references(params, tasks, num_episodes, key).items()}


def episodes_report(
    env: Any,
    params: Any,
    tasks: Any,
    num_episodes: int,
    task_seed: int,
    describe: str,
    memoryless: bool = False,
    progress: tuple[tuple[str, str], ...] = IMITATION_PROGRESS,
    curves: tuple[tuple[str, str], ...] = IMITATION_CURVES,
) -> Report:
    """The report of a method evaluated on ``tasks`` by ``num_episodes`` episodes each.

    ``memoryless``: the method cannot remember earlier episodes; the table
    then says what that costs (against the env's "memoryless optimum"
    reference, when it has one).
    """
    num_tasks = jax.tree.leaves(tasks)[0].shape[0]

    def references() -> dict[str, Any]:
        return episode_references(env, params, tasks, num_episodes, task_seed)

    def lines(summary: dict[str, Any]) -> list[str]:
        return episode_table(summary, num_tasks, memoryless)

    return Report(
        describe=describe,
        headline="eval/total_return",
        progress=progress,
        samples="env_steps",
        curves=curves,
        references=references,
        lines=lines,
        plots=plot_episode_returns,
    )


def episode_table(summary: dict[str, Any], num_tasks: int, memoryless: bool = False) -> list[str]:
    """The per-episode table of a finished run (agent, references, success rate)."""
    ev = summary["eval"]
    mean, std = np.array(ev["episode_return"]["mean"]), np.array(ev["episode_return"]["std"])
    k = len(mean)
    width = 22
    references = {
        name: np.asarray(v, float)
        for name, v in summary.get("references", {}).items()
        if np.ndim(v) == 1 and len(v) == k
    }
    lines = [
        f"Held-out tasks, return per episode of a {k}-episode trial (mean over {num_tasks} tasks, "
        "mean +- std over seeds):",
        "  " + "episode".ljust(width) + "".join(f"{i + 1:>8d}" for i in range(k)) + "     total",
        "  " + "agent".ljust(width) + "".join(f"{m:8.2f}" for m in mean) + f"{mean.sum():10.2f}",
        "  " + "  +- std".ljust(width) + "".join(f"{s:8.2f}" for s in std),
    ]
    for name, values in references.items():
        lines.append(
            "  " + name.ljust(width) + "".join(f"{v:8.2f}" for v in values) + f"{values.sum():10.2f}"
        )
    if "episode_success" in ev:
        lines.append(
            "  " + "success rate".ljust(width) + "".join(f"{m:8.0%}" for m in ev["episode_success"]["mean"])
        )
    train = summary.get("final_train", {})
    if "loss" in train and "accuracy" in train:
        lines.append(
            f"Final imitation loss {train['loss']['mean']:.3f}, "
            f"agreement with the expert {train['accuracy']['mean']:.0%}."
        )
    if memoryless and "memoryless optimum" in references:
        ceiling = references["memoryless optimum"]
        lines.append(
            f"A memoryless policy cannot remember earlier episodes: the best it can do is {ceiling[0]:.2f} "
            "per episode; the gap to the Bayes-optimal is what memory must close."
        )
    return lines


def plot_episode_returns(run_dir: Path, table: dict[str, Any], summary: dict[str, Any]) -> list[Path]:
    """``plots/episode_returns.png``: held-out return per episode next to the references."""
    ev = summary["eval"]["episode_return"]
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    plots.per_episode_axes(ax, ev["mean"], ev["std"], summary["algo"], summary.get("references", {}))
    ax.set_title(f"{summary['name']}: return per episode, {summary['seeds']} seed(s)", fontsize=10)
    fig.tight_layout()
    path = Path(run_dir) / "plots" / "episode_returns.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def returns_report(
    describe: str, samples: str = "env_steps", extra_curves: tuple[tuple[str, str], ...] = ()
) -> Report:
    """The report of a single-task RL method: mean return of its evaluation episodes and of training."""

    def lines(summary: dict[str, Any]) -> list[str]:
        ev = summary["eval"]
        out = []
        if "return" in ev:
            per_seed = ", ".join(f"{v:.1f}" for v in ev["return"]["per_seed"])
            out.append(
                f"Evaluation return {ev['return']['mean']:.1f} +- {ev['return']['std']:.1f} over seeds "
                f"(per seed: {per_seed})."
            )
        train = summary.get("final_train", {})
        if "train/return" in train:
            out.append(f"Training episodes' return at the end: {train['train/return']['mean']:.1f}.")
        count = train.get(samples)
        if count is not None:
            out.append(f"{samples.replace('_', ' ').capitalize()} per seed: {count['mean']:,.0f}.")
        return out

    return Report(
        describe=describe,
        headline="eval/return",
        progress=(("ret", "train/return"), ("loss", "loss")),
        samples=samples,
        curves=(
            ("train/return", "training episodes' return"),
            *extra_curves,
            ("eval/return", "evaluation return"),
        ),
        lines=lines,
    )


def adaptation_mse_curve(summary: dict[str, Any], steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over seeds of the held-out MSE after 0 .. ``steps`` test-time steps (final evaluation)."""
    ev = summary["eval"]
    mean = np.array([ev[f"mse_after_{j}"]["mean"] for j in range(steps + 1)])
    std = np.array([ev[f"mse_after_{j}"]["std"] for j in range(steps + 1)])
    return mean, std


def regression_report(describe: str, steps: int) -> Report:
    """The report of a few-shot regression method (``jaxmeta.meta``): held-out MSE against test-time
    gradient steps, as the MAML paper's Fig. 2."""

    def lines(summary: dict[str, Any]) -> list[str]:
        mean, std = adaptation_mse_curve(summary, steps)
        shown = sorted({0, 1, min(5, steps), steps})
        out = [f"Held-out MSE after J test-time SGD steps (mean +- std over {summary['seeds']} seed(s)):"]
        out += [f"  J = {j:2d}: {mean[j]:.3f} +- {std[j]:.3f}" for j in shown]
        return out

    def plot(run_dir: Path, table: dict[str, Any], summary: dict[str, Any]) -> list[Path]:
        mean, std = adaptation_mse_curve(summary, steps)
        fig, ax = plt.subplots(figsize=(5.0, 3.6))
        plots.band(ax, np.arange(steps + 1), mean, std, "C0", label=summary["algo"], marker="o")
        ax.set_xlabel("test-time gradient steps")
        ax.set_ylabel("held-out MSE")
        ax.set_title(f"{summary['name']}: {summary['seeds']} seed(s)", fontsize=10)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = Path(run_dir) / "plots" / "adaptation_mse.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return [path]

    return Report(
        describe=describe,
        headline="eval/mse_after_1",
        progress=(("loss", "loss"),),
        samples="tasks",
        curves=(
            ("loss", "training loss"),
            ("eval/mse_after_0", "held-out MSE before adaptation"),
            ("eval/mse_after_1", "held-out MSE after 1 step"),
            (f"eval/mse_after_{steps}", f"held-out MSE after {steps} steps"),
        ),
        lines=lines,
        plots=plot,
    )


__all__ = [
    "episode_references",
    "episode_table",
    "episodes_report",
    "plot_episode_returns",
    "regression_report",
    "returns_report",
]

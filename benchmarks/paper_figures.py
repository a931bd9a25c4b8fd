"""Figures 2 and 3 of Chen & Agrawal (2020) on Gridworld, and the results table, from run directories.

Each experiment is one config in ``configs/`` trained with
``python -m jaxmeta.train config=configs/NAME.yaml`` into ``runs/NAME``. This
script reads the run directories that exist (``summary.json``,
``metrics.jsonl``) and writes:

* ``docs/figures/fig2_x2.png``, ``fig2_x3.png``: held-out return per episode
  index, mean and std over seeds, optimum dashed (paper Fig. 2a, 2b);
* ``docs/figures/fig3a_length.png``, ``fig3b_length_curves.png``,
  ``fig3c_reset.png``: the trajectory-length and reset-mode ablations (Fig. 3);
* ``docs/results.md``: the table, with the config of every number and its wall time.

Runs that do not exist yet are listed as such; a run that has not finished
(no ``summary.json``) is drawn dashed in the learning curves and listed with
its last evaluated total. ``--gif RUN_DIR`` also renders
one held-out trial of a trained memory agent to ``docs/figures/memory_trial.gif``.

    python benchmarks/paper_figures.py [--runs runs] [--out docs] [--gif runs/memory_x3]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import envs_jax  # noqa: E402
from jaxmeta.plots import read_metrics, seed_curve  # noqa: E402

FIG2 = {
    2: [
        ("memory_x2", "Memory"),
        ("memory_temporal_x2", "Memory + Temporal"),
        ("snail_x2", "SNAIL"),
        ("ppo_finetune_x2", "PPO finetune"),
    ],
    3: [
        ("memory_x3", "Memory"),
        ("memory_temporal_x3", "Memory + Temporal"),
        ("snail_x3", "SNAIL"),
        ("ppo_finetune_x3", "PPO finetune"),
    ],
}
# Runs beyond the paper's settings: in the table, and drawn dotted in Fig. 2 in their method's colour.
EXTRA = {
    2: [
        ("memory_x2_tasks4000", "Memory, 4000 training tasks, 1600 updates"),
        ("memory_temporal_x2_tasks4000", "Memory + Temporal, 4000 training tasks, 1600 updates"),
    ],
    3: [
        ("memory_x3_tasks6000", "Memory, 6000 training tasks, 1600 updates"),
        ("memory_temporal_x3_tasks6000", "Memory + Temporal, 6000 training tasks, 1600 updates"),
        ("snail_x3_tasks6000", "SNAIL, 6000 training tasks, 1600 updates"),
    ],
}
FIG3_LENGTH = [
    ("memory_x3", "L=1"),
    ("memory_x3_L2", "L=2"),
    ("memory_x3_L4", "L=4"),
    ("memory_x3_L8", "L=8"),
]
FIG3_RESET = [
    ("memory_x3", "NH_RESET_DIFF"),
    ("memory_x3_nh_same", "NH_RESET_SAME"),
    ("memory_x3_lh_diff", "LH_RESET_DIFF"),
    ("memory_x3_lh_same", "LH_RESET_SAME"),
    ("snail_x3", "NH_SNAIL"),
    ("snail_x3_lh", "LH_SNAIL"),
]


RESULTS_HEADER = """# Results: Chen & Agrawal (2020) on Gridworld

Written by `python benchmarks/paper_figures.py` from the run directories in
`runs/`; each row names the config that produced it
(`python -m jaxmeta.train config=configs/NAME.yaml`). Protocol: held-out tasks
(256), the bank starts empty, 5 episodes of the same task, after each failed
episode its last L steps join the bank (SNAIL instead sees all frames of the
trial; PPO finetune takes PPO steps after each episode). Mean over tasks, then
mean ± std over seeds. The optimum is the Bayes-optimal searcher of
`envs_jax.optimal_returns` (X=2: 0, 1, 1, 1, 1; X=3: -1/3, 1/3, 1, 1, 1).
Every method trains on the same 1000 training tasks, each layout once per goal
block (`env.train_every_goal`), and is tested on the same held-out tasks.
Actions are sampled (`eval.greedy: false`) for every method.
Wall time: the whole run on this repository's 2-core CPU machine (runs
sometimes shared it with other work; `summary.json` has the split).

Figures: `docs/figures/fig2_x2.png`, `fig2_x3.png` (paper Fig. 2),
`fig3a_length.png`, `fig3b_length_curves.png`, `fig3c_reset.png` (Fig. 3).

"""


def load_run(runs: Path, name: str) -> dict[str, Any] | None:
    """A finished run's ``summary.json`` with its held-out learning curve; None if it has not finished."""
    run = runs / name
    if not (run / "summary.json").exists():
        return None
    summary = json.loads((run / "summary.json").read_text())
    summary["curve"] = load_curve(run)
    return summary


def load_curve(run: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(updates, mean, std)`` over seeds of the held-out total; None before the first evaluation."""
    if not (run / "metrics.jsonl").exists():
        return None
    series = read_metrics(run / "metrics.jsonl")["eval"].get("eval/total_return")
    return seed_curve(series) if series else None


def unfinished(runs: Path, name: str) -> dict[str, Any] | None:
    """What an unfinished run (no ``summary.json``) has evaluated so far; None if nothing."""
    curve = load_curve(runs / name)
    if curve is None:
        return None
    config = yaml.safe_load((runs / name / "config.yaml").read_text())
    return {"curve": curve, "num_updates": config["num_updates"], "num_blocks": config["env"]["num_blocks"]}


def per_episode(
    ax: Any,
    runs: Path,
    entries: list[tuple[str, str]],
    num_blocks: int,
    title: str,
    extra: list[tuple[str, str]] = (),
) -> None:
    """Return per episode index; ``extra`` runs (beyond the paper's settings) are drawn dotted."""
    optimum = None
    method_labels = [label for _, label in entries]
    for i, (name, label) in enumerate([*entries, *extra]):
        run = load_run(runs, name)
        if run is None:
            continue
        ev = run["eval"]["episode_return"]
        mean, std = np.array(ev["mean"]), np.array(ev["std"])
        x = np.arange(1, len(mean) + 1)
        style = {"marker": "o"} if i < len(entries) else {"marker": "s", "linestyle": ":"}
        # An extra run ("Memory, 4000 training tasks, ...") takes its method's colour.
        method = label.split(",")[0]
        color = f"C{method_labels.index(method) if method in method_labels else i}"
        ax.plot(x, mean, color=color, label=f"{label} ({run['seeds']} seeds)", **style)
        ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)
        optimum = run["optimal_episode_return"]
    if optimum is None:
        optimum = envs_jax.optimal_returns(num_blocks, 5).tolist()
    x = np.arange(1, len(optimum) + 1)
    ax.plot(x, optimum, "k--", marker=".", label="Bayes-optimal")
    ax.set_xticks(x)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel("episode index (held-out tasks)")
    ax.set_ylabel("average reward")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")


def curves(ax: Any, runs: Path, entries: list[tuple[str, str]], title: str) -> None:
    for i, (name, label) in enumerate(entries):
        run = load_run(runs, name)
        style = {}
        if run is None:  # still training (or stopped): draw what it has evaluated, dashed
            run = unfinished(runs, name)
            if run is None:
                continue
            label = f"{label} (unfinished: {run['curve'][0][-1]} of {run['num_updates']} updates)"
            style = {"linestyle": "--"}
        if run["curve"] is None:  # a summary without evaluations in metrics.jsonl: nothing to draw
            continue
        updates, mean, std = run["curve"]
        ax.plot(updates, mean, color=f"C{i}", label=label, **style)
        ax.fill_between(updates, mean - std, mean + std, color=f"C{i}", alpha=0.2, linewidth=0)
    ax.set_xlabel("update")
    ax.set_ylabel("held-out return, 5 episodes")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # none of the runs exists yet: no legend
        ax.legend(fontsize=7, loc="lower right")
    else:
        ax.text(0.5, 0.5, "not run yet", transform=ax.transAxes, ha="center", color="gray")


def wall_time(run: dict[str, Any]) -> str:
    """The run's wall time; a resumed run's summary covers only its last part, and says so."""
    text = f"{run['wall_time_s'] / 60:.1f} min"
    if run.get("updates_run", run["num_updates"]) < run["num_updates"]:
        text += f" (the last {run['updates_run']} of {run['num_updates']} updates; resumed)"
    return text


def results_table(runs: Path) -> str:
    lines = [
        "| run (config) | method | X | episode 1..5 return, mean ± std over seeds | total | optimum "
        "| % of optimum | seeds | wall time |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    seen = set()
    for name, label in [*FIG2[2], *EXTRA[2], *FIG2[3], *EXTRA[3], *FIG3_LENGTH, *FIG3_RESET]:
        if name in seen:
            continue
        seen.add(name)
        run = load_run(runs, name)
        if run is None:
            partial = unfinished(runs, name)
            if partial is None:
                lines.append(f"| `configs/{name}.yaml` | {label} | | not run yet | | | | | |")
            else:
                updates, mean, std = partial["curve"]
                lines.append(
                    f"| `configs/{name}.yaml` | {label} | {partial['num_blocks']} "
                    f"| unfinished: evaluated to update {updates[-1]} of {partial['num_updates']} "
                    f"| {mean[-1]:.2f}±{std[-1]:.2f} (at update {updates[-1]}) | | | | |"
                )
            continue
        ev = run["eval"]["episode_return"]
        per = ", ".join(f"{m:.2f}±{s:.2f}" for m, s in zip(ev["mean"], ev["std"], strict=True))
        total = float(np.sum(ev["mean"]))
        total_std = float(np.std(np.sum(ev["per_seed"], axis=1)))
        optimum = float(np.sum(run["optimal_episode_return"]))
        lines.append(
            f"| `configs/{name}.yaml` | {label} | {run['num_blocks']} | {per} | {total:.2f}±{total_std:.2f} "
            f"| {optimum:.2f} | {100 * total / optimum:.0f}% | {run['seeds']} "
            f"| {wall_time(run)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=str(ROOT / "runs"))
    parser.add_argument("--out", default=str(ROOT / "docs"))
    parser.add_argument("--gif", default=None, help="a trained memory run directory to animate")
    args = parser.parse_args(argv)
    runs, out = Path(args.runs), Path(args.out)
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)

    for x in (2, 3):
        fig, ax = plt.subplots(figsize=(5.2, 3.8))
        title = f"Gridworld, X={x} ({x - 1} trap{'s' if x > 2 else ''})"
        per_episode(ax, runs, FIG2[x], x, title, extra=EXTRA[x])
        fig.tight_layout()
        fig.savefig(figures / f"fig2_x{x}.png", dpi=120)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    per_episode(ax, runs, FIG3_LENGTH, 3, "X=3: stored trajectory length L")
    fig.tight_layout()
    fig.savefig(figures / "fig3a_length.png", dpi=120)
    plt.close(fig)
    for file, entries, title in (
        ("fig3b_length_curves.png", FIG3_LENGTH, "X=3: learning curves for L"),
        ("fig3c_reset.png", FIG3_RESET, "X=3: reset mode and trial horizon"),
    ):
        fig, ax = plt.subplots(figsize=(5.6, 3.8))
        curves(ax, runs, entries, title)
        fig.tight_layout()
        fig.savefig(figures / file, dpi=120)
        plt.close(fig)
    table = results_table(runs)
    print(table)
    (out / "results.md").write_text(RESULTS_HEADER + table + "\n")
    print(f"wrote {out / 'results.md'} and {figures}/*.png")
    if args.gif:
        print(f"wrote {render_gif(Path(args.gif), figures / 'memory_trial.gif')}")


def render_gif(run_dir: Path, path: Path, task_index: int = 0) -> Path:
    """Restore a trained failure_replay run and animate one held-out trial of it."""
    import jax
    import jax.numpy as jnp

    from benchmarks._common import restore_memory_run
    from jaxmeta import plots, trial
    from jaxmeta.memory import failure_bank

    cfg, parts, params, _ = restore_memory_run(run_dir)
    params = jax.tree.map(lambda x: jnp.asarray(x)[0], params)  # seed 0
    env, env_params = parts.setup.env, parts.setup.params
    tasks = jax.tree.map(lambda x: x[task_index : task_index + 1], parts.setup.test_tasks)
    obs_space = env.observation_space(env_params)
    example = {
        "obs": jnp.zeros(obs_space.shape, obs_space.dtype),
        "action": jnp.int32(0),
        "reward": jnp.float32(0),
    }
    bank = failure_bank.init(1, cfg.algo.bank_capacity, cfg.algo.bank_length, example)
    policy = parts.greedy_policy if cfg.eval.greedy else parts.sample_policy
    key = jax.random.PRNGKey(0)
    episodes = []
    for _ in range(cfg.eval.episodes):
        key, sub = jax.random.split(key)
        data, stats, _ = trial.run_trials(
            env,
            env_params,
            policy,
            params,
            parts.empty_window,
            tasks,
            jnp.arange(1),
            sub,
            env_params.max_steps_in_episode,
            "same",
            memory=parts.encode(params, bank),
            max_episodes=1,
        )
        stored, _, slot_mask = failure_bank.read(bank, jnp.arange(1))
        length = int(stats.length[0, 0])
        cells = np.asarray(data.obs[0, :length, ..., 0]).reshape(length, -1).argmax(-1)
        final = int(np.asarray(data.next_obs[0, length - 1, ..., 0]).reshape(-1).argmax())
        episodes.append(
            {
                "agent_cells": np.append(cells, final),
                "return": float(stats.returns[0, 0]),
                "bank_obs": np.asarray(stored["obs"][0, :, -1]),
                "bank_valid": np.asarray(slot_mask[0]),
            }
        )
        bank = failure_bank.add(bank, *trial.failures_for_bank(data, stats, bank.length, 1))
    task = jax.tree.map(lambda x: x[0], tasks)
    return plots.memory_trial_gif(env, env_params, task, episodes, path, title=cfg.name)


if __name__ == "__main__":
    main()

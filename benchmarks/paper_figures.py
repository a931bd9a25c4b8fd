"""Figures 2 and 3 of Chen & Agrawal (2020) on Gridworld, and the results table, from run directories.

Each experiment is one config in ``configs/`` trained with
``python -m jaxmeta.train config=configs/NAME.yaml`` into ``runs/NAME``. This
script reads the run directories that exist (``summary.json``,
``metrics.jsonl``) and writes:

* ``docs/figures/fig2_x2.png``, ``fig2_x3.png``: held-out return per episode
  index, mean and std over seeds, the Bayes optimum dashed and the
  expert-imitation reference dotted (paper Fig. 2a, 2b);
* ``docs/figures/fig3a_length.png``, ``fig3b_length_curves.png``,
  ``fig3c_reset.png``: the trajectory-length and reset-mode ablations (Fig. 3);
* ``docs/results.md``: the table, with the config of every number and its wall time.

Runs that do not exist yet are listed as such; a run that has not finished
(no ``summary.json``) is drawn dashed in the learning curves and listed with
its last evaluated total. Every finished run read from ``runs/`` is archived
(its ``config.yaml``, ``summary.json`` and thinned ``metrics.jsonl``) under
``benchmarks/results/runs/NAME`` (``_common.archive_run``), which is read when
``runs/NAME`` is gone; a run lost before records were kept has its table row in
``benchmarks/results/gridworld_recorded.json`` (per-episode means and stds,
no learning curve): it is listed and drawn in Fig. 2 from there, marked ‡, and
a curve figure none of whose runs kept a curve is left as committed. Run
directories written before the platform refactor (issue 11) are read too: their ``config.yaml`` through
``jaxmeta.config.migrate_legacy``, their optimum from ``optimal_episode_return``,
and, as they recorded no ``references``, their expert-imitation reference is
simulated on fresh tasks (``envs_jax.gridworld.imitation_reference``). ``--gif
RUN_DIR`` also renders one held-out trial of a trained memory agent to
``docs/figures/memory_trial.gif`` (``benchmarks/gif.py``).

    python benchmarks/paper_figures.py [--runs runs] [--out docs] [--archive benchmarks/results/runs]
        [--recorded benchmarks/results/gridworld_recorded.json] [--gif runs/memory_x3]
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path
from typing import Any, NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python benchmarks/paper_figures.py`
    sys.path.insert(0, str(ROOT))

import envs_jax  # noqa: E402
from benchmarks import _common  # noqa: E402
from jaxmeta.plots import read_metrics, seed_curve  # noqa: E402

FIG2 = {
    2: [
        ("memory_x2", "Memory"),
        ("memory_temporal_x2", "Memory + Temporal"),
        ("snail_x2", "SNAIL"),
        ("ppo_finetune_x2", "PPO finetune"),
        ("rl2_x2", "RL^2"),
    ],
    3: [
        ("memory_x3", "Memory"),
        ("memory_temporal_x3", "Memory + Temporal"),
        ("snail_x3", "SNAIL"),
        ("ppo_finetune_x3", "PPO finetune"),
        ("rl2_x3", "RL^2"),
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
trial; RL^2 carries its GRU state through the trial; PPO finetune takes PPO
steps after each episode). Training: as in the paper, Memory, SNAIL and PPO
finetune's base policy imitate the path-planning expert on their own trials;
RL^2 learns without the expert, by PPO on the trial's return (Duan et al.
2016). Mean over tasks, then
mean ± std over seeds. The optimum is the Bayes-optimal searcher of
`envs_jax.optimal_returns` (X=2: 0, 1, 1, 1, 1; X=3: -1/3, 1/3, 1, 1, 1).
Beside it, "expert imitation" is the return per episode of a policy that
samples from a perfect clone of the goal-knowing expert under this protocol
(it sees the layout and its own failures, never the goal;
`envs_jax.gridworld.imitation_returns`): what imitating the expert reaches
when actions are sampled, not a ceiling. It is simulated on the run's own
held-out tasks (`references` in its `summary.json`), or, for runs written
before those were recorded, on 4096 fresh tasks (marked †).
Training tasks: the paper's settings train every method on the same 1000
training tasks; the rows that say so train on more (4000 for X=2, 6000 for
X=3). Each layout appears once per goal block (`env.train_every_goal`), and
every method is tested on the same held-out tasks. For X=3, where 1000 is not
a multiple of 3, the training set is now completed to whole groups of 3 (1000
→ 1002 tasks); runs made before that change kept 1000, the last layout
appearing with one goal only and so giving its goal away.
Actions are sampled (`algo.eval.greedy: false`) for every method.
Wall time: the whole run on this repository's 2-core CPU machine (runs
sometimes shared it with other work; `summary.json` has the split).

Figures: `docs/figures/fig2_x2.png`, `fig2_x3.png` (paper Fig. 2),
`fig3a_length.png`, `fig3b_length_curves.png`, `fig3c_reset.png` (Fig. 3).

"""


# The expert-imitation reference of a run that recorded no references (written before they were):
# simulated on this many fresh tasks drawn from PRNGKey(IMITATION_SEED).
IMITATION_TASKS = 4096
IMITATION_SEED = 0
BAYES, IMITATION = "Bayes-optimal", "expert imitation"
FRESH_MARK = "†"
RECORDED_MARK = "‡"


class Sources(NamedTuple):
    """Where runs are read from: live run directories, their archived records (written too), and the
    rows kept for runs lost before records were kept. A bare directory (``Path``) reads only that
    directory."""

    runs: Path
    archive: Path | None = _common.ARCHIVE_DIR
    recorded: Path | None = _common.RESULTS_DIR / "gridworld_recorded.json"


def as_sources(runs: Path | Sources) -> Sources:
    return runs if isinstance(runs, Sources) else Sources(Path(runs), None, None)


def run_dir(sources: Sources, name: str) -> Path | None:
    """The directory to read run ``name`` from (:func:`_common.find_run`), None if there is none."""
    if sources.archive is None:
        live = sources.runs / name
        return live if (live / "metrics.jsonl").exists() or (live / "summary.json").exists() else None
    return _common.find_run(sources.runs, name, sources.archive)


def run_config(run: Path) -> dict[str, Any]:
    """A run directory's ``config.yaml`` in today's layout (old runs through ``migrate_legacy``)."""
    return _common.read_run_config(run)[0]


def load_run(runs: Path | Sources, name: str) -> dict[str, Any] | None:
    """A finished run's ``summary.json`` with its held-out learning curve, ``num_blocks`` (X, from its
    ``config.yaml``) and ``refs`` (:func:`run_references`), its record archived; else the row kept for
    it (:func:`recorded_run`); None if it has not finished and nothing is kept."""
    sources = as_sources(runs)
    run = run_dir(sources, name)
    if run is None or not (run / "summary.json").exists():
        return recorded_run(sources, name)
    if sources.archive is not None:
        _common.archive_run(run, sources.archive)
    summary = json.loads((run / "summary.json").read_text())
    config = run_config(run)
    summary["curve"] = load_curve(run)
    summary["num_blocks"] = config["env"]["num_blocks"]
    summary["refs"], summary["imitation_fresh"] = run_references(summary, config)
    summary["recorded"] = False
    return summary


def recorded_run(sources: Sources, name: str) -> dict[str, Any] | None:
    """The row kept for run ``name`` whose directory was lost (``sources.recorded``) in :func:`load_run`'s
    shape: per-episode mean and std over seeds, no per-seed values and no curve; None if none is kept."""
    if sources.recorded is None or not sources.recorded.exists():
        return None
    row = json.loads(sources.recorded.read_text())["runs"].get(name)
    if row is None:
        return None
    summary = {
        "eval": {"episode_return": dict(row["episode_return"])},
        "seeds": row["seeds"],
        "total": row["total"],
        "total_std": row["total_std"],
        "wall_time": row["wall_time"],
        "curve": None,
        "num_blocks": row["num_blocks"],
        "recorded": True,
    }
    summary["refs"], summary["imitation_fresh"] = run_references(summary, {"env": row["env"]})
    return summary


def run_references(summary: dict[str, Any], config: dict[str, Any]) -> tuple[dict[str, list[float]], bool]:
    """``({"Bayes-optimal": [...], "expert imitation": [...]}, imitation simulated on fresh tasks)``.

    From the summary's ``references`` (computed by the environment on the run's held-out tasks); a
    run written before those were recorded has ``optimal_episode_return`` instead, and its
    expert-imitation reference is simulated on :data:`IMITATION_TASKS` fresh tasks of the run's
    environment (Gridworld only).
    """
    recorded = summary.get("references") or {}
    episodes = len(summary["eval"]["episode_return"]["mean"])
    refs = {}
    bayes = recorded.get(BAYES, summary.get("optimal_episode_return"))
    if bayes is None:
        bayes = envs_jax.optimal_returns(config["env"]["num_blocks"], episodes).tolist()
    refs[BAYES] = list(bayes)
    fresh = False
    if IMITATION in recorded:
        refs[IMITATION] = list(recorded[IMITATION])
    elif config["env"].get("id") == "Gridworld-v0":
        refs[IMITATION] = fresh_imitation(json.dumps(config["env"], sort_keys=True), episodes)
        fresh = True
    return refs, fresh


@functools.cache
def fresh_imitation(env_json: str, num_episodes: int) -> list[float]:
    """``envs_jax.gridworld.imitation_reference`` of an ``env`` config section (as JSON) on
    :data:`IMITATION_TASKS` fresh tasks, per episode (cached: runs of one environment share it)."""
    import jax

    from envs_jax.gridworld import imitation_reference

    env_cfg = json.loads(env_json)
    entry = envs_jax.entry(env_cfg["id"])
    settings = entry.split({k: v for k, v in env_cfg.items() if k in entry.settings})
    env, params = envs_jax.make(env_cfg["id"], **settings["constructor"], **settings["params"])
    key = jax.random.PRNGKey(IMITATION_SEED)
    returns = imitation_reference(env, params, key, num_tasks=IMITATION_TASKS, num_episodes=num_episodes)
    return [float(r) for r in returns]


def load_curve(run: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(updates, mean, std)`` over seeds of the held-out total; None before the first evaluation."""
    if not (run / "metrics.jsonl").exists():
        return None
    series = read_metrics(run / "metrics.jsonl")["eval"].get("eval/total_return")
    return seed_curve(series) if series else None


def unfinished(runs: Path | Sources, name: str) -> dict[str, Any] | None:
    """What an unfinished run (no ``summary.json``) has evaluated so far; None if nothing."""
    run = run_dir(as_sources(runs), name)
    curve = None if run is None else load_curve(run)
    if curve is None:
        return None
    config = run_config(run)
    return {"curve": curve, "num_updates": config["num_updates"], "num_blocks": config["env"]["num_blocks"]}


def per_episode(
    ax: Any,
    runs: Path | Sources,
    entries: list[tuple[str, str]],
    num_blocks: int,
    title: str,
    extra: list[tuple[str, str]] = (),
) -> None:
    """Return per episode index; ``extra`` runs (beyond the paper's settings) are drawn dotted. The
    references (of the first run drawn that recorded its own, else of the first run drawn; the Bayes
    optimum alone if there is none) are black: the Bayes optimum dashed, expert imitation dotted."""
    refs, fresh = None, False
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
        if refs is None or (fresh and not run["imitation_fresh"]):
            refs, fresh = run["refs"], run["imitation_fresh"]
    if refs is None:
        refs = {BAYES: envs_jax.optimal_returns(num_blocks, 5).tolist()}
    x = np.arange(1, len(refs[BAYES]) + 1)
    ax.plot(x, refs[BAYES], "k--", marker=".", label=BAYES)
    if IMITATION in refs:
        label = f"{IMITATION} ({IMITATION_TASKS} fresh tasks)" if fresh else IMITATION
        ax.plot(x, refs[IMITATION], "k:", marker=".", label=label)
    ax.set_xticks(x)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel("episode index (held-out tasks)")
    ax.set_ylabel("average reward")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")


def steps_per_update(runs: Path | Sources, name: str) -> int:
    """Training env steps of one update of a run: trials per update x steps per trial."""
    trial = run_config(run_dir(as_sources(runs), name))["algo"]["trial"]
    return int(trial["batch_size"]) * int(trial["num_steps"])


def has_curves(runs: Path | Sources, entries: list[tuple[str, str]]) -> bool:
    """Whether any of ``entries`` has a learning curve to draw (rows kept for lost runs have none)."""
    sources = as_sources(runs)
    return any(load_curve(d) is not None for name, _ in entries if (d := run_dir(sources, name)) is not None)


def curves(
    ax: Any, runs: Path | Sources, entries: list[tuple[str, str]], title: str, against: str = "update"
) -> None:
    """Held-out 5-episode return during training, against updates or (``against="env_steps"``) the
    training env steps so far: an update of 300-step trials (LH) holds 3.75x the steps of an
    80-step one (NH), so per update the long horizon sees more experience."""
    units, not_kept = set(), []
    for i, (name, label) in enumerate(entries):
        run = load_run(runs, name)
        style = {}
        if run is not None and run["recorded"]:
            not_kept.append(label)
            continue
        if run is None:  # still training (or stopped): draw what it has evaluated, dashed
            run = unfinished(runs, name)
            if run is None:
                continue
            label = f"{label} (unfinished: {run['curve'][0][-1]} of {run['num_updates']} updates)"
            style = {"linestyle": "--"}
        if run["curve"] is None:  # a summary without evaluations in metrics.jsonl: nothing to draw
            continue
        updates, mean, std = run["curve"]
        per_update = steps_per_update(runs, name)
        units.add(per_update)
        x = updates * per_update if against == "env_steps" else updates
        ax.plot(x, mean, color=f"C{i}", label=label, **style)
        ax.fill_between(x, mean - std, mean + std, color=f"C{i}", alpha=0.2, linewidth=0)
    if against == "env_steps":
        ax.set_xlabel("training env steps")
    elif len(units) == 1:
        ax.set_xlabel(f"update ({units.pop():,} training env steps each)")
    else:
        ax.set_xlabel("update (runs differ in env steps per update)")
    ax.set_ylabel("held-out return, 5 episodes")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # none of the runs exists yet: no legend
        ax.legend(fontsize=7, loc="lower right")
    elif not not_kept:
        ax.text(0.5, 0.5, "not run yet", transform=ax.transAxes, ha="center", color="gray")
    if not_kept:
        ax.text(
            0.02,
            0.98,
            f"curves not kept: {', '.join(not_kept)}",
            transform=ax.transAxes,
            va="top",
            fontsize=6,
            color="gray",
        )


def wall_time(run: dict[str, Any]) -> str:
    """The run's wall time; a resumed run's summary covers only its last part, and says so."""
    if run.get("recorded"):
        return run["wall_time"]
    text = f"{run['wall_time_s'] / 60:.1f} min"
    if run.get("updates_run", run["num_updates"]) < run["num_updates"]:
        text += f" (the last {run['updates_run']} of {run['num_updates']} updates; resumed)"
    return text


TABLE_COLUMNS = (
    "| run (config) | method | X | episode 1..5 return, mean ± std over seeds | total | optimum "
    "| % of optimum | expert imitation | seeds | wall time |"
)


def _cells(*values: Any) -> str:
    """A table row of ``len(TABLE_COLUMNS)`` cells, the missing ones empty."""
    width = TABLE_COLUMNS.count("|") - 1
    cells = [str(v) for v in values] + [""] * (width - len(values))
    return "|" + "|".join(f" {c} " if c else " " for c in cells) + "|"


def results_table(runs: Path | Sources) -> str:
    """The results table: a row per configured run (finished, unfinished or not run yet), after the
    reference rows of each X that has a finished run (Bayes optimum, expert imitation)."""
    rows, refs_by_x, any_fresh, any_recorded = [], {}, False, False
    seen = set()
    for name, label in [*FIG2[2], *EXTRA[2], *FIG2[3], *EXTRA[3], *FIG3_LENGTH, *FIG3_RESET]:
        if name in seen:
            continue
        seen.add(name)
        run = load_run(runs, name)
        if run is None:
            partial = unfinished(runs, name)
            if partial is None:
                rows.append(_cells(f"`configs/{name}.yaml`", label, "", "not run yet"))
            else:
                updates, mean, std = partial["curve"]
                rows.append(
                    _cells(
                        f"`configs/{name}.yaml`",
                        label,
                        partial["num_blocks"],
                        f"unfinished: evaluated to update {updates[-1]} of {partial['num_updates']}",
                        f"{mean[-1]:.2f}±{std[-1]:.2f} (at update {updates[-1]})",
                    )
                )
            continue
        ev = run["eval"]["episode_return"]
        per = ", ".join(f"{m:.2f}±{s:.2f}" for m, s in zip(ev["mean"], ev["std"], strict=True))
        total = float(np.sum(ev["mean"]))
        if run["recorded"]:  # as printed then: the total of the unrounded means
            total, total_std, any_recorded = run["total"], run["total_std"], True
        else:
            total_std = float(np.std(np.sum(ev["per_seed"], axis=1)))
        refs, fresh = run["refs"], run["imitation_fresh"]
        any_fresh |= fresh
        optimum = float(np.sum(refs[BAYES]))
        imitation = ""
        if IMITATION in refs:
            imitation = f"{float(np.sum(refs[IMITATION])):.2f}{FRESH_MARK if fresh else ''}"
        x = run["num_blocks"]
        # A reference recorded on a run's own held-out tasks is preferred to one on fresh tasks.
        if x not in refs_by_x or (refs_by_x[x][1] and not fresh):
            refs_by_x[x] = (refs, fresh)
        rows.append(
            _cells(
                f"`configs/{name}.yaml`{RECORDED_MARK if run['recorded'] else ''}",
                label,
                x,
                per,
                f"{total:.2f}±{total_std:.2f}",
                f"{optimum:.2f}",
                f"{100 * total / optimum:.0f}%",
                imitation,
                run["seeds"],
                wall_time(run),
            )
        )
    reference_rows = []
    for x, (refs, fresh) in sorted(refs_by_x.items()):
        for name, values in refs.items():
            mark = FRESH_MARK if fresh and name == IMITATION else ""
            per = ", ".join(f"{v:.2f}" for v in values)
            reference_rows.append(
                _cells("reference", f"{name}{mark}", x, per, f"{float(np.sum(values)):.2f}{mark}")
            )
    lines = [TABLE_COLUMNS, "|---|---|---:|---|---:|---:|---:|---:|---:|---:|", *reference_rows, *rows]
    if any_fresh:
        lines += [
            "",
            f"{FRESH_MARK} Simulated by `envs_jax.gridworld.imitation_reference` on {IMITATION_TASKS} fresh "
            "tasks of the run's environment: the run's `summary.json` has no `references` (written before "
            "they were recorded).",
        ]
    if any_recorded:
        lines += [
            "",
            f"{RECORDED_MARK} The run directory was lost with an earlier session's machine, before this "
            "script archived run records; the row as it printed it then "
            "(`benchmarks/results/gridworld_recorded.json`), its learning curve not kept.",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=str(ROOT / "runs"))
    parser.add_argument("--out", default=str(ROOT / "docs"))
    parser.add_argument("--archive", default=str(_common.ARCHIVE_DIR), help="run records (read, written)")
    parser.add_argument(
        "--recorded",
        default=str(_common.RESULTS_DIR / "gridworld_recorded.json"),
        help="table rows of runs lost before records were kept",
    )
    parser.add_argument("--gif", default=None, help="a trained memory run directory to animate")
    args = parser.parse_args(argv)
    runs = Sources(Path(args.runs), Path(args.archive), Path(args.recorded))
    out = Path(args.out)
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)

    def curves_figure(entries: list[tuple[str, str]], path: Path) -> bool:
        """Whether to draw a learning-curve figure: not when every run of it that exists is a kept row
        without a curve and the figure is already there (it was drawn when the runs were)."""
        lost = any(recorded_run(runs, name) is not None for name, _ in entries)
        if lost and not has_curves(runs, entries) and path.exists():
            print(f"kept {path}: the learning curves of its runs were not kept")
            return False
        return True

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
    if curves_figure(FIG3_LENGTH, figures / "fig3b_length_curves.png"):
        fig, ax = plt.subplots(figsize=(5.6, 3.8))
        curves(ax, runs, FIG3_LENGTH, "X=3: learning curves for L")
        fig.tight_layout()
        fig.savefig(figures / "fig3b_length_curves.png", dpi=120)
        plt.close(fig)
    # Fig. 3c per update as in the paper, and per env step: an LH update holds 3.75x the steps.
    if curves_figure(FIG3_RESET, figures / "fig3c_reset.png"):
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
        curves(axes[0], runs, FIG3_RESET, "X=3: reset mode and trial horizon, per update")
        curves(axes[1], runs, FIG3_RESET, "... per training env step", against="env_steps")
        fig.tight_layout()
        fig.savefig(figures / "fig3c_reset.png", dpi=120)
        plt.close(fig)
    table = results_table(runs)
    print(table)
    (out / "results.md").write_text(RESULTS_HEADER + table + "\n")
    print(f"wrote {out / 'results.md'} and {figures}/*.png")
    if args.gif:
        from benchmarks import gif

        print(f"wrote {gif.render_gif(Path(args.gif), figures / 'memory_trial.gif')}")


if __name__ == "__main__":
    main()

"""The Bernoulli-bandit table of RL^2 (Duan et al. 2016, Table 1; the lecture's "Recurrent task policies -
Bernoulli bandits"): the classic policies on n pulls of k arms, our numbers beside the paper's.

For each of the 9 settings (n in {10, 100, 500}, k in {5, 10, 50}) every policy of
:mod:`jaxmeta.bandits` plays a trial of n pulls on each of ``--pulls-budget / n`` test tasks (1000
to 10,000; arm probabilities i.i.d. uniform on [0, 1]); a cell is the mean total reward. A policy
with a hyper-parameter is tuned first on other tasks (a fifth as many), over the grid the RL^2
authors' baseline code searched (UCB1's ``c`` and epsilon-greedy's ``epsilon`` over 0, 0.1, ..., 1;
optimistic TS's number of draws ``m`` over 8 of their 1..20), and Gittins' discount over
``GITTINS_DISCOUNTS``; the chosen value is then measured on the test tasks. The RL^2 column comes
from trained runs (``runs/rl2_bandit_n{n}_k{k}``, one config per setting:
``configs/rl2_bandit_n{n}_k{k}.yaml``) when they exist.

Writes ``benchmarks/results/bandit_table.json`` and ``docs/bandits.md``.

    python benchmarks/bandit_table.py [--pulls-budget 1000000] [--quick]
    python benchmarks/bandit_table.py --render-only   # after RL^2 runs: their column, no re-measuring
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import jax
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # run as `python benchmarks/bandit_table.py`
    sys.path.insert(0, str(_ROOT))

from benchmarks import _common  # noqa: E402
from jaxmeta import bandits  # noqa: E402

SETTINGS = ((10, 5), (10, 10), (10, 50), (100, 5), (100, 10), (100, 50), (500, 5), (500, 10), (500, 50))
COLUMNS = ("random", "gittins", "thompson", "optimistic_thompson", "ucb1", "epsilon_greedy", "greedy")
EXTRA_COLUMNS = ("optimistic_thompson_mean",)
TUNED = ("gittins", "optimistic_thompson", "ucb1", "epsilon_greedy")
TITLES = {
    "random": "Random",
    "gittins": "Gittins",
    "thompson": "TS",
    "optimistic_thompson": "OTS",
    "ucb1": "UCB1",
    "epsilon_greedy": "eps-greedy",
    "greedy": "Greedy",
    "optimistic_thompson_mean": "OTS (Chapelle & Li)",
    "rl2": "RL^2",
}
GITTINS_DISCOUNTS = (0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998)
TARGET = 0.02  # every classic policy within 2% of the paper's number
# Where in a trial RL^2 gains or loses: reward per pull in each tenth of the trial, RL^2 beside these
# policies (at their tuned settings) on PROFILE_TASKS fresh tasks, for every trained setting with n >= 100.
PROFILE_POLICIES = ("greedy", "ucb1", "gittins")
PROFILE_PARTS = 10
PROFILE_TASKS = 2000

# RL^2 paper, Table 1 (as in the lecture seed): mean total reward over 1000 tasks, columns in the order
# random, gittins, thompson, optimistic_thompson, ucb1, epsilon_greedy, greedy, rl2.
_PAPER_ROWS = {
    (10, 5): (5.0, 6.6, 5.7, 6.5, 6.7, 6.6, 6.6, 6.7),
    (10, 10): (5.0, 6.6, 5.5, 6.2, 6.7, 6.6, 6.6, 6.7),
    (10, 50): (5.1, 6.5, 5.2, 5.5, 6.6, 6.5, 6.5, 6.8),
    (100, 5): (49.9, 78.3, 74.7, 77.9, 78.0, 75.4, 74.8, 78.7),
    (100, 10): (49.9, 82.8, 76.7, 81.4, 82.4, 77.4, 77.1, 83.5),
    (100, 50): (49.8, 85.2, 64.5, 67.7, 84.3, 78.3, 78.0, 84.9),
    (500, 5): (249.8, 405.8, 402.0, 406.7, 405.8, 388.2, 380.6, 401.6),
    (500, 10): (249.0, 437.8, 429.5, 438.9, 437.1, 408.0, 395.0, 432.5),
    (500, 50): (249.6, 463.7, 427.2, 437.6, 457.6, 413.6, 402.8, 438.9),
}
PAPER: dict[tuple[int, int], dict[str, float]] = {
    setting: dict(zip((*COLUMNS, "rl2"), row, strict=True)) for setting, row in _PAPER_ROWS.items()
}

TUNE_STREAM, TEST_STREAM, PLAY_STREAM = 1, 2, 3


def setting_keys(seed: int, index: int) -> dict[str, jax.Array]:
    """The tuning tasks, test tasks and play keys of setting ``index``: independent streams."""
    base = jax.random.fold_in(jax.random.PRNGKey(seed), index)
    return {
        name: jax.random.fold_in(base, stream)
        for name, stream in (("tune", TUNE_STREAM), ("test", TEST_STREAM), ("play", PLAY_STREAM))
    }


def measure(
    policy: bandits.Policy, setting: Any, probs: jax.Array, num_pulls: int, key: jax.Array
) -> dict[str, float]:
    """Mean total reward over the tasks ``probs``, its standard error and the seconds it took."""
    start = time.perf_counter()
    totals = np.asarray(
        bandits.play(policy.choose, setting, probs, num_pulls, key, policy.static_setting).sum(-1)
    )
    return {
        "mean": float(totals.mean()),
        "stderr": float(totals.std(ddof=1) / math.sqrt(len(totals))),
        "seconds": time.perf_counter() - start,
    }


def task_counts(n: int, pulls_budget: int) -> tuple[int, int]:
    """``(test tasks, tuning tasks)`` of a setting with ``n`` pulls: ``pulls_budget / n`` test tasks
    (at least 1000, the paper's count, at most 10,000) and a fifth as many tuning tasks."""
    test = max(1000, min(10_000, pulls_budget // n))
    return test, max(100, test // 5)


def run_setting(
    n: int,
    k: int,
    keys: dict[str, jax.Array],
    args: argparse.Namespace,
    gittins_tables: dict[float, Any],
    grids: dict[str, tuple[Any, ...]],
    policies: tuple[str, ...] = COLUMNS + EXTRA_COLUMNS,
) -> dict[str, Any]:
    num_test, num_tune = task_counts(n, args.pulls_budget)
    tune_probs = bandits.uniform_tasks(keys["tune"], num_tune, k)
    test_probs = bandits.uniform_tasks(keys["test"], num_test, k)
    cells: dict[str, Any] = {}
    for name in policies:
        policy = bandits.POLICIES[name]
        start = time.perf_counter()
        tuned: dict[str, Any] = {}
        if name == "gittins":
            grid = tuple(gittins_tables)
            values = [gittins_tables[d] for d in grid]
        else:
            grid = values = grids.get(name, policy.grid)
        setting = None
        if grid:
            best, tune_means = bandits.tune(policy, tune_probs, n, keys["play"], grid=values)
            means = tune_means.tolist()
            setting = values[best]
            tuned = {
                "name": policy.setting_name,
                "value": grid[best],
                "grid": list(grid),
                "tune_means": means,
            }
        cell = measure(policy, setting, test_probs, n, jax.random.fold_in(keys["play"], 1))
        cell["tuned"] = tuned
        cell["test_tasks"], cell["tune_tasks"] = num_test, num_tune
        cell["seconds_with_tuning"] = time.perf_counter() - start
        paper = PAPER.get((n, k), {}).get(name)
        if paper is not None:
            cell["paper"] = paper
            cell["relative_gap"] = (cell["mean"] - paper) / paper
            cell["within_target"] = abs(cell["relative_gap"]) <= TARGET
        cells[name] = cell
        print(
            f"n={n:3d} k={k:2d} {name:26s} {cell['mean']:8.2f} +- {cell['stderr']:.2f}"
            + (f" (paper {paper})" if paper is not None else "")
            + (f" {policy.setting_name}={tuned['value']}" if tuned else "")
            + f"  {cell['seconds_with_tuning']:.1f} s",
            flush=True,
        )
    return cells


def rl2_summaries(runs_dir: Path, name: str, archive: Path) -> list[dict[str, Any]]:
    """The finished summaries of run ``name``, or of its single-seed parts ``name_sI`` (``seeds=1
    seed=I name=name_sI``: a run that fits in one session); archives the live runs."""
    found = []
    for candidate in _common.run_names(name):
        run = _common.find_run(runs_dir, candidate, archive)
        if run is not None and (run / "summary.json").exists():
            _common.archive_run(run, archive)
            found.append(json.loads((run / "summary.json").read_text()))
            if candidate == name:
                return found
    return found


def rl2_cells(runs_dir: Path, n: int, k: int, archive: Path = _common.ARCHIVE_DIR) -> dict[str, Any] | None:
    """The RL^2 run of setting (n, k), if it has finished (or its finished single-seed parts): mean +- std
    over seeds of its final evaluation (``eval.num_tasks`` held-out tasks per seed) and what training
    cost (wall time summed over parts)."""
    summaries = rl2_summaries(runs_dir, f"rl2_bandit_n{n}_k{k}", archive)
    if not summaries:
        return None
    finals = np.concatenate([np.asarray(s["eval"]["total_return"]["per_seed"], float) for s in summaries])
    per_pull = [s["eval"].get("episode_return", {}).get("per_seed") for s in summaries]
    per_pull = np.concatenate(per_pull).mean(0) if all(p is not None for p in per_pull) else None
    paper = PAPER[(n, k)]["rl2"]
    mean = float(finals.mean())
    return {
        "mean": mean,
        "std_over_seeds": float(finals.std()),
        "per_seed": finals.tolist(),
        "paper": paper,
        "relative_gap": (mean - paper) / paper,
        "within_target": abs(mean - paper) / paper <= TARGET,
        "updates": summaries[0].get("num_updates") or summaries[0].get("updates_run"),
        "updates_run": summaries[0].get("updates_run"),  # fewer than "updates" after a resume
        "env_steps_per_seed": summaries[0].get("final_train", {}).get("env_steps", {}).get("mean"),
        "wall_time_s": sum(s.get("wall_time_s") or 0.0 for s in summaries),
        "compile_s": sum(s.get("compile_s") or 0.0 for s in summaries),
        "runs": len(summaries),
        "per_pull": None if per_pull is None else per_pull.tolist(),  # mean over seeds (one pull an episode)
    }


def parts_of_trial(per_pull: Any, parts: int = PROFILE_PARTS) -> list[float] | None:
    """Mean reward per pull in each of ``parts`` equal parts of a trial (None if it does not divide)."""
    per_pull = np.asarray(per_pull, float)
    if per_pull.ndim != 1 or len(per_pull) % parts:
        return None
    return per_pull.reshape(parts, -1).mean(1).tolist()


def trial_profile(n: int, k: int, cells: dict[str, Any], seed: int = 0) -> dict[str, list[float]]:
    """Reward per pull in each tenth of a trial of ``n`` pulls: the RL^2 run's final evaluation and
    :data:`PROFILE_POLICIES` at their tuned settings (from ``cells``) on :data:`PROFILE_TASKS` fresh tasks."""
    profile = {"rl2": parts_of_trial(cells["rl2"]["per_pull"])}
    keys = jax.random.split(jax.random.PRNGKey(seed), 2)
    probs = bandits.uniform_tasks(keys[0], PROFILE_TASKS, k)
    for name in PROFILE_POLICIES:
        if name not in cells:
            continue
        policy, setting = bandits.POLICIES[name], cells[name]["tuned"].get("value")
        if name == "gittins":
            setting = bandits.gittins_indices(n, setting)
        rewards = bandits.play(policy.choose, setting, probs, n, keys[1], policy.static_setting)
        profile[name] = parts_of_trial(np.asarray(rewards).mean(0))
    return profile


def write_doc(report: dict[str, Any], path: Path) -> None:
    cfg = report["config"]
    lines = [
        "# Bernoulli bandits: the RL^2 table",
        "",
        f"Written by `python benchmarks/bandit_table.py` ({report['wall_s']:.0f} s on this machine's CPU"
        + (f", {report['timing_note']}" if report.get("timing_note") else "")
        + "; "
        f"{task_counts(10, cfg['pulls_budget'])[0]:,} test tasks per setting at n = 10 and 100, "
        f"{task_counts(500, cfg['pulls_budget'])[0]:,} at n = 500, and a fifth as many tuning tasks). "
        "Each cell: our mean total reward over the test tasks, then the RL^2 paper's number "
        "(Duan et al. 2016, Table 1, as in the lecture seed). **Bold**: more than 2% from the paper. "
        "Standard errors, the tuned settings and the time of every cell are in "
        "`benchmarks/results/bandit_table.json`.",
        "",
        "| n, k | " + " | ".join(TITLES[c] for c in (*COLUMNS, "rl2")) + " |",
        "|---|" + "---:|" * (len(COLUMNS) + 1),
    ]
    for entry in report["settings"]:
        row = [f"{entry['n']}, {entry['k']}"]
        for name in (*COLUMNS, "rl2"):
            cell = entry["cells"].get(name)
            if cell is None:
                paper = PAPER.get((entry["n"], entry["k"]), {}).get(name)
                missing = "not trained" if name == "rl2" else "not run"
                row.append(missing + (f" ({paper})" if paper is not None else ""))
                continue
            value = f"{cell['mean']:.1f}"
            if name == "rl2":
                value += f" +- {cell['std_over_seeds']:.1f}"
            if "paper" not in cell:
                row.append(value)
                continue
            text = f"{value} ({cell['paper']})"
            row.append(text if cell["within_target"] else f"**{text}**")
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "## Tuned settings",
        "",
        "Chosen on the tuning tasks (the RL^2 authors' grids for UCB1's `c` and epsilon-greedy's `epsilon`; "
        "8 of their 20 values for optimistic TS's `m`; Gittins' discount over "
        f"{', '.join(str(d) for d in cfg['gittins_discounts'])}).",
        "",
        "| n, k | "
        + " | ".join(f"{TITLES[c]} {bandits.POLICIES[c].setting_name}" for c in TUNED)
        + f" | {TITLES['optimistic_thompson_mean']} |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for entry in report["settings"]:
        cells = entry["cells"]
        tuned = [str(cells[c]["tuned"]["value"]) if c in cells else "-" for c in TUNED]
        extra = (
            f"{cells['optimistic_thompson_mean']['mean']:.1f}" if "optimistic_thompson_mean" in cells else "-"
        )
        lines.append(f"| {entry['n']}, {entry['k']} | " + " | ".join(tuned) + f" | {extra} |")

    def spread(c: dict[str, Any]) -> str:
        if "std_over_seeds" in c:  # an RL^2 cell: its seeds
            return f"std over {len(c['per_seed'])} seeds {c['std_over_seeds']:.2f}"
        return f"standard error {c.get('stderr', float('nan')):.2f}"

    misses = [
        f"n={e['n']}, k={e['k']}, {TITLES[name]}: {c['mean']:.2f} against {c['paper']} "
        f"({100 * c['relative_gap']:+.1f}%, {spread(c)})"
        for e in report["settings"]
        for name, c in e["cells"].items()
        if "within_target" in c and not c["within_target"]
    ]
    lines += ["", "## RL^2 runs", ""]
    trained = [(e["n"], e["k"], e["cells"]["rl2"]) for e in report["settings"] if "rl2" in e["cells"]]
    if trained:
        lines += [
            "Each `python -m jaxmeta.train config=configs/rl2_bandit_n{n}_k{k}.yaml` (3 seeds vectorised "
            "in one program on this CPU); the cell is the final evaluation, mean +- std over seeds.",
            "",
            "| n, k | per seed | updates | env steps per seed | wall time (compile) |",
            "|---|---|---:|---:|---:|",
        ]
        for n, k, cell in trained:
            per_seed = ", ".join(f"{v:.2f}" for v in cell["per_seed"])
            wall = (cell.get("wall_time_s") or float("nan")) / 60
            steps, compile_s = cell.get("env_steps_per_seed") or 0, cell.get("compile_s") or 0
            updates, updates_run = cell.get("updates"), cell.get("updates_run")
            resumed = ""
            if updates_run is not None and updates_run != updates:
                resumed = f" for the last {updates_run:,} updates (resumed)"
            lines.append(
                f"| {n}, {k} | {per_seed} | {updates or '-'} | {steps:,.0f} | "
                f"{wall:.1f} min ({compile_s:.0f} s){resumed} |"
            )
    else:
        lines.append("None has finished yet.")
    profiled = [e for e in report["settings"] if e.get("trial_profile", {}).get("rl2")]
    if profiled:
        lines += [
            "",
            "## Where in the trial RL^2 gains or loses",
            "",
            f"Reward per pull in each tenth of the trial: RL^2's final evaluation (mean over seeds) beside "
            f"{', '.join(TITLES[p] for p in PROFILE_POLICIES)} at their tuned settings on "
            f"{PROFILE_TASKS:,} fresh tasks. A policy that explores gives up reward early for more later. "
            "Why RL^2 misses at n = 100, with the runs behind it: `docs/bandits_notes.md` (written by hand).",
            "",
            "| n, k | policy | " + " | ".join(str(i + 1) for i in range(PROFILE_PARTS)) + " |",
            "|---|---|" + "---:|" * PROFILE_PARTS,
        ]
        for entry in profiled:
            for name, tenths in entry["trial_profile"].items():
                if tenths is not None:
                    values = " | ".join(f"{v:.3f}" for v in tenths)
                    lines.append(f"| {entry['n']}, {entry['k']} | {TITLES[name]} | {values} |")
    lines += ["", "## Cells more than 2% from the paper", ""]
    lines += [f"- {m}" for m in misses] or ["None."]
    lines += ["", "![ours against the paper](figures/bandits.png)", "", NOTES]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def write_figure(report: dict[str, Any], path: Path) -> None:
    """Ours against the paper's number, one panel per n (all k and policies), with the 2% band."""
    by_n: dict[int, list[tuple[float, float, str]]] = {}
    for entry in report["settings"]:
        for name, cell in entry["cells"].items():
            if "paper" in cell:
                by_n.setdefault(entry["n"], []).append((cell["paper"], cell["mean"], name))
    if not by_n:
        return
    markers = dict(zip((*COLUMNS, "rl2"), "os^vDP*X", strict=True))
    fig, axes = plt.subplots(1, len(by_n), figsize=(4.2 * len(by_n), 4.0), squeeze=False)
    for ax, (n, points) in zip(axes[0], sorted(by_n.items()), strict=True):
        values = [v for p in points for v in p[:2]]
        low, high = min(values) * 0.95, max(values) * 1.03
        line = np.linspace(low, high, 2)
        ax.fill_between(line, line * (1 - TARGET), line * (1 + TARGET), color="0.85", label="within 2%")
        ax.plot(line, line, color="0.5", lw=0.8)
        for name in markers:
            xs = [p[0] for p in points if p[2] == name]
            ys = [p[1] for p in points if p[2] == name]
            if xs:
                ax.scatter(xs, ys, marker=markers[name], s=28, label=TITLES[name])
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
        ax.set_title(f"n = {n} pulls (k = 5, 10, 50)", fontsize=10)
        ax.set_xlabel("RL^2 paper, Table 1")
        ax.set_ylabel("ours (mean total reward)")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


NOTES = """## How the policies are set up, and why

- **Prior and ties.** Every index policy works on the Beta(1, 1) posterior: an arm's mean is
  `(s + 1) / (s + f + 2)`, so an untried arm counts as 0.5 (the RL^2 authors' baseline code keeps the
  same pseudo-counts). Ties go to the lowest arm; the arms of a task are i.i.d., so no arm is favoured.
- **Gittins.** The index of a Bernoulli arm with a Beta(1, 1) prior for a discount factor, computed by
  calibration against a safe arm with a backward dynamic programme over all (successes, failures)
  states (`jaxmeta.bandits.gittins_indices`; checked against an independent bisection in
  `tests/test_bandits.py`). The problem here is undiscounted with a known horizon n, for which no
  index policy is optimal; the discount is tuned per setting like the other policies' settings (the
  RL^2 authors' later baseline code tuned it over 0.9, 0.99, 0.999 and 0.9999; at n = 10 a discount
  of 0.5, below their grid, does best here).
- **OTS** is the RL^2 authors' variant (their baseline code, `optimistic_thompson`): draw m joint
  posterior samples and act on the most probable one. It reproduces their column; Chapelle & Li's
  optimistic TS (each draw raised to the posterior mean) is shown beside the tuned settings for
  comparison.
- **UCB1** is `mean + c sqrt(2 ln t / (s + f + 2))` on the posterior mean, `c` tuned (c = 1 is
  Auer et al.'s UCB1 with pseudo-counts), as in the RL^2 authors' code.
- **Noise, and the cells that miss.** The paper used 1000 tasks per cell and printed one decimal:
  its standard errors are about 0.05-0.08 at n = 10, 0.4 at n = 100 and 2 at n = 500, and at n = 10
  the rounding alone is worth up to 0.75%; the 2% target is 0.13 there, under two of the paper's
  standard errors. Every miss is at n = 10 and all but one in the row n = 10, k = 50, where the
  paper's numbers sit together about 0.1-0.2 below ours except Random's, which is 0.1 above, and
  Random's expectation is exactly n / 2 = 5.0 (ours: 4.99 +- 0.02): the paper's task sample for that
  row is off by that much, and the other policies of the row move with it. TS at n = 10, k = 5
  (5.83 +- 0.02 against 5.7, +2.2%, 0.13 above) is the only other miss; the policy's choices and
  whole trials agree with plain-numpy Thompson sampling in `tests/test_bandits.py`.
"""


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pulls-budget",
        type=int,
        default=1_000_000,
        help="test tasks per setting = this / n, between 1000 and 10,000; tuning tasks a fifth of that",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", default="runs", help="where the RL^2 runs are")
    parser.add_argument("--archive", default=str(_common.ARCHIVE_DIR), help="run records (read, written)")
    parser.add_argument("--out", default=str(_common.RESULTS_DIR / "bandit_table.json"))
    parser.add_argument("--doc", default=str(_ROOT / "docs" / "bandits.md"))
    parser.add_argument("--quick", action="store_true", help="smoke test: one small setting, few tasks")
    parser.add_argument(
        "--policies", default=None, help="comma-separated subset of the columns (default: all)"
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="no new measurement: read --out, refresh the RL^2 cells from --runs (or their records under "
        "benchmarks/results/runs), rewrite --out and the doc",
    )
    parser.add_argument(
        "--timing-note", default=None, help="with --render-only: a note on the conditions of the timing"
    )
    args = parser.parse_args(argv)
    if args.render_only:
        report = json.loads(Path(args.out).read_text())
        if args.timing_note:
            report["timing_note"] = args.timing_note
        for entry in report["settings"]:
            # A cell whose run and record are both gone (runs lost before records were kept) stays.
            rl2 = rl2_cells(Path(args.runs), entry["n"], entry["k"], Path(args.archive))
            if rl2 is not None:
                entry["cells"]["rl2"] = rl2
            if entry["n"] >= 100 and (entry["cells"].get("rl2") or {}).get("per_pull") is not None:
                entry["trial_profile"] = trial_profile(entry["n"], entry["k"], entry["cells"], args.seed)
        _common.write_json(report, Path(args.out))
        write_doc(report, Path(args.doc))
        write_figure(report, Path(args.doc).parent / "figures" / "bandits.png")
        print(f"Rewrote {args.out}, {args.doc} and its figure")
        return report
    settings, discounts, grids = SETTINGS, GITTINS_DISCOUNTS, {}
    if args.quick:
        settings, discounts = ((10, 3),), (0.9, 0.99)
        grids = {"optimistic_thompson": (1, 3), "ucb1": (0.0, 0.5), "epsilon_greedy": (0.0, 0.2)}
        args.pulls_budget = 1000
    policies = COLUMNS + EXTRA_COLUMNS
    if args.policies:
        policies = tuple(args.policies.split(","))
        unknown = sorted(set(policies) - set(COLUMNS + EXTRA_COLUMNS))
        if unknown:
            parser.error(f"unknown policies {unknown}; known: {', '.join(COLUMNS + EXTRA_COLUMNS)}")
    if "gittins" not in policies:
        discounts = ()
    start = time.perf_counter()
    longest = max(n for n, _ in settings)
    gittins_tables = jax.block_until_ready({d: bandits.gittins_indices(longest, d) for d in discounts})
    gittins_s = time.perf_counter() - start
    print(f"Gittins index tables for {len(gittins_tables)} discounts: {gittins_s:.1f} s", flush=True)
    entries = []
    for index, (n, k) in enumerate(settings):
        cells = run_setting(n, k, setting_keys(args.seed, index), args, gittins_tables, grids, policies)
        rl2 = rl2_cells(Path(args.runs), n, k, Path(args.archive))
        if rl2 is not None:
            cells["rl2"] = rl2
        entries.append({"n": n, "k": k, "cells": cells})
    report = {
        "config": {
            "pulls_budget": args.pulls_budget,
            "seed": args.seed,
            "gittins_discounts": list(discounts),
            "quick": args.quick,
        },
        "machine": _common.machine_info(),
        "gittins_tables_s": gittins_s,
        "wall_s": time.perf_counter() - start,
        "settings": entries,
    }
    _common.write_json(report, Path(args.out))
    if not args.quick or args.doc != str(_ROOT / "docs" / "bandits.md"):
        write_doc(report, Path(args.doc))
        write_figure(report, Path(args.doc).parent / "figures" / "bandits.png")
    print(f"Done in {report['wall_s']:.0f} s; wrote {args.out} and {args.doc}")
    return report


if __name__ == "__main__":
    main()

"""NEC, MFEC and DQN on four MinAtar games: the lecture's table (evaluation return at 100k, 250k, 500k
and 1M frames) and learning curves against frames, from run directories.

Each run is a config ``configs/ec_{method}_{game}.yaml`` trained with
``python -m jaxmeta.train config=configs/ec_{method}_{game}.yaml`` into ``runs/ec_{method}_{game}``
(3 seeds vectorised in one program). This script reads the runs that exist, finished or still training,
copies each one's small record into ``benchmarks/results/runs/`` (``_common.archive_run``: the table
survives when ``runs/`` is gone), falls back to those records and then to the cells recorded in
``benchmarks/results/episodic_recorded.json`` (runs lost before records were kept: a whole run's cells,
mean and std, or a single-seed part's returns at the table's frame counts, merged with the other parts
as if it were on disk), and writes
``docs/episodic.md`` (per game a table with rows = frames and columns = methods, mean +- std
over seeds of the evaluation return at that frame count, and the wall time and speed of each run) and
``docs/figures/episodic.png`` (evaluation return against frames, one panel per game).

    python benchmarks/episodic_table.py [--runs runs] [--out docs] [--archive DIR] [--recorded FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, NamedTuple

import matplotlib
import numpy as np
import yaml

matplotlib.use("Agg")
import matplotlib.pyplot as plt

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # run as `python benchmarks/episodic_table.py`
    sys.path.insert(0, str(_ROOT))

from benchmarks import _common  # noqa: E402
from jaxmeta.plots import read_metrics, samples_at  # noqa: E402

GAMES = {
    "breakout": "Breakout-MinAtar",
    "asterix": "Asterix-MinAtar",
    "freeway": "Freeway-MinAtar",
    "space_invaders": "SpaceInvaders-MinAtar",
}
METHODS = ("nec", "mfec", "dqn")
FRAMES = (100_000, 250_000, 500_000, 1_000_000)

HEADER = """# Episodic control against DQN on MinAtar

Written by `python benchmarks/episodic_table.py` from the run directories `runs/ec_METHOD_GAME`,
each trained by `python -m jaxmeta.train config=configs/ec_METHOD_GAME.yaml`: 3 seeds vectorised in
one program on this repository's 2-core CPU (no accelerator). A cell is the evaluation return at that
many frames (env steps per seed; MinAtar has no frame skip), mean +- std over seeds: fresh episodes
played to their end with epsilon 0.001 (`algo.eval_episodes` per seed). "-": the run has not reached
that many frames yet. Wall time is the whole run, compilation and evaluations included; frames/s is
training frames per second summed over the seeds. A run trained as single-seed runs, one per session
(`seeds=1 seed=I name=ec_METHOD_GAME_sI`, the same seeds as the 3-seed run), is their seeds merged.

The lecture's Table 1 (Atari, median human-normalised score over 57 games) for orientation: NEC 16.7%
and MFEC 12.8% at 1M frames against Nature DQN's -0.7%; 27.8% / 16.7% / 0.0% at 2M; 36.0% / 26.6% /
2.4% at 4M. MinAtar scores are raw game scores, not human-normalised. Why NEC is or is not ahead
here, with the diagnostic runs behind it: `docs/episodic_notes.md` (written by hand).

"""


def run_name(method: str, game: str) -> str:
    return f"ec_{method}_{game}"


class Sources(NamedTuple):
    """Where runs are read from: live run directories, their archived records, recorded cells."""

    runs: Path
    archive: Path = _common.ARCHIVE_DIR
    recorded: Path = _common.RESULTS_DIR / "episodic_recorded.json"


def recorded(sources: Sources, name: str) -> dict[str, Any] | None:
    """The table cells kept for run ``name`` whose directory was lost, ``None`` if there are none."""
    if not sources.recorded.exists():
        return None
    return json.loads(sources.recorded.read_text())["runs"].get(name)


def load(sources: Sources, name: str) -> dict[str, Any] | None:
    """``{"table", "summary" (None while training), "config"}`` of a run (its live directory, else its
    archived record), or of its single-seed parts ``NAME_sI`` merged (``"parts"``: how many, each one
    ``seeds=1 seed=I name=NAME_sI``: a run that fits in one session); ``None`` if none exists.
    Archives the live runs."""
    whole, *split = _common.run_names(name)
    if (run := load_one(sources, whole)) is not None:
        return run
    parts = [
        part
        for part_name in split
        if (part := load_one(sources, part_name) or recorded_part(sources, part_name)) is not None
    ]
    if not parts:
        return None
    table: dict[str, Any] = defaultdict(lambda: defaultdict(lambda: defaultdict(dict)))
    for index, part in enumerate(parts):  # each part's only seed becomes seed `index` of the merged table
        for kind, metrics in part["table"].items():
            for metric, series in metrics.items():
                for update, seeds in series.items():
                    for value in seeds.values():
                        table[kind][metric][update][index] = value
    summaries = [part["summary"] for part in parts]
    summary = None
    if all(summaries):
        summary = {
            "wall_time_s": sum(s["wall_time_s"] for s in summaries),
            "compile_s": sum(s["compile_s"] for s in summaries),
            "samples_per_s": float(np.mean([s.get("samples_per_s") or 0.0 for s in summaries])),
        }
    return {
        "table": table,
        "summary": summary,
        "config": parts[0]["config"],
        "parts": len(parts),
        "recorded_parts": sum(bool(part.get("recorded")) for part in parts),
    }


def recorded_part(sources: Sources, name: str) -> dict[str, Any] | None:
    """A lost single-seed part ``NAME_sI`` from its recorded entry (``seed_returns``: its return at each of
    the table's frame counts; ``frames_per_update``; its summary's times) in :func:`load_one`'s shape, so
    that it merges with the other parts; ``None`` if there is no such entry."""
    entry = recorded(sources, name)
    if entry is None or "seed_returns" not in entry:
        return None
    table: dict[str, Any] = {"eval": {"eval/return": {}}, "train": {"env_steps": {}}}
    for frame, value in entry["seed_returns"].items():
        update = int(frame) // int(entry["frames_per_update"])
        table["eval"]["eval/return"][update] = {0: float(value)}
        table["train"]["env_steps"][update] = {0: float(frame)}
    summary = {key: entry[key] for key in ("wall_time_s", "compile_s", "samples_per_s")}
    return {"table": table, "summary": summary, "config": {}, "recorded": True}


def load_one(sources: Sources, name: str) -> dict[str, Any] | None:
    run = _common.find_run(sources.runs, name, sources.archive)
    if run is None or not (run / "metrics.jsonl").exists():
        return None
    _common.archive_run(run, sources.archive)
    table = read_metrics(run / "metrics.jsonl")
    if not table["eval"].get("eval/return"):
        return None
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else None
    config = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").exists() else {}
    return {"table": table, "summary": summary, "config": config}


def returns_at_frames(run: dict[str, Any], frames: tuple[int, ...]) -> dict[int, np.ndarray]:
    """Per frame count, the per-seed evaluation returns of the evaluation at exactly that many frames."""
    series = run["table"]["eval"]["eval/return"]
    updates = np.array(sorted(series))
    counts = samples_at(run["table"], "env_steps", updates)
    out = {}
    if counts is None:
        return out
    for frame in frames:
        hit = np.flatnonzero(np.isclose(counts, frame))
        if len(hit):
            out[frame] = np.array([float(v) for v in series[int(updates[hit[0]])].values()])
    return out


def cell(values: np.ndarray | None) -> str:
    if values is None:
        return "-"
    return f"{values.mean():.1f} ± {values.std():.1f}"


def recorded_cell(values: list[float] | None) -> str:
    return "-" if values is None else f"{values[0]:.1f} ± {values[1]:.1f}"


def game_table(sources: Sources, game: str) -> list[str]:
    loaded = {method: load(sources, run_name(method, game)) for method in METHODS}
    at = {m: (returns_at_frames(r, FRAMES) if r else {}) for m, r in loaded.items()}
    kept = {m: recorded(sources, run_name(m, game)) if loaded[m] is None else None for m in METHODS}

    def show(method: str, frame: int) -> str:
        if kept[method] is not None:
            return recorded_cell(kept[method]["returns"].get(str(frame)))
        return cell(at[method].get(frame))

    lines = [f"## {GAMES[game]}", "", "| frames | " + " | ".join(m.upper() for m in METHODS) + " |"]
    lines.append("|---:|" + "---:|" * len(METHODS))
    for frame in FRAMES:
        lines.append(f"| {frame:,} | " + " | ".join(show(m, frame) for m in METHODS) + " |")
    lines += ["", "| run | status | wall time | frames/s |", "|---|---|---:|---:|"]
    for method in METHODS:
        run, name = loaded[method], run_name(method, game)
        if run is None and kept[method] is not None:
            entry = kept[method]
            status = entry.get("status", "finished (run directory lost; cells as recorded)")
            lines.append(
                f"| `configs/{name}.yaml` | {status} | {entry['wall_time']} | {entry['frames_per_s']:,} |"
            )
            continue
        if run is None:
            lines.append(f"| `configs/{name}.yaml` | not run yet | | |")
            continue
        summary, parts = run["summary"], run.get("parts")
        split = f" as {parts} single-seed run(s) `{name}_sI`" if parts else ""
        if run.get("recorded_parts"):
            split += f" ({run['recorded_parts']} of them recorded: run directory lost, no curve)"
        if summary is None:
            last = max(run["table"]["eval"]["eval/return"])
            status = f"training{split} (last evaluation at update {last:,})"
            lines.append(f"| `configs/{name}.yaml` | {status} | | |")
            continue
        wall = _common.run_wall_time(summary) + (" in all, one after another" if parts else "")
        speed = summary.get("samples_per_s")
        speed_text = (f"{speed:,.0f}" + (" per run" if parts else "")) if speed else ""
        lines.append(f"| `configs/{name}.yaml` | finished{split} | {wall} | {speed_text} |")
    return [*lines, ""]


def figure(sources: Sources, out: Path) -> Path:
    fig, axes = plt.subplots(1, len(GAMES), figsize=(4.2 * len(GAMES), 3.4))
    for ax, game in zip(axes, GAMES, strict=True):
        for i, method in enumerate(METHODS):
            run = load(sources, run_name(method, game))
            entry = recorded(sources, run_name(method, game)) if run is None else None
            if entry is not None:  # only the table's cells were kept: points, not a curve
                frames = sorted(int(f) for f in entry["returns"])
                mean, std = (np.array([entry["returns"][str(f)][j] for f in frames]) for j in (0, 1))
                ax.errorbar(
                    frames,
                    mean,
                    yerr=std,
                    color=f"C{i}",
                    marker="o",
                    linestyle=":",
                    capsize=3,
                    label=method.upper() + " (recorded cells)",
                )
            if run is not None:
                training = run["summary"] is None
                label = method.upper() + (" (training)" if training else "")
                _common.draw_eval_returns(ax, run["table"], f"C{i}", label, training)
    path = out / "figures" / "episodic.png"
    return _common.save_curve_panels(fig, axes, list(GAMES.values()), "frames (per seed)", path)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=str(_ROOT / "runs"))
    parser.add_argument("--out", default=str(_ROOT / "docs"))
    parser.add_argument("--archive", default=str(_common.ARCHIVE_DIR), help="run records (read, written)")
    parser.add_argument("--recorded", default=str(Sources(Path()).recorded), help="cells of lost runs")
    args = parser.parse_args(argv)
    sources, out = Sources(Path(args.runs), Path(args.archive), Path(args.recorded)), Path(args.out)
    text = "\n".join(line for game in GAMES for line in game_table(sources, game))
    out.mkdir(parents=True, exist_ok=True)
    (out / "episodic.md").write_text(HEADER + text)
    print(text)
    print(f"wrote {out / 'episodic.md'} and {figure(sources, out)}")
    return text


if __name__ == "__main__":
    main()

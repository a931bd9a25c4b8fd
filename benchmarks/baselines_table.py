"""The single-task baselines (PPO, DQN) table and figure, from run directories.

Each row is a config in ``configs/`` trained with
``python -m jaxmeta.train config=configs/NAME.yaml`` into ``runs/NAME``. This
script reads ``summary.json`` and ``metrics.jsonl`` of the runs that exist and
writes ``docs/baselines.md`` (final evaluation return, mean +- std over seeds
and per seed, env steps, target, wall time and training speed) and
``docs/figures/baselines.png`` (evaluation return against env steps).

    python benchmarks/baselines_table.py [--runs runs] [--out docs]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import yaml

matplotlib.use("Agg")
import matplotlib.pyplot as plt

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # run as `python benchmarks/baselines_table.py`
    sys.path.insert(0, str(_ROOT))

from benchmarks import _common  # noqa: E402
from jaxmeta.plots import read_metrics, samples_at  # noqa: E402

# (config, target: (comparison, value) or None, published reference for the same setting or None)
ROWS: list[tuple[str, tuple[str, float] | None, str | None]] = [
    ("ppo_cartpole", (">=", 475.0), None),
    ("dqn_cartpole", (">=", 475.0), None),
    ("ppo_pendulum", (">=", -250.0), None),
    (
        "ppo_breakout",
        None,
        "gymnax README (gymnax-blines PPO checkpoint, 2x256 MLP): 28 after 1e7 steps",
    ),
    (
        "ppo_breakout_5m",
        None,
        "gymnax README (gymnax-blines PPO checkpoint, 2x256 MLP): 28 after 1e7 steps",
    ),
    ("dqn_breakout", None, "MinAtar paper (Young & Tian 2019): learning curves only, no table"),
    ("dqn_breakout_5m", None, "MinAtar paper (Young & Tian 2019): learning curves only, no table"),
]

HEADER = """# Single-task baselines: PPO and DQN

Written by `python benchmarks/baselines_table.py` from the run directories in
`runs/`; each row names the config that produced it
(`python -m jaxmeta.train config=configs/NAME.yaml`), 3 seeds vectorised in
one program on this repository's 2-core CPU (no accelerator). "Evaluation
return": the last evaluation of the run, fresh episodes played to their end
(`algo.eval_episodes` per seed; PPO samples its actions, DQN acts greedily
on CartPole and with epsilon 0.001 on MinAtar), mean +- std over seeds.
Wall time is the whole run (compilation and evaluations included);
"steps/s" is training env steps per second summed over the seeds, training
only. The MinAtar rows sit next to the published figures found for them,
which come from other budgets or network sizes, as the column says.

"""


def load(runs: Path, name: str) -> dict[str, Any] | None:
    """The run's summary and metrics; ``None`` when it has not started. An
    unfinished run (no ``summary.json`` yet) is read from its metrics alone,
    with ``"unfinished": True``."""
    run = runs / name
    if (run / "summary.json").exists():
        summary = json.loads((run / "summary.json").read_text())
        summary["table"] = read_metrics(run / "metrics.jsonl")
        return summary
    if not (run / "metrics.jsonl").exists():
        return None
    table = read_metrics(run / "metrics.jsonl")
    if not table["eval"].get("eval/return"):
        return None
    config = yaml.safe_load((run / "config.yaml").read_text())
    return {"unfinished": True, "table": table, "env": config["env"]["id"], "algo": config["algo"]["name"]}


def unfinished_row(name: str, summary: dict[str, Any], reference: str | None) -> str:
    """A run still training (or stopped before its end): its latest evaluation, marked as such."""
    table = summary["table"]
    series = table["eval"]["eval/return"]
    last = max(series)
    values = np.array([float(v) for v in series[last].values()])
    steps = samples_at(table, "env_steps", np.array([last]))
    per_seed = ", ".join(f"{v:.1f}" for v in values)
    mean, std = values.mean(), values.std()
    steps_text = "unfinished" if steps is None else f"{steps[0]:,.0f} (unfinished)"
    return (
        f"| `configs/{name}.yaml` | {summary['algo']} | {summary['env']} | {steps_text} "
        f"| {mean:.1f} ± {std:.1f} ({per_seed}), at update {last:,} | | {reference or ''} | | |"
    )


def row(name: str, summary: dict[str, Any] | None, target: Any, reference: str | None) -> str:
    if summary is None:
        return f"| `configs/{name}.yaml` | | | not run yet | | | | | |"
    if summary.get("unfinished"):
        return unfinished_row(name, summary, reference)
    ev = summary["eval"]["return"]
    per_seed = ", ".join(f"{v:.1f}" for v in ev["per_seed"])
    steps = summary["final_train"]["env_steps"]["mean"]
    met = ""
    if target is not None:
        op, value = target
        ok = ev["mean"] >= value if op == ">=" else ev["mean"] <= value
        met = f"{op} {value:g}: {'met' if ok else 'missed'}"
    wall = _common.run_wall_time(summary)
    speed = summary.get("samples_per_s")
    speed_text = f"{speed:,.0f}" if speed else ""
    return (
        f"| `configs/{name}.yaml` | {summary['algo']} | {summary['env']} | {steps:,.0f} "
        f"| **{ev['mean']:.1f} ± {ev['std']:.1f}** ({per_seed}) | {met} | {reference or ''} "
        f"| {wall} | {speed_text} |"
    )


def figure(runs: Path, out: Path) -> Path:
    envs = ["CartPole-v1", "Pendulum-v1", "Breakout-MinAtar"]
    fig, axes = plt.subplots(1, len(envs), figsize=(5 * len(envs), 3.6))
    for ax, env in zip(axes, envs, strict=True):
        for i, (name, _, _) in enumerate(ROWS):
            summary = load(runs, name)
            if summary is None or summary["env"] != env or not summary["table"]["eval"].get("eval/return"):
                continue
            unfinished = bool(summary.get("unfinished"))
            label = name + (" (unfinished)" if unfinished else "")
            # A run that continues an earlier one is drawn under it.
            _common.draw_eval_returns(ax, summary["table"], f"C{i}", label, unfinished, zorder=len(ROWS) - i)
    return _common.save_curve_panels(
        fig, axes, envs, "env steps (per seed)", out / "figures" / "baselines.png"
    )


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=str(_ROOT / "runs"))
    parser.add_argument("--out", default=str(_ROOT / "docs"))
    args = parser.parse_args(argv)
    runs, out = Path(args.runs), Path(args.out)
    lines = [
        "| run (config) | method | env | env steps per seed | evaluation return, mean ± std (per seed) "
        "| target | published | wall time | steps/s |",
        "|---|---|---|---:|---|---|---|---:|---:|",
    ]
    lines += [row(name, load(runs, name), target, ref) for name, target, ref in ROWS]
    table = "\n".join(lines)
    out.mkdir(parents=True, exist_ok=True)
    (out / "baselines.md").write_text(HEADER + table + "\n")
    print(table)
    print(f"wrote {out / 'baselines.md'} and {figure(runs, out)}")
    return table


if __name__ == "__main__":
    main()

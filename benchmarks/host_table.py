"""The host environments' results (Chen & Agrawal 2020, sections 3.2 and 3.3): tables, figures, a GIF.

Each method is one config in ``configs/`` trained with
``python -m jaxmeta.train config=configs/NAME.yaml`` into ``runs/NAME``. This
script reads the runs that exist (live or archived records, see
``benchmarks/_common.py``) and the measurements in ``benchmarks/results/``
(``host_overhead.json`` from ``benchmarks/host_overhead.py``,
``procgen_expert.json`` from ``benchmarks/procgen_expert.py``) and writes:

* ``docs/host_envs.md``: for Miniworld and for CoinRun, per method, the
  held-out return of each episode of the 5-episode protocol (mean +- std over
  seeds), the total, the success rate, seeds and wall time, beside the
  references (Miniworld: Bayes-optimal searcher, memoryless optimum, the
  goal-knowing expert; CoinRun: the search expert that labels the data); the
  scale used next to the paper's; the callback overhead; the Procgen expert;
* ``docs/figures/{miniworld,coinrun}_episodes.png``: return per episode index
  (the paper's Fig. 4a/4b) and the held-out total during training;
* ``docs/figures/{miniworld,coinrun}_memory_trial.gif``: one held-out trial of
  the trained memory agent, as it saw the environment (copied from the run's
  plots).

    python benchmarks/host_table.py [--runs runs] [--out docs]
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # run as `python benchmarks/host_table.py`
    sys.path.insert(0, str(_ROOT))

from benchmarks import _common  # noqa: E402
from jaxmeta.plots import read_metrics, seed_curve  # noqa: E402

MINIWORLD = [
    ("memory_miniworld", "Memory"),
    ("memory_temporal_miniworld", "Memory + Temporal"),
    ("snail_miniworld", "SNAIL"),
    ("ppo_finetune_miniworld", "PPO finetune"),
]
COINRUN = [
    ("memory_coinrun", "Memory"),
    ("snail_coinrun", "SNAIL"),
]
EPISODES = 5
COINRUN_COIN = 10.0  # CoinRun's only reward: the coin at the end of the level
RESULTS = _ROOT / "benchmarks" / "results"


@dataclass(frozen=True)
class Section:
    """One environment's table, figure and GIF."""

    key: str  # file names: docs/figures/{key}_episodes.png, {key}_memory_trial.gif
    title: str
    methods: list[tuple[str, str]]  # (run and config name, label)
    references: Callable[[], dict[str, np.ndarray]]  # name -> expected return of each episode
    ylim: tuple[float, float]


def miniworld_references() -> dict[str, np.ndarray]:
    """The room's references (``miniworld_room.episode_references``) and the goal-knowing expert."""
    from envs_jax.host.miniworld_room import episode_references

    refs = episode_references(None, None, EPISODES, None)
    return {**{name: np.asarray(v) for name, v in refs.items()}, "goal-knowing expert": np.ones(EPISODES)}


def coinrun_references() -> dict[str, np.ndarray]:
    """The search expert that labels the training data, on held-out levels (its measured success rate
    times the coin), where ``benchmarks/procgen_expert.py`` has measured it."""
    path = RESULTS / "procgen_expert.json"
    if not path.exists():
        return {}
    expert = json.loads(path.read_text())["games"].get("coinrun", {}).get("expert", {}).get("test")
    if expert is None:
        return {}
    first, stop = expert["levels"]
    name = f"search expert (held-out levels {first}-{stop - 1})"
    return {name: np.full(EPISODES, COINRUN_COIN * expert["success_rate"])}


MINIWORLD_SECTION = Section("miniworld", "Miniworld room", MINIWORLD, miniworld_references, (-1.05, 1.05))
COINRUN_SECTION = Section("coinrun", "CoinRun", COINRUN, coinrun_references, (-0.2, COINRUN_COIN + 0.2))

HEADER = """# Host environments: the memory agent in Miniworld and Procgen

Written by `python benchmarks/host_table.py` from the run directories (`runs/`, or the run records in
`benchmarks/results/runs/`) and the measurements in `benchmarks/results/`. Chen & Agrawal (2020) test
the memory agent beyond Gridworld in a 3D Miniworld room (section 3.2, Fig. 4a) and on Procgen's
CoinRun, Climber and Ninja (section 3.3, Fig. 4b-d); the paper shows plots only, so there are no
published numbers to set beside ours. Both environments run on the host (Python) and are stepped from
inside jitted trials through `jax.experimental.io_callback` (`envs_jax/host/`). What the runs show
and why, written by hand: `docs/host_envs_notes.md`.

"""

MINIWORLD_TEXT = """## Miniworld: three boxes in a 4 m x 4 m room (paper section 3.2, Fig. 4a)

The room of the paper: three boxes of different colours, one goal (+1) and two traps (-1); which colour
is the goal varies between layouts and is never shown; actions forward 0.3 m, turn left or right
18 degrees; a first-person RGB view (`MiniworldThreeBoxes-v0`, `envs_jax/host/miniworld_room.py`).
Training labels come from the path-planning expert (`expert_action`: a distance field on a 10 cm grid
and the farthest waypoint in sight; it touches the goal from every one of 9,584 valid layouts, in 10.9
steps on average, at most 42). Evaluation: the paper's protocol on held-out layouts, 5 episodes of one
layout, the failure bank empty at the start and the last frame of each failed episode added to it.

**Scale.** Paper: its Gridworld settings are the only ones given (this repository's Fig. 2 configs: 1000
training tasks, trials of 80 steps, 32 trials per update, 800 updates) at Miniworld's 60 x 80 view; kept
as `configs/memory_miniworld_paper.yaml` for a GPU. Here (`configs/*_miniworld.yaml`): 30 x 40 views,
16 trials of 80 steps per update, up to 400 updates (0.5M frames per seed; the "runs" column says how
many a row's runs have had: a run stopped early with `num_updates=N` continues to 400 with the plain
command), 1000 training layouts, 100 held-out layouts, 3 seeds run one after another (the room steps
on the host at ~0.7 ms per env step on this CPU, OpenGL through EGL and Mesa's software rasteriser).

"""


def last_eval(run: dict[str, Any]) -> dict[str, Any] | None:
    """The run's per-episode return and success at its latest evaluation (mean +- std over the seeds
    evaluated there), with the update; None before the first evaluation."""
    rows = [line for line in run["lines"] if line["kind"] == "eval"]
    if not rows:
        return None
    update = max(row["update"] for row in rows)
    at = [row for row in rows if row["update"] == update]
    returns = np.array([row["eval/episode_return"] for row in at], np.float64)
    success = np.array([row["eval/episode_success"] for row in at], np.float64)
    totals = returns.sum(1)
    return {
        "update": update,
        "seeds": len(at),
        "mean": returns.mean(0),
        "std": returns.std(0),
        "total": (totals.mean(), totals.std()),
        "success": success.mean(0),
    }


def seed_count(n: int) -> str:
    return f"{n} seed{'s' if n != 1 else ''}"


def method_row(name: str, label: str, run: dict[str, Any] | None) -> str:
    """A table row: the finished run's final evaluation, or an unfinished run's latest, marked."""
    if run is None:
        return f"| {label} (`configs/{name}.yaml`) | not run yet |  |  |  |  |"
    ev = last_eval(run)
    if ev is None:
        return f"| {label} (`configs/{name}.yaml`) | no evaluation yet |  |  |  |  |"
    num_updates = run["config"].get("num_updates")
    spread = ev["seeds"] > 1  # one seed has no spread to show
    episodes = " / ".join(
        f"{m:+.2f} ± {s:.2f}" if spread else f"{m:+.2f}" for m, s in zip(ev["mean"], ev["std"], strict=True)
    )
    success = " / ".join(f"{100 * s:.0f}%" for s in ev["success"])
    total = f"**{ev['total'][0]:+.2f} ± {ev['total'][1]:.2f}**" if spread else f"**{ev['total'][0]:+.2f}**"
    seeds = seed_count(ev["seeds"])
    if run["summary"] is None:
        state = f"unfinished: update {ev['update']:,} of {num_updates:,}, {seeds}"
        wall = ""
    else:
        state = f"{seeds}, {num_updates:,} updates"
        wall = _common.run_wall_time(run["summary"])
    return f"| {label} (`configs/{name}.yaml`) | {episodes} | {total} | {success} | {state} | {wall} |"


def references_rows(section: Section) -> list[str]:
    rows = []
    for name, values in section.references().items():
        per = " / ".join(f"{v:+.2f}" for v in values)
        rows.append(f"| *{name}* | {per} | {float(np.sum(values)):+.2f} |  |  |  |")
    return rows


def method_table(section: Section, runs: Path, archive: Path) -> str:
    lines = [
        "| method (config) | return of episode 1 / 2 / 3 / 4 / 5, mean ± std over seeds | total "
        "| success rate per episode | runs | wall time |",
        "|---|---|---:|---|---|---|",
        *references_rows(section),
    ]
    for name, label in section.methods:
        lines.append(method_row(name, label, _common.load_run(runs, name, archive)))
    return "\n".join(lines)


def episode_figure(section: Section, runs: Path, out: Path, archive: Path) -> Path | None:
    """Return per episode index (the paper's Fig. 4) and the held-out total during training; None when
    no run of the section has been evaluated yet."""
    fig, (ax_ep, ax_curve) = plt.subplots(1, 2, figsize=(11, 4))
    x = np.arange(1, EPISODES + 1)
    drawn = False
    for i, (name, label) in enumerate(section.methods):
        run = _common.load_run(runs, name, archive)
        ev = None if run is None else last_eval(run)
        if ev is None:
            continue
        drawn = True
        unfinished = run["summary"] is None
        tag = f" (unfinished, update {ev['update']})" if unfinished else f" ({seed_count(ev['seeds'])})"
        style = "--" if unfinished else "-"
        ax_ep.plot(x, ev["mean"], style, color=f"C{i}", marker="o", label=label + tag)
        ax_ep.fill_between(x, ev["mean"] - ev["std"], ev["mean"] + ev["std"], color=f"C{i}", alpha=0.2, lw=0)
        series = read_metrics(run["dir"] / "metrics.jsonl")["eval"].get("eval/total_return")
        if series:
            updates, mean, std = seed_curve(series)
            ax_curve.plot(updates, mean, style, color=f"C{i}", label=label + tag)
            ax_curve.fill_between(updates, mean - std, mean + std, color=f"C{i}", alpha=0.2, lw=0)
    if not drawn:
        plt.close(fig)
        return None
    for (name, values), style in zip(section.references().items(), ["k--", "k:", "k-."], strict=False):
        ax_ep.plot(x, values, style, marker=".", label=name)
    ax_ep.set(xticks=x, ylim=section.ylim, xlabel="episode index (held-out tasks)")
    ax_ep.set_ylabel("average return")
    ax_ep.set_title(f"{section.title}: return per episode (paper Fig. 4)", fontsize=10)
    ax_curve.set(xlabel="update", ylabel="held-out return, 5 episodes")
    ax_curve.set_title(f"{section.title}: held-out total during training", fontsize=10)
    for ax in (ax_ep, ax_curve):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = out / "figures" / f"{section.key}_episodes.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def copy_gif(section: Section, runs: Path, out: Path) -> Path | None:
    """A finished memory agent's held-out trial GIF (written by its run) into ``docs/figures``: the
    section's last memory method that has one (Memory + Temporal before Memory)."""
    target = out / "figures" / f"{section.key}_memory_trial.gif"
    for name, _ in reversed(section.methods):
        gif = runs / name / "plots" / "held_out_trial.gif"
        if name.startswith("memory") and gif.exists() and (runs / name / "summary.json").exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(gif, target)
            return target
    return target if target.exists() else None


def overhead_section() -> str:
    path = RESULTS / "host_overhead.json"
    if not path.exists():
        return "## The callbacks' cost\n\nNot measured yet: `python benchmarks/host_overhead.py`.\n"
    data = json.loads(path.read_text())
    lines = [
        "## The callbacks' cost (issue target: the callback path <= 1.5x stepping the envs directly)",
        "",
        f"`{data['command']}`: {data['work']}. Medians of interleaved blocks.",
        "",
        "| environment | envs | direct, env steps/s | through the callbacks | ratio | direct, ms a step "
        "| the callbacks alone, ms a step | lowest reachable ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in data["results"]:
        rate = r["env_steps_per_s"]
        floor = "| |"  # measured before the floor was
        if "floor_ms_per_step" in r:
            floor = f"{r['direct_ms_per_step']:.2f} | {r['floor_ms_per_step']:.2f} "
            floor += f"| {r['lowest_reachable_ratio']:.2f}x"
        lines.append(
            f"| {r['env']} | {r['num_envs']} | {rate['direct']:,.0f} | {rate['callback']:,.0f} "
            f"| {r['ratio_callback_over_direct']:.2f}x | {floor} |"
        )
    lines += [
        "",
        '"The callbacks alone" is the same jitted scan through the same adapter over a batch that does no '
        "work (`IdleBatch`): what an ordered `io_callback` per step costs here whatever the env (XLA's "
        "host callback, the transfers, the adapter's bookkeeping). Added to the direct stepping it bounds "
        "the ratio from below: where one step of the whole batch takes less time than a callback, the "
        "1.5x target cannot be met by any adapter on this jaxlib and CPU, only by bigger batches.",
    ]
    return "\n".join(lines) + "\n"


PROCGEN_TEXT = """## Procgen: CoinRun, Ninja, Climber (paper section 3.3, Fig. 4b-d)

The paper trains on 200 levels and tests on 100 held-out ones (`Procgen-v0`: a task is a level seed,
training levels 0-199, held-out 200-299), cloning an expert it trained with PPO. A PPO expert costs
4-7 CPU-hours per game here, so the labels come from a search expert instead
(`envs_jax/host/procgen_expert.py`): at each state it restores the state into a scratch env, plays a
fixed set of candidate plans (one sub-env per plan, all stepped in one call), scores them by completion,
death and the progress read off the parsed procgen state, and returns the first action of the best.
It re-plans at every step, so it labels whatever state the learner reaches. One closed-loop episode
per level, easy mode:

"""


def procgen_section() -> str:
    """The Procgen expert's success rates beside simple policies."""
    path = RESULTS / "procgen_expert.json"
    text = PROCGEN_TEXT
    if not path.exists():
        text += "Not measured yet: `python benchmarks/procgen_expert.py`.\n"
    else:
        games = json.loads(path.read_text())["games"]
        text += (
            "| game (command) | levels | expert | mean length | ms / label | simulated steps / label "
            "| random | always RIGHT | RIGHT + 20% random jumps |\n"
            "|---|---|---:|---:|---:|---:|---:|---:|---:|\n"
        )
        for game, data in games.items():
            for split in ("train", "test"):
                expert = data["expert"][split]
                first, stop = expert["levels"]
                cells = [f"{100 * data[p][split]['success_rate']:.0f}%" for p in POLICIES]
                command = f"`{data['config']['command']}`" if split == "train" else ""
                rate = f"**{100 * expert['success_rate']:.0f}%**"
                text += (
                    f"| {game} {command} | {split} {first}-{stop - 1} | {rate} "
                    f"| {expert['mean_length']:.0f} | {expert['ms_per_label']:.0f} "
                    f"| {expert['simulated_steps_per_label']:.0f} | {' | '.join(cells)} |\n"
                )
        text += (
            "\nCoinRun's expert is the one the experiments use. Ninja's sample is small and levels 9, 15 and "
            "18 are known failures; Climber's plans do not yet find routes to its coins.\n"
        )
    return text


COINRUN_TEXT = """### The memory agent on CoinRun (paper Fig. 4b)

Trained by behaviour cloning on the search expert's labels of the states it visits, evaluated with the
5-episode protocol on the 100 held-out levels (episode return: 10 for the coin, else 0).

**Scale.** Paper: 200 training levels, its PPO expert, Procgen's 64 x 64 frames and 1000-step episodes
(`configs/memory_coinrun_paper.yaml`, for a GPU). Here (`configs/memory_coinrun.yaml`,
`configs/snail_coinrun.yaml`): the same 200 training and 100 held-out levels, 32 x 32 frames (block
averages), episodes cut at 100 steps (the expert needs 41-49), 8 trials of 64 steps per update, 100
updates (51k labelled frames per seed). The expert's labels are the cost of a run: ~25 s of the ~30-40 s
of an update on this CPU.

"""


def sections(runs: Path, out: Path, archive: Path) -> tuple[list[str], list[str], list[Path]]:
    """Per section (Miniworld, CoinRun): its markdown (intro, table, figure, GIF), its table, and the
    files written."""
    bodies, tables, files = [], [], []
    for section, intro in ((MINIWORLD_SECTION, MINIWORLD_TEXT), (COINRUN_SECTION, COINRUN_TEXT)):
        table = method_table(section, runs, archive)
        body = [intro, table, ""]
        figure = episode_figure(section, runs, out, archive)
        if figure is not None:
            body.append(f"![return per episode and during training](figures/{figure.name})\n")
            files.append(figure)
        gif = copy_gif(section, runs, out)
        if gif is not None:
            body.append(f"![a held-out trial of the memory agent](figures/{gif.name})\n")
            files.append(gif)
        bodies.append("\n".join(body))
        tables.append(table)
    return bodies, tables, files


POLICIES = ("random", "always_right", "right_random_jumps")


def main(argv: list[str] | None = None) -> str:
    parser = _common.run_table_parser(__doc__.splitlines()[0])
    args = parser.parse_args(argv)
    runs, out = Path(args.runs), Path(args.out)
    archive = Path(args.archive)
    (miniworld, coinrun), tables, files = sections(runs, out, archive)
    body = [HEADER, miniworld, overhead_section(), procgen_section(), coinrun]
    out.mkdir(parents=True, exist_ok=True)
    (out / "host_envs.md").write_text("\n".join(body))
    text = "\n\n".join(tables)
    print(text)
    print(f"wrote {out / 'host_envs.md'}, {', '.join(str(p) for p in files)}")
    return text


if __name__ == "__main__":
    main()

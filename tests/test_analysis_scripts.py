"""The scripts that read trained runs: the failure analysis and the paper's figures, table and GIF.

The analysis is checked against a plain-Python model of the protocol's
bookkeeping; both scripts then run end to end on a tiny trained memory agent.
"""

import json
import random
import shutil

import matplotlib.pyplot as plt
import numpy as np
import pytest
from helpers import TINY_MEMORY_AGENT, tiny_config

from benchmarks import failure_analysis, paper_figures
from jaxmeta import runner

GOAL, TRAP, TIMEOUT = failure_analysis.GOAL, failure_analysis.TRAP, failure_analysis.TIMEOUT


def _reference_trials(rng, num_tasks, num_episodes, num_blocks, capacity, size):
    """Random trials described in plain Python, and the arrays the protocol would leave behind."""
    cells = list(range(size * size))
    block_cells = np.array([rng.sample(cells, num_blocks) for _ in range(num_tasks)], np.int32)
    success = np.zeros((num_tasks, num_episodes), bool)
    failure_cells = np.zeros((num_tasks, capacity), np.int32)
    slot_valid = np.zeros((num_tasks, capacity), bool)
    expected = []  # per task, per episode: (outcome, block index or -1, repeated)
    for m in range(num_tasks):
        slot, hit_before, row = 0, set(), []
        for k in range(num_episodes):
            kind = rng.choice([GOAL, TRAP, TIMEOUT])
            if kind == GOAL:
                success[m, k] = True
                row.append((GOAL, -1, False))
                continue
            if kind == TRAP:
                b = rng.randrange(num_blocks)
                cell = int(block_cells[m, b])
                row.append((TRAP, b, b in hit_before))
                hit_before.add(b)
            else:  # the time limit: the agent stands on no block
                cell = rng.choice([c for c in cells if c not in block_cells[m]])
                row.append((TIMEOUT, -1, False))
            failure_cells[m, slot], slot_valid[m, slot] = cell, True
            slot += 1
        expected.append(row)
    return success, failure_cells, slot_valid, block_cells, expected


def test_classify_and_repeats_match_a_plain_python_model():
    rng = random.Random(0)
    success, failure_cells, slot_valid, block_cells, expected = _reference_trials(rng, 200, 5, 3, 8, 5)
    outcome, block = failure_analysis.classify(success, failure_cells, slot_valid, block_cells)
    repeated = failure_analysis.repeats(outcome, block)
    for m, row in enumerate(expected):
        got = zip(outcome[m], block[m], repeated[m], strict=True)
        assert [(int(o), int(b), bool(r)) for o, b, r in got] == row


def test_classify_refuses_banks_that_lost_failures():
    success = np.array([[False, False, False]])
    with pytest.raises(ValueError, match="one slot per failed episode"):
        failure_analysis.classify(
            success, np.zeros((1, 2), np.int32), np.ones((1, 2), bool), np.array([[0, 1]])
        )


def test_summarise_rates_and_layouts_by_hand():
    # Two tasks, three episodes, one seed. Task 0: trap b1, trap b1 again, goal. Task 1: goal, goal, timeout.
    outcome = np.array([[[TRAP, TRAP, GOAL], [GOAL, GOAL, TIMEOUT]]])
    block = np.array([[[1, 1, -1], [-1, -1, -1]]])
    # 4x4 grid; task 0: blocks at cells 0 (goal) and 5, start 15; task 1: blocks 3 (goal) and 12, start 0.
    features = failure_analysis.layout_features(
        np.array([[0, 5], [3, 12]]), np.array([0, 0]), np.array([15, 0]), 4
    )
    np.testing.assert_array_equal(features["closest_blocks"], [2, 6])
    np.testing.assert_array_equal(features["start_to_goal"], [6, 3])
    np.testing.assert_array_equal(features["start_to_nearest_trap"], [4, 3])
    result = failure_analysis.summarise(outcome, block, features)
    per = result["per_episode"]
    assert per["goal"] == [0.5, 0.5, 0.5] and per["trap"] == [0.5, 0.5, 0.0] and per["timeout"] == [0, 0, 0.5]
    assert per["repeated_trap"] == [0.0, 0.5, 0.0]
    assert per["repeat_given_known_trap"] == [None, 1.0, 0.0]
    assert result["repeat_given_known_trap_pooled"] == 0.5
    assert result["layouts"]["repeated_a_trap"] == {
        "trials": 1,
        "closest_blocks": 2.0,
        "start_to_goal": 6.0,
        "start_to_nearest_trap": 4.0,
    }
    assert result["layouts"]["hit_a_trap_never_repeated"]["trials"] == 0


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory):
    """A tiny memory agent trained into ``runs/memory_x2`` (the name the figures look for)."""
    runs = tmp_path_factory.mktemp("runs")
    cfg = tiny_config(
        "failure_replay",
        str(runs / "memory_x2"),
        4,
        "env.size=5",
        *TINY_MEMORY_AGENT,
        "eval.episodes=3",
        "algo.bank_capacity=4",
    )
    summary = runner.run(cfg, log=lambda *_: None)
    return runs, summary


def test_failure_analysis_replays_the_runs_own_evaluation(trained_runs, capsys):
    runs, summary = trained_runs
    out = runs / "analysis.json"
    result = failure_analysis.main([str(runs / "memory_x2"), "--out", str(out)])
    # Same checkpoint and keys as the run's final evaluation: the same successes, to the trial.
    np.testing.assert_allclose(result["per_episode"]["goal"], summary["eval"]["episode_success"]["mean"])
    per = result["per_episode"]
    np.testing.assert_allclose(np.sum([per["goal"], per["trap"], per["timeout"]], axis=0), 1.0)
    assert per["repeated_trap"][0] == 0.0  # nothing is known before the first episode
    assert json.loads(out.read_text())["update"] == 4
    assert "trap hit again" in capsys.readouterr().out


def test_failure_analysis_rejects_what_it_cannot_read(tmp_path):
    with pytest.raises(SystemExit, match="not a run directory"):
        failure_analysis.main([str(tmp_path)])


def test_paper_figures_table_and_gif_from_run_directories(trained_runs):
    runs, summary = trained_runs
    docs = runs / "docs"
    paper_figures.main(["--runs", str(runs), "--out", str(docs), "--gif", str(runs / "memory_x2")])
    for name in ("fig2_x2", "fig2_x3", "fig3a_length", "fig3b_length_curves", "fig3c_reset"):
        assert (docs / "figures" / f"{name}.png").stat().st_size > 1000
    assert (docs / "figures" / "memory_trial.gif").stat().st_size > 1000
    table = (docs / "results.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| `configs/memory_x2.yaml`"))
    total = sum(summary["eval"]["episode_return"]["mean"])
    assert f"| {total:.2f}±0.00 |" in row  # one seed: no spread
    assert "| `configs/snail_x3.yaml` | SNAIL | | not run yet |" in table


def test_paper_figures_draw_and_list_an_unfinished_run(trained_runs, tmp_path):
    runs, _ = trained_runs
    mine = tmp_path / "runs"
    # The trained run as if stopped before its end (no summary.json yet), under a Fig. 3c name.
    no_summary = shutil.ignore_patterns("summary.json")
    shutil.copytree(runs / "memory_x2", mine / "memory_x3_lh_same", ignore=no_summary)
    rows = [json.loads(line) for line in (runs / "memory_x2" / "metrics.jsonl").read_text().splitlines()]
    last = max(row["update"] for row in rows if row["kind"] == "eval")
    totals = [row["eval/total_return"] for row in rows if row["kind"] == "eval" and row["update"] == last]
    expected = f"{sum(totals) / len(totals):.2f}±0.00 (at update {last})"  # one seed: no spread

    table = paper_figures.results_table(mine)
    row = next(line for line in table.splitlines() if "memory_x3_lh_same" in line)
    assert f"unfinished: evaluated to update {last} of 4 | {expected}" in row
    assert "| `configs/memory_x3_nh_same.yaml` | NH_RESET_SAME | | not run yet |" in table

    fig, ax = plt.subplots()
    paper_figures.curves(ax, mine, paper_figures.FIG3_RESET, "reset")
    lines = {line.get_label(): line for line in ax.get_lines()}
    label = f"LH_RESET_SAME (unfinished: {last} of 4 updates)"
    assert list(lines) == [label]  # the only Fig. 3c run in this directory
    dashed = lines[label]
    assert dashed.get_linestyle() == "--"
    np.testing.assert_allclose(dashed.get_ydata()[-1], sum(totals) / len(totals), rtol=1e-6)
    plt.close(fig)

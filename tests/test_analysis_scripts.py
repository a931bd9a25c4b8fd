"""The scripts that read trained runs: the failure analysis and the paper's figures, table and GIF.

The analysis is checked against a plain-Python model of the protocol's
bookkeeping; the scripts then run end to end on a tiny trained memory agent,
and on a copy of it laid out as runs were written before the platform
refactor (issue 11): old config layout, a summary with
``optimal_episode_return`` and no ``references``. What such a run used (its
held-out tasks, its evaluation keys) was recorded from the code before the
refactor.
"""

import json
import random
import shutil

import jax
import matplotlib.pyplot as plt
import numpy as np
import pytest
import yaml
from helpers import TINY_MEMORY_RUN, tiny_config

import envs_jax
from benchmarks import _common, failure_analysis, gif, paper_figures
from envs_jax.gridworld import imitation_reference
from jaxmeta import config, runner

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


RUN_OVERRIDES = TINY_MEMORY_RUN
# Recorded from the code before the refactor (commit 92ceb45) for tiny_config(..., *RUN_OVERRIDES)
# (the learning rate and convolution set since change neither the tasks nor the keys):
# its held-out tasks and its evaluation keys at update 4.
LEGACY_TEST_BLOCKS = [[22, 1], [14, 24], [8, 17], [3, 1], [8, 20], [23, 18], [10, 12], [16, 6]]
LEGACY_TEST_STARTS = [5, 4, 21, 18, 10, 13, 18, 10]
LEGACY_TEST_GOALS = [1, 0, 0, 1, 1, 0, 0, 0]
LEGACY_EVAL_KEYS_AT_4 = [[3761307291, 484783190]]


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory):
    """A tiny memory agent trained into ``runs/memory_x2`` (the name the figures look for)."""
    runs = tmp_path_factory.mktemp("runs")
    cfg = tiny_config("failure_replay", str(runs / "memory_x2"), 4, *RUN_OVERRIDES)
    summary = runner.run(cfg, log=lambda *_: None)
    return runs, summary


def legacy_copy(run_dir, dest):
    """A copy of a run directory as the code before the refactor wrote it."""
    shutil.copytree(run_dir, dest)
    raw = yaml.safe_load((dest / "config.yaml").read_text())
    algo = dict(raw["algo"])
    old = {k: v for k, v in raw.items() if k not in ("algo", "eval_every")}
    old["trial"] = algo.pop("trial")
    old["eval"] = {"every": raw["eval_every"], **algo.pop("eval")}
    old["algo"] = algo
    assert config.migrate_legacy(old) == raw  # a faithful old layout
    (dest / "config.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    summary = json.loads((dest / "summary.json").read_text())
    for key in ("references", "report", "samples", "samples_per_s"):
        summary.pop(key, None)
    episodes = len(summary["eval"]["episode_return"]["mean"])
    x = raw["env"]["num_blocks"]
    summary.update(num_blocks=x, optimal_episode_return=envs_jax.optimal_returns(x, episodes).tolist())
    (dest / "summary.json").write_text(json.dumps(summary))
    return dest


def test_failure_analysis_replays_the_runs_own_evaluation(trained_runs, capsys):
    runs, summary = trained_runs
    out = runs / "analysis.json"
    result = failure_analysis.main([str(runs / "memory_x2"), "--out", str(out)])
    # Same checkpoint, tasks and keys as the run's final evaluation: the same successes, seed by seed.
    np.testing.assert_allclose(result["per_episode"]["goal"], summary["eval"]["episode_success"]["mean"])
    np.testing.assert_allclose(result["success_per_seed"], summary["eval"]["episode_success"]["per_seed"])
    per = result["per_episode"]
    np.testing.assert_allclose(np.sum([per["goal"], per["trap"], per["timeout"]], axis=0), 1.0)
    assert per["repeated_trap"][0] == 0.0  # nothing is known before the first episode
    assert json.loads(out.read_text())["update"] == 4
    assert not result["written_before_refactor"]
    assert "trap hit again" in capsys.readouterr().out


def test_failure_analysis_rejects_what_it_cannot_read(tmp_path):
    with pytest.raises(SystemExit, match="not a run directory"):
        failure_analysis.main([str(tmp_path)])


def test_restore_reads_a_run_written_before_the_refactor(trained_runs, tmp_path):
    runs, _ = trained_runs
    new = _common.restore_memory_run(runs / "memory_x2")
    old = _common.restore_memory_run(legacy_copy(runs / "memory_x2", tmp_path / "old"))
    assert old.legacy and not new.legacy and old.update == new.update == 4
    assert config.to_dict(old.cfg) == config.to_dict(new.cfg)  # the same settings, read from either layout
    jax.tree.map(np.testing.assert_array_equal, old.params, new.params)
    # The held-out tasks and evaluation keys the code before the refactor used, not today's.
    tasks = old.parts.setup.test_tasks
    np.testing.assert_array_equal(tasks.block_cells, LEGACY_TEST_BLOCKS)
    np.testing.assert_array_equal(tasks.agent_start, LEGACY_TEST_STARTS)
    np.testing.assert_array_equal(tasks.goal_index, LEGACY_TEST_GOALS)
    assert old.eval_keys().tolist() == LEGACY_EVAL_KEYS_AT_4
    assert not np.array_equal(new.parts.setup.test_tasks.block_cells, LEGACY_TEST_BLOCKS)
    assert new.eval_keys().tolist() == runner.eval_keys(new.cfg, 4).tolist() != LEGACY_EVAL_KEYS_AT_4
    assert old.parts.algo is None  # its functions would evaluate on today's tasks


def test_gif_trial_comes_from_evaluation_trials_with_the_banks_each_episode_read(trained_runs):
    runs, _ = trained_runs
    run, task, out = gif.held_out_trial(runs / "memory_x2", task_index=1)
    episodes = gif.trial_episodes(out)
    num_episodes, capacity = run.cfg.algo.eval.episodes, run.cfg.algo.bank_capacity
    assert len(episodes) == num_episodes == 3 and out.data.obs.shape[:2] == (3, 1)
    size, max_steps = run.cfg.env.size, int(run.parts.setup.params.max_steps_in_episode)
    cells = np.asarray(task.block_cells).tolist()
    goal = cells[int(task.goal_index)]
    failed_ends = []  # the final cell of each failed episode so far, oldest first
    for k, ep in enumerate(episodes):
        path = [int(c) for c in ep["agent_cells"]]
        assert path[0] == int(task.agent_start)
        rows, cols = np.divmod(np.array(path), size)
        assert (np.abs(np.diff(rows)) + np.abs(np.diff(cols)) <= 1).all()  # one move (or a wall) a frame
        assert ep["return"] == float(out.returns[k, 0])
        if ep["return"] == 1.0:
            assert path[-1] == goal
        elif ep["return"] == -1.0:
            assert path[-1] in cells and path[-1] != goal
        else:  # the time limit
            assert ep["return"] == 0.0 and len(path) == max_steps + 1 and path[-1] not in cells
        # The bank this episode read: one slot per earlier failure, its frame where that episode ended.
        valid = ep["bank_valid"].astype(bool)
        assert valid.sum() == min(len(failed_ends), capacity) and not valid[len(failed_ends) :].any()
        stored = [int(frame[..., 0].reshape(-1).argmax()) for frame in ep["bank_obs"][valid]]
        assert stored == failed_ends[-capacity:]
        if ep["return"] != 1.0:
            failed_ends.append(path[-1])


def test_paper_figures_table_and_gif_from_run_directories(trained_runs, tmp_path, monkeypatch):
    runs, summary = trained_runs
    mine = tmp_path / "runs"
    shutil.copytree(runs / "memory_x2", mine / "memory_x2")
    # A run written before the refactor, under another Fig. 2a name.
    legacy_copy(runs / "memory_x2", mine / "memory_temporal_x2")
    monkeypatch.setattr(paper_figures, "IMITATION_TASKS", 512)  # fresh tasks for the old run's reference
    docs = tmp_path / "docs"
    none = ["--archive", str(tmp_path / "archive"), "--recorded", str(tmp_path / "none.json")]
    paper_figures.main(["--runs", str(mine), "--out", str(docs), *none, "--gif", str(mine / "memory_x2")])
    for name in ("fig2_x2", "fig2_x3", "fig3a_length", "fig3b_length_curves", "fig3c_reset"):
        assert (docs / "figures" / f"{name}.png").stat().st_size > 1000
    assert (docs / "figures" / "memory_trial.gif").stat().st_size > 1000

    text = (docs / "results.md").read_text()
    assert text.startswith(paper_figures.RESULTS_HEADER)
    lines = text.splitlines()
    columns = lines.index(paper_figures.TABLE_COLUMNS)
    width = paper_figures.TABLE_COLUMNS.count("|")
    table = [line for line in lines[columns:] if line.startswith("|")]
    assert all(line.count("|") == width for line in table)  # every row has every column

    # The run of today: the optimum and expert imitation from its summary's references (its tasks).
    refs = summary["references"]
    row = next(line for line in table if line.startswith("| `configs/memory_x2.yaml`"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    total = sum(summary["eval"]["episode_return"]["mean"])
    optimum = sum(refs["Bayes-optimal"])
    assert cells[2] == "2"  # X, from its config.yaml
    assert cells[4] == f"{total:.2f}±0.00"  # one seed: no spread
    assert cells[5:8] == [
        f"{optimum:.2f}",
        f"{100 * total / optimum:.0f}%",
        f"{sum(refs['expert imitation']):.2f}",
    ]

    # The old run: optimum from optimal_episode_return, imitation simulated on fresh tasks (marked).
    env, params = envs_jax.make("Gridworld-v0", size=5, num_blocks=2, max_steps_in_episode=10)
    fresh = imitation_reference(env, params, jax.random.PRNGKey(0), num_tasks=512, num_episodes=3)
    row = next(line for line in table if line.startswith("| `configs/memory_temporal_x2.yaml`"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "2" and cells[5] == f"{sum(envs_jax.optimal_returns(2, 3)):.2f}"
    assert cells[7] == f"{fresh.sum():.2f}†"
    assert "† Simulated by `envs_jax.gridworld.imitation_reference` on 512 fresh tasks" in text

    # Reference rows for X=2, per episode: from the run that recorded its own (not the fresh one).
    bayes = next(line for line in table if line.startswith("| reference | Bayes-optimal | 2 |"))
    imitation = next(line for line in table if line.startswith("| reference | expert imitation | 2 |"))
    assert ", ".join(f"{v:.2f}" for v in refs["Bayes-optimal"]) in bayes
    assert ", ".join(f"{v:.2f}" for v in refs["expert imitation"]) in imitation
    assert "| `configs/snail_x3.yaml` | SNAIL | | not run yet |" in text
    assert not any(line.startswith("| reference") and "| 3 |" in line for line in table)  # no X=3 run

    # Fig. 2a: both runs, the Bayes optimum dashed and expert imitation dotted (the recorded one).
    fig, ax = plt.subplots()
    paper_figures.per_episode(ax, mine, paper_figures.FIG2[2], 2, "X=2", extra=paper_figures.EXTRA[2])
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {
        "Memory (1 seeds)",
        "Memory + Temporal (1 seeds)",
        "Bayes-optimal",
        "expert imitation",
    }
    assert lines["Bayes-optimal"].get_linestyle() == "--" and lines["expert imitation"].get_linestyle() == ":"
    np.testing.assert_allclose(lines["expert imitation"].get_ydata(), refs["expert imitation"])
    plt.close(fig)


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
    # X comes from the run's config.yaml (2 here), not from the config's name.
    assert f"| LH_RESET_SAME | 2 | unfinished: evaluated to update {last} of 4 | {expected} |" in row
    assert "| `configs/memory_x3_nh_same.yaml` | NH_RESET_SAME | | not run yet |" in table
    assert "| reference" not in table  # no finished run: no references to show

    fig, ax = plt.subplots()
    paper_figures.curves(ax, mine, paper_figures.FIG3_RESET, "reset")
    lines = {line.get_label(): line for line in ax.get_lines()}
    label = f"LH_RESET_SAME (unfinished: {last} of 4 updates)"
    assert list(lines) == [label]  # the only Fig. 3c run in this directory
    dashed = lines[label]
    assert dashed.get_linestyle() == "--"
    np.testing.assert_allclose(dashed.get_ydata()[-1], sum(totals) / len(totals), rtol=1e-6)
    plt.close(fig)


def test_paper_figures_archive_runs_and_list_the_rows_kept_for_lost_ones(trained_runs, tmp_path):
    runs, _ = trained_runs
    mine, archive = tmp_path / "runs", tmp_path / "archive"
    shutil.copytree(runs / "memory_x2", mine / "memory_x2")
    kept = {
        "num_blocks": 2,
        "episode_return": {"mean": [0.1, 0.5, 0.6, 0.7, 0.8], "std": [0.01, 0.02, 0.03, 0.04, 0.05]},
        "total": 2.704,
        "total_std": 0.12,
        "seeds": 3,
        "wall_time": "12.0 min",
        "env": {"id": "Gridworld-v0", "size": 5, "num_blocks": 2, "max_steps_in_episode": 10},
    }
    recorded = tmp_path / "recorded.json"
    recorded.write_text(json.dumps({"note": "test", "runs": {"snail_x2": kept, "memory_x3_L2": kept}}))
    sources = paper_figures.Sources(mine, archive, recorded)
    table = paper_figures.results_table(sources)
    # The finished run is archived; read again from the archive alone once its directory is gone.
    assert (archive / "memory_x2" / "summary.json").exists()
    shutil.rmtree(mine / "memory_x2")
    again = paper_figures.results_table(sources)
    row = next(line for line in table.splitlines() if line.startswith("| `configs/memory_x2.yaml`"))
    assert row in again.splitlines() and "‡" not in row
    # The kept row: its printed total and spread, marked, with a note under the table.
    row = next(line for line in table.splitlines() if line.startswith("| `configs/snail_x2.yaml`‡"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:5] == ["SNAIL", "2", "0.10±0.01, 0.50±0.02, 0.60±0.03, 0.70±0.04, 0.80±0.05", "2.70±0.12"]
    assert cells[5] == "4.00" and cells[6] == "68%" and cells[8:] == ["3", "12.0 min"]
    assert "‡ The run directory was lost" in table
    # A bare directory reads only that directory: no kept rows.
    assert "not run yet" in paper_figures.results_table(mine).split("snail_x2.yaml`")[1].splitlines()[0]
    # Fig. 2 draws the kept row; a learning-curve panel names the runs whose curves were not kept.
    fig, ax = plt.subplots()
    paper_figures.per_episode(ax, sources, paper_figures.FIG2[2], 2, "X=2")
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_allclose(lines["SNAIL (3 seeds)"].get_ydata(), kept["episode_return"]["mean"])
    plt.close(fig)
    fig, ax = plt.subplots()
    paper_figures.curves(ax, sources, paper_figures.FIG3_LENGTH, "L")
    assert not ax.get_lines() and any("curves not kept: L=2" in t.get_text() for t in ax.texts)
    plt.close(fig)


def test_results_header_counts_the_training_tasks_of_every_row():
    header = paper_figures.RESULTS_HEADER
    words = " ".join(header.split())
    assert "Every method trains on the same 1000 training tasks" not in words
    for text in ("(4000 for X=2, 6000 for X=3)", "(1000 → 1002 tasks)", "`algo.eval.greedy: false`"):
        assert text in words
    # docs/results.md carries the same header above its table.
    docs = (paper_figures.ROOT / "docs" / "results.md").read_text()
    assert docs.startswith(header)


def test_baselines_table_reads_finished_and_unfinished_runs(tmp_path):
    """Finished runs come from their summary; an unfinished one from its latest evaluation,
    marked as such; a run that never started says so. Values are typed in by hand here."""
    from benchmarks import baselines_table

    runs = tmp_path / "runs"

    def metrics(name, rows):
        (runs / name).mkdir(parents=True)
        (runs / name / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        (runs / name / "config.yaml").write_text(
            yaml.safe_dump({"env": {"id": "CartPole-v1"}, "algo": {"name": "dqn"}})
        )

    train = [{"kind": "train", "update": u, "seed": s, "env_steps": 32 * u} for u in (10, 20) for s in (0, 1)]
    evals = [
        {"kind": "eval", "update": 10, "seed": 0, "eval/return": 5.0},
        {"kind": "eval", "update": 10, "seed": 1, "eval/return": 7.0},
        {"kind": "eval", "update": 20, "seed": 0, "eval/return": 10.0},
        {"kind": "eval", "update": 20, "seed": 1, "eval/return": 20.0},
    ]
    metrics("dqn_cartpole", train + evals)
    (runs / "dqn_cartpole" / "summary.json").write_text(
        json.dumps(
            {
                "algo": "dqn",
                "env": "CartPole-v1",
                "eval": {"return": {"mean": 480.0, "std": 10.0, "per_seed": [470.0, 490.0]}},
                "final_train": {"env_steps": {"mean": 640.0}},
                "wall_time_s": 120.0,
                "compile_s": 4.0,
                "samples_per_s": 1000.0,
                "updates_run": 10,
                "num_updates": 20,
            }
        )
    )
    metrics("ppo_cartpole", train + evals)  # no summary: still training
    table = baselines_table.main(["--runs", str(runs), "--out", str(tmp_path / "docs")])
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    assert "**480.0 ± 10.0** (470.0, 490.0)" in rows["`configs/dqn_cartpole.yaml`"]
    assert ">= 475: met" in rows["`configs/dqn_cartpole.yaml`"]
    assert (
        "2.0 min (compile 4 s) for the last 10 of 20 updates (resumed)" in rows["`configs/dqn_cartpole.yaml`"]
    )
    unfinished = rows["`configs/ppo_cartpole.yaml`"]
    assert "640 (unfinished)" in unfinished and "15.0 ± 5.0 (10.0, 20.0), at update 20" in unfinished
    assert "met" not in unfinished  # no target judged on an unfinished run
    assert "not run yet" in rows["`configs/ppo_pendulum.yaml`"]
    assert (tmp_path / "docs" / "baselines.md").read_text().endswith(table + "\n")
    assert (tmp_path / "docs" / "figures" / "baselines.png").stat().st_size > 0


def test_episodic_table_reads_returns_at_the_lecture_frame_counts(tmp_path):
    """Cells come from the evaluation at exactly 100k/250k/500k/1M frames; a frame count a run has not
    reached is '-'; a run still training says so. Values are typed in by hand here."""
    from benchmarks import episodic_table

    runs = tmp_path / "runs"

    def run(name, evals, summary=None):
        (runs / name).mkdir(parents=True)
        rows = [
            {"kind": "train", "update": u, "seed": s, "env_steps": 50_000 * u}
            for u in range(1, 21)
            for s in (0, 1)
        ]
        rows += [
            {"kind": "eval", "update": u, "seed": s, "eval/return": value}
            for u, values in evals.items()
            for s, value in enumerate(values)
        ]
        (runs / name / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        (runs / name / "config.yaml").write_text(yaml.safe_dump({"env": {"id": "Breakout-MinAtar"}}))
        if summary:
            (runs / name / "summary.json").write_text(json.dumps(summary))

    finished = {"wall_time_s": 600.0, "compile_s": 9.0, "samples_per_s": 1234.0}
    run("ec_nec_breakout", {2: [1.0, 3.0], 5: [4.0, 6.0], 10: [7.0, 7.0], 20: [9.0, 11.0]}, finished)
    run("ec_dqn_breakout", {2: [0.0, 2.0], 3: [5.0, 5.0], 5: [2.0, 2.0]})  # training; no 1M yet
    # A run trained as single-seed parts (one per session): their seeds are merged.
    run("ec_nec_freeway_s0", {2: [4.0]}, finished)
    run("ec_nec_freeway_s1", {2: [6.0], 5: [1.0]}, finished)
    recorded = tmp_path / "recorded.json"  # a lost run: only its cells were kept
    cells = {"100000": [3.25, 0.5], "1000000": [8.0, 2.0]}
    entry = {"returns": cells, "wall_time": "5.0 min", "frames_per_s": 99}
    # A lost single-seed part (its returns at the frame counts) beside a live part of the same run.
    part = {"seed_returns": {"100000": 2.0, "250000": 5.0}, "frames_per_update": 50_000}
    part.update(wall_time_s=300.0, compile_s=3.0, samples_per_s=10.0)
    run("ec_dqn_asterix_s1", {2: [4.0], 5: [9.0], 20: [12.0]}, finished)
    recorded.write_text(json.dumps({"runs": {"ec_mfec_asterix": entry, "ec_dqn_asterix_s0": part}}))
    archive = tmp_path / "archive"
    argv = ["--runs", str(runs), "--out", str(tmp_path / "docs"), "--archive", str(archive)]
    text = episodic_table.main([*argv, "--recorded", str(recorded)])
    asterix = text.split("## Asterix-MinAtar")[1].split("## Freeway")[0]
    rows_a = {line.split("|")[1].strip(): line for line in asterix.splitlines() if line.startswith("| ")}
    assert rows_a["100,000"].split("|")[2:5] == [" - ", " 3.2 ± 0.5 ", " 3.0 ± 1.0 "]  # DQN: 2 and 4
    assert rows_a["250,000"].split("|")[2:5] == [" - ", " - ", " 7.0 ± 2.0 "]  # 5 and 9
    assert rows_a["1,000,000"].split("|")[2:5] == [" - ", " 8.0 ± 2.0 ", " 12.0 ± 0.0 "]  # the live part only
    assert "finished (run directory lost; cells as recorded) | 5.0 min | 99 |" in asterix
    assert "finished as 2 single-seed run(s) `ec_dqn_asterix_sI` (1 of them recorded" in asterix
    assert "| 15.0 min (compile 12 s) in all, one after another |" in asterix
    freeway = text.split("## Freeway-MinAtar")[1].split("## SpaceInvaders")[0]
    rows_f = {line.split("|")[1].strip(): line for line in freeway.splitlines() if line.startswith("| ")}
    assert rows_f["100,000"].split("|")[2] == " 5.0 ± 1.0 "
    assert rows_f["250,000"].split("|")[2] == " 1.0 ± 0.0 "  # only one part has got there
    assert "finished as 2 single-seed run(s)" in freeway and "20.0 min (compile 18 s) in all" in freeway
    # The live runs were archived: with runs/ gone, the table is the same.
    shutil.rmtree(runs)
    again = episodic_table.main([*argv, "--recorded", str(recorded)])
    assert again == text
    breakout = text.split("## Asterix-MinAtar")[0]
    rows = {line.split("|")[1].strip(): line for line in breakout.splitlines() if line.startswith("| ")}
    assert rows["100,000"].split("|")[2:5] == [" 2.0 ± 1.0 ", " - ", " 1.0 ± 1.0 "]
    assert rows["250,000"].split("|")[2:5] == [" 5.0 ± 1.0 ", " - ", " 2.0 ± 0.0 "]
    assert rows["1,000,000"].split("|")[2:5] == [" 10.0 ± 1.0 ", " - ", " - "]
    assert "| `configs/ec_nec_breakout.yaml` | finished | 10.0 min (compile 9 s) | 1,234 |" in breakout
    assert "training (last evaluation at update 5)" in breakout
    assert "| `configs/ec_mfec_breakout.yaml` | not run yet | | |" in breakout
    assert (tmp_path / "docs" / "figures" / "episodic.png").stat().st_size > 0


def test_sinusoid_table_shows_the_final_mse_after_each_number_of_steps(tmp_path):
    """Cells are the summary's mean +- std over seeds after J steps, typed in by hand here; a missing run
    says so; the published cell stands beside ours."""
    from benchmarks import sinusoid_table

    run = tmp_path / "runs" / "sinusoid_maml_k5"
    run.mkdir(parents=True)
    ev = {f"mse_after_{j}": {"mean": 3.0 / (j + 1), "std": 0.01 * j, "per_seed": []} for j in range(11)}
    summary = {"eval": ev, "wall_time_s": 120.0, "compile_s": 20.0}
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "metrics.jsonl").write_text(json.dumps({"kind": "eval", "update": 0, "seed": 0}) + "\n")
    argv = [
        "--runs",
        str(tmp_path / "runs"),
        "--out",
        str(tmp_path / "docs"),
        "--archive",
        str(tmp_path / "a"),
    ]
    text = sinusoid_table.main(argv)
    row = next(line for line in text.splitlines() if line.startswith("| 5 | MAML |"))
    assert row.split("|")[3:7] == [" 3.000 ± 0.000 ", " 1.500 ± 0.010 ", " 0.500 ± 0.050 ", " 0.273 ± 0.100 "]
    assert "1.13 ± 0.18" in row and "2.0 min (compile 20 s)" in row
    assert "| 20 | Reptile | - | - | - | - |  | not run yet |" in text
    assert (tmp_path / "a" / "sinusoid_maml_k5" / "summary.json").exists()
    assert (tmp_path / "docs" / "figures" / "sinusoid.png").stat().st_size > 0


@pytest.mark.slow  # the true-dynamics planner compiles for ~10 s
def test_grbal_table_puts_each_runs_final_returns_beside_the_references(tmp_path):
    from benchmarks import grbal_table

    run = tmp_path / "runs" / "grbal_pendulum"
    run.mkdir(parents=True)
    names = ("return", "return_no_adaptation", "return_changed", "return_changed_no_adaptation")
    ev = {name: {"mean": -100.0 - 10 * i, "std": float(i), "per_seed": []} for i, name in enumerate(names)}
    (run / "summary.json").write_text(json.dumps({"eval": ev, "wall_time_s": 60.0, "compile_s": 6.0}))
    (run / "metrics.jsonl").write_text(json.dumps({"kind": "eval", "update": 0, "seed": 0}) + "\n")
    recorded = tmp_path / "recorded.json"  # a run lost before records were kept: its cells only
    lost = {"eval": {name: {"mean": -200.0, "std": 1.0} for name in names}, "wall_time": "9.0 min"}
    recorded.write_text(json.dumps({"runs": {"grbal_pendulum_reversed": lost}}))
    argv = ["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "d"), "--archive", str(tmp_path / "a")]
    text = grbal_table.main([*argv, "--recorded", str(recorded), "--reference-tasks", "2"])
    assert "| meta-trained (GrBAL) | yes: GrBAL | -200.0 ± 1.0 | -200.0 ± 1.0 | 9.0 min (run lost" in text
    rows = [line for line in text.splitlines() if line.startswith("| meta-trained")]
    assert rows[0].split("|")[3:5] == [" -100.0 ± 0.0 ", " -120.0 ± 2.0 "]
    assert rows[1].split("|")[3:5] == [" -110.0 ± 1.0 ", " -130.0 ± 3.0 "]
    assert "| trained on all data | yes: naive fine-tuning | - | - | not run yet |" in text
    for variant in text.split("## ")[1:3]:  # per kind of change, its own references
        lines = variant.splitlines()
        oracle = next(line for line in lines if line.startswith("| true-dynamics MPC"))
        randomly = next(line for line in lines if line.startswith("| random actions"))
        assert float(oracle.split("|")[3]) > float(randomly.split("|")[3])  # the truth beats chance


def test_poet_table_reports_the_pairs_and_the_controls_on_the_hardest_solved_terrain(tmp_path):
    from benchmarks import poet_table

    poet = tmp_path / "runs" / "poet_walker"
    poet.mkdir(parents=True)
    train = [
        {
            "kind": "train",
            "update": u,
            "seed": 0,
            "annecs": float(u // 2),
            "active_pairs": 2.0,
            "archive": 3.0,
            "transfers_accepted": 1.0,
            "episodes": 100.0 * u,
            "terrain/solved_max_stump_high": 0.4,
        }
        for u in (1, 2, 3, 4)
    ]
    nan = float("nan")
    terrains = [[0.0] * 5, [1.0, 0.0, 0.4, 0.0, 0.8], [0.5, 0.2, 0.6, 0.4, 1.2], [nan] * 5]
    evaluation = {
        "kind": "eval",
        "update": 4,
        "seed": 0,
        "eval/pair_scores": [180.0, 160.0, 20.0, nan],
        "eval/pair_terrains": terrains,
    }
    (poet / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in [*train, evaluation]) + "\n")
    (poet / "summary.json").write_text(json.dumps({"eval": {}, "wall_time_s": 600.0, "compile_s": 40.0}))
    control = tmp_path / "runs" / "es_walker_scratch"
    control.mkdir()
    (control / "config.yaml").write_text(
        "env:\n  id: Walker-v0\n  roughness: 1.0\n  stump_high: 0.4\n  gap_high: 0.8\n"
    )
    ev = {
        "return": {"per_seed": [150.0, -40.0, -60.0]},
        "finished": {"mean": 0.25},
        "solved": {"per_seed": [1.0, 0.0, 0.0]},
    }
    (control / "summary.json").write_text(
        json.dumps({"eval": ev, "num_updates": 4, "wall_time_s": 60.0, "compile_s": 5.0})
    )
    (control / "metrics.jsonl").write_text(
        json.dumps({"kind": "eval", "update": 4, "seed": 0, "eval/return": 1.0}) + "\n"
    )
    argv = ["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "d"), "--archive", str(tmp_path / "a")]
    text = poet_table.main(argv)
    assert "ANNECS 2, 2 active pairs, 3 terrains admitted" in text
    # The hardest terrain solved (score >= 150) is the stumpy, gappy one, not the harder unsolved one.
    assert (
        "Hardest terrain solved at POET's last evaluation: roughness 1.0, stumps 0.0-0.4, gaps 0.0-0.8."
        in text
    )
    assert "| roughness 0.5, stumps 0.2-0.6, gaps 0.4-1.2 | 20.0 | no |" in text
    assert (
        "| OpenES from scratch | roughness 1.0, stumps 0.0-0.4, gaps 0.0-0.8 | 150, -40, -60 | 25% | 1 of 3 |"
        in text
    )
    assert "| OpenES, direct-path curriculum | - | not run yet |" in text
    assert (tmp_path / "d" / "figures" / "poet.png").stat().st_size > 0


def test_host_table_shows_each_episode_of_the_latest_evaluation_beside_the_references(tmp_path):
    """Per-episode returns, totals and success rates of the latest evaluation (mean +- std over the
    seeds evaluated there), finished or not; values typed in by hand."""
    from benchmarks import host_table

    runs = tmp_path / "runs"

    def run(name, evals, num_updates=400, summary=None):
        (runs / name).mkdir(parents=True)
        rows = [{"kind": "train", "update": u, "seed": s, "env_steps": 1280 * u} for u, s, _ in evals]
        rows += [
            {
                "kind": "eval",
                "update": u,
                "seed": s,
                "eval/episode_return": r,
                "eval/episode_success": [0.5] * 5,
            }
            for u, s, r in evals
        ]
        (runs / name / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        (runs / name / "config.yaml").write_text(yaml.safe_dump({"num_updates": num_updates}))
        if summary:
            (runs / name / "summary.json").write_text(json.dumps(summary))

    first = [-0.2, 0.0, 0.2, 0.4, 0.6]  # total 1.0
    second = [0.0, 0.2, 0.4, 0.6, 0.8]  # total 2.0
    run(
        "memory_miniworld",
        [(0, 0, [-1.0] * 5), (400, 0, first), (400, 1, second)],
        summary={"wall_time_s": 600.0, "compile_s": 20.0},
    )
    run("snail_miniworld", [(100, 0, first)])
    run("memory_coinrun", [(25, 0, [0.0, 10.0, 10.0, 0.0, 10.0])], num_updates=100)
    tables = host_table.main(
        ["--runs", str(runs), "--out", str(tmp_path / "docs"), "--archive", str(tmp_path / "a")]
    )
    table, coinrun = tables.split("\n\n")
    rows = {line.split("|")[1].strip(): line for line in tables.splitlines() if line.startswith("| ")}
    memory = rows["Memory (`configs/memory_miniworld.yaml`)"]
    assert "-0.10 ± 0.10 / +0.10 ± 0.10 / +0.30 ± 0.10 / +0.50 ± 0.10 / +0.70 ± 0.10" in memory
    assert "**+1.50 ± 0.50**" in memory and "50% / 50%" in memory and "2 seeds, 400 updates" in memory
    assert "10.0 min (compile 20 s)" in memory
    assert "unfinished: update 100 of 400, 1 seed |" in rows["SNAIL (`configs/snail_miniworld.yaml`)"]
    assert "not run yet" in rows["PPO finetune (`configs/ppo_finetune_miniworld.yaml`)"]
    # The three-box searcher: -1/3, +1/3, then the goal every time.
    assert "-0.33 / +0.33 / +1.00 / +1.00 / +1.00 | +3.00" in rows["*Bayes-optimal*"]
    coinrun_memory = rows["Memory (`configs/memory_coinrun.yaml`)"]
    assert "| +0.00 / +10.00 / +10.00 / +0.00 / +10.00 | **+30.00** |" in coinrun_memory
    assert "1 seed" in coinrun_memory and "unfinished: update 25 of 100" in coinrun_memory
    assert "not run yet" in rows["SNAIL (`configs/snail_coinrun.yaml`)"]
    # The search expert labelling CoinRun completes every held-out level it was measured on.
    expert = rows["*search expert (held-out levels 200-249)*"]
    assert "+10.00 / +10.00 / +10.00 / +10.00 / +10.00 | +50.00" in expert
    md = (tmp_path / "docs" / "host_envs.md").read_text()
    assert md.count(table) == 1 and md.count(coinrun) == 1 and md.index(table) < md.index(coinrun)
    for name in ("miniworld", "coinrun"):
        assert (tmp_path / "docs" / "figures" / f"{name}_episodes.png").stat().st_size > 0
        assert f"figures/{name}_episodes.png" in md
    assert (tmp_path / "a" / "memory_miniworld" / "metrics.jsonl").exists()  # records go to --archive

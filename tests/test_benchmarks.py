"""The benchmark scripts run end to end (smoke mode), and what they report is what they ran.

Each quick test checks the numbers a script reports against an independent
account of the work: env steps counted inside the timed calls against batch x
steps x repeats, rates recomputed from the recorded wall times, and the
failure banks' fill against a plain-Python count of the failed episodes in
the trials the benchmark ran.
"""

import json
import shutil
import statistics
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import _common, env_throughput, trial_throughput  # the repo root is on sys.path (conftest)


def test_compile_and_time_times_what_it_reports():
    calls = []
    timing = _common.compile_and_time(
        lambda x: x + 1,
        (np.float32(0),),
        repeats=3,
        args_for_repeat=lambda i: (np.float32(i),),
        on_result=lambda out, timed: calls.append((float(out), timed)),
    )
    # A warm-up (not timed, the fast first call), then 3 timed calls on inputs 1, 2, 3.
    assert calls == [(1.0, False), (2.0, True), (3.0, True), (4.0, True)]
    assert len(timing.run_s) == len(timing.cpu_s) == 3 and not timing.first_run_counted
    assert timing.median_s == statistics.median(timing.run_s) > 0
    assert timing.to_dict()["repeats_done"] == 3


def test_env_throughput_quick(tmp_path):
    out = tmp_path / "e.json"
    argv = ["--quick", "--batches", "8", "--envs", "gridworld,breakout", "--out", str(out)]
    report = env_throughput.main(argv)
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))  # the file is the report
    assert report["config"]["batches"] == [8] and report["config"]["steps"] == 20
    assert set(report["results"]) == {"gridworld", "breakout"}
    for name, per_batch in report["results"].items():
        assert set(per_batch) == {"8"}
        for batch, r in per_batch.items():
            steps = int(batch) * 20
            assert r["env_steps_per_call"] == steps
            assert r["repeats_done"] == len(r["run_s"]) == 2
            # Counted inside the timed calls' scans: every env of the batch stepped every step.
            assert r["env_steps_timed"] == steps * r["repeats_done"], (name, batch)
            assert r["median_s"] == pytest.approx(statistics.median(r["run_s"]))
            assert r["steps_per_s"] == pytest.approx(steps / statistics.median(r["run_s"]))
            assert r["steps_per_s"] > 0 and r["compile_s"] > 0
    for batch, ratio in report["ratios"]["gridworld/breakout"].items():
        grid, breakout = report["results"]["gridworld"][batch], report["results"]["breakout"][batch]
        assert ratio == pytest.approx(grid["steps_per_s"] / breakout["steps_per_s"])
    target = report["targets"]["gridworld/breakout"]
    assert target["batch"] == 8 and target["measured"] == report["ratios"]["gridworld/breakout"]["8"]
    assert target["met"] == (target["measured"] >= 1.0)


def _python_bank_fill(records, num_tasks, capacity, max_episodes):
    """The episodes the banks hold after these calls, counted in plain Python from each step's record:
    an episode that ended inside its trial without success (within the first ``max_episodes``
    slots, the ones cut for the bank) is a failure of the task it ran on; a bank keeps the newest
    ``capacity``."""
    failures = Counter()
    for record in records:
        task_id, done, success, episode = (
            np.asarray(record[k]) for k in ("task_id", "done", "success", "episode_index")
        )
        for b in range(task_id.shape[0]):
            reached_goal = False
            for t in range(task_id.shape[1]):
                reached_goal |= bool(success[b, t])
                if done[b, t]:
                    if not reached_goal and episode[b, t] < max_episodes:
                        failures[int(task_id[b, t])] += 1
                    reached_goal = False
    assert set(failures) <= set(range(num_tasks))
    return sum(min(capacity, n) for n in failures.values()), failures


def test_trial_throughput_quick():
    records = {}
    report = trial_throughput.main(["--quick"], records=records)
    batch, steps, repeats = report["batch"], report["trial_steps"], 2
    assert (batch, steps, report["num_tasks"]) == (8, 80, 20)
    results = report["results"]
    for label in ("with_bank", "without_bank"):
        r = results[label]
        assert len(r["run_s"]) == repeats and len(records[label]) == repeats + 1  # warm-up + timed
        assert r["env_steps_timed"] == batch * steps * repeats
        assert r["trials_per_s"] == pytest.approx(batch / statistics.median(r["run_s"]))
        assert r["env_steps_per_s"] == pytest.approx(r["trials_per_s"] * steps) and r["trials_per_s"] > 0
        # Episodes per trial of the timed calls, counted from the episode index of their last steps.
        timed = records[label][1:]
        episodes = sum(int((np.asarray(rec["episode_index"])[:, -1] + 1).sum()) for rec in timed)
        assert r["episodes_per_trial"] == pytest.approx(episodes / (repeats * batch))
    assert results["without_bank"]["bank_episodes_held"] is None
    # The banks were threaded through the warm-up and the timed calls: they hold what those failed.
    held, failures = _python_bank_fill(
        records["with_bank"], report["num_tasks"], report["bank_capacity"], report["max_episodes"]
    )
    assert results["with_bank"]["bank_episodes_held"] == held > 0
    assert max(failures.values()) > 1  # some task failed more than once: the count is not trivial
    ratio = results["with_bank"]["trials_per_s"] / results["without_bank"]["trials_per_s"]
    assert report["with_over_without"] == pytest.approx(ratio)
    # The two variants ran the same trials (same keys; the bank read does not change the actions).
    for with_bank, without in zip(records["with_bank"], records["without_bank"], strict=True):
        for key in with_bank:
            np.testing.assert_array_equal(with_bank[key], without[key])


@pytest.mark.slow
def test_env_throughput_targets():
    """The issue's targets at batch 8192, as ratios measured in one run (minutes)."""
    report = env_throughput.main(["--batches", "8192", "--repeats", "3", "--out", "/dev/null"])
    assert report["targets"]["gridworld/breakout"]["measured"] >= 1.0
    if "gridworld/xminigrid" in report["targets"]:
        assert report["targets"]["gridworld/xminigrid"]["measured"] >= 10.0


def test_torch_reference_quick_sizes_are_valid_overrides():
    """The PyTorch side needs torch (not a dependency); its JAX side reads the config of today."""
    from benchmarks import torch_reference
    from jaxmeta import config

    quick = config.load(torch_reference.DEFAULT_CONFIG, list(torch_reference.QUICK_OVERRIDES))
    trial = quick.algo.trial
    assert (trial.batch_size, trial.num_steps, quick.algo.num_train_tasks) == (4, 10, 20)


@pytest.mark.slow
def test_torch_reference_jax_side_times_the_updates_it_reports():
    """Slow only for the compile of the memory agent's update (about 30 s on 2 loaded cores)."""
    from helpers import TINY_MEMORY_AGENT, tiny_config

    from benchmarks import torch_reference
    from jaxmeta.algos import failure_replay

    cfg = tiny_config("failure_replay", "/tmp/unused", 4, *TINY_MEMORY_AGENT)
    parts = failure_replay.make_parts(cfg)
    ours = torch_reference.time_ours(parts, updates=2, warmup=1)
    assert len(ours["run_s"]) == 2 and len(ours["warmup_s"]) == 1
    assert ours["median_s"] == pytest.approx(statistics.median(ours["run_s"]))
    # Three updates ran (one warm-up, two timed): the agent's own count of env steps says so.
    trial = cfg.algo.trial
    assert ours["last_metrics"]["env_steps"] == 3 * trial.batch_size * trial.num_steps
    params = jax.eval_shape(parts.algo.init, jax.random.PRNGKey(0)).params
    assert ours["param_count"] == sum(x.size for x in jax.tree.leaves(params))


@pytest.mark.slow  # compiles PPO and DQN on both sides: ~20 s of the CI budget for a smoke test
def test_rejax_speed_quick_times_the_same_work_on_both_sides():
    from benchmarks import rejax_speed

    report = rejax_speed.main(["--quick", "--steps", "2048"])
    for name in ("ppo", "dqn"):
        result = report["results"][name]
        ours, theirs = result["jaxmeta"], result["rejax"]
        assert ours["env_steps"] == theirs["env_steps"] > 0  # the same number of env steps trained
        for side in (ours, theirs):
            assert side["median_s"] == sorted(side["run_s"])[len(side["run_s"]) // 2]
            assert (
                abs(side["env_steps_per_s"] - side["env_steps"] / side["median_s"]) < 1e-6 * side["env_steps"]
            )
        ratio = ours["env_steps_per_s"] / theirs["env_steps_per_s"]
        assert abs(result["ours_over_rejax"] - ratio) < 1e-9


def test_dnd_lookup_quick_finds_faiss_neighbours_and_reports_its_blocks(tmp_path):
    """Skipped without faiss (the bench extra). The search's neighbours are faiss's, and every rate is
    the batch over the median of the blocks it recorded."""
    pytest.importorskip("faiss")
    from benchmarks import dnd_lookup

    report = dnd_lookup.main(["--quick", "--cases", "30000x4,2000x1", "--out", str(tmp_path / "d.json")])
    for case in report["results"]:
        assert case["correctness"]["not_explained_by_ties"] == 0
        for name in ("faiss_blas", "faiss_default", "jax_top_k", "dnd_search", "dnd_lookup"):
            timing = case[name]
            assert timing["queries_per_s"] == pytest.approx(
                case["batch"] / statistics.median(timing["block_s_per_call"])
            )
    assert json.loads((tmp_path / "d.json").read_text())["results"][0]["keys"] == 30000


@pytest.mark.slow
def test_episodic_speed_quick_counts_the_frames_of_its_blocks(tmp_path):
    from benchmarks import episodic_speed

    report = episodic_speed.main(["--quick", "--seeds", "2", "--out", str(tmp_path / "s.json")])
    for method in ("nec", "mfec", "dqn"):
        r = report["results"][method]
        per_update = 16 * 2  # 16 frames per update in every ec_ config, 2 seeds
        assert r["frames_per_block"] == per_update * report["updates_per_block"]
        assert r["frames_per_s"] == pytest.approx(r["frames_per_block"] / statistics.median(r["block_s"]))


def test_bandit_table_quick_reports_what_it_measured(tmp_path):
    from benchmarks import bandit_table

    out, doc = tmp_path / "b.json", tmp_path / "b.md"
    elsewhere = ["--runs", str(tmp_path / "runs"), "--archive", str(tmp_path / "archive")]
    report = bandit_table.main(
        ["--quick", "--policies", "random,ucb1,greedy", "--out", str(out), "--doc", str(doc), *elsewhere]
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    (entry,) = report["settings"]
    n, k, cells = entry["n"], entry["k"], entry["cells"]
    assert set(cells) == {"random", "ucb1", "greedy"}
    random_cell = cells["random"]
    # Random play earns n x E[p] = n / 2 in expectation: within 4 standard errors.
    assert abs(random_cell["mean"] - n / 2) < 4 * random_cell["stderr"] + 1e-9
    tuned = cells["ucb1"]["tuned"]
    assert tuned["value"] == tuned["grid"][int(np.argmax(tuned["tune_means"]))]
    assert cells["greedy"]["tuned"] == {}
    text = doc.read_text()
    row = next(line for line in text.splitlines() if line.startswith(f"| {n}, {k} |"))
    for name in ("random", "ucb1", "greedy"):
        assert f"{cells[name]['mean']:.1f}" in row
    assert "not run" in row and "not trained" in row  # the columns it did not measure say so


@pytest.mark.slow  # three programs to compile for a smoke test: ~10 s of the CI budget
def test_rl2_speed_quick_counts_the_pulls_it_times(tmp_path):
    from benchmarks import rl2_speed

    report = rl2_speed.main(["--quick", "--out", str(tmp_path / "r.json")])
    for name in ("rl2", "random"):
        r = report["results"][name]
        assert r["pulls_per_call"] == 32 * 10
        assert r["pulls_timed"] == r["pulls_per_call"] * r["repeats_done"]  # counted inside the calls
        assert r["steps_per_s"] == pytest.approx(r["pulls_per_call"] / statistics.median(r["run_s"]))
    ratio = report["results"]["random"]["steps_per_s"] / report["results"]["rl2"]["steps_per_s"]
    assert report["ratio_random_over_rl2"] == pytest.approx(ratio)


def test_dnd_probe_counts_the_neighbours_the_kernel_averages():
    from benchmarks import dnd_probe

    # A query among 4 other keys: at equal distances the kernel is flat (4 effective neighbours); with
    # one key very near and the rest far (and delta tiny), the nearest takes all the weight (~1).
    query = np.zeros((1, 2))
    flat = np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    stats = dnd_probe.probe_table(flat, np.arange(5.0), query, k=4, delta=1e-3)
    assert stats["effective_neighbours_median"] == pytest.approx(4.0)
    assert stats["nearest_sq_distance_median"] == pytest.approx(1.0)
    assert stats["neighbour_value_std_mean"] == pytest.approx(np.std([1.0, 2.0, 3.0, 4.0]))
    peaked = np.array([[0.0, 0.0], [0.001, 0.0], [10.0, 0.0], [0.0, 10.0], [-10.0, 0.0]])
    stats = dnd_probe.probe_table(peaked, np.zeros(5), query, k=4, delta=1e-9)
    assert stats["effective_neighbours_median"] == pytest.approx(1.0, abs=1e-3)
    assert stats["kth_sq_distance_median"] == pytest.approx(100.0)


def test_dnd_probe_greedy_actions_match_a_python_loop():
    from benchmarks import dnd_probe

    def reference(tables, queries, k, delta):
        estimates = []
        for query in queries:
            row = []
            for keys, values in tables:
                pairs = sorted(
                    (sum((a - b) ** 2 for a, b in zip(query, key, strict=True)), i)
                    for i, key in enumerate(keys)
                    if list(key) != list(query)
                )[:k]
                weights = [1.0 / (d + delta) for d, _ in pairs]
                weighted = sum(w * values[i] for w, (_, i) in zip(weights, pairs, strict=True))
                row.append(weighted / sum(weights))
            estimates.append(row)
        return estimates

    rng = np.random.default_rng(3)
    tables = [(rng.normal(size=(12, 3)), rng.normal(size=12)) for _ in range(3)]
    queries = np.concatenate([tables[0][0][:4], tables[2][0][:3], rng.normal(size=(5, 3))])
    taken = np.array([0] * 4 + [2] * 3 + [1] * 5)
    got = dnd_probe.greedy_actions(tables, queries, taken, k=4, delta=1e-2)
    estimates = np.array(reference(tables, queries, 4, 1e-2))
    expected = np.bincount(estimates.argmax(1), minlength=3) / len(queries)
    assert got["greedy_action_shares"] == pytest.approx(expected.tolist())
    assert got["greedy_is_taken"] == pytest.approx((estimates.argmax(1) == taken).mean())
    ranked = np.sort(estimates, 1)
    assert got["best_minus_second_median"] == pytest.approx(np.median(ranked[:, -1] - ranked[:, -2]))
    # Two clusters of states, action 0 worth 1 near the origin and action 1 worth 1 far away: a
    # state-dependent policy, each action greedy in half the states, the estimates 1 apart.
    near, far = rng.normal(scale=0.01, size=(6, 2)), 10.0 + rng.normal(scale=0.01, size=(6, 2))
    keys = np.concatenate([near, far])
    tables = [(keys, np.repeat([1.0, 0.0], 6)), (keys, np.repeat([0.0, 1.0], 6))]
    got = dnd_probe.greedy_actions(tables, keys, np.zeros(12, int), k=3, delta=1e-3)
    assert got["greedy_action_shares"] == pytest.approx([0.5, 0.5])
    assert got["greedy_is_taken"] == pytest.approx(0.5)
    assert got["best_minus_second_median"] == pytest.approx(1.0)


def _fake_run(path, updates, eval_every, summary=None):
    """A run directory with one train line per seed and update, and eval lines every ``eval_every``."""
    path.mkdir(parents=True)
    rows = []
    for update in range(1, updates + 1):
        for seed in range(2):
            rows.append(
                {"kind": "train", "update": update, "seed": seed, "env_steps": 10 * update, "loss": 0.5}
            )
            if update % eval_every == 0:
                rows.append(
                    {"kind": "eval", "update": update, "seed": seed, "eval/return": float(update + seed)}
                )
    (path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (path / "config.yaml").write_text("name: x\n")
    if summary is not None:
        (path / "summary.json").write_text(json.dumps(summary))
    return rows


def test_archive_run_keeps_evaluations_and_their_step_counts_under_the_size_cap(tmp_path, monkeypatch):
    from benchmarks import _common
    from jaxmeta.plots import read_metrics, samples_at

    rows = _fake_run(tmp_path / "runs" / "r", updates=400, eval_every=50, summary={"wall_time_s": 1.0})
    monkeypatch.setattr(_common, "ARCHIVE_MAX_BYTES", 20_000)
    archive = tmp_path / "archive"
    out = _common.archive_run(tmp_path / "runs" / "r", archive)
    text = (out / "metrics.jsonl").read_text()
    assert len(text) <= 20_000
    kept = [json.loads(line) for line in text.splitlines()]
    evals = [(r["update"], r["seed"]) for r in rows if r["kind"] == "eval"]
    assert [(r["update"], r["seed"]) for r in kept if r["kind"] == "eval"] == evals
    table = read_metrics(out / "metrics.jsonl")
    updates = np.arange(50, 401, 50)
    np.testing.assert_array_equal(samples_at(table, "env_steps", updates), 10 * updates)
    # Thinned, but not more than needed: the kept training updates are evenly spaced.
    train = sorted({r["update"] for r in kept if r["kind"] == "train"} - set(updates.tolist()))
    assert 10 < len(train) < 400 - len(updates)
    assert json.loads((out / "summary.json").read_text()) == {"wall_time_s": 1.0}


def test_find_run_prefers_the_live_run_unless_only_the_record_finished(tmp_path):
    from benchmarks import _common

    runs, archive = tmp_path / "runs", tmp_path / "archive"
    assert _common.find_run(runs, "r", archive) is None
    _fake_run(runs / "r", updates=20, eval_every=10, summary={"wall_time_s": 1.0})
    assert _common.find_run(runs, "r", archive) == runs / "r"
    _common.archive_run(runs / "r", archive)
    shutil.rmtree(runs / "r")  # the machine lost runs/: the record serves
    assert _common.find_run(runs, "r", archive) == archive / "r"
    _fake_run(runs / "r", updates=5, eval_every=10)  # restarted, unfinished
    assert _common.find_run(runs, "r", archive) == archive / "r"
    assert _common.archive_run(runs / "r", archive) is None
    assert (archive / "r" / "summary.json").exists()


@pytest.mark.slow  # PyTorch's first calls and two compilations: ~20 s
def test_maml_speed_quick_reports_rates_from_its_timed_blocks(tmp_path):
    pytest.importorskip("torch", reason="the bench extra (torch==2.13.0) is not installed")
    from benchmarks import maml_speed

    report = maml_speed.main(["--quick", "--out", str(tmp_path / "m.json")])
    for name, times in report["seconds_per_iteration"].items():
        assert report["meta_iterations_per_s"][name] == pytest.approx(1 / statistics.median(times))
    scan = next(name for name in report["meta_iterations_per_s"] if "scan" in name)
    rates = report["meta_iterations_per_s"]
    assert report["ratios"][f"{scan} / torch.func"] == pytest.approx(rates[scan] / rates["torch.func"])
    assert json.loads((tmp_path / "m.json").read_text())["ratios"] == report["ratios"]


@pytest.mark.slow  # six programs to compile: ~25 s
def test_es_speed_quick_reports_rates_from_its_timed_blocks(tmp_path):
    pytest.importorskip("evosax", reason="the bench extra (evosax) is not installed")
    from benchmarks import es_speed

    report = es_speed.main(["--quick", "--out", str(tmp_path / "e.json")])
    rates = report["generations_per_s"]
    for name, times in report["seconds_per_generation"].items():
        assert rates[name] == pytest.approx(1 / statistics.median(times))
    scan = next(kind for kind in report["ratios_ours_over_evosax"] if "scan" in kind)
    assert report["ratios_ours_over_evosax"][scan] == pytest.approx(
        rates[f"ours, {scan}"] / rates[f"evosax, {scan}"]
    )
    assert report["env_steps_per_s"][f"ours, {scan}"] == pytest.approx(rates[f"ours, {scan}"] * 16 * 20)


def test_rl2_cells_merge_single_seed_runs(tmp_path):
    """An RL^2 setting trained one seed per run: the seeds of its parts are pooled, the costs summed."""
    from benchmarks import bandit_table

    def part(name, per_seed, wall):
        run = tmp_path / "runs" / name
        run.mkdir(parents=True)
        per_pull = [[t / 10] * 10 for t in per_seed]  # n = 10 pulls, one an episode
        evaluation = {"total_return": {"per_seed": per_seed}, "episode_return": {"per_seed": per_pull}}
        summary = {"eval": evaluation, "wall_time_s": wall, "compile_s": 1.0}
        (run / "summary.json").write_text(json.dumps(summary))
        (run / "metrics.jsonl").write_text(json.dumps({"kind": "eval", "update": 0, "seed": 0}) + "\n")

    part("rl2_bandit_n10_k5_s0", [6.0], 100.0)
    part("rl2_bandit_n10_k5_s2", [7.0], 50.0)
    cell = bandit_table.rl2_cells(tmp_path / "runs", 10, 5, tmp_path / "archive")
    assert cell["per_seed"] == [6.0, 7.0] and cell["mean"] == 6.5 and cell["std_over_seeds"] == 0.5
    assert cell["wall_time_s"] == 150.0 and cell["runs"] == 2
    assert cell["per_pull"] == pytest.approx([0.65] * 10)  # pooled over the seeds of both parts
    assert (tmp_path / "archive" / "rl2_bandit_n10_k5_s2" / "summary.json").exists()
    assert bandit_table.rl2_cells(tmp_path / "runs", 10, 10, tmp_path / "archive") is None


def test_bandit_behaviour_counts_arms_by_hand():
    from benchmarks import bandit_behaviour
    from jaxmeta import bandits

    probs = np.array([[0.2, 0.9, 0.5], [0.8, 0.1, 0.3]])
    # 10 pulls each: task 0 tries arms 0, 2, then settles on 2 (never its best, arm 1); task 1 tries 1,
    # then 0 (its best) and stays there.
    arms = np.array([[0, 2, 2, 2, 2, 2, 2, 2, 2, 2], [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]])
    # Task 0's arm 2 pays only at pulls 3-8, so before its last pull arm 2 looks best (6 of 8: 0.7) and
    # arm 0 (0 of 1: 1/3) does not; task 1's arm 0 never pays: before the last pull it has 0 of 8 (0.1)
    # against arm 1's 0 of 1 (1/3), so its last pull is not on the arm that looks best.
    rewards = np.zeros((2, 10))
    rewards[0, 2:8] = 1.0
    r = bandit_behaviour.behaviour(arms, rewards, probs, (1, 2, 10))
    assert r["arms_tried_by"] == {1: 1.0, 2: 2.0, 10: 2.0}
    assert r["own_best_late"] == 0.5
    assert r["best_arm_found"] == 0.5 and r["best_arm_late"] == 0.5  # the last pull of each task
    assert r["mean_reward"] == pytest.approx((0.2 + 9 * 0.5 + 0.1 + 9 * 0.8) / 20)
    # The classic policies' arms, kept: with play's rewards (the same key, so the same draws), each arm is
    # what a plain-numpy greedy on the Beta(1, 1) posterior means picks (ties to the lowest arm).
    key, task_probs = jax.random.PRNGKey(3), jnp.asarray(probs, jnp.float32)
    chosen, kept = bandit_behaviour.classic_arms(bandits.greedy, None, task_probs, 10, key)
    rewards = np.asarray(bandits.play(bandits.greedy, None, task_probs, 10, key))
    np.testing.assert_array_equal(kept, rewards)
    for task in range(2):
        successes, failures = np.zeros(3), np.zeros(3)
        for t in range(10):
            assert chosen[task, t] == np.argmax((successes + 1) / (successes + failures + 2))
            successes[chosen[task, t]] += rewards[task, t]
            failures[chosen[task, t]] += 1 - rewards[task, t]


def test_bandit_trial_profile_splits_trials_into_tenths():
    from benchmarks import bandit_table

    rising = np.arange(20) / 20  # a policy that earns more with every pull
    assert bandit_table.parts_of_trial(rising) == pytest.approx([(2 * i + 0.5) / 20 for i in range(10)])
    assert bandit_table.parts_of_trial(np.ones(15)) is None  # 15 pulls do not split into tenths
    cells = {
        "rl2": {"per_pull": rising.tolist()},
        "greedy": {"tuned": {}},
        "ucb1": {"tuned": {"value": 0.2}},
        "gittins": {"tuned": {"value": 0.9}},
    }
    profile = bandit_table.trial_profile(20, 3, cells)
    assert profile["rl2"] == bandit_table.parts_of_trial(rising)
    for name in ("greedy", "ucb1", "gittins"):
        tenths = np.asarray(profile[name])
        assert tenths.shape == (10,) and ((tenths >= 0) & (tenths <= 1)).all()
    # Greedy on the Beta(1, 1) posterior, first tenth = pulls 1-2: arm 0 (E[p] = 1/2), then arm 0 again
    # after a success (E[p | success] = 2/3) or arm 1 after a failure (1/2): (1/2 + 7/12) / 2 = 13/24.
    # 2000 tasks: a standard error of ~0.009.
    assert abs(profile["greedy"][0] - 13 / 24) < 0.035


@pytest.mark.slow  # compiles six POET iterations (~1 min here)
def test_poet_speed_quick_reports_a_time_for_each_kind_of_iteration():
    from benchmarks import poet_speed

    report = poet_speed.main(["--quick"])
    for row in report["poet_seconds_per_iteration"].values():
        assert row["plain_s"] > 0 and row["transfer_s"] > 0 and row["reproduction_s"] > 0
        assert min(row["plain_s"], row["transfer_s"]) <= row["average_s"] <= max(row.values())
    assert report["env_steps_per_s_batch_512"] == pytest.approx(8 * 10 * report["es_generations_per_s"])


@pytest.mark.slow  # jax2d compiles for ~40 s
def test_walker_physics_quick_steps_both_engines(tmp_path):
    pytest.importorskip("jax2d", reason="the bench extra (jax2d) is not installed")
    from benchmarks import walker_physics

    report = walker_physics.main(["--quick", "--out", str(tmp_path / "w.json")])
    assert all(rate > 0 for rate in report["env_steps_per_s"].values())


def test_host_overhead_quick_times_direct_callback_and_idle_callback_paths(tmp_path):
    """Three sides per case; the lowest reachable ratio is (floor + direct) / direct of the medians."""
    pytest.importorskip("procgen", reason='procgen is not installed: pip install -e ".[procgen]"')
    from benchmarks import host_overhead

    out = tmp_path / "overhead.json"
    report = host_overhead.main(["--quick", "--miniworld-batches", "", "--out", str(out)])
    (row,) = report["results"]
    seconds = row["seconds_per_rollout"]
    assert set(seconds) == {"callback", "direct", "floor"} and row["num_envs"] == 2
    for side, block in row["blocks"].items():
        assert len(block["block_s_per_call"]) == 2 and seconds[side] == np.median(block["block_s_per_call"])
    assert row["lowest_reachable_ratio"] == pytest.approx(
        (seconds["floor"] + seconds["direct"]) / seconds["direct"]
    )
    assert row["floor_ms_per_step"] == pytest.approx(1e3 * seconds["floor"] / row["steps_per_rollout"])
    assert json.loads(out.read_text())["results"][0]["env"] == "procgen_coinrun"

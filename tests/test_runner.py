"""The runner end to end on tiny configs: resume, sharding, NaN stop, outputs."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from helpers import TEST_XLA_FLAGS, TINY_MAML_RUN, subprocess_timeout

from jaxmeta import algos, config, runner
from jaxmeta.algos import bc

ROOT = Path(__file__).resolve().parents[1]

TINY = [
    "algo.name=bc",
    "env.id=Gridworld-v0",
    "seeds=1",
    "num_updates=8",
    "chunk_size=2",
    "checkpoint_every=4",
    "eval_every=4",
    "algo.eval.episodes=2",
    "algo.eval.num_tasks=8",
    "env.size=5",
    "env.num_blocks=2",
    "env.num_colors=3",
    "env.max_steps_in_episode=10",
    "algo.trial.num_steps=16",
    "algo.trial.batch_size=4",
    "algo.hidden_sizes=[16]",
    "algo.num_train_tasks=20",
    "algo.num_test_tasks=8",
    "progress=false",
    "plots=false",
]


def tiny(run_dir, *extra):
    return config.load(None, [*TINY, f"run_dir={run_dir}", *extra])


def rows(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def restore(run_dir, step):
    import orbax.checkpoint as ocp

    with ocp.CheckpointManager(Path(run_dir, "checkpoints").absolute()) as manager:
        return manager.restore(step)


def assert_trees_equal(a, b):
    import jax

    flat_a, flat_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(flat_a) == len(flat_b)
    for x, y in zip(flat_a, flat_b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_interrupted_and_resumed_run_is_bit_identical(tmp_path):
    full, parts = tmp_path / "full", tmp_path / "parts"
    runner.run(tiny(full), log=lambda *_: None)

    runner.run(tiny(parts, "num_updates=4"), log=lambda *_: None)
    # A crash after metrics were written but before the next checkpoint, and a
    # half-written checkpoint (orbax writes to a temporary name, then renames).
    with (parts / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"kind": "train", "update": 6, "seed": 0, "loss": 123.0}) + "\n")
    (parts / "checkpoints" / "6.orbax-checkpoint-tmp-1").mkdir()
    (parts / "checkpoints" / "6.orbax-checkpoint-tmp-1" / "junk").write_text("partial")
    runner.run(tiny(parts), log=lambda *_: None)

    assert_trees_equal(restore(full, 8), restore(parts, 8))
    assert rows(full) == rows(parts)
    updates = sorted({(r["kind"], r["update"]) for r in rows(full)})
    assert updates == [("eval", 0), ("eval", 4), ("eval", 8)] + [("train", u) for u in range(1, 9)]


def test_a_run_extended_with_other_recording_settings_trains_as_one_run(tmp_path):
    """A copy of a short run, extended under a new name with evaluations, checkpoints and
    logging at other intervals, trains exactly as the uninterrupted run."""
    full, short, extended = tmp_path / "full", tmp_path / "short", tmp_path / "extended"
    runner.run(tiny(full), log=lambda *_: None)
    runner.run(tiny(short, "num_updates=4"), log=lambda *_: None)
    shutil.copytree(short, extended)
    more = ["name=long", "eval_every=2", "checkpoint_every=2", "keep_checkpoints=3", "log_every=2"]
    summary = runner.run(tiny(extended, *more), log=lambda *_: None)

    assert_trees_equal(restore(full, 8), restore(extended, 8))
    kept = {(r["kind"], r["update"], r["seed"]): r for r in rows(extended)}
    for r in rows(full):  # every row the full run wrote that the extended one was asked to write
        if r["kind"] == "eval" or r["update"] <= 4 or r["update"] % 2 == 0:
            assert kept.pop((r["kind"], r["update"], r["seed"])) == r
    assert sorted(kept) == [("eval", 6, 0)]  # the one extra evaluation
    saved = yaml.safe_load((extended / "config.yaml").read_text())
    assert saved["name"] == "long" and saved["eval_every"] == 2 and summary["final_train"]


def test_resume_refuses_a_different_config_and_touches_nothing(tmp_path):
    run_dir = tmp_path / "run"
    runner.run(tiny(run_dir, "num_updates=4"), log=lambda *_: None)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    with pytest.raises(config.ConfigError, match="different config"):
        runner.run(tiny(run_dir, "algo.learning_rate=0.5"), log=lambda *_: None)
    with pytest.raises(config.ConfigError, match="resume=true"):
        runner.run(tiny(run_dir, "resume=false"), log=lambda *_: None)
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before

    # A run written before an option existed (its config.yaml lacks the key) resumes when the
    # option is at its default; a key the library no longer has is a difference.
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    older = {k: v for k, v in saved.items() if k != "log_every"}
    older["algo"] = {k: v for k, v in saved["algo"].items() if k != "max_grad_norm"}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(older))
    with pytest.raises(config.ConfigError, match="max_grad_norm"):
        runner.run(tiny(run_dir, "algo.max_grad_norm=3.0"), log=lambda *_: None)
    removed = {**older, "algo": {**older["algo"], "dropped_option": 1}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(removed))
    with pytest.raises(config.ConfigError, match="dropped_option"):
        runner.run(tiny(run_dir), log=lambda *_: None)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(older))
    summary = runner.run(tiny(run_dir), log=lambda *_: None)
    assert summary["final_train"] and max(r["update"] for r in rows(run_dir)) == 8


def _nan_after(update: int) -> types.ModuleType:
    """bc whose loss turns NaN from ``update`` on: a stand-in for a diverging method."""

    def make(cfg):
        inner = bc.make(cfg)

        def update_fn(state):
            state, metrics = inner.update(state)
            loss = jnp.where(state.update_step >= update, jnp.nan, metrics["loss"])
            return state, {**metrics, "loss": loss}

        return inner._replace(update=update_fn)

    @dataclasses.dataclass
    class Config(bc.Config):
        name: str = config.param("nan_after", "test method")

    return types.SimpleNamespace(Config=Config, make=make, __doc__="test")


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setitem(algos.REGISTRY, "nan_after", _nan_after(6))
    run_dir = tmp_path / "run"
    cfg = tiny(run_dir, "algo.name=nan_after")
    with pytest.raises(runner.TrainingDiverged, match=r"loss became nan at update 6 .*update 4\) is kept"):
        runner.run(cfg, log=lambda *_: None)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["4"]
    state = restore(run_dir, 4)
    assert int(np.asarray(state["update_step"])[0]) == 4
    assert not (run_dir / "summary.json").exists()


def test_two_device_sharded_sweep(tmp_path):
    """seeds=3 on two CPU devices: the seed axis is split over both (a fourth seed pads the mesh and
    is dropped, so both devices work); the results equal one device's, the checkpoint holds 3 seeds.
    (MAML on the sinusoids: the sharding is the runner's whatever the method, and it compiles fast.)"""
    xla_flags = f"{TEST_XLA_FLAGS} --xla_force_host_platform_device_count=2"
    env = {**os.environ, "XLA_FLAGS": xla_flags, "JAX_PLATFORMS": "cpu"}
    sharded = subprocess.run(
        [sys.executable, "-m", "jaxmeta.train", *TINY_MAML_RUN, "seeds=3", f"run_dir={tmp_path / 'two'}"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=subprocess_timeout(),
    )
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    assert "on 2 cpu device(s) (1 more seed(s) computed to fill the devices" in sharded.stdout
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert len(summary["devices"]) == 2
    overrides = [*TINY_MAML_RUN[1:], "seeds=3", f"run_dir={tmp_path / 'one'}"]
    one = runner.run(
        config.load(str(ROOT / "configs" / "sinusoid_maml_k10.yaml"), overrides), log=lambda *_: None
    )
    assert len(one["devices"]) == 1
    assert summary["eval"].keys() == one["eval"].keys() and summary["eval"]
    for metric in summary["eval"]:
        per_seed = summary["eval"][metric]["per_seed"]
        assert len(per_seed) == 3
        np.testing.assert_allclose(per_seed, one["eval"][metric]["per_seed"], rtol=1e-5, err_msg=metric)
    train_two = [r for r in rows(tmp_path / "two") if r["kind"] == "train"]
    train_one = [r for r in rows(tmp_path / "one") if r["kind"] == "train"]
    np.testing.assert_allclose([r["loss"] for r in train_two], [r["loss"] for r in train_one], rtol=1e-5)
    assert {r["seed"] for r in train_two} == {0, 1, 2}
    import orbax.checkpoint as ocp

    saved = ocp.StandardCheckpointer().metadata(
        (tmp_path / "two" / "checkpoints" / "4" / "default").absolute()
    )
    assert {leaf.shape[0] for leaf in jax.tree.leaves(saved.item_metadata)} == {3}


def test_bc_learns_on_one_block_and_writes_outputs(tmp_path):
    """With a single block (the goal) imitation must pay: loss falls, held-out return rises.

    Reference: the optimum is 1 per episode (``optimal_returns(1, 2)``); an
    untrained policy wanders and mostly times out (20 steps).
    """
    run_dir = tmp_path / "run"
    cfg = tiny(
        run_dir,
        "env.num_blocks=1",
        "env.max_steps_in_episode=20",
        "num_updates=60",
        "checkpoint_every=20",
        "eval_every=20",
        "algo.eval.greedy=true",
        "algo.eval.num_tasks=32",
        "algo.trial.batch_size=16",
        "algo.hidden_sizes=[64]",
        "algo.learning_rate=0.003",
        "algo.sgd_steps=4",
        "algo.num_train_tasks=500",
        "algo.num_test_tasks=32",
        "plots=true",
        "seeds=2",
    )
    summary = runner.run(cfg, log=lambda *_: None)
    table = rows(run_dir)
    losses = [r["loss"] for r in table if r["kind"] == "train"]
    assert np.mean(losses[-8:]) < 0.5 * np.mean(losses[:4])
    first = np.mean([r["eval/total_return"] for r in table if r["kind"] == "eval" and r["update"] == 0])
    last = np.mean([r["eval/total_return"] for r in table if r["kind"] == "eval" and r["update"] == 60])
    assert first < 1.0 and last > 1.5, (first, last)  # out of an optimum of 2 over two episodes
    assert summary["references"]["Bayes-optimal"] == [1.0, 1.0]
    for name in ("config.yaml", "summary.json", "plots/learning_curves.png", "plots/episode_returns.png"):
        assert (run_dir / name).stat().st_size > 0


def test_evaluate_cli_reproduces_the_runs_evaluation_and_rejects_bad_arguments(tmp_path, capsys):
    """Re-evaluating a checkpoint with the run's settings gives the numbers the run logged there."""
    from jaxmeta import evaluate

    run_dir = tmp_path / "run"
    runner.run(tiny(run_dir, "seeds=2"), log=lambda *_: None)
    logged = {r["seed"]: r for r in rows(run_dir) if r["kind"] == "eval" and r["update"] == 4}
    assert evaluate.main([f"run_dir={run_dir}", "update=4"]) == 0
    again = json.loads((run_dir / "eval_default_u4.json").read_text())
    assert again["checkpoint_update"] == 4
    for seed in (0, 1):
        np.testing.assert_allclose(
            again["eval"]["episode_return"]["per_seed"][seed], logged[seed]["eval/episode_return"], atol=1e-6
        )
    # Other eval settings: latest checkpoint, greedy, more episodes.
    assert evaluate.main([f"run_dir={run_dir}", "algo.eval.greedy=true", "algo.eval.episodes=3"]) == 0
    greedy = json.loads((run_dir / "eval_greedy-true_episodes-3_u8.json").read_text())
    assert len(greedy["eval"]["episode_return"]["mean"]) == 3 and greedy["eval_settings"]["greedy"] is True
    assert "update 8" in capsys.readouterr().out
    for bad, message in [
        ([], "run_dir=PATH is required"),
        ([f"run_dir={tmp_path}"], "not a jaxmeta run directory"),
        ([f"run_dir={run_dir}", "seeds=4"], "only run_dir, update and algo.eval"),
        ([f"run_dir={run_dir}", "update=3"], "no checkpoint at update 3"),
        ([f"run_dir={run_dir}", "algo.eval.episodes=0"], "algo.eval.episodes"),
    ]:
        assert evaluate.main(bad) == 2, bad
        assert message in capsys.readouterr().err, bad


# ----------------------------------------------------------------------------- what a new user tries
def test_run_dir_spelled_differently_or_moved_is_the_same_run(tmp_path, monkeypatch):
    """``run_dir`` is not part of a run's identity: relative, ``./``, trailing ``/``, absolute and a
    copied directory all resume the run they name."""
    monkeypatch.chdir(tmp_path)
    runner.run(tiny("runs/x", "num_updates=2", "checkpoint_every=2"), log=lambda *_: None)
    for spelling, updates in (("./runs/x", 4), ("runs/x/", 6), (str(tmp_path / "runs" / "x"), 8)):
        logs = []
        runner.run(tiny(spelling, f"num_updates={updates}", "checkpoint_every=2"), log=logs.append)
        assert any(f"from the checkpoint at update {updates - 2}" in line for line in logs), (spelling, logs)
    import shutil

    shutil.copytree(tmp_path / "runs" / "x", tmp_path / "copied")
    logs = []
    runner.run(tiny(tmp_path / "copied", "num_updates=10", "checkpoint_every=2"), log=logs.append)
    assert any("from the checkpoint at update 8" in line for line in logs), logs


def test_rerunning_a_finished_run_leaves_it_as_it_is(tmp_path):
    run_dir = tmp_path / "run"
    first = runner.run(tiny(run_dir), log=lambda *_: None)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in run_dir.rglob("*") if p.is_file()}
    logs = []
    again = runner.run(tiny(run_dir), log=logs.append)
    assert again == first and first["final_train"] and first["train_s"] > 0
    assert any("finished run" in line and "nothing to do" in line for line in logs), logs
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in run_dir.rglob("*") if p.is_file()}
    assert {p: v for p, v in after.items() if p.name != ".lock"} == {
        p: v for p, v in before.items() if p.name != ".lock"
    }


def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    full, broken = tmp_path / "full", tmp_path / "broken"
    runner.run(tiny(full, "num_updates=12"), log=lambda *_: None)
    runner.run(tiny(broken), log=lambda *_: None)  # checkpoints at 4 and 8
    data_files = [
        p for p in (broken / "checkpoints" / "8").rglob("*") if p.is_file() and p.stat().st_size > 0
    ]
    for path in data_files:  # every file of the latest checkpoint truncated
        path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 3)])
    logs = []
    runner.run(tiny(broken, "num_updates=12"), log=logs.append)
    warnings = [line for line in logs if line.startswith("warning:")]
    assert len(warnings) == 1 and "update 8" in warnings[0] and "\n" not in warnings[0], logs
    assert any("from the checkpoint at update 4" in line for line in logs)
    assert_trees_equal(restore(full, 12), restore(broken, 12))
    assert rows(full) == rows(broken)


def test_a_second_run_into_a_busy_run_dir_is_refused(tmp_path):
    import fcntl

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with (run_dir / ".lock").open("a+") as held:  # another run holds the directory
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(config.ConfigError, match="in use by another run"):
            runner.run(tiny(run_dir), log=lambda *_: None)
    assert not (run_dir / "config.yaml").exists()


def test_a_run_that_failed_before_its_first_checkpoint_does_not_block_a_corrected_rerun(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # What a run leaves when it fails after writing its config, before any checkpoint.
    stale = config.to_dict(tiny(run_dir, "algo.trial.batch_size=5000"))
    import yaml

    (run_dir / "config.yaml").write_text(yaml.safe_dump(stale))
    summary = runner.run(tiny(run_dir), log=lambda *_: None)
    assert summary["updates_run"] == 8
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["algo"]["trial"]["batch_size"] == 4


def test_unusable_run_dirs_and_memory_are_one_line_errors_before_compiling(tmp_path, monkeypatch):
    a_file = tmp_path / "file"
    a_file.write_text("not a directory")
    compiled = []
    monkeypatch.setattr(runner._Seeds, "compile", lambda *a: compiled.append(a))
    for run_dir, message in ((a_file, "not a directory"), ("/proc/jaxmeta-run", "cannot be written")):
        with pytest.raises(config.ConfigError, match=message) as info:
            runner.run(tiny(run_dir), log=lambda *_: None)
        assert "\n" not in str(info.value)
    monkeypatch.setattr(runner, "available_memory", lambda: 1000)  # bytes: far less than the state
    with pytest.raises(config.ConfigError, match="GiB") as info:
        runner.run(tiny(tmp_path / "small"), log=lambda *_: None)
    assert "lower seeds" in str(info.value) and not compiled


def test_out_of_memory_while_running_is_one_line(tmp_path, monkeypatch, capsys):
    from jaxmeta import train

    def oom(*args, **kwargs):
        raise RuntimeError(
            "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 9.9GiB.\n" + "x\n" * 27
        )

    monkeypatch.setattr(runner, "_train", oom)
    assert train.main([*TINY, f"run_dir={tmp_path / 'run'}"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("out of memory:") and "Traceback" not in err


def test_interrupts_during_a_checkpoint_save_land_after_it():
    """The deferral the runner wraps around saves: a SIGINT inside the block waits for its end."""
    import signal

    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in an interactive shell
    try:
        done = []
        with pytest.raises(KeyboardInterrupt), runner.deferred_interrupts():
            os.kill(os.getpid(), signal.SIGINT)
            done.append("the save finished")
        assert done == ["the save finished"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        # Under nohup (SIGINT ignored) an interrupt during the save stays ignored after it.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with runner.deferred_interrupts():
            os.kill(os.getpid(), signal.SIGINT)
            done.append("the second save finished")
        assert done[-1] == "the second save finished"
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        # SIGTERM's default would end the process: it stops the run like Ctrl-C.
        term_before = signal.signal(signal.SIGTERM, signal.SIG_DFL)
        try:
            with pytest.raises(KeyboardInterrupt), runner.deferred_interrupts():
                os.kill(os.getpid(), signal.SIGTERM)
        finally:
            signal.signal(signal.SIGTERM, term_before)
    finally:
        signal.signal(signal.SIGINT, before)


def test_log_every_writes_every_nth_update_of_the_full_log(tmp_path):
    runner.run(tiny(tmp_path / "all"), log=lambda *_: None)
    summary = runner.run(tiny(tmp_path / "some", "log_every=2"), log=lambda *_: None)
    every = [r for r in rows(tmp_path / "all") if r["kind"] == "train"]
    some = [r for r in rows(tmp_path / "some") if r["kind"] == "train"]
    assert some == [r for r in every if r["update"] % 2 == 0] and {r["update"] for r in some} == {2, 4, 6, 8}
    # The summary and evaluations do not depend on how much was logged.
    assert [r for r in rows(tmp_path / "some") if r["kind"] == "eval"] == [
        r for r in rows(tmp_path / "all") if r["kind"] == "eval"
    ]
    full_summary = json.loads((tmp_path / "all" / "summary.json").read_text())
    assert summary["final_train"] == full_summary["final_train"]

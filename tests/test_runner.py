"""The runner end to end on tiny configs: resume, sharding, NaN stop, outputs."""

import dataclasses
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import subprocess_timeout

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


def test_resume_refuses_a_different_config_and_touches_nothing(tmp_path):
    run_dir = tmp_path / "run"
    runner.run(tiny(run_dir, "num_updates=4"), log=lambda *_: None)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    with pytest.raises(config.ConfigError, match="different config"):
        runner.run(tiny(run_dir, "algo.learning_rate=0.5"), log=lambda *_: None)
    with pytest.raises(config.ConfigError, match="resume=true"):
        runner.run(tiny(run_dir, "resume=false"), log=lambda *_: None)
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


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
    """seeds=2 on two CPU devices: the seed axis is split over both, results match one device."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    args = [sys.executable, "-m", "jaxmeta.train", *TINY, "seeds=2", "num_updates=4"]
    sharded = subprocess.run(
        [*args, f"run_dir={tmp_path / 'two'}"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=subprocess_timeout(),
    )
    assert sharded.returncode == 0, sharded.stderr
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert len(summary["devices"]) == 2
    single = subprocess.run(
        [*args, f"run_dir={tmp_path / 'one'}"],
        env={**env, "XLA_FLAGS": ""},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=subprocess_timeout(),
    )
    assert single.returncode == 0, single.stderr
    one = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert len(one["devices"]) == 1
    np.testing.assert_allclose(
        summary["eval"]["episode_return"]["per_seed"], one["eval"]["episode_return"]["per_seed"], atol=1e-6
    )
    train_two = [r for r in rows(tmp_path / "two") if r["kind"] == "train"]
    train_one = [r for r in rows(tmp_path / "one") if r["kind"] == "train"]
    np.testing.assert_allclose([r["loss"] for r in train_two], [r["loss"] for r in train_one], rtol=1e-5)
    assert {r["seed"] for r in train_two} == {0, 1}


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

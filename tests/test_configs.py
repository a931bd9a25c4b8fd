"""Every shipped config validates, and the ablations differ from their base only where they say."""

from pathlib import Path

import pytest
import yaml

from jaxmeta import config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_validates_and_names_its_run(path):
    cfg = config.load(str(path))
    assert cfg.name == path.stem
    assert cfg.run_dir == f"runs/{path.stem}"


@pytest.mark.parametrize(
    "name, base, changed",
    [
        ("memory_x3", "memory_x2", {"name", "run_dir", "env.num_blocks"}),
        ("memory_temporal_x3", "memory_x3", {"name", "run_dir", "algo.temporal"}),
        ("memory_x3_L4", "memory_x3", {"name", "run_dir", "algo.bank_length"}),
        ("memory_x3_nh_same", "memory_x3", {"name", "run_dir", "algo.trial.reset_mode"}),
        (
            "memory_x3_lh_same",
            "memory_x3",
            {"name", "run_dir", "algo.trial.reset_mode", "algo.trial.num_steps"},
        ),
        ("snail_x3_lh", "snail_x3", {"name", "run_dir", "algo.trial.num_steps", "algo.context"}),
        ("memory_x2_tasks4000", "memory_x2", {"name", "run_dir", "algo.num_train_tasks", "num_updates"}),
        ("memory_x3_tasks6000", "memory_x3", {"name", "run_dir", "algo.num_train_tasks", "num_updates"}),
        ("snail_x3_tasks6000", "snail_x3", {"name", "run_dir", "algo.num_train_tasks", "num_updates"}),
        (
            "memory_temporal_x2_tasks4000",
            "memory_x2_tasks4000",
            {"name", "run_dir", "algo.temporal"},
        ),
        (
            "memory_temporal_x3_tasks6000",
            "memory_x3_tasks6000",
            {"name", "run_dir", "algo.temporal"},
        ),
        ("memory_temporal_miniworld", "memory_miniworld", {"name", "run_dir", "algo.temporal"}),
    ],
)
def test_ablation_changes_only_its_factor(name, base, changed):
    root = Path(__file__).resolve().parents[1] / "configs"
    a = config.to_dict(config.load(str(root / f"{name}.yaml")))
    b = config.to_dict(config.load(str(root / f"{base}.yaml")))
    assert set(config.diff(a, b)) == changed


# Sizes that only scale the work of one update (not the program's structure), cut for the smoke run:
# one GrBAL update plans 1000 sequences for 8 episodes and its evaluation 64 more.
SMOKE_SIZES = {
    "grbal": [
        "algo.episodes_per_update=2",
        "algo.model_steps=2",
        "algo.num_candidates=50",
        "algo.eval.num_tasks=2",
    ]
}


def _base_algo(path):
    raw = yaml.safe_load(path.read_text())
    while "base" in raw and not raw.get("algo", {}).get("name"):
        path = path.parent / raw["base"]
        raw = yaml.safe_load(path.read_text())
    return raw.get("algo", {}).get("name")


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_trains_and_evaluates(path, tmp_path):
    """Every shipped config runs through the CLI's runner: one update, one evaluation, one checkpoint
    (one seed; the full runs take minutes to hours: docs/results.md, docs/baselines.md)."""
    from jaxmeta import runner

    small = ["seeds=1", "num_updates=1", "chunk_size=1", "eval_every=1", "checkpoint_every=1", "log_every=1"]
    method = yaml.safe_load(path.read_text()).get("algo", {}).get("name") or _base_algo(path)
    small += SMOKE_SIZES.get(method, [])
    cfg = config.load(str(path), [*small, "progress=false", "plots=false", f"run_dir={tmp_path / 'run'}"])
    summary = runner.run(cfg, log=lambda *_: None)
    assert summary["updates_run"] == 1 and summary["eval"]

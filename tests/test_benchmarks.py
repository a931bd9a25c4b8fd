"""The benchmark scripts run end to end (smoke mode) and report sane numbers."""

import pytest

from benchmarks import env_throughput, trial_throughput  # the repo root is on sys.path (conftest)


def test_env_throughput_quick(tmp_path):
    report = env_throughput.main(
        ["--quick", "--envs", "gridworld,breakout", "--out", str(tmp_path / "e.json")]
    )
    assert (tmp_path / "e.json").exists()
    text = (tmp_path / "e.json").read_text()
    assert "gridworld" in text.lower() and "breakout" in text.lower()
    assert report is not None


def test_trial_throughput_quick():
    report = trial_throughput.main(["--quick"])
    for label in ("with_bank", "without_bank"):
        assert report["results"][label]["trials_per_s"] > 0
    # The random policy fails often: after a few batches the banks hold episodes.
    assert report["results"]["with_bank"]["bank_episodes_held"] > 0
    assert 0 < report["with_over_without"] < 2


@pytest.mark.slow
def test_env_throughput_targets():
    """The issue's targets at batch 8192, as ratios measured in one run (minutes)."""
    report = env_throughput.main(["--batches", "8192", "--repeats", "3", "--out", "/dev/null"])
    assert report["targets"]["gridworld/breakout"]["measured"] >= 1.0
    if "gridworld/xminigrid" in report["targets"]:
        assert report["targets"]["gridworld/xminigrid"]["measured"] >= 10.0

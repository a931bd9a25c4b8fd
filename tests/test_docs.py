"""The README's promises: its code runs, and CI runs exactly its test command."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_ci_runs_exactly_the_readme_test_command():
    commands = re.findall(r"```bash\n(.*?)\n```", README, flags=re.S)
    assert "jaxmeta.train config=configs/quickstart.yaml" in commands[0]
    assert "pytest" in commands[1]
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert commands[1].strip() in [line.strip() for line in ci_lines]


def python_blocks():
    blocks = re.findall(r"```python\n(.*?)\n```", README, flags=re.S)
    assert len(blocks) == 4
    return blocks


def test_readme_trial_and_failure_bank_example_runs():
    namespace: dict = {}
    exec(compile(python_blocks()[0], "README.md", "exec"), namespace)
    bank, slot_mask = namespace["bank"], namespace["slot_mask"]
    # A random policy fails often within 80 steps: the first banks hold failures.
    assert slot_mask.shape == (4, 8)
    assert int(namespace["failure_bank"].size(bank).sum()) > 0


def test_readme_dnd_example_runs():
    import jax
    import jax.numpy as jnp

    namespace: dict = {"jax": jax, "jnp": jnp}  # the block continues the first one (its imports)
    exec(compile(python_blocks()[1], "README.md", "exec"), namespace)
    # Every table holds 8 entries of value 1, so every estimate is 1.
    q, grad = namespace["q"], namespace["grad"]
    assert q.shape == (8, 4) and grad.shape == (8, 64)
    assert abs(float(q.min()) - 1.0) < 1e-6 and abs(float(q.max()) - 1.0) < 1e-6


def test_readme_bandit_example_runs():
    # Gittins on 2,000 tasks of 10 arms, 100 pulls; the RL^2 paper's 82.8 was measured on 1000 tasks
    # (standard error ~0.4), this mean's standard error is ~0.25.
    bandit: dict = {}
    exec(compile(python_blocks()[2], "README.md", "exec"), bandit)
    assert bandit["rewards"].shape == (2_000, 100)
    assert 82.0 < float(bandit["rewards"].sum(-1).mean()) < 85.0


def test_readme_maml_example_meta_learns_the_sinusoids():
    """The MAML example on a user's own flax model: after 2,000 meta-iterations one step on 10 points
    beats the best predictor that ignores them (held-out MSE ~3.0: tests/test_sinusoid_methods.py)."""
    namespace: dict = {}
    exec(compile(python_blocks()[3], "README.md", "exec"), namespace)
    mse = namespace["mse"].mean(0)
    assert mse.shape == (11,)
    assert float(mse[1]) < 1.5 < float(mse[0])

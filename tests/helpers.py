"""Shared builders for the tests' tiny runs (imported as ``helpers``: pytest puts ``tests/`` on the path)."""

from jaxmeta import config

# XLA flags of every test process and of the subprocesses tests start (see conftest.py).
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"


def tiny_config(algo_name: str, run_dir: str, updates: int, *overrides: str):
    """A Gridworld run config small enough for CI: 1 seed, 4 trials per batch, 12 training and 8 test
    tasks, ``updates`` updates in chunks of 4 with one checkpoint and one evaluation (2 episodes) at
    the end, no progress bar or plots. ``overrides`` (``key=value``) set the env, trial and algo sizes."""
    return config.load(
        None,
        [
            f"run_dir={run_dir}",
            f"algo.name={algo_name}",
            "env.id=Gridworld-v0",
            "env.num_blocks=2",
            "algo.trial.batch_size=4",
            "algo.num_train_tasks=12",
            "algo.num_test_tasks=8",
            "algo.eval.num_tasks=8",
            "algo.eval.episodes=2",
            "seeds=1",
            f"num_updates={updates}",
            "chunk_size=4",
            f"checkpoint_every={updates}",
            f"eval_every={updates}",
            "progress=false",
            "plots=false",
            *overrides,
        ],
    )


# The memory agent's (failure_replay) network and trial sizes for tiny runs.
TINY_MEMORY_AGENT = (
    "env.max_steps_in_episode=10",
    "algo.trial.num_steps=24",
    "algo.features=16",
    "algo.num_heads=2",
    "algo.hidden=16",
    "algo.temporal_window=4",
    "algo.max_episodes_per_trial=8",
    "algo.tasks_per_update=5",
)

# A whole tiny memory-agent run (the failure_replay training test, the analysis scripts' run):
# the same settings in both, so the session's compilation cache compiles its programs once.
# One small convolution: less to compile.
TINY_MEMORY_RUN = (
    "env.size=5",
    *TINY_MEMORY_AGENT,
    "algo.eval.episodes=3",
    "algo.bank_capacity=4",
    "algo.learning_rate=3e-3",
    "algo.conv_channels=[4]",
)


# A whole run that compiles in ~3 s (MAML on the sinusoids, no environment), for the tests of what the
# runner does whatever the method (sharding seeds over devices and processes).
TINY_MAML_RUN = (
    "config=configs/sinusoid_maml_k10.yaml",
    "num_updates=4",
    "chunk_size=2",
    "checkpoint_every=2",
    "eval_every=2",
    "log_every=1",
    "algo.meta_batch_size=4",
    "algo.eval.num_tasks=8",
    "algo.eval.steps=2",
    "progress=false",
    "plots=false",
)


def legacy_override(item: str) -> str:
    """An override in the layout before issue 11 (``trial.*``, ``eval.*`` top-level) in today's."""
    key, _, value = item.partition("=")
    if key.startswith(("trial.", "eval.")) and key != "eval.every":
        return f"algo.{item}"
    if key == "eval.every":
        return f"eval_every={value}"
    return item


def subprocess_timeout() -> float:
    """Seconds a test waits for a subprocess run of the CLI.

    Generous on purpose: a subprocess compiles on its own, and on a loaded
    2-core machine (the suite runs two workers) a 300 s limit was once not
    enough. ``JAXMETA_TEST_TIMEOUT`` overrides it.
    """
    import os

    return float(os.environ.get("JAXMETA_TEST_TIMEOUT", "1800"))

"""Shared builders for the tests' tiny runs (imported as ``helpers``: pytest puts ``tests/`` on the path)."""

from jaxmeta import config


def tiny_config(algo_name: str, run_dir: str, updates: int, *overrides: str):
    """A run config small enough for CI: 1 seed, 4 trials per batch, 12 training and 8 test tasks,
    ``updates`` updates in chunks of 4 with one checkpoint and one evaluation (2 episodes) at the
    end, no progress bar or plots. ``overrides`` (``key=value``) set the env, trial and algo sizes."""
    return config.load(
        None,
        [
            f"run_dir={run_dir}",
            f"algo.name={algo_name}",
            "env.num_blocks=2",
            "trial.batch_size=4",
            "algo.num_train_tasks=12",
            "algo.num_test_tasks=8",
            "eval.num_tasks=8",
            "eval.episodes=2",
            "seeds=1",
            f"num_updates={updates}",
            "chunk_size=4",
            f"checkpoint_every={updates}",
            f"eval.every={updates}",
            "progress=false",
            "plots=false",
            *overrides,
        ],
    )


# The memory agent's (failure_replay) network and trial sizes for tiny runs.
TINY_MEMORY_AGENT = (
    "env.max_steps_in_episode=10",
    "trial.num_steps=24",
    "algo.features=16",
    "algo.num_heads=2",
    "algo.hidden=16",
    "algo.temporal_window=4",
    "algo.max_episodes_per_trial=8",
    "algo.tasks_per_update=5",
)

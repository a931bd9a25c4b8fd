"""Command line: ``python -m jaxmeta.train config=PATH [key=value ...]``.

Parses and validates the configuration, then hands it to the runner. A
configuration mistake prints one line and exits with status 2, touching
nothing on disk; a diverged run exits with status 1 keeping its last good
checkpoint. ``--help`` lists every key with its type, default and meaning.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence


def _log(message: str) -> None:
    import jax

    if jax.process_index() == 0:  # one process speaks for all
        print(message)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help", "help") for a in argv):
        from jaxmeta.config import help_text

        rest = [a for a in argv if a not in ("-h", "--help", "help")]
        path = next((a.split("=", 1)[1] for a in rest if a.startswith("config=")), None)
        print(help_text(path, [a for a in rest if not a.startswith("config=") and "=" in a]))
        return 0
    from jaxmeta.config import ConfigError, load

    config_path = None
    overrides = []
    for arg in argv:
        if arg.startswith("config="):
            config_path = arg.split("=", 1)[1]
        elif arg.startswith("-"):
            print(f"error: unknown option {arg}; use key=value overrides (see --help)", file=sys.stderr)
            return 2
        else:
            overrides.append(arg)
    if os.environ.get("JAXMETA_DISTRIBUTED") == "1":
        import jax

        # Before anything touches a JAX backend (validating a config may build an environment).
        jax.distributed.initialize(**_distributed_args())
    try:
        cfg = load(config_path, overrides)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2

    from jaxmeta.runner import TrainingDiverged, format_summary, is_out_of_memory, run

    try:
        summary = run(cfg, log=_log)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        if not is_out_of_memory(err):
            raise
        first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
        print(
            f"out of memory: {first.strip()[:200]}; lower seeds, batch sizes or memory capacities "
            f"(checkpoints so far are kept in {cfg.run_dir})",
            file=sys.stderr,
        )
        return 1
    except TrainingDiverged as err:
        print(f"training diverged: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"\ninterrupted; rerun the same command to resume from the last checkpoint in {cfg.run_dir}",
            file=sys.stderr,
        )
        return 130
    import jax

    if jax.process_index() == 0:
        print(format_summary(summary, cfg.run_dir))
    return 0


def _distributed_args() -> dict[str, int]:
    """``jax.distributed.initialize``'s process count and index when given by hand.

    On a cluster (SLURM, Open MPI, Kubernetes, ...) JAX reads everything from
    the cluster's environment and nothing need be set. Elsewhere (e.g. two
    processes on one machine) set ``JAX_COORDINATOR_ADDRESS=host:port`` and
    ``JAXMETA_NUM_PROCESSES`` / ``JAXMETA_PROCESS_ID`` in each process.
    """
    if "JAXMETA_NUM_PROCESSES" not in os.environ:
        return {}
    return {
        "num_processes": int(os.environ["JAXMETA_NUM_PROCESSES"]),
        "process_id": int(os.environ["JAXMETA_PROCESS_ID"]),
    }


if __name__ == "__main__":
    sys.exit(main())

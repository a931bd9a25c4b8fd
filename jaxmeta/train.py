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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help", "help") for a in argv):
        from jaxmeta.config import help_text

        print(help_text())
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
    try:
        cfg = load(config_path, overrides)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2

    if os.environ.get("JAXMETA_DISTRIBUTED") == "1":
        import jax

        jax.distributed.initialize()  # multi-host: coordinator etc. come from the cluster environment

    from jaxmeta.runner import TrainingDiverged, format_summary, run

    try:
        summary = run(cfg)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    except TrainingDiverged as err:
        print(f"training diverged: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"\ninterrupted; rerun the same command to resume from the last checkpoint in {cfg.run_dir}",
            file=sys.stderr,
        )
        return 130
    print(format_summary(summary, cfg.run_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())

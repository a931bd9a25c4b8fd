"""Command line: ``python -m jaxmeta.evaluate run_dir=PATH [update=N] [algo.eval.KEY=VALUE ...]``.

Evaluates a trained run's checkpoint again (default: the latest) with its own
config and any overrides of the method's evaluation settings (``algo.eval.*``,
or ``algo.eval_*`` for methods that keep them flat, e.g. PPO's ``algo.eval_greedy``),
e.g. ``algo.eval.greedy=true`` to act with the most likely action instead of
sampling, or more held-out tasks. Prints the method's table and writes
``run_dir/eval_<tag>.json`` (tag from the overrides, e.g.
``eval_greedy-true_u800.json``). A bad argument prints one line and exits with
status 2.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help", "help") for a in argv):
        print(__doc__)
        return 0
    from jaxmeta.config import ConfigError, load

    run_dir, update, overrides = None, None, []
    try:
        for arg in argv:
            key, sep, value = arg.partition("=")
            if not sep:
                raise ConfigError(f"expected key=value, got {arg!r}")
            if key == "run_dir":
                run_dir = Path(value)
            elif key == "update":
                update = int(value) if value.isdigit() else None
                if update is None:
                    raise ConfigError(f"update must be a non-negative integer, got {value!r}")
            elif key.startswith("algo.eval"):  # algo.eval.* sections and algo.eval_* keys alike
                overrides.append(arg)
            elif key.startswith("eval."):  # the spelling before evaluation settings moved into algo
                overrides.append("algo." + arg)
            else:
                raise ConfigError(f"only run_dir, update and algo.eval.* may be given, got {key!r}")
        if run_dir is None:
            raise ConfigError("run_dir=PATH is required (a directory written by jaxmeta.train)")
        if not (run_dir / "config.yaml").is_file():
            raise ConfigError(f"{run_dir} holds no config.yaml: not a jaxmeta run directory")
        cfg = load(str(run_dir / "config.yaml"), [f"run_dir={run_dir}", *overrides])

        from jaxmeta.runner import evaluate_checkpoint, format_summary

        summary = evaluate_checkpoint(cfg, update)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    tag = "_".join(
        o.removeprefix("algo.eval.").removeprefix("algo.eval_").replace("=", "-") for o in overrides
    )
    tag = tag or "default"
    out = run_dir / f"eval_{tag}_u{summary['checkpoint_update']}.json"
    out.write_text(json.dumps(summary, indent=2))
    print(format_summary(summary, str(run_dir)))
    print(f"Wrote {out}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training speed of NEC, MFEC and DQN on a MinAtar game, side by side in one process.

Each method runs its comparison config (``configs/ec_{method}_{game}.yaml``) as the runner does: the
seeds vectorised in one program, a chunk of updates in one ``lax.scan``. After a warm-up past every
method's ``learning_starts`` (so that DQN's and NEC's gradient steps are part of the work), blocks of
``--updates`` updates are timed, the methods interleaved and their order rotated from repeat to repeat;
reported are the medians in frames (env steps) per second summed over the seeds, every block, the
compile time apart, and the ratios to DQN.

    python benchmarks/episodic_speed.py [--game breakout] [--seeds 3] [--updates 100] [--repeats 5]
    python benchmarks/episodic_speed.py --quick        # smoke run, writes nothing unless --out
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # run as `python benchmarks/episodic_speed.py`
    sys.path.insert(0, str(_ROOT))

from benchmarks import _common  # noqa: E402
from jaxmeta import algos, config  # noqa: E402

METHODS = ("nec", "mfec", "dqn")
DEFAULT_OUT = _common.RESULTS_DIR / "episodic_speed.json"


def prepare(method: str, game: str, seeds: int, updates: int, overrides: Sequence[str]) -> dict[str, Any]:
    """The method's vmapped chunk of ``updates`` updates, compiled, and its state after warming up."""
    cfg = config.load(str(_ROOT / "configs" / f"ec_{method}_{game}.yaml"), list(overrides))
    algo = algos.REGISTRY[method].make(cfg)
    frames_per_update = cfg.algo.num_envs * cfg.algo.num_steps
    keys = jax.random.split(jax.random.PRNGKey(0), seeds)
    state = jax.jit(jax.vmap(algo.init))(keys)

    def chunk(s: Any) -> Any:
        return jax.lax.scan(lambda c, _: algo.update(c), s, None, length=updates)[0]

    start = time.perf_counter()
    compiled = jax.jit(jax.vmap(chunk)).lower(state).compile()
    compile_s = time.perf_counter() - start
    warm = getattr(cfg.algo, "learning_starts", 0) // frames_per_update + 1
    for _ in range(-(-warm // updates) + 1):  # past learning_starts, then one more chunk
        state = jax.block_until_ready(compiled(state))
    return {
        "compiled": compiled,
        "state": state,
        "compile_s": compile_s,
        "frames_per_chunk": frames_per_update * updates * seeds,
        "describe": algo.report.describe,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--game", default="breakout", help="breakout, asterix, freeway or space_invaders")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--updates", type=int, default=None, help="updates per timed block (default 100)")
    parser.add_argument("--repeats", type=int, default=None, help="timed blocks per method (default 5)")
    parser.add_argument("--quick", action="store_true", help="small tables, 10-update blocks, 2 repeats")
    parser.add_argument("--out", type=Path, default=None, help=f"JSON file (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    updates = args.updates or (10 if args.quick else 100)
    repeats = args.repeats or (2 if args.quick else 5)
    quick = ["algo.capacity=2000", "algo.buffer_size=5000"] if args.quick else []
    load_start = _common.load_average()
    prepared = {}
    for method in METHODS:
        overrides = [o for o in quick if not (method == "mfec" and "buffer_size" in o)]
        overrides = [o for o in overrides if not (method == "dqn" and "capacity" in o)]
        prepared[method] = prepare(method, args.game, args.seeds, updates, overrides)
    blocks: dict[str, list[float]] = {m: [] for m in METHODS}
    for repeat in range(repeats):
        for method in METHODS[repeat % 3 :] + METHODS[: repeat % 3]:
            p = prepared[method]
            start = time.perf_counter()
            p["state"] = jax.block_until_ready(p["compiled"](p["state"]))
            blocks[method].append(time.perf_counter() - start)
    results = {}
    for method, times in blocks.items():
        p = prepared[method]
        median = statistics.median(times)
        results[method] = {
            "describe": p["describe"],
            "compile_s": p["compile_s"],
            "block_s": times,
            "median_s": median,
            "frames_per_block": p["frames_per_chunk"],
            "frames_per_s": p["frames_per_chunk"] / median,
        }
    for method in ("nec", "mfec"):
        results[f"{method}_over_dqn"] = results[method]["frames_per_s"] / results["dqn"]["frames_per_s"]
    report = {
        "command": _common.command_line(__file__, list(argv if argv is not None else sys.argv[1:])),
        "game": args.game,
        "seeds": args.seeds,
        "updates_per_block": updates,
        "results": results,
    }
    print(f"{args.game}, {args.seeds} seed(s) vectorised, frames/s summed over seeds (median of {repeats}):")
    for method in METHODS:
        r = results[method]
        print(
            f"  {method:5s} {r['frames_per_s']:9,.0f} frames/s  compile {r['compile_s']:.1f} s"
            f"  ({r['describe']})"
        )
    print(f"  NEC / DQN {results['nec_over_dqn']:.2f}x, MFEC / DQN {results['mfec_over_dqn']:.2f}x")
    out = args.out if args.out is not None else (None if args.quick else DEFAULT_OUT)
    return _common.finish_report(report, load_start, str(out) if out else None)


if __name__ == "__main__":
    main()

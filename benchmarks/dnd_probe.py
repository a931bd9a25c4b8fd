"""What the dictionaries of a trained NEC run look like: how far a stored key's neighbours are, and how
many of them the kernel really averages.

Reads the latest (or ``--update``) checkpoint of a ``nec`` run directory and, for each seed and action,
takes ``--queries`` stored keys as queries and finds their ``k`` nearest other keys in the same table
(exactly, in numpy). It reports the squared distance to the nearest and to the ``k``-th neighbour, the
kernel's effective number of neighbours ``(sum w)^2 / sum w^2`` with ``w = 1 / (d^2 + delta)`` (``k``
when the kernel is flat: the estimate is a plain mean of ``k`` values; 1 when the nearest dominates),
the median key norm, and the spread of the neighbours' values. ``delta`` and ``k`` are the run's.

It also asks whether the greedy policy the dictionaries define depends on the state: all the probed keys
of a seed (states the agent visited, whatever it did there) are looked up in every action's table,
leaving out exact matches (a key would otherwise find itself in the table it came from), and it reports
how the greedy actions are shared out, how often the greedy action is the one played there (the table
the key came from), and the median gap between the best and second-best estimate. A policy that does
one thing everywhere (one action's share near 1) or estimates that barely differ between actions mean
that the embedding does not tell the states apart.

    python benchmarks/dnd_probe.py runs/ec_nec_breakout [--queries 300] [--update U]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # run as `python benchmarks/dnd_probe.py`
    sys.path.insert(0, str(_ROOT))

from benchmarks import _common  # noqa: E402


def probe_table(
    keys: np.ndarray, values: np.ndarray, queries: np.ndarray, k: int, delta: float
) -> dict[str, float]:
    """Neighbour statistics of ``queries`` (rows of ``keys``) among the other rows of ``keys``."""
    d2 = ((queries[:, None, :] - keys[None, :, :]) ** 2).sum(-1)
    nearest = np.sort(d2, axis=1)[:, 1 : k + 1]  # column 0 is the query itself
    weights = 1.0 / (nearest + delta)
    effective = weights.sum(1) ** 2 / (weights**2).sum(1)
    order = np.argsort(d2, axis=1)[:, 1 : k + 1]
    return {
        "nearest_sq_distance_median": float(np.median(nearest[:, 0])),
        "kth_sq_distance_median": float(np.median(nearest[:, -1])),
        "effective_neighbours_median": float(np.median(effective)),
        "neighbour_value_std_mean": float(values[order].std(1).mean()),
    }


def greedy_actions(
    tables: list[tuple[np.ndarray, np.ndarray]],
    queries: np.ndarray,
    taken: np.ndarray,
    k: int,
    delta: float,
) -> dict[str, Any]:
    """The kernel estimate of every action for ``queries [Q, D]``, from that action's ``(keys, values)``,
    leaving out keys equal to the query; then the greedy actions' shares, the share of queries whose
    greedy action is ``taken [Q]`` (the table the key was stored in: the action played there), and the
    median gap between the best and the second-best estimate (``nan`` with one action)."""
    estimates = np.empty((len(queries), len(tables)))
    for action, (keys, values) in enumerate(tables):
        d2 = (queries**2).sum(1)[:, None] - 2.0 * queries @ keys.T + (keys**2).sum(1)[None, :]
        d2 = np.maximum(d2, 0.0)
        # Exact equality is checked only where the product form puts a pair near 0 (a [Q, C, D] comparison
        # of every pair would be gigabytes at 20,000 rows).
        rows, cols = np.nonzero(d2 < 1e-4)
        same = (queries[rows] == keys[cols]).all(-1)
        d2[rows[same], cols[same]] = np.inf
        order = np.argsort(d2, axis=1, kind="stable")[:, :k]
        near = np.take_along_axis(d2, order, axis=1)
        weights = np.where(np.isfinite(near), 1.0 / (near + delta), 0.0)
        estimates[:, action] = (weights * values[order]).sum(1) / weights.sum(1)
    greedy = estimates.argmax(1)
    ranked = np.sort(estimates, axis=1)
    gap = float(np.median(ranked[:, -1] - ranked[:, -2])) if len(tables) > 1 else float("nan")
    shares = np.bincount(greedy, minlength=len(tables)) / len(queries)
    return {
        "greedy_action_shares": shares.tolist(),
        "greedy_is_taken": float((greedy == taken).mean()),
        "best_minus_second_median": gap,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--queries", type=int, default=300, help="stored keys probed per seed and action")
    parser.add_argument("--update", type=int, default=None, help="checkpoint to read (default: the latest)")
    parser.add_argument("--out", default=None, help="default: benchmarks/results/dnd_probe_<run>.json")
    args = parser.parse_args(argv)
    import orbax.checkpoint as ocp

    from jaxmeta import config

    run_dir = Path(args.run_dir)
    raw, _ = _common.read_run_config(run_dir)
    cfg = config.from_dict(raw)
    if cfg.algo.name != "nec":
        raise SystemExit(f"{run_dir} is a {cfg.algo.name} run, not an nec run")
    with ocp.CheckpointManager((run_dir / "checkpoints").absolute()) as manager:
        update = manager.latest_step() if args.update is None else args.update
        if update is None or update not in manager.all_steps():
            raise SystemExit(
                f"no checkpoint{'' if args.update is None else f' at update {update}'} in {run_dir}"
            )
        dnd = manager.restore(update, args=ocp.args.StandardRestore())["dnd"]
    keys, values, valid = (np.asarray(dnd[name]) for name in ("keys", "values", "valid"))
    k, delta = cfg.algo.num_neighbours, cfg.algo.delta
    rng = np.random.default_rng(0)
    per_seed, policies = [], []
    for seed in range(keys.shape[0]):
        actions, tables, probed = [], [], []
        for action in range(keys.shape[1]):
            rows = np.flatnonzero(valid[seed, action])
            table_keys, table_values = keys[seed, action, rows], values[seed, action, rows]
            picked = rng.choice(len(rows), min(args.queries, len(rows)), replace=False)
            stats = probe_table(table_keys, table_values, table_keys[picked], k, delta)
            tables.append((table_keys, table_values))
            probed.append(table_keys[picked])
            stats["rows"] = len(rows)
            stats["key_norm_median"] = float(np.median(np.linalg.norm(table_keys, axis=-1)))
            actions.append(stats)
            print(
                f"seed {seed} action {action}: {len(rows)} rows, key norm {stats['key_norm_median']:.2f}; "
                f"squared distance to the nearest {stats['nearest_sq_distance_median']:.2e}, to the {k}th "
                f"{stats['kth_sq_distance_median']:.2e} (delta {delta:g}); the kernel averages "
                f"{stats['effective_neighbours_median']:.1f} of {k}; neighbour values' std "
                f"{stats['neighbour_value_std_mean']:.2f}"
            )
        per_seed.append(actions)
        taken = np.concatenate([np.full(len(q), action) for action, q in enumerate(probed)])
        policy = greedy_actions(tables, np.concatenate(probed), taken, k, delta)
        policies.append(policy)
        shares = ", ".join(f"{share:.2f}" for share in policy["greedy_action_shares"])
        print(
            f"seed {seed}: greedy action shares over {sum(len(q) for q in probed)} visited states {shares}; "
            f"greedy where it was played {policy['greedy_is_taken']:.2f}; best minus second-best estimate, "
            f"median {policy['best_minus_second_median']:.3f}"
        )
    report = {
        "run_dir": str(run_dir),
        "update": int(update),
        "num_neighbours": k,
        "delta": delta,
        "queries": args.queries,
        "per_seed": per_seed,
        "greedy_policy": policies,
    }
    out = Path(args.out) if args.out else _common.RESULTS_DIR / f"dnd_probe_{run_dir.name}.json"
    _common.write_json(report, out)
    return report


if __name__ == "__main__":
    main()

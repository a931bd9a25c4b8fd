"""DND lookup throughput next to faiss-cpu ``IndexFlatL2`` and a plain ``jax.lax.top_k``, in one process.

The work (as ``../shared/anchors/knn_bench.py`` measured it): ``N`` keys of size 128 (float32, standard
normal), a batch of ``B`` queries, the exact ``k = 50`` nearest keys by squared Euclidean distance.
The contenders, on the same keys and queries:

- ``faiss_blas``: faiss ``IndexFlatL2.search`` with ``distance_compute_blas_threshold = 0`` (its sgemm
  path for every batch size; the reference of the targets);
- ``faiss_default``: the same with faiss's default threshold (its SIMD loop below 20 queries);
- ``jax_top_k``: one jitted ``lax.top_k`` over ``2 q.k - |k|^2`` with cached key norms, the keys an
  argument of the compiled function (as a DND's table is);
- ``dnd_search``: ``jaxmeta.memory.dnd.search`` on a one-action table of the same keys;
- ``dnd_lookup``: ``jaxmeta.memory.dnd.lookup``: the search, the gather, the kernel estimate and the
  refreshed ages (the whole read a NEC step does).

Each contender is warmed up, then timed in blocks of calls of about 0.3 s, the contenders interleaved
and their order rotated from repeat to repeat so that load changes hit all alike; reported are medians
(queries per second = B / median seconds per call) and every block, with compile times apart.
Correctness: each query's neighbours must be faiss's (as sets), up to ties at the k-th distance.

Memory: ``--memory`` compiles ``lookup`` and ``write`` for 4 actions x 5e5 x 128 with the table donated,
runs them once in a fresh process, and reports XLA's memory analysis (arguments, outputs, temporaries)
and the process's peak resident memory.

    python benchmarks/dnd_lookup.py [--cases 500000x32,50000x1] [--repeats 7] [--out FILE.json]
    python benchmarks/dnd_lookup.py --quick          # small sizes, writes nothing unless --out
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:  # run as `python benchmarks/dnd_lookup.py`
    sys.path.insert(0, _ROOT)

from benchmarks import _common  # noqa: E402
from jaxmeta.memory import dnd as dnd_lib  # noqa: E402

DEFAULT_OUT = _common.RESULTS_DIR / "dnd_lookup.json"
KEY_SIZE, K = 128, 50
# Targets of issue 12, against faiss's BLAS path: (N, B) -> minimum dnd_search / faiss_blas.
TARGETS = {(500_000, 32): 1.0, (50_000, 1): 5.0}


def import_faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise SystemExit("faiss is not installed: pip install -e '.[bench]'") from None
    return faiss


def contenders(faiss: Any, keys: np.ndarray, queries: np.ndarray) -> tuple[dict[str, Callable], dict]:
    """Blocking zero-argument callables for each contender, and the compile seconds of the JAX ones."""
    index = faiss.IndexFlatL2(keys.shape[1])
    index.add(keys)
    default_threshold = faiss.cvar.distance_compute_blas_threshold

    def faiss_search(threshold: int) -> Callable[[], Any]:
        def run() -> Any:
            faiss.cvar.distance_compute_blas_threshold = threshold
            return index.search(queries, K)

        return run

    table = dnd_lib.from_arrays(keys[None], np.zeros((1, len(keys)), np.float32))
    device_keys, device_norms = table.keys[0], table.key_norms[0]
    device_queries = jnp.asarray(queries)

    def plain_top_k(stored: jax.Array, norms: jax.Array, q: jax.Array) -> tuple[jax.Array, jax.Array]:
        return jax.lax.top_k(2.0 * q @ stored.T - norms[None], K)

    fns: dict[str, Callable[[], Any]] = {
        "faiss_blas": faiss_search(0),
        "faiss_default": faiss_search(default_threshold),
    }
    compile_s = {}

    def compiled(name: str, fn: Callable[..., Any], *args: Any, donate: bool = False) -> Any:
        start = time.perf_counter()
        executable = jax.jit(fn, donate_argnums=0 if donate else ()).lower(*args).compile()
        compile_s[name] = time.perf_counter() - start
        return executable

    top_k = compiled("jax_top_k", plain_top_k, device_keys, device_norms, device_queries)
    fns["jax_top_k"] = lambda: jax.block_until_ready(top_k(device_keys, device_norms, device_queries))
    search = compiled("dnd_search", lambda t, q: dnd_lib.search(t, q, K), table, device_queries)
    fns["dnd_search"] = lambda: jax.block_until_ready(search(table, device_queries))
    # A lookup returns the table with refreshed ages: donated and carried, as in a training loop (without
    # donation every call would copy the whole table into its output).
    lookup_table = [dnd_lib.from_arrays(keys[None], np.zeros((1, len(keys)), np.float32))]
    lookup = compiled(
        "dnd_lookup", lambda t, q: dnd_lib.lookup(t, q, K)[:2], lookup_table[0], device_queries, donate=True
    )

    def run_lookup() -> Any:
        estimates, lookup_table[0] = lookup(lookup_table[0], device_queries)
        return jax.block_until_ready(estimates)

    fns["dnd_lookup"] = run_lookup
    return fns, compile_s


def check_against_faiss(faiss_result: tuple, neighbours: dnd_lib.Neighbours) -> dict[str, Any]:
    """Same neighbour sets as faiss, up to ties at the k-th distance (relative 1e-5)."""
    faiss_d, faiss_i = faiss_result
    ours_i = np.asarray(neighbours.indices[:, 0])
    ours_d = np.asarray(neighbours.sq_distances[:, 0])
    different, unexplained = 0, 0
    for b in range(len(faiss_i)):
        missing = set(faiss_i[b].tolist()) - set(ours_i[b].tolist())
        different += len(missing)
        kth = max(faiss_d[b, -1], ours_d[b, -1])
        for row in missing:
            d = faiss_d[b, list(faiss_i[b]).index(row)]
            if abs(d - kth) > 1e-5 * max(kth, 1.0):
                unexplained += 1
    return {
        "neighbours_not_in_faiss": different,
        "not_explained_by_ties": unexplained,
        "max_abs_distance_difference": float(np.abs(np.sort(ours_d, -1) - faiss_d).max()),
    }


def bench_case(faiss: Any, num_keys: int, batch: int, repeats: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    keys = rng.standard_normal((num_keys, KEY_SIZE), dtype=np.float32)
    queries = rng.standard_normal((batch, KEY_SIZE), dtype=np.float32)
    fns, compile_s = contenders(faiss, keys, queries)
    correctness = check_against_faiss(fns["faiss_blas"](), fns["dnd_search"]())
    timings = _common.interleaved_medians(fns, repeats)
    result: dict[str, Any] = {"keys": num_keys, "batch": batch, "k": K, "key_size": KEY_SIZE}
    for name, timing in timings.items():
        median = statistics.median(timing["block_s_per_call"])
        result[name] = {**timing, "median_s": median, "queries_per_s": batch / median}
        if name in compile_s:
            result[name]["compile_s"] = compile_s[name]
    for name in ("jax_top_k", "dnd_search", "dnd_lookup"):
        for ref in ("faiss_blas", "faiss_default"):
            result[f"{name}_over_{ref}"] = result[name]["queries_per_s"] / result[ref]["queries_per_s"]
    result["dnd_search_over_jax_top_k"] = (
        result["dnd_search"]["queries_per_s"] / result["jax_top_k"]["queries_per_s"]
    )
    target = TARGETS.get((num_keys, batch))
    if target is not None:
        result["target_dnd_search_over_faiss_blas"] = target
        result["target_met"] = result["dnd_search_over_faiss_blas"] >= target
    result["correctness"] = correctness
    return result


def table_memory(num_actions: int = 4, capacity: int = 500_000, batch: int = 32) -> dict[str, Any]:
    """Peak memory of a lookup and a write on a large table, compiled with the table donated."""
    table = dnd_lib.init(num_actions, capacity, KEY_SIZE)
    queries = jnp.ones((batch, KEY_SIZE), jnp.float32)
    actions = jnp.arange(batch, dtype=jnp.int32) % num_actions
    values = jnp.ones((batch,), jnp.float32)
    jax.block_until_ready(table)
    rss_table = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    table_bytes = sum(x.nbytes for x in jax.tree.leaves(table))
    out: dict[str, Any] = {
        "actions": num_actions,
        "capacity": capacity,
        "key_size": KEY_SIZE,
        "batch": batch,
        "table_bytes": table_bytes,
    }

    def run_donated(fn: Callable[..., Any], *args: Any) -> tuple[Any, dict[str, Any]]:
        compiled = jax.jit(fn, donate_argnums=0).lower(*args).compile()
        analysis = compiled.memory_analysis()
        start = time.perf_counter()
        result = jax.block_until_ready(compiled(*args))
        return result, {
            "argument_bytes": analysis.argument_size_in_bytes,
            "output_bytes": analysis.output_size_in_bytes,
            "aliased_bytes": analysis.alias_size_in_bytes,
            "temp_bytes": analysis.temp_size_in_bytes,
            "first_call_s": time.perf_counter() - start,
            "table_donated": bool(args[0].keys.is_deleted()),
        }

    table, out["write"] = run_donated(dnd_lib.write, table, actions, queries, values)
    (_, table), out["lookup"] = run_donated(lambda t, q: dnd_lib.lookup(t, q, K)[:2], table, queries)
    out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out["rss_after_init_bytes"] = rss_table * 1024
    return out


def format_table(report: dict[str, Any]) -> str:
    lines = [
        "| keys x batch | faiss BLAS q/s | faiss default q/s | plain top_k q/s | dnd.search q/s | "
        "dnd.lookup q/s | search / faiss BLAS | target | compile s (top_k, search, lookup) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["results"]:
        target = r.get("target_dnd_search_over_faiss_blas")
        lines.append(
            f"| {r['keys']:,} x {r['batch']} | {r['faiss_blas']['queries_per_s']:,.0f} | "
            f"{r['faiss_default']['queries_per_s']:,.0f} | {r['jax_top_k']['queries_per_s']:,.0f} | "
            f"{r['dnd_search']['queries_per_s']:,.0f} | {r['dnd_lookup']['queries_per_s']:,.0f} | "
            f"{r['dnd_search_over_faiss_blas']:.2f}x | "
            f"{'-' if target is None else f'>= {target:g}x: ' + ('met' if r['target_met'] else 'missed')} | "
            f"{r['jax_top_k']['compile_s']:.2f}, {r['dnd_search']['compile_s']:.2f}, "
            f"{r['dnd_lookup']['compile_s']:.2f} |"
        )
    return "\n".join(lines)


def parse_cases(text: str) -> list[tuple[int, int]]:
    cases = []
    for item in text.split(","):
        try:
            num_keys, batch = (int(float(x)) for x in item.lower().split("x"))
        except ValueError:
            raise SystemExit(f"--cases: {item!r} is not KEYSxBATCH, e.g. 500000x32") from None
        if num_keys < K or batch < 1:
            raise SystemExit(f"--cases: {item!r} needs at least {K} keys and a batch >= 1")
        cases.append((num_keys, batch))
    return cases


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=None, help="KEYSxBATCH,... (default 500000x32,50000x1)")
    parser.add_argument("--repeats", type=int, default=None, help="timed blocks per contender (default 7)")
    parser.add_argument("--quick", action="store_true", help="small sizes, 2 repeats, no memory section")
    parser.add_argument("--memory", action="store_true", help="only the memory section, printed as JSON")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory section")
    parser.add_argument("--out", type=Path, default=None, help=f"JSON file (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    if args.memory:
        report = table_memory()
        print(json.dumps(report))
        return report
    faiss = import_faiss()
    cases = parse_cases(args.cases or ("20000x8,5000x1" if args.quick else "500000x32,50000x1"))
    repeats = args.repeats or (2 if args.quick else 7)
    load_start = _common.load_average()
    report: dict[str, Any] = {
        "command": _common.command_line(__file__, list(argv if argv is not None else sys.argv[1:])),
        "faiss_version": faiss.__version__,
        "faiss_threads": faiss.omp_get_max_threads(),
        "results": [bench_case(faiss, n, b, repeats) for n, b in cases],
    }
    print(format_table(report))
    if not (args.quick or args.no_memory):
        # A fresh process, so that its peak memory is the table's and not the cases' above.
        done = subprocess.run(
            [sys.executable, __file__, "--memory"], capture_output=True, text=True, check=True
        )
        report["memory"] = json.loads(done.stdout.strip().splitlines()[-1])
        m = report["memory"]
        print(
            f"4 x 5e5 x 128 table: {m['table_bytes'] / 2**30:.2f} GiB; "
            f"peak RSS {m['peak_rss_bytes'] / 2**30:.2f} GiB; "
            f"temporaries: lookup {m['lookup']['temp_bytes'] / 2**20:.0f} MiB, "
            f"write {m['write']['temp_bytes'] / 2**20:.0f} MiB; donated: "
            f"{m['lookup']['table_donated'] and m['write']['table_donated']}"
        )
    out = args.out if args.out is not None else (None if args.quick else DEFAULT_OUT)
    return _common.finish_report(report, load_start, str(out) if out else None)


if __name__ == "__main__":
    main()

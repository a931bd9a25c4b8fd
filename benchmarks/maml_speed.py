"""Second-order MAML meta-iterations per second on the sinusoid: jaxmeta.meta against PyTorch.

The same work on every side, timed in one process (interleaved blocks, medians), as the anchor harness
``../shared/anchors/maml_bench.py`` measures it: one meta-iteration draws 25 sinusoid tasks with K = 10
support and 10 query points each, adapts a 1-40-40-1 ReLU network to each task with one SGD step of
0.01 on its support points, differentiates the mean query loss through that step (second order) and
takes an Adam step of 1e-3.

* **torch loop**: a Python loop over the tasks, ``torch.autograd.grad(create_graph=True)`` for the
  inner step, one backward of the summed query losses (what learn2learn's MAML does);
* **torch.func**: ``vmap`` over tasks of ``grad`` of the adapted query loss, one backward;
* **ours, per-step jit**: ``jax.grad`` of :func:`jaxmeta.meta.maml_loss` (the flax regressor of
  :mod:`jaxmeta.meta.sinusoid`) and optax Adam, one jitted call per meta-iteration;
* **ours, lax.scan**: the same step, ``--scan`` of them in one jitted ``lax.scan`` (how the runner
  trains: a chunk of updates per call); its time is divided by ``--scan``.

Compile times (ours) are reported apart; torch's first call is reported as its warm-up.

    python benchmarks/maml_speed.py [--repeats 7] [--scan 100] [--quick] [--out PATH]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # run as `python benchmarks/maml_speed.py`
    sys.path.insert(0, str(_ROOT))

from benchmarks import _common  # noqa: E402
from jaxmeta import meta  # noqa: E402
from jaxmeta.algos.api import training_tasks  # noqa: E402
from jaxmeta.meta import sinusoid  # noqa: E402

META_BATCH, K_SHOT, NUM_QUERY, INNER_STEP, OUTER_LR, HIDDEN = 25, 10, 10, 0.01, 1e-3, (40, 40)
TARGETS = {"torch.func": 5.0, "torch loop": 40.0}  # issue 14: ours (scan) >= this x each


# ====================================================================== PyTorch references
def torch_sides(seed: int) -> dict[str, Any]:
    """The two PyTorch meta-steps, each with its own network and Adam (same sizes as ours)."""
    import torch
    from torch import nn
    from torch.func import grad as func_grad
    from torch.func import vmap

    torch.manual_seed(seed)

    def network_params() -> dict[str, torch.Tensor]:
        net = nn.Sequential(
            nn.Linear(1, HIDDEN[0]), nn.ReLU(), nn.Linear(*HIDDEN), nn.ReLU(), nn.Linear(HIDDEN[1], 1)
        )
        return {name: p for name, p in net.named_parameters()}

    def forward(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(x @ params["0.weight"].T + params["0.bias"])
        h = torch.relu(h @ params["2.weight"].T + params["2.bias"])
        return h @ params["4.weight"].T + params["4.bias"]

    def mse(params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((forward(params, x) - y) ** 2).mean()

    def tasks() -> tuple[torch.Tensor, ...]:
        amplitude = (
            torch.rand(META_BATCH, 1, 1) * (sinusoid.AMPLITUDE[1] - sinusoid.AMPLITUDE[0])
            + sinusoid.AMPLITUDE[0]
        )
        phase = torch.rand(META_BATCH, 1, 1) * math.pi
        x = torch.rand(META_BATCH, K_SHOT + NUM_QUERY, 1) * 10 - 5
        y = amplitude * torch.sin(x - phase)
        return x[:, :K_SHOT], y[:, :K_SHOT], x[:, K_SHOT:], y[:, K_SHOT:]

    loop_params = network_params()
    loop_opt = torch.optim.Adam(loop_params.values(), OUTER_LR)

    def loop_step() -> float:
        xs, ys, xq, yq = tasks()
        loop_opt.zero_grad()
        names, values = list(loop_params), list(loop_params.values())
        total = 0.0
        for t in range(META_BATCH):
            grads = torch.autograd.grad(mse(loop_params, xs[t], ys[t]), values, create_graph=True)
            adapted = {n: p - INNER_STEP * g for n, p, g in zip(names, values, grads, strict=True)}
            total = total + mse(adapted, xq[t], yq[t])
        (total / META_BATCH).backward()
        loop_opt.step()
        return float(total.detach())

    func_params = network_params()
    func_opt = torch.optim.Adam(func_params.values(), OUTER_LR)

    def task_loss(params: dict[str, torch.Tensor], xs: Any, ys: Any, xq: Any, yq: Any) -> torch.Tensor:
        grads = func_grad(mse)(params, xs, ys)
        return mse({k: params[k] - INNER_STEP * grads[k] for k in params}, xq, yq)

    def func_step() -> float:
        xs, ys, xq, yq = tasks()
        func_opt.zero_grad()
        loss = vmap(task_loss, in_dims=(None, 0, 0, 0, 0))(func_params, xs, ys, xq, yq).mean()
        loss.backward()
        func_opt.step()
        return float(loss)

    return {
        "torch loop": loop_step,
        "torch.func": func_step,
        "threads": torch.get_num_threads(),
        "version": torch.__version__,
    }


# ====================================================================== ours
def jax_sides(seed: int, scan: int) -> tuple[dict[str, Any], dict[str, float]]:
    network = sinusoid.regressor(HIDDEN)
    loss = sinusoid.mse_loss(network.apply)
    optimizer = optax.adam(OUTER_LR)
    problem = type("Problem", (), {"k_shot": K_SHOT, "num_query": NUM_QUERY})

    def meta_step(
        carry: tuple[Any, Any, jax.Array], _: Any = None
    ) -> tuple[tuple[Any, Any, jax.Array], jax.Array]:
        params, opt_state, key = carry
        key, task_key = jax.random.split(key)
        support, query = training_tasks(task_key, META_BATCH, problem)
        value, grads = jax.value_and_grad(meta.maml_loss)(
            params, support, query, inner_loss=loss, num_steps=1, step_size=INNER_STEP
        )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, key), value

    params = network.init(jax.random.PRNGKey(seed), jnp.zeros((1, 1)))
    state = {"step": (params, optimizer.init(params), jax.random.PRNGKey(seed + 1))}
    state["scan"] = state["step"]
    scan_name = f"ours, lax.scan x{scan}"
    compiled, compile_s = {}, {}
    for name, slot, fn in (
        ("ours, per-step jit", "step", meta_step),
        (scan_name, "scan", lambda c: jax.lax.scan(meta_step, c, None, length=scan)),
    ):
        start = time.perf_counter()
        compiled[slot] = jax.jit(fn).lower(state[slot]).compile()
        compile_s[name] = time.perf_counter() - start

    def per_step() -> None:
        state["step"], value = compiled["step"](state["step"])
        value.block_until_ready()

    def scanned() -> None:
        state["scan"], values = compiled["scan"](state["scan"])
        values.block_until_ready()

    return {"ours, per-step jit": per_step, scan_name: scanned}, compile_s


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="interleaved timed blocks per side")
    parser.add_argument("--scan", type=int, default=100, help="meta-iterations per lax.scan call")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 repeats, scan of 5, short blocks")
    parser.add_argument("--out", default=str(_common.RESULTS_DIR / "maml_speed.json"))
    args = parser.parse_args(argv)
    try:
        torch_fns = torch_sides(args.seed)
    except ImportError:
        print("maml_speed needs PyTorch: pip install -e '.[bench]' (torch==2.13.0, CPU)", file=sys.stderr)
        raise SystemExit(2) from None
    block_s = 0.3
    if args.quick:
        args.repeats, args.scan, block_s = 2, 5, 0.05
    load_start = _common.load_average()
    ours, compile_s = jax_sides(args.seed, args.scan)
    fns = {"torch loop": torch_fns["torch loop"], "torch.func": torch_fns["torch.func"], **ours}
    first_call_s = {}
    for name in ("torch loop", "torch.func"):
        start = time.perf_counter()
        fns[name]()
        first_call_s[name] = time.perf_counter() - start
    blocks = _common.interleaved_medians(fns, args.repeats, block_s)
    per_iteration = {}
    for name, timing in blocks.items():
        divide = args.scan if "scan" in name else 1
        per_iteration[name] = [s / divide for s in timing["block_s_per_call"]]
    rates = {name: 1.0 / statistics.median(times) for name, times in per_iteration.items()}
    scan_name = f"ours, lax.scan x{args.scan}"
    ratios = {
        f"{scan_name} / {ref}": rates[scan_name] / rates[ref] for ref in ("torch loop", "torch.func")
    } | {
        f"ours, per-step jit / {ref}": rates["ours, per-step jit"] / rates[ref]
        for ref in ("torch loop", "torch.func")
    }
    report = {
        "command": _common.command_line(__file__, argv if argv is not None else sys.argv[1:]),
        "work": f"second-order MAML meta-iteration: {META_BATCH} tasks x K={K_SHOT} (+{NUM_QUERY} query), "
        f"1 inner SGD step {INNER_STEP}, 1-{HIDDEN[0]}-{HIDDEN[1]}-1 ReLU, Adam {OUTER_LR}, "
        "task sampling included",
        "torch": {
            "version": torch_fns["version"],
            "threads": torch_fns["threads"],
            "first_call_s": first_call_s,
        },
        "jax_version": jax.__version__,
        "compile_s": compile_s,
        "meta_iterations_per_s": rates,
        "seconds_per_iteration": per_iteration,
        "calls_per_block": {name: timing["calls_per_block"] for name, timing in blocks.items()},
        "ratios": ratios,
        "targets": {
            f"{scan_name} / {ref} >= {x}": rates[scan_name] / rates[ref] >= x for ref, x in TARGETS.items()
        },
        "repeats": args.repeats,
        "quick": args.quick,
    }
    for name, rate in rates.items():
        print(
            f"{name:>24}: {rate:10,.1f} meta-iterations/s"
            + (f"  (compile {compile_s[name]:.2f} s)" if name in compile_s else "")
        )
    for name, ratio in ratios.items():
        print(f"{name}: {ratio:.2f}x")
    return _common.finish_report(
        report, load_start, None if args.quick and args.out == parser.get_default("out") else args.out
    )


if __name__ == "__main__":
    main()

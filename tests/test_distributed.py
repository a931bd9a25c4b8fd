"""Two processes on localhost, joined by ``jax.distributed``, train four seeds as one run.

Each process owns one CPU device; the runner's seed mesh spans both, so each
process trains two of the four seeds and process 0 writes the run directory.
The result must equal the same four seeds trained in one process, to float
rounding (each device vectorises two seeds instead of four, so XLA may sum
in another order; see README, "Beyond one machine"). The method is MAML on
the sinusoids: the sharding is the runner's, whatever the method, and this
one compiles in ~3 s (a Gridworld method costs each of the three JAX
processes ~9 s more).
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
from helpers import TEST_XLA_FLAGS, TINY_MAML_RUN, subprocess_timeout

from jaxmeta import config, runner

ROOT = Path(__file__).resolve().parents[1]
ARGS = [*TINY_MAML_RUN, "seeds=4"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def rows(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_train_four_seeds_like_one(tmp_path):
    port = free_port()
    procs = []
    for process_id in (0, 1):
        env = {
            **os.environ,
            "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": TEST_XLA_FLAGS,  # one device per process
            "JAXMETA_DISTRIBUTED": "1",
            "JAX_COORDINATOR_ADDRESS": f"localhost:{port}",
            "JAXMETA_NUM_PROCESSES": "2",
            "JAXMETA_PROCESS_ID": str(process_id),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "jaxmeta.train", *ARGS, f"run_dir={tmp_path / 'two'}"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=subprocess_timeout()))
    finally:
        for proc in procs:
            proc.kill()
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]
    assert "Finished 4 updates x 4 seed(s)" in outputs[0][0]
    assert "Finished" not in outputs[1][0] and "Training" not in outputs[1][0]  # one process speaks for both

    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert two["processes"] == 2 and len(two["devices"]) == 2

    cfg = config.load(
        str(ROOT / "configs" / "sinusoid_maml_k10.yaml"), [*ARGS[1:], f"run_dir={tmp_path / 'one'}"]
    )
    one = runner.run(cfg, log=lambda *_: None)
    assert len(one["devices"]) == 1
    assert two["eval"].keys() == one["eval"].keys() and two["eval"]
    for metric in two["eval"]:
        np.testing.assert_allclose(
            two["eval"][metric]["per_seed"], one["eval"][metric]["per_seed"], rtol=1e-5
        )
    a, b = rows(tmp_path / "two"), rows(tmp_path / "one")
    assert [(r["kind"], r["update"], r["seed"]) for r in a] == [
        (r["kind"], r["update"], r["seed"]) for r in b
    ]
    assert {r["seed"] for r in a} == {0, 1, 2, 3}
    for ra, rb in zip(a, b, strict=True):
        assert ra.keys() == rb.keys()
        for key in ra:
            if isinstance(ra[key], str):
                assert ra[key] == rb[key], key
            else:
                np.testing.assert_allclose(ra[key], rb[key], rtol=1e-5, err_msg=key)
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()) == ["2", "4"]

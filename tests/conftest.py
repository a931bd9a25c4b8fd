"""Test session setup.

* Make the repository root importable (``envs_jax``, ``jaxmeta``) without installing it.
* Share one persistent XLA compilation cache across the tests of a session
  (subprocesses inherit it through the environment): runs that compile the
  same program, e.g. a run and its resumption, then compile it once.
* Compile at LLVM optimisation level 0 (``helpers.TEST_XLA_FLAGS``): the tests
  compile hundreds of small programs and run each briefly, so XLA's backend
  optimisation costs more than it saves (~30% of a tiny run's compile time).
  Benchmarks and runs, outside pytest, keep XLA's defaults.
"""

import os
import sys
import tempfile
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxmeta-xla-cache-")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

from helpers import TEST_XLA_FLAGS  # noqa: E402

if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()

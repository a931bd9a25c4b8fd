"""Test session setup.

* Make the repository root importable (``envs_jax``, ``jaxmeta``) without installing it.
* Share one persistent XLA compilation cache across the tests of a session
  (subprocesses inherit it through the environment): runs that compile the
  same program, e.g. a run and its resumption, then compile it once.
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

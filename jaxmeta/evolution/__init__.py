"""Evolution strategies as pure functions with explicit state (``init`` / ``ask`` / ``tell``).

* :mod:`jaxmeta.evolution.open_es`: OpenES as POET uses it (mirrored sampling, centered ranks, Adam,
  sigma decay with a floor, L2 decay; maximises).
"""

from jaxmeta.evolution import open_es

__all__ = ["open_es"]

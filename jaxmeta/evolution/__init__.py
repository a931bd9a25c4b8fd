"""Evolution strategies as pure functions with explicit state (``init`` / ``ask`` / ``tell``).

* :mod:`jaxmeta.evolution.open_es`: OpenES as POET uses it (mirrored sampling, centered ranks, Adam,
  sigma decay with a floor, L2 decay; maximises).
* :mod:`jaxmeta.evolution.poet_ops`: POET's bookkeeping on fixed-capacity arrays (minimal criterion,
  novelty against the archive, transfer choice, retiring the oldest pairs).
"""

from jaxmeta.evolution import open_es, poet_ops

__all__ = ["open_es", "poet_ops"]

"""rnnlab: recurrent sequence models in JAX.

Importing it sets glibc's malloc to keep the pages of XLA's per-step buffers mapped
(``rnnlab/heap.py``; ``RNNLAB_MALLOC=system`` before the import leaves malloc alone)."""

from rnnlab import heap as _heap

_heap.configure()

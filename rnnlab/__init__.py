"""rnnlab: recurrent sequence models in JAX.

``RNNLAB_MALLOC=keep`` before the import sets glibc's malloc to keep the pages of XLA's
per-step buffers (``rnnlab/heap.py``); by default malloc is left alone."""

from rnnlab import heap as _heap

_heap.configure()

"""glibc malloc settings that keep the memory of XLA's per-call buffers mapped between steps.

XLA on the CPU allocates the buffers of a call (its outputs, and one temporary buffer holding
everything else: oneDNN's workspace, the scan's saved residuals) anew every time the call
runs, and frees them when it ends. glibc serves a request above its mmap threshold (which
adapts, but never past 32 MiB) with a fresh ``mmap`` and gives it back with ``munmap`` on
free, and a heap gives the free space at its top back to the system past a trim threshold.
So every training step touched every page of its large buffers for the first time again: a
minor page fault per 4 KiB page. Measured on 2 cores (``python -m benchmarks.probes pages``,
oneDNN's LSTM, B=16, T=500, H=64, one thread): about 6100 faults per step, a third of the
step's CPU time.

``RNNLAB_MALLOC=keep`` (opt-in; set it before rnnlab is imported) sets M_MMAP_THRESHOLD and
M_TRIM_THRESHOLD to 2 GiB - 1 at import (``rnnlab/__init__.py``): requests below that come
from malloc's heaps, which keep up to that much free space instead of giving it back, so the
buffers of one step reuse the pages of the last. It pays where a step's buffers are 32-64 MiB
and goes no further: a request over 64 MiB from any thread but the main one (XLA runs calls on
its own threads) is still a fresh ``mmap``, since a thread's heap holds at most 64 MiB. Only
M_ARENA_MAX = 1 (one heap for all threads) would cover that, and it made the quickstart take
about twice as long (threads wait for each other's malloc calls; benchmarks/README.md).

Why opt-in: oneDNN's workspace, the largest of those buffers, now lives in the library's own
pool (``onednn.pool``), which removed the faults of the oneDNN path, and what is left gained
little. On the paired grid (benchmarks/README.md) ``keep`` trained the lstm and gru at a
median 1.01x of ``system`` (0.96-1.14x) and the rnn's scan at 0.97x (0.89-1.35x: 1.3x where
its buffers fall in the 32-64 MiB band, a few percent behind elsewhere). That is not enough to
change every importer's malloc, and the price is a process that keeps the memory of its largest
step after the step ends.

``system`` (the default) leaves glibc alone; other C libraries (musl, macOS) are always left
alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

ENV = "RNNLAB_MALLOC"
MODES = ("system", "keep")
# glibc's mallopt parameters (malloc.h) and the values ``keep`` sets; mallopt takes an int.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
LIMIT = 2**31 - 1
KEEP = ((M_MMAP_THRESHOLD, LIMIT), (M_TRIM_THRESHOLD, LIMIT))

_applied: str | None = None  # what configure() did, for applied()


def mode() -> str:
  """``RNNLAB_MALLOC``: ``system`` (unset) or ``keep``; ValueError for anything else."""
  text = os.environ.get(ENV, "system").strip().lower()
  if text not in MODES:
    raise ValueError(f"{ENV} must be system (the default: glibc's own settings) or keep "
                     f"(malloc keeps the pages of XLA's per-step buffers), got "
                     f"{os.environ.get(ENV)!r}")
  return text


def _glibc():
  """The C library if it is glibc (it has mallopt and gnu_get_libc_version), else None."""
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.gnu_get_libc_version.restype = ctypes.c_char_p
    libc.gnu_get_libc_version()
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    return libc
  except (OSError, AttributeError):
    return None


def configure() -> str:
  """Applies ``mode()`` once per process and returns what was done (``applied()``). Never
  raises: a bad ``RNNLAB_MALLOC`` leaves glibc alone here and is reported as a config error
  before training (``training/job.validate``)."""
  global _applied
  if _applied is not None:
    return _applied
  try:
    wanted = mode()
  except ValueError:
    wanted = "system"
  libc = _glibc() if wanted == "keep" else None
  if libc is None:
    _applied = ("system: glibc's own settings" if wanted == "system"
                else "system: the C library is not glibc")
  elif all(libc.mallopt(param, value) == 1 for param, value in KEEP):
    _applied = "keep"
  else:
    _applied = "system: glibc refused the settings"
  return _applied


def applied() -> str | None:
  """``keep`` if the settings are in force, else ``system: <why>``; None before
  ``configure``."""
  return _applied

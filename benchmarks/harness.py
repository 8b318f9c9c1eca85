"""Framework-free pieces of the benchmark: the workload record, the timer, RSS readings.

Nothing here imports jax or torch, so the worker can pin its threads before any
framework starts its thread pools.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import statistics
import time
from typing import Callable

MODES = ("train", "forward")


@dataclasses.dataclass
class Workload:
  """What a backend built for one (framework, cell, batch, length, hidden) case.

  Attributes:
    steps: mode -> zero-argument function that runs one step and waits for it
      (``block_until_ready`` / ``cuda.synchronize``); "train" = forward, backward
      and one Adam update, "forward" = the forward pass only.
    compile_s: mode -> seconds spent compiling (JAX; absent for eager torch).
    memory: mode -> compiled memory analysis in bytes (JAX only).
    flops: mode -> floating-point operations of one step by XLA's cost analysis
      (filled where a benchmark reports them: ``jax_models.build_matmuls``).
  """
  steps: dict[str, Callable[[], None]] = dataclasses.field(default_factory=dict)
  compile_s: dict[str, float] = dataclasses.field(default_factory=dict)
  memory: dict[str, dict] = dataclasses.field(default_factory=dict)
  flops: dict[str, float] = dataclasses.field(default_factory=dict)


def median_seconds(fn: Callable[[], None], warmup: int, repeats: int) -> dict:
  """Times ``fn()`` over ``repeats`` calls after ``warmup`` untimed calls.

  Returns {"seconds": median wall time, "times": wall time of each call,
  "cpu_seconds": median process CPU time (all threads, user + system)}. The
  median, not the mean, because other processes on a shared machine add
  one-sided outliers; CPU time is reported because, unlike wall time, it does
  not grow while the process waits for a core another process holds.
  """
  if repeats < 1 or warmup < 0:
    raise ValueError(f"need repeats >= 1 and warmup >= 0; got repeats={repeats}, "
                     f"warmup={warmup}.")
  for _ in range(warmup):
    fn()
  times, cpu = [], []
  for _ in range(repeats):
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    times.append(time.perf_counter() - start)
    cpu.append(time.process_time() - start_cpu)
  return {"seconds": statistics.median(times), "times": times,
          "cpu_seconds": statistics.median(cpu)}


def current_rss_bytes() -> int:
  """Resident set size of this process now (Linux /proc)."""
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
  """High-water mark of this process's resident set (ru_maxrss is in KiB on Linux)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak_rss() -> bool:
  """Resets the RSS high-water mark (Linux >= 4.0: write 5 to clear_refs).

  Returns False where the kernel refuses (some sandboxes); the peak then also
  covers everything before, compilation included.
  """
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False

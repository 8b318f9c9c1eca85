"""One measurement process: fixes the thread count, imports one framework, prints rows.

``speed.py`` starts one worker per (framework, cell) for the speed grid and one
per memory case, so that no framework's thread pools, allocator or compilation
cache touches another's numbers, and each memory case starts from a fresh heap::

    python -m benchmarks.worker '{"task": "speed", "framework": "torch", ...}'

``paired.py`` starts one long-lived worker per framework in *serve* mode, which
builds a grid point's steps when asked and times a few of them when asked, and
otherwise sits blocked on its stdin (``serve``)::

    python -m benchmarks.worker --serve '{"framework": "torch", "threads": 2, ...}'

Every result is one line ``ROW {json}`` on stdout; anything else there is noise.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from typing import Iterable

from benchmarks import harness

ROW_PREFIX = "ROW "
# framework -> module that builds its workloads; imported only after pin_threads.
BACKENDS = {
    "rnnlab": "benchmarks.jax_models",
    "flax": "benchmarks.jax_models",
    "torch": "benchmarks.torch_models",
    # the linear cells (lru, mingru, minlstm) with their form forced (engine.scan's parallel)
    "rnnlab_par": "benchmarks.jax_models",
    "rnnlab_seq": "benchmarks.jax_models",
    # the fused backward pass forced on (engine.scan(fused=True))
    "rnnlab_fused": "benchmarks.jax_models",
    # oneDNN's fused LSTM and GRU on the CPU (engine.scan(onednn=True); the rnnlab[onednn] extra)
    "rnnlab_onednn": "benchmarks.jax_models",
    # oneDNN off: the XLA scan for every cell (what rnnlab ran before oneDNN was its default)
    "rnnlab_scan": "benchmarks.jax_models",
    # the default path with oneDNN's threads chosen per problem (ENVIRONMENT)
    "rnnlab_auto": "benchmarks.jax_models",
    "rnnlab_passive": "benchmarks.jax_models",
    # the default path with glibc's own malloc settings (RNNLAB_MALLOC=system, rnnlab/heap.py),
    # and Flax with RNNLAB_MALLOC=keep
    "rnnlab_system": "benchmarks.jax_models",
    "flax_keep": "benchmarks.jax_models",
    # engine variants for the slowdown investigation (benchmarks/experiments.py)
    "exp_tmajor": "benchmarks.jax_models",
    "exp_inloop": "benchmarks.jax_models",
    "exp_chunk": "benchmarks.jax_models",
}
# framework -> environment its worker sets before importing anything (the variables are read
# once). Flax's workers import rnnlab (benchmarks/jax_models.py), whose import sets malloc
# where RNNLAB_MALLOC=keep (rnnlab/heap.py): "flax" keeps glibc's own, to time Flax as its
# users run it, whatever the environment says.
ENVIRONMENT = {"rnnlab_auto": {"RNNLAB_ONEDNN_THREADS": "auto"},
               "rnnlab_passive": {"RNNLAB_ONEDNN_THREADS": "auto", "OMP_WAIT_POLICY": "passive"},
               "rnnlab_system": {"RNNLAB_MALLOC": "system"},
               "flax": {"RNNLAB_MALLOC": "system"}, "flax_keep": {"RNNLAB_MALLOC": "keep"}}
# --device -> JAX_PLATFORMS: "cuda" fails loudly if JAX sees no GPU, rather than
# silently timing the CPU.
JAX_PLATFORMS = {"cpu": "cpu", "gpu": "cuda"}


def pin_threads(threads: int, device: str = "cpu") -> None:
  """Limits this process to ``threads`` cores and tells every thread pool so.

  Must run before jax or torch is imported: XLA sizes its CPU thread pool from
  the process's CPU affinity at start-up, OpenMP and MKL (torch) read the
  environment; torch.set_num_threads is set again by its backend. The XLA CPU
  flag is set for ``device="cpu"`` only: it means nothing to a GPU run, and an
  XLA that no longer knows a flag aborts.
  """
  cpus = sorted(os.sched_getaffinity(0))
  if not 1 <= threads <= len(cpus):
    raise ValueError(f"threads must be in [1, {len(cpus)}] (the cores this process may "
                     f"use); got {threads}.")
  os.sched_setaffinity(0, cpus[:threads])
  for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[var] = str(threads)
  if device == "cpu":
    eigen = "true" if threads > 1 else "false"
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen={eigen}".strip()


def backend_for(framework: str):
  if framework not in BACKENDS:
    raise ValueError(f"Unknown framework {framework!r}; valid: {', '.join(BACKENDS)}.")
  return importlib.import_module(BACKENDS[framework])


def _base_row(spec, backend, batch, length, hidden):
  return {
      "framework": spec["framework"], "cell": spec["cell"], "batch": batch,
      "length": length, "hidden": hidden, "input_size": spec.get("input_size") or hidden,
      "threads": spec["threads"], **backend.environment(spec["torch_device"]),
  }


def speed_rows(spec, backend):
  """Times every (config, mode) of a speed spec; yields one row each."""
  for batch, length, hidden in spec["configs"]:
    base = _base_row(spec, backend, batch, length, hidden)
    try:
      work = backend.build(spec["framework"], spec["cell"], batch, length, hidden,
                           base["input_size"], modes=spec["modes"], seed=spec["seed"],
                           torch_device=spec["torch_device"])
    except Exception as e:  # one failed config (out of memory, say) must not lose the grid
      yield from ({**base, "mode": m, "error": repr(e)} for m in spec["modes"])
      continue
    for mode in spec["modes"]:
      yield {**base, "mode": mode, **_timed(work, mode, spec, batch * length)}


def _timed(work, mode, spec, tokens):
  try:
    timing = harness.median_seconds(work.steps[mode], spec["warmup"], spec["repeats"])
  except Exception as e:  # a step can fail only at run time (allocation, say)
    return {"error": repr(e)}
  return {**timing, "tokens_per_s": tokens / timing["seconds"],
          "tokens_per_cpu_s": tokens / max(timing["cpu_seconds"], 1e-9),
          "compile_s": work.compile_s.get(mode)}


def memory_rows(spec, backend):
  """Peak memory of one training step of ``spec``'s case, in this fresh process.

  Two views: XLA's compiled memory analysis (buffers the program allocates:
  temporaries, arguments, outputs) and the process RSS, whose high-water mark
  is reset after compilation so that it covers the step alone where the kernel
  allows.
  """
  batch, length, hidden = spec["configs"][0]
  base = _base_row(spec, backend, batch, length, hidden)
  work = backend.build(spec["framework"], spec["cell"], batch, length, hidden,
                       base["input_size"], modes=("train",), seed=spec["seed"],
                       torch_device=spec["torch_device"], remat=spec["remat"])
  process_peak = harness.peak_rss_bytes()
  was_reset = harness.reset_peak_rss()
  before = harness.current_rss_bytes()
  start = time.perf_counter()
  work.steps["train"]()
  seconds = time.perf_counter() - start
  peak = harness.peak_rss_bytes()
  yield {**base, "mode": "memory", "remat": spec["remat"], "step_seconds": seconds,
         **work.memory["train"], "rss_before_step_bytes": before, "peak_rss_bytes": peak,
         "peak_rss_reset": was_reset, "process_peak_rss_bytes": max(process_peak, peak),
         # the kernel syncs per-thread RSS counters lazily: a tiny step can read a few KiB low
         "step_rss_increase_bytes": max(peak - before, 0) if was_reset else None,
         "device_peak_bytes": backend.device_peak_bytes()}


TASKS = {"speed": speed_rows, "memory": memory_rows}


def _start(spec: dict):
  """Pins threads and picks the platform, then imports and configures the framework."""
  if spec["device"] not in JAX_PLATFORMS:
    raise ValueError(f"Unknown device {spec['device']!r}; valid: {', '.join(JAX_PLATFORMS)}.")
  pin_threads(spec["threads"], spec["device"])
  os.environ.update(ENVIRONMENT.get(spec["framework"], {}))
  os.environ["JAX_PLATFORMS"] = JAX_PLATFORMS[spec["device"]]
  backend = backend_for(spec["framework"])
  backend.configure(spec["threads"])
  return backend


def _reply(row: dict) -> None:
  print(ROW_PREFIX + json.dumps(row), flush=True)


def run(spec: dict) -> None:
  """Pins threads, picks the platform, then prints the spec's rows as they come."""
  if spec.get("task") not in TASKS:
    raise ValueError(f"Unknown task {spec.get('task')!r}; valid: {', '.join(TASKS)}.")
  backend = _start(spec)
  for row in TASKS[spec["task"]](spec, backend):
    _reply(row)


def _build_point(spec, backend, cell, batch, length, hidden) -> tuple[dict, dict]:
  """The steps of one grid point (D = H), each run ``warmup`` times untimed; with
  ``spec["profile"]`` also rnnlab's matmuls alone (``jax_models.build_matmuls``).
  Returns ({part: Workload}, the reply)."""
  start = time.perf_counter()
  parts = {"step": backend.build(spec["framework"], cell, batch, length, hidden, hidden,
                                 modes=spec["modes"], seed=spec["seed"],
                                 torch_device=spec["torch_device"])}
  if spec.get("profile"):
    parts["matmuls"] = backend.build_matmuls(cell, batch, length, hidden, hidden,
                                             modes=spec["modes"], seed=spec["seed"])
  for work in parts.values():
    for step in work.steps.values():
      for _ in range(spec["warmup"]):
        step()
  return parts, {"compile_s": {p: w.compile_s for p, w in parts.items()},
                 "flops": {p: w.flops for p, w in parts.items() if w.flops},
                 "build_s": time.perf_counter() - start,
                 **backend.environment(spec["torch_device"])}


def _time(parts, mode, steps, part="step") -> dict:
  """``steps`` timed calls of one built step (``harness.median_seconds``, no warm-up),
  with the wall clock (``time.time``) at their start and end."""
  wall_start = time.time()
  timing = harness.median_seconds(parts[part].steps[mode], 0, steps)
  return {**timing, "wall_start": wall_start, "wall_end": time.time()}


def serve(spec: dict, commands: Iterable[str] = sys.stdin) -> None:
  """Answers one ``ROW {json}`` line per command line, in order, until "quit" or EOF.

  Commands (JSON): {"cmd": "build", "cell", "batch", "length", "hidden"} builds a
  point's steps (freeing the previous point's first) and warms them up;
  {"cmd": "time", "mode", "steps", "part": "step" | "matmuls"} times them. Between
  commands the process only waits on its stdin, so it does no work while another
  framework's worker is being timed. A failed command answers {"error": ...} and
  the worker goes on (a point can run out of memory where the next one fits).
  """
  if spec["device"] == "gpu":  # several frameworks' processes share the GPU
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  backend = _start(spec)
  parts = {}
  for line in commands:
    cmd = json.loads(line)
    try:
      if cmd["cmd"] == "quit":
        return
      if cmd["cmd"] == "build":
        parts = {}
        parts, reply = _build_point(spec, backend, cmd["cell"], cmd["batch"], cmd["length"],
                                    cmd["hidden"])
      elif cmd["cmd"] == "time":
        reply = _time(parts, cmd["mode"], cmd["steps"], cmd.get("part", "step"))
      else:
        raise ValueError(f"Unknown command {cmd['cmd']!r}; valid: build, time, quit.")
    except Exception as e:  # pylint: disable=broad-except (reported, the worker goes on)
      reply = {"error": repr(e)}
    _reply(reply)


if __name__ == "__main__":
  if sys.argv[1] == "--serve":
    serve(json.loads(sys.argv[2]))
  else:
    run(json.loads(sys.argv[1]))

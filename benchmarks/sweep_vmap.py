"""How much faster N sweep runs are when vmapped into one program than one by one.

    python -m benchmarks.sweep_vmap                       # rnn and lstm, N = 3, 9, 18 (~15 min)
    python -m benchmarks.sweep_vmap --quick               # N = 3, 50 steps (~1 min)
    python -m benchmarks.sweep_vmap --processes           # also time the sweep commands

The runs are those of the studies (configs/base.study_config: adding, hidden 32,
batch 32, SGD with momentum) at ``--seq_len``, for ``--steps`` steps, differing
in seed and learning rate (values only, so they can share one program).

Arms, each timed end to end including compilation, evaluation, metrics and
checkpoints (everything a sweep run does):
  one_by_one  ``trainer.train_and_evaluate`` for each run, in this process
  vmapped     ``vmapped.train_runs`` for all N at once, in this process
and with ``--processes``, the user-facing commands on a sweep of N runs:
  sweep       ``launch.py --sweep`` (one launch.py process per run)
  sweep_vmap  ``launch.py --sweep --vmap=N`` (one process)

Everything runs pinned to ``--threads`` cores (default 1: the first core this
process may use), so both arms get the same CPU. Prints a markdown table and
writes ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true", help="N = 3, 50 steps")
  p.add_argument("--cells", default="rnn,lstm")
  p.add_argument("--runs", default="3,9,18", help="comma list of N")
  p.add_argument("--steps", type=int, default=300)
  p.add_argument("--seq_len", type=int, default=100)
  p.add_argument("--threads", type=int, default=1)
  p.add_argument("--processes", action="store_true", help="also time the sweep commands")
  p.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "rnnlab_sweep_vmap.json"))
  args = p.parse_args(argv)
  if args.quick:
    args.runs, args.steps = "3", 50
  args.runs = [int(n) for n in args.runs.split(",")]
  args.cells = args.cells.split(",")
  return args


def _pin(threads: int):
  cores = sorted(os.sched_getaffinity(0))[:threads]
  os.sched_setaffinity(0, cores)
  os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=" + str(threads > 1).lower())
  return cores


def overrides(cell: str, n: int, seq_len: int, steps: int) -> list[dict]:
  """N runs that differ in seed and learning rate only."""
  lrs = (0.003, 0.01, 0.03)
  return [{"task.seq_len": seq_len, "model.cell": cell, "train.num_steps": steps,
           "train.log_every": max(steps // 4, 1), "train.eval_every": max(steps // 2, 1),
           "train.checkpoint_every": max(steps // 2, 1), "optim.learning_rate": lrs[i % 3],
           "seed": i // 3} for i in range(n)]


CONFIG_FILE = '''
from configs import base

def get_config():
  config = base.study_config("adding", {seq_len}, "{cell}", "momentum", 0.01, "global_norm", 1.0)
  config.train.num_steps = {steps}
  config.train.log_every = {log}
  config.train.eval_every = {half}
  config.train.checkpoint_every = {half}
  return config.lock()

def sweep(add):
  for i in range({n}):
    add(**{{"optim.learning_rate": (0.003, 0.01, 0.03)[i % 3], "seed": i // 3}})
'''


def time_in_process(cell, n, args, scratch) -> dict:
  from configs import base  # pylint: disable=g-import-not-at-top
  from rnnlab.training import config as config_lib  # pylint: disable=g-import-not-at-top
  from rnnlab.training import trainer, vmapped  # pylint: disable=g-import-not-at-top
  base_config = base.study_config("adding", args.seq_len, cell, "momentum", 0.01,
                                  "global_norm", 1.0).lock()
  configs = [config_lib.with_overrides(base_config, o)
             for o in overrides(cell, n, args.seq_len, args.steps)]
  quiet = lambda s: None
  start = time.perf_counter()
  alone = [trainer.train_and_evaluate(c, os.path.join(scratch, f"alone_{cell}_{n}_{i}"),
                                    console=quiet) for i, c in enumerate(configs)]
  one_by_one = time.perf_counter() - start
  start = time.perf_counter()
  together = vmapped.train_runs(
      configs, [os.path.join(scratch, f"vmap_{cell}_{n}_{i}") for i in range(n)], console=quiet)
  vmapped = time.perf_counter() - start
  key = alone[0]["primary_metric"]
  diff = max(abs(a["final"][key] - b["final"][key]) / max(abs(a["final"][key]), 1e-12)
             for a, b in zip(alone, together))
  return {"one_by_one_s": one_by_one, "vmapped_s": vmapped,
          "max_rel_diff_final": diff}


def time_processes(cell, n, args, scratch) -> dict:
  path = os.path.join(scratch, f"sweep_{cell}_{n}.py")
  with open(path, "w") as f:
    f.write(CONFIG_FILE.format(seq_len=args.seq_len, cell=cell, steps=args.steps,
                               log=max(args.steps // 4, 1), half=max(args.steps // 2, 1), n=n))
  out = {}
  for arm, extra in (("sweep_s", []), ("sweep_vmap_s", [f"--vmap={n}"])):
    root = os.path.join(scratch, f"root_{arm}_{cell}_{n}")
    cmd = [sys.executable, os.path.join(ROOT, "launch.py"), f"--config={path}", "--sweep",
           f"--workdir={root}", *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": ROOT})
    out[arm] = time.perf_counter() - start
    if proc.returncode != 0:
      raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
  return out


def main(argv=None):
  args = parse_args(argv)
  cores = _pin(args.threads)
  sys.path.insert(0, ROOT)
  scratch = tempfile.mkdtemp(prefix="rnnlab_sweep_vmap_")
  rows = []
  try:
    for cell in args.cells:
      for n in args.runs:
        row = {"cell": cell, "runs": n, "steps": args.steps, "seq_len": args.seq_len,
               **time_in_process(cell, n, args, scratch)}
        if args.processes:
          row.update(time_processes(cell, n, args, scratch))
        rows.append(row)
        print(json.dumps(row), flush=True)
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  with open(args.out, "w") as f:
    json.dump({"cores": cores, "args": vars(args), "rows": rows}, f, indent=1)
  print(render(rows))


def render(rows) -> str:
  head = "| cell | runs N | one by one | vmapped | speed-up | max rel. diff of final metric |"
  lines = [head, "|---|---|---|---|---|---|"]
  procs = any("sweep_s" in r for r in rows)
  if procs:
    lines[0] += " `--sweep` | `--sweep --vmap=N` | speed-up |"
    lines[1] += "---|---|---|"
  for r in rows:
    line = (f"| {r['cell']} | {r['runs']} | {r['one_by_one_s']:.1f} s | {r['vmapped_s']:.1f} s | "
            f"{r['one_by_one_s'] / r['vmapped_s']:.1f}x | {r['max_rel_diff_final']:.1e} |")
    if procs:
      line += (f" {r['sweep_s']:.1f} s | {r['sweep_vmap_s']:.1f} s | "
               f"{r['sweep_s'] / r['sweep_vmap_s']:.1f}x |")
    lines.append(line)
  return "\n".join(lines)


if __name__ == "__main__":
  main()

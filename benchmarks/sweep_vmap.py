"""How much faster N sweep runs are when vmapped into one program than one by one.

    python -m benchmarks.sweep_vmap                       # rnn and lstm, N = 3, 9, 18 (~15 min)
    python -m benchmarks.sweep_vmap --quick               # N = 3, 50 steps (~1 min)
    python -m benchmarks.sweep_vmap --processes           # also time the sweep commands
    python -m benchmarks.sweep_vmap --cells lstm --runs 18 --rounds 3 \
        --compare before=../rnnlab-old --compare after=. --compare onednn=.:model.onednn=True
                                                          # runs/hour of one vmapped group:
                                                          # checkouts and options in turns

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
writes ``--out`` (JSON). ``--arms`` picks the in-process arms, ``--set KEY=VALUE``
(repeatable) overrides the config of every run (``model.onednn=True``), and
``--root DIR`` imports rnnlab and configs from another checkout (an older commit,
to time the code before a change).

``--compare LABEL=DIR[:KEY=VALUE,...]`` (twice or more) answers "how many runs
per hour does a vmapped study group of N runs train, before and after": each
round runs, for each comparand in turn (the order rotated each round), a fresh
process ``sweep_vmap --arms vmapped --root DIR --set ...`` for each cell, so the
drift of a shared machine falls on all alike. It prints runs/hour = N * 3600 /
(seconds of the vmapped group, compilation, evaluation and checkpoints
included), median (lowest-highest) over ``--rounds``, and per comparand the
per-round ratio to the first one, median (lowest-highest); the same for runs per
CPU hour (the process's CPU time, all its threads: on a busy machine wall time
also counts the waits for a core, CPU time does not).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
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
  p.add_argument("--arms", default=",".join(ARMS), help="in-process arms: one_by_one, vmapped")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="config override for every run, e.g. model.onednn=True (repeatable)")
  p.add_argument("--root", default=ROOT, help="the checkout whose rnnlab and configs are "
                 "timed (default: this one)")
  p.add_argument("--compare", action="append", default=[], metavar="LABEL=DIR[:KEY=VALUE,...]",
                 help="runs/hour of the vmapped group for each, in alternating rounds")
  p.add_argument("--rounds", type=int, default=3, help="--compare: rounds")
  p.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "rnnlab_sweep_vmap.json"))
  args = p.parse_args(argv)
  if args.quick:
    args.runs, args.steps = "3", 50
  try:
    args.runs = [int(n) for n in args.runs.split(",")]
    args.cells = args.cells.split(",")
    args.arms = args.arms.split(",")
    bad = sorted(set(args.arms) - set(ARMS))
    if bad or not args.arms:
      raise ValueError(f"--arms: unknown {bad}; valid: {', '.join(ARMS)}.")
    args.overrides = dict(_pair(s, "--set") for s in args.set)
    args.compare = [_comparand(c) for c in args.compare]
    if args.compare and (len(args.compare) < 2 or args.rounds < 1):
      raise ValueError("--compare needs two comparands or more, and --rounds >= 1.")
    if min(args.runs) < 1 or args.steps < 1:
      raise ValueError("--runs and --steps must be positive.")
    if not os.path.isdir(os.path.join(args.root, "rnnlab")):
      raise ValueError(f"--root {args.root!r} is not an rnnlab checkout (no rnnlab/ in it).")
  except ValueError as e:
    p.error(str(e))
  return args


ARMS = ("one_by_one", "vmapped")


def _pair(text: str, flag: str) -> tuple[str, str]:
  key, sep, value = text.partition("=")
  if not sep or not key:
    raise ValueError(f"{flag} takes KEY=VALUE, got {text!r}.")
  return key, value


def _comparand(text: str) -> dict:
  """LABEL=DIR[:KEY=VALUE,...] -> {"label", "root", "set": [KEY=VALUE, ...]}."""
  label, root = _pair(text, "--compare")
  root, _, sets = root.partition(":")
  root = os.path.abspath(root)
  if not os.path.isdir(os.path.join(root, "rnnlab")):
    raise ValueError(f"--compare {label}: {root!r} is not an rnnlab checkout (no rnnlab/).")
  return {"label": label, "root": root,
          "set": [f"{k}={v}" for k, v in (_pair(s, "--compare") for s in sets.split(",") if s)]}


def _value(text: str):
  """A --set value as the config wants it: JSON (numbers, true/false/null) or Python
  literals True/False/None, else the string itself."""
  literal = {"True": True, "False": False, "None": None}
  if text in literal:
    return literal[text]
  try:
    return json.loads(text)
  except ValueError:
    return text


def _pin(threads: int):
  cores = sorted(os.sched_getaffinity(0))[:threads]
  os.sched_setaffinity(0, cores)
  os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=" + str(threads > 1).lower())
  return cores


def overrides(cell: str, n: int, seq_len: int, steps: int, extra=None) -> list[dict]:
  """N runs that differ in seed and learning rate only (``extra``: set in every run)."""
  lrs = (0.003, 0.01, 0.03)
  return [{"task.seq_len": seq_len, "model.cell": cell, "train.num_steps": steps,
           "train.log_every": max(steps // 4, 1), "train.eval_every": max(steps // 2, 1),
           "train.checkpoint_every": max(steps // 2, 1), "optim.learning_rate": lrs[i % 3],
           "seed": i // 3, **(extra or {})} for i in range(n)]


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
  import rnnlab  # pylint: disable=g-import-not-at-top
  if not os.path.samefile(os.path.dirname(os.path.dirname(rnnlab.__file__)), args.root):
    raise RuntimeError(f"rnnlab was imported from {rnnlab.__file__}, not from --root "
                       f"{args.root}.")
  extra = {k: _value(v) for k, v in args.overrides.items()}
  configs = [config_lib.with_overrides(base_config, o)
             for o in overrides(cell, n, args.seq_len, args.steps, extra)]
  quiet = lambda s: None
  row = {}
  if "one_by_one" in args.arms:
    start = time.perf_counter()
    alone = [trainer.train_and_evaluate(c, os.path.join(scratch, f"alone_{cell}_{n}_{i}"),
                                        console=quiet) for i, c in enumerate(configs)]
    row["one_by_one_s"] = time.perf_counter() - start
  if "vmapped" in args.arms:
    start, cpu = time.perf_counter(), time.process_time()
    together = vmapped.train_runs(
        configs, [os.path.join(scratch, f"vmap_{cell}_{n}_{i}") for i in range(n)],
        console=quiet)
    row["vmapped_s"] = time.perf_counter() - start
    row["vmapped_cpu_s"] = time.process_time() - cpu
    row["runs_per_hour"] = n * 3600 / row["vmapped_s"]
    row["runs_per_cpu_hour"] = n * 3600 / row["vmapped_cpu_s"]
  if len(args.arms) == 2:
    key = alone[0]["primary_metric"]
    row["max_rel_diff_final"] = max(
        abs(a["final"][key] - b["final"][key]) / max(abs(a["final"][key]), 1e-12)
        for a, b in zip(alone, together))
  return row


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


def compare(args) -> list[dict]:
  """--compare: rounds of one fresh process per comparand and cell, order rotated."""
  rows = []
  for r in range(args.rounds):
    shift = r % len(args.compare)
    for c in args.compare[shift:] + args.compare[:shift]:
      for cell in args.cells:
        out = os.path.join(tempfile.mkdtemp(prefix="rnnlab_sweep_cmp_"), "row.json")
        cmd = [sys.executable, "-m", "benchmarks.sweep_vmap", "--arms", "vmapped",
               "--root", c["root"], "--cells", cell, "--runs", ",".join(map(str, args.runs)),
               "--steps", str(args.steps), "--seq_len", str(args.seq_len), "--threads",
               str(args.threads), "--out", out, *(x for s in c["set"] for x in ("--set", s))]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": ROOT})
        if done.returncode != 0:
          raise RuntimeError(f"{c['label']}: {' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
        with open(out) as f:
          for row in json.load(f)["rows"]:
            rows.append({**row, "label": c["label"], "round": r, "root": c["root"],
                         "commit": _commit(c["root"]), "set": c["set"]})
        shutil.rmtree(os.path.dirname(out), ignore_errors=True)
        print(json.dumps(rows[-1]), flush=True)
  return rows


def _commit(root: str) -> str | None:
  done = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                        capture_output=True, text=True)
  return done.stdout.strip() or None


def render_compare(rows, labels) -> str:
  """Runs per hour (wall) and per CPU hour (the process's CPU time: what a busy machine
  does not inflate), median (range) per comparand, and each per-round ratio to the first."""
  lines = ["| cell | runs N | comparand | runs/hour | vs " + labels[0] +
           " | runs per CPU hour | vs " + labels[0] + " |", "|---|---|---|---|---|---|---|"]
  def stats(cell, n, lab, key):
    mine = {l: {r["round"]: r[key] for r in rows
                if (r["cell"], r["runs"], r["label"]) == (cell, n, l) and key in r}
            for l in (lab, labels[0])}
    per = sorted(mine[lab].values())
    ratios = sorted(mine[lab][k] / mine[labels[0]][k] for k in set(mine[lab]) & set(mine[labels[0]]))
    if not per or not ratios:
      return "n/a | n/a"
    return (f"{statistics.median(per):.0f} ({per[0]:.0f}-{per[-1]:.0f}) | "
            f"{statistics.median(ratios):.2f}x ({ratios[0]:.2f}-{ratios[-1]:.2f})")
  for cell, n in dict.fromkeys((r["cell"], r["runs"]) for r in rows):
    for lab in labels:
      lines.append(f"| {cell} | {n} | {lab} | {stats(cell, n, lab, 'runs_per_hour')} | "
                   f"{stats(cell, n, lab, 'runs_per_cpu_hour')} |")
  return "\n".join(lines)


def main(argv=None):
  args = parse_args(argv)
  if args.compare:
    rows = compare(args)
    with open(args.out, "w") as f:
      json.dump({"args": {k: v for k, v in vars(args).items()}, "rows": rows}, f, indent=1)
    print(render_compare(rows, [c["label"] for c in args.compare]))
    return
  cores = _pin(args.threads)
  sys.path.insert(0, args.root)
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
  if any("one_by_one_s" not in r or "vmapped_s" not in r for r in rows):
    return "\n".join(f"| {r['cell']} | {r['runs']} | " + " | ".join(
        f"{k} {v:.1f}" for k, v in r.items() if k.endswith("_s") or k == "runs_per_hour")
        + " |" for r in rows)
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

"""Speed and memory of rnnlab's engine against Flax ``nn.RNN`` and PyTorch, same machine.

    python -m benchmarks.speed --quick          # about a minute
    python -m benchmarks.speed                  # the default grid, 5-10 minutes on 2 cores
    python -m benchmarks.speed --device gpu     # JAX on the GPU, torch on CUDA

Speed: for each cell (lstm, gru, rnn) and each (batch, T, hidden) of the grid,
the median wall time of (a) a training step (forward, backward, one Adam
update on mean(ys^2)) and (b) a forward pass, after warm-up calls. Printed as
tokens per second = batch * T / seconds, with rnnlab / peer ratios (> 1: rnnlab
is faster). Memory: one training step of rnnlab's lstm at long T with and
without remat, as XLA's compiled buffer sizes and the process's peak RSS.

Every (framework, cell) runs in its own process (``benchmarks/worker.py``), and
so does every memory case, all pinned to the same number of cores. All rows go
to ``<out>.json`` and ``<out>.csv``.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks import harness, worker

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
CELLS = ("lstm", "gru", "rnn")
# --cells may also name the linear recurrences (rnnlab and rnnlab_par / rnnlab_seq only).
LINEAR_CELLS = ("lru", "mingru", "minlstm")
REFERENCE = "rnnlab"
# --quick selects the second column; explicit flags override either.
GRIDS = {
    "default": dict(batch=(16, 64), length=(100, 500), hidden=(64, 256), repeats=5, warmup=1,
                    memory_lengths=(1000, 10000), memory_batch=16, memory_hidden=128),
    "quick": dict(batch=(16,), length=(50,), hidden=(64,), repeats=3, warmup=1,
                  memory_lengths=(1000, 10000), memory_batch=4, memory_hidden=32),
}
TORCH_DEVICE = {"cpu": "cpu", "gpu": "cuda"}
PARTS = ("speed", "memory")  # the order they run in
# --metric: which row field the table shows. "cpu" divides by process CPU time
# (all threads), which does not grow while a process waits for a core: the fairer
# view on a busy machine, best read with --threads 1.
METRICS = {"wall": "tokens_per_s", "cpu": "tokens_per_cpu_s"}


def _list(text, kind, valid=None):
  """'a,b' -> tuple; ints must be positive, names in ``valid``."""
  items = tuple(t.strip() for t in text.split(",") if t.strip())
  if not items:
    raise ValueError(f"empty list {text!r}.")
  if kind is int:
    if not all(t.isdigit() and int(t) > 0 for t in items):
      raise ValueError(f"expected positive integers separated by commas, got {text!r}.")
    return tuple(int(t) for t in items)
  unknown = [t for t in items if t not in valid]
  if unknown:
    raise ValueError(f"unknown {unknown} in {text!r}; valid: {', '.join(valid)}.")
  return items


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true", help="tiny grid, ~1 minute")
  p.add_argument("--frameworks", default="rnnlab,flax,torch",
                 help=f"comma list of {', '.join(worker.BACKENDS)}")
  p.add_argument("--cells", default=",".join(CELLS), help="comma list of lstm, gru, rnn, and lru, mingru, minlstm")
  p.add_argument("--modes", default=",".join(harness.MODES), help="train and/or forward")
  p.add_argument("--batch", help="comma list of batch sizes")
  p.add_argument("--length", help="comma list of sequence lengths T")
  p.add_argument("--hidden", help="comma list of hidden sizes H")
  p.add_argument("--input_size", type=int, default=None, help="D; default: the hidden size")
  p.add_argument("--repeats", type=int, help="timed calls per case (median reported)")
  p.add_argument("--warmup", type=int, help="untimed calls before timing")
  p.add_argument("--rounds", type=int, default=1,
                 help="run the speed grid this many times, frameworks in a rotated order "
                      "each round; the table shows medians over rounds and the spread of "
                      "the per-round ratios")
  p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                 help="cores for every framework (default: all this process may use)")
  p.add_argument("--device", default="cpu", choices=tuple(TORCH_DEVICE),
                 help="cpu, or gpu: JAX on its GPU and (unless --torch_device) torch on cuda")
  p.add_argument("--torch_device", choices=tuple(TORCH_DEVICE.values()),
                 help="torch's device; default follows --device")
  p.add_argument("--parts", default=",".join(PARTS), help="speed and/or memory")
  p.add_argument("--memory_lengths", help="T of the memory cases")
  p.add_argument("--memory_batch", type=int)
  p.add_argument("--memory_hidden", type=int)
  p.add_argument("--memory_cells", default="lstm",
                 help="cells of the memory cases (the linear ones with rnnlab and rnnlab_par)")
  p.add_argument("--memory_frameworks", default=REFERENCE,
                 help="rnnlab (the engine's default form) and/or rnnlab_par (the associative "
                      "scan), flax, torch")
  p.add_argument("--memory_remat", default="False,True", help="remat off and/or on")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--timeout", type=int, default=1800, help="seconds per worker process")
  p.add_argument("--metric", default="wall", choices=tuple(METRICS),
                 help="table shows tokens per wall second or per CPU second")
  p.add_argument("--render", metavar="JSON",
                 help="print the tables of a saved <out>.json and exit; runs nothing")
  p.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "rnnlab_speed", "speed"),
                 help="writes <out>.json and <out>.csv")
  return _resolve(p.parse_args(argv))


def _resolve(args):
  """Fills grid defaults, turns comma lists into tuples and validates everything."""
  grid = GRIDS["quick" if args.quick else "default"]
  for name in ("batch", "length", "hidden", "memory_lengths"):
    value = getattr(args, name)
    setattr(args, name, grid[name] if value is None else _list(value, int))
  for name in ("repeats", "warmup", "memory_batch", "memory_hidden"):
    if getattr(args, name) is None:
      setattr(args, name, grid[name])
  args.frameworks = _list(args.frameworks, str, tuple(worker.BACKENDS))
  args.cells = _list(args.cells, str, CELLS + LINEAR_CELLS)
  args.modes = _list(args.modes, str, harness.MODES)
  args.parts = _list(args.parts, str, PARTS)
  args.memory_cells = _list(args.memory_cells, str, CELLS + LINEAR_CELLS)
  args.memory_frameworks = _list(args.memory_frameworks, str, tuple(worker.BACKENDS))
  args.memory_remat = tuple(r == "True" for r in _list(args.memory_remat, str,
                                                       ("False", "True")))
  args.torch_device = args.torch_device or TORCH_DEVICE[args.device]
  _check_positive(args, "repeats", "memory_batch", "memory_hidden", "timeout", "rounds")
  if args.warmup < 0:
    raise ValueError(f"--warmup must be >= 0, got {args.warmup}.")
  if args.input_size is not None:
    _check_positive(args, "input_size")
  check_threads(args.threads)
  return args


def check_threads(threads: int) -> None:
  """Every worker pins itself to the first ``threads`` of this process's cores."""
  cores = len(os.sched_getaffinity(0))
  if not 1 <= threads <= cores:
    raise ValueError(f"--threads must be in [1, {cores}] (the cores this process may use), "
                     f"got {threads}.")


def parse_or_exit(parse, argv, prog):
  """``parse(argv)``; a bad flag (ValueError) ends the program with one line, exit code 2."""
  try:
    return parse(argv)
  except ValueError as e:
    print(f"{prog}: error: {e}", file=sys.stderr)
    raise SystemExit(2) from None


def _check_positive(args, *names):
  for name in names:
    if getattr(args, name) < 1:
      raise ValueError(f"--{name} must be a positive integer, got {getattr(args, name)}.")


def _spec(args, task, framework, cell, configs, **extra):
  return dict(task=task, framework=framework, cell=cell, configs=configs, modes=args.modes,
              warmup=args.warmup, repeats=args.repeats, threads=args.threads,
              device=args.device, torch_device=args.torch_device, seed=args.seed,
              input_size=args.input_size, **extra)


def rotated(items, r: int) -> list:
  """``items`` starting ``r`` places further along (round r's order of the frameworks)."""
  items = list(items)
  k = r % len(items)
  return items[k:] + items[:k]


def speed_specs(args) -> list[dict]:
  """One worker spec per (round, cell, framework), each over the whole grid.

  Rounds run one after another; within round r the frameworks start r places
  further along, so that no framework always runs first (or right after the
  same peer) and slow drifts of the machine fall on every framework alike.
  """
  configs = [[b, t, h] for h in args.hidden for t in args.length for b in args.batch]
  return [_spec(args, "speed", fw, cell, configs, round=r)
          for r in range(args.rounds) for cell in args.cells
          for fw in rotated(args.frameworks, r)]


def memory_specs(args) -> list[dict]:
  """One worker spec per (cell, framework, T, remat): a fresh process each (by default
  rnnlab's lstm, remat off and on). The associative scan (rnnlab_par) exists only for the
  linear cells: the other pairs are skipped."""
  return [_spec(args, "memory", fw, cell, [[args.memory_batch, t, args.memory_hidden]],
                remat=remat)
          for cell in args.memory_cells for fw in args.memory_frameworks
          if not (fw == "rnnlab_par" and cell not in LINEAR_CELLS)
          for t in args.memory_lengths for remat in args.memory_remat]


SPECS = {"speed": speed_specs, "memory": memory_specs}  # --parts -> its worker specs


def worker_env() -> dict:
  """The environment of a worker process: this one's, with the repository importable."""
  return {**os.environ, "PYTHONPATH": os.pathsep.join(
      [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}


def run_worker(spec: dict, timeout: int) -> list[dict]:
  """Runs one worker process; its rows, plus an error row if it failed or timed out."""
  cmd = [sys.executable, "-m", "benchmarks.worker", json.dumps(spec)]
  try:
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=worker_env(), capture_output=True, text=True,
                          timeout=timeout)
    stdout, failure = done.stdout, (done.returncode and done.stderr[-2000:])
  except subprocess.TimeoutExpired as e:  # keep the rows printed before the limit
    stdout = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
    failure = f"worker timed out after {timeout} s"
  rows = [json.loads(line[len(worker.ROW_PREFIX):]) for line in stdout.splitlines()
          if line.startswith(worker.ROW_PREFIX)]
  if failure:
    rows.append({"framework": spec["framework"], "cell": spec["cell"], "mode": spec["task"],
                 "error": failure})
  if "round" in spec:
    for row in rows:
      row["round"] = spec["round"]
  return rows


def run_all(specs, timeout, save=None) -> list[dict]:
  """Runs the workers one after another; ``save(rows)`` after each, so that an
  interrupted run keeps what it measured."""
  rows = []
  for i, spec in enumerate(specs, 1):
    start = time.perf_counter()
    new = run_worker(spec, timeout)
    errors = sum("error" in r for r in new)
    tag = f" round {spec['round']}" if "round" in spec else ""
    print(f"[{i}/{len(specs)}] {spec['task']}{tag} {spec['framework']} {spec['cell']}"
          f"{' remat' if spec.get('remat') else ''}: {len(new)} rows, {errors} errors, "
          f"{time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    rows += new
    if save is not None:
      save(rows)
  return rows


def _case(row):
  return row["cell"], row["mode"], row.get("batch"), row.get("length"), row.get("hidden")


def _by_case(rows, key):
  """(framework, case) -> {round: metric} over the speed rows without errors, and the set
  of (framework, case) that had an error in some round."""
  values, errors = {}, set()
  for r in rows:
    if r["mode"] not in harness.MODES or r.get("batch") is None:
      continue
    k = (r["framework"], *_case(r))
    if "error" in r:
      errors.add(k)
    else:
      values.setdefault(k, {})[r.get("round", 0)] = r[key]
  return values, errors


def _ratios(values, case, peer, reference=REFERENCE):
  """Per-round reference/peer ratios, over the rounds both measured."""
  ref, other = values.get((reference, *case), {}), values.get((peer, *case), {})
  return [ref[r] / other[r] for r in sorted(set(ref) & set(other))]


def speed_table(rows, frameworks, metric="wall", token_range=False,
                reference=REFERENCE) -> str:
  """Tokens/s per framework and reference/peer (default rnnlab/peer) per (cell, mode, B, T,
  H).

  With several rounds, tokens/s is the median over rounds and each ratio is the
  median of the per-round ratios, followed by their range (lowest-highest);
  ``token_range`` adds the range over rounds to the tokens/s too.
  """
  key = METRICS[metric]
  values, errors = _by_case(rows, key)
  cases = sorted({k[1:] for k in values} | {k[1:] for k in errors})
  peers = [f for f in frameworks if f != reference] if reference in frameworks else []
  spread = any(len(v) > 1 for v in values.values())
  width = 20 if spread else 14
  token_width = 22 if spread and token_range else 10

  def tokens(f, case):
    if (f, *case) not in values:
      return "err" if (f, *case) in errors else "-"
    v = [x / 1e3 for x in values[(f, *case)].values()]
    text = f"{statistics.median(v):.1f}k"
    return f"{text} ({min(v):.1f}-{max(v):.1f})" if token_width > 10 and len(v) > 1 else text

  def ratio(case, peer):
    rs = _ratios(values, case, peer, reference)
    if not rs:
      return "-"
    text = f"{statistics.median(rs):.2f}"
    return f"{text} ({min(rs):.2f}-{max(rs):.2f})" if spread and len(rs) > 1 else text

  head = (f"{'cell':5} {'mode':8} {'B':>4} {'T':>5} {'H':>4} | "
          + " ".join(f"{f:>{token_width}}" for f in frameworks) + " | "
          + " ".join(f"{reference + '/' + p:>{width}}" for p in peers))
  lines = [head, "-" * len(head)]
  for case in cases:
    cell, mode, b, t, h = case
    lines.append(f"{cell:5} {mode:8} {b:>4} {t:>5} {h:>4} | "
                 + " ".join(f"{tokens(f, case):>{token_width}}" for f in frameworks)
                 + " | " + " ".join(f"{ratio(case, p):>{width}}" for p in peers))
  return "\n".join(lines)


def ratio_summary(rows, frameworks, metric="wall", reference=REFERENCE) -> str:
  """One line per peer: how the per-point reference/peer ratios (default rnnlab/peer) are
  spread over the grid.

  A point counts as ahead or behind by its median ratio over rounds; "behind in
  every round" counts the points where rnnlab was slower in each round: with
  noise alone that is rare (1 in 2^R per point), so those are the ones to look at.
  """
  values, _ = _by_case(rows, METRICS[metric])
  cases = sorted({k[1:] for k in values})
  lines = []
  for peer in (f for f in frameworks if f != reference):
    per_case = {c: _ratios(values, c, peer, reference) for c in cases}
    per_case = {c: rs for c, rs in per_case.items() if rs}
    if not per_case:
      continue
    med = [statistics.median(rs) for rs in per_case.values()]
    rounds = max(len(rs) for rs in per_case.values())
    behind = [c for c, rs in per_case.items() if statistics.median(rs) < 1]
    line = (f"{reference}/{peer}: {len(med)} points, median {statistics.median(med):.2f}, "
            f"geometric mean {statistics.geometric_mean(med):.2f}, range {min(med):.2f}-"
            f"{max(med):.2f}; ahead at {len(med) - len(behind)}, behind at {len(behind)} "
            f"({sum(m >= 0.9 for m in med if m < 1)} of them by less than 10%)")
    if rounds > 1:
      always = [c for c, rs in per_case.items() if len(rs) == rounds and max(rs) < 1]
      line += (f"; behind in every one of {rounds} rounds at {len(always)}"
               + (": " + ", ".join(" ".join(map(str, c)) for c in always) if always else ""))
    lines.append(line)
  return "\n".join(lines)


def _mib(value) -> str:
  return "-" if value is None else f"{value / 2**20:.1f}"


def memory_table(rows) -> str:
  """Compiled (XLA) and measured (RSS) memory of one training step per (T, remat)."""
  head = (f"{'cell':7} {'framework':10} {'B':>3} {'T':>6} {'H':>4} {'remat':>5} | {'XLA temp':>9} "
          f"{'XLA total':>9} | {'RSS step+':>9} {'RSS peak':>9} {'dev peak':>9} | "
          f"{'step s':>7}  (MiB)")
  lines = [head, "-" * len(head)]
  for r in sorted((r for r in rows if r.get("mode") == "memory" and "error" not in r),
                  key=lambda r: (r["cell"], r["framework"], r["length"], r["remat"])):
    lines.append(f"{r['cell']:7} {r['framework']:10} {r['batch']:>3} {r['length']:>6} "
                 f"{r['hidden']:>4} "
                 f"{str(r['remat']):>5} | {_mib(r.get('xla_temp_bytes')):>9} "
                 f"{_mib(r.get('xla_total_bytes')):>9} | "
                 f"{_mib(r.get('step_rss_increase_bytes')):>9} {_mib(r['peak_rss_bytes']):>9} "
                 f"{_mib(r.get('device_peak_bytes')):>9} | {r['step_seconds']:>7.2f}")
  return "\n".join(lines)


def write_results(rows, meta, out) -> tuple[str, str]:
  """<out>.json: {"meta", "rows"}; <out>.csv: one line per row (lists as JSON)."""
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out + ".json", "w") as f:
    json.dump({"meta": meta, "rows": rows}, f, indent=1)
  fields = list(dict.fromkeys(k for r in rows for k in r))
  with open(out + ".csv", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    for r in rows:
      writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()})
  return out + ".json", out + ".csv"


def _meta(args, argv) -> dict:
  return {"argv": list(argv), "args": dict(vars(args)),
          "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(),
          "python": platform.python_version(), "machine": platform.machine(),
          "cpus_visible": len(os.sched_getaffinity(0)), "loadavg_start": os.getloadavg()}


def print_tables(rows, args) -> None:
  frameworks = list(dict.fromkeys(r["framework"] for r in rows if r["mode"] in harness.MODES))
  if frameworks:
    print(f"\nTokens per {args.metric} second ({args.threads} threads, device {args.device}, "
          f"torch on {args.torch_device}); {REFERENCE}/peer > 1 means {REFERENCE} is faster.")
    print(speed_table(rows, frameworks, args.metric))
    print(ratio_summary(rows, frameworks, args.metric))
  if any(r["mode"] == "memory" for r in rows):
    print("\nPeak memory of one training step. XLA: compiled buffer sizes "
          "(temp = intermediates). RSS step+: peak RSS during the step minus RSS before it "
          "(host memory; near 0 on a GPU). dev peak: the accelerator's peak bytes in use over "
          "the whole process (GPU only).")
    print(memory_table(rows))
  for r in rows:
    if "error" in r:
      print(f"ERROR {r['framework']} {r['cell']} {r['mode']}: {r['error'][-300:]}")


def render(path, metric) -> list[dict]:
  """Prints the tables of a saved results file with the flags it was run with."""
  with open(path) as f:
    saved = json.load(f)
  args = argparse.Namespace(**{**saved["meta"]["args"], "metric": metric})
  print_tables(saved["rows"], args)
  return saved["rows"]


def main(argv=None) -> list[dict]:
  argv = sys.argv[1:] if argv is None else argv
  args = parse_or_exit(parse_args, argv, "benchmarks.speed")
  if args.render:
    return render(args.render, args.metric)
  meta = _meta(args, argv)
  specs = [spec for part in args.parts for spec in SPECS[part](args)]
  rows = run_all(specs, args.timeout, save=lambda rows: write_results(rows, meta, args.out))
  meta["loadavg_end"] = os.getloadavg()
  print_tables(rows, args)
  paths = write_results(rows, meta, args.out)
  print(f"\nwrote {paths[0]} and {paths[1]}; load average {meta['loadavg_start']} -> "
        f"{meta['loadavg_end']}")
  return rows


if __name__ == "__main__":
  main()

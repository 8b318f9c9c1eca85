"""rnnlab against Flax ``nn.RNN`` and PyTorch, timed in alternation: the paired, low-noise view.

    python -m benchmarks.paired                 # rnnlab, flax, torch over the grid below
    python -m benchmarks.paired --quick         # one point per cell (B=16, T=50, H=64)
    python -m benchmarks.paired --cells lstm --batch 16 --length 100 --hidden 64 --rounds 3
    python -m benchmarks.paired --device gpu    # JAX on its GPU, torch on cuda (cuDNN)
    python -m benchmarks.paired --one_process   # the older view: rnnlab and Flax in one process
    python -m benchmarks.paired --out FILE.json --resume  # go on with a grid cut off before

Between separate runs, one point moves by 20-30% on a shared CPU (other jobs,
frequency, thread placement), which swamps the differences asked about. So each
framework gets its own long-lived worker process (``worker.py --serve``: pinned
to the first ``--threads`` cores, its framework imported only then, as
``speed.py``'s workers), one per framework and cell, and the processes take
turns on the same point. For a point (cell, B, T, H = D), each worker first
builds its steps (the workloads of ``jax_models.build`` / ``torch_models.build``:
JAX compiled ahead of time, so compilation is never timed) and runs ``--warmup``
untimed steps of each mode. Then, per mode, ``--rounds`` rounds: in round r each
framework in turn, in the order ``--frameworks`` rotated by r places, times
``--steps_per_round`` steps; the median of those is its time in that round. The
parent waits for each reply before it asks the next worker, and the idle workers
sit blocked on their stdin, so only one process does timed work at any moment,
and whatever the machine does over the minutes of a point falls on all
frameworks alike. Each turn starts 0.1 s after the previous reply (``PAUSE_S``),
so that the previous framework's spinning worker threads have gone to sleep.

Per point the table shows each framework's tokens/s = B * T / time, median over
rounds (lowest-highest round), and rnnlab/peer = t_peer / t_rnnlab computed
within each round (> 1: rnnlab is faster), as median (lowest-highest) over the
rounds. The summary gives per peer the median, geometric mean and range of the
points' median ratios and the points where rnnlab was behind in every round.

PROFILE line: how much of rnnlab's step is matrix multiplication. In rnnlab's
turn, after its steps, its worker times as many calls of a program of rnnlab's
matmuls alone, with the step's shapes (``jax_models.build_matmuls``): with G the
cell's gates (lstm 4, gru 3, rnn 1), W_h (H, G*H), W_x (D, G*H), per time step
h @ W_h ((B, H) x (H, G*H)) and the input projection x @ W_x ((B, D) x (D, G*H);
where ``engine.scan`` hoists it, off the CPU, one (T*B, D) x (D, G*H) matmul
instead), and for training also dh = g @ W_h^T, dW_h = h^T @ g and the input
side's dx = g @ W_x^T, dW_x = x^T @ g (hoisted: one matmul each over T*B rows).
Each per-step result is added into a running sum over the steps (which keeps
every matmul in use with one output each, at 1/(2H) of the matmul's flops);
nothing else is done: no gate nonlinearities, no while loop, no loss or Adam
update. Each step's matmuls wait for the previous step's (an
``optimization_barrier``), as in the recurrence, so XLA neither merges them nor
runs them side by side; T steps run as T / K calls of a K-step unrolled chunk
(K the largest divisor of T up to 50). matmul share = matmul seconds / step
seconds in the same round (median over rounds); 1 minus it is everything else:
pointwise work, the while loop and memory traffic ("loop overhead"). Where the
matmuls are small (B=16, H=64 on a CPU) both programs are mostly the fixed cost
of one XLA operation per matmul, and the share can come out near or above 100%.

``--one_process`` keeps the older measurement: rnnlab and Flax (both JAX
programs on the same runtime) built in this one process and timed call by call
in alternation, pair i running rnnlab then Flax for even i and Flax then rnnlab
for odd i; each pair gives one ratio t_flax / t_rnnlab, and the table shows the
median ratio and its interquartile range over the pairs. A point is "behind
beyond noise" only if even the upper quartile of its ratios is below 1. Its grid
is ``speed.py``'s default grid (the one its results in benchmarks/README.md
were measured on).

Bad flags (an unknown cell, mode or framework, a number below 1, torch named
but not installed) end the program with one line and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks import harness, speed, worker

PEER = "flax"  # --one_process compares rnnlab with this peer only
FRAMEWORKS = ("rnnlab", "flax", "torch")
# Also accepted by --frameworks: rnnlab's engine variants, timed as peers of the default path.
VARIANTS = ("rnnlab_fused", "rnnlab_onednn", "rnnlab_scan", "rnnlab_auto", "rnnlab_passive",
            "rnnlab_system", "flax_keep")
# The separate-process grid (D = H); --quick uses speed.py's quick grid, --one_process
# speed.py's default grid.
GRID = dict(batch=(16, 64, 256), length=(100, 500), hidden=(64, 128, 512))
# Flags of one mode only: None unless given, so that the other mode can refuse them.
SEPARATE_DEFAULTS = dict(frameworks=",".join(FRAMEWORKS), rounds=6, steps_per_round=4,
                         timeout=1800)
ONE_PROCESS_DEFAULTS = dict(pairs=20)
PAUSE_S = 0.1  # before each turn: the previous worker's threads stop spinning
OUT = os.path.join(tempfile.gettempdir(), "rnnlab_paired", "paired.json")


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--one_process", action="store_true",
                 help="the older view: rnnlab and Flax in this one process, calls alternated")
  p.add_argument("--quick", action="store_true", help="B=16, T=50, H=64 only")
  p.add_argument("--frameworks", help="comma list of rnnlab (required), flax, torch, "
                 "rnnlab_fused (the fused backward pass forced on), rnnlab_onednn (oneDNN's "
                 "fused LSTM, GRU and RNN forced on: --device cpu), "
                 "rnnlab_scan (oneDNN off: the XLA scan for every cell), rnnlab_auto "
                 "(RNNLAB_ONEDNN_THREADS=auto: oneDNN's threads chosen per problem), rnnlab_system "
                 "(RNNLAB_MALLOC=system: glibc's malloc as it comes), flax_keep (Flax with "
                 "rnnlab's malloc settings); "
                 f"default {SEPARATE_DEFAULTS['frameworks']}")
  p.add_argument("--cells", default=",".join(speed.CELLS))
  p.add_argument("--modes", default=",".join(harness.MODES))
  p.add_argument("--batch", help="comma list of B")
  p.add_argument("--length", help="comma list of T")
  p.add_argument("--hidden", help="comma list of H (the input size D equals H)")
  p.add_argument("--rounds", type=int, help="rounds per point and mode, frameworks' order "
                 f"rotated each round (default {SEPARATE_DEFAULTS['rounds']})")
  p.add_argument("--steps_per_round", type=int, help="timed steps per framework and round "
                 f"(default {SEPARATE_DEFAULTS['steps_per_round']})")
  p.add_argument("--timeout", type=int, help="seconds a worker may take to answer one "
                 f"command: a build or a turn (default {SEPARATE_DEFAULTS['timeout']})")
  p.add_argument("--pairs", type=int, help="--one_process: timed (rnnlab, flax) pairs per "
                 f"case (default {ONE_PROCESS_DEFAULTS['pairs']})")
  p.add_argument("--warmup", type=int, default=2, help="untimed steps of each before timing")
  p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                 help="cores for every framework (default: all this process may use)")
  p.add_argument("--device", default="cpu", choices=tuple(worker.JAX_PLATFORMS),
                 help="cpu, or gpu: JAX on its GPU and torch on cuda")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default=OUT, help="results as JSON (the separate-process mode also "
                 "writes the rows as CSV next to it)")
  p.add_argument("--render", metavar="FILE.json",
                 help="print the table and summary of a saved run (nothing is measured)")
  p.add_argument("--reference", default=speed.REFERENCE,
                 help="the framework the ratio columns divide by the others' times "
                      f"(default {speed.REFERENCE}), e.g. rnnlab_onednn")
  p.add_argument("--resume", action="store_true",
                 help="keep the points --out already holds (measured with the same "
                      "frameworks, rounds, steps, warm-up, threads and device) and measure "
                      "only the rest of the grid; a grid too long for one sitting")
  return _resolve(p.parse_args(argv))


def _resolve(args):
  """Fills the mode's defaults, turns comma lists into tuples and validates everything."""
  own, other = ((ONE_PROCESS_DEFAULTS, SEPARATE_DEFAULTS) if args.one_process
                else (SEPARATE_DEFAULTS, ONE_PROCESS_DEFAULTS))
  if args.one_process and (args.resume or args.render or args.reference != speed.REFERENCE):
    raise ValueError("--resume, --render and --reference apply to the separate-process mode "
                     "only, not --one_process.")
  for name in other:
    if getattr(args, name) is not None:
      raise ValueError(f"--{name} " + ("does not apply to --one_process (rnnlab and flax, "
                                       "timed in pairs)." if args.one_process else
                                       "applies to --one_process only."))
  for name, value in own.items():
    if getattr(args, name) is None:
      setattr(args, name, value)
  grid = (speed.GRIDS["quick"] if args.quick else
          speed.GRIDS["default"] if args.one_process else GRID)
  for name in ("batch", "length", "hidden"):
    value = getattr(args, name)
    setattr(args, name, grid[name] if value is None else speed._list(value, int))
  args.cells = speed._list(args.cells, str, speed.CELLS)
  args.modes = speed._list(args.modes, str, harness.MODES)
  if args.one_process:
    speed._check_positive(args, "pairs")
  else:
    args.frameworks = speed._list(args.frameworks, str, FRAMEWORKS + VARIANTS)
    if len(set(args.frameworks)) < len(args.frameworks):
      raise ValueError(f"--frameworks names a framework twice: {','.join(args.frameworks)!r}.")
    if args.reference not in FRAMEWORKS + VARIANTS:
      raise ValueError(f"--reference {args.reference!r} is not a framework; valid: "
                       f"{', '.join(FRAMEWORKS + VARIANTS)}.")
    if speed.REFERENCE not in args.frameworks or len(args.frameworks) < 2:
      raise ValueError(f"--frameworks must name {speed.REFERENCE} and at least one peer "
                       f"(flax, torch), got {','.join(args.frameworks)!r}.")
    if "torch" in args.frameworks and importlib.util.find_spec("torch") is None:
      raise ValueError("--frameworks names torch, but torch is not installed here "
                       "(pip install -e '.[torch]'); or leave it out: --frameworks "
                       "rnnlab,flax.")
    if "rnnlab_onednn" in args.frameworks and args.device != "cpu":
      raise ValueError("--frameworks names rnnlab_onednn, which runs on the CPU only: give "
                       "--device cpu.")
    speed._check_positive(args, "rounds", "steps_per_round", "timeout")
  speed.check_threads(args.threads)
  if args.warmup < 0:
    raise ValueError(f"--warmup must be >= 0, got {args.warmup}.")
  args.torch_device = speed.TORCH_DEVICE[args.device]
  # oneDNN's threads per call in rnnlab's workers (rnnlab.onednn.threads(); recorded so that
  # --resume refuses a file measured with another count)
  args.onednn_threads = os.environ.get("RNNLAB_ONEDNN_THREADS", "auto")
  # rnnlab's malloc settings (rnnlab/heap.py; files from before it have None: glibc's own)
  args.malloc = os.environ.get("RNNLAB_MALLOC", "system")
  return args


# --- separate processes, turns in rotated rounds ---------------------------------------

class WorkerError(RuntimeError):
  """A worker died or did not answer within --timeout."""


class Server:
  """One framework's long-lived worker (``worker.py --serve``) and its pipes.

  ``ask`` sends one command and returns the worker's one-line reply; meanwhile
  this process sleeps in ``select``. The worker's stderr goes to a temporary file
  (a pipe nobody reads could fill up and stall it) and is quoted when it dies.
  """

  def __init__(self, framework: str, args):
    self.framework, self.timeout = framework, args.timeout
    self.profile = framework == speed.REFERENCE
    spec = {"framework": framework, "threads": args.threads, "device": args.device,
            "torch_device": args.torch_device, "modes": list(args.modes),
            "warmup": args.warmup, "seed": args.seed, "profile": self.profile}
    self._stderr = tempfile.TemporaryFile()
    self._proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.worker", "--serve", json.dumps(spec)],
        cwd=speed.REPO_ROOT, env=speed.worker_env(), stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=self._stderr, bufsize=0)
    self._buffer = b""

  @property
  def alive(self) -> bool:
    return self._proc.poll() is None

  def ask(self, **command) -> dict:
    """Sends ``command``; the reply, or WorkerError if the worker dies or is too slow."""
    try:
      self._proc.stdin.write((json.dumps(command) + "\n").encode())
    except BrokenPipeError:
      raise WorkerError(self._exited()) from None
    deadline = time.monotonic() + self.timeout
    while True:
      while b"\n" in self._buffer:
        line, self._buffer = self._buffer.split(b"\n", 1)
        text = line.decode(errors="replace")
        if text.startswith(worker.ROW_PREFIX):
          return json.loads(text[len(worker.ROW_PREFIX):])
      left = deadline - time.monotonic()
      if left <= 0 or not select.select([self._proc.stdout], [], [], left)[0]:
        self._proc.kill()
        self._proc.wait()
        raise WorkerError(f"{self.framework} worker gave no answer to {command} within "
                          f"{self.timeout} s (--timeout)")
      chunk = os.read(self._proc.stdout.fileno(), 1 << 16)
      if not chunk:
        raise WorkerError(self._exited())
      self._buffer += chunk

  def _exited(self) -> str:
    code = self._proc.wait()
    self._stderr.seek(0)
    return (f"{self.framework} worker exited with code {code}: "
            f"{self._stderr.read().decode(errors='replace')[-2000:]}")

  def close(self) -> None:
    """Asks the worker to quit; kills it if it does not within 30 s."""
    if self.alive:
      try:
        self._proc.stdin.write(b'{"cmd": "quit"}\n')
        self._proc.wait(timeout=30)
      except (BrokenPipeError, subprocess.TimeoutExpired):
        self._proc.kill()
        self._proc.wait()
    self._stderr.close()


def alternate(frameworks, rounds: int, turn) -> list[dict]:
  """Round r = 0 .. rounds-1: ``turn(framework, r, position)`` for each framework, one
  at a time, in the order ``speed.rotated(frameworks, r)``: so every framework runs
  first, second, ... equally often (given rounds a multiple of their number) and after
  each peer. A framework whose turn returns an error row sits out the later rounds.
  Returns the rows in the order they were taken."""
  rows, failed = [], set()
  for r in range(rounds):
    order = [f for f in speed.rotated(frameworks, r) if f not in failed]
    for position, framework in enumerate(order):
      row = turn(framework, r, position)
      rows.append(row)
      if "error" in row:
        failed.add(framework)
  return rows


def take_turn(server: Server, base: dict, steps: int) -> dict:
  """One framework's turn: ``steps`` timed steps of ``base["mode"]`` and, for rnnlab,
  as many calls of its matmuls alone; one row in ``speed.py``'s format."""
  time.sleep(PAUSE_S)
  try:
    timing = server.ask(cmd="time", mode=base["mode"], steps=steps)
    if server.profile and "error" not in timing:
      alone = server.ask(cmd="time", mode=base["mode"], steps=steps, part="matmuls")
      timing.update({"matmul_" + k: v for k, v in alone.items() if k != "cpu_seconds"})
  except WorkerError as e:
    timing = {"error": str(e)}
  row = {**base, **timing}
  if "seconds" in row and "error" not in row:
    tokens = row["batch"] * row["length"]
    row["tokens_per_s"] = tokens / row["seconds"]
    row["tokens_per_cpu_s"] = tokens / max(row["cpu_seconds"], 1e-9)
    if "matmul_seconds" in row:
      row["matmul_share"] = row["matmul_seconds"] / row["seconds"]
  return row


def _build_info(reply: dict, mode: str) -> dict:
  """What a row keeps of a worker's build reply: where it ran, what compiling took."""
  info = {k: reply[k] for k in ("platform", "device_kind", "version", "torch_threads")
          if k in reply}
  info["compile_s"] = reply["compile_s"]["step"].get(mode)
  if "matmuls" in reply["compile_s"]:
    info["matmul_compile_s"] = reply["compile_s"]["matmuls"].get(mode)
    info["matmul_flops"] = reply["flops"].get("matmuls", {}).get(mode)
  return info


def measure_point(servers: dict, args, point: dict) -> list[dict]:
  """Builds ``point`` in every framework's worker, one after another, then runs the
  rounds of each mode. Returns one row per (framework, mode, round), or per
  (framework, mode) with the error where a build failed."""
  built, rows = {}, []
  for fw in args.frameworks:
    try:
      reply = servers[fw].ask(cmd="build", **{k: point[k] for k in
                                              ("cell", "batch", "length", "hidden")})
    except WorkerError as e:
      reply = {"error": str(e)}
    if "error" in reply:
      rows += [{"framework": fw, **point, "mode": m, "error": reply["error"]}
               for m in args.modes]
    else:
      built[fw] = reply
  for mode in args.modes:
    def turn(fw, r, position, mode=mode):
      base = {"framework": fw, **point, "mode": mode, "round": r, "position": position,
              **_build_info(built[fw], mode)}
      return take_turn(servers[fw], base, args.steps_per_round)
    rows += alternate([f for f in args.frameworks if f in built], args.rounds, turn)
  return rows


def profile(rows) -> dict[tuple, dict]:
  """(cell, mode, B, T, H) -> rnnlab's matmul share: median, lowest and highest over
  rounds of matmul seconds / step seconds (both medians of the round's calls), with the
  median step and matmul seconds and the matmuls' GFLOP/s."""
  by_case = {}
  for r in rows:
    if r["framework"] == speed.REFERENCE and "matmul_share" in r:
      by_case.setdefault(speed._case(r), []).append(r)
  out = {}
  for case, rs in by_case.items():
    shares = [r["matmul_share"] for r in rs]
    matmul_s = statistics.median(r["matmul_seconds"] for r in rs)
    flops = rs[0].get("matmul_flops")
    out[case] = {"share": statistics.median(shares), "low": min(shares), "high": max(shares),
                 "rounds": len(rs), "step_s": statistics.median(r["seconds"] for r in rs),
                 "matmul_s": matmul_s, "gflops": flops / matmul_s / 1e9 if flops else None}
  return out


def profile_line(case, p) -> str:
  cell, mode, b, t, h = case
  speed_text = f", {p['gflops']:.3g} GFLOP/s" if p["gflops"] else ""
  return (f"PROFILE {cell} {mode} B={b} T={t} H={h}: {speed.REFERENCE} step "
          f"{p['step_s'] * 1e3:.3g} ms, its matmuls alone {p['matmul_s'] * 1e3:.3g} ms "
          f"(medians over {p['rounds']} rounds{speed_text}); matmul share of the step, per "
          f"round: {p['share']:.0%} ({p['low']:.0%}-{p['high']:.0%}); everything else "
          f"{1 - p['share']:.0%} (pointwise work, while loop, memory traffic)")


def profile_summary(rows) -> str:
  """One line per mode: the matmul share's median and range over the points."""
  lines = []
  per_point = profile(rows)
  for mode in harness.MODES:
    shares = [p["share"] for case, p in per_point.items() if case[1] == mode]
    if shares:
      lines.append(f"PROFILE {mode}: matmuls are {statistics.median(shares):.0%} of "
                   f"{speed.REFERENCE}'s step (median over {len(shares)} point"
                   f"{'s' if len(shares) > 1 else ''}, range "
                   f"{min(shares):.0%}-{max(shares):.0%}); the rest is loop overhead")
  return "\n".join(lines)


def point_report(rows, frameworks, head: bool, reference=speed.REFERENCE) -> str:
  """The table lines of one point (with the header if ``head``), then its PROFILE lines."""
  table = speed.speed_table(rows, frameworks, token_range=True,
                            reference=reference).splitlines()
  lines = table if head else table[2:]
  lines += [profile_line(c, p) for c, p in sorted(profile(rows).items())]
  lines += [f"ERROR {r['framework']} {r['cell']} {r['mode']}: {r['error'][-300:]}"
            for r in rows if "error" in r]
  return "\n".join(lines)


def run_separate(args, save=None, rows=()) -> list[dict]:
  """Every point of the grid, cell by cell; one worker per framework and cell (started
  again at the next point if it died). ``save(rows)`` after each point. ``rows``: rows
  measured before (``--resume``); the points they complete are not measured again."""
  rows = list(rows)
  done = complete_points(rows, args)
  for cell in args.cells:
    servers = {}
    try:
      for h in args.hidden:
        for t in args.length:
          for b in args.batch:
            if (cell, b, t, h) in done:
              continue
            for fw in args.frameworks:
              if fw not in servers or not servers[fw].alive:
                if fw in servers:
                  servers[fw].close()
                servers[fw] = Server(fw, args)
            point = {"cell": cell, "batch": b, "length": t, "hidden": h,
                     "threads": args.threads, "device": args.device}
            new = measure_point(servers, args, point)
            print(point_report(new, args.frameworks, head=not rows,
                               reference=args.reference), flush=True)
            rows += new
            if save is not None:
              save(rows)
    finally:
      for server in servers.values():
        server.close()
  return rows


# What a resumed run must share with the file it extends, so that its rows compare.
RESUME_KEYS = ("frameworks", "rounds", "steps_per_round", "warmup", "threads", "device",
               "onednn_threads", "malloc")


def _point(row) -> tuple:
  return row["cell"], row["batch"], row["length"], row["hidden"]


def complete_points(rows, args) -> set[tuple]:
  """(cell, B, T, H) of the points where every framework timed every mode in every round
  without an error: what ``--resume`` keeps."""
  rounds = {}
  for r in rows:
    if "error" not in r and "round" in r:
      rounds.setdefault((_point(r), r["framework"], r["mode"]), set()).add(r["round"])
  points = {key[0] for key in rounds}
  return {p for p in points
          if all(len(rounds.get((p, fw, m), ())) >= args.rounds
                 for fw in args.frameworks for m in args.modes)}


def read_results(path: str, flag: str, hint: str = "") -> tuple[dict, list[dict]]:
  """(meta, rows) of a results file of benchmarks.paired; ValueError naming ``flag`` where
  it cannot be read."""
  try:
    with open(path) as f:
      saved = json.load(f)
    meta, rows = saved["meta"], saved["rows"]
    if not isinstance(meta["args"]["frameworks"], list) or not isinstance(rows, list):
      raise TypeError("meta.args.frameworks and rows must be lists")
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{flag}: {path} is not a results file of benchmarks.paired that can be "
                     f"read ({type(e).__name__}: {e}){hint}.") from None
  return meta, rows


def load_for_resume(path: str, args) -> tuple[list[dict], list[dict]]:
  """(rows to keep, the earlier runs' meta) from a results file of this mode; ([], [])
  where it does not exist yet. ValueError, saying what differs, where it cannot be
  extended: unreadable, another mode's file, or measured with other settings."""
  if not os.path.exists(path):
    return [], []
  meta, rows = read_results(path, "--resume",
                            "; give another --out, or move it away to start afresh")
  before = meta["args"]
  if before.get("one_process"):
    raise ValueError(f"--resume: {path} holds a --one_process run; give another --out.")
  plain = lambda v: list(v) if isinstance(v, (list, tuple)) else v  # JSON keeps no tuples
  differ = [f"{k}={plain(before.get(k))!r} there, {plain(getattr(args, k))!r} now"
            for k in RESUME_KEYS if plain(before.get(k)) != plain(getattr(args, k))]
  if differ:
    raise ValueError(f"--resume: {path} was measured with other settings ({'; '.join(differ)}); "
                     "its rows would not compare with new ones. Repeat its flags, or give "
                     "another --out.")
  done = complete_points(rows, args)
  kept = [r for r in rows if _point(r) in done]
  return kept, [*meta.get("earlier", []), {k: v for k, v in meta.items() if k != "earlier"}]


def main_separate(args, argv) -> list[dict]:
  meta = speed._meta(args, argv)
  stem = args.out[:-len(".json")] if args.out.endswith(".json") else args.out
  previous = []
  if args.resume:  # a file that cannot be extended: one line, exit code 2, before any work
    previous, meta["earlier"] = speed.parse_or_exit(
        lambda path: load_for_resume(path, args), stem + ".json", "benchmarks.paired")
    grid = {(c, b, t, h) for c in args.cells for b in args.batch for t in args.length
            for h in args.hidden}
    done = complete_points(previous, args)
    print(f"--resume: {len(done & grid)} of the {len(grid)} points are in {stem}.json "
          f"already; measuring the other {len(grid - done)}.", flush=True)
  print(f"{', '.join(args.frameworks)}: one worker process each, {args.rounds} rounds of "
        f"{args.steps_per_round} steps per point and mode, order rotated each round; "
        f"{args.threads} threads, device {args.device} (torch on {args.torch_device}). "
        f"Tokens/s: median (lowest-highest round); {speed.REFERENCE}/peer = t_peer / "
        f"t_{speed.REFERENCE} per round, median (lowest-highest); > 1: {speed.REFERENCE} "
        "is faster.", flush=True)
  rows = run_separate(args, save=lambda rows: speed.write_results(rows, meta, stem),
                      rows=previous)
  meta["loadavg_end"] = os.getloadavg()
  print()
  if previous:  # the whole table: this run printed only the points it measured
    print(speed.speed_table(rows, args.frameworks, token_range=True,
                            reference=args.reference))
  print(speed.ratio_summary(rows, args.frameworks, reference=args.reference))
  print(profile_summary(rows))
  paths = speed.write_results(rows, meta, stem)
  print(f"wrote {paths[0]} and {paths[1]}; load average {meta['loadavg_start']} -> "
        f"{meta['loadavg_end']}")
  return rows


# --- one process, rnnlab and Flax call by call (--one_process) ------------------------

def _seconds(step) -> float:
  start = time.perf_counter()
  step()
  return time.perf_counter() - start


def time_pairs(ours, theirs, pairs: int, warmup: int) -> tuple[list[float], list[float]]:
  """Wall seconds of ``pairs`` calls of each zero-argument step, run in alternation."""
  for _ in range(warmup):
    ours()
    theirs()
  mine, peer = [], []
  for i in range(pairs):
    if i % 2 == 0:
      mine.append(_seconds(ours))
      peer.append(_seconds(theirs))
    else:
      peer.append(_seconds(theirs))
      mine.append(_seconds(ours))
  return mine, peer


def summarize(mine: list[float], peer: list[float], tokens: int) -> dict:
  ratios = sorted(p / m for m, p in zip(mine, peer))
  q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
  return {"tokens_per_s": tokens / statistics.median(mine),
          "peer_tokens_per_s": tokens / statistics.median(peer),
          "ratio": statistics.median(ratios), "ratio_q1": q1, "ratio_q3": q3,
          "times": mine, "peer_times": peer}


def run_one_process(args) -> list[dict]:
  """The --one_process mode: rnnlab and Flax built in this process, timed in pairs."""
  worker.pin_threads(args.threads, args.device)
  os.environ["JAX_PLATFORMS"] = worker.JAX_PLATFORMS[args.device]
  from benchmarks import jax_models  # pylint: disable=g-import-not-at-top (after pinning)
  rows = []
  for cell in args.cells:
    for h in args.hidden:
      for t in args.length:
        for b in args.batch:
          build = lambda fw: jax_models.build(fw, cell, b, t, h, h, modes=args.modes,
                                              seed=args.seed)
          ours, theirs = build(speed.REFERENCE), build(PEER)
          for mode in args.modes:
            row = {"cell": cell, "mode": mode, "batch": b, "length": t, "hidden": h,
                   "threads": args.threads, **jax_models.environment(None),
                   **summarize(*time_pairs(ours.steps[mode], theirs.steps[mode], args.pairs,
                                           args.warmup), b * t)}
            rows.append(row)
            print(table_line(row), flush=True)
  return rows


HEAD = (f"{'cell':5} {'mode':8} {'B':>4} {'T':>5} {'H':>4} | {speed.REFERENCE:>10} {PEER:>10} | "
        f"{speed.REFERENCE + '/' + PEER + ' (IQR)':>24}")


def table_line(row) -> str:
  return (f"{row['cell']:5} {row['mode']:8} {row['batch']:>4} {row['length']:>5} "
          f"{row['hidden']:>4} | {row['tokens_per_s'] / 1e3:>9.1f}k "
          f"{row['peer_tokens_per_s'] / 1e3:>9.1f}k | {row['ratio']:>8.2f} "
          f"({row['ratio_q1']:.2f}-{row['ratio_q3']:.2f})")


def summary(rows) -> str:
  ratios = [r["ratio"] for r in rows]
  behind = [r for r in rows if r["ratio"] < 1]
  beyond = [r for r in rows if r["ratio_q3"] < 1]
  name = lambda r: f"{r['cell']} {r['mode']} {r['batch']} {r['length']} {r['hidden']}"
  return (f"{speed.REFERENCE}/{PEER}, {len(rows)} points: median {statistics.median(ratios):.2f}, "
          f"geometric mean {statistics.geometric_mean(ratios):.2f}, range {min(ratios):.2f}-"
          f"{max(ratios):.2f}; behind at {len(behind)}; behind beyond noise (upper quartile "
          f"< 1) at {len(beyond)}" + (": " + ", ".join(map(name, beyond)) if beyond else ""))


def main_one_process(args, argv) -> list[dict]:
  print(f"{args.pairs} interleaved pairs per case, {args.threads} threads, device "
        f"{args.device}; ratio = t_{PEER} / t_{speed.REFERENCE} (> 1: "
        f"{speed.REFERENCE} is faster)\n{HEAD}\n{'-' * len(HEAD)}", flush=True)
  rows = run_one_process(args)
  print(summary(rows))
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump({"argv": argv, "rows": rows}, f, indent=1)
  print(f"wrote {args.out}")
  return rows


def load_rendered(path: str, reference: str) -> tuple[list[dict], list[str]]:
  """(rows, frameworks) of a saved run; ValueError where it cannot be read or lacks
  ``reference``."""
  meta, rows = read_results(path, "--render")
  frameworks = meta["args"]["frameworks"]
  if reference not in frameworks:
    raise ValueError(f"--reference {reference} was not measured in {path}; it has "
                     f"{', '.join(frameworks)}.")
  return rows, frameworks


def render(args) -> list[dict]:
  """--render: the whole table, the ratio summary and the PROFILE summary of a saved run,
  ratios against --reference."""
  rows, frameworks = speed.parse_or_exit(lambda path: load_rendered(path, args.reference),
                                         args.render, "benchmarks.paired")
  print(speed.speed_table(rows, frameworks, token_range=True, reference=args.reference))
  print(speed.ratio_summary(rows, frameworks, reference=args.reference))
  print(profile_summary(rows))
  return rows


def main(argv=None) -> list[dict]:
  argv = sys.argv[1:] if argv is None else argv
  args = speed.parse_or_exit(parse_args, argv, "benchmarks.paired")
  if args.render:
    return render(args)
  return (main_one_process if args.one_process else main_separate)(args, argv)


if __name__ == "__main__":
  main()

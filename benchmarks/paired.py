"""rnnlab against Flax ``nn.RNN`` in one process, calls interleaved: the low-noise view.

    python -m benchmarks.paired                 # the default grid of speed.py, ~6 min on 2 cores
    python -m benchmarks.paired --quick         # one point per cell
    python -m benchmarks.paired --device gpu

``speed.py`` runs every framework in its own process, as the comparison with
PyTorch needs; but between processes a single point moves by 20-30% on a
shared CPU (thread placement, memory layout, frequency), which swamps any
difference between two JAX programs. Both of these are JAX programs on the same
runtime, so here one process builds both workloads of a point (the very ones
``speed.py`` times, from ``jax_models.build``) and times them in alternation:
pair i runs rnnlab then Flax for even i, Flax then rnnlab for odd i. Each pair
gives one ratio t_flax / t_rnnlab (> 1: rnnlab is faster) measured under the
same machine conditions; the table shows the median ratio and its interquartile
range over the pairs. A point is "behind beyond noise" only if even the upper
quartile of its ratios is below 1.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from benchmarks import harness, speed, worker

PEER = "flax"


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true", help="B=16, T=50, H=64 only")
  p.add_argument("--cells", default=",".join(speed.CELLS))
  p.add_argument("--modes", default=",".join(harness.MODES))
  p.add_argument("--batch")
  p.add_argument("--length")
  p.add_argument("--hidden")
  p.add_argument("--pairs", type=int, default=20, help="timed (rnnlab, flax) pairs per case")
  p.add_argument("--warmup", type=int, default=2, help="untimed calls of each before timing")
  p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
  p.add_argument("--device", default="cpu", choices=tuple(worker.JAX_PLATFORMS))
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", help="also write the rows to this JSON file")
  args = p.parse_args(argv)
  grid = speed.GRIDS["quick" if args.quick else "default"]
  for name in ("batch", "length", "hidden"):
    value = getattr(args, name)
    setattr(args, name, grid[name] if value is None else speed._list(value, int))
  args.cells = speed._list(args.cells, str, speed.CELLS)
  args.modes = speed._list(args.modes, str, harness.MODES)
  if args.pairs < 1:
    raise ValueError(f"--pairs must be a positive integer, got {args.pairs}.")
  speed.check_threads(args.threads)
  if args.warmup < 0:
    raise ValueError(f"--warmup must be >= 0, got {args.warmup}.")
  return args


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


def run(args) -> list[dict]:
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


def main(argv=None) -> list[dict]:
  args = speed.parse_or_exit(parse_args, sys.argv[1:] if argv is None else argv,
                             "benchmarks.paired")
  print(f"{args.pairs} interleaved pairs per case, {args.threads} threads, device "
        f"{args.device}; ratio = t_{PEER} / t_{speed.REFERENCE} (> 1: "
        f"{speed.REFERENCE} is faster)\n{HEAD}\n{'-' * len(HEAD)}", flush=True)
  rows = run(args)
  print(summary(rows))
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      json.dump({"argv": sys.argv[1:] if argv is None else argv, "rows": rows}, f, indent=1)
    print(f"wrote {args.out}")
  return rows


if __name__ == "__main__":
  main()

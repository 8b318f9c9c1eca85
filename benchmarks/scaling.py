r"""What spreading over devices does to a training step: one run data-parallel over D devices,
and a vmapped group of R runs split over D devices (``rnnlab.training.sharding``).

    python -m benchmarks.scaling                       # forced host devices on this CPU
    python -m benchmarks.scaling --devices 1,2,4 --rounds 5 --steps 30
    python -m benchmarks.scaling --platform gpu --devices 1,2,4,8   # the GPUs of a machine

Each (kind, D) case runs in its own process (``XLA_FLAGS=--xla_force_host_platform_device_count``
on the CPU), and the cases alternate in rounds, so that drift on a shared machine hits them
alike. A case builds the real training job (``rnnlab.training.job``: the adding task, an LSTM,
Adam, global-norm clipping), compiles the step ahead of time, takes ``--warmup`` untimed steps
and times ``--steps`` steps. Printed: per case, the median over rounds of steps/s (and of
sequences/s: batch x steps/s, times R for a group) with the lowest and highest round, and
the ratio to D = 1.

On one CPU the forced host devices share its cores: D "devices" are D XLA thread pools over
the same 2 cores, so this shows what the partitioning costs (collectives, smaller matmuls per
device), not a speed-up. On a machine with D accelerators the same command shows the scaling.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


class _Lane:  # what vmapped.Stacked reads of a run: its job
  def __init__(self, job):
    self.job = job


def case(kind: str, devices: int, steps: int, warmup: int, batch: int, hidden: int,
         seq_len: int, runs: int) -> dict:
  """One measurement, in this process (its devices already forced)."""
  import jax  # pylint: disable=g-import-not-at-top
  from configs import base  # pylint: disable=g-import-not-at-top
  from rnnlab.training import config as config_lib  # pylint: disable=g-import-not-at-top
  from rnnlab.training import job as job_lib  # pylint: disable=g-import-not-at-top
  from rnnlab.training import vmapped  # pylint: disable=g-import-not-at-top
  config = base.get_config("adding")
  overrides = {"task.seq_len": seq_len, "model.cell": "lstm", "model.hidden_size": hidden,
               "train.batch_size": batch, "optim.clip_mode": "global_norm",
               "optim.clip_norm": 1.0, "mesh.data": devices}
  config = config_lib.override(config, overrides).lock()
  if kind == "run":
    job = job_lib.build(config)
    state = job_lib.init_state(job)
    step = job_lib.make_step_fn(job)
    feed = None
    where = job.placement.describe()
  else:
    jobs = [job_lib.build(config_lib.with_overrides(config, {"seed": s})) for s in range(runs)]
    layout = vmapped.Stacked([_Lane(j) for j in jobs])
    state = layout.place(vmapped.stack([job_lib.init_state(j) for j in jobs]))
    step, feed = layout.step_fn(), layout.keys
    where = layout.placement.describe()
  start = time.perf_counter()
  state, _ = step(state, feed)  # jitted: the first call compiles
  jax.block_until_ready(state)
  compile_s = time.perf_counter() - start
  for _ in range(warmup):
    state, _ = step(state, feed)
  jax.block_until_ready(state)
  start = time.perf_counter()
  for _ in range(steps):
    state, _ = step(state, feed)
  jax.block_until_ready(state)
  seconds = time.perf_counter() - start
  per = batch * (runs if kind == "group" else 1)
  return {"kind": kind, "devices": devices, "where": where, "steps_per_s": steps / seconds,
          "sequences_per_s": per * steps / seconds, "first_step_s": compile_s,
          "jax_devices": jax.device_count()}


def _worker(args) -> dict:
  env = dict(os.environ)
  if args.platform == "cpu":
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.device}"
    env["JAX_PLATFORMS"] = "cpu"
  cmd = [sys.executable, "-m", "benchmarks.scaling", "--worker", args.kind_one,
         "--device", str(args.device), "--steps", str(args.steps), "--warmup",
         str(args.warmup), "--batch", str(args.batch), "--hidden", str(args.hidden),
         "--seq_len", str(args.seq_len), "--runs", str(args.runs)]
  out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
  if out.returncode != 0:
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--devices", default="1,2,4")
  p.add_argument("--kinds", default="run,group", help="run: data-parallel; group: vmapped runs")
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--steps", type=int, default=30)
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--hidden", type=int, default=128)
  p.add_argument("--seq_len", type=int, default=100)
  p.add_argument("--runs", type=int, default=4, help="runs in a vmapped group")
  p.add_argument("--platform", default="cpu", choices=["cpu", "gpu"])
  p.add_argument("--timeout", type=int, default=900)
  p.add_argument("--out", default=None, help="write every measurement as JSON here")
  p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
  p.add_argument("--device", type=int, default=1, help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.worker:
    print(json.dumps(case(args.worker, args.device, args.steps, args.warmup, args.batch,
                          args.hidden, args.seq_len, args.runs)))
    return
  devices = [int(d) for d in args.devices.split(",")]
  kinds = args.kinds.split(",")
  cases = [(k, d) for k in kinds for d in devices]
  results: dict[tuple, list[dict]] = {c: [] for c in cases}
  print(f"# {' '.join(sys.argv)}\n# adding T={args.seq_len}, lstm H={args.hidden}, batch "
        f"{args.batch}, Adam, {args.steps} timed steps, {args.rounds} rounds; group = "
        f"{args.runs} vmapped runs", flush=True)
  for r in range(args.rounds):
    order = cases[r % len(cases):] + cases[:r % len(cases)]
    for kind, d in order:
      args.kind_one, args.device = kind, d
      row = _worker(args)
      results[(kind, d)].append(row)
      print(f"round {r + 1}: {kind} on {row['where']}: {row['steps_per_s']:.1f} steps/s",
            flush=True)
  print("\n| kind | devices | steps/s median (low-high) | sequences/s median | vs 1 device |")
  print("|---|---|---|---|---|")
  for kind in kinds:
    base_rate = statistics.median(x["sequences_per_s"] for x in results[(kind, devices[0])])
    for d in devices:
      rows = results[(kind, d)]
      sps = sorted(x["steps_per_s"] for x in rows)
      seq = statistics.median(x["sequences_per_s"] for x in rows)
      label = "1 run, batch split" if kind == "run" else f"{args.runs} vmapped runs split"
      print(f"| {label} | {d} | {statistics.median(sps):.1f} ({sps[0]:.1f}-{sps[-1]:.1f}) | "
            f"{seq:,.0f} | {seq / base_rate:.2f}x |")
  if args.out:
    with open(args.out, "w") as f:
      json.dump({f"{k}/{d}": v for (k, d), v in results.items()}, f, indent=1)


if __name__ == "__main__":
  main()

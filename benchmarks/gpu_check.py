"""The GPU checks of issues #17 and #18 in one short run: cuDNN and the fused backward pass
equal to the scan path, then their speed, bf16's and Flax's against the default path, and the
linear recurrences' parallel and sequential forms against lstm over long sequences.

    python -m benchmarks.gpu_check --out /tmp/gpu_check.json          # on a CUDA GPU (16 points)
    python -m benchmarks.gpu_check --full --out /tmp/gpu_check.json   # issue #17's 54 points
    python -m benchmarks.gpu_check --quick --allow_cpu                 # the script itself, here

1. Equality (float32, matmuls at "highest" precision so that TF32 does not blur it): for the
   plain ``lstm`` with ragged lengths, reverse and a non-zero initial carry,
   ``engine.scan(cudnn=True)`` against the scan path (outputs, final carries, gradients of
   parameters, inputs and carry); for lstm and gru, ``fused=True`` against autodiff.
2. Speed: one training step (forward, backward, an Adam update on mean(ys^2)) of one layer,
   D = H, per variant: ``scan`` (the default path), ``cudnn`` (lstm only), ``fused`` and
   ``bf16`` (the model computes in bfloat16 on cast copies, as ``model.dtype=bfloat16``),
   timed in alternation in this one process (all are JAX programs on one device): round r
   runs the variants in an order rotated by r. Each row gives the median seconds per step and
   tokens/s, and each variant's ratio to ``scan`` as the median of its per-round ratios.
   ``flax`` is Flax's ``nn.RNN`` over its own cell (issue #17's peer), same loss and update.
3. Linear recurrences (issue #18; skipped with ``--no_linear``): the same training step at
   B = 16, H = 128, T in ``--linear_lengths``, for lstm and gru (the scan) and mingru,
   minlstm and lru in their parallel (``par``, associative scan) and sequential (``seq``)
   forms, alternating in rotated rounds; tokens/s and each one's ratio to lstm.

Everything goes to stdout and, with ``--out``, to a JSON file. The engine defaults
(``engine.CUDNN_DEFAULT``, ``engine.FUSED_DEFAULT``) should follow what this measures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnnlab import cells, engine

# The default fits one short GPU session (16 points); --full is issue #17's whole grid.
GRID = {"cells": ("lstm", "gru"), "batch": (16, 256), "length": (100, 500), "hidden": (64, 512)}
LINEAR = ("lstm", "gru", "mingru:par", "mingru:seq", "minlstm:par", "minlstm:seq", "lru:par",
          "lru:seq")
FULL = {"cells": ("lstm", "gru", "rnn"), "batch": (16, 64, 256), "length": (100, 500),
        "hidden": (64, 128, 512)}
QUICK = {"cells": ("lstm", "gru"), "batch": (4,), "length": (8,), "hidden": (8,)}


def equality_checks(cudnn: bool = True) -> list[dict]:
  """Max abs and relative differences of each fast path against the scan path (the cuDNN
  rows only with ``cudnn``: they need a GPU)."""
  rows = []
  rng = np.random.default_rng(0)
  b, t, d, h = 5, 17, 6, 8
  xs = jnp.asarray(rng.normal(size=(b, t, d)), jnp.float32)
  lengths = jnp.array([17, 3, 9, 1, 12])
  with jax.default_matmul_precision("highest"):
    for cell, option, kwargs in (("lstm", "cudnn", dict(lengths=lengths, reverse=False)),
                                 ("lstm", "cudnn", dict(lengths=lengths, reverse=True)),
                                 ("lstm", "cudnn", dict()),
                                 ("lstm", "fused", dict(lengths=lengths, reverse=True)),
                                 ("gru", "fused", dict(lengths=lengths))):
      if option == "cudnn" and not cudnn:
        continue
      c = cells.get_cell(cell)
      params = c.init(jax.random.PRNGKey(1), d, h, forget_bias=1.0) if cell == "lstm" else \
          c.init(jax.random.PRNGKey(1), d, h)
      carry = jax.tree.map(lambda a: a + 0.3, c.init_carry(params, (b,)))

      def loss(params, xs, carry, on):
        final, ys = engine.scan(c, params, xs, carry=carry, **{option: on}, **kwargs)
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(jnp.cos(f)) for f in jax.tree.leaves(final)), \
            (final, ys)

      grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True), static_argnums=3)
      (g_on, o_on), (g_off, o_off) = grad(params, xs, carry, True), grad(params, xs, carry, False)
      diffs = [(np.abs(np.asarray(a) - np.asarray(r)).max(),
                np.abs(np.asarray(r)).max()) for a, r in zip(jax.tree.leaves((o_on, g_on)),
                                                             jax.tree.leaves((o_off, g_off)))]
      worst = max(a / max(r, 1e-12) for a, r in diffs)
      row = {"check": f"{cell} {option}", "options": {k: (v.tolist() if hasattr(v, "tolist")
                                                           else v) for k, v in kwargs.items()},
             "max_abs": float(max(a for a, _ in diffs)), "max_rel_to_largest": float(worst),
             "equal_to_1e-5": bool(worst < 1e-5)}
      rows.append(row)
      print(f"EQUAL {row['check']:12} {kwargs and sorted(kwargs) or ''}: max abs "
            f"{row['max_abs']:.2e}, relative {worst:.2e} -> "
            f"{'ok' if row['equal_to_1e-5'] else 'DIFFERS'}", flush=True)
  return rows


def _train_step(cell: str, b: int, t: int, h: int, variant: str):
  """A jitted zero-argument training step of one layer for ``variant``: scan, cudnn, fused,
  bf16, flax (Flax's nn.RNN), par or seq (a linear cell's form)."""
  key_p, key_x = jax.random.split(jax.random.PRNGKey(0))
  xs = jax.random.normal(key_x, (b, t, h))
  opt = optax.adam(1e-3)
  if variant == "flax":
    from benchmarks import jax_models  # pylint: disable=g-import-not-at-top
    init, apply = jax_models.flax_model(cell, h)
    params = init(key_p, xs)
    loss = lambda params: jnp.mean(jnp.square(apply(params, xs)))
  else:
    c = cells.get_cell(cell)
    params = c.init(key_p, h, h)
    options = {"cudnn": {"cudnn": True}, "fused": {"fused": True}, "par": {"parallel": True},
               "seq": {"parallel": False}}.get(variant, {"cudnn": False})
    dtype = jnp.bfloat16 if variant == "bf16" else jnp.float32

    def loss(params):
      p = jax.tree.map(lambda a: a.astype(dtype), params)
      ys = engine.scan(c, p, xs.astype(dtype), **options)[1]
      return jnp.mean(jnp.square(ys.astype(jnp.float32)))

  @jax.jit
  def step(params, state):
    grads = jax.grad(loss)(params)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  carry = [params, opt.init(params)]

  def run():
    carry[:] = step(*carry)
    jax.block_until_ready(carry)
  run()  # compile
  return run


def timings(grid: dict, rounds: int, steps: int) -> list[dict]:
  rows = []
  for cell in grid["cells"]:
    for h in grid["hidden"]:
      for t in grid["length"]:
        for b in grid["batch"]:
          variants = ["scan", "fused", "bf16", "flax"] + (["cudnn"] if cell == "lstm" else [])
          runs = {}
          for v in variants:
            try:
              runs[v] = _train_step(cell, b, t, h, v)
            except Exception as e:  # pylint: disable=broad-except  (reported, not hidden)
              print(f"SKIP {cell} B={b} T={t} H={h} {v}: {type(e).__name__}: {e}", flush=True)
          times = _alternate(runs, rounds, steps)
          row = {"cell": cell, "batch": b, "length": t, "hidden": h,
                 "device": jax.devices()[0].device_kind}
          for v, ts in times.items():
            ratios = [s / x for s, x in zip(times["scan"], ts)]
            row[v] = {"s": statistics.median(ts), "tokens_per_s": b * t / statistics.median(ts),
                      "speedup_vs_scan": statistics.median(ratios),
                      "range": [min(ratios), max(ratios)]}
          rows.append(row)
          print(f"SPEED {cell:4} B={b:<3} T={t:<3} H={h:<3} " + "  ".join(
              f"{v} {row[v]['tokens_per_s'] / 1e3:.1f}k ({row[v]['speedup_vs_scan']:.2f}x)"
              for v in times), flush=True)
  return rows


def _alternate(runs: dict, rounds: int, steps: int) -> dict:
  """Seconds per step of each zero-argument step in ``runs``, per round, the order rotated by
  the round."""
  times = {v: [] for v in runs}
  for r in range(rounds):
    for v in list(runs)[r % len(runs):] + list(runs)[:r % len(runs)]:
      start = time.perf_counter()
      for _ in range(steps):
        runs[v]()
      times[v].append((time.perf_counter() - start) / steps)
  return times


def linear_timings(lengths, rounds: int, steps: int, batch: int = 16, hidden: int = 128):
  """Issue #18's speed table: every entry of ``LINEAR`` at each T, ratios to lstm."""
  rows = []
  for t in lengths:
    runs = {}
    for entry in LINEAR:
      cell, _, form = entry.partition(":")
      try:
        runs[entry] = _train_step(cell, batch, t, hidden, form or "scan")
      except Exception as e:  # pylint: disable=broad-except  (reported, not hidden)
        print(f"SKIP linear T={t} {entry}: {type(e).__name__}: {e}", flush=True)
    times = _alternate(runs, rounds, steps)
    row = {"batch": batch, "length": t, "hidden": hidden, "device": jax.devices()[0].device_kind}
    for v, ts in times.items():
      ratios = [s / x for s, x in zip(times.get("lstm", ts), ts)]
      row[v] = {"s": statistics.median(ts), "tokens_per_s": batch * t / statistics.median(ts),
                "speedup_vs_lstm": statistics.median(ratios), "range": [min(ratios), max(ratios)]}
    rows.append(row)
    print(f"LINEAR T={t:<5} " + "  ".join(
        f"{v} {row[v]['tokens_per_s'] / 1e3:.1f}k ({row[v]['speedup_vs_lstm']:.2f}x)"
        for v in times), flush=True)
  return rows


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--quick", action="store_true", help="a tiny grid: checks the script itself")
  p.add_argument("--full", action="store_true", help="the whole grid of issue #17 (54 points)")
  p.add_argument("--allow_cpu", action="store_true", help="run without a GPU (no cuDNN)")
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--steps", type=int, default=3, help="timed steps per variant and round")
  p.add_argument("--no_linear", action="store_true", help="skip the linear-recurrence table")
  p.add_argument("--linear_lengths", default="512,2048,8192", help="T of the linear table")
  p.add_argument("--out", help="also write the results to this JSON file")
  args = p.parse_args(argv)
  if jax.default_backend() != "gpu" and not args.allow_cpu:
    print(f"benchmarks.gpu_check: no GPU here (JAX's backend is {jax.default_backend()}); "
          "--allow_cpu runs it anyway, without the cuDNN rows.", file=sys.stderr)
    return 2
  result = {"argv": sys.argv[1:] if argv is None else argv,
            "jax": jax.__version__, "device": str(jax.devices()[0])}

  def save():  # after every part, so a run cut short by its time limit keeps what it did
    if args.out:
      os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
      with open(args.out, "w") as f:
        json.dump(result, f, indent=1)

  result["equality"] = equality_checks(cudnn=jax.default_backend() == "gpu")
  save()
  grid = QUICK if args.quick else FULL if args.full else GRID
  result["speed"] = timings(grid, args.rounds, args.steps)
  save()
  if not args.no_linear:
    lengths = (16,) if args.quick else tuple(int(v) for v in args.linear_lengths.split(","))
    result["linear"] = linear_timings(lengths, args.rounds, args.steps,
                                      **({"hidden": 8, "batch": 4} if args.quick else {}))
    save()
  if args.out:
    print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

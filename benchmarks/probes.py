"""Small CPU probes behind engine choices, each a paired measurement in one command.

    python -m benchmarks.probes dot          # (T, B, D) contraction vs the same on 2-D rows
    python -m benchmarks.probes projection   # Cell.project on rows vs over (B, T, D), training
    python -m benchmarks.probes xla_flags    # XLA CPU options, one process per option
    python -m benchmarks.probes minlstm      # where minlstm's training step spends its time
    python -m benchmarks.probes wavefront    # stacked lstm layers in one wavefront loop
    python -m benchmarks.probes pages        # fresh memory pages per training step, and malloc

Every probe runs pinned to one core with XLA's Eigen pool off and times process CPU time
(which a busy machine inflates less than wall time), alternating the variants:

  dot         jnp.einsum("tbh,tbg->hg") against the same product as a (T*B, H)^T (T*B, G)
              matmul, T=100, B=256, H=128, G=512: the shape of dW for a projection of all
              steps at once. Median ms over --repeats calls each.
  projection  one training step (grad of mean(ys^2)) of ``engine.scan`` at B=16, H=128,
              T=--length, with ``Cell.project`` as it is (one matmul on (B*T, D) rows)
              against the former ``x @ w_x + b`` on (B, T, D); the median of --repeats
              paired ratios old/new (> 1: rows are faster). lstm runs with hoist=True
              (its CPU default projects inside the step, where nothing changes).
  xla_flags   the lstm training step (B, T, H from --point) in a fresh process per XLA
              option, --rounds rounds with the order reversed every other round; median ms
              and the ratio to no option.
  minlstm     one training step at B=16, H=128, T=--length of lstm, mingru, minlstm, and
              minlstm with its normalised gate replaced by one sigmoid of x_f (the same 3H
              projection and scan; ``minlstm_one_gate``) and computed from two exponentials
              (``minlstm_two_exp``), --rounds rounds alternating in
              order and reverse; median ms and lstm's time over each (its speed-up).
  wavefront   the training step of an L-layer unidirectional lstm stack (B, T, H, L from
              --stacks) as the engine runs it (one scan per layer) against a wavefront: one
              scan of T + L - 1 iterations in which layer l takes step t - l, the layers
              above the first as one vmapped step (batched matmuls); outputs checked equal
              first. --rounds rounds alternating; median ms and layered/wavefront (> 1: the
              wavefront is faster).
  pages       the lstm training step (B, T, H from --point) through oneDNN (the CPU default)
              and through the scan (onednn=False), each in a fresh process, with glibc's
              malloc as it comes (RNNLAB_MALLOC=system) and with ``keep``, rnnlab's default
              (rnnlab/heap.py: requests below 2 GiB from malloc's heaps, which keep their
              free pages). --rounds rounds, the order reversed every other; median CPU ms
              per step, minor page faults per step (pages touched for the first time) and
              system CPU ms per step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

FLAGS = {"none": "", "onednn": "--xla_cpu_use_onednn=true",
         "onednn_custom_call": "--xla_cpu_experimental_onednn_custom_call=true",
         "xnnpack": "--xla_cpu_use_xnnpack=true",
         "thunk_runtime_off": "--xla_cpu_use_thunk_runtime=false",
         "vector_width_512": "--xla_cpu_prefer_vector_width=512"}


def _cpu_seconds(fn) -> float:
  start = time.process_time()
  fn()
  return time.process_time() - start


def _train_step(cell_name, b, t, h, *, hoist=None, project=None, onednn=None):
  """A jitted zero-argument training step of ``engine.scan``; ``project`` replaces
  ``Cell.project`` while it is traced. ``cell_name`` may be a ``Cell``."""
  import jax  # pylint: disable=g-import-not-at-top (after pinning)
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from rnnlab import cells, engine  # pylint: disable=g-import-not-at-top
  cell = cells.get_cell(cell_name) if isinstance(cell_name, str) else cell_name
  params = cell.init(jax.random.PRNGKey(0), h, h)
  xs = jax.random.normal(jax.random.PRNGKey(1), (b, t, h))
  step = jax.jit(jax.grad(lambda p: jnp.mean(
      engine.scan(cell, p, xs, hoist=hoist, onednn=onednn)[1] ** 2)))
  saved = cells.Cell.project
  if project is not None:
    cells.Cell.project = project
  try:
    jax.block_until_ready(step(params))  # traced and compiled here
  finally:
    cells.Cell.project = saved
  return lambda: jax.block_until_ready(step(params))


def _former_project(self, params, x):
  """``Cell.project`` before 2026-12-07: the matmul over all leading axes as they come."""
  if self.project_fn is not None:
    return self.project_fn(params, x)
  return x @ params["w_x"] + params["b"]


def dot(args) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  t, b, h, g = args.dot_shape
  a = jax.random.normal(jax.random.PRNGKey(0), (t, b, h))
  c = jax.random.normal(jax.random.PRNGKey(1), (t, b, g))
  variants = {"einsum_two_axes": jax.jit(lambda a, c: jnp.einsum("tbh,tbg->hg", a, c)),
              "rows_2d": jax.jit(lambda a, c: a.reshape(-1, h).T @ c.reshape(-1, g))}
  times = {k: [] for k in variants}
  for f in variants.values():
    f(a, c).block_until_ready()
  for i in range(args.repeats):
    for k in (list(variants) if i % 2 == 0 else list(variants)[::-1]):
      times[k].append(_cpu_seconds(lambda: variants[k](a, c).block_until_ready()))
  out = {k: statistics.median(v) * 1e3 for k, v in times.items()}
  print(f"dot {args.dot_shape}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in out.items()))
  return out


def projection(args) -> dict:
  out = {}
  for cell in args.cells.split(","):
    hoist = True if cell in ("lstm", "gru", "rnn") else None
    old = _train_step(cell, 16, args.length, 128, hoist=hoist, project=_former_project)
    new = _train_step(cell, 16, args.length, 128, hoist=hoist)
    ratios = [_cpu_seconds(old) / _cpu_seconds(new) for _ in range(args.repeats)]
    out[cell] = {"median": statistics.median(ratios), "low": min(ratios), "high": max(ratios)}
    print(f"projection {cell} T={args.length}: old/new {out[cell]['median']:.2f} "
          f"({out[cell]['low']:.2f}-{out[cell]['high']:.2f})", flush=True)
  return out


def _one_gate_coefficients(params, xp):
  """minlstm's coefficients with f' = sigmoid(x_f) in place of f / (f + i): x_i is
  projected and dropped, so only the gate arithmetic differs."""
  import jax  # pylint: disable=g-import-not-at-top
  from rnnlab import cells  # pylint: disable=g-import-not-at-top
  x_f, _, x_h = cells._split(xp, 3)  # pylint: disable=protected-access
  f = jax.nn.sigmoid(x_f)
  return f, (1.0 - f) * x_h


def _two_exp_coefficients(params, xp):
  """minlstm's coefficients with f / (f + i) as (1 + e^-x_i) / (2 + e^-x_f + e^-x_i), the
  exponents clamped at 60: two exponentials in place of two softplus and a sigmoid, exact
  only while neither pre-activation is below -60."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from rnnlab import cells  # pylint: disable=g-import-not-at-top
  x_f, x_i, x_h = cells._split(xp, 3)  # pylint: disable=protected-access
  e_f, e_i = jnp.exp(-jnp.maximum(x_f, -60.0)), jnp.exp(-jnp.maximum(x_i, -60.0))
  f = (1.0 + e_i) / (2.0 + e_f + e_i)
  return f, (1.0 - f) * x_h


def minlstm(args) -> dict:
  import dataclasses  # pylint: disable=g-import-not-at-top
  from rnnlab import cells  # pylint: disable=g-import-not-at-top
  base = cells.get_cell("minlstm")
  variant = lambda fn: dataclasses.replace(
      base, linear=dataclasses.replace(base.linear, coefficients=fn))
  steps = {name: _train_step(cell, 16, args.length, 128) for name, cell in (
      ("lstm", "lstm"), ("mingru", "mingru"), ("minlstm", "minlstm"),
      ("minlstm_two_exp", variant(_two_exp_coefficients)),
      ("minlstm_one_gate", variant(_one_gate_coefficients)))}
  times = {name: [] for name in steps}
  for r in range(args.rounds):
    for name in (list(steps) if r % 2 == 0 else list(steps)[::-1]):
      times[name].append(_cpu_seconds(steps[name]))
  lstm = statistics.median(times["lstm"])
  out = {}
  for name, ts in times.items():
    med = statistics.median(ts)
    out[name] = {"ms": 1e3 * med, "low_ms": 1e3 * min(ts), "high_ms": 1e3 * max(ts),
                 "lstm_over": lstm / med}
    print(f"minlstm T={args.length}: {name:17s} {1e3 * med:6.0f} ms ({1e3 * min(ts):.0f}-"
          f"{1e3 * max(ts):.0f}), lstm/this {lstm / med:.2f}", flush=True)
  return out


def _wavefront_stack(cell, params, xs):
  """The top layer's outputs (B, T, H) of a unidirectional stack (``params`` a list over
  layers, all layers above the first of one shape), run as a wavefront."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  n, (b, t, d) = len(params), xs.shape
  stack = lambda trees: jax.tree.map(lambda *a: jnp.stack(a), *trees)
  upper = stack(params[1:])
  xp0 = cell.project(params[0], jnp.concatenate(  # layer 0's projection of every step
      [jnp.swapaxes(xs, 0, 1), jnp.zeros((n - 1, b, d), xs.dtype)]))
  held = lambda active, new, old: jax.tree.map(lambda a, o: jnp.where(active, a, o), new, old)

  def body(state, inputs):
    k, xp = inputs
    c0, cu, below = state  # below: (n-1, B, H), the last outputs of layers 0..n-2
    n0, y0 = cell.recur(params[0], c0, xp)
    nu, yu = jax.vmap(cell.step)(upper, cu, below)
    steps = k - jnp.arange(1, n)
    nu = held(((steps >= 0) & (steps < t))[:, None, None], nu, cu)
    return (held(k < t, n0, c0), nu, jnp.concatenate([y0[None], yu[:-1]])), yu[-1]

  carries = [cell.init_carry(p, (b,)) for p in params]
  h = params[0]["w_h"].shape[0]
  _, tops = jax.lax.scan(body, (carries[0], stack(carries[1:]), jnp.zeros((n - 1, b, h))),
                         (jnp.arange(t + n - 1), xp0))
  return jnp.swapaxes(tops[n - 1:], 0, 1)


def wavefront(args) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from rnnlab import cells, engine  # pylint: disable=g-import-not-at-top
  cell, out = cells.get_cell("lstm"), {}

  def layered(params, xs):
    for p in params:
      xs = engine.scan(cell, p, xs)[1]
    return xs

  for b, t, h, n in args.stacks:
    params = [cell.init(k, h, h) for k in jax.random.split(jax.random.PRNGKey(0), n)]
    xs = jax.random.normal(jax.random.PRNGKey(1), (b, t, h))
    np.testing.assert_allclose(_wavefront_stack(cell, params, xs), layered(params, xs),
                               atol=1e-5)
    steps = {}
    for name, fn in (("layered", layered), ("wavefront", lambda p, x: _wavefront_stack(
        cell, p, x))):
      grad = jax.jit(jax.grad(lambda p, fn=fn: jnp.mean(fn(p, xs) ** 2)))
      jax.block_until_ready(grad(params))
      steps[name] = lambda grad=grad: jax.block_until_ready(grad(params))
    times = {name: [] for name in steps}
    for r in range(args.rounds):
      for name in (list(steps) if r % 2 == 0 else list(steps)[::-1]):
        times[name].append(_cpu_seconds(steps[name]))
    med = {name: statistics.median(ts) for name, ts in times.items()}
    key = f"B={b},T={t},H={h},L={n}"
    out[key] = {"layered_ms": 1e3 * med["layered"], "wavefront_ms": 1e3 * med["wavefront"],
                "layered_over_wavefront": med["layered"] / med["wavefront"]}
    print(f"wavefront {key}: layered {1e3 * med['layered']:.0f} ms, wavefront "
          f"{1e3 * med['wavefront']:.0f} ms, layered/wavefront "
          f"{med['layered'] / med['wavefront']:.2f}", flush=True)
  return out


def _one_flag_process(args) -> None:
  """Child of ``xla_flags``: time the step under this process's XLA_FLAGS, print JSON."""
  b, t, h = args.point
  step = _train_step("lstm", b, t, h)
  print(json.dumps(statistics.median(_cpu_seconds(step) for _ in range(args.repeats))))


def xla_flags(args) -> dict:
  times = {k: [] for k in FLAGS}
  for r in range(args.rounds):
    for name in (list(FLAGS) if r % 2 == 0 else list(FLAGS)[::-1]):
      env = dict(os.environ, XLA_FLAGS=f"--xla_cpu_multi_thread_eigen=false {FLAGS[name]}")
      cmd = [sys.executable, "-m", "benchmarks.probes", "_one_flag",
             "--point", ",".join(map(str, args.point)), "--repeats", str(args.repeats)]
      done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
      if done.returncode:
        print(f"xla_flags {name}: failed: {done.stderr.strip().splitlines()[-1:]}")
        continue
      times[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
  base = statistics.median(times["none"])
  out = {k: {"ms": statistics.median(v) * 1e3, "none/this": base / statistics.median(v)}
         for k, v in times.items() if v}
  for k, v in out.items():
    print(f"xla_flags lstm {args.point}: {k} {v['ms']:.1f} ms ({v['none/this']:.2f}x)")
  return out


PAGES = {"onednn": (None, "system"), "onednn keep": (None, "keep"), "scan": (False, "system"),
         "scan keep": (False, "keep")}  # variant -> (engine.scan's onednn, RNNLAB_MALLOC)


def _one_pages_process(args) -> None:
  """Child of ``pages``: the variant named by --variant, one JSON line of medians."""
  import resource  # pylint: disable=g-import-not-at-top
  from rnnlab import heap  # pylint: disable=g-import-not-at-top
  onednn, malloc = PAGES[args.variant]
  if heap.applied().split(":")[0] != malloc:
    raise RuntimeError(f"malloc is {heap.applied()!r}, not {malloc!r}")
  b, t, h = args.point
  step = _train_step("lstm", b, t, h, onednn=onednn)
  rows = []
  for _ in range(args.repeats):
    before, cpu = resource.getrusage(resource.RUSAGE_SELF), time.process_time()
    step()
    cpu, after = time.process_time() - cpu, resource.getrusage(resource.RUSAGE_SELF)
    rows.append((cpu, after.ru_minflt - before.ru_minflt, after.ru_stime - before.ru_stime))
  print(json.dumps([statistics.median(col) for col in zip(*rows)]))


def pages(args) -> dict:
  got = {k: [] for k in PAGES}
  for r in range(args.rounds):
    for name in (list(PAGES) if r % 2 == 0 else list(PAGES)[::-1]):
      cmd = [sys.executable, "-m", "benchmarks.probes", "_one_pages", "--variant", name,
             "--point", ",".join(map(str, args.point)), "--repeats", str(args.repeats)]
      env = {**os.environ, "RNNLAB_MALLOC": PAGES[name][1]}  # read when rnnlab is imported
      done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
      if done.returncode:
        print(f"pages {name}: failed: {done.stderr.strip().splitlines()[-1:]}")
        continue
      got[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
  out = {}
  for name, runs in got.items():
    if runs:
      cpu, faults, sys_s = (statistics.median(col) for col in zip(*runs))
      out[name] = {"cpu_ms": 1e3 * cpu, "minor_faults": faults, "sys_ms": 1e3 * sys_s}
      print(f"pages lstm {args.point}: {name}: {1e3 * cpu:.1f} CPU ms per step, "
            f"{faults:.0f} minor page faults, {1e3 * sys_s:.1f} system ms", flush=True)
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("probe", choices=("dot", "projection", "xla_flags", "minlstm", "wavefront",
                                       "pages", "_one_flag", "_one_pages"))
  p.add_argument("--variant", choices=tuple(PAGES), help=argparse.SUPPRESS)
  p.add_argument("--cells", default="mingru,lru,minlstm,lstm", help="projection: cells")
  p.add_argument("--length", type=int, default=2048, help="projection, minlstm: T")
  p.add_argument("--point", default="64,100,128", help="xla_flags, pages: B,T,H")
  p.add_argument("--dot_shape", default="100,256,128,512", help="dot: T,B,H,G")
  p.add_argument("--stacks", default="16,100,128,2;64,100,128,2;16,100,128,4;64,100,128,4",
                 help="wavefront: B,T,H,L points separated by ;")
  p.add_argument("--repeats", type=int, default=8)
  p.add_argument("--rounds", type=int, default=3)
  args = p.parse_args(argv)
  try:
    args.point = tuple(int(v) for v in args.point.split(","))
    args.dot_shape = tuple(int(v) for v in args.dot_shape.split(","))
    args.stacks = [tuple(int(v) for v in point.split(",")) for point in args.stacks.split(";")]
    if len(args.point) != 3 or len(args.dot_shape) != 4 or min(
        *args.point, *args.dot_shape, args.length, args.repeats, args.rounds) < 1 or any(
            len(point) != 4 or min(point) < 1 or point[3] < 2 for point in args.stacks):
      raise ValueError
  except ValueError:
    print("benchmarks.probes: --point is B,T,H, --dot_shape T,B,H,G and --stacks B,T,H,L;..."
          " (L >= 2), positive integers; --length, --repeats and --rounds positive.",
          file=sys.stderr)
    return 2
  if not args.probe.startswith("_one"):  # one core, Eigen's pool off, before JAX starts
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[-1:])
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_cpu_multi_thread_eigen=false").strip()
  {"dot": dot, "projection": projection, "xla_flags": xla_flags, "minlstm": minlstm,
   "wavefront": wavefront, "pages": pages, "_one_flag": _one_flag_process,
   "_one_pages": _one_pages_process}[args.probe](args)
  return 0


if __name__ == "__main__":
  sys.exit(main())

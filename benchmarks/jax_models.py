"""JAX workloads: rnnlab's engine and Flax's ``nn.RNN``, as ahead-of-time compiled steps.

Both frameworks get the same program around the recurrence: inputs
xs (B, T, D) ~ N(0, 1); the loss L = mean_{b,t,h} y_{bth}^2 over all outputs
ys (B, T, H); one Adam update (``optax.adam(1e-3)``) with the parameters and
optimizer state donated, as in a training loop. Compilation is done and timed
before the first step, so warm-up calls measure the steady state only.
"""

from __future__ import annotations

import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import experiments
from benchmarks.harness import Workload
from rnnlab import cells
from rnnlab import engine
from rnnlab import onednn

# Flax's own cells: the fused-gate LSTM, and the GRU / Elman cells nn.RNN ships.
FLAX_CELLS = {"lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell, "rnn": nn.SimpleCell}


def rnnlab_model(cell: str, hidden: int, *, remat: bool = False, parallel=None, fused=None,
                 onednn=None):
  """rnnlab's real code path, a one-layer ``engine.apply_stack``: (init, apply).

  init(key, xs) -> params; apply(params, xs (B, T, D)) -> ys (B, T, H). ``parallel``
  is ``engine.scan``'s (for the linear cells: associative scan, sequential pass, or
  None, by backend), and so are ``fused`` (the fused backward pass) and ``onednn``
  (None: oneDNN's LSTM and GRU where they apply, ``engine.ONEDNN_DEFAULT``).
  """
  stack = engine.make_stack(cell, hidden)
  engine.resolve_parallel(cell, parallel)
  engine.resolve_fused(cell, fused)
  init = lambda key, xs: engine.init_stack(key, stack, xs.shape[-1])
  apply = lambda params, xs: engine.apply_stack(stack, params, xs, remat=remat,
                                                parallel=parallel, fused=fused,
                                                onednn=onednn)[1]
  return init, apply


def _scan(cell: str, hidden: int, *, remat: bool = False):
  """rnnlab with oneDNN off (``engine.scan(onednn=False)``): the XLA scan for every cell."""
  return rnnlab_model(cell, hidden, remat=remat, onednn=False)


def _fused(cell: str, hidden: int, *, remat: bool = False):
  """rnnlab with the fused backward pass forced on (``engine.scan(fused=True)``)."""
  return rnnlab_model(cell, hidden, remat=remat, fused=True)


def _onednn(cell: str, hidden: int, *, remat: bool = False):
  """rnnlab with oneDNN's fused RNNs forced on (``engine.scan(onednn=True)``, CPU only): the
  plain lstm or the gru, float32, full-length sequences, as this harness runs them."""
  if cell not in onednn.CELLS:
    raise ValueError(f"rnnlab_onednn runs the {', '.join(onednn.CELLS)} only, not "
                     f"{cell!r}.")
  if remat:
    raise ValueError("remat does not apply to rnnlab_onednn (oneDNN keeps its own workspace).")
  ok, why = onednn.available()
  if not ok:
    raise ValueError(f"rnnlab_onednn cannot run here: {why}")
  stack = engine.make_stack(cell, hidden)
  init = lambda key, xs: engine.init_stack(key, stack, xs.shape[-1])
  apply = lambda params, xs: engine.apply_stack(stack, params, xs, onednn=True)[1]
  return init, apply


def _linear_form(parallel: bool):
  """rnnlab with a linear cell's form forced: associative scan (True) or sequential (False)."""
  def model(cell: str, hidden: int, *, remat: bool = False):
    return rnnlab_model(cell, hidden, remat=remat, parallel=parallel)
  return model


def flax_model(cell: str, hidden: int, *, remat: bool = False):
  """``nn.RNN`` over Flax's cell for ``cell``: (init, apply) as in ``rnnlab_model``."""
  if cell not in FLAX_CELLS:
    raise ValueError(f"No Flax peer for cell {cell!r}; valid: {', '.join(FLAX_CELLS)}.")
  if remat:
    raise ValueError("remat is measured for rnnlab only; Flax's nn.RNN has no such option.")
  module = nn.RNN(FLAX_CELLS[cell](features=hidden))
  return module.init, module.apply


MODELS = {"rnnlab": rnnlab_model, "flax": flax_model, "rnnlab_par": _linear_form(True),
          "rnnlab_seq": _linear_form(False), "rnnlab_fused": _fused,
          "rnnlab_onednn": _onednn, "rnnlab_scan": _scan,
          # the default path; its worker sets RNNLAB_ONEDNN_THREADS=auto (worker.ENVIRONMENT)
          "rnnlab_auto": rnnlab_model, "rnnlab_passive": rnnlab_model,
          # RNNLAB_MALLOC=system and =keep (worker.ENVIRONMENT)
          "rnnlab_system": rnnlab_model, "flax_keep": flax_model, **experiments.MODELS}


def configure(threads: int) -> None:
  """Nothing to do: XLA already sized its pool from the CPU affinity the worker set."""
  del threads


def environment(torch_device: str) -> dict:
  """Where the steps run: JAX's default device (``torch_device`` is torch's business)."""
  del torch_device
  device = jax.devices()[0]
  return {"platform": device.platform, "device_kind": device.device_kind,
          "version": f"jax {jax.__version__}"}


def device_peak_bytes() -> int | None:
  """Peak bytes in use on the accelerator (None on CPU, which keeps no such count)."""
  stats = jax.devices()[0].memory_stats()
  return None if stats is None else stats.get("peak_bytes_in_use")


def mean_square_loss(apply):
  """L(params, xs) = mean(apply(params, xs)^2): every output gets a gradient."""
  return lambda params, xs: jnp.mean(jnp.square(apply(params, xs)))


def train_step(apply, opt):
  """(params, opt_state, xs) -> (params, opt_state, loss): forward, backward, Adam."""
  loss = mean_square_loss(apply)

  def step(params, opt_state, xs):
    value, grads = jax.value_and_grad(loss)(params, xs)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value
  return step


def _compile(fn, args, donate=()):
  start = time.perf_counter()
  compiled = jax.jit(fn, donate_argnums=donate).lower(*args).compile()
  return compiled, time.perf_counter() - start


def _memory(compiled) -> dict:
  """XLA's buffer assignment: temp = intermediates (activations saved for backward)."""
  m = compiled.memory_analysis()
  if m is None:
    return {}
  total = (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
           + m.temp_size_in_bytes)
  return {"xla_temp_bytes": m.temp_size_in_bytes, "xla_argument_bytes": m.argument_size_in_bytes,
          "xla_output_bytes": m.output_size_in_bytes, "xla_alias_bytes": m.alias_size_in_bytes,
          "xla_total_bytes": total}


def _add_train(work, state, apply, xs):
  opt = optax.adam(1e-3)
  state["opt"] = jax.jit(opt.init)(state["params"])
  step, work.compile_s["train"] = _compile(
      train_step(apply, opt), (state["params"], state["opt"], xs), donate=(0, 1))
  work.memory["train"] = _memory(step)

  def run():
    state["params"], state["opt"], loss = step(state["params"], state["opt"], xs)
    jax.block_until_ready((state["params"], state["opt"], loss))
  work.steps["train"] = run


def _add_forward(work, state, apply, xs):
  forward, work.compile_s["forward"] = _compile(apply, (state["params"], xs))
  work.memory["forward"] = _memory(forward)
  # state["params"] is read at call time: the train step donates and replaces it.
  work.steps["forward"] = lambda: forward(state["params"], xs).block_until_ready()


_ADDERS = {"train": _add_train, "forward": _add_forward}


def build(framework, cell, batch, length, hidden, input_size, *, modes, seed,
          torch_device=None, remat=False) -> Workload:
  """Compiled steps for one case; ``torch_device`` is unused (JAX_PLATFORMS decides)."""
  del torch_device
  if framework not in MODELS:
    raise ValueError(f"Unknown JAX framework {framework!r}; valid: {', '.join(MODELS)}.")
  init, apply = MODELS[framework](cell, hidden, remat=remat)

  @jax.jit  # one compilation instead of dozens of eager initialiser ops
  def inputs_and_params(key):
    key_p, key_x = jax.random.split(key)
    xs = jax.random.normal(key_x, (batch, length, input_size))
    return xs, init(key_p, xs)
  xs, params = inputs_and_params(jax.random.key(seed))
  state = {"params": params}
  work = Workload()
  for mode in modes:
    _ADDERS[mode](work, state, apply, xs)
  return work


# --- rnnlab's matmuls alone: the PROFILE line of benchmarks.paired ------------------------

PROFILE_CHUNK = 50  # most time steps per call of the matmul program


def profile_chunk(length: int) -> int:
  """Steps per call of the matmul program: the largest divisor of T up to PROFILE_CHUNK.

  Unrolled, T = 500 steps of a training step's matmuls take ~50 s to compile; a chunk of
  at most 50 steps called T / chunk times compiles in a few seconds and runs the same
  matmuls.
  """
  return max(k for k in range(1, min(length, PROFILE_CHUNK) + 1) if length % k == 0)


def _in_order(steps) -> dict:
  """Runs ``fn(sums, x) -> sums`` for each ``(fn, x)`` of ``steps``, unrolled.

  Step i+1's inputs pass one ``optimization_barrier`` together with the sums after
  step i. So XLA can neither merge the same-shaped matmuls of different steps into one
  larger matmul (they share a weight) nor run them side by side, as it could not in the
  recurrence. The barrier does no work.
  """
  sums = {}
  for i, (fn, x) in enumerate(steps):
    if i:
      sums, x = jax.lax.optimization_barrier((sums, x))
    sums = fn(sums, x)
  return sums


def _add(sums: dict, **products) -> dict:
  """Adds each matmul's result into its running sum: one output keeps every step's
  matmul in use (XLA drops a matmul nobody reads) at B*G*H adds a step, 1/(2H) of the
  matmul's flops, without T output buffers to allocate and hand back per call."""
  return {**sums, **{k: v if k not in sums else sums[k] + v for k, v in products.items()}}


def matmul_programs(cell, mode, hoist):
  """The matmuls of one rnnlab ``mode`` step, as (G, chunk, hoisted).

  With G the cell's gates (lstm 4, gru 3, rnn 1), W_x (D, G*H) and W_h (H, G*H):

  - ``chunk(w_x, w_h, xs, hs, gs)``: K = ``profile_chunk(T)`` steps in order, inputs
    lists of K arrays xs (B, D), hs (B, H), gs (B, G*H). Per step, forward: h @ W_h
    ((B, H) x (H, G*H)) and, unhoisted, x @ W_x ((B, D) x (D, G*H)); training adds per
    step, in a second pass: dh = g @ W_h^T, dW_h = h^T @ g and, unhoisted,
    dx = g @ W_x^T, dW_x = x^T @ g. Each result is added into a running sum over the
    steps (``_add``; dW_h and dW_x are such sums in the recurrence's backward loop too);
    the sums are the outputs.
  - ``hoisted(w_x, xs, gs)`` (None unless ``hoist``): the input projection of all T
    steps as one (T*B, D) x (D, G*H) matmul; training adds dxs = gs @ W_x^T and
    dW_x = xs^T @ gs, each one matmul over all T*B rows.

  ``hoist`` is where ``engine.scan`` puts the input projection (hoisted off the CPU).
  """
  gates = cells.get_cell(cell).num_gates

  def forward(sums, inp):
    h, x, w_h, w_x = inp
    sums = _add(sums, h_w_h=h @ w_h)
    return sums if hoist else _add(sums, x_w_x=x @ w_x)

  def backward(sums, inp):
    g, h, x, w_h, w_x = inp
    sums = _add(sums, dh=g @ w_h.T, dw_h=h.T @ g)
    return sums if hoist else _add(sums, dx=g @ w_x.T, dw_x=x.T @ g)

  def chunk(w_x, w_h, xs, hs, gs):
    steps = [(forward, (h, x, w_h, w_x)) for h, x in zip(hs, xs)]
    if mode == "train":
      steps += [(backward, (g, h, x, w_h, w_x)) for g, h, x in zip(gs, hs, xs)][::-1]
    return _in_order(steps)

  def hoisted(w_x, xs, gs):
    if mode == "forward":
      return xs @ w_x
    return xs @ w_x, gs @ w_x.T, xs.T @ gs
  return gates, chunk, (hoisted if hoist else None)


def _flops(compiled) -> float:
  analysis = compiled.cost_analysis()
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  return float(analysis.get("flops", 0.0))


def build_matmuls(cell, batch, length, hidden, input_size, *, modes, seed,
                  hoist=None) -> Workload:
  """rnnlab's matmuls of one step per mode, alone (``matmul_programs``), compiled.

  A step calls the K-step chunk T / K times, waiting for each call (so that calls
  cannot overlap on the CPU), then the hoisted matmuls if any: the matmuls of T
  steps, with nothing of the recurrence's pointwise work, while loop or stacking of
  outputs. ``flops`` holds XLA's count for the whole step. ``hoist`` None: as
  ``engine.scan`` decides (hoisted off the CPU).
  """
  if hoist is None:
    hoist = jax.default_backend() != "cpu"  # engine.scan's hoist=None
  k = profile_chunk(length)
  work = Workload()
  for mode in modes:
    gates, chunk, hoisted = matmul_programs(cell, mode, hoist)
    g = gates * hidden
    rng = np.random.default_rng(seed)  # numpy: nothing to compile
    normal = lambda *shape: jnp.asarray(rng.standard_normal(shape, np.float32))
    per_step = lambda *shape: [normal(*shape) for _ in range(k)]
    chunk_args = (normal(input_size, g), normal(hidden, g), per_step(batch, input_size),
                  per_step(batch, hidden), per_step(batch, g))
    chunk_c, seconds = _compile(chunk, chunk_args)
    work.flops[mode] = _flops(chunk_c) * (length // k)
    hoisted_c = hoisted_args = None
    if hoisted is not None:
      hoisted_args = (chunk_args[0], normal(length * batch, input_size),
                      normal(length * batch, g))
      hoisted_c, more = _compile(hoisted, hoisted_args)
      seconds += more
      work.flops[mode] += _flops(hoisted_c)
    work.compile_s[mode] = seconds

    def run(chunk_c=chunk_c, chunk_args=chunk_args, hoisted_c=hoisted_c,
            hoisted_args=hoisted_args):
      for _ in range(length // k):
        jax.block_until_ready(chunk_c(*chunk_args))
      if hoisted_c is not None:
        jax.block_until_ready(hoisted_c(*hoisted_args))
    work.steps[mode] = run
  return work

"""The recurrence engine: one code path that runs any cell over a sequence.

``scan`` runs one layer in one direction; ``Stack`` describes stacked,
bidirectional, residual layers and ``apply_stack`` runs them. All of it is
pure JAX and jit-compatible; every option that changes the program
(``reverse``, ``unroll``, ``remat``, ``return_carries``) is a Python value.

Layout: inputs are batch-major ``(*batch, T, D)`` with any number of batch
dimensions; internally the work is time-major ``(T, B, .)``. The input
projection ``x @ w_x + b`` for all T steps is one matmul before the scan.

Variable lengths: give ``lengths`` (*batch,) for right-padded sequences or a
boolean ``mask`` (*batch, T). At a masked step the carry is held and the output
is zero, so the final carry is the one after each sequence's last valid step
and, with ``reverse=True``, the reversed pass starts at each sequence's last
valid step (padding at the end is skipped, not read first).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp

from rnnlab import cells as cells_lib
from rnnlab import onednn as onednn_lib
from rnnlab.checks import check_int


def length_mask(lengths: jax.Array, seq_len: int) -> jax.Array:
  """lengths: (*batch,) ints -> (*batch, T) bool, True at valid (right-padded) steps."""
  return jnp.arange(seq_len) < jnp.asarray(lengths)[..., None]


def resolve_mask(xs, lengths, mask):
  """(*batch, T) bool from ``lengths`` or ``mask`` (checked against ``xs``), or None for neither."""
  if lengths is not None and mask is not None:
    raise ValueError("Give either lengths or mask, not both.")
  batch_shape, seq_len = xs.shape[:-2], xs.shape[-2]
  if lengths is not None:
    lengths = jnp.asarray(lengths)
    if lengths.shape != batch_shape:
      raise ValueError(f"lengths has shape {lengths.shape}; expected the batch shape {batch_shape} "
                       f"of inputs {xs.shape}.")
    return length_mask(lengths, seq_len)
  if mask is not None:
    mask = jnp.asarray(mask)
    if mask.shape != (*batch_shape, seq_len):
      raise ValueError(f"mask has shape {mask.shape}; expected {(*batch_shape, seq_len)} "
                       f"for inputs {xs.shape}.")
    return mask.astype(bool)
  return None


# Steps per scan iteration when ``unroll`` is None. On the CPU unrolling changed
# nothing measurable in the forward pass and slowed training; on a GPU each
# iteration is a round trip through XLA's while loop, and unrolling 4 steps made
# training 1.5-1.6x and the forward pass 1.2-1.7x faster on an H200
# (benchmarks/README.md, "GPU: steps per scan iteration").
DEFAULT_UNROLL = {"cpu": 1}
DEFAULT_UNROLL_ACCELERATOR = 4


def default_unroll() -> int:
  """The ``unroll`` that ``unroll=None`` means on the current default backend."""
  return DEFAULT_UNROLL.get(jax.default_backend(), DEFAULT_UNROLL_ACCELERATOR)


def resolve_unroll(unroll) -> int:
  """``unroll`` as ``jax.lax.scan`` takes it; ValueError (saying what is valid) otherwise."""
  if unroll is None:
    return default_unroll()
  if isinstance(unroll, bool) or not isinstance(unroll, int) or unroll < 1:
    raise ValueError(f"unroll must be None (by backend) or an integer >= 1, got {unroll!r}.")
  return unroll


def check_config(model_cfg, *, zoneout=False, recurrent_dropout=False):
  """The engine fields of a ``config.model`` (``unroll``, ``parallel``, ``fused``, ``cudnn``,
  ``onednn``, ``cell_options`` of ``cell``): ValueError naming the field and what is valid.
  ``zoneout`` and ``recurrent_dropout``: whether the model runs the scan with them (they rule
  out the fused pass, cuDNN and oneDNN)."""
  fused, cudnn = model_cfg.get("fused"), model_cfg.get("cudnn")
  onednn_flag = model_cfg.get("onednn")
  try:
    resolve_unroll(model_cfg.unroll)
    resolve_parallel(model_cfg.cell, model_cfg.parallel)
    resolve_fused(model_cfg.cell, fused, zoneout=True if zoneout else None,
                  recurrent_mask=True if recurrent_dropout else None)
    if cudnn not in (None, True, False):
      raise ValueError(f"cudnn must be None (where it applies), True or False; got {cudnn!r}.")
    if onednn_flag not in (None, True, False):
      raise ValueError(f"onednn must be None (where it applies), True or False; got "
                       f"{onednn_flag!r}.")
  except ValueError as e:
    raise ValueError(f"model.{e}") from None
  cells_lib.check_options(model_cfg.cell, model_cfg.cell_options)
  if onednn_flag is not False and model_cfg.cell in onednn_lib.CELLS:
    onednn_lib.threads()  # a bad RNNLAB_ONEDNN_THREADS: said before anything trains
  for field, on, vendor, device in (("cudnn", cudnn, "cuDNN", "gpu"),
                                    ("onednn", onednn_flag, "oneDNN", "cpu")):
    if on:  # what a config decides; masks and lengths are checked where the scan runs
      _check_vendor_rnn_config(model_cfg, field, vendor, device, zoneout=zoneout,
                               recurrent_dropout=recurrent_dropout)


def _check_vendor_rnn_config(model_cfg, field, vendor, device, *, zoneout, recurrent_dropout):
  """ValueError listing why ``model.<field>=True`` (a vendor's fused RNN on ``device``, "gpu"
  or "cpu": cuDNN's LSTM, oneDNN's LSTM and GRU) cannot run with this config, if it cannot."""
  options = cells_lib.set_options(model_cfg.cell_options)
  backend = jax.default_backend()
  cells = onednn_lib.CELLS if field == "onednn" else ("lstm",)
  runs = onednn_lib.cells_text() if field == "onednn" else "plain lstm"
  blockers = [why for blocked, why in (
      (model_cfg.cell not in cells, f"{vendor} runs the {runs}, not {model_cfg.cell!r}"),
      (bool(options.get("peepholes")), f"{vendor}'s LSTM has no peepholes"),
      (model_cfg.get("dtype") not in (None, "float32"), "it runs float32 only, not "
       f"model.dtype={model_cfg.get('dtype')!r}"),
      (zoneout, "it does not take zoneout"),
      (recurrent_dropout, "it does not take recurrent dropout"),
      (bool(model_cfg.get("fused")), "it does not take model.fused=True"),
      (field == "onednn" and bool(model_cfg.get("cudnn")), "it does not take model.cudnn=True"),
      (field == "onednn" and bool(model_cfg.get("remat")),
       "it does not take model.remat=True (oneDNN keeps its own workspace)"),
      (backend != device, f"it needs a CUDA GPU (the backend is {backend})" if device == "gpu"
       else f"it runs on the CPU only (the backend is {backend})")) if blocked]
  if not blockers and field == "onednn":  # only now: the first call builds the library
    ok, why = onednn_lib.available()
    if not ok:
      blockers.append(why)
  if blockers:
    raise ValueError(f"model.{field}=True cannot run here: {'; '.join(blockers)}. Leave "
                     f"model.{field} None or False.")


def to_time_major(a, batch_shape, reverse: bool = False):
  """(*batch, T, ...) -> (T, B, ...); with ``reverse`` in the order a reverse scan visits the steps."""
  b = math.prod(batch_shape)
  a = a.reshape(b, *a.shape[len(batch_shape):])
  a = jnp.swapaxes(a, 0, 1)
  return a[::-1] if reverse else a


def _from_time_major(a, batch_shape):
  """(T, B, ...) -> (*batch, T, ...)."""
  a = jnp.swapaxes(a, 0, 1)
  return a.reshape(*batch_shape, *a.shape[1:])


def resolve_parallel(cell, parallel) -> bool | None:
  """How ``scan`` runs ``cell``: True (associative scan), False (sequential pass over the
  precomputed coefficients) for a cell with a ``LinearForm``; None for the others (they
  step). ``parallel=None`` picks by backend: sequential on the CPU, where XLA's
  associative scan costs more than it saves, parallel on GPU/TPU."""
  cell = cells_lib.get_cell(cell)
  if parallel not in (None, True, False):
    raise ValueError(f"parallel must be None (by backend), True or False; got {parallel!r}.")
  if cell.linear is None:
    if parallel:
      raise ValueError(f"Cell {cell.name!r} has no parallel form over time (its gates read "
                       f"h_{{t-1}}); cells with one: {', '.join(cells_lib.linear_names())}. "
                       "Leave parallel None or False.")
    return None
  return jax.default_backend() != "cpu" if parallel is None else parallel


def _linear_scan(cell, params, xs, carry, mask, reverse, parallel, unroll, return_carries,
                 perturbation, batch_shape):
  """``scan`` for a cell with a ``LinearForm``: all coefficients at once, then the recurrence
  s_t = a_t s_{t-1} + b_t as an associative scan (``parallel``) or one elementwise pass.

  States and coefficients may be pytrees (LRU: real and imaginary parts); ``form.mul``
  applies a coefficient to a state, and composes two coefficients."""
  form = cell.linear
  tmap = jax.tree.map
  add = lambda x, y: tmap(jnp.add, x, y)
  xp = to_time_major(cell.project(params, xs), batch_shape, reverse)  # (T, B, .), visit order
  a, b = form.coefficients(params, xp)
  if perturbation is not None:  # added to the state after each step, before it feeds the next
    b = add(b, form.to_state(to_time_major(perturbation, batch_shape, reverse)))
  # A coefficient shared by all steps (LRU's lambda) stays unbroadcast in the sequential pass.
  shared = all(x.ndim < y.ndim for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  if mask is not None or parallel or not shared:
    a = tmap(lambda x, y: jnp.broadcast_to(x, y.shape), a, b)
    shared = False
  if mask is not None:  # a masked step holds the state: a = identity, b = 0
    m = to_time_major(mask, batch_shape, reverse)[..., None]
    a = tmap(lambda x, one: jnp.where(m, x, one), a, form.identity(a))
    b = tmap(lambda x: jnp.where(m, x, jnp.zeros_like(x)), b)
  s0 = form.to_state(carry)
  first = a if shared else tmap(lambda x: x[0], a)
  b = tmap(lambda x, y: x.at[0].add(y), b, form.mul(first, s0))  # s_0 enters at the first step
  if parallel:
    def combine(earlier, later):
      return form.mul(later[0], earlier[0]), add(form.mul(later[0], earlier[1]), later[1])
    _, states = jax.lax.associative_scan(combine, (a, b), axis=0)
  elif shared:
    def body(s, b_t):
      s = add(form.mul(a, s), b_t)
      return s, s
    _, states = jax.lax.scan(body, tmap(jnp.zeros_like, s0), b, unroll=resolve_unroll(unroll))
  else:
    def body(s, ab):
      s = add(form.mul(ab[0], s), ab[1])
      return s, s
    _, states = jax.lax.scan(body, tmap(jnp.zeros_like, s0), (a, b),
                             unroll=resolve_unroll(unroll))
  ys = form.readout(params, states, xp)
  if mask is not None:
    ys = jnp.where(m, ys, jnp.zeros_like(ys))
  unflat = lambda t: t.reshape(*batch_shape, *t.shape[1:])
  final = unflat(form.to_carry(tmap(lambda t: t[-1], states)))
  back = lambda t: _from_time_major(t[::-1] if reverse else t, batch_shape)
  if return_carries:
    return final, back(ys), back(form.to_carry(states))
  return final, back(ys)


def fused_applies(cell) -> bool:
  """Whether ``cell`` has the fused backward pass (its step is one recurrent matmul and a
  ``pointwise`` part: ``cells.Cell.pointwise``)."""
  return cells_lib.get_cell(cell).pointwise is not None


def resolve_fused(cell, fused, *, zoneout=None, recurrent_mask=None) -> bool:
  """Whether ``scan`` differentiates ``cell`` with the fused backward pass.

  It applies to cells with a ``pointwise`` part, without zoneout or recurrent dropout.
  ``fused=None``: ``FUSED_DEFAULT`` where it applies (off: on the CPU it was slower than
  autodiff at batch 64 and above, benchmarks/README.md), else autodiff; True forces it (an
  error saying why where it cannot run); False keeps autodiff of the scan."""
  if fused not in (None, True, False):
    raise ValueError(f"fused must be None (where it applies), True or False; got {fused!r}.")
  cell = cells_lib.get_cell(cell)
  blockers = []
  if not fused_applies(cell):
    valid = [n for n in cells_lib.names() if fused_applies(n)]
    blockers.append(f"cell {cell.name!r} is not one recurrent matmul plus a pointwise part "
                    f"(cells with a fused backward pass: {', '.join(valid)})")
  if zoneout is not None:
    blockers.append("zoneout is on")
  if recurrent_mask is not None:
    blockers.append("recurrent dropout is on")
  if fused and blockers:
    raise ValueError(f"fused=True cannot run here: {'; '.join(blockers)}. Leave fused None "
                     "or False.")
  if blockers:
    return False
  return FUSED_DEFAULT if fused is None else fused


# What ``fused=None`` means where the fused pass applies (benchmarks/README.md, "Fused
# backward pass").
FUSED_DEFAULT = False


def _perturb_and_mask(cell, params, old, new, y, xp, inp):
  """The end of one step of ``scan``: the perturbation ``inp["dh"]`` added to the new hidden
  state (its gradient is dL/dh_t), then at a masked step (``inp["m"]`` False) the old carry
  held and a zero output. ``(new carry, y)``."""
  if "dh" in inp:
    new = cell.with_hidden(new, cell.hidden(new) + inp["dh"])
    y = cell.output(params, new, xp)
  if "m" in inp:
    new = jax.tree.map(lambda n, o: jnp.where(inp["m"], n, o), new, old)
    y = jnp.where(inp["m"], y, jnp.zeros_like(y))
  return new, y


def _fused_scan(cell, params, xs, carry, mask, perturbation, reverse, unroll, remat,
                return_carries, hoist):
  """The recurrence of a ``pointwise`` cell over time-major inputs ``xs`` (T, B, D), its
  weight gradients taken out of the time loop, as cuDNN and haste do it.

  Autodiff of a scan accumulates dw_h (and, with the projection inside the step, dw_x) one
  step at a time inside the backward loop: one (H, B) x (B, G*H) matmul per weight and step.
  Here the backward loop is autodiff of the same scan with the weights held constant, so
  that per step it does only the pointwise VJP (from the activations autodiff saved) and
  ``dh_{t-1} = dhp_t @ w_h^T``; two zero inputs added to the step's projected input and to
  ``hp = hidden(carry) @ w_h`` give dxp_t and dhp_t for every step. After the loop, dw_h is
  one matmul over all T*B rows, and dw_x, db and dx one VJP of the projection over all steps.
  The projection runs inside the step or, with ``hoist``, before the loop, as in ``scan``.

  Returns (final carry, ys (T, B, H)[, carries (T, ...)]), time-major.
  """
  hidden = cell.hidden
  # What the projection reads; the pointwise part gets every other parameter but w_h.
  proj_keys = ("w_x",) if cell.project_fn is not None else ("w_x", "b")
  pw_keys = tuple(sorted(k for k in params if k not in {"w_h", *proj_keys}))
  unroll = resolve_unroll(unroll)
  rows = lambda a: a.reshape(-1, a.shape[-1])

  project = cell.project  # reads only proj_keys

  def loop(pw, proj, w_h, carry, xs, m, dh, z_x, z_h, keep_prev):
    """The forward scan; z_x, z_h: None or zeros (T, B, G*H) added to xp and hp."""
    inputs = {"xp": project(proj, xs)} if hoist else {"x": xs}
    for name, value in (("m", m), ("dh", dh), ("z_x", z_x), ("z_h", z_h)):
      if value is not None:
        inputs[name] = value

    def body(c, inp):
      xp = inp["xp"] if hoist else project(proj, inp["x"])
      hp = hidden(c) @ w_h
      if "z_x" in inp:
        xp, hp = xp + inp["z_x"], hp + inp["z_h"]
      new, y = _perturb_and_mask(cell, pw, c, *cell.pointwise(pw, c, xp, hp), xp, inp)
      out = {"y": y}
      if return_carries:
        out["carry"] = new
      if keep_prev:
        out["h_prev"] = hidden(c)
      return new, out

    if remat:
      body = jax.checkpoint(body)
    final, out = jax.lax.scan(body, carry, inputs, reverse=reverse, unroll=unroll)
    return (final, out["y"], out.get("carry")), out.get("h_prev")

  @jax.custom_vjp
  def run(pw, proj, w_h, carry, xs, m, dh):
    return loop(pw, proj, w_h, carry, xs, m, dh, None, None, keep_prev=False)[0]

  def run_fwd(pw, proj, w_h, carry, xs, m, dh):
    gates = w_h.shape[-1]
    zeros = jnp.zeros((*xs.shape[:-1], gates), xs.dtype)
    # Differentiable in the carry, the pointwise parameters, the perturbation and the two
    # zero inputs; the weights of both matmuls are constants of this VJP.
    outs, vjp_loop, h_prev = jax.vjp(
        lambda pw, c, dh, z_x, z_h: loop(pw, proj, w_h, c, xs, m, dh, z_x, z_h, keep_prev=True),
        pw, carry, dh, zeros, zeros, has_aux=True)
    return outs, (vjp_loop, h_prev, proj, w_h, xs)

  def run_bwd(res, cts):
    vjp_loop, h_prev, proj, w_h, xs = res
    d_pw, d_carry, d_dh, d_xp, d_hp = vjp_loop(cts)
    d_w_h = rows(h_prev).T @ rows(d_hp)  # one matmul over all T*B rows
    _, project_vjp = jax.vjp(project, proj, xs)
    d_proj, d_xs = project_vjp(d_xp)     # dw_x, db and dx: one matmul each
    return d_pw, d_proj, d_w_h, d_carry, d_xs, None, d_dh  # None: the (boolean) mask's

  run.defvjp(run_fwd, run_bwd)
  pick = lambda keys: {k: params[k] for k in keys}
  return run(pick(pw_keys), pick(proj_keys), params["w_h"], carry, xs, mask, perturbation)


# What ``cudnn=None`` means where cuDNN applies: off until the cuDNN path has been checked
# equal to the scan path and timed on a GPU (benchmarks/gpu_check.py does both).
CUDNN_DEFAULT = False


def resolve_cudnn(cell, cudnn, params, xs, *, mask=None, perturbation=None,
                  return_carries=False, recurrent_mask=None, zoneout=None, fused=None) -> bool:
  """Whether ``scan`` runs ``cell`` as cuDNN's fused LSTM (``jax.experimental.rnn.lstm``).

  It applies to the plain ``lstm`` (no peepholes) in float32 on a CUDA GPU, over
  right-padded ``lengths`` or none, forward or reverse, from any initial carry; not with a
  ``mask`` (holes), a perturbation, per-step carries, recurrent dropout, zoneout or
  ``fused=True``. ``cudnn=None``: ``CUDNN_DEFAULT`` where it applies, else the scan; True
  forces it (an error saying why where it cannot run); False never."""
  if cudnn not in (None, True, False):
    raise ValueError(f"cudnn must be None (where it applies), True or False; got {cudnn!r}.")
  if cudnn is False:
    return False
  cell = cells_lib.get_cell(cell)
  blockers = []
  if cell.name != "lstm" or any(k.startswith("p_") for k in params):
    blockers.append(f"cuDNN runs the plain lstm without peepholes, not {cell.name!r}"
                    + (" with peepholes" if cell.name == "lstm" else ""))
  if jnp.result_type(xs.dtype, *(p.dtype for p in jax.tree.leaves(params))) != jnp.float32:
    blockers.append(f"it runs float32 only, not {xs.dtype}")
  for given, what in ((mask is not None, "a mask (give lengths: right-padded sequences)"),
                      (perturbation is not None, "a perturbation"),
                      (return_carries, "return_carries"),
                      (recurrent_mask is not None, "recurrent dropout"),
                      (zoneout is not None, "zoneout"), (bool(fused), "fused=True")):
    if given:
      blockers.append(f"it does not take {what}")
  if jax.default_backend() != "gpu":
    blockers.append(f"it needs a CUDA GPU (the backend is {jax.default_backend()})")
  if cudnn and blockers:
    raise ValueError(f"cudnn=True cannot run here: {'; '.join(blockers)}. Leave cudnn None or "
                     "False.")
  return CUDNN_DEFAULT and not blockers if cudnn is None else True


def pack_cudnn_lstm(params) -> jax.Array:
  """rnnlab's ``lstm`` parameters as cuDNN's flat weights (``jax.experimental.rnn``'s layout
  for one layer and direction: W_ih (4H, D), W_hh (4H, H), b_ih, b_hh). The gate order (i,
  f, g, o) is the same; rnnlab's one bias goes to b_ih and b_hh is zero."""
  b = params["b"]
  return jnp.concatenate([params["w_x"].T.ravel(), params["w_h"].T.ravel(), b,
                          jnp.zeros_like(b)])


def flip_within_lengths(a, lengths):
  """(B, T, ...) with each sequence's first ``lengths[b]`` steps reversed, the padding kept."""
  t = jnp.arange(a.shape[1])
  idx = jnp.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
  return jnp.take_along_axis(a, idx.reshape(*idx.shape, *([1] * (a.ndim - 2))), axis=1)


def _cudnn_lstm(params, xs, carry, lengths, reverse, lstm=None):
  """``scan`` of the plain lstm over (B, T, D) through cuDNN. ``lstm``: the function with
  ``jax.experimental.rnn.lstm``'s signature (tests pass its reference implementation)."""
  if lstm is None:
    from jax.experimental import rnn as jax_rnn  # pylint: disable=g-import-not-at-top
    lstm = jax_rnn.lstm
  batch, seq_len, d = xs.shape
  h_size = params["w_h"].shape[0]
  seq = (jnp.full((batch,), seq_len) if lengths is None else lengths).astype(jnp.int32)
  x = flip_within_lengths(xs, seq) if reverse else xs
  c0, h0 = carry
  y, h_n, c_n = lstm(x, h0[None], c0[None], pack_cudnn_lstm(params), seq, input_size=d,
                     hidden_size=h_size, num_layers=1, dropout=0.0, bidirectional=False)
  if reverse:
    y = flip_within_lengths(y, seq)
  if lengths is not None:  # outputs zero past each sequence's end, as the scan's
    y = jnp.where((jnp.arange(seq_len) < seq[:, None])[..., None], y, jnp.zeros_like(y))
  return (c_n[0], h_n[0]), y


# What ``onednn=None`` means where oneDNN applies (CPU, the plain lstm or the gru, float32,
# full-length sequences, no remat, the library here): on. The three-framework grid on 2 cores
# (benchmarks/README.md, "The three-framework grid") put it, on its default threads, ahead of
# Flax (the same program as the scan) at 35 of 36 training points (median 1.39x) and all 36
# forward points. Not inside ``vmapped_runs()``: there its calls would
# run once per vmapped run (0.78x the scan's runs per CPU hour, same README).
ONEDNN_DEFAULT = True
# The cells ``onednn=None`` runs through oneDNN; the others of ``onednn.CELLS`` only with True.
# oneDNN's vanilla RNN (rnn, irnn) ran the forward pass up to 1.7x faster than the scan but
# trained at 0.66-0.90x of its speed at B >= 64 (paired, 3 rounds, T = 100, H 64/128; the same
# README, "The rnn: level with Flax"), so the scan stays their default.
ONEDNN_DEFAULT_CELLS = ("lstm", "gru")

_VMAPPED_RUNS = contextvars.ContextVar("rnnlab_engine_vmapped_runs", default=False)


@contextlib.contextmanager
def vmapped_runs():
  """Within it, ``onednn=None`` means the scan. ``rnnlab.training.vmapped`` traces the steps
  of N runs (N sets of weights) as one ``jax.vmap`` program under it: XLA batches the N runs'
  matmuls into one, while a custom call into oneDNN would run once per run, one after
  another (``vmap_method="sequential"``). ``onednn=True`` still forces it."""
  token = _VMAPPED_RUNS.set(True)
  try:
    yield
  finally:
    _VMAPPED_RUNS.reset(token)


def resolve_onednn(cell, onednn, params, xs, *, lengths=None, mask=None, perturbation=None,
                   return_carries=False, recurrent_mask=None, zoneout=None, fused=None,
                   cudnn=None, remat=False) -> bool:
  """Whether ``scan`` runs ``cell`` through oneDNN's fused RNN primitives on the CPU
  (``rnnlab.onednn``): the plain ``lstm`` as oneDNN's LSTM, the ``gru`` as its
  linear-before-reset GRU, the ``rnn`` and ``irnn`` as its vanilla RNN (tanh, relu).

  It applies to those cells (the lstm without peepholes) in float32 on the CPU
  backend, over full-length sequences (no ``lengths``, no ``mask``: oneDNN's RNNs take no
  sequence lengths), forward or reverse, from any initial carry, where the oneDNN wheels and
  g++ are installed (``onednn.available()``); not with a perturbation, per-step carries,
  recurrent dropout, zoneout, ``remat`` (oneDNN keeps its own workspace for the backward
  pass, several times the size of the outputs, where remat asks for less memory),
  ``fused=True`` or ``cudnn=True``. ``onednn=None``: ``ONEDNN_DEFAULT`` where it applies,
  for ``ONEDNN_DEFAULT_CELLS`` and not inside ``vmapped_runs()``, else the scan; True forces it (an error saying why
  where it cannot run); False never."""
  if onednn not in (None, True, False):
    raise ValueError(f"onednn must be None (where it applies), True or False; got {onednn!r}.")
  cell = cells_lib.get_cell(cell)
  if onednn is False or (onednn is None and (not ONEDNN_DEFAULT or _VMAPPED_RUNS.get()
                                             or cell.name not in ONEDNN_DEFAULT_CELLS)):
    return False
  blockers = []
  if cell.name not in onednn_lib.CELLS or any(k.startswith("p_") for k in params):
    blockers.append(f"oneDNN runs the {onednn_lib.cells_text()}, not {cell.name!r}"
                    + (" with peepholes" if cell.name == "lstm" else ""))
  others = sorted({str(a.dtype) for a in (xs, *jax.tree.leaves(params))} - {"float32"})
  if others:  # inputs and parameters alike: the kernel reads float32 buffers
    blockers.append(f"it runs float32 only, not {'/'.join(others)}")
  for given, what in ((lengths is not None, "lengths (full-length sequences only)"),
                      (mask is not None, "a mask (full-length sequences only)"),
                      (perturbation is not None, "a perturbation"),
                      (return_carries, "return_carries"),
                      (recurrent_mask is not None, "recurrent dropout"),
                      (zoneout is not None, "zoneout"), (bool(remat), "remat"),
                      (bool(fused), "fused=True"), (bool(cudnn), "cudnn=True")):
    if given:
      blockers.append(f"it does not take {what}")
  if jax.default_backend() != "cpu":
    blockers.append(f"it runs on the CPU only (the backend is {jax.default_backend()})")
  if not blockers:  # only now: the first call builds the library
    ok, why = onednn_lib.available()
    if not ok:
      blockers.append(why)
  if onednn and blockers:
    raise ValueError(f"onednn=True cannot run here: {'; '.join(blockers)}. Leave onednn None "
                     "or False.")
  return not blockers


def _check_dtypes(xs, params, carry):
  """The step computes in the promoted dtype of inputs and parameters; a carry of another
  dtype would change type through time, which lax.scan refuses with a raw error."""
  computed = jnp.result_type(xs.dtype, *(p.dtype for p in jax.tree.leaves(params)))
  carried = {a.dtype for a in jax.tree.leaves(carry)}
  if carried != {computed}:
    names = lambda ds: "/".join(sorted(str(d) for d in ds))
    raise ValueError(
        f"dtypes do not agree: inputs {xs.dtype}, parameters "
        f"{names({p.dtype for p in jax.tree.leaves(params)})} and carry {names(carried)}; a "
        f"step would compute in {computed} and change the carry's dtype. Cast the inputs to "
        "the parameters' dtype (or the parameters to the inputs'), and pass carries of that "
        "dtype; rnnlab.layers.Recurrent(dtype=...) does this for you.")


def scan(cell, params, xs, *, carry=None, lengths=None, mask=None, reverse=False, unroll=None,
         remat=False, return_carries=False, perturbation=None, hoist=None, parallel=None,
         recurrent_mask=None, zoneout=None, fused=None, cudnn=None, onednn=None):
  """Runs ``cell`` over ``xs`` for one layer and direction.

  Args:
    cell: a ``Cell`` or a registered cell name.
    params: the cell's parameters.
    xs: (*batch, T, D) inputs.
    carry: initial carry with leaves (*batch, H); zeros if None.
    lengths: (*batch,) valid lengths of right-padded sequences, or
    mask: (*batch, T) bool, True at valid steps (carry held where False).
    reverse: run from t = T-1 down to 0 (outputs stay aligned with inputs).
    unroll: steps unrolled per scan iteration (``jax.lax.scan``'s ``unroll``);
      None picks by backend (``default_unroll()``: 1 on CPU, 4 on GPU/TPU).
      Same numbers up to float rounding.
    remat: recompute each step in the backward pass instead of storing it
      (``jax.checkpoint`` of the scan body): memory O(T * H) for the carries only.
    return_carries: also return the carry after every step, leaves (*batch, T, H).
    hoist: compute the input projection for all steps as one matmul before the
      scan (True) or inside each step (False). None picks by backend: hoisted
      on GPU/TPU, where one large matmul wins; per step on CPU, where the
      (T, B, G*H) buffer costs more memory traffic than it saves
      (benchmarks/README.md measures both). Same numbers up to float rounding.
    perturbation: optional (*batch, T, H) added to the hidden state after each
      step (before it feeds the next step). With zeros it changes nothing, and
      its gradient is dL/dh_t for every t in one backward pass.
    parallel: for a cell with a ``LinearForm`` (``cells.linear_names()``), run
      the recurrence as ``jax.lax.associative_scan`` over time (True) or as one
      sequential elementwise pass over coefficients computed for all steps at
      once (False); None picks by backend (``resolve_parallel``). Both give the
      step-by-step numbers up to float rounding; ``hoist`` and ``remat`` do not
      apply (only the states are kept). True for any other cell is an error.
    recurrent_mask: optional (*batch, H) factor on h_{t-1} as the step reads it, the
      same at every step: with a dropout mask scaled by 1/keep this is Gal &
      Ghahramani's (2016) variational recurrent dropout. Only for cells whose h
      enters the step only through W_h (``Cell.hidden_only_in_w_h``).
    zoneout: optional, the weight of the previous carry in the next one (Krueger et al.
      2017): carry_t = z * carry_{t-1} + (1 - z) * step(carry_{t-1}, x_t), every carry
      leaf (c and h of an LSTM). Either a number (evaluation: the expected weight, the
      zoneout rate) or the carry's structure with leaves (*batch, T, H) of 0/1 draws
      (training). 0 is the plain cell. Classic cells only.
    fused, cudnn, onednn: the fused backward pass, cuDNN's LSTM (CUDA GPU) and oneDNN's
      LSTM and GRU (CPU): None where they apply by default, True forces, False off; see
      ``resolve_fused``, ``resolve_cudnn`` and ``resolve_onednn``.

  Returns:
    (final_carry, ys) or (final_carry, ys, carries); ys: (*batch, T, H), zero at
    masked steps; final_carry: the carry after each sequence's last valid step.
  """
  cell = cells_lib.get_cell(cell)
  if xs.ndim < 2:
    raise ValueError(f"xs must be (*batch, T, D); got shape {xs.shape}.")
  if xs.shape[-1] != cell.input_size(params):
    raise ValueError(f"inputs have {xs.shape[-1]} features but the cell expects "
                     f"{cell.input_size(params)}.")
  batch_shape = xs.shape[:-2]
  given_mask = mask
  mask = resolve_mask(xs, lengths, mask)
  if carry is None:
    carry = cell.init_carry(params, batch_shape)
  _check_dtypes(xs, params, carry)
  flat = lambda a: a.reshape(math.prod(batch_shape), *a.shape[len(batch_shape):])
  unflat = lambda a: a.reshape(*batch_shape, *a.shape[1:])  # flat's inverse, for the vendor paths
  carry = jax.tree.map(flat, carry)
  if recurrent_mask is not None and not cell.hidden_only_in_w_h:
    valid = [n for n in cells_lib.names() if cells_lib.get_cell(n).hidden_only_in_w_h]
    raise ValueError(f"recurrent dropout needs a cell whose h_(t-1) enters the step only "
                     f"through W_h; {cell.name!r} is not one. Cells that take it: "
                     f"{', '.join(valid)}.")
  if zoneout is not None and cell.linear is not None:
    raise ValueError(f"zoneout applies to the classic cells; {cell.name!r} is a linear "
                     "recurrence (its state update is already a learned interpolation).")
  linear = resolve_parallel(cell, parallel)  # first: parallel=True for a classic cell says so
  if resolve_cudnn(cell, cudnn, params, xs, mask=mask if lengths is None else None,
                   perturbation=perturbation, return_carries=return_carries,
                   recurrent_mask=recurrent_mask, zoneout=zoneout, fused=fused):
    final, ys = _cudnn_lstm(params, flat(xs), carry,
                            None if lengths is None else flat(jnp.asarray(lengths)), reverse)
    return jax.tree.map(unflat, final), unflat(ys)
  if resolve_onednn(cell, onednn, params, xs, lengths=lengths, mask=given_mask,
                    perturbation=perturbation, return_carries=return_carries,
                    recurrent_mask=recurrent_mask, zoneout=zoneout, fused=fused, cudnn=cudnn,
                    remat=remat):
    final, ys = onednn_lib.run(cell.name, params, flat(xs), carry, reverse=reverse)
    return jax.tree.map(unflat, final), unflat(ys)
  if linear is not None:
    if fused:
      resolve_fused(cell, fused)  # the error naming the cells that have it
    return _linear_scan(cell, params, xs, carry, mask, reverse, linear, unroll, return_carries,
                        perturbation, batch_shape)
  if resolve_fused(cell, fused, zoneout=zoneout, recurrent_mask=recurrent_mask):
    tm = lambda a: to_time_major(a, batch_shape)
    final, ys, carries = _fused_scan(
        cell, params, tm(xs), carry, None if mask is None else tm(mask)[..., None],
        None if perturbation is None else tm(perturbation), reverse, unroll, remat,
        return_carries, jax.default_backend() != "cpu" if hoist is None else hoist)
    final = jax.tree.map(lambda a: a.reshape(*batch_shape, *a.shape[1:]), final)
    if return_carries:
      carries = jax.tree.map(lambda a: _from_time_major(a, batch_shape), carries)
      return final, _from_time_major(ys, batch_shape), carries
    return final, _from_time_major(ys, batch_shape)

  if hoist is None:
    hoist = jax.default_backend() != "cpu"
  if hoist:
    inputs = {"xp": to_time_major(cell.project(params, xs), batch_shape)}  # one matmul
  else:
    inputs = {"x": to_time_major(xs, batch_shape)}
  if mask is not None:
    inputs["m"] = to_time_major(mask, batch_shape)[..., None]
  if perturbation is not None:
    inputs["dh"] = to_time_major(perturbation, batch_shape)
  if recurrent_mask is not None:
    recurrent_mask = flat(jnp.broadcast_to(recurrent_mask,
                                           (*batch_shape, recurrent_mask.shape[-1])))
  zoneout_weight = None
  if zoneout is not None and isinstance(zoneout, (int, float)):
    zoneout_weight = float(zoneout) if zoneout else None
  elif zoneout is not None:
    inputs["z"] = jax.tree.map(lambda z: to_time_major(z, batch_shape), zoneout)

  def body(carry, inp):
    xp = inp["xp"] if "xp" in inp else cell.project(params, inp["x"])
    read = carry if recurrent_mask is None else cell.with_hidden(
        carry, cell.hidden(carry) * recurrent_mask)
    new_carry, y = cell.recur(params, read, xp)
    if "z" in inp or zoneout_weight is not None:
      z = inp["z"] if "z" in inp else jax.tree.map(lambda _: zoneout_weight, carry)
      new_carry = jax.tree.map(lambda n, o, w: w * o + (1.0 - w) * n, new_carry, carry, z)
      y = cell.output(params, new_carry, xp)
    new_carry, y = _perturb_and_mask(cell, params, carry, new_carry, y, xp, inp)
    return new_carry, ((y, new_carry) if return_carries else y)

  if remat:
    body = jax.checkpoint(body)
  final, out = jax.lax.scan(body, carry, inputs, reverse=reverse,
                            unroll=resolve_unroll(unroll))
  unflat = lambda a: a.reshape(*batch_shape, *a.shape[1:])
  final = jax.tree.map(unflat, final)
  if return_carries:
    ys, carries = out
    carries = jax.tree.map(lambda a: _from_time_major(a, batch_shape), carries)
    return final, _from_time_major(ys, batch_shape), carries
  return final, _from_time_major(out, batch_shape)


@dataclasses.dataclass(frozen=True)
class Stack:
  """Static description of a (stacked, bidirectional, residual) recurrent network.

  Attributes:
    cell: registered cell name.
    hidden_size: H of every layer (and direction).
    num_layers: number of stacked layers.
    bidirectional: each layer runs forward and backward; outputs concatenated (2H).
    residual: add each layer's input to its output where their sizes agree
      (all layers but possibly the first).
    cell_options: keyword options for ``cell.init`` as a tuple of (name, value)
      pairs (hashable so a Stack can be a static jit argument); see ``make_stack``.
  """
  cell: str
  hidden_size: int
  num_layers: int = 1
  bidirectional: bool = False
  residual: bool = False
  cell_options: tuple = ()

  @property
  def directions(self) -> tuple[str, ...]:
    return ("fwd", "bwd") if self.bidirectional else ("fwd",)

  @property
  def output_size(self) -> int:
    return self.hidden_size * len(self.directions)


def make_stack(cell: str, hidden_size: int, num_layers: int = 1, *, bidirectional=False,
               residual=False, **cell_options) -> Stack:
  """Validated ``Stack``; ``cell_options`` go to the cell's ``init``."""
  cells_lib.get_cell(cell)  # fails early on an unknown name
  hidden_size = check_int("hidden_size", hidden_size)
  num_layers = check_int("num_layers", num_layers)
  return Stack(cell, hidden_size, num_layers, bool(bidirectional), bool(residual),
               tuple(sorted(cell_options.items())))


def init_layer(key: jax.Array, stack: Stack, input_size: int, dtype=jnp.float32) -> dict:
  """One layer's parameters: {"fwd": cell params[, "bwd": cell params]}."""
  cell = cells_lib.get_cell(stack.cell)
  return {d: cell.init(k, input_size, stack.hidden_size, dtype=dtype, **dict(stack.cell_options))
          for d, k in zip(stack.directions, jax.random.split(key, len(stack.directions)))}


def layer_input_sizes(stack: Stack, input_size: int) -> list[int]:
  """The input size of each layer: D for the first, the stack's output size after it."""
  return [input_size] + [stack.output_size] * (stack.num_layers - 1)


def init_stack(key: jax.Array, stack: Stack, input_size: int, dtype=jnp.float32):
  """Parameters: a list over layers of {"fwd": cell params[, "bwd": cell params]}."""
  return [init_layer(k, stack, size, dtype)
          for k, size in zip(jax.random.split(key, stack.num_layers),
                             layer_input_sizes(stack, input_size))]


def init_carries(stack: Stack, params, batch_shape: Sequence[int]):
  """Zero carries, same structure as ``params``: [{"fwd": carry, ...}, ...]."""
  cell = cells_lib.get_cell(stack.cell)
  return [{d: cell.init_carry(p, tuple(batch_shape)) for d, p in layer.items()}
          for layer in params]


def apply_stack(stack: Stack, params, xs, *, carries=None, lengths=None, mask=None,
                reverse=False, unroll=None, remat=False, return_carries=False,
                perturbations=None, hoist=None, parallel=None, fused=None, cudnn=None,
                onednn=None):
  """Runs the stacked network.

  Args:
    stack: the ``Stack``; params: from ``init_stack``.
    xs: (*batch, T, D). lengths / mask: as in ``scan``.
    carries: initial carries, structure of ``init_carries``; zeros if None.
    reverse: reverse the direction of every layer (the "bwd" direction of a
      bidirectional layer then runs forward).
    hoist, parallel, fused, cudnn, onednn: as in ``scan``.
    perturbations: optional list over layers of {direction: (*batch, T, H)}
      (see ``scan``); the gradient w.r.t. it is dL/dh_t per layer and direction.
    unroll, remat, return_carries: as in ``scan``.

  Returns:
    (final_carries, ys[, carries]): final carries as in ``init_carries``;
    ys (*batch, T, output_size) from the last layer; with ``return_carries``,
    a list over layers of {direction: per-step carries}.
  """
  if len(params) != stack.num_layers:
    raise ValueError(f"params have {len(params)} layers, the stack {stack.num_layers}.")
  valid = resolve_mask(xs, lengths, mask)
  finals, all_carries = [], []
  h = xs
  for i, layer in enumerate(params):
    outs, layer_final, layer_carries = [], {}, {}
    for d in stack.directions:
      out = scan(stack.cell, layer[d], h,
                 carry=None if carries is None else carries[i][d],
                 # lengths as lengths (cuDNN takes them, not a mask)
                 **({"lengths": lengths} if lengths is not None else {"mask": valid}),
                 reverse=reverse ^ (d == "bwd"), unroll=unroll,
                 remat=remat, return_carries=return_carries, hoist=hoist, parallel=parallel,
                 fused=fused, cudnn=cudnn, onednn=onednn,
                 perturbation=None if perturbations is None else perturbations[i][d])
      layer_final[d] = out[0]
      outs.append(out[1])
      if return_carries:
        layer_carries[d] = out[2]
    y = outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=-1)
    if stack.residual and y.shape[-1] == h.shape[-1]:
      y = y + (h if valid is None else jnp.where(valid[..., None], h, 0))
    h = y
    finals.append(layer_final)
    all_carries.append(layer_carries)
  if return_carries:
    return finals, h, all_carries
  return finals, h


def last_hidden(stack: Stack, final_carries) -> jax.Array:
  """The top layer's final hidden state(s), directions concatenated: (*batch, output_size)."""
  cell = cells_lib.get_cell(stack.cell)
  top = final_carries[-1]
  return jnp.concatenate([cell.hidden(top[d]) for d in stack.directions], axis=-1)

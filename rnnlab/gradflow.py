"""Gradient flow through time: dL/dh_t, Jacobian products, weight spectra, Omega.

Every function works for any cell (``rnnlab.cells``), stacked, bidirectional or
not, and is pure JAX where it can be jitted. Conventions:

* ``h_t`` is the hidden state after reading ``x_t`` (t = 0..T-1), as in the
  engine; a direction that runs backward keeps t aligned with the input.
* ``dL/dh_t`` is the gradient with respect to an additive perturbation of
  ``h_t`` (``engine.apply_stack(perturbations=...)``): the total derivative
  through every later step, with the rest of the carry (the LSTM cell state c)
  held fixed. One backward pass gives it for every t, layer and direction.
* Batch reduction: the per-example gradient ``g_t^b = d l_b / d h_t^b`` of the
  per-example loss ``l_b``, its L2 norm over hidden units, averaged over the
  batch. That is the gradient one sequence sends back, independent of the batch
  size, so runs with different batch sizes can be compared. A loss given as the
  batch mean is rescaled by the batch size to get there.

Jacobians (one sequence, one layer and direction) are those of the same
measurement: ``d h_{T-1} / d h_t = P_h J_{T-1} ... J_{t+1} E_h`` with
``J_s = d carry_s / d carry_{s-1}`` the full carry-to-carry Jacobian of one
step (so for the LSTM the path through c is included), ``E_h`` putting a change
of h into the carry and ``P_h`` reading h out. For a stack, layer l's h does not
reach layer l's later states through any other layer, so the per-layer product
is the exact Jacobian.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from rnnlab import cells as cells_lib
from rnnlab import engine

# Direction names in the order of ``engine.Stack.directions``; pytrees sort dict
# keys, so outputs are ordered by this tuple rather than by dict order.
_DIRECTIONS = ("fwd", "bwd")


# --- dL/dh_t in one backward pass ---------------------------------------------------

def zero_perturbations(stack: engine.Stack, batch_shape, seq_len: int, dtype=jnp.float32):
  """Zeros in the layout of ``apply_stack``'s perturbations: [{dir: (*batch, T, H)}]."""
  shape = (*tuple(batch_shape), seq_len, stack.hidden_size)
  return [{d: jnp.zeros(shape, dtype) for d in stack.directions}
          for _ in range(stack.num_layers)]


def _batch_shape(perturbations):
  return jax.tree.leaves(perturbations)[0].shape[:-2]


def _summed_loss(loss, batch_shape):
  """sum_b l_b from per-example losses (*batch,) or from their batch mean (a scalar)."""
  loss = jnp.asarray(loss)
  if loss.shape == tuple(batch_shape):
    return jnp.sum(loss)
  if loss.ndim == 0:
    return loss * math.prod(batch_shape)
  raise ValueError(f"the loss must be per-example losses of shape {tuple(batch_shape)} or "
                   f"their batch mean (a scalar); got shape {loss.shape}.")


def dL_dh(loss_fn: Callable, perturbations):
  """Per-example gradients g_t^b = d l_b / d h_t^b for every step, layer, direction.

  Args:
    loss_fn: perturbations -> per-example losses (*batch,), or their batch mean
      (a scalar, as a training loss usually is). It must run the model with
      ``apply_stack(..., perturbations=perturbations)`` (or the Flax layer's
      ``perturbations`` argument) so each step's h gets the (zero) perturbation.
    perturbations: zeros from ``zero_perturbations``.

  Returns:
    The gradient of sum_b l_b with respect to ``perturbations`` (same structure,
    leaves (*batch, T, H)). Examples do not interact, so entry b is d l_b / d h^b.
  """
  batch_shape = _batch_shape(perturbations)
  return jax.grad(lambda p: _summed_loss(loss_fn(p), batch_shape))(perturbations)


def _safe_norm(g: jax.Array) -> jax.Array:
  """||g|| over the last axis as m * ||g / m||, m = max|g|: float32 squares of a gradient
  below ~1e-19 would underflow to 0, and vanishing gradients get that small."""
  m = jnp.max(jnp.abs(g), axis=-1, keepdims=True)
  safe = jnp.where(m > 0, m, 1.0)
  return m[..., 0] * jnp.linalg.norm(g / safe, axis=-1)


def step_norms(grads, mask=None) -> jax.Array:
  """Per-step gradient norms from ``dL_dh``'s output.

  Args:
    grads: [{dir: (*batch, T, H)}] per layer.
    mask: optional (*batch, T) bool, True at valid steps. At each t the average
      is over the sequences valid at t only (0 where none is).

  Returns:
    (layers, directions, T): mean_b ||g_t^b||_2, directions ordered (fwd, bwd).
  """
  per = jnp.stack([jnp.stack([_safe_norm(layer[d])
                              for d in _DIRECTIONS if d in layer]) for layer in grads])
  seq_len = per.shape[-1]
  per = per.reshape(*per.shape[:2], -1, seq_len)  # (L, dirs, B, T)
  if mask is None:
    return per.mean(axis=2)
  mask = jnp.asarray(mask, bool).reshape(-1, seq_len)
  return jnp.where(mask, per, 0.0).sum(axis=2) / jnp.maximum(mask.sum(axis=0), 1)


def dL_dh_norms_from_loss(loss_fn: Callable, perturbations, mask=None) -> jax.Array:
  """(layers, directions, T) norms of dL/dh_t for a general ``loss_fn(perturbations)``.

  Use this for a full model (embedding, stack, readout); ``loss_fn`` and
  ``mask`` are as in ``dL_dh`` and ``step_norms``.
  """
  return step_norms(dL_dh(loss_fn, perturbations), mask)


def valid_mask(xs, lengths=None, mask=None):
  """(*batch, T) bool of valid steps from ``lengths`` or ``mask``; None if neither."""
  if lengths is not None and mask is not None:
    raise ValueError("Give either lengths or mask, not both.")
  if lengths is not None:
    return engine.length_mask(lengths, xs.shape[-2])
  return None if mask is None else jnp.asarray(mask, bool)


def _check_engine_kwargs(engine_kwargs):
  if "perturbations" in engine_kwargs:
    raise ValueError("perturbations are made here; do not pass them in engine_kwargs.")


def dL_dh_norms(loss_of_outputs: Callable, stack: engine.Stack, params, xs,
                **engine_kwargs) -> jax.Array:
  """Norms of dL/dh_t for a recurrent stack read by ``loss_of_outputs``.

  Args:
    loss_of_outputs: ys (*batch, T, output_size) -> per-example losses (*batch,)
      or their batch mean (close over readout parameters and targets).
    stack, params: the ``engine.Stack`` and its parameters.
    xs: (*batch, T, D) inputs.
    **engine_kwargs: passed to ``apply_stack`` (lengths, mask, reverse, unroll, ...).

  Returns:
    (layers, directions, T): mean over the batch of ||d l_b / d h_t^b||_2.
  """
  _check_engine_kwargs(engine_kwargs)
  perts = zero_perturbations(stack, xs.shape[:-2], xs.shape[-2], xs.dtype)

  def loss_fn(p):
    ys = engine.apply_stack(stack, params, xs, perturbations=p, **engine_kwargs)[1]
    return loss_of_outputs(ys)
  mask = valid_mask(xs, engine_kwargs.get("lengths"), engine_kwargs.get("mask"))
  return dL_dh_norms_from_loss(loss_fn, perts, mask)


def gradflow_record(step: int, norms) -> dict:
  """One ``gradflow.jsonl`` object: {"step": step, "dL_dh_norm": nested lists}.

  ``norms`` is (layers, directions, T) from ``dL_dh_norms``. A single direction
  is dropped, and then a single layer too: one layer gives a list over t, several
  layers a list per layer, a bidirectional stack [layer][direction][t].
  """
  norms = np.asarray(norms, np.float64)
  if norms.ndim != 3:
    raise ValueError(f"norms must be (layers, directions, T); got shape {norms.shape}.")
  if norms.shape[1] == 1:
    norms = norms[:, 0]
    if norms.shape[0] == 1:
      norms = norms[0]
  return {"step": int(step), "dL_dh_norm": norms.tolist()}


def layer_inputs(stack: engine.Stack, params, xs, *, lengths=None, mask=None, reverse=False):
  """[input of layer 0 (= xs), ..., input of layer L-1], each (*batch, T, D_l).

  Runs the stack one layer at a time through ``apply_stack`` so residual
  connections and bidirectional concatenation are exactly the engine's.
  """
  one = dataclasses.replace(stack, num_layers=1)
  inputs = [xs]
  for layer in params[:-1]:
    inputs.append(engine.apply_stack(one, [layer], inputs[-1], lengths=lengths, mask=mask,
                                     reverse=reverse)[1])
  return inputs


# --- Jacobians along a trajectory ---------------------------------------------------

class JacobianSpectrum(NamedTuple):
  """Singular values of d h_{T-1} / d h_{T-1-k} for lags k = 0..T-1.

  lags: (T,) the lag k = (T-1) - t.
  log_singular_values: (T, K) natural logs, descending along K (kept as logs
    because the products under- or overflow float32 long before T = 1000).
  """
  lags: jax.Array
  log_singular_values: jax.Array

  @property
  def sigma_max(self) -> jax.Array:
    """(T,) spectral norm of d h_{T-1} / d h_{T-1-k}."""
    return jnp.exp(self.log_singular_values[:, 0])


def _flat_carry_fns(cell, params, carry0):
  """One step on flat carries, and the embedding E_h (S, H) and read-out P_h (H, S)."""
  flat0, unravel = ravel_pytree(carry0)

  def step(flat, xp):
    return ravel_pytree(cell.recur(params, unravel(flat), xp)[0])[0]
  embed = jax.jacfwd(lambda h: ravel_pytree(cell.with_hidden(carry0, h))[0])(
      cell.hidden(carry0))
  read = jax.jacfwd(lambda f: cell.hidden(unravel(f)))(flat0)
  return step, embed, read


def _renormalise(a, log_scale):
  """a / ||a||_F, with log ||a||_F added to ``log_scale``."""
  n = jnp.linalg.norm(a)
  safe = jnp.where(n > 0, n, 1.0)
  # A product that is exactly zero stays zero: its log scale becomes -inf.
  return a / safe, log_scale + jnp.where(n > 0, jnp.log(safe), -jnp.inf)


def _log_svals(m, log_scale, top_k):
  return jnp.log(jnp.linalg.svd(m, compute_uv=False)[:top_k]) + log_scale


def jacobian_spectrum(cell, params, xs, *, carry=None, top_k: int | None = None
                      ) -> JacobianSpectrum:
  """Singular values of d h_{T-1} / d h_t along the trajectory of one sequence.

  Accumulated backward from A_{T-1} = P_h:  A_t = A_{t+1} J_{t+1}  (H, S), one
  vector-Jacobian product of the step per row, then d h_{T-1}/d h_t = A_t E_h.
  Cost O(T H (S + H^2)), memory O(H S); A is renormalised every step.

  Args:
    cell: a ``Cell`` or registered name; params: its parameters.
    xs: (T, D) one sequence.
    carry: initial carry (leaves (H,)); zeros if None.
    top_k: keep the K largest singular values (default all H).
  """
  cell = cells_lib.get_cell(cell)
  if xs.ndim != 2:
    raise ValueError(f"xs must be one sequence of shape (T, D); got {xs.shape}.")
  carry0 = cell.init_carry(params, ()) if carry is None else carry
  hidden = cell.hidden_size(params)
  top_k = hidden if top_k is None else top_k
  if not isinstance(top_k, int) or not 1 <= top_k <= hidden:
    raise ValueError(f"top_k must be an integer in [1, {hidden}] (the hidden size) "
                     f"or None; got {top_k!r}.")
  _, _, carries = engine.scan(cell, params, xs, carry=carry0, return_carries=True)
  flats = jax.vmap(lambda c: ravel_pytree(c)[0])(carries)  # (T, S)
  step, embed, read = _flat_carry_fns(cell, params, carry0)

  def body(state, inp):
    prev, xp = inp
    _, vjp = jax.vjp(lambda f: step(f, xp), prev)
    a, log_scale = _renormalise(jax.vmap(lambda r: vjp(r)[0])(state[0]), state[1])
    return (a, log_scale), _log_svals(a @ embed, log_scale, top_k)
  _, logs = jax.lax.scan(body, (read, jnp.zeros((), read.dtype)),
                         (flats[:-1], cell.project(params, xs)[1:]), reverse=True)
  logs = jnp.concatenate([_log_svals(read @ embed, 0.0, top_k)[None], logs[::-1]])
  return JacobianSpectrum(jnp.arange(xs.shape[0]), logs)


def stack_jacobian_spectra(stack: engine.Stack, params, xs, *, top_k: int | None = None):
  """``jacobian_spectrum`` for every layer and direction of a stack, one sequence.

  xs: (T, D). Returns [{dir: JacobianSpectrum}] per layer; for "bwd" the lag counts
  steps back from that direction's last step (t = 0), i.e. k = t.
  """
  if xs.ndim != 2:
    raise ValueError(f"xs must be one sequence of shape (T, D); got {xs.shape}.")
  flips = {"fwd": lambda a: a, "bwd": lambda a: a[::-1]}
  return [{d: jacobian_spectrum(stack.cell, layer[d], flips[d](inp), top_k=top_k)
           for d in stack.directions}
          for layer, inp in zip(params, layer_inputs(stack, params, xs))]


def decay_rate(log_sigma, *, min_lag: int = 1, max_lag: int | None = None) -> float:
  """Geometric rate per step: exp(slope) of a least-squares line log sigma_k ~ a + k log r.

  Args:
    log_sigma: (T,) log sigma_max by lag (or a ``JacobianSpectrum``).
    min_lag, max_lag: the lags fitted (inclusive); non-finite values are skipped.

  Returns r: < 1 vanishing, > 1 exploding. For h_t = h_{t-1} W + u_t it tends to
  the spectral radius of W (exactly when W is normal).
  """
  if isinstance(log_sigma, JacobianSpectrum):
    log_sigma = log_sigma.log_singular_values[:, 0]
  y = np.asarray(log_sigma, np.float64)
  lags = np.arange(y.size)
  keep = (lags >= min_lag) & (lags <= (y.size if max_lag is None else max_lag)) & np.isfinite(y)
  if keep.sum() < 2:
    raise ValueError(f"need at least 2 finite values with lag in [{min_lag}, {max_lag}]; "
                     f"got {int(keep.sum())} of {y.size}.")
  return float(np.exp(np.polyfit(lags[keep], y[keep], 1)[0]))


# --- recurrent weight spectra -------------------------------------------------------

def _matrix_spectrum(w) -> dict:
  return {"singular_values": np.linalg.svd(w, compute_uv=False),
          "spectral_radius": float(np.max(np.abs(np.linalg.eigvals(w))))}


def recurrent_spectra(cell, params) -> dict[str, dict]:
  """Spectrum of each (H, H) gate block of ``w_h`` (H, G*H), computed on the host.

  Returns {gate: {"singular_values": (H,) descending, "spectral_radius": float}},
  gates in the cell's order (LSTM i, f, g, o; GRU r, z, n). For the tanh RNN,
  sigma_max(W_h) < 1 is sufficient for vanishing gradients and > 1 necessary for
  exploding ones (Pascanu et al. 2013).
  """
  cell = cells_lib.get_cell(cell)
  w = np.asarray(params["w_h"], np.float64)
  h = w.shape[0]
  if w.shape != (h, cell.num_gates * h):
    raise ValueError(f"w_h has shape {w.shape}; cell {cell.name!r} with {cell.num_gates} "
                     f"gate(s) needs (H, {cell.num_gates}*H).")
  return {g: _matrix_spectrum(b)
          for g, b in zip(cell.gates, np.split(w, cell.num_gates, axis=1))}


def stack_recurrent_spectra(stack: engine.Stack, params):
  """``recurrent_spectra`` for every layer and direction: [{dir: {gate: ...}}]."""
  return [{d: recurrent_spectra(stack.cell, layer[d]) for d in stack.directions}
          for layer in params]


def spectrum_metrics(stack: engine.Stack, params) -> dict[str, float]:
  """Flat scalars for logging: {"spectrum/l{layer}/{dir}/{gate}/sigma_max" | "/radius"}."""
  out = {}
  for i, layer in enumerate(stack_recurrent_spectra(stack, params)):
    for d, gates in layer.items():
      for g, s in gates.items():
        out[f"spectrum/l{i}/{d}/{g}/sigma_max"] = float(s["singular_values"][0])
        out[f"spectrum/l{i}/{d}/{g}/radius"] = s["spectral_radius"]
  return out


# --- Pascanu, Mikolov & Bengio (2013) regulariser -----------------------------------

def _tree_sq_norm(tree):
  """||tree||_2^2 per example over all carry leaves (..., n): (...)."""
  return sum(jnp.sum(jnp.square(x), axis=-1) for x in jax.tree.leaves(tree))


def _omega_terms(cell, params, prev, xp, g, m):
  """Per-step, per-example terms of Omega, backward over the processed steps.

  prev: carries before each step (T, B, ...); xp: (T, B, G*H); g: dL/dh_t (T, B, H);
  m: (T, B, 1) valid steps. Returns (T, B).
  """
  def body(back, inp):
    prev_s, xp_s, g_s, m_s = inp
    # Full carry cotangent after step s: h part dL/dh_s, the rest flowing back
    # from step s+1; a held (masked) carry passes it through unchanged.
    a = jax.tree.map(lambda n, o: jnp.where(m_s, n, o), cell.with_hidden(back, g_s), back)
    a = jax.lax.stop_gradient(a)
    _, vjp = jax.vjp(lambda c: cell.recur(params, c, xp_s)[0], prev_s)
    v = jax.tree.map(lambda n, o: jnp.where(m_s, n, o), vjp(a)[0], a)
    den = jnp.sqrt(_tree_sq_norm(a))
    ok = m_s[..., 0] & (den > 0)
    # sqrt at 0 has an infinite derivative; the floor keeps the gradient finite.
    num = jnp.sqrt(jnp.maximum(_tree_sq_norm(v), jnp.finfo(den.dtype).tiny))
    return v, jnp.where(ok, (num / jnp.where(ok, den, 1.0) - 1.0) ** 2, 0.0)
  zeros = jax.tree.map(lambda c: jnp.zeros_like(c[0]), prev)
  return jax.lax.scan(body, zeros, (prev, xp, g, m), reverse=True)[1]


def omega_layer(cell, params, xs, dl_dh, *, carry=None, mask=None, reverse=False) -> jax.Array:
  """Omega of one layer and direction, per example.

      Omega = sum_k ( ||a_{k+1} d x_{k+1}/d x_k|| / ||a_{k+1}|| - 1 )^2,
      a_{k+1} = dL/dx_{k+1}  held constant (stop_gradient), as in the paper,

  with x_k the full carry (h, or (c, h) for the LSTM) and a sum over all T
  transitions (the first from the initial carry). a_{k+1}'s h part is ``dl_dh``;
  its other parts (the LSTM's c) are carried back by the same vector-Jacobian
  products, which assumes the loss reads the carry only through h (true when it
  reads ys or the final h). Masked steps hold the carry and add no term; terms
  with a_{k+1} = 0 are skipped.

  Args:
    cell, params: the cell and this layer-direction's parameters.
    xs: (*batch, T, D) this layer's inputs; dl_dh: (*batch, T, H) from ``dL_dh``.
    carry: initial carry (zeros if None); mask: (*batch, T) valid steps;
    reverse: the direction ran from t = T-1 down to 0.

  Returns:
    (*batch,) Omega per sequence, differentiable w.r.t. params.
  """
  cell = cells_lib.get_cell(cell)
  batch_shape = xs.shape[:-2]
  init = cell.init_carry(params, batch_shape) if carry is None else carry
  _, _, carries = engine.scan(cell, params, xs, carry=init, mask=mask, reverse=reverse,
                              return_carries=True)
  seq = lambda a: engine.to_time_major(a, batch_shape, reverse)
  after = jax.tree.map(seq, carries)
  first = jax.tree.map(lambda a: a.reshape(1, -1, a.shape[-1]), init)
  prev = jax.tree.map(lambda i, a: jnp.concatenate([i, a[:-1]]), first, after)
  m = jnp.ones(xs.shape[:-1], bool) if mask is None else jnp.asarray(mask, bool)
  terms = _omega_terms(cell, params, prev, seq(cell.project(params, xs)), seq(dl_dh),
                       seq(m)[..., None])
  return terms.sum(axis=0).reshape(batch_shape)


def omega_stack(stack: engine.Stack, params, xs, grads, *, lengths=None, mask=None,
                reverse=False) -> jax.Array:
  """Omega summed over layers and directions, averaged over the batch (a scalar).

  Args:
    stack, params: the recurrent stack and its parameters.
    xs: (*batch, T, D) the stack's inputs (after any embedding).
    grads: from ``dL_dh`` at the same parameters (treated as constants).
    lengths / mask / reverse: as given to ``apply_stack``.

  The trainer adds ``weight * omega_stack(...)`` to its loss.
  """
  valid = valid_mask(xs, lengths, mask)
  grads = jax.lax.stop_gradient(grads)
  total = 0.0
  for i, inp in enumerate(layer_inputs(stack, params, xs, lengths=lengths, mask=mask,
                                       reverse=reverse)):
    for d in stack.directions:
      total = total + omega_layer(stack.cell, params[i][d], inp, grads[i][d], mask=valid,
                                  reverse=reverse ^ (d == "bwd"))
  return jnp.mean(total)


def omega(loss_of_outputs: Callable, stack: engine.Stack, params, xs, **engine_kwargs):
  """Pascanu et al.'s Omega for a stack read by ``loss_of_outputs`` (see ``dL_dh_norms``).

  One forward-backward pass for dL/dh_t, then ``omega_stack``. The trajectory
  starts from zero carries; unroll / remat only affect how dL/dh_t is computed.
  """
  _check_engine_kwargs(engine_kwargs)
  if "carries" in engine_kwargs:
    raise ValueError("omega starts from zero carries; initial carries are not supported "
                     "(use omega_layer with carry= for a non-zero start).")
  perts = zero_perturbations(stack, xs.shape[:-2], xs.shape[-2], xs.dtype)
  grads = dL_dh(lambda p: loss_of_outputs(
      engine.apply_stack(stack, params, xs, perturbations=p, **engine_kwargs)[1]), perts)
  return omega_stack(stack, params, xs, grads, lengths=engine_kwargs.get("lengths"),
                     mask=engine_kwargs.get("mask"),
                     reverse=engine_kwargs.get("reverse", False))

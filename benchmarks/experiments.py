"""EXPERIMENTS, not rnnlab: local variants of ``engine.scan`` that locate its cost.

The reported rnnlab numbers always come from the real library
(``jax_models.rnnlab_model``). These variants exist only to measure changes
suggested for ``rnnlab/engine.py`` (see benchmarks/README.md), and handle only
the benchmark's case: one layer, forward, no mask, no perturbation. They use
rnnlab's own cells and parameters, so only the data movement differs:

  exp_tmajor  transpose xs (B, T, D) to time-major *before* the hoisted
              projection, so the transpose moves D-wide rows instead of the
              G*H-wide projected ones (rnnlab transposes after projecting).
  exp_inloop  no hoisting: project x_t inside the scan body, as Flax's nn.RNN
              does, so no (T, B, G*H) tensor is written to and read from memory.
  exp_chunk   hoisting per chunk of K <= 32 steps (K the largest divisor of T
              up to 32): an outer scan over chunks projects K steps with one
              (K*B, D) @ (D, G*H) matmul, an inner scan runs them, so the
              projected chunk stays in cache and the matmul stays large.
Run them with ``--frameworks rnnlab,exp_tmajor,exp_inloop,exp_chunk,flax``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnnlab import cells as cells_lib

_MAX_CHUNK = 32  # longest chunk exp_chunk projects at once


def _hoisted_time_major(cell, params, xs_tm, remat):
  """xs_tm: (T, B, D) -> ys (T, B, H); one (T*B, D) @ (D, G*H) matmul before the scan."""
  body = lambda carry, xp: cell.recur(params, carry, xp)
  return _scan(cell, params, body, cell.project(params, xs_tm), remat)


def _in_loop(cell, params, xs_tm, remat):
  """xs_tm: (T, B, D) -> ys (T, B, H); x_t @ w_x + b computed at each step."""
  body = lambda carry, x: cell.step(params, carry, x)
  return _scan(cell, params, body, xs_tm, remat)


def _chunked(cell, params, xs_tm, remat):
  """xs_tm: (T, B, D) -> ys (T, B, H); projection hoisted per chunk of K steps."""
  t = xs_tm.shape[0]
  k = max(d for d in range(1, min(t, _MAX_CHUNK) + 1) if t % d == 0)
  inner = lambda carry, xp: cell.recur(params, carry, xp)
  inner = jax.checkpoint(inner) if remat else inner

  def outer(carry, chunk):  # chunk: (K, B, D)
    return jax.lax.scan(inner, carry, cell.project(params, chunk))
  carry = cell.init_carry(params, xs_tm.shape[1:2])
  _, ys = jax.lax.scan(outer, carry, xs_tm.reshape(t // k, k, *xs_tm.shape[1:]))
  return ys.reshape(t, *ys.shape[2:])


def _scan(cell, params, body, seq, remat):
  carry = cell.init_carry(params, seq.shape[1:2])
  return jax.lax.scan(jax.checkpoint(body) if remat else body, carry, seq)[1]


def _variant(run):
  """A model factory like ``jax_models.rnnlab_model`` around the layout ``run``."""
  def model(cell_name, hidden, *, remat=False):
    cell = cells_lib.get_cell(cell_name)
    init = lambda key, xs: cell.init(key, xs.shape[-1], hidden)
    apply = lambda params, xs: jnp.swapaxes(
        run(cell, params, jnp.swapaxes(xs, 0, 1), remat), 0, 1)
    return init, apply
  return model


MODELS = {"exp_tmajor": _variant(_hoisted_time_major), "exp_inloop": _variant(_in_loop),
          "exp_chunk": _variant(_chunked)}

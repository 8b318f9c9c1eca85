"""Flax linen layer that owns a recurrent stack's parameters.

The cells stay pure functions (``rnnlab.cells``) and the engine stays pure JAX
(``rnnlab.engine``); this module only lets a stack sit inside a ``flax.linen``
model next to embeddings and readout heads::

    class Classifier(nn.Module):
      @nn.compact
      def __call__(self, xs, lengths):
        _, ys, h = Recurrent("lstm", 128, num_layers=2)(xs, lengths=lengths)
        return nn.Dense(10)(h)

The parameter tree under the layer is exactly ``engine.init_stack``'s:
``{"layers": [{"fwd": {"w_x", "w_h", "b", ...}, ...}, ...]}``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from rnnlab import engine


class Recurrent(nn.Module):
  """A stacked / bidirectional recurrent network over any registered cell.

  Attributes:
    cell: registered cell name (``rnnlab.cells.names()``).
    hidden_size: H per layer and direction.
    num_layers, bidirectional, residual: see ``engine.Stack``.
    cell_options: keyword options for the cell's init (initialisers,
      forget_bias, chrono, peepholes, ...), as a dict.
    unroll, remat, parallel: see ``engine.scan``.
    param_dtype: dtype of the parameters.
  """
  cell: str
  hidden_size: int
  num_layers: int = 1
  bidirectional: bool = False
  residual: bool = False
  cell_options: Any = None
  unroll: int | None = None
  remat: bool = False
  parallel: bool | None = None
  param_dtype: Any = jnp.float32

  @property
  def stack(self) -> engine.Stack:
    return engine.make_stack(self.cell, self.hidden_size, self.num_layers,
                             bidirectional=self.bidirectional, residual=self.residual,
                             **dict(self.cell_options or {}))

  @nn.compact
  def __call__(self, xs, *, lengths=None, mask=None, carries=None, reverse=False,
               return_carries=False, perturbations=None):
    """xs: (*batch, T, D). Returns (final_carries, ys, last_hidden[, carries]).

    ys: (*batch, T, output_size), zero at padded steps; last_hidden:
    (*batch, output_size), the top layer's hidden state at each sequence's last
    valid step (for a bidirectional layer, the backward direction's state after
    it has read the whole sequence).
    """
    stack = self.stack
    params = self.param("layers", lambda key: engine.init_stack(
        key, stack, xs.shape[-1], self.param_dtype))
    out = engine.apply_stack(stack, params, xs, carries=carries, lengths=lengths, mask=mask,
                             reverse=reverse, unroll=self.unroll, remat=self.remat,
                             parallel=self.parallel,
                             return_carries=return_carries, perturbations=perturbations)
    return (out[0], out[1], engine.last_hidden(stack, out[0]), *out[2:])

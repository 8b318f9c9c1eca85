"""Flax layers that own a recurrent stack's parameters: ``Recurrent`` (linen) and
``RecurrentNNX`` (Flax NNX), both running ``rnnlab.engine``.

The cells stay pure functions (``rnnlab.cells``) and the engine stays pure JAX;
these modules only let a stack sit inside a Flax model next to embeddings and
readout heads. Side by side with ``flax.linen.RNN``::

    # flax.linen                                   # rnnlab (linen)
    rnn = nn.RNN(nn.LSTMCell(128),                 rnn = Recurrent("lstm", 128, return_carry=True)
                 return_carry=True)
    carry, ys = rnn(xs, seq_lengths=lengths)       carry, ys = rnn(xs, lengths=lengths)

    # flax.nnx                                      # rnnlab (NNX)
    rnn = nnx.RNN(nnx.LSTMCell(D, 128, rngs=rngs))  rnn = RecurrentNNX("lstm", D, 128, rngs=rngs)
    ys = rnn(xs, seq_lengths=lengths)               ys = rnn(xs, lengths=lengths)

Beyond ``nn.RNN``: any registered cell (or a ``cells.Cell``), stacked,
bidirectional and residual layers, masks, remat, the parallel form of the linear
cells, per-step carries and dL/dh_t perturbations. ``return_carry=False`` (the
default) returns ``(final_carries, ys, last_hidden)``: the top layer's state at
each sequence's last valid step comes ready for a readout::

    class Classifier(nn.Module):
      @nn.compact
      def __call__(self, xs, lengths):
        _, ys, h = Recurrent("lstm", 128, num_layers=2)(xs, lengths=lengths)
        return nn.Dense(10)(h)

Parameters: one collection per layer, one entry per direction, each holding the
cell's parameters: ``{"layers_0": {"fwd": {"w_x", "w_h", "b", ...}, "bwd": ...},
"layers_1": ...}``; ``engine_params`` gives the engine's list form
(``engine.init_stack``), e.g. for ``torch_interop``.

Dtypes as in Flax layers: parameters are stored in ``param_dtype``; the
computation runs in ``dtype``, or when it is None in the promoted dtype of the
inputs and the parameters (bfloat16 parameters with float32 inputs compute in
float32). Carries passed in are cast to that dtype.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
from flax import nnx
import jax
import jax.numpy as jnp

from rnnlab import cells as cells_lib
from rnnlab import engine


def _cell_name(cell) -> str:
  """A registered name, or a ``cells.Cell`` (registered on first use)."""
  if isinstance(cell, cells_lib.Cell):
    if cell.name not in cells_lib.names():
      cells_lib.register(cell)
    elif cells_lib.get_cell(cell.name) is not cell:
      raise ValueError(f"Another cell is registered as {cell.name!r}; give yours another "
                       "name (dataclasses.replace(cell, name=...)).")
    return cell.name
  cells_lib.get_cell(cell)  # an unknown name lists the valid ones
  return cell


def _stack(cell, hidden_size, num_layers, bidirectional, residual, cell_options):
  return engine.make_stack(_cell_name(cell), hidden_size, num_layers,
                           bidirectional=bidirectional, residual=residual,
                           **dict(cell_options or {}))


def engine_params(params: dict) -> list:
  """``{"layers_0": {...}, "layers_1": ...}`` -> the engine's list over layers."""
  return [params[f"layers_{i}"] for i in range(len(params))]


def _run(module, stack, params, xs, lengths, mask, carries, reverse, return_carry,
         return_carries, perturbations):
  dtype = module.dtype or jnp.result_type(xs.dtype, *(p.dtype for p in jax.tree.leaves(params)))
  cast = lambda tree: jax.tree.map(lambda a: jnp.asarray(a, dtype), tree)
  out = engine.apply_stack(stack, cast(params), jnp.asarray(xs, dtype),
                           carries=None if carries is None else cast(carries),
                           lengths=lengths, mask=mask, reverse=reverse, unroll=module.unroll,
                           remat=module.remat, parallel=module.parallel,
                           return_carries=return_carries, perturbations=perturbations)
  if return_carry:
    return (out[0], out[1], *out[2:])
  return (out[0], out[1], engine.last_hidden(stack, out[0]), *out[2:])


_CALL_DOC = """xs: (*batch, T, D). Returns ``(final_carries, ys, last_hidden)``, or with
    ``return_carry`` (the call's, else the module's) ``(final_carries, ys)`` as nn.RNN
    does; ``return_carries`` appends every step's carries.

    ys: (*batch, T, output_size), zero at padded steps; last_hidden:
    (*batch, output_size), the top layer's hidden state at each sequence's last
    valid step (for a bidirectional layer, the backward direction's state after
    it has read the whole sequence). final_carries: a list over layers of
    {direction: carry}, also the form ``carries`` takes.
    """


class Recurrent(nn.Module):
  """A stacked / bidirectional recurrent network over any cell (flax.linen).

  Attributes:
    cell: registered cell name (``rnnlab.cells.names()``) or a ``cells.Cell``.
    hidden_size: H per layer and direction.
    num_layers, bidirectional, residual: see ``engine.Stack``.
    cell_options: keyword options for the cell's init (initialisers,
      forget_bias, chrono, peepholes, r_min, ...), as a dict.
    unroll, remat, parallel: see ``engine.scan``.
    return_carry: return ``(final_carries, ys)`` as nn.RNN does.
    dtype: the computation's dtype (None: promoted from inputs and parameters).
    param_dtype: dtype of the parameters.
  """
  cell: Any
  hidden_size: int
  num_layers: int = 1
  bidirectional: bool = False
  residual: bool = False
  cell_options: Any = None
  unroll: int | None = None
  remat: bool = False
  parallel: bool | None = None
  return_carry: bool = False
  dtype: Any = None
  param_dtype: Any = jnp.float32

  @property
  def stack(self) -> engine.Stack:
    return _stack(self.cell, self.hidden_size, self.num_layers, self.bidirectional,
                  self.residual, self.cell_options)

  @nn.compact
  def __call__(self, xs, *, lengths=None, mask=None, carries=None, reverse=False,
               return_carry=None, return_carries=False, perturbations=None):
    stack = self.stack
    params = [self.param(f"layers_{i}", lambda key, n=size: engine.init_layer(
        key, stack, n, self.param_dtype))
              for i, size in enumerate(engine.layer_input_sizes(stack, xs.shape[-1]))]
    return _run(self, stack, params, xs, lengths, mask, carries, reverse,
                self.return_carry if return_carry is None else return_carry,
                return_carries, perturbations)

  __call__.__doc__ = _CALL_DOC


class RecurrentNNX(nnx.Module):
  """The same network as ``Recurrent``, as a Flax NNX module (parameters created eagerly).

  Args:
    cell, hidden_size, num_layers, bidirectional, residual, cell_options, unroll,
      remat, parallel, return_carry, dtype, param_dtype: as for ``Recurrent``.
    in_features: D, the inputs' last dimension.
    rngs: ``nnx.Rngs``; the parameters come from ``rngs.params()``.
  """

  def __init__(self, cell, in_features: int, hidden_size: int, *, num_layers: int = 1,
               bidirectional: bool = False, residual: bool = False, cell_options=None,
               unroll: int | None = None, remat: bool = False, parallel: bool | None = None,
               return_carry: bool = False, dtype=None, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    self.stack = _stack(cell, hidden_size, num_layers, bidirectional, residual, cell_options)
    self.unroll, self.remat, self.parallel = unroll, remat, parallel
    self.return_carry, self.dtype = return_carry, dtype
    sizes = engine.layer_input_sizes(self.stack, in_features)
    for i, (key, size) in enumerate(zip(jax.random.split(rngs.params(), num_layers), sizes)):
      layer = engine.init_layer(key, self.stack, size, param_dtype)
      setattr(self, f"layers_{i}", nnx.Dict(
          {d: nnx.Dict({k: nnx.Param(v) for k, v in p.items()}) for d, p in layer.items()}))

  def engine_params(self) -> list:
    """The parameters in the engine's list form (``engine.init_stack``)."""
    return [{d: {k: v[...] for k, v in p.items()}
             for d, p in getattr(self, f"layers_{i}").items()}
            for i in range(self.stack.num_layers)]

  def __call__(self, xs, *, lengths=None, mask=None, carries=None, reverse=False,
               return_carry=None, return_carries=False, perturbations=None):
    return _run(self, self.stack, self.engine_params(), xs, lengths, mask, carries, reverse,
                self.return_carry if return_carry is None else return_carry,
                return_carries, perturbations)

  __call__.__doc__ = _CALL_DOC

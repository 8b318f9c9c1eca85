"""Weights and states to and from PyTorch's ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU``.

torch is imported inside the two functions that need it, so rnnlab imports
without it. The mapping (per layer k and direction; ``_reverse`` keys are the
"bwd" direction)::

    w_x = weight_ih_lk.T        (D, G*H)
    w_h = weight_hh_lk.T        (H, G*H)
    b   = bias_ih_lk + bias_hh_lk
    GRU: b = bias_ih + [b_hr, b_hz, 0], b_hn = bias_hh's n block, because the
         reset gate multiplies (h W_hn + b_hn) and so b_hn cannot be folded in.

Gate orders already agree (LSTM i, f, g, o; GRU r, z, n). Cells: tanh ``nn.RNN``
-> ``rnn``, relu ``nn.RNN`` -> ``irnn``, ``nn.LSTM`` -> ``lstm``, ``nn.GRU`` ->
``gru``. Export writes ``bias_ih = b`` and ``bias_hh = 0`` (GRU: ``bias_hh``'s n
block = b_hn), so rnnlab -> torch -> rnnlab returns the same arrays bit for bit.

Not supported: ``proj_size > 0`` (LSTM projections); rnnlab residual stacks,
other cells and extra parameters (peepholes) cannot be exported. Modules built
with ``bias=False`` load with zero biases. ``batch_first`` is ignored (rnnlab is
always batch-major) and so is ``dropout``: it acts between layers in training
mode only, and rnnlab's stack has none, so inference outputs agree.
"""

from __future__ import annotations

import re

import jax.numpy as jnp
import numpy as np

from rnnlab import cells as cells_lib
from rnnlab import engine

# torch's ``RNNBase.mode`` -> rnnlab cell.
_CELL_OF_MODE = {"RNN_TANH": "rnn", "RNN_RELU": "irnn", "LSTM": "lstm", "GRU": "gru"}
# rnnlab cell -> (torch class name, constructor keywords).
_MODULE_OF_CELL = {
    "rnn": ("RNN", {"nonlinearity": "tanh"}),
    "irnn": ("RNN", {"nonlinearity": "relu"}),
    "lstm": ("LSTM", {}),
    "gru": ("GRU", {}),
}
# Cell options for PyTorch-style initialisation when ``init_stack`` draws a fresh stack.
_TORCH_INIT = {"input_init": "torch", "recurrent_init": "torch", "bias_init": "torch"}
_TORCH_INIT_EXTRA = {"lstm": {"forget_bias": 0.0}}
_DIRECTION_SUFFIX = {"fwd": "", "bwd": "_reverse"}
_KEY = re.compile(r"(weight|bias)_(ih|hh|hr)_l(\d+)(_reverse)?$")


def exportable_cells() -> list[str]:
  return sorted(_MODULE_OF_CELL)


def _check_exportable(cell: str):
  if cell not in _MODULE_OF_CELL:
    raise ValueError(f"Cell {cell!r} has no PyTorch counterpart; exportable cells: "
                     f"{', '.join(exportable_cells())}.")


# --- biases: b_ih, b_hh <-> b (and GRU's b_hn) -------------------------------------

def _sum_bias_in(b_ih, b_hh, hidden_size):
  return {"b": b_ih + b_hh}


def _gru_bias_in(b_ih, b_hh, hidden_size):
  h = hidden_size
  return {"b": b_ih + jnp.concatenate([b_hh[:2 * h], jnp.zeros_like(b_hh[2 * h:])]),
          "b_hn": b_hh[2 * h:]}


def _sum_bias_out(params):
  return params["b"], np.zeros_like(params["b"])


def _gru_bias_out(params):
  b_hn = params["b_hn"]
  return params["b"], np.concatenate([np.zeros(2 * b_hn.shape[0], b_hn.dtype), b_hn])


_BIAS_IN = {"gru": _gru_bias_in}
_BIAS_OUT = {"gru": _gru_bias_out}


# --- state dicts ------------------------------------------------------------------

def _layout(state_dict) -> tuple[int, bool]:
  """(num_layers, bidirectional) from the key names; rejects unknown keys and projections."""
  matches = {k: _KEY.match(k) for k in state_dict}
  unknown = sorted(k for k, m in matches.items() if m is None)
  if unknown:
    raise ValueError(f"Unexpected state_dict keys {unknown}; expected weight_ih_l<k>, "
                     "weight_hh_l<k>, bias_ih_l<k>, bias_hh_l<k> (optionally _reverse).")
  if any(m.group(2) == "hr" for m in matches.values()):
    raise ValueError("LSTM projections (proj_size > 0, weight_hr_l<k>) are not supported.")
  layers = {int(m.group(3)) for m in matches.values()}
  if not layers or layers != set(range(len(layers))):
    raise ValueError(f"state_dict has layers {sorted(layers)}; expected 0..L-1.")
  return len(layers), any(m.group(4) for m in matches.values())


def _layer_from_torch(state_dict, cell, suffix, hidden_size):
  """One layer and direction in rnnlab's layout (jnp ops, so it can be differentiated)."""
  w_ih = jnp.asarray(state_dict["weight_ih" + suffix])
  w_hh = jnp.asarray(state_dict["weight_hh" + suffix])
  rows = cells_lib.get_cell(cell).num_gates * hidden_size
  if w_hh.shape != (rows, hidden_size) or w_ih.shape[0] != rows:
    raise ValueError(f"{cell!r} expects weight_hh{suffix} of shape {(rows, hidden_size)} and "
                     f"{rows} rows in weight_ih; got {w_hh.shape} and {w_ih.shape}.")
  zeros = jnp.zeros((rows,), w_hh.dtype)  # modules built with bias=False
  b_ih = jnp.asarray(state_dict.get("bias_ih" + suffix, zeros))
  b_hh = jnp.asarray(state_dict.get("bias_hh" + suffix, zeros))
  bias = _BIAS_IN.get(cell, _sum_bias_in)(b_ih, b_hh, hidden_size)
  return {"w_x": w_ih.T, "w_h": w_hh.T, **bias}


def from_state_dict(state_dict, cell: str) -> tuple[engine.Stack, list]:
  """``(stack, params)`` from a PyTorch RNN/LSTM/GRU state dict of arrays.

  state_dict: {name: array} with PyTorch's names (numpy, jax or anything
    ``jnp.asarray`` takes; convert torch tensors first). The mapping uses jnp
    operations, so ``jax.grad`` through it gives gradients in PyTorch's layout.
  cell: the rnnlab cell it belongs to (one of ``exportable_cells()``); the
    names alone cannot tell tanh from relu.
  """
  _check_exportable(cell)
  num_layers, bidirectional = _layout(state_dict)
  hidden_size = int(np.shape(state_dict["weight_hh_l0"])[1])
  stack = engine.make_stack(cell, hidden_size, num_layers, bidirectional=bidirectional,
                            **_TORCH_INIT, **_TORCH_INIT_EXTRA.get(cell, {}))
  params = [{d: _layer_from_torch(state_dict, cell, f"_l{k}{_DIRECTION_SUFFIX[d]}",
                                  hidden_size)
             for d in stack.directions}
            for k in range(num_layers)]
  return stack, params


def _layer_to_torch(params, cell, suffix):
  expected = {"w_x", "w_h", "b"} | ({"b_hn"} if cell in _BIAS_OUT else set())
  if set(params) != expected:
    raise ValueError(f"Cannot export parameters {sorted(set(params) - expected)} of {cell!r} "
                     f"(e.g. peepholes); PyTorch's layer has only {sorted(expected)}.")
  p = {k: np.asarray(v) for k, v in params.items()}
  b_ih, b_hh = _BIAS_OUT.get(cell, _sum_bias_out)(p)
  return {"weight_ih" + suffix: p["w_x"].T, "weight_hh" + suffix: p["w_h"].T,
          "bias_ih" + suffix: b_ih, "bias_hh" + suffix: b_hh}


def to_state_dict(stack: engine.Stack, params) -> dict[str, np.ndarray]:
  """PyTorch's state dict (numpy arrays) for ``stack``'s parameters."""
  _check_exportable(stack.cell)
  if stack.residual:
    raise ValueError("Residual stacks cannot be exported: PyTorch's RNN modules have no "
                     "residual connections.")
  out = {}
  for k, layer in enumerate(params):
    for d in stack.directions:
      out.update(_layer_to_torch(layer[d], stack.cell, f"_l{k}{_DIRECTION_SUFFIX[d]}"))
  return out


# --- torch modules ------------------------------------------------------------------

def from_torch(module) -> tuple[engine.Stack, list]:
  """``(stack, params)`` holding the weights of a ``torch.nn.RNN``/``LSTM``/``GRU``.

  The returned stack's cell options select PyTorch-style initialisation
  (U(-1/sqrt(H), 1/sqrt(H)) kernels and bias, LSTM forget bias 0) for a fresh
  ``init_stack(key, stack, D)``; PyTorch draws b_ih and b_hh separately (and GRU's
  b_hn), rnnlab draws b once and starts b_hn at 0.
  """
  import torch  # here, not at the top: rnnlab must import without torch
  mode = getattr(module, "mode", None)
  if not isinstance(module, torch.nn.RNNBase) or mode not in _CELL_OF_MODE:
    raise ValueError(f"from_torch takes torch.nn.RNN, nn.LSTM or nn.GRU; got "
                     f"{type(module).__name__}.")
  if getattr(module, "proj_size", 0) > 0:
    raise ValueError(f"LSTM projections are not supported (proj_size={module.proj_size}).")
  state = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
  return from_state_dict(state, _CELL_OF_MODE[mode])


def to_torch(stack: engine.Stack, params, *, batch_first: bool = True):
  """A ``torch.nn.RNN``/``LSTM``/``GRU`` computing the same function as ``stack``.

  batch_first defaults to True because rnnlab is batch-major; the module's
  dtype follows the parameters'.
  """
  import torch  # here, not at the top: rnnlab must import without torch
  state = {k: torch.from_numpy(np.array(v)) for k, v in to_state_dict(stack, params).items()}
  class_name, kwargs = _MODULE_OF_CELL[stack.cell]
  w_ih = state["weight_ih_l0"]
  module = getattr(torch.nn, class_name)(
      w_ih.shape[1], stack.hidden_size, stack.num_layers, bias=True,
      batch_first=batch_first, bidirectional=stack.bidirectional, **kwargs)
  module = module.to(w_ih.dtype)
  module.load_state_dict(state)
  return module


# --- recurrent state: rnnlab carries <-> PyTorch (h_n[, c_n]) ------------------------

# Positions of PyTorch's (h, c) in the rnnlab carry (LSTM carries (c, h)); other cells'
# carry is h itself.
_STATE_LEAVES = {"lstm": (1, 0)}


def _carry_to_state(cell, carry):
  """rnnlab carry -> PyTorch's state tuple ((h, c) or (h,))."""
  order = _STATE_LEAVES.get(cell)
  return (carry,) if order is None else tuple(carry[i] for i in order)


def _state_to_carry(cell, leaves):
  """PyTorch's state tuple -> rnnlab carry (inverse of ``_carry_to_state``)."""
  order = _STATE_LEAVES.get(cell)
  if order is None:
    return leaves[0]
  return tuple(leaves[order.index(i)] for i in range(len(order)))


def state_to_torch(stack: engine.Stack, final_carries):
  """Final carries of ``apply_stack`` -> PyTorch's ``h_n`` (or ``(h_n, c_n)`` for LSTM).

  Each is (num_layers * num_directions, *batch, H), row ``layer * num_directions
  + direction`` as PyTorch orders them.
  """
  _check_exportable(stack.cell)
  parts = [_carry_to_state(stack.cell, layer[d])
           for layer in final_carries for d in stack.directions]
  stacked = tuple(jnp.stack(leaves) for leaves in zip(*parts))
  return stacked if len(stacked) > 1 else stacked[0]


def state_from_torch(stack: engine.Stack, state):
  """PyTorch's ``h_0`` (or ``(h_0, c_0)``) -> initial carries for ``apply_stack``."""
  _check_exportable(stack.cell)
  leaves = tuple(state) if isinstance(state, (tuple, list)) else (state,)
  ndir = len(stack.directions)
  return [{d: _state_to_carry(stack.cell, [jnp.asarray(a[k * ndir + j]) for a in leaves])
           for j, d in enumerate(stack.directions)}
          for k in range(stack.num_layers)]

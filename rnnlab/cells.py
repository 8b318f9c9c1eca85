"""Recurrent cells as pure functions of one time step, looked up by name.

A cell is a :class:`Cell`: ``init`` makes its parameters, ``init_carry`` its
zero state, and ``step(params, carry, x) -> (carry, y)`` advances one time step.
``step`` is split in two so that the engine can hoist the input projection out
of the time loop::

    step(params, carry, x) == recur(params, carry, project(params, x))

``project`` is ``x @ w_x + b`` (one matmul for all time steps in the engine);
``recur`` holds everything that depends on the previous state.

Parameter names (H = hidden size, D = input size, G = number of gate blocks):
    w_x: (D, G*H)   input kernel, gate blocks side by side
    w_h: (H, G*H)   recurrent kernel
    b:   (G*H,)     bias (PyTorch's b_ih + b_hh where both exist)
    plus a few cell-specific ones documented on each cell.
Gate order follows PyTorch/cuDNN: LSTM (i, f, g, o), GRU (r, z, n).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections

from rnnlab import initializers
from rnnlab.checks import check_int

Params = dict[str, jax.Array]
Carry = Any  # an array, or a tuple of arrays (LSTM: (c, h))


def _elementwise(a, s):
  return a * s


@dataclasses.dataclass(frozen=True)
class LinearForm:
  """A recurrence linear in its state, diagonal: s_t = a_t s_{t-1} + b_t.

  With every gate a function of x_t only, ``a`` and ``b`` for all steps come
  from the projected inputs at once, and the recurrence is an associative scan
  ((a1, b1) then (a2, b2) is (a2 a1, a2 b1 + b2)): O(log T) depth in parallel,
  or one cheap elementwise pass in sequence. The product ``a s`` is elementwise,
  or for LRU a complex product on (real, imaginary) pairs of real arrays (with XLA's
  complex numbers lru trained 1.8x fewer tokens/s on the CPU; benchmarks/README.md).
  The carry the engine sees is always one real array.

  Attributes:
    coefficients: ``(params, xp) -> (a, b)``: ``b`` a state for every step
      (leaves (..., S)); ``a`` the same structure, its leaves broadcasting to
      ``b``'s (LRU's lambda is shared by all steps: leaves (S,)).
    readout: ``(params, s, xp) -> y`` (..., H), the output at a step from its state.
    to_state: ``carry -> s`` and ``to_carry: s -> carry``, linear maps between
      the real carry (..., H) and the state (identity for real states).
    size: ``params -> H``.
    mul: ``(a, s) -> a s``; also composes two coefficients (``mul(a2, a1)``).
    identity: ``a -> 1`` of ``a``'s structure (the coefficient of a held step).
  """
  coefficients: Callable
  readout: Callable
  size: Callable
  to_state: Callable = lambda c: c
  to_carry: Callable = lambda s: s
  mul: Callable = _elementwise
  identity: Callable = jnp.ones_like


@dataclasses.dataclass(frozen=True)
class Cell:
  """A recurrent cell: pure functions plus the facts the engine needs.

  Attributes:
    name: registry name.
    gates: names of the gate blocks in ``w_x``/``w_h``/``b``, in order.
    recur: ``(params, carry, xp) -> (carry, y)``, xp the projected input (..., G*H).
    init_carry: ``(params, batch_shape) -> carry`` of zeros.
    hidden: ``carry -> h``, the hidden state that feeds the next step.
    with_hidden: ``(carry, h) -> carry`` with h replaced (gradient-flow studies
      perturb h through it).
    init_extra: ``(key, params, input_size, hidden_size, **options) -> params``
      adding cell-specific parameters and bias settings.
    options: cell-specific keyword options accepted by ``init`` with defaults.
    defaults: default initialiser names per weight group.
    doc: the equations.
    recurrent: whether the cell has a recurrent kernel ``w_h`` (the linear
      recurrences below have none: their gates depend on x only).
    linear: for a recurrence that is linear in its state, the ``LinearForm`` the
      engine runs over all steps at once (sequentially or with
      ``jax.lax.associative_scan``); ``recur`` is then derived from it.
    make_params: ``(key, input_size, hidden_size, dtype, **options) -> params``
      replacing the w_x / w_h / b initialisation (LRU's parameters differ).
    project_fn: ``(params, x) -> xp`` replacing ``x @ w_x + b``.
    hidden_only_in_w_h: the previous h enters the step only through ``h @ w_h``
      (Elman cells, LSTMs), so a dropout mask on h as the step reads it is Gal &
      Ghahramani's (2016) recurrent dropout (``engine.scan``'s ``recurrent_mask``).
      GRU and MGU also carry h through their interpolation, the linear cells have no w_h.
    pointwise: for a step that is "projection + one recurrent matmul + the rest",
      ``(params, carry, xp, hp) -> (carry, y)`` with ``hp = hidden(carry) @ w_h``;
      ``recur`` is then that matmul followed by ``pointwise`` (``matmul_recur``). The
      engine's fused backward pass (``engine.scan(fused=True)``) differentiates
      ``pointwise`` one step at a time and does the weight gradients of ``w_h`` (and
      of the projection) as single matmuls over all steps. ``pointwise`` never reads
      ``w_h``, nor ``w_x`` (nor ``b`` when the projection is the default one).
  """
  name: str
  gates: tuple[str, ...]
  recur: Callable
  init_carry: Callable
  hidden: Callable
  with_hidden: Callable
  init_extra: Callable | None = None
  options: dict = dataclasses.field(default_factory=dict)
  defaults: dict = dataclasses.field(default_factory=dict)
  doc: str = ""
  recurrent: bool = True
  linear: LinearForm | None = None
  make_params: Callable | None = None
  project_fn: Callable | None = None
  hidden_only_in_w_h: bool = False
  pointwise: Callable | None = None

  @property
  def num_gates(self) -> int:
    return len(self.gates)

  @property
  def takes_initializers(self) -> bool:
    """Whether ``init`` takes input_init / recurrent_init / bias_init."""
    return self.make_params is None

  def project(self, params: Params, x: jax.Array) -> jax.Array:
    """x: (..., D) -> (..., G*H), as one 2-D matmul over all leading axes: the gradient of
    a matmul over (T, B, D) inputs contracts two axes, which XLA's CPU dot ran 3x slower
    than the same product on (T*B, D) rows."""
    rows = x.reshape(-1, x.shape[-1])
    xp = self.project_fn(params, rows) if self.project_fn is not None else \
        rows @ params["w_x"] + params["b"]
    return xp.reshape(*x.shape[:-1], xp.shape[-1])

  def input_size(self, params: Params) -> int:
    """D: the size of the inputs ``x``."""
    return (params["w_x"] if "w_x" in params else params["B_re"]).shape[0]

  def output(self, params: Params, carry: Carry, xp: jax.Array) -> jax.Array:
    """The output at a step whose carry is ``carry`` (``hidden(carry)`` but for LRU)."""
    if self.linear is not None:
      return self.linear.readout(params, self.linear.to_state(carry), xp)
    return self.hidden(carry)

  def step(self, params: Params, carry: Carry, x: jax.Array):
    """One time step. x: (..., D); carry leaves: (..., H). Returns (carry, y)."""
    return self.recur(params, carry, self.project(params, x))

  def init(self, key: jax.Array, input_size: int, hidden_size: int, *,
           dtype=jnp.float32, input_init=None, recurrent_init=None, bias_init=None,
           **options) -> Params:
    """Parameters for inputs of size ``input_size`` and a state of ``hidden_size``.

    input_init / recurrent_init / bias_init: initialiser names (see
    ``initializers.names()``) or callables; ``None`` takes the cell's default.
    Recurrent and input kernels are initialised one (., H) gate block at a time.
    """
    check_int("input_size", input_size)
    check_int("hidden_size", hidden_size)
    unknown = set(options) - set(self.options)
    given = {n for n, v in (("input_init", input_init), ("recurrent_init", recurrent_init),
                            ("bias_init", bias_init)) if v is not None}
    unknown |= given - set(init_options(self))
    if unknown:
      common = [n for n in init_options(self) if n.endswith("_init")]
      common = f" and {', '.join(common)}" if common else ""
      raise ValueError(
          f"Cell {self.name!r} got unknown option(s) {sorted(unknown)}; "
          f"valid options: {sorted(self.options) or 'none'}{common}, dtype.")
    opts = {**self.options, **options}
    if self.make_params is not None:
      return self.make_params(key, input_size, hidden_size, dtype, **opts)
    h, g = hidden_size, self.num_gates
    inits = {
        "input": input_init or self.defaults.get("input", "lecun_normal"),
        "recurrent": recurrent_init or self.defaults.get("recurrent", "orthogonal"),
        "bias": bias_init or self.defaults.get("bias", "zeros"),
    }
    k_x, k_h, k_b, k_extra = jax.random.split(key, 4)
    params = {
        "w_x": _blocks(initializers.get_initializer(inits["input"], hidden_size=h),
                       k_x, (input_size, h), g, dtype),
        "b": initializers.get_initializer(inits["bias"], hidden_size=h)(k_b, (g * h,), dtype),
    }
    if self.recurrent:
      params["w_h"] = _blocks(initializers.get_initializer(inits["recurrent"], hidden_size=h),
                              k_h, (h, h), g, dtype)
    if self.init_extra is not None:
      params = self.init_extra(k_extra, params, input_size, hidden_size, **opts)
    return params

  def hidden_size(self, params: Params) -> int:
    """H: the size of ``hidden(carry)`` and of the outputs."""
    if "w_h" in params:
      return params["w_h"].shape[0]
    return self.linear.size(params)


def _blocks(init, key, shape, num, dtype):
  """Concatenates ``num`` independently initialised blocks along the last axis."""
  keys = jax.random.split(key, num)
  return jnp.concatenate([init(k, shape, dtype) for k in keys], axis=-1)


def _zeros_like_h(params, batch_shape):
  h = params["w_h"].shape[0]
  return jnp.zeros((*batch_shape, h), params["w_h"].dtype)


def _split(a, n):
  return jnp.split(a, n, axis=-1)


def matmul_recur(pointwise: Callable, hidden: Callable) -> Callable:
  """The step ``recur`` of a cell given by its ``pointwise`` part: one recurrent matmul
  ``hidden(carry) @ w_h``, then ``pointwise``."""
  def recur(params, carry, xp):
    return pointwise(params, carry, xp, hidden(carry) @ params["w_h"])
  return recur


def _matmul_cell(name, gates, pointwise, carry_fns, **fields) -> Cell:
  """A cell whose step is one recurrent matmul followed by ``pointwise``."""
  return Cell(name=name, gates=gates, recur=matmul_recur(pointwise, carry_fns["hidden"]),
              pointwise=pointwise, **carry_fns, **fields)


# --- Elman RNN and IRNN -----------------------------------------------------------

def _elman(activation):
  def pointwise(params, h, xp, hp):
    h = activation(xp + hp)
    return h, h
  return pointwise


_identity_carry = dict(
    init_carry=_zeros_like_h, hidden=lambda c: c, with_hidden=lambda c, h: h)

RNN = _matmul_cell(
    "rnn", ("h",), _elman(jnp.tanh), _identity_carry,
    hidden_only_in_w_h=True,
    doc="Elman RNN: h_t = tanh(x_t W_x + h_{t-1} W_h + b).")

IRNN = _matmul_cell(
    "irnn", ("h",), _elman(jax.nn.relu), _identity_carry,
    hidden_only_in_w_h=True,
    defaults={"input": "normal:0.001", "recurrent": "identity", "bias": "zeros"},
    doc="IRNN (Le, Jaitly & Hinton 2015): h_t = relu(x_t W_x + h_{t-1} W_h + b), "
        "W_h = I, b = 0, W_x ~ N(0, 0.001^2) at init.")


# --- LSTM and its Greff et al. (2017) variants ------------------------------------

_LSTM_DOC = """LSTM (Hochreiter & Schmidhuber 1997, with forget gate; PyTorch gate order):
    [i, f, g, o] = x_t W_x + h_{t-1} W_h + b        (+ peepholes p_i*c_{t-1}, p_f*c_{t-1})
    i, f = sigmoid(i), sigmoid(f);  g = tanh(g)
    c_t = f * c_{t-1} + i * g
    o = sigmoid(o + p_o * c_t);     h_t = o * tanh(c_t)
Options: forget_bias (added to b_f at init; Jozefowicz et al. 2015 recommend 1),
chrono (T_max of chrono init, Tallec & Ollivier 2018: b_f ~ log U[1, T_max-1], b_i = -b_f),
peepholes (diagonal p_i, p_f, p_o, Gers & Schmidhuber 2000)."""


def _lstm_pointwise(gates, *, coupled=False, input_act=True, output_act=True, fgr=False):
  """Builds the LSTM step after its recurrent matmul (hp = h @ w_h) for a gate layout;
  missing gates are the constant 1."""
  def pointwise(params, carry, xp, hp):
    if fgr:
      c, _, a_prev = carry
    else:
      c, _ = carry
    pre = xp + hp
    if fgr:  # full gate recurrence: previous i, f, o activations feed all gates
      pre_ifo = a_prev @ params["w_a"]
      pre = pre + _scatter_ifo(pre_ifo, gates)
    parts = dict(zip(gates, _split(pre, len(gates))))
    one = jnp.ones_like(c)
    f = jax.nn.sigmoid(parts["f"] + params["p_f"] * c if "p_f" in params else parts["f"]) \
        if "f" in parts else one
    if "i" in parts:
      i = jax.nn.sigmoid(parts["i"] + params["p_i"] * c if "p_i" in params else parts["i"])
    else:
      i = 1.0 - f if coupled else one
    g = jnp.tanh(parts["g"]) if input_act else parts["g"]
    c = f * c + i * g
    o = jax.nn.sigmoid(parts["o"] + params["p_o"] * c if "p_o" in params else parts["o"]) \
        if "o" in parts else one
    h = o * (jnp.tanh(c) if output_act else c)
    if fgr:
      return (c, h, jnp.concatenate([i, f, o], axis=-1)), h
    return (c, h), h
  return pointwise


def _scatter_ifo(pre_ifo, gates):
  """Places the (..., 3H) [i, f, o] contribution into the (..., 4H) gate layout."""
  i, f, o = _split(pre_ifo, 3)
  return jnp.concatenate([{"i": i, "f": f, "g": jnp.zeros_like(i), "o": o}[n] for n in gates],
                         axis=-1)


def _lstm_carry(fgr=False):
  def init_carry(params, batch_shape):
    z = _zeros_like_h(params, batch_shape)
    return (z, z, jnp.concatenate([z, z, z], axis=-1)) if fgr else (z, z)
  def with_hidden(carry, h):
    return (carry[0], h, *carry[2:])
  return dict(init_carry=init_carry, hidden=lambda c: c[1], with_hidden=with_hidden)


def _lstm_init_extra(gates, fgr=False):
  def init_extra(key, params, input_size, hidden_size, *, forget_bias=1.0, chrono=None,
                 peepholes=False):
    h = hidden_size
    b = dict(zip(gates, _split(params["b"], len(gates))))
    if "f" in b:
      if chrono is not None:
        b_f = initializers.chrono_bias(key, h, chrono, params["b"].dtype)
        b["f"] = b["f"] + b_f
        if "i" in b:
          b["i"] = b["i"] - b_f
      else:
        b["f"] = b["f"] + forget_bias
    elif chrono is not None:
      raise ValueError("chrono init needs a forget gate; this LSTM variant has none.")
    params = {**params, "b": jnp.concatenate([b[n] for n in gates])}
    if peepholes:
      for n in ("i", "f", "o"):
        if n in gates:
          params[f"p_{n}"] = jnp.zeros((h,), params["b"].dtype)
    if fgr:
      k = jax.random.fold_in(key, 1)
      params["w_a"] = _blocks(initializers.orthogonal(), k, (3 * h, h), 3, params["b"].dtype)
    return params
  return init_extra


def _lstm_cell(name, gates=("i", "f", "g", "o"), doc="", **flags):
  fgr = flags.get("fgr", False)
  return _matmul_cell(
      name, gates, _lstm_pointwise(gates, **flags), _lstm_carry(fgr),
      init_extra=_lstm_init_extra(gates, fgr),
      options={"forget_bias": 1.0, "chrono": None, "peepholes": False},
      doc=(doc + "\n" if doc else "") + _LSTM_DOC, hidden_only_in_w_h=True)


LSTM = _lstm_cell("lstm")
# Greff et al. 2017, "LSTM: A Search Space Odyssey": one change each.
LSTM_VARIANTS = [
    _lstm_cell("lstm_nig", ("f", "g", "o"), "No input gate (i = 1)."),
    _lstm_cell("lstm_nfg", ("i", "g", "o"), "No forget gate (f = 1)."),
    _lstm_cell("lstm_nog", ("i", "f", "g"), "No output gate (o = 1)."),
    _lstm_cell("lstm_niaf", doc="No input activation (g linear).", input_act=False),
    _lstm_cell("lstm_noaf", doc="No output activation (h = o * c).", output_act=False),
    _lstm_cell("lstm_cifg", ("f", "g", "o"), "Coupled input and forget gate (i = 1 - f).",
               coupled=True),
    _lstm_cell("lstm_fgr", doc="Full gate recurrence: previous i, f, o activations feed "
               "every gate through w_a (3H, 3H).", fgr=True),
]


def layer_norm(x, scale, bias=None, eps=1e-5):
  """(x - mean) / sqrt(var + eps) * scale (+ bias), statistics over the last axis."""
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
  y = (x - mean) * jax.lax.rsqrt(var + eps) * scale
  return y if bias is None else y + bias


def _lstm_ln_pointwise(params, carry, xp, hp):
  c, _ = carry
  pre = layer_norm(xp, params["ln_x"]) + layer_norm(hp, params["ln_h"]) + params["b"]
  i, f, g, o = _split(pre, 4)
  c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
  h = jax.nn.sigmoid(o) * jnp.tanh(layer_norm(c, params["ln_c"], params["ln_c_bias"]))
  return (c, h), h


def _lstm_ln_init_extra(key, params, input_size, hidden_size, **options):
  params = _lstm_init_extra(("i", "f", "g", "o"))(key, params, input_size, hidden_size,
                                                  **options)
  dtype, g = params["b"].dtype, 4 * hidden_size
  return {**params, "ln_x": jnp.ones((g,), dtype), "ln_h": jnp.ones((g,), dtype),
          "ln_c": jnp.ones((hidden_size,), dtype), "ln_c_bias": jnp.zeros((hidden_size,), dtype)}


LSTM_LN = _matmul_cell(
    "lstm_ln", ("i", "f", "g", "o"), _lstm_ln_pointwise, _lstm_carry(),
    init_extra=_lstm_ln_init_extra, options={"forget_bias": 1.0, "chrono": None},
    project_fn=lambda params, x: x @ params["w_x"], hidden_only_in_w_h=True,
    doc="""Layer-normalised LSTM (Ba, Kiros & Hinton 2016, "Layer Normalization", sec. 3.1):
    [i, f, g, o] = LN(x_t W_x; ln_x) + LN(h_{t-1} W_h; ln_h) + b
    c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
    h_t = sigmoid(o) * tanh(LN(c_t; ln_c, ln_c_bias))
LN(a; s, beta) = (a - mean(a)) / sqrt(var(a) + 1e-5) * s + beta, the statistics taken over the
4H (or H) units of one example at one step. Gains ln_x, ln_h (4H,), ln_c (H,) start at 1,
ln_c_bias at 0; b holds the bias (b_f += forget_bias, or chrono). Options: forget_bias, chrono.""")


# --- GRU (PyTorch / cuDNN convention) and MGU ------------------------------------

def _gru_pointwise(params, h, xp, hp):
  x_r, x_z, x_n = _split(xp, 3)
  h_r, h_z, h_n = _split(hp, 3)
  r = jax.nn.sigmoid(x_r + h_r)
  z = jax.nn.sigmoid(x_z + h_z)
  n = jnp.tanh(x_n + r * (h_n + params["b_hn"]))
  h = (1.0 - z) * n + z * h
  return h, h


def _gru_init_extra(key, params, input_size, hidden_size):
  return {**params, "b_hn": jnp.zeros((hidden_size,), params["b"].dtype)}


GRU = _matmul_cell(
    "gru", ("r", "z", "n"), _gru_pointwise, _identity_carry,
    init_extra=_gru_init_extra,
    doc="""GRU, PyTorch/cuDNN convention (reset gate applied after the recurrent matmul):
    r = sigmoid(x W_xr + h W_hr + b_r);  z = sigmoid(x W_xz + h W_hz + b_z)
    n = tanh(x W_xn + b_n + r * (h W_hn + b_hn))
    h_t = (1 - z) * n + z * h_{t-1}""")


def _mgu_recur(params, h, xp):
  h_size = h.shape[-1]
  x_f, x_n = _split(xp, 2)
  f = jax.nn.sigmoid(x_f + h @ params["w_h"][:, :h_size])
  n = jnp.tanh(x_n + (f * h) @ params["w_h"][:, h_size:])
  h = (1.0 - f) * h + f * n
  return h, h


MGU = Cell(
    name="mgu", gates=("f", "n"), recur=_mgu_recur, **_identity_carry,
    doc="""Minimal gated unit (Zhou et al. 2016):
    f = sigmoid(x W_xf + h W_hf + b_f);  n = tanh(x W_xn + (f * h) W_hn + b_n)
    h_t = (1 - f) * h_{t-1} + f * n""")


# --- linear recurrences: minGRU, minLSTM (Feng et al. 2024), LRU (Orvieto et al. 2023) ---

def _linear_cell(name, gates, form, doc, **fields) -> Cell:
  """A cell whose step is its ``LinearForm`` applied to one step."""
  def recur(params, carry, xp):
    a, b = form.coefficients(params, xp)
    s = jax.tree.map(jnp.add, form.mul(a, form.to_state(carry)), b)
    return form.to_carry(s), form.readout(params, s, xp)

  def init_carry(params, batch_shape):
    return jnp.zeros((*batch_shape, form.size(params)), jax.tree.leaves(params)[0].dtype)

  return Cell(name=name, gates=gates, recur=recur, init_carry=init_carry,
              hidden=lambda c: c, with_hidden=lambda c, h: h, recurrent=False, linear=form,
              doc=doc, **fields)


def _mingru_coefficients(params, xp):
  x_z, x_h = _split(xp, 2)
  z = jax.nn.sigmoid(x_z)
  return 1.0 - z, z * x_h


def _minlstm_coefficients(params, xp):
  x_f, x_i, x_h = _split(xp, 3)
  # f / (f + i) and i / (f + i) with f = sigmoid(x_f), i = sigmoid(x_i), in log space:
  # log f = -softplus(-x_f); the normalised pair is a softmax over (log f, log i).
  log_f, log_i = -jax.nn.softplus(-x_f), -jax.nn.softplus(-x_i)
  f = jax.nn.sigmoid(log_f - log_i)
  return f, (1.0 - f) * x_h


MINGRU = _linear_cell(
    "mingru", ("z", "h"),
    LinearForm(_mingru_coefficients, readout=lambda params, s, xp: s,
               size=lambda params: params["b"].shape[-1] // 2),
    """minGRU (Feng et al. 2024, "Were RNNs All We Needed?"): the GRU with gates of x only.
    z = sigmoid(x W_xz + b_z);  h~ = x W_xh + b_h
    h_t = (1 - z) * h_{t-1} + z * h~
    Parameters w_x (D, 2H), b (2H,); no w_h. Linear in h: trained with an associative
    scan over time (rnnlab.engine, parallel=True) or one elementwise pass.""")

MINLSTM = _linear_cell(
    "minlstm", ("f", "i", "h"),
    LinearForm(_minlstm_coefficients, readout=lambda params, s, xp: s,
               size=lambda params: params["b"].shape[-1] // 3),
    """minLSTM (Feng et al. 2024), with the normalised (time-independent scale) gates:
    f = sigmoid(x W_xf + b_f);  i = sigmoid(x W_xi + b_i);  h~ = x W_xh + b_h
    f' = f / (f + i);  i' = i / (f + i)     (computed in log space: f' = sigmoid(log f - log i))
    h_t = f' * h_{t-1} + i' * h~
    Parameters w_x (D, 3H), b (3H,); no w_h.""")


def _lru_state(carry):
  """[Re x, Im x] -> (Re x, Im x)."""
  n = carry.shape[-1] // 2
  return carry[..., :n], carry[..., n:]


def _lru_carry(s):
  return jnp.concatenate(s, axis=-1)


def _complex_mul(a, s):
  """(a_re + i a_im)(s_re + i s_im) on pairs of real arrays."""
  (a_re, a_im), (s_re, s_im) = a, s
  return a_re * s_re - a_im * s_im, a_re * s_im + a_im * s_re


def _complex_one(a):
  return jnp.ones_like(a[0]), jnp.zeros_like(a[1])


def _lru_lambda(params):
  """(Re lambda, Im lambda), lambda = exp(-exp(nu_log) + i exp(theta_log))."""
  modulus, phase = jnp.exp(-jnp.exp(params["nu_log"])), jnp.exp(params["theta_log"])
  return modulus * jnp.cos(phase), modulus * jnp.sin(phase)


def _lru_project(params, x):
  """[Re(u B), Im(u B)] (and u itself when there is a skip D): (..., 2N [+ D])."""
  xb = x @ jnp.concatenate([params["B_re"], params["B_im"]], axis=-1)  # one matmul
  return jnp.concatenate([xb, x], axis=-1) if "D" in params else xb


def _lru_coefficients(params, xp):
  n = params["nu_log"].shape[-1]
  gamma = jnp.exp(params["gamma_log"])
  return _lru_lambda(params), (gamma * xp[..., :n], gamma * xp[..., n:2 * n])


def _lru_readout(params, s, xp):
  """Re(x C) + D u = [Re x, Im x] @ [C_re; -C_im] (+ D u)."""
  n = params["nu_log"].shape[-1]
  y = _lru_carry(s) @ jnp.concatenate([params["C_re"], -params["C_im"]], axis=0)
  if "D" in params:
    y = y + params["D"] * xp[..., 2 * n:]
  return y


def _lru_params(key, input_size, hidden_size, dtype, *, r_min, r_max, max_phase):
  if hidden_size % 2:
    raise ValueError(f"lru needs an even hidden_size (H/2 complex eigenvalues, their real "
                     f"and imaginary parts side by side in the carry); got {hidden_size}.")
  if not 0.0 <= r_min < r_max <= 1.0:
    raise ValueError(f"lru needs 0 <= r_min < r_max <= 1 (the eigenvalues' moduli); got "
                     f"r_min={r_min}, r_max={r_max}.")
  if not 0.0 < max_phase <= 2 * jnp.pi + 1e-6:
    raise ValueError(f"lru needs 0 < max_phase <= 2 pi; got {max_phase}.")
  n = hidden_size // 2
  k_u1, k_u2, k_b, k_c, k_d = jax.random.split(key, 5)
  u1 = jax.random.uniform(k_u1, (n,))
  u2 = jax.random.uniform(k_u2, (n,))
  # |lambda| uniform on the ring r_min <= r <= r_max (in area), phase uniform in [0, max_phase].
  nu_log = jnp.log(-0.5 * jnp.log(u1 * (r_max ** 2 - r_min ** 2) + r_min ** 2))
  theta_log = jnp.log(max_phase * u2)
  modulus = jnp.exp(-jnp.exp(nu_log))
  gamma_log = jnp.log(jnp.sqrt(1.0 - modulus ** 2))
  b = jax.random.normal(k_b, (2, input_size, n)) / jnp.sqrt(2.0 * input_size)
  c = jax.random.normal(k_c, (2, n, hidden_size)) / jnp.sqrt(float(n))
  params = {"nu_log": nu_log, "theta_log": theta_log, "gamma_log": gamma_log,
            "B_re": b[0], "B_im": b[1], "C_re": c[0], "C_im": c[1]}
  if input_size == hidden_size:
    params["D"] = jax.random.normal(k_d, (hidden_size,))
  return {k: v.astype(dtype) for k, v in params.items()}


LRU = _linear_cell(
    "lru", ("re", "im"),
    LinearForm(_lru_coefficients, readout=_lru_readout,
               size=lambda params: params["C_re"].shape[-1], to_state=_lru_state,
               to_carry=_lru_carry, mul=_complex_mul, identity=_complex_one),
    """Linear Recurrent Unit (Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks
    for Long Sequences"), N = H/2 complex eigenvalues:
    x_t = diag(lambda) x_{t-1} + gamma * (u_t B)        x complex (N,), B (D, N) complex
    y_t = Re(x_t C) + D * u_t                            C (N, H) complex; D (H,) only if D = H
    lambda = exp(-exp(nu_log) + i exp(theta_log)),  gamma = exp(gamma_log) = sqrt(1 - |lambda|^2)
    at init (the normalisation that keeps x's scale independent of |lambda|).
    Ring initialisation: |lambda| uniform in area on r_min <= r <= r_max, phase uniform on
    [0, max_phase] (cell options r_min, r_max, max_phase; defaults 0.9, 0.999, 2 pi).
    The carry is [Re x, Im x] (H real numbers); hidden(carry) is that state, the outputs are
    y_t. Parameters: nu_log, theta_log, gamma_log (N,), B_re, B_im (D, N), C_re, C_im (N, H),
    D (H,).""",
    options={"r_min": 0.9, "r_max": 0.999, "max_phase": 6.283185307179586},
    make_params=_lru_params, project_fn=_lru_project)

LINEAR = (MINGRU, MINLSTM, LRU)


# --- registry ----------------------------------------------------------------------

_REGISTRY: dict[str, Cell] = {}


# Every keyword option some cell's ``init`` takes: its type and what it does. Configs
# (``config.model.cell_options``, built by ``options_config``) and checks read this table.
INIT_OPTIONS: dict[str, tuple[type, str]] = {
    "forget_bias": (float, "LSTMs: added to b_f at init (default 1)"),
    "chrono": (float, "LSTMs: chrono init's T_max (Tallec & Ollivier 2018)"),
    "peepholes": (bool, "LSTMs: diagonal peepholes (default False)"),
    "input_init": (str, "w_x initialiser, e.g. 'normal:0.001'"),
    "recurrent_init": (str, "w_h initialiser, e.g. 'spectral:0.95'"),
    "bias_init": (str, "b initialiser, e.g. 'zeros'"),
    "r_min": (float, "lru: smallest eigenvalue modulus at init (default 0.9)"),
    "r_max": (float, "lru: largest eigenvalue modulus at init (default 0.999)"),
    "max_phase": (float, "lru: eigenvalue phases uniform in [0, max_phase] (default 2 pi)"),
}


def register(cell: Cell) -> Cell:
  """Adds a cell to the registry (a name may be registered once).

  Its options must be listed in ``INIT_OPTIONS`` (so that configs can set them).
  """
  if cell.name in _REGISTRY:
    raise ValueError(f"Cell {cell.name!r} is already registered.")
  unlisted = sorted(set(cell.options) - set(INIT_OPTIONS))
  if unlisted:
    raise ValueError(f"Cell {cell.name!r} has options {unlisted} that cells.INIT_OPTIONS does "
                     "not list; add them there (type and one line).")
  _REGISTRY[cell.name] = cell
  return cell


for _c in (RNN, IRNN, LSTM, *LSTM_VARIANTS, LSTM_LN, GRU, MGU, *LINEAR):
  register(_c)


def names() -> list[str]:
  return sorted(_REGISTRY)


def linear_names() -> list[str]:
  """The cells with a parallel form over time (a ``LinearForm``)."""
  return sorted(n for n, c in _REGISTRY.items() if c.linear is not None)


def get_cell(name: str | Cell) -> Cell:
  """The registered cell called ``name``; an unknown name lists the valid ones."""
  if isinstance(name, Cell):
    return name
  try:
    return _REGISTRY[name]
  except KeyError:
    raise ValueError(f"Unknown cell {name!r}. Valid cells: {', '.join(names())}.") from None


def init_options(name: str | Cell) -> list[str]:
  """Keyword options that ``get_cell(name).init`` accepts."""
  cell = get_cell(name)
  common = [p for p in inspect.signature(Cell.init).parameters if p.endswith("_init")
            and (cell.recurrent or p != "recurrent_init")]
  return sorted(cell.options) + (common if cell.takes_initializers else [])


def options_config() -> ml_collections.ConfigDict:
  """``config.model.cell_options``: every ``INIT_OPTIONS`` entry as a None placeholder.

  None means the cell's own default; an option the chosen cell does not take
  is refused by ``check_options`` when it is set.
  """
  c = ml_collections.ConfigDict()
  for name, (kind, _) in INIT_OPTIONS.items():
    c[name] = ml_collections.config_dict.placeholder(kind)
  return c


def set_options(options) -> dict:
  """The options that are set (a mapping or ConfigDict; None entries mean the default)."""
  return {k: v for k, v in dict(options or {}).items() if v is not None}


def check_options(name: str, options, field: str = "model.cell_options") -> dict:
  """The set ``options`` of cell ``name``; ValueError for one it does not take or a bad
  initialiser name, before anything is initialised."""
  opts = set_options(options)
  valid = init_options(name)
  wrong = sorted(set(opts) - set(valid))
  if wrong:
    raise ValueError(f"{field} {wrong} do not apply to cell {name!r}; it takes "
                     f"{', '.join(valid)}. Leave the others None.")
  for option in valid:
    if option.endswith("_init") and option in opts:
      initializers.get_initializer(opts[option])
  return opts

"""Cells: every registered step against the equations written out in NumPy; gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from rnnlab import cells

D, H = 3, 4
BATCH = (2,)


def sig(a):
  return 1.0 / (1.0 + np.exp(-a))


def elman(act):
  def step(p, h, x):
    h = act(x @ p["w_x"] + h @ p["w_h"] + p["b"])
    return h, h
  return step


def lstm(gates="ifgo", coupled=False, g_act=np.tanh, c_act=np.tanh, fgr=False):
  """Greff et al. 2017 variants: a missing gate is 1 (cifg: i = 1 - f)."""
  def step(p, carry, x):
    c, h = carry[0], carry[1]
    pre = dict(zip(gates, np.split(x @ p["w_x"] + h @ p["w_h"] + p["b"], len(gates), -1)))
    if fgr:  # previous [i, f, o] activations feed i, f and o through w_a
      for n, a in zip("ifo", np.split(carry[2] @ p["w_a"], 3, -1)):
        pre[n] = pre[n] + a
    peep = lambda n, cc: p[f"p_{n}"] * cc if f"p_{n}" in p else 0.0
    f = sig(pre["f"] + peep("f", c)) if "f" in pre else 1.0
    i = sig(pre["i"] + peep("i", c)) if "i" in pre else (1.0 - f if coupled else 1.0)
    c = f * c + i * g_act(pre["g"])
    o = sig(pre["o"] + peep("o", c)) if "o" in pre else 1.0
    h = o * c_act(c)
    return ((c, h, np.concatenate([i, f, o], -1)) if fgr else (c, h)), h
  return step


def gru(p, h, x):
  """PyTorch's nn.GRU equations."""
  xr, xz, xn = np.split(x @ p["w_x"] + p["b"], 3, -1)
  hr, hz, hn = np.split(h @ p["w_h"], 3, -1)
  r, z = sig(xr + hr), sig(xz + hz)
  n = np.tanh(xn + r * (hn + p["b_hn"]))
  h = (1 - z) * n + z * h
  return h, h


def mgu(p, h, x):
  """Zhou et al. 2016."""
  w_f, w_n = np.split(p["w_h"], 2, -1)
  xf, xn = np.split(x @ p["w_x"] + p["b"], 2, -1)
  f = sig(xf + h @ w_f)
  n = np.tanh(xn + (f * h) @ w_n)
  h = (1 - f) * h + f * n
  return h, h


def layer_norm(a, s, beta=0.0):
  return (a - a.mean(-1, keepdims=True)) / np.sqrt(a.var(-1, keepdims=True) + 1e-5) * s + beta


def lstm_ln(p, carry, x):
  """Ba et al. 2016, sec. 3.1: LN of each of the two projections and of c_t."""
  c, h = carry
  pre = layer_norm(x @ p["w_x"], p["ln_x"]) + layer_norm(h @ p["w_h"], p["ln_h"]) + p["b"]
  i, f, g, o = np.split(pre, 4, -1)
  c = sig(f) * c + sig(i) * np.tanh(g)
  h = sig(o) * np.tanh(layer_norm(c, p["ln_c"], p["ln_c_bias"]))
  return (c, h), h


REFERENCES = {
    "rnn": elman(np.tanh),
    "irnn": elman(lambda a: np.maximum(a, 0.0)),
    "lstm": lstm(),
    "lstm_nig": lstm("fgo"),
    "lstm_nfg": lstm("igo"),
    "lstm_nog": lstm("ifg"),
    "lstm_niaf": lstm(g_act=lambda a: a),
    "lstm_noaf": lstm(c_act=lambda a: a),
    "lstm_cifg": lstm("fgo", coupled=True),
    "lstm_fgr": lstm(fgr=True),
    "lstm_ln": lstm_ln,
    "gru": gru,
    "mgu": mgu,
}


def random_case(name, seed=0, dtype=np.float64):
  """Params (peepholes on where offered) with every entry random, a random carry and x."""
  cell = cells.get_cell(name)
  opts = {"peepholes": True} if "peepholes" in cell.options else {}
  # Shapes only: running init would compile its ops once per dtype for nothing.
  params = jax.eval_shape(lambda k: cell.init(k, D, H, **opts), jax.random.key(seed))
  rng = np.random.default_rng(seed)
  rand = lambda a: rng.normal(scale=0.7, size=np.shape(a)).astype(dtype)
  params = jax.tree.map(rand, params)
  carry = jax.tree.map(rand, cell.init_carry(params, BATCH))
  return cell, params, carry, rand(np.zeros((*BATCH, D)))


# The linear recurrences (lru, mingru, minlstm) have their equations, shapes and both of
# their forms tested in test_linear_cells.py; here: every cell that steps with w_h.
CLASSIC = [n for n in cells.names() if n not in cells.linear_names()]


def test_every_registered_cell_has_a_reference():
  assert sorted(REFERENCES) == CLASSIC
  assert cells.linear_names() == ["lru", "mingru", "minlstm"]


@pytest.mark.parametrize("name", CLASSIC)
def test_step_matches_numpy_equations(name, x64):
  cell, params, carry, x = random_case(name)
  assert {"p_i", "p_f", "p_o"} & set(params) or "peepholes" not in cell.options
  new_carry, y = cell.step(params, carry, x)
  ref_carry, ref_y = REFERENCES[name](params, carry, x)
  np.testing.assert_allclose(y, ref_y, rtol=1e-12, atol=1e-12)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12),
               new_carry, ref_carry)
  np.testing.assert_array_equal(cell.hidden(new_carry), y)


def test_layer_norm_lstm_normalises_each_example_at_each_step(x64):
  """The gates see the projections' per-example statistics: scaling W_x, W_h or the
  inputs of one example leaves every output unchanged, which no plain LSTM does."""
  cell, params, carry, x = random_case("lstm_ln", seed=3)
  ref = cell.step(params, carry, x)
  scaled = {**params, "w_x": 7.0 * params["w_x"], "w_h": 0.2 * params["w_h"]}
  # (up to LN's eps = 1e-5 beside the variance)
  np.testing.assert_allclose(cell.step(scaled, carry, x)[1], ref[1], atol=1e-4)
  one = x.copy()
  one[0] *= 30.0  # example 0 only: statistics are per example, not per batch
  y = np.asarray(cell.step(params, carry, one)[1])
  np.testing.assert_allclose(y, ref[1], atol=1e-4)
  plain, p_plain, _, _ = random_case("lstm", seed=3)
  moved = plain.step(p_plain, carry, one)[1][0] - plain.step(p_plain, carry, x)[1][0]
  assert np.abs(moved).max() > 0.05


@pytest.mark.parametrize("name", cells.names())
def test_step_gradients(name, x64):
  cell, params, carry, x = random_case(name, seed=1)
  check_grads(cell.step, (params, carry, x), order=1, modes=["rev"])


@pytest.mark.parametrize("name", cells.names())
def test_hidden_and_with_hidden_are_inverse(name):
  cell, params, carry, _ = random_case(name, seed=2, dtype=np.float32)
  h = np.full((*BATCH, H), 3.0, np.float32)
  replaced = cell.with_hidden(carry, h)
  np.testing.assert_array_equal(cell.hidden(replaced), h)
  jax.tree.map(np.testing.assert_array_equal, cell.with_hidden(replaced, cell.hidden(carry)),
               carry)


@pytest.mark.parametrize("name", CLASSIC)
def test_init_shapes_and_dtype(name):
  cell = cells.get_cell(name)
  params = jax.eval_shape(lambda k: cell.init(k, D, H, dtype=jnp.bfloat16), jax.random.key(0))
  g = cell.num_gates
  assert params["w_x"].shape == (D, g * H) and params["w_h"].shape == (H, g * H)
  assert params["b"].shape == (g * H,) and cell.hidden_size(params) == H
  assert all(a.dtype == jnp.bfloat16 for a in jax.tree.leaves(params))
  carry = jax.eval_shape(lambda p: cell.init_carry(p, (2, 5)), params)
  assert jax.eval_shape(cell.hidden, carry).shape == (2, 5, H)
  assert all(a.shape[:2] == (2, 5) and a.dtype == jnp.bfloat16 for a in jax.tree.leaves(carry))


def test_init_is_deterministic():
  a = cells.get_cell("lstm").init(jax.random.key(3), D, H, chrono=10)
  b = cells.get_cell("lstm").init(jax.random.key(3), D, H, chrono=10)
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_unknown_cell_lists_the_valid_ones():
  with pytest.raises(ValueError, match="Unknown cell 'lstn'. Valid cells: gru, irnn, lru, lstm"):
    cells.get_cell("lstn")


def test_unknown_option_lists_the_valid_ones():
  with pytest.raises(ValueError, match=r"unknown option\(s\) \['forget_bais'\]; valid options: "
                     r"\['chrono', 'forget_bias', 'peepholes'\]"):
    cells.get_cell("lstm").init(jax.random.key(0), D, H, forget_bais=1.0)
  with pytest.raises(ValueError, match="valid options: none"):
    cells.get_cell("gru").init(jax.random.key(0), D, H, peepholes=True)


@pytest.mark.parametrize("size", [0, -3, 2.5, True])
def test_non_positive_sizes_are_rejected(size):
  with pytest.raises(ValueError, match="must be an integer >= 1"):
    cells.get_cell("rnn").init(jax.random.key(0), size, H)
  with pytest.raises(ValueError, match="hidden_size must be an integer >= 1"):
    cells.get_cell("rnn").init(jax.random.key(0), D, size)


def test_numpy_integer_sizes_are_accepted():
  params = cells.get_cell("rnn").init(jax.random.key(0), np.int64(D), np.int32(H))
  assert params["w_h"].shape == (H, H)


def test_chrono_without_forget_gate_is_rejected():
  with pytest.raises(ValueError, match="needs a forget gate"):
    cells.get_cell("lstm_nfg").init(jax.random.key(0), D, H, chrono=10)


def test_registering_a_name_twice_fails():
  with pytest.raises(ValueError, match="already registered"):
    cells.register(cells.get_cell("gru"))


def test_init_options():
  assert cells.init_options("lstm") == ["chrono", "forget_bias", "peepholes", "input_init",
                                        "recurrent_init", "bias_init"]
  assert cells.init_options("gru") == ["input_init", "recurrent_init", "bias_init"]

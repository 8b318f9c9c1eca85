"""Parity with flax.linen's cells and nn.RNN where the conventions agree, and the layer.

Flax's LSTMCell / OptimizedLSTMCell compute the same LSTM as rnnlab's ``lstm``
(gate order aside; no peepholes, no built-in forget bias). Flax's GRUCell applies
the reset gate after the recurrent matmul, n = tanh(W_in x + b_in + r * (W_hn h +
b_hn)), which is PyTorch's convention and rnnlab's ``gru``: they agree too.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlab import cells, engine, layers

B, T, D, H = 3, 5, 3, 4
TOL = dict(rtol=1e-5, atol=1e-6)
KEY = jax.random.key(0)
cat = lambda arrays: jnp.concatenate(arrays, axis=-1)


def lstm_from_flax(p):
  """Flax names dense layers i{gate} (input, no bias) and h{gate} (recurrent, bias)."""
  return {"w_x": cat([p[f"i{g}"]["kernel"] for g in "ifgo"]),
          "w_h": cat([p[f"h{g}"]["kernel"] for g in "ifgo"]),
          "b": cat([p[f"h{g}"]["bias"] for g in "ifgo"])}


def gru_from_flax(p):
  """Input denses carry the biases; only the recurrent n dense has one (b_hn)."""
  return {"w_x": cat([p[f"i{g}"]["kernel"] for g in "rzn"]),
          "w_h": cat([p[f"h{g}"]["kernel"] for g in "rzn"]),
          "b": cat([p[f"i{g}"]["bias"] for g in "rzn"]),
          "b_hn": p["hn"]["bias"]}


def randomized(variables, seed=0):
  """Flax initialises biases to zero; random values make every mapping visible."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda a: rng.normal(scale=0.5, size=a.shape).astype(np.float32),
                      variables)


def random_inputs(seed=1):
  return np.random.default_rng(seed).normal(size=(B, T, D)).astype(np.float32)


# (flax cell, rnnlab cell, parameter mapping, rnnlab carry from flax carry)
CELLS = {
    "LSTMCell": (nn.LSTMCell, "lstm", lstm_from_flax),
    "OptimizedLSTMCell": (nn.OptimizedLSTMCell, "lstm", lstm_from_flax),
    "GRUCell": (nn.GRUCell, "gru", gru_from_flax),
}


@pytest.mark.parametrize("flax_name", sorted(CELLS))
def test_cell_step_matches_flax(flax_name):
  flax_cls, name, mapping = CELLS[flax_name]
  module, x = flax_cls(H), random_inputs()[:, 0]
  carry = randomized(jax.eval_shape(lambda k: module.initialize_carry(k, x.shape), KEY), seed=2)
  variables = randomized(jax.eval_shape(module.init, KEY, carry, x))
  flax_carry, flax_y = module.apply(variables, carry, x)
  # Both keep LSTM state as (c, h), so the carries map one to one.
  my_carry, my_y = cells.get_cell(name).step(mapping(variables["params"]), carry, x)
  np.testing.assert_allclose(my_y, flax_y, **TOL)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), my_carry, flax_carry)


@pytest.mark.parametrize("reverse", [False, True])
def test_engine_matches_flax_rnn_with_seq_lengths(reverse):
  rnn = nn.RNN(nn.LSTMCell(H), return_carry=True, reverse=reverse, keep_order=True)
  xs, lengths = random_inputs(), np.array([5, 2, 4])
  variables = randomized(jax.eval_shape(rnn.init, KEY, xs))
  flax_carry, flax_ys = rnn.apply(variables, xs, seq_lengths=lengths)
  params = lstm_from_flax(variables["params"]["cell"])
  carry, ys = engine.scan("lstm", params, xs, lengths=lengths, reverse=reverse)
  valid = np.asarray(engine.length_mask(lengths, T))
  # Flax leaves padded outputs unspecified (not zeroed); compare the valid steps.
  np.testing.assert_allclose(np.asarray(ys)[valid], np.asarray(flax_ys)[valid], **TOL)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), carry, flax_carry)


def test_recurrent_layer_is_the_engine(eager):
  model = layers.Recurrent("gru", H, num_layers=2, bidirectional=True, residual=True)
  xs, lengths = random_inputs(), np.array([5, 2, 4])
  shapes = jax.eval_shape(lambda: model.init(KEY, xs, lengths=lengths))
  stack = engine.make_stack("gru", H, 2, bidirectional=True, residual=True)
  expected = jax.eval_shape(lambda: engine.init_stack(KEY, stack, D))
  assert jax.tree.structure(shapes["params"]["layers"]) == jax.tree.structure(expected)
  params = randomized(expected)
  finals, ys, last = model.apply({"params": {"layers": params}}, xs, lengths=lengths)
  ref_finals, ref_ys = engine.apply_stack(stack, params, xs, lengths=lengths)
  np.testing.assert_array_equal(ys, ref_ys)
  np.testing.assert_array_equal(last, engine.last_hidden(stack, ref_finals))


def test_recurrent_layer_passes_cell_options_to_init(eager):
  # Deterministic initialisers only, so the expected values are known exactly.
  options = {"forget_bias": 2.0, "recurrent_init": "identity", "input_init": "zeros"}
  model = layers.Recurrent("lstm", H, cell_options=options)
  params = model.init(KEY, random_inputs()[:1])["params"]["layers"][0]["fwd"]
  np.testing.assert_array_equal(np.split(params["b"], 4)[1], np.full(H, 2.0))
  np.testing.assert_array_equal(params["w_h"], np.tile(np.eye(H), 4))
  assert not params["w_x"].any()

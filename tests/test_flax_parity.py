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
  shapes = jax.eval_shape(lambda: model.init(KEY, xs, lengths=lengths))["params"]
  stack = engine.make_stack("gru", H, 2, bidirectional=True, residual=True)
  expected = jax.eval_shape(lambda: engine.init_stack(KEY, stack, D))
  assert sorted(shapes) == ["layers_0", "layers_1"]  # one collection per layer and direction
  assert jax.tree.structure(layers.engine_params(shapes)) == jax.tree.structure(expected)
  params = randomized(expected)
  variables = {"params": {f"layers_{i}": p for i, p in enumerate(params)}}
  finals, ys, last = model.apply(variables, xs, lengths=lengths)
  ref_finals, ref_ys = engine.apply_stack(stack, params, xs, lengths=lengths)
  np.testing.assert_array_equal(ys, ref_ys)
  np.testing.assert_array_equal(last, engine.last_hidden(stack, ref_finals))
  carry, ys_pair = model.apply(variables, xs, lengths=lengths, return_carry=True)  # as nn.RNN
  np.testing.assert_array_equal(ys_pair, ref_ys)
  jax.tree.map(np.testing.assert_array_equal, carry, ref_finals)


def test_recurrent_layer_returns_carry_and_outputs_like_nn_rnn():
  """Same weights, same (carry, outputs) as flax.linen.RNN(GRUCell, return_carry=True)."""
  xs, lengths = random_inputs(), np.array([5, 2, 4])
  flax_rnn = nn.RNN(nn.GRUCell(H), return_carry=True)
  flax_vars = randomized(flax_rnn.init(KEY, xs))
  flax_carry, flax_ys = flax_rnn.apply(flax_vars, xs, seq_lengths=lengths)
  ours = layers.Recurrent("gru", H, return_carry=True)
  params = {"layers_0": {"fwd": gru_from_flax(flax_vars["params"]["cell"])}}
  carry, ys = ours.apply({"params": params}, xs, lengths=lengths)
  valid = np.arange(T)[None] < lengths[:, None]
  np.testing.assert_allclose(np.asarray(ys)[valid], np.asarray(flax_ys)[valid], **TOL)
  np.testing.assert_allclose(carry[0]["fwd"], flax_carry, **TOL)


def test_recurrent_layer_passes_cell_options_to_init(eager):
  # Deterministic initialisers only, so the expected values are known exactly.
  options = {"forget_bias": 2.0, "recurrent_init": "identity", "input_init": "zeros"}
  model = layers.Recurrent("lstm", H, cell_options=options)
  params = model.init(KEY, random_inputs()[:1])["params"]["layers_0"]["fwd"]
  np.testing.assert_array_equal(np.split(params["b"], 4)[1], np.full(H, 2.0))
  np.testing.assert_array_equal(params["w_h"], np.tile(np.eye(H), 4))
  assert not params["w_x"].any()


def test_dtypes_follow_flax_layers():
  xs = random_inputs()
  low = layers.Recurrent("lstm", H, param_dtype=jnp.bfloat16)  # bf16 weights, f32 inputs
  variables = low.init(KEY, xs)
  assert jax.tree.leaves(variables)[0].dtype == jnp.bfloat16
  _, ys, last = low.apply(variables, xs)
  assert ys.dtype == jnp.float32 and last.dtype == jnp.float32  # promoted, as Flax does
  _, ys16, _ = layers.Recurrent("lstm", H, param_dtype=jnp.bfloat16, dtype=jnp.bfloat16).apply(
      variables, xs)
  assert ys16.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(ys16, np.float32), ys, atol=0.05)


def test_the_engine_names_mixed_dtypes_and_what_to_cast():
  params = engine.init_stack(KEY, engine.make_stack("gru", H), D, jnp.bfloat16)[0]["fwd"]
  with pytest.raises(ValueError, match="inputs float32, parameters bfloat16 and carry "
                     "bfloat16.*Cast the inputs"):
    engine.scan("gru", params, jnp.asarray(random_inputs()))


def test_a_cell_object_is_accepted_and_registered_once(monkeypatch):
  import dataclasses  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(cells, "_REGISTRY", dict(cells._REGISTRY))  # the test's cell leaves with it
  mine = dataclasses.replace(cells.get_cell("gru"), name="gru_test_copy")
  xs = random_inputs()
  variables = layers.Recurrent(mine, H).init(KEY, xs)
  _, ys, _ = layers.Recurrent(mine, H).apply(variables, xs)
  assert ys.shape == (B, T, H) and "gru_test_copy" in cells.names()
  with pytest.raises(ValueError, match="Another cell is registered as 'gru'"):
    layers.Recurrent(dataclasses.replace(mine, name="gru"), H).init(KEY, xs)


def test_nnx_module_is_the_same_engine_and_trains():
  from flax import nnx  # pylint: disable=g-import-not-at-top
  xs, lengths = jnp.asarray(random_inputs()), jnp.array([5, 2, 4])
  model = layers.RecurrentNNX("lstm", D, H, num_layers=2, bidirectional=True,
                              rngs=nnx.Rngs(0))
  state = nnx.state(model, nnx.Param)
  assert sorted(state) == ["layers_0", "layers_1"] and sorted(state["layers_0"]) == ["bwd", "fwd"]
  finals, ys, last = model(xs, lengths=lengths)
  ref_finals, ref_ys = engine.apply_stack(model.stack, model.engine_params(), xs,
                                          lengths=lengths)
  np.testing.assert_array_equal(ys, ref_ys)
  np.testing.assert_array_equal(last, engine.last_hidden(model.stack, ref_finals))
  assert len(model(xs, return_carry=True)) == 2

  @nnx.jit
  def step(model, xs):
    loss, grads = nnx.value_and_grad(lambda m: jnp.mean(m(xs)[2] ** 2))(model)
    nnx.update(model, jax.tree.map(lambda p, g: p - 0.1 * g, nnx.state(model, nnx.Param),
                                   grads))
    return loss

  first = step(model, xs)
  for _ in range(5):
    loss = step(model, xs)
  assert loss < first

"""The cuDNN path of the plain LSTM (``engine.scan(cudnn=True)`` on a CUDA GPU).

Without a GPU the cuDNN kernel cannot run here, so the code around it (the weight packing,
reverse within lengths, zero outputs on padding, the carries) runs over
``jax.experimental.rnn.lstm_ref``, JAX's reference for the same call and the same flat
weight layout, and must give the scan path's numbers. benchmarks/gpu_check.py checks the
kernel itself on a GPU."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import rnn as jax_rnn

from rnnlab import engine
from test_engine import random_params

B, T, D = 3, 6, 4
LENGTHS = np.array([6, 2, 4])


def reference_lstm(x, h_0, c_0, weights, seq_lengths, input_size, hidden_size, num_layers,
                   dropout, bidirectional):
  """``jax.experimental.rnn.lstm``'s signature over its reference implementation."""
  w_ih, w_hh, b_ih, b_hh = jax_rnn.unpack_lstm_weights(weights, input_size, hidden_size,
                                                       num_layers, bidirectional)
  return jax_rnn.lstm_ref(x, h_0, c_0, w_ih, w_hh, b_ih, b_hh, seq_lengths, input_size,
                          hidden_size, num_layers, dropout, bidirectional)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("lengths", [None, LENGTHS])
def test_cudnn_layout_gives_the_scan_numbers(reverse, lengths):
  params = {k: v for k, v in random_params("lstm", d=D).items() if not k.startswith("p_")}
  rng = np.random.default_rng(2)
  xs = rng.normal(size=(B, T, D)).astype(np.float32)
  h_size = params["w_h"].shape[0]
  carry = tuple(rng.normal(size=(B, h_size)).astype(np.float32) for _ in range(2))

  def ours(params, xs, carry):
    return engine._cudnn_lstm(params, xs, carry, None if lengths is None else
                              jnp.asarray(lengths), reverse, lstm=reference_lstm)

  def scan(params, xs, carry):
    return engine.scan("lstm", params, xs, carry=carry, lengths=lengths, reverse=reverse,
                       cudnn=False)

  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               ours(params, xs, carry), scan(params, xs, carry))
  loss = lambda f: lambda *a: sum(jnp.sum(jnp.sin(o)) for o in jax.tree.leaves(f(*a)))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
               jax.grad(loss(ours), argnums=(0, 1, 2))(params, xs, carry),
               jax.grad(loss(scan), argnums=(0, 1, 2))(params, xs, carry))


def test_flip_within_lengths():
  a = np.arange(12).reshape(2, 6)[..., None]
  got = engine.flip_within_lengths(jnp.asarray(a), jnp.array([6, 3]))[..., 0]
  np.testing.assert_array_equal(got, [[5, 4, 3, 2, 1, 0], [8, 7, 6, 9, 10, 11]])


@pytest.mark.parametrize("cell,kwargs,message", [
    ("lstm", {}, "it needs a CUDA GPU (the backend is cpu)"),
    ("gru", {}, "cuDNN runs the plain lstm without peepholes, not 'gru'"),
    ("lstm", {"mask": np.ones((B, T), bool)}, "a mask (give lengths: right-padded sequences)"),
    ("lstm", {"return_carries": True}, "it does not take return_carries"),
])
def test_cudnn_true_says_why_it_cannot_run(cell, kwargs, message):
  params = random_params(cell, d=D)
  params = {k: v for k, v in params.items() if not k.startswith("p_")}
  xs = np.zeros((B, T, D), np.float32)
  with pytest.raises(ValueError) as info:
    engine.scan(cell, params, xs, cudnn=True, **kwargs)
  assert str(info.value).startswith("cudnn=True cannot run here: ")
  assert message in str(info.value)


def test_cudnn_none_runs_the_scan_where_cudnn_cannot():
  params = random_params("lstm", d=D)
  xs = np.ones((B, T, D), np.float32)
  jax.tree.map(np.testing.assert_array_equal, engine.scan("lstm", params, xs, cudnn=None),
               engine.scan("lstm", params, xs, cudnn=False))
  with pytest.raises(ValueError, match="cudnn must be None"):
    engine.scan("lstm", params, xs, cudnn="on")


@pytest.mark.parametrize("changes, message", [
    ({"model.cudnn": True}, "it needs a CUDA GPU (the backend is cpu)"),
    ({"model.cudnn": True, "model.cell": "gru"}, "cuDNN runs the plain lstm, not 'gru'"),
    ({"model.cudnn": True, "model.cell_options.peepholes": True}, "no peepholes"),
    ({"model.cudnn": True, "model.dtype": "bfloat16"}, "float32 only"),
])
def test_model_cudnn_true_in_a_config_says_why_it_cannot_run(changes, message):
  """Refused before anything runs, naming the field (on this CPU every case is refused: the
  backend is one of the reasons)."""
  from conftest import small_config  # pylint: disable=g-import-not-at-top
  from rnnlab.errors import InvalidConfigError  # pylint: disable=g-import-not-at-top
  from rnnlab.training import job as job_lib  # pylint: disable=g-import-not-at-top
  with pytest.raises(InvalidConfigError, match="model.cudnn=True cannot run here: ") as info:
    job_lib.build(small_config("adding", **changes))
  assert message in str(info.value)



def test_language_model_fields_are_checked_with_its_dropouts():
  """The language model's config takes ``fused`` and ``cudnn`` too; both are refused with
  zoneout or recurrent dropout on, naming the field."""
  from rnnlab import lm  # pylint: disable=g-import-not-at-top
  for changes, message in (({"cudnn": True, "zoneout": 0.1}, "it does not take zoneout"),
                           ({"fused": True, "recurrent_dropout": 0.1},
                            "model.fused=True cannot run here: recurrent dropout is on")):
    cfg = lm.default_config()
    for k, v in changes.items():
      cfg[k] = v
    with pytest.raises(ValueError, match=message):
      lm.validate(cfg)

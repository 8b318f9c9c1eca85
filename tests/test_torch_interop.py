"""Parity with PyTorch's nn.RNN / nn.LSTM / nn.GRU: outputs, final states, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rnnlab import cells, engine, torch_interop  # noqa: E402

B, T, D, H = 3, 5, 3, 4
TOL = dict(rtol=1e-5, atol=1e-5)
# PyTorch constructor and keywords per rnnlab cell.
MODULES = {
    "rnn": (torch.nn.RNN, {"nonlinearity": "tanh"}),
    "irnn": (torch.nn.RNN, {"nonlinearity": "relu"}),
    "lstm": (torch.nn.LSTM, {}),
    "gru": (torch.nn.GRU, {}),
}
NUM_STATES = {"lstm": 2}  # (h, c); the others carry h alone
# Compiled here (the gradient test runs eagerly): PyTorch parity of every cell through
# the compiled engine. Inits stay eager: their small ops are cached across tests.
apply_stack = jax.jit(engine.apply_stack, static_argnums=0)


def make_module(cell, num_layers=1, bidirectional=False, batch_first=True, seed=0, **kw):
  torch.manual_seed(seed)
  cls, kwargs = MODULES[cell]
  return cls(D, H, num_layers, batch_first=batch_first, bidirectional=bidirectional,
             **kwargs, **kw)


def as_tuple(state):
  return state if isinstance(state, tuple) else (state,)


def numpy_state(module):
  return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def loss_weights(seed, out_size, state_shape):
  """Fixed random weights so every output and state entry reaches the scalar loss."""
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(B, T, out_size)).astype(np.float32),
          rng.normal(size=state_shape).astype(np.float32))


def torch_loss(out, state, w_out, w_state):
  return (out * torch.from_numpy(w_out)).sum() + sum(
      (s * torch.from_numpy(w_state)).sum() for s in as_tuple(state))


def jax_loss(ys, state, w_out, w_state):
  return jnp.sum(ys * w_out) + sum(jnp.sum(s * w_state) for s in as_tuple(state))


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("cell", sorted(MODULES))
def test_outputs_states_and_gradients_match_pytorch(cell, num_layers, bidirectional, eager):
  # Both layouts of PyTorch's input: rnnlab ignores batch_first when loading.
  module = make_module(cell, num_layers, bidirectional, batch_first=(num_layers == 1))
  x = np.random.default_rng(1).normal(size=(B, T, D)).astype(np.float32)
  ndir = 2 if bidirectional else 1
  w_out, w_state = loss_weights(2, ndir * H, (num_layers * ndir, B, H))

  xt = torch.tensor(x if module.batch_first else x.transpose(1, 0, 2), requires_grad=True)
  out, state = module(xt)
  out_bm = out if module.batch_first else out.transpose(0, 1)
  torch_loss(out_bm, state, w_out, w_state).backward()

  def run(sd, xs):
    stack, params = torch_interop.from_state_dict(sd, cell)
    finals, ys = apply_stack(stack, params, xs)
    state = torch_interop.state_to_torch(stack, finals)
    return jax_loss(ys, state, w_out, w_state), (ys, state)

  (loss, (ys, state_j)), (g_sd, g_x) = jax.value_and_grad(run, argnums=(0, 1), has_aux=True)(
      numpy_state(module), x)
  np.testing.assert_allclose(ys, out_bm.detach().numpy(), **TOL)
  for mine, theirs in zip(as_tuple(state_j), as_tuple(state), strict=True):
    np.testing.assert_allclose(mine, theirs.detach().numpy(), **TOL)
  grad_x = xt.grad.numpy() if module.batch_first else xt.grad.numpy().transpose(1, 0, 2)
  np.testing.assert_allclose(g_x, grad_x, **TOL)
  named = dict(module.named_parameters())
  assert set(g_sd) == set(named)
  for name, p in named.items():
    np.testing.assert_allclose(g_sd[name], p.grad.numpy(), **TOL, err_msg=name)


@pytest.mark.parametrize("cell", sorted(MODULES))
def test_variable_lengths_and_initial_state_match_pack_padded_sequence(cell):
  module = make_module(cell, 2, bidirectional=True, seed=3)
  rng = np.random.default_rng(4)
  x = rng.normal(size=(B, T, D)).astype(np.float32)
  lengths = np.array([2, T, 4])  # unsorted on purpose
  h0 = tuple(rng.normal(size=(4, B, H)).astype(np.float32)
             for _ in range(NUM_STATES.get(cell, 1)))
  packed = torch.nn.utils.rnn.pack_padded_sequence(
      torch.from_numpy(x), torch.from_numpy(lengths), batch_first=True, enforce_sorted=False)
  h0_torch = tuple(map(torch.from_numpy, h0))
  out, state = module(packed, h0_torch if len(h0) == 2 else h0_torch[0])
  out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)

  stack, params = torch_interop.from_torch(module)
  carries = torch_interop.state_from_torch(stack, h0 if len(h0) == 2 else h0[0])
  finals, ys = apply_stack(stack, params, jnp.asarray(x), lengths=lengths, carries=carries)
  np.testing.assert_allclose(ys, out.detach().numpy(), **TOL)
  assert not np.any(np.asarray(ys)[0, 2:]) and not np.any(np.asarray(ys)[2, 4:])
  for mine, theirs in zip(as_tuple(torch_interop.state_to_torch(stack, finals)),
                          as_tuple(state), strict=True):
    np.testing.assert_allclose(mine, theirs.detach().numpy(), **TOL)


@pytest.mark.parametrize("cell", sorted(MODULES))
def test_round_trip_torch_rnnlab_torch(cell):
  module = make_module(cell, 2, True, batch_first=False, seed=7)
  stack, params = torch_interop.from_torch(module)
  again = torch_interop.to_torch(stack, params, batch_first=False)
  assert type(again) is type(module) and again.mode == module.mode
  x = torch.randn(T, B, D)
  for a, b in zip(as_tuple(module(x)[0]) + as_tuple(module(x)[1]),
                  as_tuple(again(x)[0]) + as_tuple(again(x)[1])):
    np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-6, atol=1e-6)
  # rnnlab -> torch -> rnnlab is exact: b_hh is exported as zero (GRU: only b_hn).
  stack2, params2 = torch_interop.from_torch(again)
  assert stack2 == stack
  jax.tree.map(np.testing.assert_array_equal, params2, params)


def test_float64_round_trip_keeps_dtype(x64):
  stack, params = torch_interop.from_torch(make_module("gru").double())
  assert params[0]["fwd"]["w_h"].dtype == jnp.float64
  assert torch_interop.to_torch(stack, params).weight_hh_l0.dtype == torch.float64


def test_bias_free_module_loads_with_zero_biases():
  module = make_module("lstm", 1, False, bias=False)
  stack, params = torch_interop.from_torch(module)
  assert not np.any(params[0]["fwd"]["b"])
  x = torch.randn(B, T, D)
  np.testing.assert_allclose(apply_stack(stack, params, x.numpy())[1],
                             module(x)[0].detach().numpy(), **TOL)


def test_stack_records_pytorch_initialisation():
  stack, _ = torch_interop.from_torch(make_module("lstm"))
  assert dict(stack.cell_options)["forget_bias"] == 0.0
  params = engine.init_stack(jax.random.key(0), stack, D)
  assert np.max(np.abs(params[0]["fwd"]["w_h"])) <= 1 / np.sqrt(H)


@pytest.mark.parametrize("module, match", [
    (lambda: torch.nn.LSTM(D, H, proj_size=2), "proj_size"),
    (lambda: torch.nn.Linear(D, H), "nn.RNN, nn.LSTM or nn.GRU"),
])
def test_from_torch_rejects_unsupported_modules(module, match):
  with pytest.raises(ValueError, match=match):
    torch_interop.from_torch(module())


def test_from_state_dict_rejects_bad_dicts():
  sd = numpy_state(make_module("gru"))
  with pytest.raises(ValueError, match="expects weight_hh_l0 of shape"):
    torch_interop.from_state_dict(sd, "lstm")
  with pytest.raises(ValueError, match="Unexpected state_dict keys"):
    torch_interop.from_state_dict({**sd, "foo": sd["bias_ih_l0"]}, "gru")
  with pytest.raises(ValueError, match="exportable cells: gru, irnn, lstm, rnn"):
    torch_interop.from_state_dict(sd, "mgu")


@pytest.mark.parametrize("cell, options, match", [
    ("mgu", {}, "exportable cells: gru, irnn, lstm, rnn"),
    ("lstm_cifg", {}, "exportable cells"),
    ("lstm", {"peepholes": True}, "p_f"),
    ("rnn", {"residual": True}, "Residual"),
])
def test_export_rejects_what_pytorch_cannot_express(cell, options, match):
  residual = options.pop("residual", False)
  stack = engine.make_stack(cell, H, residual=residual, **options)
  params = jax.eval_shape(lambda: engine.init_stack(jax.random.key(0), stack, D))
  with pytest.raises(ValueError, match=match):
    torch_interop.to_torch(stack, params)


def test_every_exportable_cell_is_registered():
  assert set(torch_interop.exportable_cells()) == set(MODULES) <= set(cells.names())

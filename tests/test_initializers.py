"""Initialisers: the properties their names promise, and how cells use them."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlab import cells, initializers

KEY = jax.random.key(0)


def init(spec, shape, **defaults):
  return np.asarray(initializers.get_initializer(spec, **defaults)(KEY, shape, jnp.float32))


def blocks(w, n):
  return np.split(np.asarray(w), n, axis=-1)


@pytest.mark.parametrize("shape", [(4, 4), (4, 9), (9, 4)])
def test_orthogonal_is_orthogonal(shape):
  q = init("orthogonal:2.0", shape) / 2.0
  small = min(shape)
  gram = q.T @ q if shape[0] >= shape[1] else q @ q.T
  np.testing.assert_allclose(gram, np.eye(small), atol=1e-5)


def test_gated_recurrent_kernel_is_orthogonal_per_gate():
  w_h = cells.get_cell("lstm").init(KEY, 3, 4)["w_h"]
  for block in blocks(w_h, 4):
    np.testing.assert_allclose(block.T @ block, np.eye(4), atol=1e-5)
  assert not np.allclose(*blocks(w_h, 4)[:2])  # independent blocks, not one copied


def test_identity_scale():
  np.testing.assert_array_equal(init("identity:0.5", (4, 4)), 0.5 * np.eye(4))


@pytest.mark.parametrize("radius", [0.5, 0.95, 1.3])
def test_spectral_radius_is_the_requested_one(radius):
  w = init(f"spectral:{radius}", (16, 16))
  assert np.max(np.abs(np.linalg.eigvals(w.astype(np.float64)))) == pytest.approx(radius, 1e-5)


def test_spectral_works_under_jit():
  f = jax.jit(lambda k: initializers.get_initializer("spectral:0.9")(k, (8, 8), jnp.float32))
  w = np.asarray(f(KEY), np.float64)
  assert np.max(np.abs(np.linalg.eigvals(w))) == pytest.approx(0.9, 1e-5)


@pytest.mark.parametrize("spec, std", [
    ("normal:0.3", 0.3),
    ("lecun_normal", math.sqrt(1 / 400)),
    ("glorot_normal", math.sqrt(2 / 700)),
])
def test_gaussian_scales(spec, std):
  assert init(spec, (400, 300)).std() == pytest.approx(std, rel=0.03)


@pytest.mark.parametrize("spec, bound", [
    ("uniform:0.2", 0.2),
    ("lecun_uniform", math.sqrt(3 / 400)),
    ("glorot_uniform", math.sqrt(6 / 700)),
    ("torch", 1 / math.sqrt(300)),
])
def test_uniform_bounds(spec, bound):
  w = np.abs(init(spec, (400, 300)))
  assert w.max() <= bound and w.max() > 0.99 * bound


def test_torch_bound_uses_the_hidden_size_not_the_gate_width():
  params = cells.get_cell("lstm").init(KEY, 7, 16, input_init="torch", recurrent_init="torch",
                                       bias_init="torch", forget_bias=0.0)
  for name in ("w_x", "w_h", "b"):
    w = np.abs(params[name])
    assert w.max() <= 1 / 4 and w.max() > 0.8 / 4, name  # 1/sqrt(16), not 1/sqrt(64)


def test_irnn_defaults():
  params = cells.get_cell("irnn").init(KEY, 50, 40)
  np.testing.assert_array_equal(params["w_h"], np.eye(40))
  np.testing.assert_array_equal(params["b"], np.zeros(40))
  assert np.std(params["w_x"]) == pytest.approx(0.001, rel=0.05)
  assert abs(np.mean(params["w_x"])) < 1e-4


def test_chrono_bias_range_and_input_gate():
  t_max, h = 100, 400
  params = cells.get_cell("lstm").init(KEY, 1, h, chrono=t_max, recurrent_init="zeros")
  b_i, b_f, b_g, b_o = blocks(params["b"], 4)
  assert b_f.min() >= 0.0 and b_f.max() <= math.log(t_max - 1)
  # log U[1, T-1]: the median is log(T/2), far above a constant forget bias of 1.
  assert np.median(b_f) == pytest.approx(math.log(t_max / 2), abs=0.15)
  np.testing.assert_array_equal(b_i, -b_f)
  assert not b_g.any() and not b_o.any()


def test_chrono_needs_t_max_above_two():
  with pytest.raises(ValueError, match="t_max > 2"):
    initializers.chrono_bias(KEY, 4, 2)


@pytest.mark.parametrize("name, f_block", [
    ("lstm", 1), ("lstm_nig", 0), ("lstm_cifg", 0), ("lstm_nog", 1), ("lstm_fgr", 1)])
def test_forget_bias_lands_in_the_f_block_only(name, f_block):
  cell = cells.get_cell(name)
  parts = blocks(cell.init(KEY, 3, 4, forget_bias=2.5)["b"], cell.num_gates)
  assert cell.gates[f_block] == "f"
  for k, part in enumerate(parts):
    np.testing.assert_array_equal(part, np.full(4, 2.5 if k == f_block else 0.0))


def test_forget_bias_defaults_to_one_and_is_ignored_without_forget_gate():
  np.testing.assert_array_equal(blocks(cells.get_cell("lstm").init(KEY, 3, 4)["b"], 4)[1],
                                np.ones(4))
  assert not cells.get_cell("lstm_nfg").init(KEY, 3, 4, forget_bias=2.5)["b"].any()


def test_unknown_initializer_lists_the_valid_names():
  with pytest.raises(ValueError, match="Unknown initializer 'orthogonl'. Valid names: "
                     "constant, glorot_normal, .*orthogonal, spectral, torch"):
    initializers.get_initializer("orthogonl")
  with pytest.raises(ValueError, match="Valid names"):
    cells.get_cell("rnn").init(KEY, 3, 4, recurrent_init="eye")


@pytest.mark.parametrize("spec, shape", [("identity", (4,)), ("orthogonal", (4,)),
                                         ("spectral", (3, 4))])
def test_matrix_initializers_reject_other_shapes(spec, shape):
  with pytest.raises(ValueError, match=f"The '{spec}' initializer needs"):
    initializers.get_initializer(spec)(KEY, shape, jnp.float32)
  with pytest.raises(ValueError, match="needs"):
    cells.get_cell("rnn").init(KEY, 3, 4, bias_init=spec)


def test_argument_must_be_a_number():
  with pytest.raises(ValueError, match="must be a number"):
    initializers.get_initializer("identity:big")


def test_callables_pass_through_and_names_are_sorted():
  f = lambda key, shape, dtype=jnp.float32: jnp.ones(shape, dtype)
  assert initializers.get_initializer(f) is f
  assert initializers.names() == sorted(initializers.names())
  np.testing.assert_array_equal(cells.get_cell("rnn").init(KEY, 2, 3, bias_init=f)["b"],
                                np.ones(3))


def test_same_key_same_numbers():
  for spec in ("orthogonal", "spectral:0.9", "lecun_normal", "torch"):
    a = initializers.get_initializer(spec)(KEY, (5, 5), jnp.float32)
    b = initializers.get_initializer(spec)(KEY, (5, 5), jnp.float32)
    np.testing.assert_array_equal(a, b)

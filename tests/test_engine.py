"""The engine against a plain Python loop over ``cell.step``, for every registered cell."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from rnnlab import cells, engine

BATCH, T, D, H = (2, 2), 5, 3, 4
LENGTHS = np.array([[5, 0], [3, 1]])  # several batch dims, one empty sequence
MASK = np.array([[[1, 0, 1, 1, 0], [0, 0, 0, 0, 0]],
                 [[0, 1, 1, 0, 1], [1, 1, 1, 1, 1]]], bool)  # holes, not only padding
TOL = dict(rtol=2e-6, atol=2e-6)


def random_params(name, seed=0, d=D, dtype=np.float32):
  """Every entry random (peepholes on where offered), so no parameter goes untested."""
  cell = cells.get_cell(name)
  opts = {"peepholes": True} if "peepholes" in cell.options else {}
  shapes = jax.eval_shape(lambda k: cell.init(k, d, H, **opts), jax.random.key(0))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: rng.normal(scale=0.5, size=s.shape).astype(dtype), shapes)


def random_inputs(seed=1, d=D, batch=BATCH, dtype=np.float32):
  return np.random.default_rng(seed).normal(size=(*batch, T, d)).astype(dtype)


def reference(cell, params, xs, mask=None, reverse=False, carry0=None):
  """Plain loop, one sequence at a time, stepping only at its valid steps.

  Returns (final, ys, carries) with the engine's conventions: ys zero where not
  stepped; carries[t] the carry after step t (held across skipped steps).
  """
  cell = cells.get_cell(cell)
  batch, t_len = xs.shape[:-2], xs.shape[-2]
  flat = np.asarray(xs).reshape(-1, t_len, xs.shape[-1])
  mask = np.ones(flat.shape[:2], bool) if mask is None else np.reshape(mask, (-1, t_len))
  zero = cell.init_carry(params, (flat.shape[0],)) if carry0 is None else carry0
  zero = jax.tree.map(lambda a: np.reshape(a, (flat.shape[0], -1)), zero)
  finals, ys, carries = [], np.zeros((*flat.shape[:2], H), np.float32), []
  for b in range(flat.shape[0]):
    carry, per_step = jax.tree.map(lambda a: a[b], zero), [None] * t_len
    for t in (reversed(range(t_len)) if reverse else range(t_len)):
      if mask[b, t]:
        carry, ys[b, t] = cell.step(params, carry, flat[b, t])
      per_step[t] = carry
    finals.append(carry)
    carries.append(jax.tree.map(lambda *a: np.stack(a), *per_step))
  unflat = lambda a: np.reshape(a, (*batch, *np.shape(a)[1:]))
  stack = lambda trees: jax.tree.map(lambda *a: unflat(np.stack(a)), *trees)
  return stack(finals), unflat(ys), stack(carries)


def reference_stack(stack, params, xs, mask=None, reverse=False):
  """apply_stack's documented composition of ``reference`` layers."""
  valid = np.ones(xs.shape[:-1], bool) if mask is None else mask
  h, finals, all_carries = np.asarray(xs), [], []
  for layer in params:
    runs = {d: reference(stack.cell, layer[d], h, valid, reverse ^ (d == "bwd"))
            for d in stack.directions}
    y = np.concatenate([runs[d][1] for d in stack.directions], axis=-1)
    if stack.residual and y.shape[-1] == h.shape[-1]:
      y = y + h * valid[..., None]
    h = y
    finals.append({d: r[0] for d, r in runs.items()})
    all_carries.append({d: r[2] for d, r in runs.items()})
  return finals, h, all_carries


def assert_trees_close(a, b, **tol):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, **(tol or TOL)), a, b)


STACK = dict(num_layers=2, bidirectional=True, residual=True)


@functools.partial(jax.jit, static_argnums=0)
def run_engine(name, params, stack_params, xs, carry0):
  """Every engine feature one cell is checked under, as one program (one compile, or
  none under the ``eager`` fixture). The stack runs with zero perturbations, so
  matching the unperturbed loop also shows that zeros change nothing."""
  stack = engine.make_stack(name, H, **STACK)
  zeros = [{d: jnp.zeros((*BATCH, T, H)) for d in stack.directions}] * stack.num_layers
  return {
      "plain": engine.scan(name, params, xs, return_carries=True),
      "lengths_reverse": engine.scan(name, params, xs, lengths=LENGTHS, reverse=True,
                                     carry=carry0),
      "stack": engine.apply_stack(stack, stack_params, xs, mask=MASK, remat=True, unroll=3,
                                  return_carries=True, perturbations=zeros),
  }


def stack_params(name, stack, d):
  sizes = [d] + [stack.output_size] * (stack.num_layers - 1)
  return [{k: random_params(name, 10 * i + j, size) for j, k in enumerate(stack.directions)}
          for i, size in enumerate(sizes)]


def check_engine_against_loop(name):
  cell, params, xs = cells.get_cell(name), random_params(name), random_inputs()
  stack = engine.make_stack(name, H, **STACK)
  carry0 = jax.tree.map(lambda a: a + 0.3, cell.init_carry(params, BATCH))
  layers = stack_params(name, stack, D)
  out = run_engine(name, params, layers, xs, carry0)

  final, ys, carries = reference(name, params, xs)
  assert_trees_close(out["plain"], (final, ys, carries))

  valid = np.asarray(engine.length_mask(LENGTHS, T))
  final, ys, _ = reference(name, params, xs, valid, reverse=True, carry0=carry0)
  assert_trees_close(out["lengths_reverse"], (final, ys))
  assert not np.any(np.asarray(out["lengths_reverse"][1])[~valid])  # padding is exactly 0

  assert_trees_close(out["stack"], reference_stack(stack, layers, xs, MASK))
  assert not np.any(np.asarray(out["stack"][1])[~MASK])


@pytest.mark.parametrize("name", cells.names())
def test_engine_matches_python_loop(name, eager):
  check_engine_against_loop(name)


def test_compiled_engine_matches_python_loop():
  """The same checks compiled (remat and unroll now take effect), for one cell: the
  PyTorch and Flax parity tests run lstm and gru compiled."""
  check_engine_against_loop("rnn")


def test_stack_reverse_with_lengths(eager):
  """reverse=True flips every direction; a residual first layer needs D == H."""
  stack = engine.make_stack("rnn", H, 2, residual=True)
  layers, xs = stack_params("rnn", stack, H), random_inputs(d=H)
  out = engine.apply_stack(stack, layers, xs, lengths=LENGTHS, reverse=True)
  mask = np.asarray(engine.length_mask(LENGTHS, T))
  assert_trees_close(out, reference_stack(stack, layers, xs, mask, reverse=True)[:2])


def test_last_hidden_and_unbatched_input(eager):
  stack = engine.make_stack("rnn", H, bidirectional=True)
  layers, xs = stack_params("rnn", stack, D), random_inputs()
  finals, ys = engine.apply_stack(stack, layers, xs, mask=MASK)
  last, ys = np.asarray(engine.last_hidden(stack, finals)), np.asarray(ys)
  for idx in np.ndindex(*BATCH):
    steps = np.flatnonzero(MASK[idx])
    if steps.size:  # fwd ends at the last valid step, bwd at the first
      np.testing.assert_array_equal(last[idx],
                                    np.r_[ys[idx][steps[-1], :H], ys[idx][steps[0], H:]])
    else:
      assert not last[idx].any()
  finals1, ys1 = engine.apply_stack(stack, layers, xs[1, 1], mask=MASK[1, 1])
  np.testing.assert_allclose(ys1, ys[1, 1], **TOL)
  assert_trees_close(finals1, jax.tree.map(lambda a: a[1, 1], finals))


def test_remat_and_unroll_give_the_same_gradients():
  params, xs = random_params("rnn"), random_inputs()

  def loss(params, xs, **opts):
    return jnp.sum(jnp.sin(engine.scan("rnn", params, xs, mask=MASK, **opts)[1]))

  grads = jax.jit(lambda p, x: [jax.grad(functools.partial(loss, **o), argnums=(0, 1))(p, x)
                                for o in ({}, {"remat": True, "unroll": 3})])
  plain, fancy = grads(params, xs)
  assert_trees_close(plain, fancy, rtol=1e-5, atol=1e-6)


def test_unroll_none_is_by_backend_and_bad_values_fail():
  assert engine.default_unroll() == (1 if jax.default_backend() == "cpu" else 4)
  params, xs = random_params("rnn"), random_inputs()
  for bad in (0, True, 2.0):
    with pytest.raises(ValueError, match=r"unroll must be None \(by backend\) or an integer"):
      engine.scan("rnn", params, xs, unroll=bad)


# The engine sees a cell only through its carry; lstm_fgr's is the richest (c, h and the
# previous gate activations). Every cell's step gradient is checked in test_cells.py.
def test_masked_engine_gradients(x64, eager):
  name = "lstm_fgr"
  params = random_params(name, dtype=np.float64)
  xs = random_inputs(batch=(2,), dtype=np.float64)[..., :3, :]
  mask = np.array([[True, False, True], [False, True, True]])
  carry0 = jax.tree.map(lambda a: a + 0.2, cells.get_cell(name).init_carry(params, (2,)))
  f = lambda p, c, x: engine.scan(name, p, x, carry=c, mask=mask, reverse=True)
  check_grads(f, (params, carry0, xs), order=1, modes=["rev"])


def test_no_retrace_when_only_values_change():
  traces = {"scan": 0, "stack": 0}

  @jax.jit
  def run_scan(params, xs, lengths):
    traces["scan"] += 1
    return engine.scan("rnn", params, xs, lengths=lengths)

  @functools.partial(jax.jit, static_argnums=0)
  def run_stack(stack, params, xs, mask):
    traces["stack"] += 1
    return engine.apply_stack(stack, params, xs, mask=mask)

  for seed in range(3):
    params, xs = random_params("rnn", seed), random_inputs(seed)
    run_scan(params, xs, np.minimum(LENGTHS + seed, T))
    stack = engine.make_stack("rnn", H, bidirectional=True)  # equal each time, not identical
    run_stack(stack, stack_params("rnn", stack, D), xs, np.roll(MASK, seed, axis=-1))
  assert traces == {"scan": 1, "stack": 1}


def _loop_loss(name, params, xs, w, t, delta):
  """The loss with ``delta`` added to h_t, by a plain loop over ``cell.step``."""
  cell, ys = cells.get_cell(name), []
  carry = cell.init_carry(params, xs.shape[:1])
  for s in range(xs.shape[1]):
    carry, y = cell.step(params, carry, xs[:, s])
    if s == t:
      y = cell.hidden(carry) + delta
      carry = cell.with_hidden(carry, y)
    ys.append(y)
  return jnp.sum(w * jnp.tanh(jnp.stack(ys, axis=1)))


def test_perturbation_gradient_is_dl_dh_by_brute_force(eager):
  name = "lstm"  # with_hidden must leave c alone
  params, xs = random_params(name), random_inputs(batch=(4,))
  w = np.random.default_rng(2).normal(size=(4, T, H)).astype(np.float32)

  def loss(dh):
    return jnp.sum(w * jnp.tanh(engine.scan(name, params, xs, perturbation=dh)[1]))

  dl_dh = jax.grad(loss)(jnp.zeros((4, T, H)))
  for t in range(T):  # one backward pass per step, no perturbation argument
    brute = jax.grad(functools.partial(_loop_loss, name, params, xs, w, t))(jnp.zeros((4, H)))
    np.testing.assert_allclose(dl_dh[:, t], brute, rtol=1e-5, atol=1e-6)


def test_perturbation_gradient_is_zero_at_padded_steps(eager):
  params, xs = random_params("lstm"), random_inputs()
  loss = lambda dh: jnp.sum(engine.scan("lstm", params, xs, lengths=LENGTHS,
                                        perturbation=dh)[1] ** 2)
  dl_dh = np.asarray(jax.grad(loss)(jnp.zeros((*BATCH, T, H))))
  valid = np.asarray(engine.length_mask(LENGTHS, T))
  assert not np.any(dl_dh[~valid]) and np.all(np.any(dl_dh[valid], axis=-1))


def test_bad_arguments_are_rejected():
  params, xs = random_params("rnn"), random_inputs()
  cases = [
      (dict(lengths=LENGTHS, mask=MASK), "either lengths or mask"),
      (dict(lengths=LENGTHS[0]), r"lengths has shape \(2,\); expected the batch shape"),
      (dict(mask=MASK[..., :3]), "mask has shape"),
  ]
  for kwargs, match in cases:
    with pytest.raises(ValueError, match=match):
      engine.scan("rnn", params, xs, **kwargs)
  with pytest.raises(ValueError, match="inputs have 2 features but the cell expects 3"):
    engine.scan("rnn", params, xs[..., :2])
  with pytest.raises(ValueError, match="Unknown cell 'lsmt'. Valid cells"):
    engine.make_stack("lsmt", H)
  with pytest.raises(ValueError, match="num_layers must be an integer >= 1"):
    engine.make_stack("rnn", H, 0)
  stack = engine.make_stack("rnn", H, 2)
  with pytest.raises(ValueError, match="params have 1 layers, the stack 2"):
    engine.apply_stack(stack, [{"fwd": params}], xs)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_hoisted_and_per_step_projection_agree(cell):
  """hoist=True (one matmul before the scan) and hoist=False (inside each step)."""
  c = cells.get_cell(cell)
  params = c.init(jax.random.PRNGKey(1), 3, 5)
  xs = jax.random.normal(jax.random.PRNGKey(2), (2, 7, 3))
  lengths = jnp.array([7, 4])
  loss = lambda p, hoist: jnp.sum(engine.scan(c, p, xs, lengths=lengths, hoist=hoist)[1] ** 2)
  np.testing.assert_allclose(loss(params, True), loss(params, False), rtol=1e-5)
  g_true, g_false = jax.grad(loss)(params, True), jax.grad(loss)(params, False)
  for k in params:
    np.testing.assert_allclose(g_true[k], g_false[k], rtol=1e-4, atol=1e-6)

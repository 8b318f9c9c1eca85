"""Tests for rnnlab.gradflow and rnnlab.plots against brute-force references.

The references run cells one step at a time in Python and differentiate with
respect to one step's state at a time; sizes are tiny to keep compiles cheap.
"""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlab import cells, engine, gradflow, plots

B, T, D, H = 2, 5, 2, 3

# One compile per (loss, stack, shape) instead of many eager scans.
_norms = jax.jit(gradflow.dL_dh_norms, static_argnums=(0, 1))
_omega = jax.jit(gradflow.omega, static_argnums=(0, 1))


def _weighted_loss(ys):
  """Per-example loss reading every step with a weight that depends only on t."""
  w = 1.0 + 0.3 * jnp.arange(ys.shape[-2])[:, None] + 0.1 * jnp.arange(ys.shape[-1])
  return jnp.sum(w * jnp.sin(3.0 * ys + 0.5) ** 2, axis=(-2, -1))


def _stack(cell, layers=2, bidirectional=False, residual=False, seed=0, hidden=H):
  stack = engine.make_stack(cell, hidden, layers, bidirectional=bidirectional, residual=residual)
  return stack, engine.init_stack(jax.random.PRNGKey(seed), stack, D)


def _inputs(seed=1, batch=(B,), steps=T):
  return jax.random.normal(jax.random.PRNGKey(seed), (*batch, steps, D))


def _loop_stack(stack, params, xs, select, eps):
  """Reference stack, one step at a time, unrolled in Python.

  ``eps`` (*batch, H) is added to h at the one (layer, dir, t) where the one-hot
  ``select`` (layers, dirs, T) is 1 (a traced selector: one compile for all t).
  """
  cell = cells.get_cell(stack.cell)
  h_in, steps = xs, xs.shape[-2]
  for l, layer in enumerate(params):
    outs = []
    for i, d in enumerate(stack.directions):
      carry = cell.init_carry(layer[d], xs.shape[:-2])
      ys = [None] * steps
      for t in (range(steps) if d == "fwd" else reversed(range(steps))):
        carry, _ = cell.step(layer[d], carry, h_in[..., t, :])
        carry = cell.with_hidden(carry, cell.hidden(carry) + select[l, i, t] * eps)
        ys[t] = cell.hidden(carry)
      outs.append(jnp.stack(ys, axis=-2))
    y = jnp.concatenate(outs, axis=-1)
    h_in = y + h_in if stack.residual and y.shape[-1] == h_in.shape[-1] else y
  return h_in


def _brute_norms(stack, params, xs):
  """(layers, dirs, T): mean_b ||d l_b / d h_t^b||, one gradient per (layer, dir, t)."""
  shape = (stack.num_layers, len(stack.directions), xs.shape[-2])
  grad_at = jax.jit(jax.grad(lambda e, sel: jnp.sum(_weighted_loss(
      _loop_stack(stack, params, xs, sel, e)))))
  zeros = jnp.zeros((*xs.shape[:-2], stack.hidden_size))
  out = np.zeros(shape)
  for idx in np.ndindex(*shape):
    g = grad_at(zeros, jnp.zeros(shape).at[idx].set(1.0))
    out[idx] = np.mean(np.linalg.norm(g, axis=-1))
  return out


# --- dL/dh_t ---------------------------------------------------------------------

@pytest.mark.parametrize("cell,bidirectional,residual",
                         [("rnn", False, False), ("lstm", False, False), ("gru", True, True)])
def test_step_norms_match_brute_force(cell, bidirectional, residual):
  stack, params = _stack(cell, bidirectional=bidirectional, residual=residual)
  xs = _inputs(steps=3)  # the unrolled reference compiles in time linear in steps
  got = _norms(_weighted_loss, stack, params, xs)
  assert got.shape == (2, len(stack.directions), 3)
  np.testing.assert_allclose(got, _brute_norms(stack, params, xs), rtol=1e-4, atol=1e-7)


def test_dl_dh_is_per_example_for_summed_and_batch_mean_losses():
  # l_b = ||p_b - a_b||^2 / 2 has d l_b / d p_b = -a_b at p = 0: exact per-example gradients.
  stack = engine.make_stack("rnn", H, bidirectional=True)
  a = jax.random.normal(jax.random.PRNGKey(5), (B, T, H))
  perts = gradflow.zero_perturbations(stack, (B,), T)
  per_example = lambda p: jnp.sum((p[0]["bwd"] - a) ** 2, axis=(-2, -1)) / 2
  for loss_fn in (per_example, lambda p: jnp.mean(per_example(p))):
    grads = gradflow.dL_dh(loss_fn, perts)
    np.testing.assert_allclose(grads[0]["bwd"], -a, rtol=1e-6)
    np.testing.assert_array_equal(grads[0]["fwd"], 0.0)
  norms = gradflow.step_norms(grads)
  assert norms.shape == (1, 2, T)  # directions ordered (fwd, bwd)
  np.testing.assert_allclose(norms[0, 1], np.linalg.norm(a, axis=-1).mean(0), rtol=1e-6)
  mask = np.array([[True] * T, [True, True, False, False, False]])
  want = np.where(mask, np.linalg.norm(a, axis=-1), 0.0).sum(0) / mask.sum(0)
  np.testing.assert_allclose(gradflow.step_norms(grads, mask)[0, 1], want, rtol=1e-6)


def test_padded_steps_average_over_valid_sequences_only():
  stack, params = _stack("rnn", layers=1, bidirectional=True)
  xs, lengths = _inputs(), jnp.array([T, 3])
  got = _norms(_weighted_loss, stack, params, xs, lengths=lengths)
  alone = [_norms(_weighted_loss, stack, params, xs[b, :n]) for b, n in enumerate([T, 3])]
  want = np.asarray(alone[0]).copy()
  want[..., :3] = (want[..., :3] + np.asarray(alone[1])) / 2
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)


def test_zero_perturbation_changes_neither_outputs_nor_gradients():
  stack, params = _stack("gru", layers=1, bidirectional=True)
  xs = _inputs()
  perts = gradflow.zero_perturbations(stack, (B,), T)

  @jax.jit
  def loss_and_grads(p, perturbations):
    def loss(p):
      # onednn=False: a perturbation runs the scan, and without one the CPU's default for the
      # gru is oneDNN, equal to the scan only to float rounding
      ys = engine.apply_stack(stack, p, xs, perturbations=perturbations, onednn=False)[1]
      return jnp.mean(_weighted_loss(ys)), ys
    return jax.value_and_grad(loss, has_aux=True)(p)
  (l0, ys0), g0 = loss_and_grads(params, None)
  (l1, ys1), g1 = loss_and_grads(params, perts)
  np.testing.assert_array_equal(ys0, ys1)
  assert l0 == l1
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9), g0, g1)


def test_gradflow_record_layout():
  norms = jnp.arange(2 * T, dtype=jnp.float32).reshape(2, 1, T)
  rec = gradflow.gradflow_record(7, norms)
  assert rec["step"] == 7 and rec["dL_dh_norm"][1] == list(range(T, 2 * T))
  assert json.loads(json.dumps(rec)) == rec
  assert np.shape(gradflow.gradflow_record(0, norms[:1])["dL_dh_norm"]) == (T,)
  assert np.shape(gradflow.gradflow_record(0, np.ones((1, 2, T)))["dL_dh_norm"]) == (1, 2, T)
  with pytest.raises(ValueError, match="layers, directions, T"):
    gradflow.gradflow_record(0, np.ones(T))


def test_bad_inputs_raise_clear_errors():
  stack, params = _stack("rnn")
  xs = _inputs()
  with pytest.raises(ValueError, match="per-example losses of shape"):
    gradflow.dL_dh_norms(lambda ys: ys.sum(axis=-1), stack, params, xs)
  with pytest.raises(ValueError, match="perturbations are made here"):
    gradflow.dL_dh_norms(_weighted_loss, stack, params, xs, perturbations=None)
  with pytest.raises(ValueError, match="one sequence"):
    gradflow.jacobian_spectrum("rnn", params[0]["fwd"], xs)
  with pytest.raises(ValueError, match="top_k must be"):
    gradflow.jacobian_spectrum("rnn", params[0]["fwd"], xs[0], top_k=H + 1)
  with pytest.raises(ValueError, match="zero carries"):
    gradflow.omega(_weighted_loss, stack, params, xs, carries=None)
  with pytest.raises(ValueError, match="at least 2 finite"):
    gradflow.decay_rate(jnp.array([0.0, -1.0]))
  with pytest.raises(ValueError, match="gate"):
    gradflow.recurrent_spectra("lstm", params[0]["fwd"])


# --- Jacobians along a trajectory ------------------------------------------------

# A linear cell h_t = h_{t-1} W + x_t W_x + b, built for the test only (not registered):
# d h_t / d h_{t-1} = W^T exactly, so sigma_i(d h_{T-1}/d h_{T-1-k}) = |lambda_i(W)|^k
# for a symmetric W.
LINEAR = dataclasses.replace(cells.RNN, name="linear_test",
                             recur=lambda p, h, xp: (xp + h @ p["w_h"],) * 2)


def _symmetric(eigs, seed=0):
  q, _ = jnp.linalg.qr(jax.random.normal(jax.random.PRNGKey(seed), (len(eigs), len(eigs))))
  return (q * jnp.asarray(eigs)) @ q.T


_linear_spectrum = jax.jit(lambda p, xs: gradflow.jacobian_spectrum(LINEAR, p, xs))


@pytest.mark.parametrize("rho", [0.5, 0.8, 1.05])
def test_linear_cell_decay_rate_equals_spectral_radius(rho):
  eigs = np.array([rho, -0.6 * rho, 0.3, 0.1])
  params = {**LINEAR.init(jax.random.PRNGKey(0), D, 4), "w_h": _symmetric(eigs)}
  steps = 300  # 0.5^300 ~ 1e-90: only the log-scale accumulation survives this
  spec = _linear_spectrum(params, _inputs(batch=(), steps=steps))
  theory = gradflow.recurrent_spectra(LINEAR, params)["h"]
  np.testing.assert_allclose(theory["spectral_radius"], rho, rtol=1e-5)
  np.testing.assert_allclose(theory["singular_values"][0], rho, rtol=1e-5)
  np.testing.assert_allclose(gradflow.decay_rate(spec), theory["spectral_radius"], rtol=2e-5)
  np.testing.assert_allclose(spec.log_singular_values[:, 0], np.arange(steps) * np.log(rho),
                             atol=2e-3)
  want = np.sort(np.abs(eigs))[::-1] ** np.arange(4)[:, None]
  np.testing.assert_allclose(np.exp(spec.log_singular_values[:4]), want, rtol=1e-4, atol=1e-6)


def _brute_jacobians(stack, params, xs):
  """[{dir: (T, H, H)}]: d h_last / d h_t of each layer and direction by lag, from
  differentiating every final hidden state w.r.t. all perturbations at once."""
  cell = cells.get_cell(stack.cell)
  perts = gradflow.zero_perturbations(stack, (), xs.shape[0])

  def last_h(p):
    finals = engine.apply_stack(stack, params, xs, perturbations=p)[0]
    return [{d: cell.hidden(f[d]) for d in stack.directions} for f in finals]
  jac = jax.jit(jax.jacrev(last_h))(perts)  # jac[l][d][l'][d']: (H, T, H)
  by_lag = {"fwd": lambda j: jnp.swapaxes(j, 0, 1)[::-1], "bwd": lambda j: jnp.swapaxes(j, 0, 1)}
  return [{d: by_lag[d](jac[l][d][l][d]) for d in stack.directions}
          for l in range(stack.num_layers)]


def test_jacobian_spectra_match_brute_force():
  # LSTM: the carry-to-carry product must include the path through c.
  stack, params = _stack("lstm", bidirectional=True, seed=3)
  xs = _inputs(batch=(), steps=6)
  spectra = jax.jit(gradflow.stack_jacobian_spectra, static_argnums=0)(stack, params, xs)
  brute = _brute_jacobians(stack, params, xs)
  for layer in range(2):
    for d in stack.directions:
      got = np.exp(spectra[layer][d].log_singular_values)
      want = np.linalg.svd(np.asarray(brute[layer][d]), compute_uv=False)
      np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-6)
      assert got[0, 0] == pytest.approx(1.0, abs=1e-6)  # lag 0: d h/d h = I


def test_recurrent_spectra_per_gate_block():
  params = cells.LSTM.init(jax.random.PRNGKey(0), D, H)
  scales = [0.5, 1.0, 1.5, 2.0]
  blocks = [s * jnp.linalg.qr(jax.random.normal(jax.random.PRNGKey(i), (H, H)))[0]
            for i, s in enumerate(scales)]
  params["w_h"] = jnp.concatenate(blocks, axis=1)
  spectra = gradflow.recurrent_spectra("lstm", params)
  assert list(spectra) == ["i", "f", "g", "o"]
  for (gate, s), scale in zip(spectra.items(), scales):
    np.testing.assert_allclose(s["singular_values"], [scale] * H, rtol=1e-5)
    np.testing.assert_allclose(s["spectral_radius"], scale, rtol=1e-5)
  stack, sparams = _stack("gru", bidirectional=True)
  metrics = gradflow.spectrum_metrics(stack, sparams)
  assert len(metrics) == 2 * 2 * 3 * 2 and "spectrum/l1/bwd/n/radius" in metrics


# --- Pascanu et al. (2013) Omega -------------------------------------------------

def _brute_omega(cell, params, xs):
  """Omega of one layer with the full-carry cotangent a_k found by perturbing the
  whole carry at step k alone, and the Jacobian built explicitly per example."""
  cell = cells.get_cell(cell)
  flat = lambda c: jnp.concatenate(jax.tree.leaves(c), axis=-1)
  carry = cell.init_carry(params, xs.shape[:-2])
  unflat = lambda f: jax.tree.unflatten(jax.tree.structure(carry),
                                        jnp.split(f, len(jax.tree.leaves(carry)), axis=-1))

  def run(k, eps):
    c = carry
    ys = []
    for t in range(xs.shape[-2]):
      c, _ = cell.step(params, c, xs[..., t, :])
      c = unflat(flat(c) + eps) if t == k else c
      ys.append(cell.hidden(c))
    return jnp.stack(ys, axis=-2)
  prevs = [carry]
  for t in range(xs.shape[-2]):
    prevs.append(cell.step(params, prevs[-1], xs[..., t, :])[0])
  total = 0.0
  for k in range(xs.shape[-2]):
    eps = jnp.zeros_like(flat(carry))
    a = jax.lax.stop_gradient(jax.grad(lambda e: jnp.sum(_weighted_loss(run(k, e))))(eps))
    step = lambda f, x: flat(cell.step(params, unflat(f), x)[0])
    jac = jax.vmap(jax.jacfwd(step))(flat(prevs[k]), xs[..., k, :])  # (B, S, S)
    num = jnp.linalg.norm(jnp.einsum("bi,bij->bj", a, jac), axis=-1)
    total = total + (num / jnp.linalg.norm(a, axis=-1) - 1.0) ** 2
  return jnp.mean(total)


def test_omega_and_its_gradient_match_brute_force_tanh_rnn():
  # Jitted value and gradient, as the trainer will use it: loss + weight * Omega.
  stack, params = _stack("rnn", layers=1, seed=2)
  xs = _inputs(steps=4)
  got, got_grad = jax.jit(jax.value_and_grad(
      lambda p: gradflow.omega(_weighted_loss, stack, p, xs)))(params)
  want, want_grad = jax.jit(jax.value_and_grad(
      lambda p: _brute_omega("rnn", p, xs)))(params[0]["fwd"])
  np.testing.assert_allclose(got, want, rtol=1e-4)
  for name in ("w_h", "w_x", "b"):
    np.testing.assert_allclose(got_grad[0]["fwd"][name], want_grad[name], rtol=1e-3, atol=1e-6)


def test_omega_matches_brute_force_lstm_full_carry():
  stack, params = _stack("lstm", layers=1, seed=2)
  xs = _inputs(steps=4)
  want = jax.jit(lambda p: _brute_omega("lstm", p, xs))(params[0]["fwd"])
  np.testing.assert_allclose(_omega(_weighted_loss, stack, params, xs), want, rtol=1e-4)


def _time_free_loss(ys):
  """Per-example loss with no weight on t: a held (masked) step adds a constant."""
  return jnp.sum((1.0 + 0.1 * jnp.arange(ys.shape[-1])) * jnp.sin(3.0 * ys + 0.5) ** 2,
                 axis=(-2, -1))


def test_omega_with_mask_equals_sequences_without_the_masked_steps():
  # A masked step holds the carry, so it is as if the step were not there; row 0
  # is right-padded, row 1 has a gap that the LSTM's c must be carried across.
  stack, params = _stack("lstm", layers=1, bidirectional=True, seed=4)
  xs = _inputs()
  mask = np.array([[1, 1, 1, 0, 0], [1, 0, 1, 1, 1]], bool)
  got = _omega(_time_free_loss, stack, params, xs, mask=jnp.asarray(mask))
  alone = [_omega(_time_free_loss, stack, params, xs[b][m]) for b, m in enumerate(mask)]
  np.testing.assert_allclose(got, np.mean(alone), rtol=1e-4)


# --- plots -----------------------------------------------------------------------

def _is_png(path):
  with open(path, "rb") as f:
    return f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_plots_write_pngs(tmp_path):
  curves = {"rnn": np.geomspace(1e-6, 1.0, 20), "lstm x2": np.ones((2, 1, 20)) * 0.1}
  out = plots.grad_norm_curves(curves, tmp_path / "a" / "curves.png")
  assert out == str(tmp_path / "a" / "curves.png") and _is_png(out)

  flow = tmp_path / "gradflow.jsonl"
  flow.write_text("\n".join(json.dumps({"step": s, "dL_dh_norm": [[0.1 * (s + 1)] * 6] * 2})
                            for s in (20, 0, 10)))
  assert _is_png(plots.gradflow_heatmap(flow, tmp_path / "heat.png"))

  metrics = tmp_path / "metrics.jsonl"
  lines = [{"step": s, "train/loss": 2.0 / (s + 1), "grad/norm": 1.0 + s % 3,
            "grad/clipped": s % 3 == 2} for s in range(9)] + [{"step": 9, "eval/loss": 1.0}]
  metrics.write_text("\n".join(json.dumps(r) for r in lines))
  assert _is_png(plots.training_curves(metrics, tmp_path / "train.png", clip_norm=2.5))


def test_plots_reject_bad_inputs(tmp_path):
  with pytest.raises(ValueError, match="empty"):
    plots.grad_norm_curves({}, tmp_path / "x.png")
  with pytest.raises(ValueError, match="PNG"):
    plots.grad_norm_curves({"a": np.ones(3)}, tmp_path / "x.pdf")
  flow = tmp_path / "gradflow.jsonl"
  flow.write_text(json.dumps({"step": 0, "dL_dh_norm": [1.0, 2.0]}) + "\n"
                  + json.dumps({"step": 1, "dL_dh_norm": [1.0]}))
  with pytest.raises(ValueError, match="record 2"):
    plots.gradflow_heatmap(flow, tmp_path / "h.png")
  metrics = tmp_path / "metrics.jsonl"
  metrics.write_text(json.dumps({"step": 0, "eval/loss": 1.0}))
  with pytest.raises(ValueError, match="train/loss"):
    plots.training_curves(metrics, tmp_path / "t.png")


def test_step_norms_do_not_underflow_in_float32():
  """A 1e-25 gradient has norm 1e-25, not 0 (its squares underflow float32)."""
  g = jnp.full((2, 3, 4), 1e-25, jnp.float32)
  norms = gradflow.step_norms([{"fwd": g}])
  np.testing.assert_allclose(norms, 2e-25, rtol=1e-5)
  assert float(gradflow.step_norms([{"fwd": jnp.zeros((2, 3, 4))}]).max()) == 0.0

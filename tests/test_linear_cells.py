"""The linear recurrences (minGRU, minLSTM, LRU): their step, their sequential and parallel
forms in the engine agree, with every engine option, and their initialisation is the papers'."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import quiet, rows, small_config
from rnnlab import cells, engine
from rnnlab.errors import InvalidConfigError
from rnnlab.training import job as job_lib
from rnnlab.training import trainer, vmapped
from rnnlab.training import workdir as workdir_lib

LINEAR = ["mingru", "minlstm", "lru"]
B, T, D, H = 3, 11, 4, 6


def setup(name, input_size=D, **options):
  cell = cells.get_cell(name)
  k_p, k_x, k_c = jax.random.split(jax.random.PRNGKey(0), 3)
  params = cell.init(k_p, input_size, H, **options)
  xs = jax.random.normal(k_x, (B, T, input_size))
  carry = 0.5 * jax.random.normal(k_c, (B, H))
  return cell, params, xs, carry


def stepwise(cell, params, xs, carry, reverse=False, lengths=None, dh=None):
  """The definition: the cell's step, one time step at a time, in Python."""
  ys, carries = [None] * T, [None] * T
  order = range(T - 1, -1, -1) if reverse else range(T)
  for t in order:
    new, y = cell.step(params, carry, xs[:, t])
    if dh is not None:
      new = new + dh[:, t]
      y = cell.output(params, new, cell.project(params, xs[:, t]))
    if lengths is not None:
      valid = (t < lengths)[:, None]
      new, y = jnp.where(valid, new, carry), jnp.where(valid, y, 0.0)
    carry, ys[t], carries[t] = new, y, new
  return carry, jnp.stack(ys, 1), jnp.stack(carries, 1)


@pytest.mark.parametrize("name", LINEAR)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("masked", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_parallel_and_sequential_forms_equal_the_step(name, reverse, masked):
  cell, params, xs, carry = setup(name)
  lengths = jnp.array([T, 7, 1]) if masked else None
  dh = 0.1 * jax.random.normal(jax.random.PRNGKey(5), (B, T, H))
  want = stepwise(cell, params, xs, carry, reverse, lengths, dh)
  for parallel in (False, True):
    got = engine.scan(cell, params, xs, carry=carry, lengths=lengths, reverse=reverse,
                      parallel=parallel, return_carries=True, perturbation=dh)
    for w, g in zip(want, got):
      np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("name", LINEAR)
def test_gradients_agree_between_the_forms(name):
  cell, params, xs, carry = setup(name)
  lengths = jnp.array([T, 5, 2])

  def loss(params, carry, parallel):
    final, ys = engine.scan(cell, params, xs, carry=carry, lengths=lengths, parallel=parallel)
    return jnp.sum(ys ** 2) + jnp.sum(jnp.sin(final))

  def loss_steps(params, carry):
    final, ys, _ = stepwise(cell, params, xs, carry, lengths=lengths)
    return jnp.sum(ys ** 2) + jnp.sum(jnp.sin(final))

  want = jax.grad(loss_steps, argnums=(0, 1))(params, carry)
  for parallel in (False, True):
    got = jax.grad(loss, argnums=(0, 1))(params, carry, parallel)
    for w, g in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
      np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", LINEAR)
def test_stacked_bidirectional_residual_runs_both_forms_alike(name):
  stack = engine.make_stack(name, H, 2, bidirectional=True, residual=True)
  params = engine.init_stack(jax.random.PRNGKey(1), stack, D)
  xs = jax.random.normal(jax.random.PRNGKey(2), (B, T, D))
  outs = [engine.apply_stack(stack, params, xs, lengths=jnp.array([T, 4, 9]), parallel=p)
          for p in (False, True)]
  for a, b in zip(jax.tree.leaves(outs[0]), jax.tree.leaves(outs[1])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-5)
  assert outs[0][1].shape == (B, T, 2 * H)


def test_jit_and_vmap_over_parameters():
  cell, params, xs, carry = setup("lru")
  run = jax.jit(lambda p: engine.scan(cell, p, xs, parallel=True)[1])
  stacked = jax.tree.map(lambda a: jnp.stack([a, 2 * a]), params)
  ys = jax.vmap(run)(stacked)
  np.testing.assert_allclose(np.asarray(ys[0]), np.asarray(run(params)), rtol=1e-5, atol=1e-6)


def test_mingru_is_the_gru_with_gates_of_x_only():
  cell, params, xs, carry = setup("mingru")
  x = xs[:, 0]
  xp = x @ params["w_x"] + params["b"]
  z = jax.nn.sigmoid(xp[:, :H])
  want = (1 - z) * carry + z * xp[:, H:]
  np.testing.assert_allclose(np.asarray(cell.step(params, carry, x)[0]), np.asarray(want),
                             rtol=1e-6)


def test_minlstm_gates_are_normalised():
  cell, params, xs, carry = setup("minlstm")
  x = xs[:, 0]
  xp = x @ params["w_x"] + params["b"]
  f, i = jax.nn.sigmoid(xp[:, :H]), jax.nn.sigmoid(xp[:, H:2 * H])
  want = f / (f + i) * carry + i / (f + i) * xp[:, 2 * H:]
  np.testing.assert_allclose(np.asarray(cell.step(params, carry, x)[0]), np.asarray(want),
                             rtol=1e-5, atol=1e-6)


def test_lru_ring_initialisation_and_normalisation():
  cell = cells.get_cell("lru")
  params = cell.init(jax.random.PRNGKey(3), 5, 512, r_min=0.5, r_max=0.9, max_phase=0.3)
  lam = np.exp(-np.exp(np.asarray(params["nu_log"])) + 1j * np.exp(np.asarray(
      params["theta_log"])))
  modulus, phase = np.abs(lam), np.angle(lam)
  assert modulus.min() >= 0.5 - 1e-6 and modulus.max() <= 0.9 + 1e-6
  assert phase.min() >= 0 and phase.max() <= 0.3 + 1e-6
  # uniform in area on the ring: the median of r^2 is the midpoint of [r_min^2, r_max^2]
  assert abs(np.median(modulus ** 2) - (0.25 + 0.81) / 2) < 0.05
  np.testing.assert_allclose(np.exp(np.asarray(params["gamma_log"])),
                             np.sqrt(1 - modulus ** 2), rtol=1e-5)
  assert "D" not in params  # no skip when D != H
  assert "D" in cell.init(jax.random.PRNGKey(3), 8, 8)


def test_lru_step_is_the_complex_recurrence():
  cell, params, xs, carry = setup("lru", input_size=H)
  n = H // 2
  lam = np.exp(-np.exp(np.asarray(params["nu_log"])) + 1j * np.exp(np.asarray(
      params["theta_log"])))
  b = np.asarray(params["B_re"]) + 1j * np.asarray(params["B_im"])
  c = np.asarray(params["C_re"]) + 1j * np.asarray(params["C_im"])
  x0 = np.asarray(carry[:, :n]) + 1j * np.asarray(carry[:, n:])
  u = np.asarray(xs[:, 0])
  x1 = lam * x0 + np.exp(np.asarray(params["gamma_log"])) * (u @ b)
  y1 = np.real(x1 @ c) + np.asarray(params["D"]) * u
  new, y = cell.step(params, carry, xs[:, 0])
  np.testing.assert_allclose(np.asarray(new), np.concatenate([x1.real, x1.imag], -1),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(y), y1, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("call,message", [
    (lambda: engine.scan("lstm", cells.get_cell("lstm").init(jax.random.PRNGKey(0), D, H),
                         jnp.zeros((B, T, D)), parallel=True),
     r"Cell 'lstm' has no parallel form over time .* cells with one: lru, mingru, minlstm"),
    (lambda: cells.get_cell("lru").init(jax.random.PRNGKey(0), D, 5), "even hidden_size"),
    (lambda: cells.get_cell("lru").init(jax.random.PRNGKey(0), D, H, r_min=0.99, r_max=0.9),
     r"0 <= r_min < r_max <= 1"),
    (lambda: cells.get_cell("lru").init(jax.random.PRNGKey(0), D, H, recurrent_init="identity"),
     r"unknown option\(s\) \['recurrent_init'\]; valid options: \['max_phase', 'r_max', 'r_min'\]"),
    (lambda: cells.get_cell("mingru").init(jax.random.PRNGKey(0), D, H, forget_bias=1.0),
     r"unknown option\(s\) \['forget_bias'\]; valid options: none and input_init, bias_init"),
    (lambda: cells.check_options("mingru", {"recurrent_init": "identity"}),
     r"do not apply to cell 'mingru'; it takes input_init, bias_init"),
    (lambda: engine.scan("mingru", cells.get_cell("mingru").init(jax.random.PRNGKey(0), D, H),
                         jnp.zeros((B, T, D)), parallel="yes"), "parallel must be None"),
])
def test_bad_requests_say_what_is_valid(call, message):
  with pytest.raises(ValueError, match=message):
    call()


# --- through the trainer: every feature the classic cells have ----------------------------

def _adding(cell, **changes):
  return small_config("adding", **{
      "task.seq_len": 6, "task.eval_size": 16, "model.cell": cell, "model.hidden_size": 8,
      "model.num_layers": 2, "model.residual": True, "train.batch_size": 8,
      "train.num_steps": 8, "train.log_every": 4, "train.eval_every": 4,
      "train.checkpoint_every": 4, **changes})


@pytest.mark.parametrize("name, resume", [
    ("lru", False), pytest.param("lru", True, marks=pytest.mark.slow),
    pytest.param("mingru", False, marks=pytest.mark.slow),
    pytest.param("minlstm", False, marks=pytest.mark.slow)])
def test_trains_and_records_gradient_flow(name, resume, tmp_path):
  """Through the trainer, with the parallel form, stacked and residual; gradflow.every works;
  (resume) a resumed run equals the uninterrupted one."""
  config = _adding(name, **{"model.parallel": True, "gradflow.every": 4})
  workdir = str(tmp_path)
  summary = trainer.train_and_evaluate(config, workdir, console=quiet)
  assert np.isfinite(summary["final"]["eval/loss"])
  assert len(workdir_lib.read_jsonl(os.path.join(workdir, workdir_lib.GRADFLOW))) == 3
  if resume:
    full = rows(workdir)
    os.remove(os.path.join(workdir, workdir_lib.SUMMARY))
    shutil.rmtree(os.path.join(workdir, "checkpoints", "8"))
    trainer.train_and_evaluate(config, workdir, console=quiet)
    assert rows(workdir) == full


@pytest.mark.slow  # the seq2seq model runs any cell through engine.scan, checked for these above
def test_seq2seq_with_linear_encoder_and_decoder(tmp_path):
  config = small_config("reverse", seq2seq=True, **{
      "task.seq_len": 4, "task.num_symbols": 5, "task.eval_size": 8, "model.cell": "lru",
      "model.decoder_cell": "mingru", "model.hidden_size": 8, "model.embed_size": 4,
      "model.attention": "bahdanau", "model.parallel": True, "train.batch_size": 8,
      "train.num_steps": 4, "train.log_every": 2, "train.eval_every": 4,
      "train.checkpoint_every": 4})
  summary = trainer.train_and_evaluate(config, str(tmp_path), console=quiet)
  assert np.isfinite(summary["final"]["eval/loss"])


@pytest.mark.slow  # vmapping is cell-blind (test_vmap_runs.py); this confirms it for minlstm
def test_vmapped_seeds_equal_runs_one_by_one(tmp_path):
  configs = [_adding("minlstm", seed=s) for s in (0, 1)]
  dirs = [str(tmp_path / f"v{i}") for i in range(2)]
  together = vmapped.train_runs(configs, dirs, console=quiet)
  for config, summary in zip(configs, together):
    alone = trainer.train_and_evaluate(config, str(tmp_path / f"a{config.seed}"), console=quiet)
    assert summary["final"]["eval/loss"] == pytest.approx(alone["final"]["eval/loss"], rel=1e-5)


def test_config_asking_for_a_parallel_form_the_cell_lacks_is_refused():
  with pytest.raises(InvalidConfigError, match=r"model.Cell 'gru' has no parallel form"):
    job_lib.build(_adding("gru", **{"model.parallel": True}))
  with pytest.raises(InvalidConfigError, match=r"r_min < r_max"):
    job_lib.init_state(job_lib.build(_adding("lru", **{
        "model.cell_options.r_min": 0.999, "model.cell_options.r_max": 0.9})))


def test_deep_glu_blocks_drop_out_only_in_training():
  """(The trainer runs glu blocks in test_configs.py: configs/linear.py.)"""
  config = _adding("lru", **{"model.block": "glu", "model.dropout": 0.25})
  job = job_lib.build(config)
  params = job.model.init(jax.random.PRNGKey(0), job.task, config.model)
  assert set(params) == {"encoder", "layers", "blocks", "readout"}
  assert len(params["blocks"]) == 2 and params["blocks"][0]["glu"]["kernel"].shape == (8, 16)
  batch = job.task.eval_batches(4)[0]
  run = lambda train, seed: job.model.apply(params, batch, task=job.task, model_cfg=config.model,
                                            train=train, rng=jax.random.PRNGKey(seed), step=0)
  np.testing.assert_array_equal(np.asarray(run(False, 0)), np.asarray(run(False, 1)))
  assert not np.allclose(np.asarray(run(True, 0)), np.asarray(run(True, 1)))


@pytest.mark.parametrize("changes,message", [
    ({"model.block": "deep"}, r"Unknown model.block 'deep'; valid: none, glu"),
    ({"model.block": "glu", "model.bidirectional": True}, "set bidirectional False"),
    ({"model.dropout": 0.1}, r"applies inside model.block='glu' blocks"),
    ({"model.block": "glu", "model.dropout": 1.0}, r"model.dropout must be in \[0, 1\)"),
])
def test_bad_block_settings_are_refused(changes, message):
  with pytest.raises(InvalidConfigError, match=message):
    job_lib.build(_adding("mingru", **changes))

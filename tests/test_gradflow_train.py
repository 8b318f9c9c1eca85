"""The gradient-flow recorder: its records, resume behaviour, and that it never changes training.

One tiny adding run is trained with the recorder (``gradflow.every``) and once
more without it; both share an in-process persistent compilation cache, so
only the first compiles.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import quiet, rows, tiny
from configs import adding, copy
from rnnlab import engine, gradflow, models
from rnnlab.training import analyses, trainer
from rnnlab.training import job as job_lib
from rnnlab.training import workdir as workdir_lib
from rnnlab.training.plugins import Plugin

N, EVERY = 4, 2
TINY = {"task.seq_len": 6, "task.eval_size": 4, "model.cell": "rnn", "model.hidden_size": 4,
        "model.num_layers": 2, "optim.name": "sgd", "train.batch_size": 4, "train.num_steps": N,
        "train.log_every": 1, "train.eval_every": 0, "train.checkpoint_every": 0}


def tiny_config(**changes):
  return tiny(adding, **{**TINY, **changes})


class Capture(Plugin):
  """A plugin keeping the state after every step."""
  every = 1

  def __init__(self):
    self.states = {}

  def act(self, step, state):
    self.states[step] = state


@pytest.fixture(scope="module")
def runs(tmp_path_factory, compile_cache):
  """(with the recorder: workdir, capture, job), (without: workdir, capture)."""
  del compile_cache
  hooked, plain = (str(tmp_path_factory.mktemp(n)) for n in ("hooked", "plain"))
  seen = Capture()
  trainer.train_and_evaluate(tiny_config(**{"gradflow.every": EVERY}), hooked, plugins=[seen],
                             console=quiet)
  alone = Capture()
  trainer.train_and_evaluate(tiny_config(), plain, plugins=[alone], console=quiet)
  return (hooked, seen, job_lib.build(tiny_config())), (plain, alone)


def test_measuring_does_not_change_the_trajectory(runs):
  (hooked, seen, _), (plain, alone) = runs
  assert rows(hooked) == rows(plain) and len(rows(plain)) == N
  assert sorted(seen.states) == sorted(alone.states) == list(range(1, N + 1))
  for step in seen.states:
    for a, b in zip(jax.tree.leaves(seen.states[step]), jax.tree.leaves(alone.states[step])):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@jax.jit
def _reference_norms(params, batch):
  """dL/dh_t norms through gradflow.dL_dh_norms on the stack and an explicit readout."""
  stack = engine.make_stack("rnn", TINY["model.hidden_size"], TINY["model.num_layers"])
  readout = params["readout"]

  def mse(ys):
    prediction = (ys[:, -1] @ readout["kernel"] + readout["bias"])[:, 0]
    return (prediction - batch["y"]) ** 2  # per-example: no batch-size rescaling involved
  return gradflow.dL_dh_norms(mse, stack, params["layers"], batch["x"])[:, 0]


def test_records_are_the_gradient_of_update_s_plus_1(runs):
  (hooked, seen, _), _ = runs
  with open(os.path.join(hooked, workdir_lib.GRADFLOW)) as f:
    records = [json.loads(line) for line in f]
  assert [r["step"] for r in records] == [0, 2, 4]  # init, every 2nd, last
  job = job_lib.build(tiny_config())
  params = {0: job_lib.init_state(job).params, **{s: seen.states[s].params for s in (2, 4)}}
  for r in records:
    assert np.shape(r["dL_dh_norm"]) == (2, 6)  # one direction: a list over t per layer
    batch = job.task.train_batch(r["step"], job.batch_size)
    np.testing.assert_allclose(r["dL_dh_norm"], _reference_norms(params[r["step"]], batch),
                               rtol=1e-5)
  steps, norms = analyses.read_gradflow(hooked)
  assert steps.tolist() == [0, 2, 4] and norms.shape == (3, 2, 6)


def test_resume_keeps_earlier_records_and_a_fresh_start_rewrites(runs):
  (hooked, seen, job), _ = runs
  path = os.path.join(hooked, workdir_lib.GRADFLOW)
  with open(path) as f:
    full = f.read()
  with open(path, "a") as f:
    f.write('{"step": 4, "dL_dh_norm": [1, 2]}\n{"step": 9, "dL_d')  # killed mid-write
  resumed = analyses.GradflowRecorder(EVERY)
  resumed.start(job, hooked, 2, seen.states[2])  # restored from the checkpoint of step 2
  resumed.act(4, seen.states[4])
  with open(path) as f:
    assert f.read() == full
  fresh = analyses.GradflowRecorder(EVERY, initial=False)
  fresh.start(job, hooked, 0, seen.states[1])
  with open(path) as f:
    assert f.read() == ""


def test_perturbed_apply_matches_the_model():
  """The registered apply with zero perturbations is the model's (bidirectional, "all"
  outputs, variable lengths)."""
  config = tiny(copy, **{
      "task.seq_len": 1, "model.cell": "rnn", "model.hidden_size": 2, "model.num_layers": 1,
      "model.bidirectional": True, "train.batch_size": 2})
  job, steps = job_lib.build(config), 21
  params = job.model.init(jax.random.PRNGKey(0), job.task, config.model)
  batch = {**job.task.train_batch(0, 2), "lengths": jnp.array([steps, 9])}
  kw = dict(task=job.task, model_cfg=config.model, train=True, rng=jax.random.PRNGKey(1), step=0)
  perturbable = analyses.get_perturbable("classifier")
  zeros = gradflow.zero_perturbations(models._stack(config.model), (2,), steps)
  both = jax.jit(lambda p, b: (job.model.apply(p, b, **kw),
                               perturbable.apply(p, b, perturbations=zeros, **kw)))
  np.testing.assert_array_equal(*both(params, batch))


def test_loss_and_omega_match_gradflow_and_the_plain_loss():
  config = tiny_config()
  job = job_lib.build(config)
  params = job.model.init(jax.random.PRNGKey(0), job.task, config.model)
  batch = job.task.train_batch(3, 4)
  stack = engine.make_stack("rnn", config.model.hidden_size, config.model.num_layers)

  def mse(ys):  # the adding loss written out on the stack's outputs
    readout = params["readout"]
    return jnp.mean(((ys[:, -1] @ readout["kernel"] + readout["bias"])[:, 0] - batch["y"]) ** 2)

  @jax.jit
  def everything(p):
    ours = analyses.loss_and_omega(job.task, config.model, p, batch,
                                         rng=jax.random.PRNGKey(1), step=3)
    omega_grads = jax.grad(lambda q: analyses.loss_and_omega(
        job.task, config.model, q, batch, rng=jax.random.PRNGKey(1), step=3)[2])(p)
    reference = (mse(engine.apply_stack(stack, p["layers"], batch["x"])[1]),
                 gradflow.omega(mse, stack, p["layers"], batch["x"]),
                 gradflow.dL_dh_norms(mse, stack, p["layers"], batch["x"]))
    return ours, omega_grads, reference

  (loss, metrics, omega, dl_dh), omega_grads, (ref_loss, ref_omega, ref_norms) = everything(params)
  np.testing.assert_allclose([loss, metrics["loss"], omega], [ref_loss, ref_loss, ref_omega],
                             rtol=1e-5)
  assert omega > 0
  # dl_dh is of the batch-mean loss: 1/B of gradflow's per-example convention.
  np.testing.assert_allclose(4 * gradflow.step_norms(dl_dh), ref_norms, rtol=1e-5)
  # Omega reaches the recurrent weights only, never the readout.
  np.testing.assert_array_equal(omega_grads["readout"]["kernel"], 0.0)
  assert np.any(np.asarray(omega_grads["layers"][0]["fwd"]["w_h"]) != 0)


def test_bad_arguments_raise_clear_errors(runs):
  (hooked, _, _), _ = runs
  for every in (0, 1.5, True):
    with pytest.raises(ValueError, match="every .* must be an integer >= 1"):
      analyses.GradflowRecorder(every)
  with pytest.raises(ValueError, match="does not support model.kind 'seq2seq'.*classifier"):
    analyses.get_perturbable("seq2seq")
  with pytest.raises(ValueError, match="holds no records"):
    analyses.read_gradflow(os.path.dirname(hooked))


def test_config_fields_turn_on_the_recorder_and_omega(tmp_path):
  """gradflow.every writes gradflow.jsonl through launch's path; omega_weight adds train/omega."""
  import json as _json
  from configs import base
  config = base.get_config("adding")
  config.task.seq_len, config.task.eval_size = 5, 4
  config.model.cell, config.model.hidden_size = "rnn", 3
  config.train.batch_size, config.train.num_steps = 2, 4
  config.train.log_every, config.train.eval_every, config.train.checkpoint_every = 2, 0, 0
  config.gradflow.every = 2
  config.optim.omega_weight = 0.5
  trainer.train_and_evaluate(config, str(tmp_path), console=lambda line: None)
  records = [_json.loads(l) for l in open(tmp_path / "gradflow.jsonl")]
  assert [r["step"] for r in records] == [0, 2, 4]
  assert all(len(r["dL_dh_norm"]) == 5 for r in records)
  rows = [_json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert all(r["train/omega"] >= 0 for r in rows if "train/loss" in r)

"""The gradient-flow hook: its records, resume behaviour, and that it never changes training.

One tiny adding run is trained with the hook and once more without it; both
share an in-process persistent compilation cache, so only the first compiles.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.compilation_cache import compilation_cache

from configs import adding, copy
from rnnlab import config_utils, engine, gradflow, gradflow_train, metrics_io, models, train

N, EVERY = 4, 2
TINY = {"task.seq_len": 6, "task.eval_size": 4, "model.cell": "rnn", "model.hidden_size": 4,
        "model.num_layers": 2, "optim.name": "sgd", "train.batch_size": 4, "train.num_steps": N,
        "train.log_every": 1, "train.eval_every": 0, "train.checkpoint_every": 0}


def tiny_config(**changes):
  return config_utils.override(adding.get_config(), {**TINY, **changes})


def quiet(line):
  del line


class Capture:
  """A hook keeping the state after every step."""

  def __init__(self):
    self.states = {}

  def __call__(self, step, state):
    self.states[step] = state


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
  """A persistent compilation cache for this module only: the second run loads, not compiles."""
  names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
  old = {n: getattr(jax.config, n) for n in names}
  jax.config.update(names[0], str(tmp_path_factory.mktemp("jit")))
  jax.config.update(names[1], 0.0)
  compilation_cache.reset_cache()
  yield
  for n, v in old.items():
    jax.config.update(n, v)
  compilation_cache.reset_cache()


def rows(workdir):
  """metrics.jsonl without the timing fields (which differ between any two runs)."""
  return [{k: v for k, v in r.items() if not k.startswith("perf/")}
          for r in metrics_io.read_rows(os.path.join(workdir, metrics_io.METRICS))]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, compile_cache):
  """(with hook: workdir, capture, hook), (without: workdir, capture)."""
  del compile_cache
  hooked, plain = (str(tmp_path_factory.mktemp(n)) for n in ("hooked", "plain"))
  hook, seen = gradflow_train.make_hook(tiny_config(), hooked, EVERY), Capture()
  train.train_and_evaluate(tiny_config(), hooked, hooks=[hook, seen], console=quiet)
  alone = Capture()
  train.train_and_evaluate(tiny_config(), plain, hooks=[alone], console=quiet)
  return (hooked, seen, hook), (plain, alone)


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
  with open(os.path.join(hooked, gradflow_train.GRADFLOW)) as f:
    records = [json.loads(line) for line in f]
  assert [r["step"] for r in records] == [0, 2, 4]  # init, every 2nd, last
  job = train.build(tiny_config())
  params = {0: train.init_state(job).params, **{s: seen.states[s].params for s in (2, 4)}}
  for r in records:
    assert np.shape(r["dL_dh_norm"]) == (2, 6)  # one direction: a list over t per layer
    batch = job.task.train_batch(r["step"], job.batch_size)
    np.testing.assert_allclose(r["dL_dh_norm"], _reference_norms(params[r["step"]], batch),
                               rtol=1e-5)
  steps, norms = gradflow_train.read_gradflow(hooked)
  assert steps.tolist() == [0, 2, 4] and norms.shape == (3, 2, 6)


def test_resume_keeps_earlier_records_and_a_fresh_start_rewrites(runs):
  (hooked, seen, hook), _ = runs
  path = os.path.join(hooked, gradflow_train.GRADFLOW)
  with open(path) as f:
    full = f.read()
  with open(path, "a") as f:
    f.write('{"step": 4, "dL_dh_norm": [1, 2]}\n{"step": 9, "dL_d')  # killed mid-write
  resumed = gradflow_train.GradflowHook(hook.measurer, hooked, EVERY)
  for step in (3, 4):  # restored from the checkpoint of step 2
    resumed(step, seen.states[step])
  with open(path) as f:
    assert f.read() == full
  fresh = gradflow_train.GradflowHook(hook.measurer, hooked, EVERY, initial=False)
  fresh(1, seen.states[1])
  with open(path) as f:
    assert f.read() == ""


def test_perturbed_apply_matches_the_model():
  """The registered apply with zero perturbations is the model's (bidirectional, "all"
  outputs, variable lengths)."""
  config = config_utils.override(copy.get_config(), {
      "task.seq_len": 1, "model.cell": "rnn", "model.hidden_size": 2, "model.num_layers": 1,
      "model.bidirectional": True, "train.batch_size": 2})
  job, steps = train.build(config), 21
  params = job.model.init(jax.random.PRNGKey(0), job.task, config.model)
  batch = {**job.task.train_batch(0, 2), "lengths": jnp.array([steps, 9])}
  kw = dict(task=job.task, model_cfg=config.model, train=True, rng=jax.random.PRNGKey(1), step=0)
  perturbable = gradflow_train.get_perturbable("classifier")
  zeros = gradflow.zero_perturbations(models._stack(config.model), (2,), steps)
  both = jax.jit(lambda p, b: (job.model.apply(p, b, **kw),
                               perturbable.apply(p, b, perturbations=zeros, **kw)))
  np.testing.assert_array_equal(*both(params, batch))


def test_loss_and_omega_match_gradflow_and_the_plain_loss():
  config = tiny_config()
  job = train.build(config)
  params = job.model.init(jax.random.PRNGKey(0), job.task, config.model)
  batch = job.task.train_batch(3, 4)
  stack = engine.make_stack("rnn", config.model.hidden_size, config.model.num_layers)

  def mse(ys):  # the adding loss written out on the stack's outputs
    readout = params["readout"]
    return jnp.mean(((ys[:, -1] @ readout["kernel"] + readout["bias"])[:, 0] - batch["y"]) ** 2)

  @jax.jit
  def everything(p):
    ours = gradflow_train.loss_and_omega(job.task, config.model, p, batch,
                                         rng=jax.random.PRNGKey(1), step=3)
    omega_grads = jax.grad(lambda q: gradflow_train.loss_and_omega(
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
  (hooked, _, hook), _ = runs
  for every in (0, 1.5, True):
    with pytest.raises(ValueError, match="every must be an integer >= 1"):
      gradflow_train.GradflowHook(hook.measurer, hooked, every)
  with pytest.raises(ValueError, match="does not support model.kind 'seq2seq'.*classifier"):
    gradflow_train.get_perturbable("seq2seq")
  with pytest.raises(ValueError, match="holds no records"):
    gradflow_train.read_gradflow(os.path.dirname(hooked))


def test_config_fields_turn_on_the_hook_and_omega(tmp_path):
  """gradflow.every writes gradflow.jsonl through launch's path; omega_weight adds train/omega."""
  import json as _json
  from configs import base
  from rnnlab import train as train_lib
  config = base.get_config("adding")
  config.task.seq_len, config.task.eval_size = 5, 4
  config.model.cell, config.model.hidden_size = "rnn", 3
  config.train.batch_size, config.train.num_steps = 2, 4
  config.train.log_every, config.train.eval_every, config.train.checkpoint_every = 2, 0, 0
  config.gradflow.every = 2
  config.optim.omega_weight = 0.5
  train_lib.train_and_evaluate(config, str(tmp_path), console=lambda line: None)
  records = [_json.loads(l) for l in open(tmp_path / "gradflow.jsonl")]
  assert [r["step"] for r in records] == [0, 2, 4]
  assert all(len(r["dL_dh_norm"]) == 5 for r in records)
  rows = [_json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert all(r["train/omega"] >= 0 for r in rows if "train/loss" in r)

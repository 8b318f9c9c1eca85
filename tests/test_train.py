"""The training loop: outputs, exact resume after SIGKILL, NaN guard, refusals."""

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import types

import jax
import numpy as np
import pytest

from conftest import REPO, final_state, quiet, rows, small_config, tiny
from configs import adding, base
from rnnlab import models
from rnnlab.errors import CheckpointError, ConfigMismatchError, InvalidConfigError, NonFiniteError
from rnnlab.training import periodic, trainer
from rnnlab.training import config as config_lib
from rnnlab.training import job as job_lib
from rnnlab.training import workdir as workdir_lib

N = 8
# Rows at steps 1, 2, 4, 6, 8 (log), eval at 4 and 8, checkpoints at 3, 6 and 8.
TINY = {"task.seq_len": 6, "task.eval_size": 8, "model.hidden_size": 4, "train.batch_size": 4,
        "train.num_steps": N, "train.log_every": 2, "train.eval_every": 4,
        "train.checkpoint_every": 3, "train.keep_checkpoints": 3}


def tiny_config(**changes):
  return tiny(adding, **{**TINY, **changes})


def tb_events(workdir):
  """Every event in the workdir's TensorBoard files: (step, {tag: value}, session_log status)."""
  _, event_pb2, _, _ = workdir_lib.tensorboardx()
  events = []
  for name in sorted(os.listdir(workdir)):
    if name.startswith("events.out.tfevents"):
      with open(os.path.join(workdir, name), "rb") as f:
        data = f.read()
      i = 0
      while i < len(data):  # records: length (8 bytes), crc (4), event, crc (4)
        n = struct.unpack("<Q", data[i:i + 8])[0]
        event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
        status = event_pb2.SessionLog.SessionStatus.Name(event.session_log.status)
        events.append((event.step, {v.tag: v.simple_value for v in event.summary.value}, status))
        i += 16 + n
  return events


def assert_same_state(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  """Subprocess environment; all runs of the tiny config share one disk cache of compiled
  programs, so only the first one compiles."""
  return {**os.environ, "PYTHONPATH": REPO,
          "JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("jit")),
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
          "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


def launch(workdir, env):
  flags = [f"--config.{k}={v}" for k, v in TINY.items()]
  return subprocess.run([sys.executable, "launch.py", "--config=configs/adding.py",
                         f"--workdir={workdir}", *flags], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, env):
  """An uninterrupted tiny run, the README's way: (workdir, summary, console lines)."""
  workdir = str(tmp_path_factory.mktemp("reference"))
  out = launch(workdir, env)
  assert out.returncode == 0, out.stderr[-2000:]
  with open(os.path.join(workdir, "summary.json")) as f:
    return workdir, json.load(f), out.stdout.strip().splitlines()


def test_gradient_norm_window_sees_every_step(tmp_path):
  """grad/norm_max and grad/norm_mean cover every step since the last log, not only the
  logged one: a run logging every 4 steps reports the max and mean of the per-step norms
  that the same run logging every step reports."""
  each = rows(trainer_run(tmp_path / "each", **{"train.log_every": 1}))
  every4 = rows(trainer_run(tmp_path / "every4", **{"train.log_every": 4}))
  norms = {r["step"]: r["grad/norm"] for r in each}
  assert [r["step"] for r in every4] == [1, 4, 8]
  for r, steps in zip(every4, ([1], [2, 3, 4], [5, 6, 7, 8])):
    assert r["grad/norm"] == pytest.approx(norms[steps[-1]], rel=1e-6)
    assert r["grad/norm_max"] == pytest.approx(max(norms[s] for s in steps), rel=1e-6)
    assert r["grad/norm_mean"] == pytest.approx(np.mean([norms[s] for s in steps]), rel=1e-6)
  # not vacuous: within a window the norms differ, and the max is not the logged step's
  assert any(r["grad/norm_max"] > r["grad/norm"] * (1 + 1e-6) for r in every4)


def trainer_run(workdir, **changes):
  trainer.train_and_evaluate(tiny_config(**changes), str(workdir), console=quiet)
  return str(workdir)


def test_classifier_reads_out_at_the_last_valid_step_or_at_every_step():
  """Padded sequences (lengths 5, 2, 4) give what each sequence gives unpadded.

  Two bidirectional layers: the forward direction is the unidirectional model.
  """
  cfg = base.model()
  cfg.update({"cell": "gru", "hidden_size": 3, "num_layers": 2, "bidirectional": True})
  kind = models.get_model("classifier")
  last = types.SimpleNamespace(input_size=2, output_size=4, output_mode="last")
  every = types.SimpleNamespace(input_size=2, output_size=4, output_mode="all")
  params = kind.init(jax.random.PRNGKey(0), last, cfg)
  x = jax.random.normal(jax.random.PRNGKey(1), (3, 5, 2))
  lengths = np.array([5, 2, 4])
  apply = lambda task, batch: np.asarray(kind.apply(params, batch, task=task, model_cfg=cfg,
                                                    train=False, rng=None, step=0))
  out_last = apply(last, {"x": x, "lengths": lengths})
  out_all = apply(every, {"x": x, "lengths": lengths})
  assert out_last.shape == (3, 4) and out_all.shape == (3, 5, 4)
  for i, n in enumerate(lengths):
    alone = {"x": x[i:i + 1, :n]}
    np.testing.assert_allclose(out_last[i], apply(last, alone)[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out_all[i, :n], apply(every, alone)[0], rtol=1e-5, atol=1e-6)


def test_the_last_line_says_how_to_install_tensorboard_when_it_is_missing(monkeypatch):
  import importlib.util  # pylint: disable=g-import-not-at-top
  assert "install" not in trainer.outputs_line("runs/x")
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name == "tensorboard" else real(name, *a))
  assert trainer.outputs_line("runs/x").endswith(
      "tensorboard --logdir runs/x (install it first: pip install 'rnnlab[tensorboard]')")


def test_beating_the_baseline_takes_a_margin():
  assert not trainer.beats_baseline(0.1276, 0.125, True) and trainer.beats_baseline(0.17, 0.125, True)
  assert trainer.beats_baseline(0.158, 1 / 6, False) and not trainer.beats_baseline(0.16, 1 / 6, False)


def test_itstime():
  at = lambda every, first=False: [s for s in range(1, 11) if periodic.itstime(s, every, 10, first)]
  assert at(3) == [3, 6, 9, 10]
  assert at(5, first=True) == [1, 5, 10]
  assert at(0) == [10] and at(20) == [10]


def test_steps_per_second_count_training_only_and_the_eta_adds_the_evaluations(monkeypatch):
  """10 steps of 1 s; an evaluation (10 s) after steps 4 and 8 and 10: the rate stays 1
  step/s, and the ETA is the steps left plus the evaluations left at their measured cost."""
  now = [0.0]
  monkeypatch.setattr(periodic.time, "time", lambda: now[0])
  due = lambda s: (s % 4 == 0 or s == 10, s % 4 == 0 or s == 10, False, False)
  clock = periodic.Clock(0, 0.0, 10, due)
  assert clock.ahead == {(True, True, False, False): 3}
  speeds = []
  for step in range(1, 11):
    now[0] += 1.0  # the step
    if any(due(step)):
      clock.pause(step)
      now[0] += 10.0  # the evaluation
      timing = clock.tick(step)
      speeds.append((step, timing["perf/steps_per_sec"], clock.eta(step, 1.0)))
      clock.resume(step)
  assert [round(r, 6) for _, r, _ in speeds] == [1.0, 1.0, 1.0]
  # After step 4 no evaluation had finished (0 s known); after step 8: 2 steps + 1 eval.
  assert speeds[0][2] == pytest.approx(6.0) and speeds[1][2] == pytest.approx(2.0 + 10.0)
  assert clock.wall() == pytest.approx(40.0)


def test_workdir_outputs(reference):
  workdir, summary, lines = reference
  assert lines[0].startswith("adding T=6") and "steps 0->8" in lines[0]
  assert re.match(r"step 1/8 \| train/loss .* 1 step\(s\) in .*s incl\. compilation$", lines[1])
  assert re.match(r"step 2/8 \| train/loss .* \| [\d.]+ steps/s, ETA 0m\d\ds$", lines[2])
  assert lines[-2].startswith("Done: adding T=6") and "baseline 0.1667" in lines[-2]
  assert lines[-1] == (f"Outputs in {workdir}: figures: python -m rnnlab.plots {workdir} ; "
                       f"TensorBoard: tensorboard --logdir {workdir}")
  assert not any("baseline" in line for line in lines[1:-2])  # once, in the first line
  assert all("train/loss" in line for line in lines[1:-2])
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f) == config_lib.resolved(tiny_config())
  got = rows(workdir)
  assert [r["step"] for r in got] == [1, 2, 4, 6, 8]
  for name in ("train/loss", "grad/norm", "grad/clipped", "grad/clipped_frac",
               "optim/learning_rate", "task/baseline", "grad/norm/layers_0/fwd/w_h",
               "param/norm/layers_0/fwd/b", "update/norm/readout/kernel"):
    assert all(name in r for r in got), name
  assert [r["step"] for r in got if "eval/loss" in r] == [4, 8]
  assert got[0]["task/baseline"] == pytest.approx(1 / 6)
  assert all(r["grad/clipped"] in (0.0, 1.0) for r in got)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6", "8"]
  scalars = {(step, tag): v for step, values, _ in tb_events(workdir) for tag, v in values.items()}
  assert scalars[8, "train/loss"] == pytest.approx(got[-1]["train/loss"], rel=1e-6)
  assert scalars[4, "eval/loss"] == pytest.approx(got[2]["eval/loss"], rel=1e-6)
  with open(os.path.join(workdir, "summary.json")) as f:
    assert json.load(f) == summary
  assert summary["steps"] == N and summary["primary_metric"] == "eval/loss"
  assert summary["final"]["eval/loss"] == got[-1]["eval/loss"]
  assert summary["beats_baseline"] == (summary["final"]["eval/loss"] < 0.95 / 6)
  assert summary["baseline_margin"] == 0.05


def test_tensorboard_reads_the_scalars_config_and_hyperparameters(reference):
  """What TensorBoard's own loader (the one `tensorboard --logdir` runs) finds in the run."""
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  from tensorboard.plugins.hparams import plugin_data_pb2  # pylint: disable=g-import-not-at-top
  workdir, _, _ = reference
  acc = event_accumulator.EventAccumulator(workdir, size_guidance={"tensors": 0, "scalars": 0})
  acc.Reload()
  assert {"train/loss", "eval/loss", "grad/norm"} <= set(acc.Tags()["scalars"])
  assert [e.step for e in acc.Scalars("eval/loss")] == [4, 8]
  text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
  assert json.loads("\n".join(line[4:] for line in text.splitlines())) == \
      config_lib.resolved(tiny_config())
  content = acc.PluginTagToContent("hparams")
  start = plugin_data_pb2.HParamsPluginData.FromString(
      content["_hparams_/session_start_info"]).session_start_info
  assert start.hparams["model.cell"].string_value == "lstm"
  assert start.hparams["train.num_steps"].number_value == N
  experiment = plugin_data_pb2.HParamsPluginData.FromString(
      content["_hparams_/experiment"]).experiment
  assert {m.name.tag for m in experiment.metric_infos} == {"train/loss", "eval/loss"}


def test_the_best_evaluation_is_kept_and_loads_by_name(reference):
  """checkpoints_best/ holds the state of the best evaluation: evaluated again, it gives
  exactly the best value summary.json names."""
  workdir, summary, _ = reference
  best = summary["best"]
  assert best["checkpoint"] == f"checkpoints_best/{best['step']}"
  assert os.listdir(os.path.join(workdir, workdir_lib.CHECKPOINTS_BEST)) == [str(best["step"])]
  job, step, state = trainer.load(workdir)
  assert step == best["step"] and int(state.step) == step
  cfg = job.config.train
  again = job_lib.evaluate(job_lib.make_eval_fn(job), state.params,
                           job.task.eval_batches(cfg.eval_batch_size or cfg.batch_size))
  assert again["eval/loss"] == pytest.approx(best["eval/loss"], rel=1e-6)
  _, step, latest = trainer.load(workdir, "latest")
  assert step == N and int(latest.step) == N
  assert int(trainer.load(workdir, 3)[2].step) == 3
  with pytest.raises(CheckpointError, match="no checkpoint of step 5 .*steps there: 3, 6, 8"):
    trainer.load(workdir, 5)
  with pytest.raises(ValueError, match="'best', 'latest' or a step"):
    trainer.load(workdir, "newest")


def test_a_run_without_a_best_checkpoint_says_what_to_use(reference, tmp_path):
  workdir = tmp_path / "old"
  shutil.copytree(reference[0], workdir)
  shutil.rmtree(workdir / workdir_lib.CHECKPOINTS_BEST)
  with pytest.raises(CheckpointError, match="use which='latest'"):
    trainer.load(str(workdir))
  with pytest.raises(CheckpointError, match="holds no run"):
    trainer.load(str(tmp_path / "nothing"))


def test_a_restored_state_has_the_signature_of_a_fresh_one(reference):
  """Same avals, weak types too: a resumed run reuses the same program (no recompile)."""
  fresh = job_lib.init_state(job_lib.build(tiny_config()))
  restored = final_state(tiny_config(), reference[0])
  signature = lambda state: [(a.shape, a.dtype, a.aval.weak_type) for a in jax.tree.leaves(state)]
  assert signature(restored) == signature(fresh)
  assert int(restored.step) == N


def test_sigkill_then_same_command_resumes_exactly(reference, env, tmp_path):
  """A real SIGKILL right after the (asynchronous) checkpoint of step 6, then launch.py."""
  workdir = str(tmp_path / "run")
  script = (
      "import json, os, signal, sys\n"
      "from configs import adding\n"
      "from rnnlab.training import config as config_lib, plugins, trainer\n"
      "config = config_lib.override(adding.get_config(), json.loads(sys.argv[2]))\n"
      "class Kill(plugins.Plugin):\n"
      "  every = 1\n"
      "  def act(self, step, state):\n"
      "    if step == 6:\n"
      "      os.kill(os.getpid(), signal.SIGKILL)\n"
      "trainer.train_and_evaluate(config, sys.argv[1], plugins=[Kill()])\n")
  killed = subprocess.run([sys.executable, "-c", script, workdir, json.dumps(TINY)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
  assert killed.returncode == -9, killed.stderr[-2000:]
  assert not os.path.exists(os.path.join(workdir, "summary.json"))
  resumed = launch(workdir, env)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  lines = resumed.stdout.strip().splitlines()
  assert lines[0].startswith("Resuming from the checkpoint of step")
  assert lines[1].startswith("adding T=6") and "->8" in lines[1]
  assert re.match(r"step [468]/8 \| train/loss .* incl\. compilation$", lines[2])
  assert lines[-2].startswith("Done: adding T=6") and "baseline 0.1667" in lines[-2]
  assert rows(workdir) == rows(reference[0])
  assert_same_state(final_state(tiny_config(), workdir), final_state(tiny_config(), reference[0]))
  resumed_at = int(lines[0].split("step ")[1].split(" ")[0])
  assert (resumed_at + 1, {}, "START") in tb_events(workdir)  # TensorBoard purges later events
  best = lambda w: sorted(os.listdir(os.path.join(w, workdir_lib.CHECKPOINTS_BEST)))
  assert best(workdir) == best(reference[0])
  assert_same_state(trainer.load(workdir)[2], trainer.load(reference[0])[2])


def test_nan_guard_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
  """lr 1e30: step 1 is finite (checkpointed), step 2's loss overflows."""
  config = tiny_config(**{"optim.name": "sgd", "optim.learning_rate": 1e30,
                          "train.checkpoint_every": 1, "train.log_every": 1})
  workdir = str(tmp_path)
  traces = []
  real_step = job_lib.train_step
  monkeypatch.setattr(job_lib, "train_step", lambda *a: traces.append(1) or real_step(*a))
  with pytest.raises(NonFiniteError, match=r"NaN/Inf at step 2\. .*last good checkpoint is "
                     r"step 1 in .*checkpoints/1"):
    trainer.train_and_evaluate(config, workdir, console=quiet)
  assert len(traces) == 1  # the state after a step has the signature of the one before
  assert os.listdir(os.path.join(workdir, "checkpoints")) == ["1"]
  state = final_state(config, workdir)
  assert int(state.step) == 1
  assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree.leaves(state))
  assert [r["step"] for r in rows(workdir)] == [1]
  assert not os.path.exists(os.path.join(workdir, "summary.json"))


def test_a_different_config_in_the_same_workdir_is_refused(reference, tmp_path):
  workdir = str(tmp_path)
  shutil.copytree(reference[0], workdir, dirs_exist_ok=True)
  with pytest.raises(ConfigMismatchError, match=r"different config \(model.hidden_size: 4 -> 8; "
                     r"optim.learning_rate: 0.001 -> 0.01\).*--overwrite"):
    trainer.train_and_evaluate(tiny_config(**{"model.hidden_size": 8, "optim.learning_rate": 1e-2}),
                             workdir, console=quiet)
  workdir_lib.prepare(tiny_config(**{"model.hidden_size": 8}), workdir, overwrite=True)
  assert sorted(os.listdir(workdir)) == ["config.json"]


def test_finished_run_started_again_only_reports(reference, tmp_path):
  workdir = str(tmp_path)
  shutil.copytree(reference[0], workdir, dirs_exist_ok=True)
  lines = []
  summary = trainer.train_and_evaluate(tiny_config(), workdir, console=lines.append)
  assert summary["final"] == reference[1]["final"] and rows(workdir) == rows(reference[0])
  assert lines[-2].startswith("Done: adding T=6")


def test_incompatible_checkpoint_gives_one_paragraph(reference, tmp_path):
  """Checkpoints of a hidden-4 model under a hidden-8 config.json: CheckpointError, no traceback."""
  workdir = str(tmp_path)
  shutil.copytree(reference[0], workdir, dirs_exist_ok=True)
  config = tiny_config(**{"model.hidden_size": 8})
  workdir_lib.write_json(os.path.join(workdir, "config.json"), config_lib.resolved(config))
  with pytest.raises(CheckpointError) as err:
    trainer.train_and_evaluate(config, workdir, console=quiet)
  message = str(err.value)
  assert "Cannot resume from the checkpoint of step 8" in message
  assert "different model or optimizer" in message and "\n" not in message
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "8"))  # not mistaken for damage


def test_emptied_newest_checkpoint_falls_back_to_the_one_before(reference, tmp_path):
  """Every data file of step 8's checkpoint emptied: reported, moved aside, step 6 resumes."""
  workdir = str(tmp_path)
  shutil.copytree(reference[0], workdir, dirs_exist_ok=True)
  os.remove(os.path.join(workdir, "summary.json"))
  for root, _, files in os.walk(os.path.join(workdir, "checkpoints", "8")):
    for name in files:
      if name != "_CHECKPOINT_METADATA":
        open(os.path.join(root, name), "w").close()
  lines = []
  summary = trainer.train_and_evaluate(tiny_config(), workdir, console=lines.append)
  assert any(l.startswith("The checkpoint of step 8 is damaged") for l in lines)
  assert "Resuming from the checkpoint of step 6, the newest intact one" in "\n".join(lines)
  assert os.path.isdir(os.path.join(workdir, "checkpoints_damaged", "8"))
  assert summary["final"] == reference[1]["final"] and rows(workdir) == rows(reference[0])


@pytest.mark.parametrize("changes,message", [
    ({"model.cell": "lstn"}, "Unknown cell 'lstn'. Valid cells: gru, irnn, lru, lstm"),
    ({"model.kind": "transformer"}, "Unknown model.kind 'transformer'. Valid kinds: classifier"),
    ({"model.num_layers": 0}, "num_layers must be an integer >= 1"),
    ({"model.cell": "gru", "model.cell_options.forget_bias": 2.0},
     r"model.cell_options \['forget_bias'\] do not apply to cell 'gru'"),
    ({"model.cell_options.recurrent_init": "orthogonl"}, "Unknown initializer 'orthogonl'"),
    ({"model.cell_options.chrono": 2.0}, "chrono init needs t_max > 2"),
    ({"task.seq_len": 1}, "seq_len must be an integer >= 2"),
    ({"train.batch_size": 0}, "train.batch_size must be an integer >= 1"),
    ({"train.keep_checkpoints": 0}, "train.keep_checkpoints must be an integer >= 1"),
    ({"optim.name": "adagrad"}, "Unknown optim.name 'adagrad'"),
    ({"seed": -1}, r"seed must be an integer in \[0, 2147483647\]"),
])
def test_bad_values_are_rejected_before_anything_is_written(tmp_path, changes, message):
  workdir = str(tmp_path / "run")
  with pytest.raises(InvalidConfigError, match=message):
    trainer.train_and_evaluate(tiny_config(**changes), workdir, console=quiet)
  assert not os.path.exists(workdir)
  assert issubclass(InvalidConfigError, ValueError)


@pytest.mark.slow
def test_lstm_solves_adding_at_T100(tmp_path):
  """configs/adding.py (LSTM 128, T=100) for 1500 steps ends far below the baseline 1/6.

  A few minutes on a 2-core CPU; the config's docstring has the curve (0.0009 at 1500).
  """
  config = config_lib.override(adding.get_config(), {"train.num_steps": 1500})
  summary = trainer.train_and_evaluate(config, str(tmp_path), console=quiet)
  assert summary["beats_baseline"] and summary["final"]["eval/loss"] < 0.02


def test_bfloat16_mixed_precision_keeps_float32_state_and_follows_the_float32_run(tmp_path):
  """model.dtype = "bfloat16": the model computes in bfloat16, the parameters, gradients and
  optimizer state stay float32, and the run follows the float32 one to bfloat16 precision."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from rnnlab.training import job as job_lib  # pylint: disable=g-import-not-at-top
  overrides = {"task.seq_len": 10, "task.eval_size": 32, "model.hidden_size": 16,
               "train.batch_size": 16, "train.num_steps": 20, "train.log_every": 5,
               "train.eval_every": 10, "train.checkpoint_every": 10}
  f32 = small_config("adding", **overrides)
  bf16 = small_config("adding", **overrides, **{"model.dtype": "bfloat16"})
  job = job_lib.build(bf16)
  state = job_lib.init_state(job)
  new, stats = job_lib.make_step_fn(job)(state, None)
  floats = [a.dtype for a in jax.tree.leaves((new.params, new.opt_state))
            if jnp.issubdtype(a.dtype, jnp.floating)]
  assert len(floats) > 10 and set(floats) == {jnp.dtype("float32")}
  assert jnp.isfinite(stats["grad/norm"]) and stats["grad/norm"] > 0
  a = trainer.train_and_evaluate(f32, str(tmp_path / "f32"), console=quiet)
  b = trainer.train_and_evaluate(bf16, str(tmp_path / "bf16"), console=quiet)
  ra, rb = rows(tmp_path / "f32"), rows(tmp_path / "bf16")
  assert ra[0]["train/loss"] == pytest.approx(rb[0]["train/loss"], rel=2e-2)  # same init, data
  assert ra[0]["train/loss"] != rb[0]["train/loss"]  # but really computed in bfloat16
  assert b["final"]["eval/loss"] == pytest.approx(a["final"]["eval/loss"], rel=0.2)
  with pytest.raises(InvalidConfigError, match=r"model.dtype must be one of \['float32', "
                                               r"'bfloat16'\] \(or None: float32\); got 'f16'"):
    job_lib.build(small_config("adding", **{"model.dtype": "f16"}))

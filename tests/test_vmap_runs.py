"""Vmapped runs: equal to the same runs one by one; failures stay per run; resume; sweeps."""

import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import rows, small_config
from rnnlab.training import config as config_lib
from rnnlab.training import trainer
from rnnlab.training import vmapped
from rnnlab.training import workdir as workdir_lib
from rnnlab.sweeps import execute
from rnnlab.sweeps import report
from rnnlab.sweeps import spec
from rnnlab.errors import InvalidConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _adding():  # eval_batch_size 8: the held-out set in three batches, the last one short
  return small_config("adding", **{
      "task.seq_len": 6, "task.eval_size": 20, "model.cell": "lstm", "model.hidden_size": 4,
      "train.batch_size": 8, "train.num_steps": 12, "train.log_every": 4,
      "train.eval_every": 6, "train.checkpoint_every": 6, "train.eval_batch_size": 8})


def _reverse():
  return small_config("reverse", seq2seq=True, **{
      "task.seq_len": 4, "task.num_symbols": 5, "task.eval_size": 16, "model.cell": "lstm",
      "model.hidden_size": 8, "model.embed_size": 4, "model.attention": "bahdanau",
      "train.batch_size": 8, "train.num_steps": 8, "train.log_every": 4,
      "train.eval_every": 4, "train.checkpoint_every": 4})


VARIANTS = [{"seed": 0}, {"seed": 1, "optim.learning_rate": 3e-3, "model.cell_options.chrono": 6.0},
            {"seed": 2, "optim.clip_norm": 0.05, "model.cell_options.forget_bias": 0.0}]


def _assert_same_run(a, b, what):
  """Same rows, same metrics; values equal up to float32 rounding.

  A vmapped reduction (the global gradient norm, a batched matmul) may add in
  another order than the unbatched one, so single values can differ in the
  last bit or two; anything beyond 1e-5 relative is a real difference.
  """
  assert [r["step"] for r in a] == [r["step"] for r in b], what
  for ra, rb in zip(a, b):
    assert ra.keys() == rb.keys(), what
    for k in ra:
      assert ra[k] == pytest.approx(rb[k], rel=1e-5, abs=1e-7), f"{what}: step {ra['step']} {k}"


@pytest.mark.parametrize("make", [_adding, pytest.param(_reverse, marks=pytest.mark.slow)],
                         ids=["classifier", "seq2seq"])  # seq2seq: the same stacking code
def test_vmapped_runs_equal_runs_one_by_one(tmp_path, make):
  # seq2seq compiles slowly: two runs (they differ in seed and learning rate) are enough.
  variants = VARIANTS if make is _adding else VARIANTS[:2]
  configs = [config_lib.with_overrides(make(), v) for v in variants]
  together = [str(tmp_path / f"vmap{i}") for i in range(len(configs))]
  summaries = vmapped.train_runs(configs, together, console=lambda s: None)
  for i, config in enumerate(configs):
    alone = str(tmp_path / f"alone{i}")
    expected = trainer.train_and_evaluate(config, alone, console=lambda s: None)
    _assert_same_run(rows(together[i]), rows(alone), f"run {i} vs its single run")
    assert summaries[i]["final"] == pytest.approx(expected["final"], rel=1e-5)
    with open(os.path.join(together[i], "config.json")) as f:
      assert json.load(f)["seed"] == variants[i]["seed"]
  # The runs really differ (different seeds and hyperparameters), so equality is not vacuous.
  assert rows(together[0])[-1] != rows(together[1])[-1]


@pytest.mark.slow  # each run's checkpoint is the single-run Checkpointer, resumed by default there
def test_vmapped_runs_resume_from_their_checkpoints(tmp_path):
  configs = [config_lib.with_overrides(_adding(), v) for v in VARIANTS]
  dirs = [str(tmp_path / f"r{i}") for i in range(len(configs))]
  vmapped.train_runs(configs, dirs, console=lambda s: None)
  before = [rows(d) for d in dirs]
  for d in dirs:  # as if killed after the checkpoint of step 6
    os.remove(os.path.join(d, workdir_lib.SUMMARY))
    shutil.rmtree(os.path.join(d, "checkpoints", "12"))
  lines = []
  vmapped.train_runs(configs, dirs, console=lines.append)
  assert any("steps 6->12" in line for line in lines), lines
  assert [rows(d) for d in dirs] == before


def test_a_diverging_run_fails_alone(tmp_path):
  config = _adding().unlock()
  config.model.cell = "rnn"
  config.optim.name = "sgd"
  config.optim.clip_mode = "global_norm"
  config.lock()
  good = config_lib.with_overrides(config, {"seed": 0})
  bad = config_lib.with_overrides(config, {"seed": 1, "optim.learning_rate": 1e30,
                                          "optim.clip_norm": 1e30})
  dirs = [str(tmp_path / "good"), str(tmp_path / "bad")]
  summaries = vmapped.train_runs([good, bad], dirs, console=lambda s: None)
  assert summaries[0] is not None and summaries[1] is None
  assert os.path.exists(os.path.join(dirs[0], workdir_lib.SUMMARY))
  with open(os.path.join(dirs[1], workdir_lib.FAILED)) as f:
    assert "NaN/Inf" in json.load(f)["error"]
  assert not os.path.exists(os.path.join(dirs[1], workdir_lib.SUMMARY))


def test_runs_that_differ_in_shape_or_code_are_refused(tmp_path):
  a = _adding()
  b = config_lib.with_overrides(a, {"model.cell": "gru", "model.cell_options.forget_bias": None})
  with pytest.raises(InvalidConfigError, match="model.cell"):
    vmapped.train_runs([a, b], [str(tmp_path / "a"), str(tmp_path / "b")])
  assert not os.path.exists(tmp_path / "a")  # refused before anything was written


def test_vmap_groups_split_on_non_vmappable_fields():
  runs = [spec.Run(f"r{i}", tuple(o.items())) for i, o in enumerate([
      {"model.cell": "rnn", "seed": 0}, {"model.cell": "rnn", "seed": 1},
      {"model.cell": "lstm", "seed": 0}, {"model.cell": "rnn", "seed": 2},
      {"model.cell": "rnn", "optim.learning_rate": 0.1, "seed": 0}])]
  groups = [[r.name for r in g] for g in execute.vmap_groups(runs, max_size=2)]
  # r4 differs from r3 only in the learning rate (vmappable); r2 in the cell (not).
  assert groups == [["r0", "r1"], ["r3", "r4"], ["r2"]]


SWEEP = '''
from configs import base

def get_config():
  config = base.get_config("adding")
  config.task.seq_len = 6
  config.task.eval_size = 16
  config.model.hidden_size = 4
  config.train.batch_size = 8
  config.train.num_steps = 8
  config.train.log_every = 4
  config.train.eval_every = 4
  config.train.checkpoint_every = 4
  return config.lock()

def sweep(add):  # the grouping itself: test_vmap_groups_* above
  for seed in range(3):
    add(**{"model.cell": "gru", "seed": seed})
'''


@pytest.mark.slow  # vmapped training is checked equal to one-by-one runs by default above
def test_sweep_with_vmap_runs_each_group_in_one_process(tmp_path):
  config = tmp_path / "tiny.py"
  config.write_text(SWEEP)
  root = tmp_path / "sweep"
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "launch.py"), f"--config={config}",
                         "--sweep", f"--workdir={root}", "--vmap=3"], cwd=ROOT,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert "3 to run in 1 process(es)" in proc.stdout
  assert sorted(os.listdir(root / "_vmap")) == ["runs_0+3.log"]
  with open(root / report.RESULTS) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 3 and all(r["status"] == "done" for r in rows)
  finals = {r["run"]: float(r["final"]) for r in rows}
  assert len(set(finals.values())) == 3  # each seed its own run
  # The same run on its own (in this process: the sweep's config file, one run's overrides).
  loader = importlib.util.spec_from_file_location("tiny_sweep", config)
  tiny = importlib.util.module_from_spec(loader)
  loader.loader.exec_module(tiny)
  alone = config_lib.with_overrides(tiny.get_config(), {"model.cell": "gru", "seed": 1})
  summary = trainer.train_and_evaluate(alone, str(tmp_path / "alone"), console=lambda _: None)
  assert summary["final"]["eval/loss"] == pytest.approx(finals["cell=gru,seed=1"], rel=1e-5)

"""The seq2seq configs through the trainer: outputs, exact resume, kind/task refusal."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from conftest import final_state, rows, tiny
from configs import seq2seq_addition, seq2seq_reverse
from rnnlab import tasks
from rnnlab.errors import InvalidConfigError
from rnnlab.training import config as config_lib
from rnnlab.training import job as job_lib
from rnnlab.training import trainer
from rnnlab.training import workdir as workdir_lib

# 4 steps: rows at every step, eval at 2 and 4, checkpoints at 2 and 4.
TINY = {"model.hidden_size": 4, "model.embed_size": 3, "train.batch_size": 4,
        "train.num_steps": 4, "train.eval_batch_size": None, "train.log_every": 1,
        "train.eval_every": 2, "train.checkpoint_every": 2, "train.keep_checkpoints": 3}
CONFIGS = {
    "reverse": (seq2seq_reverse, {"task.seq_len": 3, "task.eval_size": 8}),
    "addition": (seq2seq_addition, {"task.digits_a": 1, "task.digits_b": 1,
                                    "task.eval_size": 8}),
}


def tiny_config(name):
  module, task = CONFIGS[name]
  return tiny(module, **{**TINY, **task})


@pytest.mark.parametrize("name", [n if n == "reverse" else pytest.param(n, marks=pytest.mark.slow)
                                  for n in CONFIGS])  # one task by default: the same code path
def test_config_trains_writes_outputs_and_resumes_exactly(name, tmp_path, compile_cache):
  """A full run, then a copy of it cut back to its step-2 checkpoint and resumed."""
  del compile_cache
  config, lines = tiny_config(name), []
  full, cut = str(tmp_path / "full"), str(tmp_path / "cut")
  summary = trainer.train_and_evaluate(config, full, console=lines.append)
  assert lines[0].startswith(name) and "model seq2seq (lstm)" in lines[0]
  assert lines[-2].startswith(f"Done: {name}")
  assert summary["steps"] == 4 and summary["primary_metric"] == "eval/accuracy"
  got = rows(full)
  assert [r["step"] for r in got] == [1, 2, 3, 4]
  assert [r["step"] for r in got if "eval/accuracy" in r] == [2, 4]
  for key in ("train/loss", "train/accuracy", "train/token_accuracy", "train/teacher_forcing_prob",
              "eval/loss", "eval/token_accuracy", "grad/norm", "task/baseline"):
    assert key in got[-1], key
  assert 0.0 <= got[-1]["eval/accuracy"] <= 1.0 and np.isfinite(got[-1]["train/loss"])
  assert got[-1]["eval/teacher_forcing_prob"] == 1.0  # eval decodes freely, loss teacher-forced
  assert [r["train/teacher_forcing_prob"] for r in got] == [1.0] * 4  # the configs' mode
  assert sorted(os.listdir(os.path.join(full, "checkpoints"))) == ["2", "4"]

  shutil.copytree(full, cut)
  shutil.rmtree(os.path.join(cut, "checkpoints", "4"))
  os.remove(os.path.join(cut, workdir_lib.SUMMARY))
  resumed = []
  again = trainer.train_and_evaluate(config, cut, console=resumed.append)
  assert resumed[0].startswith("Resuming from the checkpoint of step 2")
  assert rows(cut) == got
  assert again["final"] == summary["final"]
  for a, b in zip(jax.tree.leaves(final_state(config, cut)),
                  jax.tree.leaves(final_state(config, full))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with open(os.path.join(full, "config.json")) as f:
    assert json.load(f) == config_lib.resolved(config)


def test_a_seq2seq_task_needs_the_seq2seq_model_and_vice_versa(tmp_path):
  config = config_lib.override(tiny_config("reverse"), {"model.kind": "classifier"})
  with pytest.raises(InvalidConfigError, match="model"):
    trainer.train_and_evaluate(config, str(tmp_path))
  assert not os.listdir(tmp_path)  # refused before the workdir is touched
  config = tiny_config("addition").unlock()
  config.task = tasks.default_config("adding")
  with pytest.raises(InvalidConfigError, match="does not fit task 'adding'"):
    job_lib.build(config)

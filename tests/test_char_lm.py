"""char_lm: the corpus loader, the streams of truncated BPTT, the carried state, resume."""

import math
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import quiet, rows, tiny
from configs import char_lm as char_lm_config
from configs import default
from rnnlab import tasks
from rnnlab.errors import DataNotFoundError, InvalidConfigError
from rnnlab.tasks import text
from rnnlab.training import checkpoint
from rnnlab.training import job as job_lib
from rnnlab.training import trainer
from rnnlab.training import workdir as workdir_lib

TEXT = ("Hasan used to play football and he was pretty good at it. " * 40
        + "Ayse plays chess; she wins. " * 20)


def corpus(tmp_path, body=TEXT, name="corpus.txt"):
  path = tmp_path / name
  path.write_text(body, encoding="utf-8")
  return str(path)


def task_cfg(path, **fields):
  cfg = tasks.default_config("char_lm")
  cfg.path = path
  cfg.seq_len = 8
  cfg.eval_size = 64
  for k, v in fields.items():
    cfg[k] = v
  return cfg


def small(path, **overrides):
  """The default config, small: 1 layer of 16 units on the test's corpus."""
  return tiny(char_lm_config, **{
      "task.path": path, "task.seq_len": 8, "task.eval_size": 64, "model.hidden_size": 16,
      "model.num_layers": 1, "model.embed_size": 8, "train.batch_size": 4,
      "train.num_steps": 6, "train.log_every": 1, "train.eval_every": 3,
      "train.checkpoint_every": 3, **overrides})


# --- the corpus -------------------------------------------------------------------------

def test_a_file_is_split_into_train_and_held_out_with_its_vocabulary(tmp_path):
  task = tasks.make_task(task_cfg(corpus(tmp_path), holdout=0.1), seed=0)
  assert task.chars == sorted(set(TEXT)) and task.vocab_size == len(set(TEXT))
  ids = np.concatenate([task._train, task._held])
  assert "".join(task.chars[i] for i in task._train) == TEXT[:len(task._train)]
  assert len(task._train) == round(len(TEXT) * 0.9)
  assert "".join(task.chars[i] for i in ids) == TEXT[:len(ids)]
  np.testing.assert_array_equal(task.artifacts()["vocab"], [ord(c) for c in task.chars])


def test_the_baseline_is_the_unigram_model_of_the_training_split(tmp_path):
  task = tasks.make_task(task_cfg(corpus(tmp_path), holdout=0.1), seed=0)
  split = round(len(TEXT) * 0.9)
  counts = {c: TEXT[:split].count(c) + 1 for c in task.chars}  # add-one smoothing
  total = sum(counts.values())
  nats = -np.mean([math.log(counts[c] / total) for c in TEXT[split:]])
  assert task.baseline["loss"] == pytest.approx(nats, rel=1e-9)
  assert task.baseline["bpc"] == pytest.approx(nats / math.log(2))
  assert task.baseline["perplexity"] == pytest.approx(math.exp(nats))


def test_a_folder_is_read_in_sorted_order_and_skips_files_that_are_not_utf8(tmp_path):
  (tmp_path / "b").mkdir()
  corpus(tmp_path, "second ü" * 30, "b/2.txt")
  corpus(tmp_path, "first é" * 30, "a.txt")
  (tmp_path / "b" / "blob.bin").write_bytes(b"\xff\xfe\x00binary")
  got, files, skipped = text.read_corpus(str(tmp_path))
  assert got == "first é" * 30 + "second ü" * 30 and (files, skipped) == (2, 1)
  assert text.read_corpus(str(tmp_path), max_chars=10)[0] == ("first é" * 30)[:10]
  task = tasks.make_task(task_cfg(str(tmp_path)), seed=0)
  assert "1 non-UTF-8 skipped" in task.describe() and "ü" in task.chars


@pytest.mark.parametrize("make, message", [
    (lambda p: str(p / "missing.txt"), "neither a file nor a folder"),
    (lambda p: (p / "x.bin").write_bytes(b"\xff\xfe\xfa") and str(p / "x.bin"), "not UTF-8"),
    (lambda p: corpus(p, "tiny"), "too few"),
])
def test_a_bad_corpus_is_one_clear_error_before_anything_runs(tmp_path, make, message):
  config = small(make(tmp_path))
  with pytest.raises((InvalidConfigError, DataNotFoundError), match=message):
    job_lib.build(config)
  assert not os.listdir(tmp_path / "w") if (tmp_path / "w").exists() else True


def test_the_default_corpus_is_the_python_standard_library():
  files = text.stdlib_files()
  assert len(files) > 50 and all(f.endswith(".py") for f in files) and files == sorted(files)
  got, n, _ = text.read_corpus(None, max_chars=5000)
  assert len(got) == 5000 and n >= 1


# --- the streams --------------------------------------------------------------------------

def test_batches_continue_each_stream_and_an_epoch_restarts_them(tmp_path):
  task = tasks.make_task(task_cfg(corpus(tmp_path)), seed=0)
  b = 4
  length, per_epoch = task.stream_shape(b)
  first, second = task.train_batch(0, b), task.train_batch(1, b)
  assert first["x"].shape == (b, 8) and bool(first["reset"]) and not bool(second["reset"])
  np.testing.assert_array_equal(first["y"][:, :-1], first["x"][:, 1:])   # next characters
  np.testing.assert_array_equal(second["x"][:, 0], first["y"][:, -1])    # the stream goes on
  streams = task._train[:b * length].reshape(b, length)
  np.testing.assert_array_equal(first["x"][:, 0], streams[:, 0])        # B contiguous streams
  again = task.train_batch(per_epoch, b)                                  # a new epoch
  np.testing.assert_array_equal(again["x"], first["x"])
  assert bool(again["reset"])
  (held,) = task.eval_batches(4)
  assert held["x"].shape == (4, 16)
  np.testing.assert_array_equal(held["x"].reshape(-1)[1:], held["y"].reshape(-1)[:-1])


# --- training with the carried state -------------------------------------------------------

def test_the_state_is_carried_from_batch_to_batch_without_gradient_across(tmp_path):
  """state.carry after a step is the model's final carry on that batch (started from the
  previous carry), and the loss of step 2 is the loss from that carry, not from zeros."""
  job = job_lib.build(small(corpus(tmp_path), **{"model.dropout": 0.0}))
  state = job_lib.init_state(job)
  step = jax.jit(lambda s, b: job_lib.train_step(job, s, b))
  apply = lambda params, batch: job.model.apply(params, batch, task=job.task,
                                                model_cfg=job.config.model, train=True,
                                                rng=jax.random.PRNGKey(0), step=0)
  b0, b1 = job.task.train_batch(0, 4), job.task.train_batch(1, 4)
  zero = job.model.init_carry(state.params, job.task, job.config.model, 4)
  expected = apply(state.params, {**b0, "carry": zero})["carry"]
  after, _ = step(state, b0)
  jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6),
               after.carry, expected)
  assert float(jnp.abs(jax.tree.leaves(after.carry)[0]).max()) > 0
  carried = job.task.loss_and_metrics(apply(after.params, {**b1, "carry": after.carry}), b1)[0]
  fresh = job.task.loss_and_metrics(apply(after.params, {**b1, "carry": zero}), b1)[0]
  final, _ = step(after, b1)
  assert float(final.sums["train/loss"] - after.sums["train/loss"]) == pytest.approx(
      float(carried), rel=1e-5)
  assert abs(float(carried) - float(fresh)) > 1e-4
  # at an epoch's first batch the state restarts from zeros
  reset = {**b1, "reset": np.array(True), "carry": after.carry}
  np.testing.assert_allclose(apply(after.params, reset)["logits"],
                             apply(after.params, {**b1, "carry": zero})["logits"], rtol=1e-6)


def test_a_run_trains_resumes_exactly_and_reports_bits_per_character(tmp_path):
  """A full run, then a copy cut back to its step-3 checkpoint (the carry is in it) and
  resumed: the same numbers. Gradient flow is recorded over the T steps of a batch."""
  config = small(corpus(tmp_path), **{"gradflow.every": 3})
  full, cut = str(tmp_path / "full"), str(tmp_path / "cut")
  summary = trainer.train_and_evaluate(config, full, console=quiet)
  shutil.copytree(full, cut)
  shutil.rmtree(os.path.join(cut, "checkpoints", "6"))
  os.remove(os.path.join(cut, workdir_lib.SUMMARY))
  lines = []
  again = trainer.train_and_evaluate(config, cut, console=lines.append)
  assert lines[0].startswith("Resuming from the checkpoint of step 3")
  assert rows(cut) == rows(full) and again["final"] == summary["final"]
  final = summary["final"]
  assert final["eval/bpc"] == pytest.approx(final["eval/loss"] / math.log(2), rel=1e-6)
  assert final["eval/perplexity"] == pytest.approx(math.exp(final["eval/loss"]), rel=1e-5)
  assert summary["primary_metric"] == "eval/bpc" and summary["higher_is_better"] is False
  assert np.load(os.path.join(full, "vocab.npy")).shape == (len(set(TEXT)),)
  records = workdir_lib.read_jsonl(os.path.join(full, workdir_lib.GRADFLOW))
  assert [r["step"] for r in records] == [0, 3, 6]
  assert len(records[-1]["dL_dh_norm"]) == 8 and min(records[-1]["dL_dh_norm"]) > 0


def test_checkpoints_hold_the_carry_only_where_a_task_carries_state(tmp_path):
  """The on-disk tree of a stateless run is what rnnlab wrote before TrainState.carry
  existed, so those checkpoints still restore; a stateful run's holds its carry."""
  before = {"step", "params", "opt_state", "rng", "sums", "nonfinite_step"}
  stateless = job_lib.init_state(job_lib.build(default.get_config()))
  assert set(checkpoint.on_disk(stateless)) == before
  stateful = job_lib.init_state(job_lib.build(small(corpus(tmp_path))))
  assert set(checkpoint.on_disk(stateful)) == before | {"carry"}
  again = checkpoint.from_disk(stateful, checkpoint.on_disk(stateful))
  assert jax.tree.structure(again) == jax.tree.structure(stateful)

"""Every experiment config builds, is locked and valid, documents itself, and trains."""

import contextlib
import importlib
import inspect
import os
import re

import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import base
from rnnlab.training import config as config_lib
from rnnlab.sweeps import spec
from rnnlab.training import job as job_lib
from rnnlab.training import optim
from rnnlab.training import trainer

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
CONFIGS = sorted(f[:-3] for f in os.listdir(CONFIG_DIR)
                 if f.endswith(".py") and f not in ("base.py", "__init__.py"))
REQUIRED = ["seed", "task.name", "task.seq_len", "model.kind", "model.cell", "model.hidden_size",
            "model.num_layers", "model.bidirectional", "optim.name", "optim.learning_rate",
            "optim.clip_mode", "optim.clip_norm", "optim.momentum", "optim.schedule",
            "optim.warmup_steps", "train.batch_size", "train.num_steps", "train.log_every",
            "train.eval_every", "train.checkpoint_every", "train.keep_checkpoints"]
# Tiny sizes per task so that a config trains two steps in seconds.
TINY_TASK = {"copy": {"task.seq_len": 2, "task.eval_size": 4},
             "adding": {"task.seq_len": 4, "task.eval_size": 4},
             "temporal_order": {"task.seq_len": 10, "task.eval_size": 4},
             "smnist": {"task.eval_size": 3},
             "psmnist": {"task.eval_size": 3},
             "reverse": {"task.seq_len": 3, "task.eval_size": 4},
             "addition": {"task.digits_a": 1, "task.digits_b": 1, "task.eval_size": 4},
             "digits": {"task.digits": 2, "task.eval_size": 4},
             "char_lm": {"task.max_chars": 20_000, "task.seq_len": 5, "task.eval_size": 20}}
TINY = {"model.hidden_size": 4, "train.batch_size": 2, "train.num_steps": 2,
        "train.eval_batch_size": None, "train.log_every": 1, "train.eval_every": 0,
        "train.checkpoint_every": 0}


def module(name):
  return importlib.import_module(f"configs.{name}")


def test_the_experiments_exist():
  assert {"copy", "adding", "temporal_order", "smnist", "psmnist", "default"} <= set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_is_locked_valid_and_documented(name):
  config = module(name).get_config()
  flat = config_lib.flatten(config.to_dict())
  # a language model reads left to right: it has no bidirectional field
  required = [f for f in REQUIRED if not (f == "model.bidirectional" and flat["model.kind"] == "lm")]
  assert not [f for f in required if f not in flat]
  job_lib.validate(config)
  with pytest.raises(AttributeError):
    config.model.hiden_size = 3  # a misspelt field is an error, not a new field
  doc = module(name).__doc__
  # The exact command (a config may take an argument, configs/x.py:arg, or be a sweep).
  assert re.search(rf"python launch\.py --config=configs/{name}\.py(:\w+)? .*--workdir=", doc)
  assert "runtime" in doc.lower() and "MEASURE" not in doc
  sweep_fn = getattr(module(name), "sweep", None)
  if sweep_fn is not None:
    assert spec.expand(sweep_fn, config)


def test_every_base_field_is_commented():
  """Each field assignment in configs/base.py carries a comment saying what it is."""
  source = inspect.getsource(base)
  fields = [line for line in source.splitlines()
            if re.match(r"\s+(c|m|o|t|config)\.\w+ = ", line)]
  assert len(fields) > 30
  assert [line for line in fields if "#" not in line] == []


def test_optimizer_and_schedule_fields_are_in_base():
  fields = set(base.optim())
  assert set(optim.OPTIMIZER_FIELDS) <= fields and set(optim.SCHEDULE_FIELDS) <= fields


@contextlib.contextmanager
def data_for(task_name):
  """tfds' mock MNIST (random images) for the MNIST tasks, nothing for the synthetic ones."""
  if "mnist" not in task_name:
    yield
    return
  with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
    yield


# Configs whose training path another config here already takes train with -m slow (every
# config is still validated by default above): the classifier studies on synthetic tasks
# (as default.py), the seq2seq
# ones (test_seq2seq_train.py trains seq2seq_reverse.py, and the modes of exposure_bias.py
# are trained in test_seq2seq.py), char_lm_cells (as char_lm.py).
SAME_PATH = {"copy", "gating", "clipping", "initialization", "seq2seq_addition",
             "seq2seq_reverse", "context_compression", "exposure_bias", "char_lm_cells"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SAME_PATH else n
                                  for n in CONFIGS if n != "adding"])  # adding: test_train.py
def test_config_trains_two_steps(name, tmp_path):
  config = module(name).get_config()
  config = config_lib.override(config, {**TINY, **TINY_TASK[config.task.name]})
  with data_for(config.task.name):
    summary = trainer.train_and_evaluate(config, str(tmp_path), console=lambda line: None)
  assert summary["steps"] == 2 and summary["primary_metric"] in summary["final"]
  assert os.path.exists(tmp_path / "checkpoints" / "2")
  if config.task.name == "psmnist":
    permutation = np.load(tmp_path / "permutation.npy")
    np.testing.assert_array_equal(permutation, np.random.RandomState(0).permutation(784))

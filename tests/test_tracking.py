"""Optional W&B tracking: what a run sends, a resumed run's id, offline mode, bad settings."""

import glob
import importlib.machinery
import importlib.util
import os
import sys
import types

import pytest

from conftest import quiet, rows, small_config
from rnnlab.errors import InvalidConfigError
from rnnlab.training import plugins, trainer, tracking
from rnnlab.training import workdir as workdir_lib

TINY = {"task.seq_len": 6, "task.eval_size": 8, "model.hidden_size": 4, "train.batch_size": 4,
        "train.num_steps": 6, "train.log_every": 2, "train.eval_every": 3,
        "train.checkpoint_every": 3}


class FakeWandb(types.ModuleType):
  """Records what rnnlab asks of wandb."""

  def __init__(self):
    super().__init__("wandb")
    self.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
    self.inits, self.logged, self.finished = [], [], 0

  def init(self, **kwargs):
    self.inits.append(kwargs)
    fake = self
    class Run:
      def log(self, row, step):
        fake.logged.append((step, row))
      def finish(self):
        fake.finished += 1
    return Run()


@pytest.fixture
def fake_wandb(monkeypatch):
  fake = FakeWandb()
  monkeypatch.setitem(sys.modules, "wandb", fake)
  monkeypatch.setattr(tracking, "new_id", lambda: "abc123")
  return fake


def test_a_run_sends_its_config_and_every_row(fake_wandb, tmp_path):
  config = small_config("adding", **TINY, **{"wandb.project": "rnnlab-test", "wandb.group": "g"})
  workdir = str(tmp_path / "my-run")
  trainer.train_and_evaluate(config, workdir, console=quiet)
  (init,) = fake_wandb.inits
  assert init["project"] == "rnnlab-test" and init["group"] == "g" and init["mode"] == "online"
  assert init["name"] == "my-run" and init["id"] == "abc123" and init["dir"] == workdir
  assert init["config"]["model"]["cell"] == "lstm" and init["resume"] == "allow"
  metrics = workdir_lib.read_metrics(workdir)
  assert [s for s, _ in fake_wandb.logged] == [r["step"] for r in metrics]
  assert fake_wandb.logged[-1][1]["eval/loss"] == metrics[-1]["eval/loss"]
  assert fake_wandb.finished == 1
  assert open(os.path.join(workdir, workdir_lib.WANDB_ID)).read().strip() == "abc123"


def test_a_resumed_run_goes_on_in_the_same_wandb_run(fake_wandb, tmp_path, monkeypatch):
  config = small_config("adding", **TINY, **{"wandb.project": "p"})
  workdir = str(tmp_path / "run")

  class Stop(plugins.Plugin):  # Ctrl-C after step 4 (the checkpoint of step 3 is complete)
    every = 1
    def act(self, step, state):
      if step == 4:
        raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    trainer.train_and_evaluate(config, workdir, plugins=[Stop()], console=quiet)
  monkeypatch.setattr(tracking, "new_id", lambda: "another")  # the kept id must win
  trainer.train_and_evaluate(config, workdir, console=quiet)
  assert [i["id"] for i in fake_wandb.inits] == ["abc123", "abc123"]
  assert fake_wandb.finished == 2
  steps = [s for s, _ in fake_wandb.logged]
  assert steps == [1, 2, 3, 4, 4, 6]  # the second session resends from its resume step on


def test_offline_mode_writes_a_local_wandb_run(tmp_path):
  pytest.importorskip("wandb")
  config = small_config("adding", **TINY, **{"wandb.project": "p", "wandb.mode": "offline"})
  workdir = str(tmp_path / "run")
  trainer.train_and_evaluate(config, workdir, console=quiet)
  (log,) = glob.glob(os.path.join(workdir, "wandb", "offline-run-*", "run-*.wandb"))
  data = open(log, "rb").read()
  assert b"train/loss" in data and b"eval/loss" in data and b"hidden_size" in data
  assert rows(workdir)[-1]["step"] == 6
  trainer.train_and_evaluate(config, str(tmp_path / "second"), console=quiet)  # again, a new run


@pytest.mark.parametrize("changes, message", [
    ({"wandb.project": "p", "wandb.mode": "cloud"}, "wandb.mode must be one of"),
    ({"wandb.entity": "me"}, "wandb.entity is set but wandb.project is not"),
])
def test_bad_tracking_settings_say_what_is_valid(tmp_path, changes, message):
  with pytest.raises(InvalidConfigError, match=message):
    trainer.train_and_evaluate(small_config("adding", **TINY, **changes), str(tmp_path),
                               console=quiet)


def test_a_project_without_wandb_installed_says_how_to_install(tmp_path, monkeypatch):
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name == "wandb" else real(name, *a))
  with pytest.raises(InvalidConfigError, match=r"pip install 'rnnlab\[wandb\]'"):
    trainer.train_and_evaluate(small_config("adding", **TINY, **{"wandb.project": "p"}),
                               str(tmp_path), console=quiet)

"""launch.py as a user runs it: overrides, clear one-paragraph errors, exit codes."""

import os
import subprocess
import sys

from configs import adding
from rnnlab.training import config as config_lib
from rnnlab.training import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config.task.seq_len=4", "--config.task.eval_size=4", "--config.model.hidden_size=3",
        "--config.train.batch_size=2", "--config.train.num_steps=3", "--config.train.log_every=1"]


def launch(*flags, workdir):
  return subprocess.run([sys.executable, "launch.py", "--config=configs/adding.py",
                         f"--workdir={workdir}", *flags], cwd=REPO, capture_output=True,
                        text=True, timeout=300, env={**os.environ, "PYTHONPATH": REPO})


def test_misspelt_field_is_refused_with_a_suggestion(tmp_path):
  out = launch("--config.model.hiden_size=8", workdir=tmp_path / "run")
  assert out.returncode == 2
  assert 'Did you mean "hidden_size"' in out.stderr and "Traceback" not in out.stderr
  assert not (tmp_path / "run").exists()


def test_invalid_value_is_refused_before_anything_runs(tmp_path):
  out = launch("--config.model.cell=lstn", workdir=tmp_path / "run")
  assert out.returncode == 2 and "Traceback" not in out.stderr
  assert "Invalid config: model (classifier): Unknown cell 'lstn'. Valid cells:" in out.stderr
  out = launch("--config.model.unroll=0", workdir=tmp_path / "run")
  assert "model.unroll must be None (by backend) or an integer >= 1, got 0" in out.stderr
  out = launch("--config.optim.clip_mode=norm", workdir=tmp_path / "run")
  assert "Unknown optim.clip_mode 'norm'. Valid: adaptive, global_norm, none, normalize, value" in out.stderr


def test_workdir_of_another_run_is_refused(tmp_path):
  """A config.json from a hidden-3 run; launching hidden 5 there fails before anything runs.

  (A whole successful launch, with its console lines, is in test_train's SIGKILL test.)
  """
  old = config_lib.override(adding.get_config(), {"model.hidden_size": 3})
  workdir_lib.prepare(old, str(tmp_path))
  out = launch(*TINY, "--config.model.hidden_size=5", workdir=tmp_path)
  assert out.returncode == 1 and "Traceback" not in out.stderr
  assert "ConfigMismatchError" in out.stderr and "model.hidden_size: 3 -> 5" in out.stderr
  assert "--overwrite to delete that run" in out.stderr
  assert sorted(os.listdir(tmp_path)) == ["config.json"]


def test_bad_config_argument_is_one_line(tmp_path):
  out = subprocess.run([sys.executable, "launch.py", "--config=configs/gating.py:bogus", "--sweep",
                        f"--workdir={tmp_path / 'sweep'}", "--dry_run"], cwd=REPO,
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": REPO})
  assert out.returncode == 2 and "Traceback" not in out.stderr
  assert "configs/gating.py takes TASK or TASK,full with TASK one of ('adding', 'copy'); " \
         "got 'bogus'." in out.stderr

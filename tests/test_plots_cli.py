"""python -m rnnlab.plots: figures of real runs, several runs and a sweep folder, bad folders."""

import os
import shutil
import subprocess
import sys

import pytest

from rnnlab import plots, run_folder
from rnnlab.training import trainer
from tests.conftest import REPO, quiet, small_config

PNG = b"\x89PNG\r\n\x1a\n"


def _is_png(path) -> bool:
  with open(path, "rb") as f:
    return f.read(8) == PNG


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
  """A folder with two finished tiny runs, one of them measuring gradient flow."""
  root = tmp_path_factory.mktemp("sweep")
  config = small_config("adding", **{
      "seed": 1, "task.seq_len": 6, "task.eval_size": 8, "model.hidden_size": 4,
      "train.batch_size": 4, "train.num_steps": 4, "train.log_every": 2,
      "train.eval_every": 2, "train.checkpoint_every": 0, "optim.clip_norm": 0.5,
      "gradflow.every": 2})
  trainer.train_and_evaluate(config, str(root / "cell=lstm,seed=1"), console=quiet)
  shutil.copytree(root / "cell=lstm,seed=1", root / "cell=lstm,seed=0")  # a second run,
  os.remove(root / "cell=lstm,seed=0" / run_folder.GRADFLOW)               # without gradflow
  return root


def test_one_run_gets_curves_and_its_gradient_flow(sweep, tmp_path, capsys):
  run = sweep / "cell=lstm,seed=1"
  assert plots.main([str(run), "--out", str(tmp_path)]) == 0
  assert _is_png(tmp_path / run_folder.CURVES) and _is_png(tmp_path / run_folder.GRADFLOW_FIGURE)
  assert f"Wrote {tmp_path / run_folder.CURVES}" in capsys.readouterr().out


def test_curves_show_eval_loss_baselines_and_the_configs_clip_threshold(sweep, tmp_path):
  fig_path = plots.run_curves([str(sweep / "cell=lstm,seed=0")], tmp_path / "c.png")
  assert _is_png(fig_path)
  # The figure's contents, read back through the same code path it draws with.
  run = plots._read_run(str(sweep / "cell=lstm,seed=0"))
  assert plots._clip_threshold(run["config"]) == 0.5
  steps, loss = plots._series(run["rows"], "eval/loss")
  assert list(steps) == [2, 4] and (loss > 0).all()
  assert run["rows"][-1]["task/baseline"] == pytest.approx(1 / 6)


def test_a_sweep_folder_overlays_its_runs_with_short_labels(sweep, tmp_path):
  assert plots.main([str(sweep), "--out", str(tmp_path)]) == 0
  assert _is_png(tmp_path / run_folder.CURVES)
  assert _is_png(tmp_path / f"seed=1_{run_folder.GRADFLOW_FIGURE}")
  assert not (tmp_path / f"seed=0_{run_folder.GRADFLOW_FIGURE}").exists()
  assert plots._labels(run_folder.runs_in(str(sweep))) == ["seed=0", "seed=1"]


def test_the_default_output_folder_is_the_folder_given(sweep, tmp_path):
  run = tmp_path / "run"
  shutil.copytree(sweep / "cell=lstm,seed=0", run)
  proc = subprocess.run([sys.executable, "-m", "rnnlab.plots", str(run)], cwd=REPO,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert _is_png(run / run_folder.CURVES)


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: (p / "file").write_text("x") and p / "file", "it is a file"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "holds no run: no metrics.jsonl"),
])
def test_a_folder_without_a_run_is_one_line_and_exit_2(tmp_path, capsys, make, message):
  assert plots.main([str(make(tmp_path))]) == 2
  err = capsys.readouterr().err
  assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_a_run_cut_short_mid_line_still_plots(sweep, tmp_path):
  run = tmp_path / "run"
  shutil.copytree(sweep / "cell=lstm,seed=0", run)
  with open(run / run_folder.METRICS, "a") as f:
    f.write('{"step": 6, "train/lo')  # a crash mid-write
  os.remove(run / run_folder.CONFIG)  # and no config: no clip line, still a figure
  assert plots.main([str(run)]) == 0 and _is_png(run / run_folder.CURVES)

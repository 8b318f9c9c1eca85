"""Sweeps as tasks on a real local Ray cluster (``--sweep --backend=ray``): the local
backend's run folders, skipping and aggregation; a worker killed mid-run is retried and
resumes from its checkpoint, or, past the retries, is recorded failed and resumable."""

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, rows

pytest.importorskip("ray")

SWEEP = '''
from configs import base

def get_config():
  config = base.get_config("adding")
  config.task.seq_len = 20
  config.task.eval_size = 16
  config.model.hidden_size = 8
  config.train.batch_size = 8
  config.train.num_steps = 400
  config.train.log_every = 50
  config.train.eval_every = 200
  config.train.checkpoint_every = 25
  return config.lock()

def sweep(add):
  for seed in range(2):
    add(**{"model.cell": "gru", "seed": seed})
'''


def _sweep(tmp_path, root, *flags):
  config = tmp_path / "tiny.py"
  config.write_text(SWEEP)
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "RAY_ADDRESS": ""}
  return subprocess.Popen([sys.executable, os.path.join(REPO, "launch.py"), f"--config={config}",
                           "--sweep", f"--workdir={root}", *flags], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _kill_worker_after_a_checkpoint(run_dir, timeout=240):
  """SIGKILL the Ray worker running ``run_dir`` once its run has saved a checkpoint."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    ckpts = run_dir / "checkpoints"
    if (run_dir / "task.json").exists() and ckpts.exists() and any(
        p.name.isdigit() for p in ckpts.iterdir()):
      pid = json.loads((run_dir / "task.json").read_text())["pid"]
      os.kill(pid, signal.SIGKILL)
      return pid
    time.sleep(0.2)
  raise AssertionError(f"{run_dir} saved no checkpoint in {timeout} s")


@contextlib.contextmanager
def _reaped(proc):
  """A sweep that outlives its test (a timeout, a failed check) is killed."""
  try:
    yield
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()


def _results(root):
  with open(root / "results.csv") as f:
    return {r["run"]: r for r in csv.DictReader(f)}


def test_a_killed_worker_is_retried_and_resumes(tmp_path):
  root = tmp_path / "sweep"
  proc = _sweep(tmp_path, root, "--backend=ray", "--task_retries=1")
  with _reaped(proc):
    killed = _kill_worker_after_a_checkpoint(root / "cell=gru,seed=0")
    out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, out[-3000:]
  assert "as tasks of a local Ray cluster (1 node(s)" in out
  results = _results(root)
  assert [r["status"] for r in results.values()] == ["done", "done"]
  log = (root / "cell=gru,seed=0" / "log.txt").read_text()
  assert "Resuming from the checkpoint of step" in log  # the retry went on from there
  task = json.loads((root / "cell=gru,seed=0" / "task.json").read_text())
  assert task["pid"] != killed and task["attempt"] == 2
  steps = [r["step"] for r in rows(root / "cell=gru,seed=0")]
  assert steps == sorted(set(steps)) and steps[-1] == 400  # no row twice, none missing
  # Again: every run is done, nothing runs and no cluster is started.
  again = _sweep(tmp_path, root, "--backend=ray")
  out, _ = again.communicate(timeout=120)
  assert again.returncode == 0 and "2 already done, 0 to run" in out


@pytest.mark.slow  # a second Ray cluster and three runs; the retry is tested by default
def test_past_its_retries_a_dead_worker_leaves_a_failed_resumable_run(tmp_path):
  root = tmp_path / "sweep"
  proc = _sweep(tmp_path, root, "--backend=ray", "--task_retries=0", "--only=seed=0")
  with _reaped(proc):
    _kill_worker_after_a_checkpoint(root / "cell=gru,seed=0")
    out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 1, out[-3000:]
  assert "run cell=gru,seed=0 FAILED" in out
  failed = json.loads((root / "cell=gru,seed=0" / "failed.json").read_text())
  assert "the task's worker died" in failed["log_tail"]
  # The next sweep (here the local backend) resumes it from its checkpoint.
  proc = _sweep(tmp_path, root, "--only=seed=0")
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, out[-3000:]
  assert "Resuming from the checkpoint of step" in (root / "cell=gru,seed=0" / "log.txt").read_text()
  assert _results(root)["cell=gru,seed=0"]["status"] == "done"


def test_an_unreachable_cluster_is_one_line_within_seconds(tmp_path):
  root = tmp_path / "sweep"
  start = time.monotonic()
  proc = _sweep(tmp_path, root, "--backend=ray", "--ray_address=127.0.0.1:1")
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 1
  assert ("Cannot start the sweep: no Ray cluster answers at 127.0.0.1:1 (Connection "
          "refused" in out) and "Traceback" not in out
  assert time.monotonic() - start < 60 and not root.exists()
  proc = _sweep(tmp_path, root, "--backend=ray", "--task_cpus=-1")
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 2 and "--task_cpus must be at least 0; got -1.0." in out

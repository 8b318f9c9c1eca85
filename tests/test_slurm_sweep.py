"""Sweeps as submitit jobs (``--sweep --backend=slurm``), here through submitit's local
executor (``--slurm_cluster=local``): the local backend's folders and aggregation, and a
job killed mid-run submitted again, resuming from its checkpoint."""

import csv
import json
import shutil

import pytest

from conftest import rows
from test_ray_sweep import _kill_worker_after_a_checkpoint, _reaped, _sweep  # the same sweep

pytest.importorskip("submitit")


@pytest.mark.slow  # ~70 s; the same retry path is tested by default on Ray (test_ray_sweep.py)
def test_a_killed_job_is_submitted_again_and_resumes(tmp_path):
  root = tmp_path / "sweep"
  proc = _sweep(tmp_path, root, "--backend=slurm", "--slurm_cluster=local", "--task_retries=1")
  with _reaped(proc):
    killed = _kill_worker_after_a_checkpoint(root / "cell=gru,seed=0")
    out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, out[-3000:]
  assert "as tasks of local submitit jobs (--slurm_cluster=local)" in out
  with open(root / "results.csv") as f:
    assert [r["status"] for r in csv.DictReader(f)] == ["done", "done"]
  log = (root / "cell=gru,seed=0" / "log.txt").read_text()
  assert "submitting it again (attempt 2)" in log
  assert "Resuming from the checkpoint of step" in log
  task = json.loads((root / "cell=gru,seed=0" / "task.json").read_text())
  assert task["pid"] != killed and task["attempt"] == 2
  steps = [r["step"] for r in rows(root / "cell=gru,seed=0")]
  assert steps == sorted(set(steps)) and steps[-1] == 400
  assert (root / "_slurm").is_dir()  # submitit's job files stay out of the run folders


def test_without_slurm_the_backend_says_so(tmp_path):
  root = tmp_path / "sweep"
  if shutil.which("sbatch"):  # pragma: no cover (a SLURM machine)
    pytest.skip("this machine has SLURM")
  proc = _sweep(tmp_path, root, "--backend=slurm")
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 1 and "there is no SLURM here (sbatch is not on the PATH)" in out
  assert "--slurm_cluster=local" in out and not root.exists()

"""Sweeps on a SLURM cluster through submitit: ``launch.py --sweep --backend=slurm``.

    python launch.py --config=configs/gating.py:copy --sweep --workdir=/shared/runs/gating \\
        --backend=slurm --slurm_partition=gpu --slurm_time_min=240 --task_gpus=1 --vmap=8

Each unit of the sweep (a run, or with ``--vmap`` a vmapped group) is one SLURM job
(``sbatch`` through submitit) that starts the same ``launch.py`` process the local
backend starts, with ``--task_cpus`` CPUs and ``--task_gpus`` GPUs. The driver waits for
the jobs, so it should itself run where it can stay up (a login node under ``tmux``,
or a small job). Everything else is the local backend's (``rnnlab.sweeps.execute``):
the run folders, skipping finished runs, resuming interrupted ones, failures recorded
per run, ``results.csv`` and ``summary.md``. ``--workdir`` must be on the cluster's
shared file system; submitit's job files go to ``<workdir>/_slurm``.

A job that ends without finishing its run (preempted, over its time limit, its node
lost) is submitted again ``--task_retries`` times (default 1); the new job resumes the
run from its last checkpoint. After that the run is recorded as failed and the next
``--sweep`` resumes it. ``--slurm_cluster=local`` runs the jobs as local processes
through submitit's local executor (a machine without SLURM; the tests).
"""

from __future__ import annotations

import os
import shutil
import threading

from rnnlab.sweeps import execute, remote

FOLDER = "_slurm"  # in the sweep's workdir: submitit's job scripts and logs
CLUSTERS = ("slurm", "local")


def run_job(args: list[str], log_path: str, task_path: str | None) -> int:
  """The body of a job: ``launch.py *args`` (``remote.run_launch``)."""
  job_id = os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID") or ""
  remote.record_task(task_path, f"{log_path}", job_id=job_id)
  return remote.run_launch(args, log_path, "slurm")


class SlurmRunner:
  """Runs the sweep's launch.py commands as submitit jobs (``execute.run_sweep(runner=...)``)."""

  def __init__(self, root: str, cluster: str = "slurm", partition: str | None = None,
               time_min: int = 240, cpus: float = 1.0, gpus: float = 0.0,
               mem_gb: float | None = None, retries: int = 1):
    try:
      import submitit  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise RuntimeError("--backend=slurm needs submitit: pip install 'rnnlab[cluster]' (or "
                         "pip install -r requirements-dev.txt).") from None
    if cluster not in CLUSTERS:
      raise ValueError(f"--slurm_cluster must be one of {CLUSTERS}; got {cluster!r}.")
    if cluster == "slurm" and shutil.which("sbatch") is None:
      raise RuntimeError("there is no SLURM here (sbatch is not on the PATH). Run the sweep "
                         "on the cluster's login node, or pass --slurm_cluster=local to run "
                         "the jobs as local processes.")
    if int(gpus) != gpus or int(cpus) != cpus:
      raise ValueError(f"--backend=slurm reserves whole CPUs and GPUs; got --task_cpus={cpus:g}, "
                       f"--task_gpus={gpus:g}.")
    self._submitit = submitit
    self._executor = submitit.AutoExecutor(folder=os.path.join(root, FOLDER, "%j"),
                                           cluster=cluster)
    params = dict(name="rnnlab", timeout_min=time_min, cpus_per_task=int(cpus),
                  gpus_per_node=int(gpus), tasks_per_node=1, nodes=1)
    if mem_gb is not None:
      params["mem_gb"] = mem_gb
    if cluster == "slurm" and partition:
      params["slurm_partition"] = partition
    self._executor.update_parameters(**params)
    self._cluster, self._partition, self.retries = cluster, partition, retries
    self.lock, self.running, self.stopping = threading.Lock(), set(), False

  def describe(self) -> str:
    if self._cluster == "local":
      return "local submitit jobs (--slurm_cluster=local)"
    return f"SLURM jobs{f' on partition {self._partition}' if self._partition else ''}"

  def run(self, cmd: list[str], log_path: str, task_path: str | None = None) -> int:
    """Submits ``cmd`` (``[python, launch.py, *args]``) as a job, again while it ends
    unfinished and retries are left; its exit code, or ``execute.WORKER_DIED``."""
    errors = self._submitit.core.utils
    for attempt in range(self.retries + 1):
      with self.lock:
        if self.stopping:
          return execute.INTERRUPTED
        job = self._executor.submit(run_job, cmd[2:], log_path, task_path)
        self.running.add(job)
      try:
        return job.result()
      except (errors.UncompletedJobError, errors.FailedJobError) as err:
        if self.stopping:
          return execute.INTERRUPTED
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        last = f"job {job.job_id}: {type(err).__name__}: {first}"
        if attempt < self.retries:
          with open(log_path, "a") as log:
            log.write(f"[slurm] {last[:300]}; submitting it again (attempt {attempt + 2}), "
                      "it resumes from the run's last checkpoint.\n")
      finally:
        with self.lock:
          self.running.discard(job)
    remote.note_death(log_path, "slurm", last, self.retries + 1)
    return execute.WORKER_DIED

  def stop(self, grace: float = 120.0):
    """Cancels the jobs in flight."""
    del grace
    with self.lock:
      self.stopping = True
      jobs = list(self.running)
    for job in jobs:
      try:
        job.cancel()
      except Exception:  # pylint: disable=broad-except (already ended)
        pass

  def close(self):
    pass

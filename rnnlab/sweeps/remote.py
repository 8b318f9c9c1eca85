"""What a cluster backend's task does where it runs (``ray_backend``, ``slurm_backend``).

A task is one unit of a sweep (a run, or a vmapped group) on some node: it records
where it runs (``<run>/task.json``: host, process id, attempt), then starts the same
``launch.py`` process the local backend starts, with its output appended to the
run's log. The launch.py process is tied to the task's process: if the task's
worker, job or node dies, the run stops at once, its checkpoints complete (Orbax
renames a checkpoint only once written), so a retry resumes from the last one.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time

from rnnlab.sweeps import execute


def _die_with_parent():
  """In the launch.py child: killed when the process that started it dies (Linux)."""
  try:
    # SIGKILL: a dead task's run must stop at once, before a retry of the task resumes it.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
  except OSError:
    pass


def record_task(task_path: str | None, task_id: str, **where) -> dict:
  """Writes ``task.json`` (host, pid, attempt: 1 + the attempts of the same task before)."""
  info = {"host": socket.gethostname(), "pid": os.getpid(), "task_id": task_id, **where,
          "started": time.time(), "attempt": 1}
  if task_path:
    try:
      with open(task_path) as f:
        old = json.load(f)
      if old.get("task_id") == task_id:
        info["attempt"] = old.get("attempt", 0) + 1
    except (OSError, ValueError):
      pass
    with open(task_path, "w") as f:
      json.dump(info, f)
  return info


def run_launch(args: list[str], log_path: str, tag: str) -> int:
  """``launch.py *args`` with output appended to ``log_path``; its exit code. An interrupt
  of the task (a cancel) stops the run within a step, checkpoints complete."""
  with open(log_path, "a") as log:
    log.write(f"[{tag}] task on {socket.gethostname()} (pid {os.getpid()})\n")
    log.flush()
    proc = subprocess.Popen([sys.executable, execute.LAUNCH, *args], stdout=log,
                            stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
  try:
    return proc.wait()
  except KeyboardInterrupt:
    proc.terminate()
    try:
      proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
      proc.kill()
    return execute.INTERRUPTED


def note_death(log_path: str, tag: str, what: str, attempts: int):
  """The log line of a task whose worker/job died past its retries."""
  with open(log_path, "a") as log:
    log.write(f"[{tag}] the task's worker died ({what[:300]}) after {attempts} attempt(s); "
              "the run keeps its checkpoints: run the sweep again to resume it.\n")

"""Running a sweep: one process per run (or per vmapped group), resumable, in parallel.

``python launch.py --config=configs/X.py --sweep --workdir=ROOT`` runs every run
in ``ROOT/<name>``. Each run is its own ``launch.py`` process, so it writes its
own metrics and checkpoints and resumes like any single run. Starting the sweep
again skips finished runs (``summary.json`` present) and resumes interrupted
ones; a failing run is recorded in ``ROOT/<name>/failed.json`` and does not stop
the others. With ``--vmap=N`` runs that differ only in ``vmapped.VMAPPABLE``
fields train N at a time in one process (logs in ``ROOT/_vmap/``).
"""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import threading
import time
from typing import Any

from rnnlab import onednn
from rnnlab.sweeps import spec
from rnnlab.training import config as config_lib
from rnnlab.training import vmapped
from rnnlab.training import workdir
from rnnlab.training.periodic import fmt_duration

INTERRUPTED = 130  # launch.py's exit code after Ctrl-C or SIGTERM
WORKER_DIED = -1000  # not an exit code: a cluster backend's task died (ray_backend, slurm_backend)


class _Children:
  """The launch.py processes a sweep is running, so that an interrupt reaches them.

  Ctrl-C in a terminal signals the whole process group, but ``kill`` or a scheduler's
  SIGTERM reaches the sweep's process only: without this its children would train on
  (and the sweep would wait for them) after it said it stopped.
  """

  def __init__(self, env: dict[str, str] | None = None):
    self.lock, self.running, self.stopping = threading.Lock(), set(), False
    self.env = env  # the children's environment (None: this process's)

  def run(self, cmd: list[str], log_path: str, task_path: str | None = None) -> int:
    """Runs ``cmd`` (a launch.py process) with its output appended to ``log_path``; returns
    its exit code. (``task_path``: where a cluster backend records its task.)"""
    del task_path
    with self.lock:
      if self.stopping:
        return INTERRUPTED
      with open(log_path, "a") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env)
      self.running.add(proc)
    try:
      return proc.wait()
    finally:
      with self.lock:
        self.running.discard(proc)

  def stop(self, grace: float = 120.0):
    """SIGTERM to every child (each stops within a step, checkpoints complete), then waits;
    SIGKILL after ``grace`` seconds (the checkpoints written so far stay complete)."""
    with self.lock:
      self.stopping = True
      procs = list(self.running)
    for proc in procs:
      proc.terminate()
    deadline = time.time() + grace
    for proc in procs:
      try:
        proc.wait(timeout=max(deadline - time.time(), 0.1))
      except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def child_env(jobs: int) -> dict[str, str]:
  """The environment of ``jobs`` local runs at once: with more than one, each run's oneDNN
  calls get their share of the cores (``RNNLAB_ONEDNN_THREADS``), unless it or
  ``OMP_NUM_THREADS`` is set. OpenMP threads of runs that share cores wait for each other at
  every step: beside one busy process the quickstart took 53 s on oneDNN's default threads,
  6 s on one (``onednn.threads``)."""
  env = dict(os.environ)
  if jobs > 1 and not {onednn.THREADS_ENV, "OMP_NUM_THREADS"} & set(env):
    env[onednn.THREADS_ENV] = str(max(1, len(os.sched_getaffinity(0)) // jobs))
  return env


LAUNCH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                      "launch.py")
VMAP_LOGS = "_vmap"
TASK = "task.json"  # in a run folder: where a cluster backend ran it (rnnlab.sweeps.ray_backend)


def expected_configs(config, runs: list[spec.Run]) -> dict[str, dict]:
  """{run name: the resolved config the sweep runs it with} (``config`` holds the
  command line's ``--config.*`` flags, each run adds its overrides)."""
  return {r.name: config_lib.resolved(config_lib.with_overrides(config, r.as_dict()))
          for r in runs}


def status(run_dir: str, expected: dict | None = None) -> str:
  """'done', 'other config', 'failed', 'partial' (has started) or 'pending'.

  A run is done only for the config it ran with: with ``expected`` (its resolved
  config in this sweep), a finished run whose config.json differs is 'other config'
  (run again, it stops with the fields that differ; give the sweep another --workdir).
  A summary.json that does not parse (a damaged file) counts as 'partial': running
  the run again resumes from its last checkpoint and writes the summary anew.
  """
  if os.path.exists(os.path.join(run_dir, workdir.SUMMARY)):
    try:
      workdir.read_json(os.path.join(run_dir, workdir.SUMMARY))
    except (OSError, ValueError):
      return "partial"
    if expected is not None:
      try:
        recorded = workdir.read_config(run_dir)
      except ValueError:
        recorded = None
      if recorded is None or config_lib.diff(recorded, expected):
        return "other config"
    return "done"
  if os.path.exists(os.path.join(run_dir, workdir.FAILED)):
    return "failed"
  return "partial" if os.path.isdir(run_dir) else "pending"


def command(config_path: str, run_dir: str, run: spec.Run, extra_flags=()) -> list[str]:
  """The launch.py command line for one run."""
  cmd = [sys.executable, LAUNCH, f"--config={config_path}", f"--workdir={run_dir}"]
  # The sweep's own overrides come last so that they win over command-line ones.
  return cmd + list(extra_flags) + [f"--config.{k}={_flag_value(v)}" for k, v in run.overrides]


def _flag_value(value: Any) -> str:
  if value is None:
    return "None"
  return str(value)


class _Progress:
  """Counts runs done / running / failed and prints one line with an ETA."""

  def __init__(self, total: int, already_done: int, stream=sys.stdout):
    self.total, self.done, self.failed, self.running = total, already_done, 0, 0
    self.started = time.time()
    self.finished_here = 0
    self.lock = threading.Lock()
    self.stream = stream

  def update(self, *, start=0, done=0, failed=0):
    with self.lock:
      self.running += start - done - failed
      self.done += done
      self.failed += failed
      self.finished_here += done + failed
      self._print()

  def _print(self):
    elapsed = time.time() - self.started
    left = self.total - self.done - self.failed
    eta = (elapsed / self.finished_here * left / max(self.running, 1)
           if self.finished_here else float("nan"))
    eta_text = "?" if eta != eta else fmt_duration(eta * max(self.running, 1))
    print(f"[sweep] {self.done}/{self.total} done, {self.running} running, "
          f"{self.failed} failed, elapsed {fmt_duration(elapsed)}, ETA {eta_text}",
          file=self.stream, flush=True)


def _execute(cmd: list[str], run_dir: str, children) -> tuple[bool | None, str]:
  """Runs one launch.py process; its output goes to ``run_dir/log.txt``. Returns
  (finished, log tail); finished is None when the sweep was interrupted."""
  os.makedirs(run_dir, exist_ok=True)
  failed_path = os.path.join(run_dir, workdir.FAILED)
  if os.path.exists(failed_path):
    os.remove(failed_path)  # a retry: the earlier failure is no longer the run's state
  with open(os.path.join(run_dir, workdir.LOG), "a") as log:
    log.write(f"$ {' '.join(cmd)}\n")
  returncode = children.run(cmd, os.path.join(run_dir, workdir.LOG),
                            os.path.join(run_dir, TASK))
  if returncode == 0 and os.path.exists(os.path.join(run_dir, workdir.SUMMARY)):
    return True, ""
  with open(os.path.join(run_dir, workdir.LOG)) as log:
    tail = log.read()[-2000:]
  if returncode == INTERRUPTED or children.stopping:
    return None, tail  # interrupted, not failed: the run resumes from its checkpoint
  _record_failure(run_dir, cmd, returncode, tail)
  return False, tail


def _record_failure(run_dir: str, cmd: list[str], returncode, tail: str):
  workdir.write_json(os.path.join(run_dir, workdir.FAILED),
                     {"returncode": returncode, "command": cmd, "log_tail": tail})


def vmap_groups(runs: list[spec.Run], max_size: int) -> list[list[spec.Run]]:
  """Runs that differ only in ``vmapped.VMAPPABLE`` fields, in groups of <= max_size.

  Order follows the sweep; a group of one runs as an ordinary process.
  """
  groups: dict[tuple, list[spec.Run]] = {}
  for run in runs:
    key = tuple((k, repr(v)) for k, v in run.overrides if k not in vmapped.VMAPPABLE)
    groups.setdefault(key, []).append(run)
  return [members[i:i + max_size] for members in groups.values()
          for i in range(0, len(members), max(1, max_size))]


def _execute_group(config_path: str, root: str, runs: list[spec.Run], indices: list[int],
                   extra_flags, children) -> dict[str, bool | None]:
  """One launch.py process trains ``runs`` vmapped; returns {name: finished} (None: the
  sweep was interrupted)."""
  cmd = [sys.executable, LAUNCH, f"--config={config_path}", f"--workdir={root}", "--sweep",
         f"--vmap_group={','.join(map(str, indices))}", *extra_flags]
  log_path = os.path.join(root, VMAP_LOGS, f"runs_{indices[0]}+{len(indices)}.log")
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  with open(log_path, "a") as log:
    log.write(f"$ {' '.join(cmd)}\n")
  returncode = children.run(cmd, log_path, log_path[:-len(".log")] + ".task.json")
  with open(log_path) as log:
    tail = log.read()[-2000:]
  interrupted = returncode == INTERRUPTED or children.stopping
  result = {}
  for run in runs:
    run_dir = os.path.join(root, run.name)
    result[run.name] = True if status(run_dir) == "done" else (None if interrupted else False)
    if result[run.name] is False and status(run_dir) != "failed":
      os.makedirs(run_dir, exist_ok=True)
      _record_failure(run_dir, cmd, returncode, tail)
  return result


def run_sweep(config_path: str, root: str, runs: list[spec.Run], *, jobs: int = 1,
              retry_failed: bool = True, extra_flags=(), vmap: int = 0,
              all_runs: list[spec.Run] | None = None, stream=sys.stdout,
              expected: dict[str, dict] | None = None, runner=None) -> dict[str, str]:
  """Runs every unfinished run of the sweep; returns {name: final status}.

  Finished runs are skipped. Interrupted runs restart with the same command and
  so resume from their last checkpoint. ``jobs`` processes execute at once.
  With ``vmap`` > 0, runs that differ only in vmappable values (seed, learning
  rate, clip threshold, forget bias; see ``rnnlab.training.vmapped``) train together,
  up to ``vmap`` per process, in one vmapped program. ``all_runs``: the whole
  expansion when ``runs`` is a selection of it (``--only``; group processes
  name their runs by index in it). ``expected``: ``expected_configs``, so that a run
  finished with another config is not taken for done. ``runner``: where the processes
  run; by default here, ``jobs`` at a time (``rnnlab.sweeps.ray_backend.RayRunner``: as
  tasks on a Ray cluster, every unit submitted at once and scheduled by its resources).
  """
  os.makedirs(root, exist_ok=True)
  spec.write_manifest(config_path, root, runs)
  state = lambda r: status(os.path.join(root, r.name), (expected or {}).get(r.name))
  todo = [r for r in runs if state(r) != "done" and (retry_failed or state(r) != "failed")]
  progress = _Progress(len(runs), len(runs) - len(todo), stream)
  units = vmap_groups(todo, vmap) if vmap > 0 else [[r] for r in todo]
  index = {r.name: i for i, r in enumerate(all_runs or runs)}
  children = runner if runner is not None else _Children(child_env(jobs))
  at_once = (f"{jobs} at a time" if runner is None else
             f"as tasks of {children.describe()}")
  if runner is not None:
    jobs = max(1, len(units))  # the cluster schedules them by their resources
  print(f"[sweep] {len(runs)} runs in {root}: {len(runs) - len(todo)} already done, "
        f"{len(todo)} to run in {len(units)} process(es), {at_once}"
        f"{f' (up to {vmap} vmapped runs per process)' if vmap > 0 else ''}.",
        file=stream, flush=True)

  def one(unit: list[spec.Run]):
    if children.stopping:
      return {}
    progress.update(start=len(unit))
    if len(unit) == 1:
      run = unit[0]
      run_dir = os.path.join(root, run.name)
      ok, tail = _execute(command(config_path, run_dir, run, extra_flags), run_dir, children)
      last = tail.strip().splitlines()[-1] if tail.strip() else "no output"
      finished, why = {run.name: ok}, f": {last} (see {run_dir}/log.txt)"
    else:
      finished = _execute_group(config_path, root, unit, [index[r.name] for r in unit],
                                extra_flags, children)
      why = f" (see its {workdir.FAILED} and {workdir.LOG}, and {root}/{VMAP_LOGS}/)"
    if children.stopping:
      return {n: "done" if ok else "partial" for n, ok in finished.items()}
    ok_count = sum(bool(ok) for ok in finished.values())
    progress.update(done=ok_count, failed=len(unit) - ok_count)
    for name, ok in finished.items():
      if not ok:
        print(f"[sweep] run {name} FAILED{why}", file=stream, flush=True)
    return {n: "done" if ok else "failed" for n, ok in finished.items()}

  results = {}
  pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs))
  try:
    for part in pool.map(one, units):
      results.update(part)
  except KeyboardInterrupt:
    children.stop()  # the runs in flight stop within a step, their checkpoints complete
    raise
  finally:
    pool.shutdown(wait=True)
  return {r.name: results.get(r.name, state(r)) for r in runs}


def run_group(config, root: str, runs: list[spec.Run], indices: list[int]) -> int:
  """``launch.py --sweep --vmap_group=I,J,..``: trains those runs vmapped in this process."""
  chosen = [runs[i] for i in indices]
  configs = [config_lib.with_overrides(config, r.as_dict()) for r in chosen]
  summaries = vmapped.train_runs(configs, [os.path.join(root, r.name) for r in chosen])
  return 0 if all(s is not None for s in summaries) else 1

"""Sweeps on a Ray cluster: ``launch.py --sweep --backend=ray``.

    python launch.py --config=configs/gating.py:copy --sweep --workdir=/shared/runs/gating \\
        --backend=ray --ray_address=head-node:6379 --task_cpus=2 --vmap=3

Each unit of the sweep (a run, or with ``--vmap`` a vmapped group) is one Ray task
that starts the same ``launch.py`` process the local backend starts, on whichever
node has the task's resources free (``--task_cpus``, ``--task_gpus``). Everything
else is the local backend's (``rnnlab.sweeps.execute``): the run folders, skipping
finished runs, resuming interrupted ones from their checkpoints, failures recorded
in ``failed.json`` without stopping the others, ``results.csv`` and ``summary.md``.

Where: ``--ray_address`` (else ``RAY_ADDRESS``) names a running cluster; with
neither, a local Ray cluster is started on this machine for the sweep. On a real
cluster every node needs this checkout at the same path, with its environment,
and ``--workdir`` must be on a file system every node sees: the tasks write the
run folders, and the driver reads them.

A task records where it runs in ``<run>/task.json`` (node, process id, attempt).
If its worker or node dies mid-run, the launch.py process dies with it (it is
killed with its parent) and the run keeps its checkpoints: with ``--task_retries=1``
(the default) Ray runs the task again, which resumes from the last checkpoint;
once the retries are spent the run is recorded as failed (the worker's death in
``failed.json``) and the next ``--sweep`` resumes it. Ctrl-C cancels the tasks: each
launch.py process stops within a step with its checkpoints complete.
"""

from __future__ import annotations

import os
import threading
import time

from rnnlab.sweeps import execute, remote
from rnnlab.training import distributed

INTERRUPTED = execute.INTERRUPTED
WORKER_DIED = execute.WORKER_DIED


def _probe(address: str, timeout_s: float):
  """RuntimeError within ``timeout_s`` unless something answers at HOST:PORT."""
  host, _, port = address.replace("ray://", "").rpartition(":")
  try:
    port_number = int(port)
  except ValueError:
    raise RuntimeError(f"--ray_address {address!r} is not HOST:PORT (for example "
                       "10.0.0.1:6379), 'auto' or 'local'.") from None
  last = distributed.wait_for_port(host.strip("[]"), port_number, timeout_s)
  if last is None:
    return
  raise RuntimeError(f"no Ray cluster answers at {address} ({last}, {timeout_s:g} s). Start "
                     "one there (ray start --head --port=PORT on that host), fix the address, "
                     "or leave out --ray_address and RAY_ADDRESS to start a local one.")


def connect(address: str | None, timeout_s: float = 10.0) -> str:
  """Connects this driver to the cluster at ``address`` (None: ``RAY_ADDRESS``, else a new
  local cluster); returns a description. RuntimeError (one sentence) when there is no
  Ray installed or no cluster at that address."""
  try:
    import ray  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise RuntimeError("--backend=ray needs Ray: pip install 'rnnlab[cluster]' (or "
                       "pip install -r requirements-dev.txt).") from None
  address = address or os.environ.get("RAY_ADDRESS") or None
  if address not in (None, "auto", "local"):
    _probe(address, timeout_s)
  if address in (None, "local"):  # a cluster of this sweep's own: no token files to write
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
  kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                configure_logging=True)
  if ray.is_initialized():
    ray.shutdown()
  try:
    ray.init(address=address, **kwargs)
  except Exception as err:  # pylint: disable=broad-except (Ray raises many types)
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    where = address or "a new local cluster"
    raise RuntimeError(f"could not connect to the Ray cluster at {where} ({first[:200]}).") \
        from None
  cpus = ray.cluster_resources().get("CPU", 0)
  gpus = ray.cluster_resources().get("GPU", 0)
  nodes = len([n for n in ray.nodes() if n.get("Alive")])
  where = "a local Ray cluster" if address in (None, "local") else f"the Ray cluster at {address}"
  return f"{where} ({nodes} node(s), {cpus:g} CPUs, {gpus:g} GPUs)"


def run_command(args: list[str], log_path: str, task_path: str | None) -> int:
  """The body of a Ray task: ``launch.py *args`` (``remote.run_launch``)."""
  import ray  # pylint: disable=g-import-not-at-top
  context = ray.get_runtime_context()
  remote.record_task(task_path, context.get_task_id(), node_id=context.get_node_id())
  return remote.run_launch(args, log_path, "ray")


class RayRunner:
  """Runs the sweep's launch.py commands as Ray tasks (``execute.run_sweep(runner=...)``)."""

  def __init__(self, description: str, cpus: float = 1.0, gpus: float = 0.0,
               retries: int = 1):
    import ray  # pylint: disable=g-import-not-at-top
    self._ray = ray
    self._description = description
    self._remote = ray.remote(run_command).options(
        num_cpus=cpus, num_gpus=gpus, max_retries=retries, retry_exceptions=False)
    self.lock, self.running, self.stopping = threading.Lock(), set(), False
    self.retries = retries

  def describe(self) -> str:
    return self._description

  def run(self, cmd: list[str], log_path: str, task_path: str | None = None) -> int:
    """Submits ``cmd`` (``[python, launch.py, *args]``) as a task; its exit code, or
    ``WORKER_DIED`` (with a line in the log) when its worker died past the retries."""
    with self.lock:
      if self.stopping:
        return INTERRUPTED
      ref = self._remote.remote(cmd[2:], log_path, task_path)
      self.running.add(ref)
    try:
      return self._ray.get(ref)
    except self._ray.exceptions.TaskCancelledError:
      return INTERRUPTED
    except (self._ray.exceptions.WorkerCrashedError, self._ray.exceptions.NodeDiedError,
            self._ray.exceptions.RayTaskError, self._ray.exceptions.RaySystemError) as err:
      first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
      remote.note_death(log_path, "ray", f"{type(err).__name__}: {first}", self.retries + 1)
      return WORKER_DIED
    finally:
      with self.lock:
        self.running.discard(ref)

  def stop(self, grace: float = 120.0):
    """Cancels the tasks in flight (each launch.py process stops within a step)."""
    with self.lock:
      self.stopping = True
      refs = list(self.running)
    for ref in refs:
      self._ray.cancel(ref)
    deadline = time.time() + grace
    for ref in refs:
      try:
        self._ray.wait([ref], timeout=max(deadline - time.time(), 0.1))
      except Exception:  # pylint: disable=broad-except (cancelled)
        pass

  def close(self):
    self._ray.shutdown()

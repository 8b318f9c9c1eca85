"""One run across processes and hosts: ``jax.distributed`` from flags or the environment.

Every process runs the same command; together they form one JAX program over all
their devices (``rnnlab.training.sharding``: the batch is split over every device
of every process)::

    # host 0 (also the coordinator)                      # host 1
    python launch.py --config=... --workdir=/shared/run \\   python launch.py ... \\
        --coordinator=host0:8476 --num_processes=2 \\          --coordinator=host0:8476 \\
        --process_id=0                                         --num_processes=2 --process_id=1

The three values may instead come from the environment (``JAX_COORDINATOR_ADDRESS``,
``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``), and under SLURM (``srun``) or Open MPI
(``mpirun``) ``--distributed`` alone lets JAX read them from the cluster's own
variables. On CPUs the processes talk over gloo (TCP).

Who does what: every process builds its share of each batch, steps, evaluates and
takes part in every checkpoint (Orbax writes a multi-process checkpoint: each array
once, committed by process 0). Process 0 alone writes the run folder's files
(config.json, metrics.jsonl, TensorBoard, summary.json) and the console; the
others keep their metrics in memory. ``--workdir`` must be one folder all
processes see (a shared file system).
"""

from __future__ import annotations

import os
import re
import socket
import time

import jax

ENV = {"coordinator": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES",
       "process_id": "JAX_PROCESS_ID"}


def settings(coordinator: str | None = None, num_processes: int | None = None,
             process_id: int | None = None, auto: bool = False,
             environ=os.environ) -> dict | None:
  """The checked ``jax.distributed.initialize`` arguments, or None for a single process.

  Flags win over the environment. ValueError (one sentence naming the value and what
  is valid) for a malformed address, a count below 1 or a process id out of range.
  """
  values = {"coordinator": coordinator, "num_processes": num_processes,
            "process_id": process_id}
  for name, var in ENV.items():
    if values[name] is None and environ.get(var) not in (None, ""):
      raw = environ[var]
      if name != "coordinator":
        try:
          raw = int(raw)
        except ValueError:
          raise ValueError(f"{var}={environ[var]!r} is not a whole number.") from None
      values[name] = raw
  given = {k: v for k, v in values.items() if v is not None}
  if not given and not auto:
    return None
  if values["coordinator"] is not None and not re.fullmatch(
      r"(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+):\d{1,5}", values["coordinator"]):
    raise ValueError(f"--coordinator {values['coordinator']!r} is not HOST:PORT (for "
                     "example 10.0.0.1:8476 or node001:8476).")
  n, i = values["num_processes"], values["process_id"]
  if n is not None and n < 1:
    raise ValueError(f"--num_processes must be at least 1; got {n}.")
  if i is not None and i < 0 or (n is not None and i is not None and i >= n):
    raise ValueError(f"--process_id {i} is out of range for --num_processes {n}: valid ids "
                     f"are 0 to {n - 1 if n else '(num_processes - 1)'}.")
  if not auto:
    missing = [f"--{k}" for k, v in values.items() if v is None]
    if missing:
      raise ValueError(f"A run across processes needs --coordinator, --num_processes and "
                       f"--process_id (or {', '.join(ENV.values())}); {', '.join(missing)} "
                       "missing. Under SLURM or Open MPI pass --distributed to detect them.")
  return {"coordinator_address": values["coordinator"], "num_processes": n,
          "process_id": i}


def _split(address: str) -> tuple[str, int]:
  host, _, port = address.rpartition(":")
  return host.strip("[]"), int(port)


def wait_for_port(host: str, port: int, timeout_s: float) -> str | None:
  """None once something accepts a TCP connection at host:port within ``timeout_s``;
  otherwise why the last attempt failed (for the message)."""
  deadline, last = time.monotonic() + timeout_s, "no answer"
  while time.monotonic() < deadline:
    try:
      socket.create_connection((host, port), timeout=1).close()
      return None
    except OSError as err:
      last = err.strerror or str(err)
      time.sleep(0.3)
  return last


def check_reachable(args: dict, timeout_s: float):
  """Before JAX joins (whose client aborts the process on a timeout): process 0 checks
  that it can listen on the coordinator's port, the others that it answers in time.
  RuntimeError (one sentence) otherwise."""
  address, pid = args.get("coordinator_address"), args.get("process_id")
  if address is None or pid is None:
    return  # the cluster's own detection (--distributed) gives them later
  host, port = _split(address)
  if pid == 0:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
      try:
        s.bind(("", port))
      except OSError as err:
        raise RuntimeError(f"process 0 cannot listen on port {port} for the coordinator "
                           f"{address} ({err.strerror}): choose a free port.") from None
    return
  last = wait_for_port(host, port, timeout_s)
  if last is None:
    return
  raise RuntimeError(f"the coordinator {address} did not answer within {timeout_s:g} s "
                     f"({last}). Start process 0 there (on that port), or check the host name "
                     "and that the port is open between the hosts.")


def initialize(args: dict, timeout_s: int = 120):
  """``jax.distributed.initialize`` with ``args`` (``settings``); on the CPU over gloo.

  Raises RuntimeError (one sentence) when the coordinator cannot be reached in time
  (``check_reachable``). Once joined, a process whose peers do not all arrive within
  ``timeout_s`` is stopped by JAX itself (DEADLINE_EXCEEDED in its log).
  """
  check_reachable(args, timeout_s)
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(**args, initialization_timeout=timeout_s)
  except (RuntimeError, ValueError) as err:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    where = args.get("coordinator_address") or "the cluster's coordinator"
    raise RuntimeError(
        f"Could not join the run's processes through {where} within {timeout_s} s "
        f"({first[:200]}). Check that process 0 runs on that host and port, that every "
        "process was given the same --coordinator and --num_processes, and that the port "
        "is open between the hosts.") from None


def is_primary() -> bool:
  """Whether this process writes the run folder and the console (process 0)."""
  return jax.process_index() == 0


def barrier(name: str):
  """Waits until every process got here (a no-op in a single process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)

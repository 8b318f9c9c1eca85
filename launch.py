r"""Trains one experiment: parse flags, validate, call the library.

    python launch.py --config=configs/adding.py --workdir=runs/adding \
        --config.model.cell=gru --config.task.seq_len=200

Every setting is a field of the config file (``get_config()``) and can be
overridden with ``--config.<field>=<value>``; a misspelt field is an error.
Running the same command again resumes from the last checkpoint in
``--workdir``; a workdir that holds a run with a different config is refused
unless ``--overwrite`` is given (which deletes that run). With ``--sweep``
the runs of the config file's ``sweep(add)`` execute (see rnnlab/sweeps/)::

    python launch.py --config=configs/gating.py:copy --sweep --workdir=runs/gating --jobs=2

and with ``--vmap=N`` runs that differ only in seed, learning rate, clip threshold or
forget bias train N at a time in one vmapped program (rnnlab/training/vmapped.py).
``--backend=ray`` or ``--backend=slurm`` runs the sweep's processes as tasks of a Ray
cluster or as SLURM jobs (rnnlab/sweeps/ray_backend.py, slurm_backend.py).

A run uses every device it sees, its batch split over them (``config.mesh``,
rnnlab/training/sharding.py); ``--coordinator``, ``--num_processes`` and ``--process_id``
(or ``--distributed`` under SLURM/Open MPI) make one run of several processes or hosts
(rnnlab/training/distributed.py).

Exit codes: 0 done, 1 the run stopped (no intact checkpoint, NaN/Inf, config
mismatch, a disk or folder that cannot be written), 2 bad flags or config values,
130 interrupted (Ctrl-C or SIGTERM).
"""

import os
import signal
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. configs/adding.py.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None,
                                "Where the run writes its outputs and resumes from.")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False,
    "Delete the run already in --workdir (checkpoints, metrics) and start afresh.")
_SWEEP = flags.DEFINE_bool(
    "sweep", False,
    "Run every run of the config file's sweep(add), each in --workdir/<run name>; finished "
    "runs are skipped, interrupted ones resume. Writes results.csv and summary.md.")
_DRY_RUN = flags.DEFINE_bool(
    "dry_run", False, "With --sweep: list the runs and their status, run nothing.")
_JOBS = flags.DEFINE_integer(
    "jobs", 1, "With --sweep: how many runs execute at once (one process each).")
_AGGREGATE = flags.DEFINE_bool(
    "aggregate", False, "With --sweep: only re-aggregate the finished runs in --workdir.")
_VMAP = flags.DEFINE_integer(
    "vmap", 0, "With --sweep: train runs that differ only in seed, learning rate, clip "
    "threshold or forget bias together in one vmapped program, up to this many per process "
    "(0 = one process per run). See rnnlab/training/vmapped.py.", lower_bound=0)
_ONLY = flags.DEFINE_string(
    "only", "", "With --sweep: only the runs whose overrides include every field=value given, "
    "e.g. --only=seq_len=50,cell=lstm|gru (fields by their last name, as in the run folders; "
    "a|b accepts either value).")
_VMAP_GROUP = flags.DEFINE_list(
    "vmap_group", [], "Internal (used by --sweep --vmap): train these runs of the sweep, "
    "given by index, vmapped in this process.")
_BACKEND = flags.DEFINE_enum(
    "backend", "local", ["local", "ray", "slurm"], "With --sweep: where the runs execute: "
    "'local' processes (--jobs at a time), 'ray' tasks on a Ray cluster or 'slurm' jobs "
    "through submitit (pip install 'rnnlab[cluster]'; rnnlab/sweeps/ray_backend.py, "
    "slurm_backend.py).")
_TASK_CPUS = flags.DEFINE_float("task_cpus", 1.0, "With --backend=ray or slurm: CPUs each "
                                "task (a run or a vmapped group) reserves.")
_TASK_GPUS = flags.DEFINE_float("task_gpus", 0.0, "With --backend=ray or slurm: GPUs each "
                                "task reserves (Ray: fractions share a GPU).")
_TASK_RETRIES = flags.DEFINE_integer(
    "task_retries", 1, "With --backend=ray or slurm: how often a task whose worker, job or "
    "node died is run again (it resumes from the run's checkpoint); after that the run is "
    "recorded failed.")
_RAY_ADDRESS = flags.DEFINE_string(
    "ray_address", None, "With --backend=ray: the cluster's HOST:PORT (or RAY_ADDRESS); "
    "neither starts a local Ray cluster for the sweep.")
_SLURM_PARTITION = flags.DEFINE_string("slurm_partition", None,
                                       "With --backend=slurm: the partition of the jobs.")
_SLURM_TIME = flags.DEFINE_integer("slurm_time_min", 240,
                                   "With --backend=slurm: each job's time limit in minutes.")
_SLURM_MEM = flags.DEFINE_float("slurm_mem_gb", None,
                                "With --backend=slurm: memory per job (GB); default: SLURM's.")
_SLURM_CLUSTER = flags.DEFINE_enum(
    "slurm_cluster", "slurm", ["slurm", "local"], "With --backend=slurm: 'local' runs the "
    "jobs as local processes through submitit (a machine without SLURM).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator", None, "One run across processes or hosts: process 0's HOST:PORT, the same "
    "for every process (or JAX_COORDINATOR_ADDRESS). See rnnlab/training/distributed.py.")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "With --coordinator: how many processes the run spans "
    "(or JAX_NUM_PROCESSES).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "With --coordinator: this process's id, 0 to num_processes - 1 "
    "(or JAX_PROCESS_ID); process 0 writes the run folder and the console.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "One run across the processes of a SLURM (srun) or Open MPI "
    "(mpirun) job: JAX reads the coordinator, count and id from the cluster's variables.")
_JOIN_TIMEOUT = flags.DEFINE_integer(
    "join_timeout", 120, "Seconds a process waits for the others to join (--coordinator, "
    "--distributed) before it gives up.", lower_bound=1)
flags.mark_flags_as_required(["config", "workdir"])


def _config_file_error(err: BaseException, path: str | None) -> str | None:
  """"<file>, line <n>: <what>" when loading or running the config file failed, else None."""
  if isinstance(err, SyntaxError) and err.filename and err.filename.endswith(".py"):
    return f"the config file {err.filename} does not parse, line {err.lineno}: {err.msg}."
  if path is None:
    return None
  if not os.path.exists(path):
    return f"there is no config file {path}."
  tb, line = err.__traceback__, None
  while tb is not None:
    if os.path.abspath(tb.tb_frame.f_code.co_filename) == os.path.abspath(path):
      line = tb.tb_lineno
    tb = tb.tb_next
  if line is None:
    return None
  what = str(err.args[0]).strip("'\"") if err.args else ""
  return f"the config file {path} raised {type(err).__name__} at line {line}: {what}".rstrip(": ")


def _parse(argv):
  """Flag parsing that turns a misspelt or mistyped field, or a config file that does not load,
  into one line, not a traceback."""
  try:
    rest = flags.FLAGS(argv)
    _CONFIG.value.get("seed")  # a config file that failed to load reports it here
    return rest
  except Exception as err:  # pylint: disable=broad-except (one line for any failure)
    path = next((a.split("=", 1)[1].split(":")[0] for a in argv if a.startswith("--config=")),
                None)
    cause = err
    while cause.__cause__ is not None or cause.__context__ is not None:
      cause = cause.__cause__ or cause.__context__
    message = _config_file_error(cause, path) or _config_file_error(err, path)
    if message is None:
      message = err.args[0] if err.args else err
      while isinstance(message, Exception) and message.args:  # ml_collections nests KeyErrors
        message = message.args[0]
      message = str(message)
      if "Traceback" in message:  # a config file's get_config raised: its last line says why
        lines = [l for l in message.splitlines() if l.strip()]
        message = f"{lines[0]} {lines[-1]}"
      message = " ".join(message.split())
      name = message.strip("'\"")
      given = [a.split("=")[0] for a in argv if a.startswith("--config.")
               and name in a.split("=")[0].split(".")]
      if message != name and given:  # ml_collections says only "'name'"
        message = f"{given[0]}: the config has no field {name!r}."
    print(f"Bad flags: {message}\nSee the config file for the valid fields "
          f"(python {argv[0]} --helpfull lists the flags).", file=sys.stderr)
    sys.exit(2)


def _sweep() -> int:
  from rnnlab.errors import RunError  # pylint: disable=g-import-not-at-top
  from rnnlab.sweeps import cli  # pylint: disable=g-import-not-at-top
  passthrough = [a for a in sys.argv[1:] if a.startswith("--config.")]
  try:
    return cli.main(flags.FLAGS["config"].config_filename, _CONFIG.value, _WORKDIR.value,
                      jobs=_JOBS.value, dry_run=_DRY_RUN.value, aggregate_only=_AGGREGATE.value,
                      passthrough=passthrough, vmap=_VMAP.value,
                      vmap_group=tuple(int(i) for i in _VMAP_GROUP.value), only=_ONLY.value,
                      backend=_BACKEND.value,
                      cluster={"cpus": _TASK_CPUS.value, "gpus": _TASK_GPUS.value,
                               "retries": _TASK_RETRIES.value, "ray_address": _RAY_ADDRESS.value,
                               "slurm_cluster": _SLURM_CLUSTER.value,
                               "slurm_partition": _SLURM_PARTITION.value,
                               "slurm_time_min": _SLURM_TIME.value,
                               "slurm_mem_gb": _SLURM_MEM.value})
  except ValueError as err:
    print(f"Invalid sweep: {err}", file=sys.stderr)
    return 2
  except RunError as err:  # --vmap_group: a checkpoint or config mismatch in one of its runs
    print(f"\n{type(err).__name__}: {err}", file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    print("\nSweep interrupted (Ctrl-C or SIGTERM). Finished runs are kept and runs in flight "
          "keep their checkpoints; rerun the same command to go on.", file=sys.stderr)
    return 130
  except OSError as err:  # the sweep's own files (manifest, logs, results.csv)
    from rnnlab.training import workdir  # pylint: disable=g-import-not-at-top
    print(f"\nStorageError: Cannot write {err.filename or _WORKDIR.value}: "
          f"{workdir.fs_cause(err)}. Finished runs are intact; fix the cause and rerun the same "
          "command (finished runs are skipped).", file=sys.stderr)
    return 1


def _stop_on_sigterm(signum, frame):
  """SIGTERM (``kill``, ``timeout``, a scheduler's preemption) stops the run as Ctrl-C does."""
  del signum, frame
  raise KeyboardInterrupt


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax and absl chatter; progress is printed
  signal.signal(signal.SIGTERM, _stop_on_sigterm)
  from rnnlab.training import distributed  # pylint: disable=g-import-not-at-top
  try:
    join = distributed.settings(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                                auto=_DISTRIBUTED.value)
  except ValueError as err:
    print(f"Bad flags: {err}", file=sys.stderr)
    return 2
  if _SWEEP.value:
    if join is not None:
      print("Bad flags: --sweep runs its runs on this machine; to spread a sweep over a "
            "cluster use --sweep --backend=ray or slurm, and give one run several hosts with "
            "--coordinator (without --sweep).", file=sys.stderr)
      return 2
    return _sweep()
  from rnnlab.errors import InvalidConfigError, RunError  # pylint: disable=g-import-not-at-top
  from rnnlab.training import trainer  # pylint: disable=g-import-not-at-top (after flags: fast --help)
  if join is not None:
    try:
      distributed.initialize(join, _JOIN_TIMEOUT.value)
    except RuntimeError as err:
      print(f"Cannot start the run: {err} Nothing was written.", file=sys.stderr)
      return 1
  try:
    trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value, overwrite=_OVERWRITE.value)
  except InvalidConfigError as err:
    print(f"Invalid config: {err}", file=sys.stderr)
    return 2
  except RunError as err:
    print(f"\n{type(err).__name__}: {err}", file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    print("\nInterrupted (Ctrl-C or SIGTERM). The checkpoints written so far are complete; "
          "rerun the same command to resume from the last one.", file=sys.stderr)
    return 130
  return 0


if __name__ == "__main__":
  app.run(main, flags_parser=_parse)

"""A run's folder: every file of ``rnnlab.run_folder`` written so that no reader sees half a file.

JSON files are written to a temporary file and renamed, so a reader (or a run
killed mid-write) never sees half of one; a JSONL line cut short by a crash is
skipped when read. On resume from the checkpoint of step k the rows after k are
dropped (they are recomputed identically), so the metrics of a resumed run equal
those of an uninterrupted one; TensorBoard is told to purge its events after k too.

Every file-system failure (disk full, permission, read-only, a path that is a
file) becomes one ``StorageError`` naming the path and the cause; ``check_writable``
finds the ones it can before anything is built.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

from rnnlab.errors import ConfigMismatchError, StorageError
# The names and the plain readers are the core's (rnnlab.run_folder); re-exported here.
from rnnlab.run_folder import (CHECKPOINTS, CHECKPOINTS_BEST, CHECKPOINTS_DAMAGED, CONFIG,  # pylint: disable=unused-import
                               EVENTS, FAILED, GRADFLOW, LOG, METRICS, SUMMARY, WANDB,
                               WANDB_ID, read_json, read_jsonl)
from rnnlab.training import config as config_lib


# --- file-system failures ------------------------------------------------------------

_CAUSES = ("No space left on device", "Disk quota exceeded", "Read-only file system",
           "Permission denied", "Operation not permitted", "Not a directory", "Is a directory",
           "File exists", "No such file or directory", "Input/output error")


def fs_cause(err, text: str | None = None) -> str:
  """"No space left on device (ENOSPC)" for an OSError, or the known cause named in ``text``."""
  if isinstance(err, OSError) and err.errno:
    return f"{os.strerror(err.errno)} ({errno.errorcode.get(err.errno, err.errno)})"
  text = str(err) if text is None else text
  for cause in _CAUSES:
    if cause.lower() in text.lower():
      return cause
  lines = text.strip().splitlines()
  return lines[0][:300] if lines else type(err).__name__


@contextlib.contextmanager
def storage(action: str, path: str, advice: str = ""):
  """Turns an OSError inside into a StorageError: "Cannot <action> (<path>): <cause>. <advice>"."""
  try:
    yield
  except OSError as err:
    raise StorageError(f"Cannot {action} ({path}): {fs_cause(err)}. "
                       f"{advice or 'Fix the cause and rerun the same command.'}") from err


def check_writable(workdir: str):
  """Raises StorageError unless ``workdir`` is (or can be made) a folder rnnlab can write.

  Checks, without creating anything: no part of the path is a file, the nearest
  existing folder accepts a new file, and the run's existing files and folders
  (config.json, metrics.jsonl, checkpoints/) can be written.
  """
  path = os.path.abspath(workdir)
  probe = path
  while not os.path.exists(probe):
    probe = os.path.dirname(probe)
  if not os.path.isdir(probe):
    what = "is a file" if probe == path else f"is under {probe}, which is a file"
    raise StorageError(f"--workdir {workdir} {what}; a workdir must be a folder (or a path "
                       "where one can be created). Choose another --workdir.")
  targets = [probe] + [os.path.join(path, n) for n in (CHECKPOINTS,)
                       if probe == path and os.path.isdir(os.path.join(path, n))]
  for folder in targets:
    try:
      fd, name = tempfile.mkstemp(prefix=".rnnlab-probe-", dir=folder)
      os.close(fd)
      os.remove(name)
    except OSError as err:
      raise StorageError(f"Cannot write in {folder} (for --workdir {workdir}): {fs_cause(err)}. "
                         "Make it writable or choose another --workdir.") from err
  if probe == path:
    for name in (CONFIG, METRICS, SUMMARY):
      file = os.path.join(path, name)
      if os.path.exists(file):
        try:
          with open(file, "a"):
            pass
        except OSError as err:
          raise StorageError(f"Cannot write {file}: {fs_cause(err)}. Make it writable or choose "
                             "another --workdir.") from err


# --- atomic reads and writes ---------------------------------------------------------

def _replace(path: str, text: str):
  tmp = path + ".tmp"
  with storage("write", path):
    try:
      with open(tmp, "w") as f:
        f.write(text)
      os.replace(tmp, path)
    except OSError:
      with contextlib.suppress(OSError):
        os.remove(tmp)
      raise


def write_json(path: str, obj):
  """``obj`` as indented JSON, via a temporary file."""
  _replace(path, json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n")


def write_jsonl(path: str, rows: list[dict]):
  """Replaces the file with ``rows``, one JSON object a line, via a temporary file."""
  _replace(path, "".join(json.dumps(r) + "\n" for r in rows))


def append_jsonl(path: str, row: dict):
  with storage("write", path), open(path, "a") as f:
    f.write(json.dumps(row) + "\n")


def truncate_jsonl(path: str, last_step: int) -> list[dict]:
  """Keeps the rows with step <= last_step (rewriting the file); returns them."""
  rows = [r for r in read_jsonl(path) if r.get("step", 0) <= last_step]
  write_jsonl(path, rows)
  return rows


# --- the run folder --------------------------------------------------------------------

def clear(workdir: str):
  """Removes everything an earlier run wrote: config, metrics, events, checkpoints, artifacts."""
  names = [CONFIG, METRICS, SUMMARY, GRADFLOW, FAILED, WANDB_ID]
  with storage("clear the earlier run in", workdir):
    for path in [*(os.path.join(workdir, n) for n in names),
                 *glob.glob(os.path.join(workdir, EVENTS)),
                 *glob.glob(os.path.join(workdir, "*.npy"))]:
      if os.path.exists(path):
        os.remove(path)
    for folder in (CHECKPOINTS, CHECKPOINTS_BEST, CHECKPOINTS_DAMAGED, WANDB):
      if os.path.exists(os.path.join(workdir, folder)):
        shutil.rmtree(os.path.join(workdir, folder))


def read_config(workdir: str) -> dict | None:
  """The resolved config in ``<workdir>/config.json``; None if there is none.

  Raises ValueError when the file exists but is not a config (empty, cut
  short, not JSON): the message says what is wrong with it.
  """
  path = os.path.join(workdir, CONFIG)
  if not os.path.exists(path):
    return None
  with storage("read", path):
    with open(path, "rb") as f:
      data = f.read()
  try:
    config = json.loads(data.decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as err:
    why = "it is empty" if not data.strip() else f"it is not valid JSON ({err})"
    raise ValueError(why) from err
  if not isinstance(config, dict):
    raise ValueError(f"it holds a JSON {type(config).__name__}, not a config")
  return config


def _earlier_outputs(workdir: str) -> list[str]:
  """The names of the files and folders in ``workdir`` that hold an earlier run's results."""
  names = [n for n in (METRICS, SUMMARY) if os.path.exists(os.path.join(workdir, n))
           and os.path.getsize(os.path.join(workdir, n)) > 0]
  folder = os.path.join(workdir, CHECKPOINTS)
  return names + ([CHECKPOINTS] if os.path.isdir(folder) and os.listdir(folder) else [])


def _config_in_damaged_workdir(workdir: str, damage: str, recorded, new: dict, console):
  """What to compare ``new`` with when config.json is damaged: ``recorded()`` (the config
  stored with the newest checkpoint), or None when the file can simply be rewritten."""
  path = os.path.join(workdir, CONFIG)
  old = recorded()
  if old is None:
    earlier = _earlier_outputs(workdir)
    if earlier:
      raise ConfigMismatchError(
          f"{path} is damaged ({damage}) and no checkpoint records the config it held, so "
          f"rnnlab cannot tell whether the run that wrote {', '.join(earlier)} in this workdir "
          "is this run. Restore the file from a backup, or pass --overwrite to delete that run "
          "and start afresh.")
    console(f"{path} was damaged ({damage}); the workdir holds no results yet, so it was "
            "rewritten with this run's config.")
    return None
  if not config_lib.diff(old, new):
    console(f"{path} was damaged ({damage}); it was rewritten from the config stored with the "
            "newest checkpoint, which is this run's.")
    return None
  console(f"{path} is damaged ({damage}); comparing with the config stored with the newest "
          "checkpoint instead.")
  return old


def prepare(config, workdir: str, overwrite: bool = False,
            recorded=lambda: None, console=print):
  """Creates ``workdir`` and its config.json; refuses one that holds a different run.

  With ``overwrite`` an earlier run in ``workdir`` is removed first (its
  checkpoints too) and this one starts from step 0. A damaged config.json is
  replaced by ``recorded()``, the config stored with the newest checkpoint
  (None if none records one), for the comparison; with no such config it is
  rewritten only when the workdir holds no results yet.
  """
  with storage("create the workdir", workdir, "Choose another --workdir."):
    os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, CONFIG)
  new = config_lib.resolved(config)
  if overwrite:
    clear(workdir)
  else:
    try:
      old = read_config(workdir)
    except ValueError as err:
      old = _config_in_damaged_workdir(workdir, str(err), recorded, new, console)
    if old is not None:
      changes = config_lib.diff(old, new)
      if changes:
        raise ConfigMismatchError(
            f"{workdir} holds a run with a different config ({'; '.join(changes)}). A run "
            "resumes only with the config it started with. Use another --workdir, restore the "
            "old values, or pass --overwrite to delete that run and start afresh.")
  write_json(path, new)


def save_artifacts(task, workdir: str):
  """``task.artifacts()`` as ``<workdir>/<name>.npy``."""
  for name, array in task.artifacts().items():
    path = os.path.join(workdir, f"{name}.npy")
    with storage("write", path):
      np.save(path, np.asarray(array))


def last_wall_time(rows: list[dict]) -> float:
  """The run's wall time so far (``perf/wall_time_s`` of the last row that has it), or 0."""
  walls = [r["perf/wall_time_s"] for r in rows if "perf/wall_time_s" in r]
  return walls[-1] if walls else 0.0


# --- metrics ---------------------------------------------------------------------------

def _plain(value):
  """A Python float/int for JSON from a numpy or JAX scalar."""
  value = np.asarray(value)
  return value.item() if value.ndim == 0 else value.tolist()


def tensorboardx():
  """tensorboardX's ``(EventsWriter, event_pb2, summary_pb2, summary)``, imported without torch.

  tensorboardX imports torch (seconds) when it is installed, only to recognise
  torch tensors; rnnlab logs floats. Unless torch is already loaded, it is
  hidden for the duration of the import.
  """
  hide = "torch" not in sys.modules
  if hide:
    sys.modules["torch"] = None  # makes `import torch` raise ImportError
  try:
    # pylint: disable=g-import-not-at-top
    from tensorboardX.event_file_writer import EventsWriter
    from tensorboardX import summary
    from tensorboardX.proto import event_pb2
    from tensorboardX.proto import summary_pb2
  finally:
    if hide:
      del sys.modules["torch"]
  return EventsWriter, event_pb2, summary_pb2, summary


class EventsFile:
  """A TensorBoard event file written in the calling thread (an error raises here, at once).

  tensorboardX's SummaryWriter writes from a background thread through a
  bounded queue: on a full disk that thread dies with a traceback and the next
  writes block for ever. This writes and flushes each event synchronously.
  ``purge_step`` tells TensorBoard to drop the events of steps >= it that an
  earlier session wrote (a resumed run rewrites them).
  """

  def __init__(self, workdir: str, purge_step: int | None = None):
    events_writer, self._event_pb2, self._summary_pb2, self._summaries = tensorboardx()
    self._writer = events_writer(os.path.join(workdir, "events"))
    self.path = self._writer._file_name  # pylint: disable=protected-access
    if purge_step is not None:
      self._add(self._event_pb2.Event(step=purge_step, file_version="brain.Event:2"))
      self._add(self._event_pb2.Event(step=purge_step, session_log=self._event_pb2.SessionLog(
          status=self._event_pb2.SessionLog.START)))
    self.flush()

  def _add(self, event):
    event.wall_time = time.time()
    self._writer.write_event(event)

  def scalars(self, step: int, values: dict[str, float]):
    summary = self._summary_pb2.Summary(value=[
        self._summary_pb2.Summary.Value(tag=k, simple_value=float(v)) for k, v in values.items()])
    self._add(self._event_pb2.Event(step=int(step), summary=summary))

  def config(self, config: dict, metrics: list[str]):
    """The resolved config as text (TensorBoard's Text tab) and as hyperparameters (its
    HParams tab, every field dotted, with ``metrics`` as the columns to compare)."""
    text = json.dumps(config, indent=1, sort_keys=True)
    self._add(self._event_pb2.Event(step=0, summary=self._summaries.text(
        "config", "\n".join("    " + line for line in text.splitlines()))))
    hparams = {k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v)
               for k, v in config_lib.flatten(config).items()}
    for summary in self._summaries.hparams(hparams, {m: 0.0 for m in metrics})[:2]:
      self._add(self._event_pb2.Event(step=0, summary=summary))  # experiment, session start

  def flush(self):
    self._writer.flush()

  def close(self):
    self._writer.close()


class MetricsWriter:
  """Appends rows to metrics.jsonl and TensorBoard; ``history`` holds all rows so far.

  A run that starts at step 0 also gives TensorBoard its ``config`` (text and
  hyperparameters, compared on the metric names ``compare``).
  """

  def __init__(self, workdir: str, resume_step: int, config: dict | None = None,
               compare: tuple[str, ...] = (), tracker=None):
    self._tracker = tracker  # e.g. tracking.WandbRun: log(step, row), close()
    self.path = os.path.join(workdir, METRICS)
    self.history = truncate_jsonl(self.path, resume_step)
    with storage("write", self.path):
      self._file = open(self.path, "a")
    with storage("write TensorBoard events in", workdir):
      self._tb = EventsFile(workdir, purge_step=resume_step + 1)
      if config is not None and resume_step == 0:
        self._tb.config(config, list(compare))
        self._tb.flush()

  def write(self, step: int, row: dict):
    """One row for ``step``; the line is flushed before the next checkpoint is taken."""
    row = {"step": int(step), **{k: _plain(v) for k, v in sorted(row.items())}}
    advice = ("The metrics up to the last complete checkpoint are intact. Fix the cause (free "
              "space, permissions) and rerun the same command: the run resumes from that "
              "checkpoint and rewrites the rows after it identically.")
    with storage("write", self.path, advice):
      self._file.write(json.dumps(row) + "\n")
      self._file.flush()
    with storage("write", self._tb.path, advice):
      self._tb.scalars(step, {k: v for k, v in row.items() if k != "step"})
      self._tb.flush()
    if self._tracker is not None:
      self._tracker.log(step, row)
    self.history.append(row)

  def close(self):
    closers = [self._file.close, self._tb.close] + ([self._tracker.close] if self._tracker else [])
    for closing in closers:
      with contextlib.suppress(OSError):  # a write already failed and was reported
        closing()


class MemoryWriter:
  """A ``MetricsWriter`` that writes no file: the rows of metrics.jsonl up to the resume
  step, then each new row, in ``history`` (processes other than 0 of a run across
  processes, which read the folder process 0 writes)."""

  def __init__(self, workdir: str, resume_step: int):
    self.history = [r for r in read_jsonl(os.path.join(workdir, METRICS))
                    if r.get("step", 0) <= resume_step]

  def write(self, step: int, row: dict):
    self.history.append({"step": int(step), **{k: _plain(v) for k, v in sorted(row.items())}})

  def close(self):
    pass


def read_metrics(workdir: str) -> list[dict]:
  """The rows of ``<workdir>/metrics.jsonl``."""
  return read_jsonl(os.path.join(workdir, METRICS))

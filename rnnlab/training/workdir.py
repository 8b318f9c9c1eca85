"""A run's folder: the name of every file in it, and reads and writes that never leave half a file.

    <workdir>/config.json           the resolved config; a resumed run must have the same
              metrics.jsonl         one JSON object per logged step: {"step": s, name: value}
              events.out.tfevents.* TensorBoard, the same rows
              checkpoints/<step>/   Orbax checkpoints of the whole training state
              <artifact>.npy        arrays a task keeps with the run (psmnist's permutation)
              gradflow.jsonl        per-step ||dL/dh_t|| (the gradient-flow plugin)
              summary.json          written at the end: final and best held-out metric
              log.txt               the console, when the run is one of a sweep
              failed.json           why a sweep's run failed

JSON files are written to a temporary file and renamed, so a reader (or a run
killed mid-write) never sees half of one; a JSONL line cut short by a crash is
skipped when read. On resume from the checkpoint of step k the rows after k are
dropped (they are recomputed identically), so the metrics of a resumed run equal
those of an uninterrupted one; TensorBoard is told to purge its events after k too.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import sys

import numpy as np

from rnnlab.errors import ConfigMismatchError
from rnnlab.training import config as config_lib

CONFIG = "config.json"
METRICS = "metrics.jsonl"
EVENTS = "events.out.tfevents.*"
CHECKPOINTS = "checkpoints"
GRADFLOW = "gradflow.jsonl"
SUMMARY = "summary.json"
LOG = "log.txt"
FAILED = "failed.json"


# --- atomic reads and writes ---------------------------------------------------------

def _replace(path: str, text: str):
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def write_json(path: str, obj):
  """``obj`` as indented JSON, via a temporary file."""
  _replace(path, json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n")


def read_json(path: str):
  with open(path) as f:
    return json.load(f)


def read_jsonl(path: str) -> list[dict]:
  """The parsed lines of a JSONL file ([] if there is none); a line cut short is skipped."""
  if not os.path.exists(path):
    return []
  rows = []
  with open(path) as f:
    for line in f:
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return rows


def write_jsonl(path: str, rows: list[dict]):
  """Replaces the file with ``rows``, one JSON object a line, via a temporary file."""
  _replace(path, "".join(json.dumps(r) + "\n" for r in rows))


def append_jsonl(path: str, row: dict):
  with open(path, "a") as f:
    f.write(json.dumps(row) + "\n")


def truncate_jsonl(path: str, last_step: int) -> list[dict]:
  """Keeps the rows with step <= last_step (rewriting the file); returns them."""
  rows = [r for r in read_jsonl(path) if r.get("step", 0) <= last_step]
  write_jsonl(path, rows)
  return rows


# --- the run folder --------------------------------------------------------------------

def clear(workdir: str):
  """Removes everything an earlier run wrote: config, metrics, events, checkpoints, artifacts."""
  names = [CONFIG, METRICS, SUMMARY, GRADFLOW, FAILED]
  for path in [*(os.path.join(workdir, n) for n in names),
               *glob.glob(os.path.join(workdir, EVENTS)),
               *glob.glob(os.path.join(workdir, "*.npy"))]:
    if os.path.exists(path):
      os.remove(path)
  shutil.rmtree(os.path.join(workdir, CHECKPOINTS), ignore_errors=True)


def prepare(config, workdir: str, overwrite: bool = False):
  """Creates ``workdir`` and its config.json; refuses one that holds a different run.

  With ``overwrite`` an earlier run in ``workdir`` is removed first (its
  checkpoints too) and this one starts from step 0.
  """
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, CONFIG)
  new = config_lib.resolved(config)
  if overwrite:
    clear(workdir)
  elif os.path.exists(path):
    changes = config_lib.diff(read_json(path), new)
    if changes:
      raise ConfigMismatchError(
          f"{workdir} holds a run with a different config ({'; '.join(changes)}). A run "
          "resumes only with the config it started with. Use another --workdir, restore the "
          "old values, or pass --overwrite to delete that run and start afresh.")
  write_json(path, new)


def save_artifacts(task, workdir: str):
  """``task.artifacts()`` as ``<workdir>/<name>.npy``."""
  for name, array in task.artifacts().items():
    np.save(os.path.join(workdir, f"{name}.npy"), np.asarray(array))


def last_wall_time(rows: list[dict]) -> float:
  """The run's wall time so far (``perf/wall_time_s`` of the last row that has it), or 0."""
  walls = [r["perf/wall_time_s"] for r in rows if "perf/wall_time_s" in r]
  return walls[-1] if walls else 0.0


# --- metrics ---------------------------------------------------------------------------

def _plain(value):
  """A Python float/int for JSON from a numpy or JAX scalar."""
  value = np.asarray(value)
  return value.item() if value.ndim == 0 else value.tolist()


def _summary_writer_class():
  """tensorboardX's SummaryWriter, imported without torch.

  tensorboardX imports torch (seconds) when it is installed, only to recognise
  torch tensors; rnnlab logs floats. Unless torch is already loaded, it is
  hidden for the duration of the import.
  """
  if "torch" in sys.modules:
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    return SummaryWriter
  sys.modules["torch"] = None  # makes `import torch` raise ImportError
  try:
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  finally:
    del sys.modules["torch"]
  return SummaryWriter


class MetricsWriter:
  """Appends rows to metrics.jsonl and TensorBoard; ``history`` holds all rows so far."""

  def __init__(self, workdir: str, resume_step: int):
    self.path = os.path.join(workdir, METRICS)
    self.history = truncate_jsonl(self.path, resume_step)
    self._file = open(self.path, "a")
    self._tb = _summary_writer_class()(workdir, purge_step=resume_step + 1)

  def write(self, step: int, row: dict):
    """One row for ``step``; the line is flushed before the next checkpoint is taken."""
    row = {"step": int(step), **{k: _plain(v) for k, v in sorted(row.items())}}
    self._file.write(json.dumps(row) + "\n")
    self._file.flush()
    for name, value in row.items():
      if name != "step":
        self._tb.add_scalar(name, value, step)
    self._tb.flush()
    self.history.append(row)

  def close(self):
    self._file.close()
    self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
  """The rows of ``<workdir>/metrics.jsonl``."""
  return read_jsonl(os.path.join(workdir, METRICS))

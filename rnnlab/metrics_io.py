"""Where metrics go: ``metrics.jsonl``, TensorBoard event files, ``summary.json``.

``metrics.jsonl`` holds one JSON object per logged step, ``{"step": s, name: value,
...}``. On resume from the checkpoint of step k, rows after k are dropped (they
are recomputed identically), so the file of a resumed run equals that of an
uninterrupted one; TensorBoard is told to purge its events after k too.
"""

from __future__ import annotations

import glob
import json
import os
import sys

import numpy as np

METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
EVENTS = "events.out.tfevents.*"


def write_json(path: str, obj):
  """Writes ``obj`` as indented JSON via a temporary file, so readers never see half of it."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1, sort_keys=True)
    f.write("\n")
  os.replace(tmp, path)


def read_rows(path: str) -> list[dict]:
  """The parsed rows of a metrics.jsonl; a line cut short by a crash is skipped."""
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


def truncate(path: str, last_step: int) -> list[dict]:
  """Keeps the rows with step <= last_step (rewriting the file); returns them."""
  rows = [r for r in read_rows(path) if r.get("step", 0) <= last_step]
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  os.replace(tmp, path)
  return rows


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
    self.history = truncate(self.path, resume_step)
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


def clear(workdir: str):
  """Removes metrics, summary and TensorBoard events written by an earlier run."""
  for path in [os.path.join(workdir, METRICS), os.path.join(workdir, SUMMARY),
               *glob.glob(os.path.join(workdir, EVENTS))]:
    if os.path.exists(path):
      os.remove(path)

"""The files of a run folder, by name, and the readers that need nothing but the standard library.

    <workdir>/config.json           the resolved config; a resumed run must have the same
              metrics.jsonl         one JSON object per logged step: {"step": s, name: value}
              events.out.tfevents.* TensorBoard, the same rows
              checkpoints/<step>/   Orbax checkpoints of the whole training state
              checkpoints_best/<step>/  the checkpoint of the best evaluation so far (on the
                                    task's primary metric), kept beside the newest ones
              checkpoints_damaged/  checkpoints that failed verification, moved aside
              <artifact>.npy        arrays a task keeps with the run (psmnist's permutation)
              gradflow.jsonl        per-step ||dL/dh_t|| (the gradient-flow plugin)
              summary.json          written at the end: final and best held-out metric
              log.txt               the console, when the run is one of a sweep
              failed.json           why a sweep's run failed

              wandb_id, wandb/      the W&B run's id and its local files (config.wandb)
              curves.png, gradflow.png  figures of ``python -m rnnlab.plots WORKDIR``

A sweep's folder holds one run folder per run (and its own sweep.json,
results.csv, summary.md). ``rnnlab.training.workdir`` writes these files,
atomically, and re-exports the names; readers (``python -m rnnlab.plots``, study
analyses, notebooks) use this module and never import the training half.
"""

from __future__ import annotations

import json
import os

CONFIG = "config.json"
METRICS = "metrics.jsonl"
EVENTS = "events.out.tfevents.*"
CHECKPOINTS = "checkpoints"
CHECKPOINTS_BEST = "checkpoints_best"
CHECKPOINTS_DAMAGED = "checkpoints_damaged"
GRADFLOW = "gradflow.jsonl"
SUMMARY = "summary.json"
LOG = "log.txt"
FAILED = "failed.json"
WANDB_ID = "wandb_id"
WANDB = "wandb"
CURVES = "curves.png"
GRADFLOW_FIGURE = "gradflow.png"


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


def is_run(folder: str) -> bool:
  """Whether ``folder`` is a run folder (it has a metrics.jsonl)."""
  return os.path.isfile(os.path.join(folder, METRICS))


def runs_in(folder: str) -> list[str]:
  """``[folder]`` for a run folder; for a sweep's folder, its run folders, sorted.

  Raises ValueError naming what is wrong when ``folder`` holds no run.
  """
  if not os.path.isdir(folder):
    raise ValueError(f"{folder} is not a folder" + (" (it is a file)" if os.path.exists(folder)
                                                     else " (it does not exist)") +
                     "; give a run's --workdir or a sweep's.")
  if is_run(folder):
    return [folder]
  found = sorted(os.path.join(folder, name) for name in os.listdir(folder)
                 if is_run(os.path.join(folder, name)))
  if not found:
    raise ValueError(f"{folder} holds no run: no {METRICS} in it or in the folders directly "
                     "below it (launch.py writes one into every run's --workdir).")
  return found

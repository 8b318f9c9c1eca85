"""Long-dependency benchmark tasks, looked up by name.

    cfg = tasks.default_config("copy")   # the `task` sub-config, every field commented
    tasks.validate(cfg)                  # ValueError on bad values, before compiling
    task = tasks.make_task(cfg, seed=0)
    batch = task.train_batch(step, 64)   # {"x": (B, T, D), "y": ...}
    loss, metrics = task.loss_and_metrics(outputs, batch)

Tasks (definitions and baselines as in REFERENCES.md): ``copy``, ``adding``,
``temporal_order`` (generated on device, see ``synthetic.py``) and ``smnist``,
``psmnist`` (pixel MNIST from tfds, see ``mnist.py``). ``base.Task`` documents
the attributes and methods every task has.
"""

from __future__ import annotations

import ml_collections
import numpy as np

from rnnlab.tasks import base
from rnnlab.tasks import mnist
from rnnlab.tasks import synthetic
from rnnlab.tasks.base import Task

TASKS: dict[str, type[Task]] = {
    "copy": synthetic.CopyTask,
    "adding": synthetic.AddingTask,
    "temporal_order": synthetic.TemporalOrderTask,
    "smnist": mnist.SequentialMnist,
    "psmnist": mnist.PermutedMnist,
}


def task_names() -> list[str]:
  return list(TASKS)


def _task_class(name) -> type[Task]:
  if name not in TASKS:
    raise ValueError(f"Unknown task {name!r}; valid tasks: {task_names()}.")
  return TASKS[name]


def default_config(name: str) -> ml_collections.ConfigDict:
  """The ``task`` sub-config of task ``name`` with every field it reads."""
  return _task_class(name).default_config()


def validate(task_cfg) -> None:
  """Raises ValueError naming the bad field and the valid values, else returns None.

  The fields must be exactly those of ``default_config(name)``.
  """
  cfg = base.as_dict(task_cfg)
  cls = _task_class(cfg.get("name"))
  fields = set(cls.default_config().keys())
  missing, unknown = sorted(fields - set(cfg)), sorted(set(cfg) - fields)
  if missing or unknown:
    raise ValueError(f"task {cfg['name']!r}: missing field(s) {missing}, unknown field(s) "
                     f"{unknown}; its fields are {sorted(fields)} (see "
                     f"tasks.default_config({cfg['name']!r})).")
  base.check_int(cfg, "eval_size", 1)
  cls.check(cfg)


def make_task(task_cfg, seed: int) -> Task:
  """The task of a validated config; ``seed`` fixes every random draw of its data."""
  validate(task_cfg)
  if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or not 0 <= seed < 2**32:
    raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}.")
  cfg = base.as_dict(task_cfg)
  return TASKS[cfg["name"]](cfg, int(seed))


__all__ = ["TASKS", "Task", "default_config", "make_task", "task_names", "validate"]

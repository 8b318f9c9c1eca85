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

The seq2seq toy tasks ``reverse``, ``sort`` and ``addition``
(``rnnlab.seq2seq.tasks``, model kind "seq2seq") are in the same registry;
their configs, checks and construction are that module's.
"""

from __future__ import annotations

import ml_collections
import numpy as np

from rnnlab.tasks import base
from rnnlab.tasks import mnist
from rnnlab.tasks import synthetic
from rnnlab.tasks.base import Task
from rnnlab.seq2seq import tasks as seq2seq_tasks

TASKS: dict[str, type[Task]] = {
    "copy": synthetic.CopyTask,
    "adding": synthetic.AddingTask,
    "temporal_order": synthetic.TemporalOrderTask,
    "smnist": mnist.SequentialMnist,
    "psmnist": mnist.PermutedMnist,
    **seq2seq_tasks.TASKS,
}
SEQ2SEQ = frozenset(seq2seq_tasks.TASKS)  # the tasks of model kind "seq2seq"


def task_names() -> list[str]:
  return list(TASKS)


def _task_class(name) -> type[Task]:
  if name not in TASKS:
    raise ValueError(f"Unknown task {name!r}; valid tasks: {task_names()}.")
  return TASKS[name]


def default_config(name: str) -> ml_collections.ConfigDict:
  """The ``task`` sub-config of task ``name`` with every field it reads."""
  cls = _task_class(name)
  return seq2seq_tasks.default_config(name) if name in SEQ2SEQ else cls.default_config()


def _check_values(name, cfg: dict):
  """The task's own value checks, on a config whose fields are already right."""
  if name in SEQ2SEQ:
    seq2seq_tasks.validate(ml_collections.ConfigDict(cfg))
    return
  base.check_int(cfg, "eval_size", 1)
  TASKS[name].check(cfg)


def validate(task_cfg) -> None:
  """Raises ValueError naming the bad field and the valid values, else returns None.

  The fields must be exactly those of ``default_config(name)``.
  """
  cfg = base.as_dict(task_cfg)
  fields = set(default_config(cfg.get("name")).keys())
  missing, unknown = sorted(fields - set(cfg)), sorted(set(cfg) - fields)
  if missing or unknown:
    raise ValueError(f"task {cfg['name']!r}: missing field(s) {missing}, unknown field(s) "
                     f"{unknown}; its fields are {sorted(fields)} (see "
                     f"tasks.default_config({cfg['name']!r})).")
  _check_values(cfg["name"], cfg)


def make_task(task_cfg, seed: int) -> Task:
  """The task of a validated config; ``seed`` fixes every random draw of its data."""
  validate(task_cfg)
  if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or not 0 <= seed < 2**32:
    raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}.")
  cfg = base.as_dict(task_cfg)
  if cfg["name"] in SEQ2SEQ:
    return seq2seq_tasks.make_task(ml_collections.ConfigDict(cfg), int(seed))
  return TASKS[cfg["name"]](cfg, int(seed))


__all__ = ["SEQ2SEQ", "TASKS", "Task", "default_config", "make_task", "task_names", "validate"]

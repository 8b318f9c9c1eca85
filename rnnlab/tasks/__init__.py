"""Tasks, looked up by name: one registry and one protocol (``base.Task``) for all of them.

    cfg = tasks.default_config("copy")   # the `task` sub-config, every field commented
    tasks.validate(cfg)                  # ValueError on bad values, before compiling
    task = tasks.make_task(cfg, seed=0)
    batch = task.train_batch(step, 64)   # {"x": (B, T, D), "y": ...}
    loss, metrics = task.loss_and_metrics(outputs, batch)

Long-dependency tasks (definitions and baselines: docs/references.md): ``copy``,
``adding``, ``temporal_order`` (generated on device, ``synthetic.py``) and
``smnist``, ``psmnist`` (pixel MNIST from tfds, ``mnist.py``). Seq2seq toy tasks
``reverse``, ``sort``, ``addition`` (``seq2seq.py``, for model kind "seq2seq").
Character-level language modelling on any UTF-8 text, ``char_lm`` (``text.py``,
for model kind "lm").
``base.Task`` documents what every task has; ``Task.model_kinds`` says which
model kinds fit it.
"""

from __future__ import annotations

import ml_collections

from rnnlab import checks
from rnnlab.tasks import base
from rnnlab.tasks import mnist
from rnnlab.tasks import seq2seq
from rnnlab.tasks import synthetic
from rnnlab.tasks import text
from rnnlab.tasks.base import Task

TASKS: dict[str, type[Task]] = {
    cls.name: cls for cls in (synthetic.CopyTask, synthetic.SelectiveCopyTask, synthetic.AddingTask,
                              synthetic.TemporalOrderTask, mnist.SequentialMnist,
                              mnist.PermutedMnist, *seq2seq.TASKS.values(), text.CharLM)}


def task_names() -> list[str]:
  return list(TASKS)


def task_class(name) -> type[Task]:
  """The registered task class called ``name``; an unknown name lists the valid ones."""
  if name not in TASKS:
    raise ValueError(f"Unknown task {name!r}; valid tasks: {task_names()}.")
  return TASKS[name]


def default_config(name: str) -> ml_collections.ConfigDict:
  """The ``task`` sub-config of task ``name`` with every field it reads."""
  return task_class(name).default_config()


def validate(task_cfg) -> None:
  """Raises ValueError naming the bad field and the valid values, else returns None.

  The fields must be exactly those of ``default_config(name)``.
  """
  cfg = base.as_dict(task_cfg)
  cls = task_class(cfg.get("name"))
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
  seed = checks.check_int("seed", seed, 0, 2**32 - 1)
  return TASKS[task_cfg["name"]](base.as_dict(task_cfg), seed)


__all__ = ["TASKS", "Task", "default_config", "make_task", "task_class", "task_names",
           "validate"]

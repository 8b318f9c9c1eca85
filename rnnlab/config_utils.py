"""Checking a training config and matching it against the run already in a workdir.

A training config (see configs/base.py) has the sections ``task`` (owned by
``rnnlab.tasks``), ``model``, ``optim`` and ``train`` plus ``seed``.
``validate`` rejects bad values before anything is built or compiled, with a
message naming the field and what is valid. ``prepare_workdir`` writes the
resolved config to ``<workdir>/config.json`` and refuses a workdir whose
config.json differs (a resumed run must be the same run).
"""

from __future__ import annotations

import glob
import json
import os
import shutil

from rnnlab import models, optim, tasks
from rnnlab.checkpoint import SUBDIR as CHECKPOINTS
from rnnlab.errors import ConfigMismatchError
from rnnlab import metrics_io

CONFIG = "config.json"
SECTIONS = ("seed", "task", "model", "optim", "train")


def _int(field, value, low):
  if isinstance(value, bool) or not isinstance(value, int) or value < low:
    raise ValueError(f"{field} must be an integer >= {low}, got {value!r}.")


def validate_train(cfg):
  """``config.train``: sizes positive; periods >= 0 (0 = only at the last step)."""
  _int("train.batch_size", cfg.batch_size, 1)
  _int("train.num_steps", cfg.num_steps, 1)
  if cfg.eval_batch_size is not None:
    _int("train.eval_batch_size", cfg.eval_batch_size, 1)
  for field in ("log_every", "eval_every", "checkpoint_every"):
    _int(f"train.{field}", cfg[field], 0)
  _int("train.keep_checkpoints", cfg.keep_checkpoints, 1)


def _check_kind_fits_task(task_name, kind):
  """Seq2seq tasks need the "seq2seq" model and every other task a classifier-style one."""
  if (task_name in tasks.SEQ2SEQ) != (kind == "seq2seq"):
    need = "'seq2seq'" if task_name in tasks.SEQ2SEQ else "a kind other than 'seq2seq'"
    raise ValueError(f"model.kind {kind!r} does not fit task {task_name!r}; it needs {need} "
                     f"(seq2seq tasks: {sorted(tasks.SEQ2SEQ)}).")


def validate(config):
  """Raises ValueError for the first bad field of a training config."""
  missing = [s for s in SECTIONS if s not in config]
  if missing:
    raise ValueError(f"The config has no {missing}; a training config has {list(SECTIONS)} "
                     "(build it from configs/base.py).")
  seed = config.seed
  if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
    raise ValueError(f"seed must be an integer in [0, 2**31), got {config.seed!r}.")
  tasks.validate(config.task)
  models.validate(config.model)
  _check_kind_fits_task(config.task.name, config.model.kind)
  validate_train(config.train)
  optim.validate(config.optim, config.train.num_steps)
  _validate_gradflow(config)


def _validate_gradflow(config):
  """gradflow.every >= 0; it and optim.omega_weight measure a classifier's hidden states."""
  every = config.get("gradflow", {}).get("every", 0)
  _int("gradflow.every", every, 0)
  uses = [n for n, v in (("gradflow.every", every),
                         ("optim.omega_weight", config.optim.get("omega_weight", 0.0))) if v]
  if uses and config.model.kind != "classifier":
    raise ValueError(f"{' and '.join(uses)} need model.kind 'classifier' (they perturb its "
                     f"recurrent stack's hidden states); got {config.model.kind!r}.")


# --- the workdir ------------------------------------------------------------------

def resolved(config) -> dict:
  """The config as plain JSON values (what config.json holds)."""
  return json.loads(json.dumps(config.to_dict(), sort_keys=True))


def flatten(tree: dict, prefix: str = "") -> dict:
  """{"model": {"cell": "lstm"}} -> {"model.cell": "lstm"}."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def diff(old: dict, new: dict) -> list[str]:
  """Lines "field: old -> new" for every field whose value differs."""
  a, b = flatten(old), flatten(new)
  absent = "<absent>"
  return [f"{k}: {a.get(k, absent)!r} -> {b.get(k, absent)!r}"
          for k in sorted(set(a) | set(b)) if a.get(k, absent) != b.get(k, absent)]


def clear_workdir(workdir: str):
  """Removes everything an earlier run wrote: config, metrics, events, checkpoints, artifacts."""
  metrics_io.clear(workdir)
  for path in [os.path.join(workdir, CONFIG), *glob.glob(os.path.join(workdir, "*.npy"))]:
    if os.path.exists(path):
      os.remove(path)
  shutil.rmtree(os.path.join(workdir, CHECKPOINTS), ignore_errors=True)


def prepare_workdir(config, workdir: str, overwrite: bool = False):
  """Creates ``workdir`` and its config.json; refuses one that holds a different run.

  With ``overwrite`` an earlier run in ``workdir`` is removed first (its
  checkpoints too) and this one starts from step 0.
  """
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, CONFIG)
  new = resolved(config)
  if overwrite:
    clear_workdir(workdir)
  elif os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    changes = diff(old, new)
    if changes:
      raise ConfigMismatchError(
          f"{workdir} holds a run with a different config ({'; '.join(changes)}). A run "
          "resumes only with the config it started with. Use another --workdir, restore the "
          "old values, or pass --overwrite to delete that run and start afresh.")
  metrics_io.write_json(path, new)


def override(config, values: dict):
  """Sets dotted fields, as ``--config.<field>=<value>`` would: {"task.seq_len": 50}.

  The config stays locked: a field it does not have is an error.
  """
  for dotted, value in values.items():
    *parents, name = dotted.split(".")
    node = config
    for part in parents:
      node = node[part]
    node[name] = value
  return config

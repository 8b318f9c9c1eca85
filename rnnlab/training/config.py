"""A training config as plain values: what config.json holds, differences, overrides.

A training config (see configs/base.py) has the sections ``task`` (owned by
``rnnlab.tasks``), ``model`` (``rnnlab.models``), ``optim``
(``rnnlab.training.optim``), ``train`` and ``gradflow`` plus ``seed``;
``rnnlab.training.job.validate`` checks it.
"""

from __future__ import annotations

import copy
import json

import ml_collections


def from_resolved(values: dict):
  """The locked ConfigDict of a resolved config (what config.json holds)."""
  return ml_collections.ConfigDict(values).lock()


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


# Sections that say how a run executes, not what it computes: no difference for resuming
# (a run checkpointed on 4 devices resumes on 1) nor for a sweep's finished runs.
EXECUTION = ("mesh",)


def diff(old: dict, new: dict) -> list[str]:
  """Lines "field: old -> new" for every field whose value differs.

  A field one side lacks and the other holds as None (a later version's new
  option, at its default) is no difference: an older run still resumes. The
  ``EXECUTION`` sections (the device mesh) are no difference either.
  """
  keep = lambda k: k.split(".", 1)[0] not in EXECUTION
  a = {k: v for k, v in flatten(old).items() if keep(k)}
  b = {k: v for k, v in flatten(new).items() if keep(k)}
  absent = "<absent>"
  same = lambda x, y: x == y or {x, y} == {absent, None}
  return [f"{k}: {a.get(k, absent)!r} -> {b.get(k, absent)!r}"
          for k in sorted(set(a) | set(b)) if not same(a.get(k, absent), b.get(k, absent))]


def override(config, values: dict):
  """Sets dotted fields in place, as ``--config.<field>=<value>`` would: {"task.seq_len": 50}.

  The config stays locked: a field it does not have is an error.
  """
  for dotted, value in values.items():
    *parents, name = dotted.split(".")
    node = config
    for part in parents:
      node = node[part]
    node[name] = value
  return config


def with_overrides(config, values: dict):
  """A copy of ``config`` with dotted ``values`` set (the original is untouched)."""
  return override(copy.deepcopy(config), values)

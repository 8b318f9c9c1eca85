"""A sweep: the runs a config file's ``sweep(add)`` defines, by name, and their selection.

A config file may define ``sweep(add)``; each ``add(**overrides)`` call adds one
run as a set of config-field overrides::

    def sweep(add):
      for cell in ("rnn", "lstm"):
        for seed in range(3):
          add(**{"model.cell": cell, "seed": seed})

The run's folder name is built from its overrides ("cell=lstm,seed=1"). A
config argument (``configs/X.py:arg``) reaches ``sweep(add, arg)`` as it reaches
``get_config(arg)``. ``sweep.json`` in the sweep folder lists the expansion.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import json
import os
import re
from typing import Any, Callable

import ml_collections

MANIFEST = "sweep.json"


@dataclasses.dataclass(frozen=True)
class Run:
  """One arm-and-seed of a sweep: its folder name and field overrides."""
  name: str
  overrides: tuple[tuple[str, Any], ...]

  def as_dict(self) -> dict[str, Any]:
    return dict(self.overrides)


def slug(value: Any) -> str:
  text = str(value)
  return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_") or "none"


def run_name(overrides: dict[str, Any]) -> str:
  """``{"model.cell": "gru", "seed": 1}`` -> ``"cell=gru,seed=1"`` (last path component)."""
  return ",".join(f"{k.split('.')[-1]}={slug(v)}" for k, v in overrides.items())


def expand(sweep_fn: Callable, config: ml_collections.ConfigDict) -> list[Run]:
  """Calls ``sweep_fn(add)`` and checks every override names an existing field."""
  runs: list[Run] = []
  def add(**overrides):
    for key in overrides:
      _check_field(config, key)
    runs.append(Run(run_name(overrides), tuple(overrides.items())))
  sweep_fn(add)
  names = [r.name for r in runs]
  dupes = sorted({n for n in names if names.count(n) > 1})
  if dupes:
    raise ValueError(f"The sweep adds the same run more than once: {dupes}.")
  if not runs:
    raise ValueError("The sweep function added no runs.")
  return runs


def _check_field(config, dotted: str):
  node = config
  for part in dotted.split("."):
    if not isinstance(node, (ml_collections.ConfigDict, dict)) or part not in node:
      raise ValueError(f"Sweep override {dotted!r} is not a config field "
                       f"(no {part!r} there).")
    node = node[part]


def load_sweep_fn(config_path: str) -> Callable:
  """The config file's ``sweep(add[, arg])`` as ``f(add)``; a clear error if it has none.

  ``config_path`` may carry ml_collections' argument, ``configs/X.py:arg``; it
  is passed to ``sweep`` as ``arg`` as it is to ``get_config``.
  """
  path, _, arg = config_path.partition(":")
  spec = importlib.util.spec_from_file_location("_rnnlab_sweep_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "sweep"):
    raise ValueError(f"{config_path} defines no sweep(add) function; configs with sweeps: "
                     f"{', '.join(configs_with_sweeps(os.path.dirname(config_path)))}.")
  if arg:
    if "arg" not in inspect.signature(module.sweep).parameters:
      raise ValueError(f"{config_path}: the config takes an argument but its sweep(add) has no "
                       "'arg' parameter to receive it; define sweep(add, arg=...).")
    return lambda add: module.sweep(add, arg)
  return module.sweep


def configs_with_sweeps(folder: str) -> list[str]:
  found = []
  for name in sorted(os.listdir(folder or ".")):
    if name.endswith(".py"):
      with open(os.path.join(folder or ".", name)) as f:
        if "\ndef sweep(" in f.read():
          found.append(name)
  return found


def select(runs: list[Run], only: str) -> list[Run]:
  """The runs whose overrides include every ``field=value`` of ``only`` ("seq_len=50,cell=lstm").

  A field is its full name (``task.seq_len``) or its last component (``seq_len``), values
  as they appear in run names; ``field=a|b`` accepts either value.
  """
  wanted = [part.split("=", 1) for part in only.split(",") if part]
  if any(len(w) != 2 for w in wanted):
    raise ValueError(f"--only takes field=value pairs separated by commas, got {only!r}.")
  def keep(run):
    have = {name: slug(v) for k, v in run.overrides for name in (k, k.split(".")[-1])}
    return all(have.get(k) in {slug(a) for a in v.split("|")} for k, v in wanted)
  chosen = [r for r in runs if keep(r)]
  if not chosen:
    raise ValueError(f"--only={only} selects none of the {len(runs)} runs (names look like "
                     f"{runs[0].name!r}).")
  return chosen



def write_manifest(config_path: str, root: str, runs: list[Run]):
  manifest = {"config": config_path,
              "runs": [{"name": r.name, "overrides": r.as_dict()} for r in runs]}
  with open(os.path.join(root, MANIFEST), "w") as f:
    json.dump(manifest, f, indent=1, default=str)


def load_manifest(root: str) -> list[Run]:
  with open(os.path.join(root, MANIFEST)) as f:
    manifest = json.load(f)
  return [Run(r["name"], tuple(r["overrides"].items())) for r in manifest["runs"]]

"""Ablation sweeps: expand, run (resumably, in parallel processes), aggregate.

A config file may define ``sweep(add)``; each ``add(**overrides)`` call adds one
run as a set of config-field overrides::

    def sweep(add):
      for cell in ("rnn", "lstm"):
        for seed in range(3):
          add(**{"model.cell": cell, "seed": seed})

``python launch.py --config=configs/X.py --sweep --workdir=ROOT`` runs every run
in ``ROOT/<name>``, where the name is built from the overrides. Each run is its
own ``launch.py`` process, so it writes its own metrics and checkpoints and
resumes like any single run. Starting the sweep again skips finished runs
(``summary.json`` present) and resumes interrupted ones; a failing run is
recorded in ``ROOT/<name>/failed.json`` and does not stop the others.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import re
import subprocess
import sys
import threading
import time
from typing import Any, Callable

import ml_collections

SUMMARY = "summary.json"
FAILED = "failed.json"


@dataclasses.dataclass(frozen=True)
class Run:
  """One arm-and-seed of a sweep: its folder name and field overrides."""
  name: str
  overrides: tuple[tuple[str, Any], ...]

  def as_dict(self) -> dict[str, Any]:
    return dict(self.overrides)


def _slug(value: Any) -> str:
  text = str(value)
  return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_") or "none"


def run_name(overrides: dict[str, Any]) -> str:
  """``{"model.cell": "gru", "seed": 1}`` -> ``"cell=gru,seed=1"`` (last path component)."""
  return ",".join(f"{k.split('.')[-1]}={_slug(v)}" for k, v in overrides.items())


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


def status(run_dir: str) -> str:
  """'done', 'failed', 'partial' (has started) or 'pending'."""
  if os.path.exists(os.path.join(run_dir, SUMMARY)):
    return "done"
  if os.path.exists(os.path.join(run_dir, FAILED)):
    return "failed"
  return "partial" if os.path.isdir(run_dir) else "pending"


def command(config_path: str, run_dir: str, run: Run, extra_flags=()) -> list[str]:
  """The launch.py command line for one run."""
  launch = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "launch.py")
  cmd = [sys.executable, launch, f"--config={config_path}", f"--workdir={run_dir}"]
  # The sweep's own overrides come last so that they win over command-line ones.
  return cmd + list(extra_flags) + [f"--config.{k}={_flag_value(v)}" for k, v in run.overrides]


def _flag_value(value: Any) -> str:
  if value is None:
    return "None"
  return str(value)


class _Progress:
  """Counts runs done / running / failed and prints one line with an ETA."""

  def __init__(self, total: int, already_done: int, stream=sys.stdout):
    self.total, self.done, self.failed, self.running = total, already_done, 0, 0
    self.started = time.time()
    self.finished_here = 0
    self.lock = threading.Lock()
    self.stream = stream

  def update(self, *, start=0, done=0, failed=0):
    with self.lock:
      self.running += start - done - failed
      self.done += done
      self.failed += failed
      self.finished_here += done + failed
      self._print()

  def _print(self):
    elapsed = time.time() - self.started
    left = self.total - self.done - self.failed
    eta = (elapsed / self.finished_here * left / max(self.running, 1)
           if self.finished_here else float("nan"))
    eta_text = "?" if eta != eta else _fmt_seconds(eta * max(self.running, 1))
    print(f"[sweep] {self.done}/{self.total} done, {self.running} running, "
          f"{self.failed} failed, elapsed {_fmt_seconds(elapsed)}, ETA {eta_text}",
          file=self.stream, flush=True)


def _fmt_seconds(s: float) -> str:
  s = int(s)
  return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _execute(cmd: list[str], run_dir: str) -> tuple[bool, str]:
  """Runs one launch.py process; its output goes to ``run_dir/log.txt``."""
  os.makedirs(run_dir, exist_ok=True)
  failed_path = os.path.join(run_dir, FAILED)
  if os.path.exists(failed_path):
    os.remove(failed_path)  # a retry: the earlier failure is no longer the run's state
  with open(os.path.join(run_dir, "log.txt"), "a") as log:
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
  if proc.returncode == 0 and os.path.exists(os.path.join(run_dir, SUMMARY)):
    return True, ""
  with open(os.path.join(run_dir, "log.txt")) as log:
    tail = log.read()[-2000:]
  _record_failure(run_dir, cmd, proc.returncode, tail)
  return False, tail


def _record_failure(run_dir: str, cmd: list[str], returncode, tail: str):
  with open(os.path.join(run_dir, FAILED), "w") as f:
    json.dump({"returncode": returncode, "command": cmd, "log_tail": tail}, f, indent=1)


def vmap_groups(runs: list[Run], max_size: int) -> list[list[Run]]:
  """Runs that differ only in ``vmap_runs.VMAPPABLE`` fields, in groups of <= max_size.

  Order follows the sweep; a group of one runs as an ordinary process.
  """
  from rnnlab import vmap_runs  # pylint: disable=g-import-not-at-top (imports jax)
  groups: dict[tuple, list[Run]] = {}
  for run in runs:
    key = tuple((k, repr(v)) for k, v in run.overrides if k not in vmap_runs.VMAPPABLE)
    groups.setdefault(key, []).append(run)
  return [members[i:i + max_size] for members in groups.values()
          for i in range(0, len(members), max(1, max_size))]


def _execute_group(config_path: str, root: str, runs: list[Run], indices: list[int],
                   extra_flags) -> dict[str, bool]:
  """One launch.py process trains ``runs`` vmapped; returns {name: finished}."""
  launch = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "launch.py")
  cmd = [sys.executable, launch, f"--config={config_path}", f"--workdir={root}", "--sweep",
         f"--vmap_group={','.join(map(str, indices))}", *extra_flags]
  log_path = os.path.join(root, "_vmap", f"runs_{indices[0]}+{len(indices)}.log")
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  with open(log_path, "a") as log:
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
  with open(log_path) as log:
    tail = log.read()[-2000:]
  result = {}
  for run in runs:
    run_dir = os.path.join(root, run.name)
    result[run.name] = status(run_dir) == "done"
    if not result[run.name] and status(run_dir) != "failed":
      os.makedirs(run_dir, exist_ok=True)
      _record_failure(run_dir, cmd, proc.returncode, tail)
  return result


def run_sweep(config_path: str, root: str, runs: list[Run], *, jobs: int = 1,
              retry_failed: bool = True, extra_flags=(), vmap: int = 0,
              all_runs: list[Run] | None = None, stream=sys.stdout) -> dict[str, str]:
  """Runs every unfinished run of the sweep; returns {name: final status}.

  Finished runs are skipped. Interrupted runs restart with the same command and
  so resume from their last checkpoint. ``jobs`` processes execute at once.
  With ``vmap`` > 0, runs that differ only in vmappable values (seed, learning
  rate, clip threshold, forget bias; see ``rnnlab.vmap_runs``) train together,
  up to ``vmap`` per process, in one vmapped program. ``all_runs``: the whole
  expansion when ``runs`` is a selection of it (``--only``; group processes
  name their runs by index in it).
  """
  os.makedirs(root, exist_ok=True)
  _write_manifest(config_path, root, runs)
  todo = [r for r in runs if status(os.path.join(root, r.name)) != "done"
          and (retry_failed or status(os.path.join(root, r.name)) != "failed")]
  progress = _Progress(len(runs), len(runs) - len(todo), stream)
  units = vmap_groups(todo, vmap) if vmap > 0 else [[r] for r in todo]
  index = {r.name: i for i, r in enumerate(all_runs or runs)}
  print(f"[sweep] {len(runs)} runs in {root}: {len(runs) - len(todo)} already done, "
        f"{len(todo)} to run in {len(units)} process(es), {jobs} at a time"
        f"{f' (up to {vmap} vmapped runs per process)' if vmap > 0 else ''}.",
        file=stream, flush=True)

  def one(unit: list[Run]):
    progress.update(start=len(unit))
    if len(unit) == 1:
      run = unit[0]
      run_dir = os.path.join(root, run.name)
      ok, tail = _execute(command(config_path, run_dir, run, extra_flags), run_dir)
      last = tail.strip().splitlines()[-1] if tail.strip() else "no output"
      finished, why = {run.name: ok}, f": {last} (see {run_dir}/log.txt)"
    else:
      finished = _execute_group(config_path, root, unit, [index[r.name] for r in unit],
                                extra_flags)
      why = f" (see its failed.json and log.txt, and {root}/_vmap/)"
    ok_count = sum(finished.values())
    progress.update(done=ok_count, failed=len(unit) - ok_count)
    for name, ok in finished.items():
      if not ok:
        print(f"[sweep] run {name} FAILED{why}", file=stream, flush=True)
    return {n: "done" if ok else "failed" for n, ok in finished.items()}

  results = {}
  with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
    for part in pool.map(one, units):
      results.update(part)
  return {r.name: results.get(r.name, status(os.path.join(root, r.name))) for r in runs}


def run_group(config, root: str, runs: list[Run], indices: list[int]) -> int:
  """``launch.py --sweep --vmap_group=I,J,..``: trains those runs vmapped in this process."""
  from rnnlab import vmap_runs  # pylint: disable=g-import-not-at-top (imports jax)
  chosen = [runs[i] for i in indices]
  configs = [vmap_runs.with_overrides(config, r.as_dict()) for r in chosen]
  summaries = vmap_runs.train_runs(configs, [os.path.join(root, r.name) for r in chosen])
  return 0 if all(s is not None for s in summaries) else 1


def _write_manifest(config_path: str, root: str, runs: list[Run]):
  manifest = {"config": config_path,
              "runs": [{"name": r.name, "overrides": r.as_dict()} for r in runs]}
  with open(os.path.join(root, "sweep.json"), "w") as f:
    json.dump(manifest, f, indent=1, default=str)


def load_manifest(root: str) -> list[Run]:
  with open(os.path.join(root, "sweep.json")) as f:
    manifest = json.load(f)
  return [Run(r["name"], tuple(r["overrides"].items())) for r in manifest["runs"]]


# --- aggregation --------------------------------------------------------------------

RESULTS = "results.csv"
SUMMARY_MD = "summary.md"


def collect(root: str, runs: list[Run] | None = None) -> list[dict]:
  """One row per run: its overrides, status, final/best metrics and wall time."""
  runs = runs if runs is not None else load_manifest(root)
  rows = []
  for run in runs:
    run_dir = os.path.join(root, run.name)
    row = {"run": run.name, **run.as_dict(), "status": status(run_dir)}
    summary_path = os.path.join(run_dir, SUMMARY)
    if row["status"] == "done":
      with open(summary_path) as f:
        s = json.load(f)
      row.update({
          "metric": s["primary_metric"], "final": s["final"][s["primary_metric"]],
          "best": s["best"][s["primary_metric"]], "best_step": s["best"]["step"],
          "baseline": s["baseline"], "beats_baseline": s["beats_baseline"],
          "higher_is_better": s["higher_is_better"], "steps": s["steps"],
          "wall_time_s": round(s["wall_time_s"], 1)})
      row.update({f"final_{k.split('/', 1)[-1]}": v for k, v in s["final"].items()})
    elif row["status"] == "failed":
      with open(os.path.join(run_dir, FAILED)) as f:
        tail = json.load(f).get("log_tail", "").strip().splitlines()
      row["error"] = tail[-1] if tail else "unknown error"
    rows.append(row)
  return rows


def write_csv(rows: list[dict], path: str):
  import csv  # pylint: disable=g-import-not-at-top
  columns = list(dict.fromkeys(k for row in rows for k in row))
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, columns)
    writer.writeheader()
    writer.writerows(rows)


def arm_of(row: dict, keys: list[str]) -> tuple:
  """The arm a run belongs to: its overrides other than the seed."""
  return tuple((k, row.get(k)) for k in keys if k != "seed")


def group(rows: list[dict]) -> dict[tuple, list[dict]]:
  keys = list(dict.fromkeys(k for r in rows for k in r if "." in k or k == "seed"))
  groups: dict[tuple, list[dict]] = {}
  for row in rows:
    groups.setdefault(arm_of(row, keys), []).append(row)
  return groups


def _mean_std(values):
  import numpy as np  # pylint: disable=g-import-not-at-top
  if not values:
    return float("nan"), float("nan")
  a = np.asarray(values, dtype=float)
  return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def summary_table(rows: list[dict]) -> str:
  """Markdown: one line per arm, mean +- std over seeds of the final and best metric."""
  lines = ["| arm | metric | final (mean ± std) | best (mean ± std) | baseline | "
           "beat baseline | runs done / failed | mean wall time |",
           "|---|---|---|---|---|---|---|---|"]
  for arm, members in group(rows).items():
    done = [r for r in members if r["status"] == "done"]
    failed = sum(r["status"] == "failed" for r in members)
    name = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in arm) or "(all)"
    if not done:
      lines.append(f"| {name} | | | | | | 0 / {failed} | |")
      continue
    fm, fs = _mean_std([r["final"] for r in done])
    bm, bs = _mean_std([r["best"] for r in done])
    beat = sum(bool(r["beats_baseline"]) for r in done)
    wall, _ = _mean_std([r["wall_time_s"] for r in done])
    # A failed run (diverged to NaN/Inf, crashed) did not beat the baseline.
    lines.append(f"| {name} | {done[0]['metric']} | {fm:.4g} ± {fs:.2g} | {bm:.4g} ± {bs:.2g} | "
                 f"{done[0]['baseline']:.4g} | {beat}/{len(done) + failed} | "
                 f"{len(done)} / {failed} | "
                 f"{wall:.0f} s |")
  return "\n".join(lines) + "\n"


def plot(rows: list[dict], x_key: str, path: str, value: str = "final") -> str | None:
  """Metric against a swept field, one line per remaining arm, mean and std band over seeds."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  done = [r for r in rows if r["status"] == "done" and x_key in r]
  if not done:
    return None
  lines: dict[tuple, dict] = {}
  keys = [k for k in dict.fromkeys(k for r in done for k in r if "." in k) if k != x_key]
  for row in done:
    lines.setdefault(arm_of(row, keys), {}).setdefault(row[x_key], []).append(row[value])
  fig, ax = plt.subplots(figsize=(6.5, 4.2))
  for arm, by_x in sorted(lines.items(), key=lambda kv: str(kv[0])):
    xs = sorted(by_x, key=_sort_key)
    stats = [_mean_std(by_x[x]) for x in xs]
    means = [m for m, _ in stats]
    stds = [s for _, s in stats]
    label = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in arm) or value
    pos = list(range(len(xs))) if not all(isinstance(x, (int, float)) for x in xs) else xs
    ax.plot(pos, means, marker="o", label=label)
    ax.fill_between(pos, [m - s for m, s in zip(means, stds)],
                    [m + s for m, s in zip(means, stds)], alpha=0.2)
    if pos is not xs:
      ax.set_xticks(pos, [str(x) for x in xs])
  base = done[0]["baseline"]
  ax.axhline(base, color="k", linestyle="--", linewidth=1, label="baseline")
  ax.set_xlabel(x_key)
  ax.set_ylabel(f"{value} {done[0]['metric']}")
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def _sort_key(x):
  return (0, x, "") if isinstance(x, (int, float)) else (1, 0, str(x))


def aggregate(root: str, runs: list[Run] | None = None, x_keys: tuple[str, ...] = ()) -> dict:
  """Writes results.csv, summary.md and one figure per swept field; returns the paths."""
  rows = collect(root, runs)
  write_csv(rows, os.path.join(root, RESULTS))
  swept = [k for k in dict.fromkeys(k for r in rows for k in r if "." in k)
           if len({str(r.get(k)) for r in rows}) > 1]
  figures = []
  for key in x_keys or swept:
    path = plot(rows, key, os.path.join(root, f"{key.replace('.', '_')}.png"))
    if path:
      figures.append(path)
  counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "failed", "partial", "pending")}
  text = [f"# Sweep summary: {root}", "",
          f"Runs: {len(rows)} ({', '.join(f'{v} {k}' for k, v in counts.items() if v)}). "
          "Final and best held-out primary metric, mean ± standard deviation over seeds; "
          "'beat baseline' counts runs whose final metric beats the task's trivial baseline "
          "(failed runs count as not beating it); mean and std are over the runs done.",
          "", summary_table(rows)]
  text += [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in figures]
  failures = [r for r in rows if r["status"] == "failed"]
  if failures:
    text += ["", "## Failed runs", ""] + [f"- `{r['run']}`: {r.get('error', '')}" for r in failures]
  with open(os.path.join(root, SUMMARY_MD), "w") as f:
    f.write("\n".join(text) + "\n")
  return {"results": os.path.join(root, RESULTS), "summary": os.path.join(root, SUMMARY_MD),
          "figures": figures}


# --- command line ---------------------------------------------------------------------

def load_sweep_fn(config_path: str) -> Callable:
  """The config file's ``sweep(add[, arg])`` as ``f(add)``; a clear error if it has none.

  ``config_path`` may carry ml_collections' argument, ``configs/X.py:arg``; it
  is passed to ``sweep`` as ``arg`` as it is to ``get_config``.
  """
  import importlib.util  # pylint: disable=g-import-not-at-top
  import inspect  # pylint: disable=g-import-not-at-top
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

  Fields are matched by their last component, values as they appear in run names;
  ``field=a|b`` accepts either value.
  """
  wanted = [part.split("=", 1) for part in only.split(",") if part]
  if any(len(w) != 2 for w in wanted):
    raise ValueError(f"--only takes field=value pairs separated by commas, got {only!r}.")
  def keep(run):
    have = {k.split(".")[-1]: _slug(v) for k, v in run.overrides}
    return all(have.get(k) in {_slug(a) for a in v.split("|")} for k, v in wanted)
  chosen = [r for r in runs if keep(r)]
  if not chosen:
    raise ValueError(f"--only={only} selects none of the {len(runs)} runs (names look like "
                     f"{runs[0].name!r}).")
  return chosen


def main(config_path: str, config, root: str, *, jobs: int = 1, dry_run: bool = False,
         aggregate_only: bool = False, passthrough=(), vmap: int = 0,
         vmap_group: tuple[int, ...] = (), only: str = "", stream=sys.stdout) -> int:
  """``launch.py --sweep``: expand, (list | run | aggregate). Returns an exit code."""
  all_runs = runs = expand(load_sweep_fn(config_path), config)
  if only and not vmap_group:
    runs = select(all_runs, only)
  if vmap_group:
    bad = [i for i in vmap_group if not 0 <= i < len(runs)]
    if bad:
      raise ValueError(f"--vmap_group indices {bad} are not runs of this sweep "
                       f"(it has {len(runs)}).")
    return run_group(config, root, runs, list(vmap_group))
  if dry_run:
    for run in runs:
      print(f"{status(os.path.join(root, run.name)):8s} {run.name}", file=stream)
    print(f"{len(runs)} runs.", file=stream)
    return 0
  if not aggregate_only:
    final = run_sweep(config_path, root, runs, jobs=jobs, extra_flags=passthrough, vmap=vmap,
                      all_runs=all_runs, stream=stream)
    failed = [n for n, s in final.items() if s != "done"]
  else:
    failed = [r.name for r in runs if status(os.path.join(root, r.name)) != "done"]
  paths = aggregate(root, runs)
  print(f"[sweep] wrote {paths['results']} and {paths['summary']}"
        f"{' and ' + ', '.join(paths['figures']) if paths['figures'] else ''}.", file=stream)
  if failed:
    print(f"[sweep] {len(failed)} run(s) not done: {', '.join(failed)}.", file=stream)
  return 1 if failed else 0

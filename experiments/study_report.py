"""Tables and figures of an ablation study from its sweep folder(s) (``results.csv``).

Used by experiments/{clipping,initialization,gating}/analyze.py. A study is one
or more sweeps (one per task); each row of ``results.csv`` is a run with its
overrides, status and final/best held-out metric (``rnnlab.sweeps.report.collect``).

"Solved" is stricter than "beats the trivial baseline" (any run a hair under
1/6 on adding beats it): a run solves a task when its final held-out metric
reaches ``SOLVED`` (adding: MSE < 0.01, 6% of the baseline; copy and temporal
order: accuracy >= 0.99, Pascanu et al.'s < 1% errors). A failed run (NaN/Inf)
solves nothing.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from typing import Callable, Sequence

import numpy as np
from matplotlib.figure import Figure

from rnnlab.sweeps import report
from rnnlab.training import config as config_lib
from rnnlab.training import workdir

LEDGER = "runs.json"  # in a study's folder, beside results.json
KEPT = ("done", "failed")  # the statuses a ledger records

SOLVED = {"adding": ("eval/loss", lambda v: v < 0.01, "MSE < 0.01"),
          "copy": ("eval/accuracy", lambda v: v >= 0.99, "recall accuracy >= 0.99"),
          "selective_copy": ("eval/accuracy", lambda v: v >= 0.99, "recall accuracy >= 0.99"),
          "temporal_order": ("eval/accuracy", lambda v: v >= 0.99, "accuracy >= 0.99")}


def _number(text: str):
  if text in ("", None):
    return None
  for kind in (int, float):
    try:
      return kind(text)
    except ValueError:
      pass
  return {"True": True, "False": False}.get(text, text)


def load(root: str) -> list[dict]:
  """The rows of ``root/results.csv`` with numbers parsed, plus the sweep's wall time."""
  with open(os.path.join(root, "results.csv")) as f:
    return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]


def solved(task: str, row: dict) -> bool:
  _, test, _ = SOLVED[task]
  return row["status"] == "done" and row.get("final") is not None and test(row["final"])


def arms(rows: Sequence[dict], label: Callable[[dict], str]) -> dict[str, list[dict]]:
  out: dict[str, list[dict]] = {}
  for row in rows:
    out.setdefault(label(row), []).append(row)
  return out


def cell_text(task: str, members: Sequence[dict]) -> str:
  """"0.0123 ± 0.004 (2/3)": mean ± std of the final metric over finished runs, solved/total.

  Runs that failed (diverged) show as "†k" after the count.
  """
  done = [r["final"] for r in members if r["status"] == "done"]
  failed = sum(r["status"] == "failed" for r in members)
  wins = sum(solved(task, r) for r in members)
  if done:
    text = report.fmt_mean_std(*report.mean_std(done), digits=".3g")
  else:
    text = "diverged" if failed else "not finished"
  return f"{text} ({wins}/{len(members)}{f', †{failed}' if failed else ''})"


def table(task: str, rows: Sequence[dict], label: Callable[[dict], str],
          x_key: str = "task.seq_len") -> str:
  """Markdown: one line per arm, one column per ``x_key`` value."""
  xs = sorted({r[x_key] for r in rows})
  metric = SOLVED[task][0]
  head = f"| arm | " + " | ".join(f"T = {x}" for x in xs) + " |"
  lines = [f"Final held-out `{metric}`, mean ± std over seeds (runs solved / runs; "
           f"solved = {SOLVED[task][2]}; †n = runs that diverged to NaN/Inf).", "",
           head, "|---|" + "---|" * len(xs)]
  for name, members in arms(rows, label).items():
    cells = [cell_text(task, [r for r in members if r[x_key] == x]) for x in xs]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def figure(task: str, rows: Sequence[dict], label: Callable[[dict], str], path: str,
           panel: Callable[[dict], str] | None = None, x_key: str = "task.seq_len",
           log_y: bool = False, title: str = ""):
  """Final metric against ``x_key``: one line per arm (mean, min-max band over seeds),
  one panel per ``panel(row)``; diverged runs are left out of the mean and marked x."""
  panels = arms(rows, panel) if panel else {"": list(rows)}
  ncols = min(len(panels), 2)
  nrows = -(-len(panels) // ncols)
  fig = Figure(figsize=(5.6 * ncols, 4.0 * nrows))
  axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
  metric = SOLVED[task][0]
  baseline = next((r["baseline"] for r in rows if r.get("baseline") is not None), None)
  for ax, (pname, prow) in zip(axes, panels.items()):
    for name, members in arms(prow, label).items():
      xs = sorted({r[x_key] for r in members})
      mean, low, high, bad = [], [], [], []
      for x in xs:
        vals = [r["final"] for r in members if r[x_key] == x and r["status"] == "done"
                and r["final"] is not None and math.isfinite(r["final"])]
        mean.append(np.mean(vals) if vals else np.nan)
        low.append(min(vals) if vals else np.nan)
        high.append(max(vals) if vals else np.nan)
        if any(r["status"] == "failed" for r in members if r[x_key] == x):
          bad.append(x)
      (line,) = ax.plot(xs, mean, marker="o", label=name)
      ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.15)
      for x in bad:
        ax.plot([x], [np.nanmax(high) if np.isfinite(np.nanmax(high)) else 1.0], marker="x",
                color=line.get_color(), markersize=9)
    if baseline is not None:
      ax.axhline(baseline, color="k", linestyle="--", linewidth=1, label="baseline")
    ax.set_xlabel(x_key)
    ax.set_ylabel(f"final {metric}")
    if log_y:
      ax.set_yscale("log")
    ax.set_title(f"{title}{pname}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fig.savefig(path, dpi=110)
  return path


def summarize_arms(task, rows, label) -> dict:
  """{"<arm>, T=<t>": mean, std, solved, runs, diverged} for results.json."""
  out = {}
  for name, members in arms(rows, label).items():
    for t in sorted({r["task.seq_len"] for r in members}):
      at = [r for r in members if r["task.seq_len"] == t]
      done = [r["final"] for r in at if r["status"] == "done"]
      mean, std = report.mean_std(done)
      out[f"{name}, T={t}"] = {
          "mean": mean if done else None,
          "std": std if len(done) > 1 else None,
          "solved": sum(solved(task, r) for r in at), "runs": len(at),
          "diverged": sum(r["status"] == "failed" for r in at)}
  return out


def eval_curve(run_dir: str) -> list[dict]:
  """Every evaluation of a run: {"step", "wall_time_s", "eval/...": value}."""
  try:
    rows = workdir.read_jsonl(os.path.join(run_dir, workdir.METRICS))
  except OSError:
    return []
  return [{"step": r["step"], "wall_time_s": r.get("perf/wall_time_s"),
           **{k: v for k, v in r.items() if k.startswith("eval/")}}
          for r in rows if any(k.startswith("eval/") for k in r)]


def curve_of(row: dict, metric: str) -> list[tuple[int, float, float]]:
  """(step, wall time s, metric) at every evaluation of one run (from its folder or the
  study's run ledger, ``study_report.with_ledger``)."""
  return [(r["step"], np.nan if r.get("wall_time_s") is None else r["wall_time_s"], r[metric])
          for r in row.get("curve", []) if metric in r]


def first_solved(task: str, curve) -> tuple[int, float] | None:
  """The first evaluation (step, wall time) that meets ``task``'s criterion, or None."""
  _, test, _ = SOLVED[task]
  return next(((s, w) for s, w, v in curve if test(v)), None)


def solve_times_and_curves(label: Callable[[dict], str], group: str = "the run",
                           extra_metrics: Sequence[str] = ()):
  """An ``extra`` for ``main``: the time-to-solve table and ``<task>_curves.png``.

  Prints, per arm and length, the first evaluation that meets the task's "solved"
  criterion (median step and wall time over the finished runs that met it; ``group``
  names whose wall time that is) and, for each of ``extra_metrics`` (e.g. "eval/loss"
  where the table's metric is accuracy), the final value's mean ± std; records both in
  results.json; plots the held-out metric against the step, one panel per length.
  """
  return lambda task, root, rows, results, out: _solve_times_and_curves(
      task, rows, results, out, label, group, extra_metrics)


def _solve_times_and_curves(task, rows, results, out, label, group, extra_metrics):
  metric, _, criterion = SOLVED[task]
  curves = {r["run"]: curve_of(r, metric) for r in rows if r["status"] != "pending"}
  lengths = sorted({r["task.seq_len"] for r in rows})
  print(f"\nFirst evaluation that meets {criterion}: median step and median wall time "
        f"of the finished runs that did (solved / finished runs). Wall time is that of "
        f"{group}.\n")
  _print_head(lengths)
  solved = {}
  for name, members in arms(rows, label).items():
    cells = []
    for t in lengths:
      at = [r for r in members if r["task.seq_len"] == t and r["status"] == "done"]
      hits = [first_solved(task, curves.get(r["run"], [])) for r in at]
      hits = [h for h in hits if h is not None]
      if not at:
        cells.append("not finished")
      elif hits:
        step, wall = np.median([h[0] for h in hits]), np.median([h[1] for h in hits])
        cells.append(f"{step:.0f} / {wall / 60:.1f} min ({len(hits)}/{len(at)})")
      else:
        cells.append(f"never (0/{len(at)})")
      solved[f"{name}, T={t}"] = {"runs": len(at), "solved": len(hits),
                                  "steps": [h[0] for h in hits],
                                  "wall_time_s": [round(h[1], 1) for h in hits]}
    print(f"| {name} | " + " | ".join(cells) + " |")
  results[f"{task}_first_solved"] = solved
  for extra_metric in extra_metrics:
    _final_table(task, rows, results, label, lengths, extra_metric)
  fig = Figure(figsize=(4.2 * len(lengths), 3.6))
  axes = fig.subplots(1, len(lengths), squeeze=False).ravel()
  for ax, t in zip(axes, lengths):
    for name, members in arms(rows, label).items():
      at = [curves.get(r["run"], []) for r in members if r["task.seq_len"] == t]
      at = [c for c in at if c]
      if not at:
        continue
      n = min(len(c) for c in at)
      steps = [s for s, _, _ in at[0][:n]]
      values = np.array([[v for _, _, v in c[:n]] for c in at])
      (line,) = ax.plot(steps, values.mean(0), label=name)
      ax.fill_between(steps, values.min(0), values.max(0), color=line.get_color(), alpha=0.15)
    base = next((r["baseline"] for r in rows if r.get("baseline") is not None), None)
    if base is not None:
      ax.axhline(base, color="k", linestyle="--", linewidth=1, label="baseline")
    ax.set_title(f"{task} T = {t}", fontsize=10)
    ax.set_xlabel("step")
    ax.set_ylabel(f"held-out {metric}")
    if task == "adding":
      ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(out, f"{task}_curves.png"), dpi=110)


def _print_head(lengths):
  print("| arm | " + " | ".join(f"T = {t}" for t in lengths) + " |")
  print("|---|" + "---|" * len(lengths))


def _final_table(task, rows, results, label, lengths, metric):
  """Mean ± std over the finished runs of ``metric`` at each run's last evaluation."""
  print(f"\nFinal held-out `{metric}`, mean ± std over the finished runs (runs).\n")
  _print_head(lengths)
  table = {}
  for name, members in arms(rows, label).items():
    cells = []
    for t in lengths:
      ends = [r["curve"][-1][metric] for r in members if r["task.seq_len"] == t
              and r["status"] == "done" and r.get("curve") and metric in r["curve"][-1]]
      if ends:
        ms = mean_std(ends)
        cells.append(f"{report.fmt_mean_std(*ms, digits='.4g')} ({len(ends)})")
        table[f"{name}, T={t}"] = {"mean": ms[0], "std": ms[1], "runs": len(ends)}
      else:
        cells.append("not finished")
    print(f"| {name} | " + " | ".join(cells) + " |")
  results[f"{task}_final_{metric.split('/')[-1]}"] = table


def _base(config: dict, row: dict) -> dict:
  """A run's flattened config less the fields its sweep overrides (set, not None)."""
  swept = {k for k in row if "." in k or k == "seed"}
  return {k: v for k, v in config.items() if k not in swept}


def with_ledger(task: str, root: str, rows: list[dict], path: str,
                stream=None) -> list[dict]:
  """The sweep folder's rows merged with the study's run ledger, which is updated.

  The ledger (``runs.json`` in the study's folder, committed with results.json) keeps,
  per task and run, its results.csv row, its held-out curve and its config, so that a
  study whose runs span several sittings or machines is aggregated from every run
  finished so far, even where its run folder is gone. A run finished (done or failed)
  in the folder replaces its ledger entry; a run pending or unfinished there is taken
  from the ledger. A ledger run whose config differs from the folder's finished runs
  in a field the sweep does not vary (another step budget, say) is left out, and the
  fields are printed. Each row gains ``curve`` (``eval_curve``) and ``from_ledger``.
  """
  stream = stream or sys.stdout
  try:
    with open(path) as f:
      ledger = json.load(f)
  except FileNotFoundError:
    ledger = {}
  except ValueError as e:
    raise ValueError(f"{path} is not a run ledger (JSON: {e}); restore it from git "
                     "(git checkout -- <file>) or delete it to start a new one.") from None
  book = ledger.setdefault(task, {})
  fresh = {}
  for row in rows:
    if row["status"] not in KEPT:
      continue
    run_dir = os.path.join(root, row["run"])
    try:
      config = workdir.read_config(run_dir) or {}
    except ValueError:
      config = {}
    config = {k: v for k, v in config_lib.flatten(config).items() if v is not None}
    fresh[row["run"]] = book[row["run"]] = {
        "row": {k: v for k, v in row.items() if k not in ("curve", "from_ledger")},
        "curve": eval_curve(run_dir), "config": config}
  bases = {json.dumps(_base(e["config"], e["row"]), sort_keys=True) for e in fresh.values()}
  reference = json.loads(bases.pop()) if len(bases) == 1 else None
  by_name = {r["run"]: r for r in rows}
  merged, stale = [], {}
  for name in dict.fromkeys([*by_name, *book]):
    entry, row = book.get(name), by_name.get(name)
    if row is not None and (entry is None or name in fresh):
      merged.append({**row, "curve": entry["curve"] if entry else [], "from_ledger": False})
      continue
    if reference is not None:
      base = _base(entry["config"], entry["row"])
      fields = config_lib.diff(base, reference)
      if fields:
        stale[name] = fields
        if row is not None:
          merged.append({**row, "curve": [], "from_ledger": False})
        continue
    merged.append({**entry["row"], "curve": entry["curve"], "from_ledger": True})
  if stale:
    fields = sorted({f for v in stale.values() for f in v})
    print(f"({task}: {len(stale)} run(s) of {path} were trained with another config than "
          f"the finished runs in {root} and are left out: {', '.join(fields)})", file=stream)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  ledger = {t: dict(sorted(b.items())) for t, b in sorted(ledger.items())}
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(ledger, f, indent=1, sort_keys=True)
    f.write("\n")
  os.replace(tmp, path)
  return merged


def _measured(entry) -> bool:
  """Whether a results.json entry holds a result (not an arm whose runs had not finished)."""
  if not isinstance(entry, dict):
    return True
  if "mean" in entry:
    return entry["mean"] is not None
  return entry.get("runs", 1) > 0


def carry_over(path: str, results: dict) -> dict:
  """``results`` plus the entries of the results.json at ``path`` that it does not recompute.

  A study's results.json from before its run ledger existed holds arms whose run folders
  are gone: each such "<arm>, T=<t>" entry (of a task's table or an extra's table) that holds
  a result is kept, and listed under "carried" ({table: [keys]}), until a rerun of those runs
  replaces it. Entries of arms that had not finished are dropped.
  """
  try:
    with open(path) as f:
      old = json.load(f)
  except (OSError, ValueError):
    return results
  out, carried = dict(results), {}
  for table, entries in old.items():
    if table == "carried" or not isinstance(entries, dict):
      continue
    kept = {k: v for k, v in entries.items()
            if k not in out.get(table, {}) and _measured(v)}
    if kept:
      out[table] = {**out.get(table, {}), **kept}
      carried[table] = sorted(kept)
  if carried:
    out["carried"] = carried
  return out


def main(doc: str, defaults: dict[str, str], label: Callable[[dict], str],
         sort_key: Callable[[dict], tuple], panel: Callable[[dict], str] | None,
         out: str, line_label: Callable[[dict], str] | None = None,
         extra: Callable[[str, str, list[dict], dict, str], None] | None = None):
  """The command line of a study's analyze.py: one ``--<task>=<sweep folder>`` per task.

  For each task with a results.csv or runs in the study's ledger (``with_ledger``,
  ``<out>/runs.json``): prints the arm x length table, writes
  ``<out>/<task>.png`` (one line per ``line_label``, default the arm, one panel
  per ``panel``) and collects ``summarize_arms`` into ``<out>/results.json``.
  ``extra(task, root, rows, results, out)`` may add more (printing, results, figures in out).
  """
  import argparse  # pylint: disable=g-import-not-at-top
  p = argparse.ArgumentParser(description=doc.split("\n")[0])
  for task, root in defaults.items():
    p.add_argument(f"--{task}", default=root, help=f"the {task} sweep's --workdir")
  p.add_argument("--out", default=out, help="where the figures and results.json go")
  args = p.parse_args()
  results = {}
  for task in defaults:
    root = getattr(args, task)
    found = os.path.exists(os.path.join(root, "results.csv"))
    rows = with_ledger(task, root, load(root) if found else [],
                       os.path.join(args.out, LEDGER))
    if not rows:
      print(f"(no {root}/results.csv and no {task} runs in {args.out}/{LEDGER}: "
            f"skipping {task})")
      continue
    if not found:
      print(f"(no {root}/results.csv: {task} from {args.out}/{LEDGER} alone)")
    rows = sorted(rows, key=sort_key)
    print(f"\n### {task}\n")
    print(table(task, rows, label))
    figure(task, rows, line_label or label, os.path.join(args.out, f"{task}.png"), panel=panel,
           log_y=task == "adding", title=f"{task}: ")
    results[task] = summarize_arms(task, rows, label)
    if extra:
      extra(task, root, rows, results, args.out)
  path = os.path.join(args.out, "results.json")
  write_json(path, carry_over(path, results))


def root_and_out(doc: str, default_root: str, default_out) -> tuple[str, "pathlib.Path"]:
  """The command line of a study with one sweep folder: ``--root`` (the sweep's --workdir)
  and ``--out`` (where figures and results.json go, created)."""
  import argparse  # pylint: disable=g-import-not-at-top
  import pathlib  # pylint: disable=g-import-not-at-top
  p = argparse.ArgumentParser(description=doc.splitlines()[0])
  p.add_argument("--root", default=default_root, help="the sweep's --workdir")
  p.add_argument("--out", type=pathlib.Path, default=default_out, help="where results go")
  args = p.parse_args()
  args.out.mkdir(parents=True, exist_ok=True)
  return args.root, args.out


def mean_std(values) -> list[float]:
  """[mean, sample standard deviation] (0 for a single value), as JSON writes it."""
  return list(report.mean_std(values))


def fmt_mean_std(ms) -> str:
  return report.fmt_mean_std(*ms, digits=".3f", std_digits=".3f")


def length_table(arms: Sequence[dict], key: str) -> str:
  """Markdown table: one row per source length n, one column per arm's ``arm[key][n]``
  (a mean and std); ``arm["label"]`` heads the column."""
  lines = ["| n | " + " | ".join(a["label"] for a in arms) + " |",
           "|" + "---|" * (len(arms) + 1)]
  for n in sorted(arms[0][key]):
    lines.append(f"| {n} | " + " | ".join(fmt_mean_std(a[key][n]) for a in arms) + " |")
  return "\n".join(lines)


def write_json(path: str, obj):
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "w") as f:
    json.dump(obj, f, indent=1, sort_keys=True)

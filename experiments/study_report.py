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
from typing import Callable, Sequence

import numpy as np
from matplotlib.figure import Figure

from rnnlab.sweeps import report

SOLVED = {"adding": ("eval/loss", lambda v: v < 0.01, "MSE < 0.01"),
          "copy": ("eval/accuracy", lambda v: v >= 0.99, "recall accuracy >= 0.99"),
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


def main(doc: str, defaults: dict[str, str], label: Callable[[dict], str],
         sort_key: Callable[[dict], tuple], panel: Callable[[dict], str] | None,
         out: str, line_label: Callable[[dict], str] | None = None,
         extra: Callable[[str, str, list[dict], dict, str], None] | None = None):
  """The command line of a study's analyze.py: one ``--<task>=<sweep folder>`` per task.

  For each task with a results.csv: prints the arm x length table, writes
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
    if not os.path.exists(os.path.join(root, "results.csv")):
      print(f"(no {root}/results.csv: skipping {task})")
      continue
    rows = sorted(load(root), key=sort_key)
    print(f"\n### {task}\n")
    print(table(task, rows, label))
    figure(task, rows, line_label or label, os.path.join(args.out, f"{task}.png"), panel=panel,
           log_y=task == "adding", title=f"{task}: ")
    results[task] = summarize_arms(task, rows, label)
    if extra:
      extra(task, root, rows, results, args.out)
  write_json(os.path.join(args.out, "results.json"), results)


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

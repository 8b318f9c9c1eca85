r"""Tables and figures of the clipping study (configs/clipping.py) from its two sweeps.

    python -m experiments.clipping.analyze --adding=runs/clipping_adding \
        --temporal_order=runs/clipping_to [--out=experiments/clipping]

Prints one markdown table per task (arm x sequence length) and writes
``<task>.png`` (final metric against T, one panel per cell and learning rate,
one line per clipping arm) and ``results.json`` (per arm and T: mean, std,
solved, diverged) to --out.
"""

from __future__ import annotations

import argparse
import os
import pathlib

import numpy as np

from experiments import study_report as report
from rnnlab import metrics_io

HERE = pathlib.Path(__file__).resolve().parent
ORDER = ("none", "global_norm 0.1", "global_norm 1", "global_norm 10", "value 1")


def clip_arm(row) -> str:
  mode = row["optim.clip_mode"]
  return "none" if mode == "none" else f"{mode} {row['optim.clip_norm']:g}"


def label(row) -> str:
  return f"{row['model.cell']}, lr {row['optim.learning_rate']:g}, clip {clip_arm(row)}"


def panel(row) -> str:
  return f"{row['model.cell']}, SGD+momentum lr {row['optim.learning_rate']:g}"


def _sorted(rows):
  return sorted(rows, key=lambda r: (r["model.cell"] != "rnn", r["optim.learning_rate"],
                                     ORDER.index(clip_arm(r)), r["task.seq_len"], r["seed"]))


def gradient_stats(root: str, rows) -> dict[str, dict]:
  """Per arm (both lengths pooled): the fraction of steps clipped and the pre-clip global
  gradient norm at the logged steps (median and max), from each run's metrics.jsonl."""
  out = {}
  for name, members in report.arms(rows, label).items():
    fracs, norms = [], []
    for row in members:
      path = os.path.join(root, row["run"], "metrics.jsonl")
      if not os.path.exists(path):
        continue
      logged = [r for r in metrics_io.read_rows(path) if "grad/clipped_frac" in r]
      fracs += [r["grad/clipped_frac"] for r in logged]
      norms += [r["grad/norm"] for r in logged if np.isfinite(r["grad/norm"])]
    out[name] = {"clipped_frac": float(np.mean(fracs)) if fracs else None,
                 "median_norm": float(np.median(norms)) if norms else None,
                 "max_norm": float(np.max(norms)) if norms else None}
  return out


def gradient_table(stats: dict) -> str:
  lines = ["| arm | steps clipped | median logged ||g|| | max logged ||g|| |", "|---|---|---|---|"]
  for name, s in stats.items():
    if s["clipped_frac"] is None:
      continue
    lines.append(f"| {name} | {s['clipped_frac']:.0%} | {s['median_norm']:.3g} | "
                 f"{s['max_norm']:.3g} |")
  return "\n".join(lines)


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--adding", default="runs/clipping_adding")
  p.add_argument("--temporal_order", default="runs/clipping_to")
  p.add_argument("--out", default=str(HERE))
  args = p.parse_args()
  results = {}
  for task, root in (("adding", args.adding), ("temporal_order", args.temporal_order)):
    if not os.path.exists(os.path.join(root, "results.csv")):
      print(f"(no {root}/results.csv: skipping {task})")
      continue
    rows = _sorted(report.load(root))
    print(f"\n### {task}\n")
    print(report.table(task, rows, label))
    report.figure(task, rows, lambda r: f"clip {clip_arm(r)}", os.path.join(args.out, f"{task}.png"),
                  panel=panel, log_y=task == "adding", title=f"{task}: ")
    results[task] = report.summarize_arms(task, rows, label)
    stats = gradient_stats(root, rows)
    results[f"{task}_gradients"] = stats
    print(f"\nGradients ({task}; both lengths, every logged step; unclipped arms show the "
          "norms clipping would act on):\n")
    print(gradient_table(stats))
  report.write_json(os.path.join(args.out, "results.json"), results)


if __name__ == "__main__":
  main()

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

from experiments import study_report as report

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
  report.write_json(os.path.join(args.out, "results.json"), results)


if __name__ == "__main__":
  main()

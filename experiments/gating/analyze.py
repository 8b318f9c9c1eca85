r"""Tables and figures of the gating study (configs/gating.py).

    python -m experiments.gating.analyze --adding=runs/gating_adding \
        --copy=runs/gating_copy [--out=experiments/gating]

Prints one markdown table per task (cell x sequence length) and writes
``<task>.png`` (final metric against T; ungated and standard gated cells in one
panel, the Greff et al. LSTM variants in the other) and ``results.json``.
"""

from __future__ import annotations

import argparse
import os
import pathlib

from experiments import study_report as report

HERE = pathlib.Path(__file__).resolve().parent
ORDER = ("rnn", "gru", "mgu", "lstm", "lstm+peepholes", "lstm_nig", "lstm_nfg", "lstm_nog",
         "lstm_niaf", "lstm_noaf", "lstm_cifg", "lstm_fgr")


def label(row) -> str:
  return "lstm+peepholes" if row.get("model.cell_options.peepholes") else row["model.cell"]


def panel(row) -> str:
  name = label(row)
  return "LSTM variants (Greff et al. 2017)" if name.startswith("lstm") else "RNN, GRU, MGU"


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--adding", default="runs/gating_adding")
  p.add_argument("--copy", default="runs/gating_copy")
  p.add_argument("--out", default=str(HERE))
  args = p.parse_args()
  results = {}
  for task, root in (("adding", args.adding), ("copy", args.copy)):
    if not os.path.exists(os.path.join(root, "results.csv")):
      print(f"(no {root}/results.csv: skipping {task})")
      continue
    rows = sorted(report.load(root), key=lambda r: (ORDER.index(label(r)), r["task.seq_len"]))
    print(f"\n### {task}\n")
    print(report.table(task, rows, label))
    report.figure(task, rows, label, os.path.join(args.out, f"{task}.png"), panel=panel,
                  log_y=task == "adding", title=f"{task}: ")
    results[task] = report.summarize_arms(task, rows, label)
  report.write_json(os.path.join(args.out, "results.json"), results)


if __name__ == "__main__":
  main()

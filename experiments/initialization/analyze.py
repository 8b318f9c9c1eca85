r"""Tables and figures of the initialisation study (configs/initialization.py).

    python -m experiments.initialization.analyze --adding=runs/init_adding \
        --copy=runs/init_copy [--out=experiments/initialization]

Prints one markdown table per task (arm x sequence length) and writes
``<task>.png`` (final metric against T, one line per arm; tanh/ReLU RNNs and
LSTMs in separate panels) and ``results.json`` to --out.
"""

from __future__ import annotations

import argparse
import os
import pathlib

from experiments import study_report as report

HERE = pathlib.Path(__file__).resolve().parent
ORDER = ("rnn orthogonal", "rnn glorot_uniform", "rnn spectral:0.95", "rnn identity", "irnn",
         "lstm forget bias 0", "lstm forget bias 1", "lstm chrono")


def label(row) -> str:
  cell = row["model.cell"]
  if cell == "rnn":
    return f"rnn {row['model.cell_options.recurrent_init']}"
  if cell == "irnn":
    return "irnn"
  if row.get("model.cell_options.chrono") is not None:
    return "lstm chrono"
  return f"lstm forget bias {row['model.cell_options.forget_bias']:g}"


def panel(row) -> str:
  return "LSTM" if row["model.cell"] == "lstm" else "tanh RNN and IRNN"


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--adding", default="runs/init_adding")
  p.add_argument("--copy", default="runs/init_copy")
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

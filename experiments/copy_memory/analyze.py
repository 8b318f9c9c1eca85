r"""Tables and figures of the copy-memory study at the papers' size (configs/copy_memory.py).

    python -m experiments.copy_memory.analyze --copy=runs/copy_memory [--out=experiments/copy_memory]

Prints the arm x T table of final held-out recall accuracy (solved = >= 0.99), the
first evaluation at which each arm met it, and the final held-out loss against the
memoryless baseline 10 ln 8 / (T + 20); writes ``copy.png`` (final accuracy against
T), ``copy_curves.png`` (held-out accuracy against the step) and ``results.json``,
and records every finished run in the study's run ledger ``runs.json``.
"""

from __future__ import annotations

import math
import pathlib

from experiments import study_report as report

HERE = pathlib.Path(__file__).resolve().parent
ORDER = ("lstm forget bias 0", "lstm forget bias 1", "lstm chrono", "gru")


def label(row) -> str:
  if row["model.cell"] == "gru":
    return "gru"
  if row.get("model.cell_options.chrono") is not None:
    return "lstm chrono"
  return f"lstm forget bias {row['model.cell_options.forget_bias']:g}"


def loss_baseline(seq_len: int) -> float:
  """Cross-entropy of the memoryless strategy: blanks certain, recall uniform over 8."""
  return 10 * math.log(8) / (seq_len + 20)


def extra(task, root, rows, results, out):
  report.solve_times_and_curves(label, group="the vmapped program (9 LSTM runs, or 3 GRU runs)",
                                extra_metrics=("eval/loss",))(task, root, rows, results, out)
  lengths = sorted({r["task.seq_len"] for r in rows})
  print("\nMemoryless loss baseline 10 ln 8 / (T + 20): "
        + ", ".join(f"T = {t}: {loss_baseline(t):.4f}" for t in lengths))
  results["loss_baseline"] = {f"T={t}": loss_baseline(t) for t in lengths}


def main():
  report.main(__doc__, {"copy": "runs/copy_memory"}, label,
              lambda r: (ORDER.index(label(r)), r["task.seq_len"], r["seed"]), None, str(HERE),
              extra=extra)


if __name__ == "__main__":
  main()

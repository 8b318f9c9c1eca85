r"""Tables and figures of the linear-recurrences study (configs/linear.py).

    python -m experiments.linear.analyze --copy=runs/linear_copy \
        --adding=runs/linear_adding --selective_copy=runs/linear_selective_copy \
        [--out=experiments/linear]

Prints, per task, the arm x length table of final held-out metrics and a table of
when each arm first met the "solved" criterion (step and wall time, median over the
seeds that did); writes ``<task>.png`` (final metric against T; linear cells and
the classic cells in separate panels), ``<task>_curves.png`` (held-out metric
against the step, one panel per T, mean over seeds) and ``results.json``.
"""

from __future__ import annotations

import pathlib

from experiments import study_report as report

HERE = pathlib.Path(__file__).resolve().parent
ORDER = ("lru r_min=0.99", "lru r_min=0.9", "lru r_min=0", "mingru", "minlstm",
         "lstm chrono", "gru")


def label(row) -> str:
  cell = row["model.cell"]
  if cell == "lru":
    return f"lru r_min={row['model.cell_options.r_min']:g}"
  return "lstm chrono" if cell == "lstm" else cell


def panel(row) -> str:
  return "classic cells" if row["model.cell"] in ("lstm", "gru") else "linear recurrences"


def main():
  report.main(__doc__, {"copy": "runs/linear_copy", "adding": "runs/linear_adding",
                        "selective_copy": "runs/linear_selective_copy"}, label,
              lambda r: (ORDER.index(label(r)), r["task.seq_len"]), panel, str(HERE),
              extra=report.solve_times_and_curves(label, group="the vmapped group of 3 seeds"))


if __name__ == "__main__":
  main()

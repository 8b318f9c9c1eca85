r"""Tables and figures of Le et al.'s IRNN protocol (configs/le2015.py).

    python -m experiments.initialization.le2015 --adding=runs/le2015 [--out=experiments/initialization/le2015]

Prints the final held-out MSE of every model x (learning rate, threshold) arm
(solved = MSE < 0.01), when each arm first met it and its held-out curve; writes
``adding.png``, ``adding_curves.png``, ``results.json`` and the run ledger
``runs.json`` to --out. Every setting is reported; none is selected on the
held-out set.
"""

from __future__ import annotations

import pathlib

from experiments import study_report as report

HERE = pathlib.Path(__file__).resolve().parent / "le2015"
MODELS = ("irnn", "rnn", "lstm")


def label(row) -> str:
  return (f"{row['model.cell']}, lr {row['optim.learning_rate']:g}, "
          f"clip {row['optim.clip_norm']:g}")


def main():
  report.main(__doc__, {"adding": "runs/le2015"}, label,
              lambda r: (MODELS.index(r["model.cell"]), -r["optim.learning_rate"],
                         r["optim.clip_norm"], r["seed"]),
              lambda r: r["model.cell"], str(HERE),
              extra=report.solve_times_and_curves(label, group="the vmapped program of its model's runs"))


if __name__ == "__main__":
  main()

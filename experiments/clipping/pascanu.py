r"""Tables and figures of Pascanu et al.'s setting (configs/pascanu2013.py).

    python -m experiments.clipping.pascanu --temporal_order=runs/pascanu2013 [--out=experiments/clipping/pascanu2013]

Prints the arm x T table of final held-out accuracy on temporal order (solved =
>= 0.99, Pascanu et al.'s < 1% errors), when each arm first met it, the final
held-out loss, and per arm and T the fraction of steps clipping changed and the
gradient norm over every step (window means and the largest single step);
writes ``temporal_order.png``, ``temporal_order_curves.png``, ``results.json`` and
the run ledger ``runs.json`` to --out.
"""

from __future__ import annotations

import pathlib

from experiments import study_report as report
from experiments.clipping import analyze as clipping

HERE = pathlib.Path(__file__).resolve().parent / "pascanu2013"
ORDER = ("none, lr 0.1", "none, lr 0.03", "none, lr 0.01", "clip 1, lr 0.1",
         "normalize 1, lr 0.1", "clip 1 + omega 1, lr 0.1")


def label(row) -> str:
  mode, lr = row["optim.clip_mode"], f"lr {row['optim.learning_rate']:g}"
  if mode == "none":
    return f"none, {lr}"
  name = {"global_norm": "clip", "normalize": "normalize"}.get(mode, mode)
  omega = row.get("optim.omega_weight") or 0
  return f"{name} {row['optim.clip_norm']:g}{f' + omega {omega:g}' if omega else ''}, {lr}"


def extra(task, root, rows, results, out):
  report.solve_times_and_curves(label, group="the vmapped program of its mode",
                                extra_metrics=("eval/loss",))(task, root, rows, results, out)
  stats = clipping.gradient_stats(root, rows, label=label, by_length=True)
  stats = {k: v for k, v in stats.items() if v["clipped_frac"] is not None}
  if stats:
    results[f"{task}_gradients"] = stats
    print("\nGradients (per arm and T, over every step of every run):\n")
    print(clipping.gradient_table(stats))


def main():
  report.main(__doc__, {"temporal_order": "runs/pascanu2013"}, label,
              lambda r: (ORDER.index(label(r)), r["task.seq_len"], r["seed"]), None,
              str(HERE), extra=extra)


if __name__ == "__main__":
  main()

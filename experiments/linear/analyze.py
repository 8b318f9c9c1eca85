r"""Tables and figures of the linear-recurrences study (configs/linear.py).

    python -m experiments.linear.analyze --copy=runs/linear_copy \
        --adding=runs/linear_adding [--out=experiments/linear]

Prints, per task, the arm x length table of final held-out metrics and a table of
when each arm first met the "solved" criterion (step and wall time, median over the
seeds that did); writes ``<task>.png`` (final metric against T; linear cells and
the classic cells in separate panels), ``<task>_curves.png`` (held-out metric
against the step, one panel per T, mean over seeds) and ``results.json``.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np
from matplotlib.figure import Figure

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


def _curve(row: dict, metric: str) -> list[tuple[int, float, float]]:
  """(step, wall time s, metric) at every evaluation of one run (from its folder or the
  study's run ledger, ``study_report.with_ledger``)."""
  return [(r["step"], np.nan if r.get("wall_time_s") is None else r["wall_time_s"], r[metric])
          for r in row.get("curve", []) if metric in r]


def first_solved(task: str, curve) -> tuple[int, float] | None:
  """The first evaluation (step, wall time) that meets ``task``'s criterion, or None."""
  _, test, _ = report.SOLVED[task]
  return next(((s, w) for s, w, v in curve if test(v)), None)


def extra(task: str, root: str, rows: list[dict], results: dict, out: str):
  """The time-to-solve table and the learning-curve figure."""
  metric, _, criterion = report.SOLVED[task]
  curves = {r["run"]: _curve(r, metric) for r in rows if r["status"] != "pending"}
  lengths = sorted({r["task.seq_len"] for r in rows})
  print(f"\nFirst evaluation that meets {criterion} (every 250 steps): median step and "
        "median wall time of the finished runs that did (solved / finished runs). Wall time "
        "is that of the vmapped group of 3 seeds.\n")
  print("| arm | " + " | ".join(f"T = {t}" for t in lengths) + " |")
  print("|---|" + "---|" * len(lengths))
  solved = {}
  for name, members in report.arms(rows, label).items():
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
  fig = Figure(figsize=(4.2 * len(lengths), 3.6))
  axes = fig.subplots(1, len(lengths), squeeze=False).ravel()
  for ax, t in zip(axes, lengths):
    for name, members in report.arms(rows, label).items():
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


def main():
  report.main(__doc__, {"copy": "runs/linear_copy", "adding": "runs/linear_adding"}, label,
              lambda r: (ORDER.index(label(r)), r["task.seq_len"]), panel, str(HERE),
              extra=extra)


if __name__ == "__main__":
  main()

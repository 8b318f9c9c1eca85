r"""Tables and figures of the clipping study (configs/clipping.py) from its two sweeps.

    python -m experiments.clipping.analyze --adding=runs/clipping_adding \
        --temporal_order=runs/clipping_to [--out=experiments/clipping]

Prints one markdown table per task (arm x sequence length) and writes
``<task>.png`` (final metric against T, one panel per cell and learning rate,
one line per clipping arm) and ``results.json`` (per arm and T: mean, std,
solved, diverged) to --out.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

from experiments import study_report as report
from rnnlab.training import workdir as workdir_lib

HERE = pathlib.Path(__file__).resolve().parent
ORDER = ("none", "global_norm 0.1", "global_norm 1", "global_norm 10", "value 1")


def clip_arm(row) -> str:
  mode = row["optim.clip_mode"]
  return "none" if mode == "none" else f"{mode} {row['optim.clip_norm']:g}"


def label(row) -> str:
  return f"{row['model.cell']}, lr {row['optim.learning_rate']:g}, clip {clip_arm(row)}"


def panel(row) -> str:
  return f"{row['model.cell']}, SGD+momentum lr {row['optim.learning_rate']:g}"


def _sort_key(r):
  return (r["model.cell"] != "rnn", r["optim.learning_rate"], ORDER.index(clip_arm(r)),
          r["task.seq_len"], r["seed"])


def gradient_stats(root: str, rows, label=label, by_length: bool = False) -> dict[str, dict]:
  """Per arm (lengths pooled, or per "<arm>, T=<t>" with ``by_length``): the fraction of
  steps clipped, and the pre-clip global gradient norm from each run's metrics.jsonl.

  Runs that log ``grad/norm_mean`` and ``grad/norm_max`` (every step of each log window)
  give the median of the window means and the largest norm of any step ("every step");
  older runs only the norms at the logged steps ("logged").
  """
  out = {}
  for name, members in report.arms(rows, label).items():
    groups = ({t: [r for r in members if r["task.seq_len"] == t]
               for t in sorted({r["task.seq_len"] for r in members})} if by_length
              else {None: members})
    for t, group in groups.items():
      fracs, norms, maxes, every_step = [], [], [], True
      for row in group:
        path = os.path.join(root, row["run"], "metrics.jsonl")
        if not os.path.exists(path):
          continue
        logged = [r for r in workdir_lib.read_jsonl(path) if "grad/clipped_frac" in r]
        fracs += [r["grad/clipped_frac"] for r in logged]
        windowed = bool(logged) and all("grad/norm_max" in r for r in logged)
        every_step &= windowed
        key, top = ("grad/norm_mean", "grad/norm_max") if windowed else ("grad/norm",) * 2
        norms += [r[key] for r in logged if np.isfinite(r[key])]
        maxes += [r[top] for r in logged if np.isfinite(r[top])]
      out[name if t is None else f"{name}, T={t}"] = {
          "clipped_frac": float(np.mean(fracs)) if fracs else None,
          "median_norm": float(np.median(norms)) if norms else None,
          "max_norm": float(np.max(maxes)) if maxes else None,
          "norms_of": "every step" if every_step and fracs else "logged steps"}
  return out


def gradient_table(stats: dict) -> str:
  every = all(s.get("norms_of") == "every step" for s in stats.values()
              if s["clipped_frac"] is not None)
  of = "||g|| (window means)" if every else "logged ||g||"
  top = "max ||g|| (any step)" if every else "max logged ||g||"
  lines = [f"| arm | steps clipped | median {of} | {top} |", "|---|---|---|---|"]
  for name, s in stats.items():
    if s["clipped_frac"] is None:
      continue
    lines.append(f"| {name} | {s['clipped_frac']:.0%} | {s['median_norm']:.3g} | "
                 f"{s['max_norm']:.3g} |")
  return "\n".join(lines)


def _gradients(task, root, rows, results, out):
  del out  # no figure of its own
  stats = gradient_stats(root, rows)
  results[f"{task}_gradients"] = stats
  print(f"\nGradients ({task}; both lengths, every logged step; unclipped arms show the "
        "norms clipping would act on):\n")
  print(gradient_table(stats))


def main():
  report.main(__doc__, {"adding": "runs/clipping_adding", "temporal_order": "runs/clipping_to"},
              label, _sort_key, panel, str(HERE), line_label=lambda r: f"clip {clip_arm(r)}",
              extra=_gradients)


if __name__ == "__main__":
  main()

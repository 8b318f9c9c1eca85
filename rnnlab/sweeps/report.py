"""Aggregating a sweep: results.csv, a summary.md table per arm, and one figure per swept field.

``launch.py --sweep`` aggregates after running; ``--aggregate`` only aggregates.
An arm is a run's overrides other than the seed; each arm's line gives the
mean ± standard deviation over its seeds of the final and best held-out
primary metric, and how many runs beat the task's trivial baseline by the margin
of ``trainer.beats_baseline``. A numeric swept field is drawn as lines against
its values, any other (cell names, a single value) as bars with every seed's point.
"""

from __future__ import annotations

import csv
import os

from matplotlib.figure import Figure
import numpy as np

from rnnlab.sweeps import execute, spec
from rnnlab.training import trainer
from rnnlab.training import workdir

RESULTS = "results.csv"
SUMMARY_MD = "summary.md"


def collect(root: str, runs: list[spec.Run] | None = None,
            expected: dict[str, dict] | None = None) -> list[dict]:
  """One row per run: its overrides, status, final/best metrics and wall time.

  ``expected`` (``execute.expected_configs``): runs finished with another config are
  not counted as done.
  """
  runs = runs if runs is not None else spec.load_manifest(root)
  rows = []
  for run in runs:
    run_dir = os.path.join(root, run.name)
    row = {"run": run.name, **run.as_dict(),
           "status": execute.status(run_dir, (expected or {}).get(run.name))}
    if row["status"] == "done":
      s = workdir.read_json(os.path.join(run_dir, workdir.SUMMARY))
      final = s["final"][s["primary_metric"]]
      row.update({
          "metric": s["primary_metric"], "final": final,
          "best": s["best"][s["primary_metric"]], "best_step": s["best"]["step"],
          "baseline": s["baseline"],
          "beats_baseline": trainer.beats_baseline(final, s["baseline"], s["higher_is_better"]),
          "higher_is_better": s["higher_is_better"], "steps": s["steps"],
          "wall_time_s": round(s["wall_time_s"], 1)})
      row.update({f"final_{k.split('/', 1)[-1]}": v for k, v in s["final"].items()})
    elif row["status"] == "failed":
      try:
        tail = workdir.read_json(os.path.join(run_dir, workdir.FAILED)).get(
            "log_tail", "").strip().splitlines()
      except (OSError, ValueError, AttributeError):
        tail = [f"{workdir.FAILED} is damaged; see {workdir.LOG}"]
      row["error"] = tail[-1] if tail else "unknown error"
    rows.append(row)
  return rows


def write_csv(rows: list[dict], path: str):
  columns = list(dict.fromkeys(k for row in rows for k in row))
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, columns)
    writer.writeheader()
    writer.writerows(rows)


def arm_of(row: dict, keys: list[str]) -> tuple:
  """The arm a run belongs to: its overrides other than the seed."""
  return tuple((k, row.get(k)) for k in keys if k != "seed")


def group(rows: list[dict]) -> dict[tuple, list[dict]]:
  keys = list(dict.fromkeys(k for r in rows for k in r if "." in k or k == "seed"))
  groups: dict[tuple, list[dict]] = {}
  for row in rows:
    groups.setdefault(arm_of(row, keys), []).append(row)
  return groups


def mean_std(values):
  """Mean and sample standard deviation (ddof=1) over the first axis; std 0 for one value,
  NaN for none. Floats for a list of numbers, arrays for a list of equal-shaped arrays."""
  a = np.asarray(values, dtype=float)
  if not len(a):
    return float("nan"), float("nan")
  mean, std = a.mean(0), a.std(0, ddof=1) if len(a) > 1 else np.zeros_like(a[0])
  return (float(mean), float(std)) if a.ndim == 1 else (mean, std)


def fmt_mean_std(mean: float, std: float, digits: str = ".4g", std_digits: str = ".2g") -> str:
  """"0.0123 ± 0.004": the one way rnnlab writes a mean and its spread."""
  return f"{mean:{digits}} ± {std:{std_digits}}"


def arm_name(arm: tuple) -> str:
  """"cell=lru, r_min=0.99": the arm's fields by their last name; a field an arm leaves at
  None (an option other arms set) is left out."""
  return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in arm if v is not None)


def summary_table(rows: list[dict]) -> str:
  """Markdown: one line per arm, mean +- std over seeds of the final and best metric."""
  lines = ["| arm | metric | final (mean ± std) | best (mean ± std) | baseline | "
           "beat baseline | runs done / failed | mean wall time |",
           "|---|---|---|---|---|---|---|---|"]
  for arm, members in group(rows).items():
    done = [r for r in members if r["status"] == "done"]
    failed = sum(r["status"] == "failed" for r in members)
    name = arm_name(arm) or "(all)"
    if not done:
      lines.append(f"| {name} | | | | | | 0 / {failed} | |")
      continue
    fm, fs = mean_std([r["final"] for r in done])
    bm, bs = mean_std([r["best"] for r in done])
    beat = sum(bool(r["beats_baseline"]) for r in done)
    wall, _ = mean_std([r["wall_time_s"] for r in done])
    # A failed run (diverged to NaN/Inf, crashed) did not beat the baseline.
    lines.append(f"| {name} | {done[0]['metric']} | {fmt_mean_std(fm, fs)} | "
                 f"{fmt_mean_std(bm, bs)} | "
                 f"{done[0]['baseline']:.4g} | {beat}/{len(done) + failed} | "
                 f"{len(done)} / {failed} | "
                 f"{wall:.0f} s |")
  return "\n".join(lines) + "\n"


def plot(rows: list[dict], x_key: str, path: str, value: str = "final") -> str | None:
  """Metric against a swept field: lines (mean, std band) for a numeric field with more
  than one value, grouped bars (mean, std) otherwise; every seed is a point."""
  done = [r for r in rows if r["status"] == "done" and x_key in r]
  if not done:
    return None
  arms: dict[tuple, dict] = {}
  keys = [k for k in dict.fromkeys(k for r in done for k in r if "." in k) if k != x_key]
  for row in done:
    arms.setdefault(arm_of(row, keys), {}).setdefault(row[x_key], []).append(row[value])
  xs = sorted({r[x_key] for r in done}, key=_sort_key)
  numeric = len(xs) > 1 and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                for x in xs)
  fig = Figure(figsize=(6.5, 4.2))
  ax = fig.subplots()
  ordered = sorted(arms.items(), key=lambda kv: str(kv[0]))
  at_x = {x: [arm for arm, by_x in ordered if x in by_x] for x in xs}  # bars side by side
  width = 0.8 / max(len(a) for a in at_x.values())
  for n, (arm, by_x) in enumerate(ordered):
    label = arm_name(arm) or value
    color = f"C{n % 10}"
    at = [x for x in xs if x in by_x]
    stats = [mean_std(by_x[x]) for x in at]
    means, stds = [m for m, _ in stats], [s for _, s in stats]
    if numeric:
      ax.plot(at, means, marker="o", color=color, label=label)
      ax.fill_between(at, [m - s for m, s in zip(means, stds)],
                      [m + s for m, s in zip(means, stds)], color=color, alpha=0.2)
      pos = at
    else:
      pos = [xs.index(x) + (at_x[x].index(arm) - (len(at_x[x]) - 1) / 2) * width for x in at]
      ax.bar(pos, means, width * 0.9, yerr=stds, color=color, alpha=0.6, capsize=3,
             label=label)
    for p, x in zip(pos, at):
      ax.plot([p] * len(by_x[x]), by_x[x], ".", color=color, markersize=5, alpha=0.8)
  if not numeric:
    ax.set_xticks(range(len(xs)), [str(x) for x in xs])
  ax.axhline(done[0]["baseline"], color="k", linestyle="--", linewidth=1, label="baseline")
  ax.set_xlabel(x_key)
  ax.set_ylabel(f"{value} {done[0]['metric']}")
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  return path


def _sort_key(x):
  return (0, x, "") if isinstance(x, (int, float)) else (1, 0, str(x))


STATUSES = ("done", "other config", "failed", "partial", "pending")


def count(statuses) -> str:
  """"3 done, 2 pending": how many runs are in each status."""
  statuses = list(statuses)
  return ", ".join(f"{statuses.count(s)} {s}" for s in STATUSES if s in statuses)


def not_done_line(state: dict[str, str], show: int = 3) -> str:
  """One line for the runs not done: their count by status and the first few names."""
  names = [n for n, s in state.items() if s != "done"]
  listed = ", ".join(names[:show]) + (f" and {len(names) - show} more" if len(names) > show
                                      else "")
  other = (" Runs done with another config: run the sweep in a new --workdir."
           if "other config" in state.values() else "")
  return (f"{len(names)} run(s) not done ({count(s for s in state.values() if s != 'done')}): "
          f"{listed}; --dry_run lists every run's status.{other}")


def aggregate(root: str, runs: list[spec.Run] | None = None, x_keys: tuple[str, ...] = (),
              expected: dict[str, dict] | None = None) -> dict:
  """Writes results.csv, summary.md and one figure per swept field; returns the paths."""
  rows = collect(root, runs, expected)
  write_csv(rows, os.path.join(root, RESULTS))
  swept = [k for k in dict.fromkeys(k for r in rows for k in r if "." in k)
           if len({str(r.get(k)) for r in rows}) > 1]
  figures = []
  for key in x_keys or swept:
    path = plot(rows, key, os.path.join(root, f"{key.replace('.', '_')}.png"))
    if path:
      figures.append(path)
  margin = f"{trainer.BASELINE_MARGIN:.0%}"
  text = [f"# Sweep summary: {root}", "",
          f"Runs: {len(rows)} ({count(r['status'] for r in rows)}). "
          "Final and best held-out primary metric, mean ± standard deviation over seeds; "
          "'beat baseline' counts runs whose final metric beats the task's trivial baseline "
          f"by at least {margin} of the gap to a perfect score (a loss below "
          f"{1 - trainer.BASELINE_MARGIN:g} x the baseline, an accuracy above baseline + "
          f"{trainer.BASELINE_MARGIN:g} x (1 - baseline)); failed runs count as not beating "
          "it; mean and std are over the runs done.",
          "", summary_table(rows)]
  state = {r["run"]: r["status"] for r in rows}
  if any(s != "done" for s in state.values()):
    text += [not_done_line(state), ""]
  text += [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in figures]
  failures = [r for r in rows if r["status"] == "failed"]
  if failures:
    text += ["", "## Failed runs", ""] + [f"- `{r['run']}`: {r.get('error', '')}" for r in failures]
  with open(os.path.join(root, SUMMARY_MD), "w") as f:
    f.write("\n".join(text) + "\n")
  return {"results": os.path.join(root, RESULTS), "summary": os.path.join(root, SUMMARY_MD),
          "figures": figures}

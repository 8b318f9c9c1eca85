"""Aggregating a sweep: results.csv, a summary.md table per arm, and one figure per swept field.

``launch.py --sweep`` aggregates after running; ``--aggregate`` only aggregates.
An arm is a run's overrides other than the seed; each arm's line gives the
mean ± standard deviation over its seeds of the final and best held-out
primary metric, and how many runs beat the task's trivial baseline.
"""

from __future__ import annotations

import csv
import os

from matplotlib.figure import Figure
import numpy as np

from rnnlab.sweeps import execute, spec
from rnnlab.training import workdir

RESULTS = "results.csv"
SUMMARY_MD = "summary.md"


def collect(root: str, runs: list[spec.Run] | None = None) -> list[dict]:
  """One row per run: its overrides, status, final/best metrics and wall time."""
  runs = runs if runs is not None else spec.load_manifest(root)
  rows = []
  for run in runs:
    run_dir = os.path.join(root, run.name)
    row = {"run": run.name, **run.as_dict(), "status": execute.status(run_dir)}
    if row["status"] == "done":
      s = workdir.read_json(os.path.join(run_dir, workdir.SUMMARY))
      row.update({
          "metric": s["primary_metric"], "final": s["final"][s["primary_metric"]],
          "best": s["best"][s["primary_metric"]], "best_step": s["best"]["step"],
          "baseline": s["baseline"], "beats_baseline": s["beats_baseline"],
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


def summary_table(rows: list[dict]) -> str:
  """Markdown: one line per arm, mean +- std over seeds of the final and best metric."""
  lines = ["| arm | metric | final (mean ± std) | best (mean ± std) | baseline | "
           "beat baseline | runs done / failed | mean wall time |",
           "|---|---|---|---|---|---|---|---|"]
  for arm, members in group(rows).items():
    done = [r for r in members if r["status"] == "done"]
    failed = sum(r["status"] == "failed" for r in members)
    name = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in arm) or "(all)"
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
  """Metric against a swept field, one line per remaining arm, mean and std band over seeds."""
  done = [r for r in rows if r["status"] == "done" and x_key in r]
  if not done:
    return None
  lines: dict[tuple, dict] = {}
  keys = [k for k in dict.fromkeys(k for r in done for k in r if "." in k) if k != x_key]
  for row in done:
    lines.setdefault(arm_of(row, keys), {}).setdefault(row[x_key], []).append(row[value])
  fig = Figure(figsize=(6.5, 4.2))
  ax = fig.subplots()
  for arm, by_x in sorted(lines.items(), key=lambda kv: str(kv[0])):
    xs = sorted(by_x, key=_sort_key)
    stats = [mean_std(by_x[x]) for x in xs]
    means = [m for m, _ in stats]
    stds = [s for _, s in stats]
    label = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in arm) or value
    pos = list(range(len(xs))) if not all(isinstance(x, (int, float)) for x in xs) else xs
    ax.plot(pos, means, marker="o", label=label)
    ax.fill_between(pos, [m - s for m, s in zip(means, stds)],
                    [m + s for m, s in zip(means, stds)], alpha=0.2)
    if pos is not xs:
      ax.set_xticks(pos, [str(x) for x in xs])
  base = done[0]["baseline"]
  ax.axhline(base, color="k", linestyle="--", linewidth=1, label="baseline")
  ax.set_xlabel(x_key)
  ax.set_ylabel(f"{value} {done[0]['metric']}")
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  return path


def _sort_key(x):
  return (0, x, "") if isinstance(x, (int, float)) else (1, 0, str(x))


def aggregate(root: str, runs: list[spec.Run] | None = None, x_keys: tuple[str, ...] = ()) -> dict:
  """Writes results.csv, summary.md and one figure per swept field; returns the paths."""
  rows = collect(root, runs)
  write_csv(rows, os.path.join(root, RESULTS))
  swept = [k for k in dict.fromkeys(k for r in rows for k in r if "." in k)
           if len({str(r.get(k)) for r in rows}) > 1]
  figures = []
  for key in x_keys or swept:
    path = plot(rows, key, os.path.join(root, f"{key.replace('.', '_')}.png"))
    if path:
      figures.append(path)
  counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "failed", "partial", "pending")}
  text = [f"# Sweep summary: {root}", "",
          f"Runs: {len(rows)} ({', '.join(f'{v} {k}' for k, v in counts.items() if v)}). "
          "Final and best held-out primary metric, mean ± standard deviation over seeds; "
          "'beat baseline' counts runs whose final metric beats the task's trivial baseline "
          "(failed runs count as not beating it); mean and std are over the runs done.",
          "", summary_table(rows)]
  text += [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in figures]
  failures = [r for r in rows if r["status"] == "failed"]
  if failures:
    text += ["", "## Failed runs", ""] + [f"- `{r['run']}`: {r.get('error', '')}" for r in failures]
  with open(os.path.join(root, SUMMARY_MD), "w") as f:
    f.write("\n".join(text) + "\n")
  return {"results": os.path.join(root, RESULTS), "summary": os.path.join(root, SUMMARY_MD),
          "figures": figures}

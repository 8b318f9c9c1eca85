r"""Ranking of the LSTM variants over random hyperparameter draws (configs/greff_search.py).

    python -m experiments.gating.greff_search --adding=runs/greff_search [--out=experiments/gating/greff_search]

Prints the variant table (mean ± std of the final held-out MSE over the 16 draws,
draws solved) and the ranking by the median over draws, with the quartiles, the
best draw, and a paired comparison with the plain LSTM over the same draws (how
often the variant is worse, and the two-sided Wilcoxon signed-rank p-value);
writes ``adding_draws.png`` (every draw's final MSE per variant), ``results.json``
and the run ledger ``runs.json`` to --out.
"""

from __future__ import annotations

import math
import os
import pathlib

import numpy as np
from matplotlib.figure import Figure
from scipy import stats as scipy_stats

from experiments import study_report as report

HERE = pathlib.Path(__file__).resolve().parent / "greff_search"
ORDER = ("lstm", "lstm+peepholes", "lstm_nig", "lstm_nfg", "lstm_nog", "lstm_niaf",
         "lstm_noaf", "lstm_cifg", "lstm_fgr")
REFERENCE = "lstm"


def label(row) -> str:
  return "lstm+peepholes" if row.get("model.cell_options.peepholes") else row["model.cell"]


def finals(rows) -> dict[str, dict[int, float]]:
  """{variant: {draw (seed): final MSE}}; a diverged draw counts as +inf (worst)."""
  out: dict[str, dict[int, float]] = {}
  for r in rows:
    if r["status"] == "done" and r.get("final") is not None:
      out.setdefault(label(r), {})[r["seed"]] = float(r["final"])
    elif r["status"] == "failed":
      out.setdefault(label(r), {})[r["seed"]] = math.inf
  return out


def ranking(rows) -> list[dict]:
  by = finals(rows)
  ref = by.get(REFERENCE, {})
  out = []
  for name, values in by.items():
    v = np.array(list(values.values()))
    entry = {"variant": name, "draws": len(v), "median": float(np.median(v)),
             "q25": float(np.quantile(v, 0.25)), "q75": float(np.quantile(v, 0.75)),
             "best": float(np.min(v)), "solved": int(np.sum(v < 0.01)),
             "diverged": int(np.sum(~np.isfinite(v)))}
    common = sorted(set(values) & set(ref))
    if name != REFERENCE and common:
      a = np.array([values[s] for s in common])
      b = np.array([ref[s] for s in common])
      entry["worse_than_lstm"] = int(np.sum(a > b))
      entry["paired_draws"] = len(common)
      finite = np.isfinite(a) & np.isfinite(b)
      diff = np.log(a[finite]) - np.log(b[finite])
      entry["wilcoxon_p"] = (float(scipy_stats.wilcoxon(diff).pvalue)
                             if np.count_nonzero(diff) >= 6 else None)
    out.append(entry)
  return sorted(out, key=lambda e: e["median"])


def extra(task, root, rows, results, out):
  del root
  ranks = ranking(rows)
  results[f"{task}_ranking"] = {e["variant"]: e for e in ranks}
  print("\nRanked by the median final MSE over the draws (lower is better); worse than lstm: "
        "draws where the variant ends above the plain LSTM with the same draw; p: two-sided "
        "Wilcoxon signed-rank test on the paired log MSEs.\n")
  print("| rank | variant | median | quartiles | best | solved | worse than lstm | p |")
  print("|---|---|---|---|---|---|---|---|")
  for i, e in enumerate(ranks, 1):
    worse = (f"{e['worse_than_lstm']}/{e['paired_draws']}" if "worse_than_lstm" in e else "-")
    p = e.get("wilcoxon_p")
    print(f"| {i} | {e['variant']} | {e['median']:.3g} | {e['q25']:.3g}-{e['q75']:.3g} | "
          f"{e['best']:.3g} | {e['solved']}/{e['draws']} | {worse} | "
          f"{'-' if p is None else f'{p:.2g}'} |")
  fig = Figure(figsize=(8, 3.8))
  ax = fig.subplots()
  names = [e["variant"] for e in ranks]
  by = finals(rows)
  for i, name in enumerate(names):
    v = np.array(list(by[name].values()))
    v = np.where(np.isfinite(v), v, np.nan)
    ax.scatter(np.full(len(v), i) + np.linspace(-0.2, 0.2, len(v)), v, s=10, alpha=0.7)
    ax.plot([i - 0.3, i + 0.3], [np.nanmedian(v)] * 2, color="k")
  baseline = next((r["baseline"] for r in rows if r.get("baseline") is not None), None)
  if baseline is not None:
    ax.axhline(baseline, color="k", linestyle="--", linewidth=1, label="baseline 1/6")
  ax.axhline(0.01, color="gray", linestyle=":", linewidth=1, label="solved (0.01)")
  ax.set_xticks(range(len(names)), names, rotation=30, fontsize=8)
  ax.set_yscale("log")
  ax.set_ylabel("final held-out MSE")
  ax.set_title(f"{task} T = {rows[0]['task.seq_len']}: every draw (bar: median)", fontsize=10)
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(os.path.join(out, f"{task}_draws.png"), dpi=110)


def main():
  report.main(__doc__, {"adding": "runs/greff_search"}, label,
              lambda r: (ORDER.index(label(r)), r["seed"]), None, str(HERE), extra=extra)


if __name__ == "__main__":
  main()

r"""Exact match against source length for the context-compression sweep.

    python -m experiments.context_compression.analyze --root=runs/context_compression

Reads every run of ``configs/context_compression.py``'s sweep in --root (its
config.json for the arm, summary.json for the final held-out metrics,
metrics.jsonl for the evaluations during training). Exact match at length n is
``correct@len{n} / frac@len{n}`` of the final evaluation
(``tasks.accuracy_by_length``), greedy decoding on the held-out set. Writes
results.json and the figures to --out (default: this folder) and prints the
markdown tables (mean ± std over seeds, std with ddof=1 as rnnlab.sweeps.report).
"""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
from matplotlib.figure import Figure

from experiments.study_report import fmt_mean_std, length_table, mean_std, root_and_out
from rnnlab.sweeps import report
from rnnlab.training import workdir as workdir_lib
from rnnlab.tasks.seq2seq import accuracy_by_length

HERE = pathlib.Path(__file__).resolve().parent
DEFAULT_ROOT = "runs/context_compression"
BUCKET = 4  # source lengths per column of the compact table


def arm_label(attention: str, reverse: bool) -> str:
  return f"attention={attention}, reverse_source={reverse}"


def load_runs(root: str) -> list[dict]:
  """One dict per finished run: arm, seed, final metrics, eval curve, wall time."""
  runs = []
  for name in sorted(os.listdir(root)):
    run_dir = os.path.join(root, name)
    if not os.path.exists(os.path.join(run_dir, workdir_lib.SUMMARY)):
      continue
    with open(os.path.join(run_dir, "config.json")) as f:
      config = json.load(f)
    with open(os.path.join(run_dir, workdir_lib.SUMMARY)) as f:
      summary = json.load(f)
    evals = [r for r in workdir_lib.read_jsonl(os.path.join(run_dir, workdir_lib.METRICS))
             if "eval/accuracy" in r]
    best = max(evals, key=lambda r: r["eval/accuracy"])  # the first of ties
    runs.append({"name": name, "attention": config["model"]["attention"],
                 "reverse_source": config["model"]["reverse_source"], "seed": config["seed"],
                 "steps": summary["steps"], "wall_time_s": summary["wall_time_s"],
                 "accuracy": summary["final"]["eval/accuracy"],
                 "token_accuracy": summary["final"]["eval/token_accuracy"],
                 "by_length": accuracy_by_length(summary["final"], prefix="eval/"),
                 "best_step": best["step"], "best_accuracy": best["eval/accuracy"],
                 # the row of a step also holds that step's train/ metrics
                 "best_by_length": accuracy_by_length(best, prefix="eval/"),
                 "curve": [(r["step"], r["eval/accuracy"]) for r in evals]})
  return runs


def aggregate(runs: list[dict]) -> list[dict]:
  """Per arm: mean and std over seeds of every measurement."""
  arms = {}
  for r in runs:
    arms.setdefault((r["attention"], r["reverse_source"]), []).append(r)
  out = []
  for (attention, reverse), members in sorted(arms.items()):
    lengths = sorted(members[0]["by_length"])
    by_len = {n: mean_std([m["by_length"][n] for m in members]) for n in lengths}
    out.append({
        "attention": attention, "reverse_source": reverse,
        "label": arm_label(attention, reverse), "seeds": [m["seed"] for m in members],
        "steps": members[0]["steps"],
        "accuracy": mean_std([m["accuracy"] for m in members]),
        "token_accuracy": mean_std([m["token_accuracy"] for m in members]),
        "by_length": {n: [round(v, 4) for v in by_len[n]] for n in lengths},
        "per_seed_by_length": {m["seed"]: {n: round(v, 4) for n, v in m["by_length"].items()}
                               for m in members},
        "best_accuracy": mean_std([m["best_accuracy"] for m in members]),
        "best_step": [m["best_step"] for m in members],
        "per_seed_best_by_length": {
            m["seed"]: {n: round(v, 4) for n, v in m["best_by_length"].items()} for m in members},
        "longest_length_above_0.9": _longest_above(by_len, 0.9),
        "curve": _mean_curve(members),
        "wall_time_s": mean_std([m["wall_time_s"] for m in members])})
  return out


def _longest_above(by_len: dict, level: float) -> int:
  """Largest n such that the mean exact match is >= level at every length <= n."""
  best = 0
  for n in sorted(by_len):
    if by_len[n][0] < level:
      break
    best = n
  return best


def _mean_curve(members):
  steps = [s for s, _ in members[0]["curve"]]
  mean, std = report.mean_std([[v for _, v in m["curve"]] for m in members])
  return {"step": steps, "mean": mean.round(4).tolist(), "std": std.round(4).tolist()}


def figure(arms: list[dict], path):
  fig = Figure(figsize=(16, 4.2))
  ax, ax_best, ax2 = fig.subplots(1, 3, gridspec_kw={"width_ratios": [3, 3, 2]})
  for arm in arms:
    n = np.array(sorted(arm["by_length"]), dtype=int)
    style = "-" if arm["attention"] != "none" else "--"
    for a, key in ((ax, "per_seed_by_length"), (ax_best, "per_seed_best_by_length")):
      per_seed = np.array([[arm[key][seed][k] for k in n] for seed in arm["seeds"]])
      m, s = report.mean_std(per_seed)
      line, = a.plot(n, m, style, marker="o", ms=3, label=arm["label"])
      a.fill_between(n, m - s, m + s, alpha=0.2, color=line.get_color())
    c = arm["curve"]
    cm, cs = np.array(c["mean"]), np.array(c["std"])
    ax2.plot(c["step"], cm, style, marker="o", ms=3, color=line.get_color())
    ax2.fill_between(c["step"], cm - cs, cm + cs, alpha=0.2, color=line.get_color())
  ax.set(xlabel="source length n", ylabel="held-out exact match (greedy)", ylim=(-0.03, 1.03),
         title=f"final step: exact match by length (mean ± std, {len(arms[0]['seeds'])} seeds)")
  ax_best.set(xlabel="source length n", ylabel="held-out exact match (greedy)",
              ylim=(-0.03, 1.03), title="each run's best evaluation")
  ax2.set(xlabel="training step", ylabel="held-out exact match, all lengths",
          ylim=(-0.03, 1.03), title="during training")
  for a in (ax, ax_best, ax2):
    a.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def bucket_table(arms: list[dict], which: str) -> list[str]:
  """which: "" (final evaluation) or "best_" (each run's best evaluation)."""
  lengths = sorted(arms[0]["by_length"])
  buckets = [lengths[i:i + BUCKET] for i in range(0, len(lengths), BUCKET)]
  head = ["arm", "all lengths", *[f"n={b[0]}-{b[-1]}" for b in buckets]]
  head += ["token acc.", "mean wall time"] if not which else ["steps of the best evaluation"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for arm in arms:
    cells = [fmt_mean_std(arm[f"{which}accuracy"])]
    for b in buckets:  # mean over the bucket's lengths, per seed, then mean ± std
      per_seed = [np.mean([arm[f"per_seed_{which}by_length"][s][n] for n in b])
                  for s in arm["seeds"]]
      cells.append(fmt_mean_std(mean_std(per_seed)))
    if not which:
      cells += [fmt_mean_std(arm["token_accuracy"]), f"{arm['wall_time_s'][0]:.0f} s"]
    else:
      cells.append(", ".join(str(step) for step in arm["best_step"]))
    lines.append(f"| {arm['label']} | " + " | ".join(cells) + " |")
  return lines


def tables(arms: list[dict]) -> str:
  lines = ["Final evaluation (step %d):" % arms[0]["steps"], ""] + bucket_table(arms, "")
  steps = "/".join(str(step) for step in arms[0]["curve"]["step"])
  lines += ["", "Each run's best evaluation (highest all-length exact match among steps "
            f"{steps}, chosen on the same held-out set):", ""]
  lines += bucket_table(arms, "best_")
  return ("\n".join(lines) + "\n\nExact match per source length, final evaluation:\n\n"
          + length_table(arms, "by_length"))


def main():
  root, out = root_and_out(__doc__, DEFAULT_ROOT, HERE)
  runs = load_runs(root)
  if not runs:
    raise SystemExit(f"No finished runs in {root}; run the sweep first (see README.md).")
  arms = aggregate(runs)
  figure(arms, out / "exact_match_by_length.png")
  with open(out / "results.json", "w") as f:
    json.dump({"root": root, "runs": len(runs), "arms": arms}, f, indent=1)
  print(f"{len(runs)} runs in {root}\n")
  print(tables(arms))


if __name__ == "__main__":
  main()

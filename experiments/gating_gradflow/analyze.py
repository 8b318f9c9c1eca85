r"""How far back the gradient reaches, for each arm of run.py, at initialisation and after training.

    python -m experiments.gating_gradflow.analyze [--root=/tmp/rnnlab_gating_gradflow]

For every arm: the parameters at step 0 (``rnnlab.training.job.init_state``, exactly what the
run started from) and after training (the run's last checkpoint), and per step t
the norm ||dL/dh_t|| (``rnnlab.training.analyses.Measurer``: the real model apply with zero
perturbations of h_t, one backward pass) on the first 256 held-out sequences
(the same for every arm). L is the loss of the read-out that needs the memory:
adding, the MSE of the sum at the last step (the task loss); copy, the
cross-entropy of the 10 recall steps only (the task loss also scores every
blank, whose local gradients would hide how far back the recall reaches).

Reported per arm: ratio_0 = ||dL/dh_0|| / ||dL/dh_{T-1}||; the reach, the
smallest lag k = T-1-t with ||dL/dh_t|| < 1e-3 ||dL/dh_{T-1}|| (none: the
gradient never falls that low within the sequence); and the rate, the geometric
change of ||dL/dh_t|| per step back in time (``gradflow.decay_rate``) over the
steps that carry the memory: t = 0..T-4 for adding, the blanks between the data
and the delimiter (t = 10..T+8 of the T+20 steps) for copy. Writes results.json and
figures to --out (default: this folder).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib

import numpy as np
from matplotlib.figure import Figure

from experiments.gating_gradflow import run as runs
from rnnlab import gradflow, plots
from rnnlab.training import analyses
from rnnlab.training import job as job_lib
from rnnlab.training import workdir as workdir_lib
from rnnlab.training.checkpoint import Checkpointer
from rnnlab.tasks import base, synthetic

HERE = pathlib.Path(__file__).resolve().parent
SEQUENCES = 256
THRESHOLD = 1e-3


def recall_loss(task, outputs, batch):
  """Copy: cross-entropy of the 10 recall steps only (the task loss averages all T+20)."""
  recall = slice(-synthetic.COPY_LENGTH, None)
  return base.cross_entropy(outputs[:, recall], batch["y"][:, recall])


READOUT_LOSS = {"adding": analyses.task_loss, "copy": recall_loss}
# (first, last) time step of the fitted window, from the number of steps read.
RATE_WINDOW = {"adding": lambda steps: (0, steps - 4), "copy": lambda steps: (10, steps - 12)}


def reach(norms: np.ndarray) -> int | None:
  """Smallest lag k with norms[T-1-k] < THRESHOLD * norms[T-1]; None if there is none."""
  below = np.nonzero(norms[::-1] < THRESHOLD * norms[-1])[0]
  return int(below[0]) if below.size else None


def rate(norms: np.ndarray, task: str) -> float:
  """Geometric change of the norm per step back in time over RATE_WINDOW[task]."""
  first, last = RATE_WINDOW[task](norms.size)
  lag = lambda t: norms.size - 1 - t
  return gradflow.decay_rate(np.log(norms[::-1]), min_lag=lag(last), max_lag=lag(first))


def measure_arm(arm: runs.Arm, root: str) -> dict:
  """Per-step norms at init and after training, with the run's final eval metrics."""
  config = arm.config()
  job = job_lib.build(config)
  measurer = analyses.Measurer(job, loss=READOUT_LOSS[arm.task])
  initial = job_lib.init_state(job)
  ckpt = Checkpointer(arm.workdir(root), config.train.keep_checkpoints, read_only=True)
  try:
    _, final = ckpt.restore(initial, move_damaged=False)
  finally:
    ckpt.close()
  batch = measurer.job.task.eval_batches(SEQUENCES)[0]
  out = {"task": arm.task, "slug": arm.slug, "label": arm.label,
         "command": " ".join(arm.command(root)), "steps": int(final.step),
         "baseline_loss": measurer.job.task.baseline["loss"]}
  for when, state in (("init", initial), ("trained", final)):
    norms = measurer(state.params, state.rng, 0, batch=batch)[0, 0]
    out[when] = {"norms": [float(f"{n:.4g}") for n in norms], "reach": reach(norms),
                 "ratio_0": float(norms[0] / norms[-1]), "rate": rate(norms, arm.task)}
  with open(os.path.join(arm.workdir(root), workdir_lib.SUMMARY)) as f:
    out["summary"] = json.load(f)
  return out


def norm_figure(results, task, when, path):
  curves = {r["label"]: np.asarray(r[when]["norms"]) / r[when]["norms"][-1]
            for r in results if r["task"] == task}
  title = {"init": "at initialisation", "trained": f"after {results[0]['steps']} steps"}[when]
  plots.grad_norm_curves(curves, path, ylabel="||dL/dh_t|| / ||dL/dh_{T-1}||",
                         title=f"{task}: {title}")


def training_figure(results, task, root, path):
  """Train loss of every arm against the step, with the memoryless baseline."""
  fig = Figure(figsize=(7, 3.6))
  ax = fig.add_subplot()
  mine = [r for r in results if r["task"] == task]
  for r in mine:
    rows = workdir_lib.read_jsonl(os.path.join(root, f"{task}_{r['slug']}", workdir_lib.METRICS))
    rows = [row for row in rows if "train/loss" in row]
    ax.plot([row["step"] for row in rows], [row["train/loss"] for row in rows], label=r["label"])
  baseline = mine[0]["baseline_loss"]
  ax.axhline(baseline, color="k", ls="--", lw=1, label=f"memoryless baseline {baseline:.4f}")
  ax.set(xlabel="training step", ylabel="train loss", yscale="log", title=f"{task}: training")
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize="small")
  fig.savefig(path, dpi=100, bbox_inches="tight")


def table(results, task) -> str:
  metrics = ["eval/loss"] + (["eval/accuracy"] if task == "copy" else [])
  head = ["unit", *[f"{k} {w}" for w in ("init", "trained") for k in ("rate", "ratio_0", "reach")],
          *[f"final {m}" for m in metrics]]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  fmt = lambda k: "none" if k is None else str(k)
  for r in (r for r in results if r["task"] == task):
    cells = [f"{r[w]['rate']:.3f} | {r[w]['ratio_0']:.2e} | {fmt(r[w]['reach'])}"
             for w in ("init", "trained")]
    finals = [f"{r['summary']['final'][m]:.4f}" for m in metrics]
    lines.append(f"| {r['label']} | " + " | ".join(cells + finals) + " |")
  return "\n".join(lines)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--root", default=runs.DEFAULT_ROOT, help="where run.py put the runs")
  p.add_argument("--out", type=pathlib.Path, default=HERE, help="where results go")
  p.add_argument("--full", action="store_true", help="analyse the --full runs")
  args = p.parse_args()
  args.out.mkdir(parents=True, exist_ok=True)
  results = [measure_arm(arm, args.root) for arm in runs.arms(args.full)]
  for task in runs.TASK_CONFIGS:
    for when in ("init", "trained"):
      norm_figure([r for r in results if r["task"] == task], task, when,
                  args.out / f"{task}_{when}.png")
    training_figure(results, task, args.root, args.out / f"{task}_training.png")
    base = next(r for r in results if r["task"] == task)
    print(f"\n{task} (baseline loss {base['baseline_loss']:.4f})\n{table(results, task)}")
  with open(args.out / "results.json", "w") as f:
    json.dump(results, f, indent=1)


if __name__ == "__main__":
  main()

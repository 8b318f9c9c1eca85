r"""Exploding gradients of a tanh RNN under plain SGD, with and without global-norm clipping.

    python -m experiments.exploding_clipping.run      # 3 arms x 3 seeds, about 4 minutes on a 2-core CPU
    python -m experiments.exploding_clipping.run --seq_len=100 --steps=5000 \
        --out=/tmp/exploding_clipping_full             # longer (GPU)
    python -m experiments.exploding_clipping.omega    # the Omega regulariser (omega.py)

Each arm is the trainer on configs/temporal_order.py with OVERRIDES and one
clipping setting (ARMS), for each of --seeds (default 0, 1, 2), run in-process by ``trainer.train_and_evaluate`` with the
gradient-flow recorder on (``gradflow.every`` = HOOK_EVERY); ``launch.py`` with the
printed flags gives the same metrics.jsonl and gradflow.jsonl. Every step is logged (train.log_every=1), so
metrics.jsonl holds each step's loss, pre-clip global gradient norm and whether
it was clipped. Runs go to --root (default under /tmp); figures and
results.json to --out (default: this folder). The figures show seed 0; the
table has every seed and each arm's summary over the seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import tempfile
import time

import numpy as np

from configs import temporal_order
from experiments import study_report as report
from rnnlab import plots
from rnnlab.training import config as config_lib
from rnnlab.training import trainer
from rnnlab.training import workdir as workdir_lib
from rnnlab.errors import NonFiniteError

HERE = pathlib.Path(__file__).resolve().parent
DEFAULT_ROOT = os.path.join(tempfile.gettempdir(), "rnnlab_exploding_clipping")
OVERRIDES = {"task.seq_len": 50, "task.eval_size": 512, "model.cell": "rnn",
             "model.hidden_size": 64, "optim.name": "sgd", "optim.learning_rate": 0.5,
             "train.batch_size": 32, "train.num_steps": 500, "train.log_every": 1,
             "train.eval_every": 100, "train.checkpoint_every": 0}
# Pascanu et al. 2013 suggest a threshold of 0.5-10x the average norm; it is ~0.9 here
# before the first explosion.
ARMS = {
    "no_clip": {"optim.clip_mode": "none"},
    "clip_1": {"optim.clip_mode": "global_norm", "optim.clip_norm": 1.0},
    "clip_10": {"optim.clip_mode": "global_norm", "optim.clip_norm": 10.0},
}
HOOK_EVERY = 5


def overrides(name: str, sizes: dict | None = None, seed: int = 0) -> dict:
  """The flags of arm ``name``; ``sizes`` replaces some of OVERRIDES (e.g. a longer run)."""
  return {**OVERRIDES, **(sizes or {}), **ARMS[name], "gradflow.every": HOOK_EVERY,
          "seed": seed}


def arm_config(name: str, sizes: dict | None = None, seed: int = 0):
  return config_lib.override(temporal_order.get_config(), overrides(name, sizes, seed))


def run_name(name: str, seed: int) -> str:
  return name if seed == 0 else f"{name}_seed{seed}"


def command(name: str, root: str, sizes: dict | None = None, seed: int = 0) -> str:
  flags = " ".join(f"--config.{k}={v}" for k, v in overrides(name, sizes, seed).items())
  return (f"python launch.py --config=configs/temporal_order.py "
          f"--workdir={os.path.join(root, run_name(name, seed))} {flags}")


def train_arm(name: str, root: str, sizes: dict, seed: int = 0) -> str | None:
  """Trains one arm with the hook; returns the NonFiniteError message if it stopped."""
  workdir = os.path.join(root, run_name(name, seed))
  config = arm_config(name, sizes, seed)
  print(f"{run_name(name, seed)}: equivalent to\n  {command(name, root, sizes, seed)}",
        flush=True)
  try:
    trainer.train_and_evaluate(config, workdir, overwrite=True,
                             console=lambda line: None)
  except NonFiniteError as err:
    return str(err)
  return None


def statistics(name: str, root: str, stopped: str | None, seed: int = 0) -> dict:
  """Spikes, clipped steps, the blow-up of the loss and the final held-out metrics."""
  rows = workdir_lib.read_jsonl(os.path.join(root, run_name(name, seed), workdir_lib.METRICS))
  per_step = [r for r in rows if "grad/norm" in r]
  norms = np.array([r["grad/norm"] for r in per_step])
  loss = np.array([r["train/loss"] for r in per_step])
  calm = np.median(norms[:100])
  chance = np.log(4.0)
  blown = np.nonzero(loss > 2 * chance)[0]
  evals = [r for r in rows if "eval/loss" in r]
  return {"arm": name, "seed": seed, "steps": int(per_step[-1]["step"]), "stopped": stopped,
          "clipped_steps": int(sum(r.get("grad/clipped", 0) for r in per_step)),
          "median_norm_first_100": float(calm), "max_norm": float(norms.max()),
          "spikes_over_10x": int((norms > 10 * calm).sum()), "max_loss": float(loss.max()),
          "first_loss_over_2x_chance": int(per_step[blown[0]]["step"]) if blown.size else None,
          "final_eval": {k: v for k, v in evals[-1].items() if k.startswith("eval/")}}


def figures(name: str, root: str, out: pathlib.Path, sizes: dict):
  config = arm_config(name, sizes)
  clip = config.optim.clip_norm if config.optim.clip_mode != "none" else None
  workdir = os.path.join(root, name)
  title = (f"tanh RNN, SGD lr {config.optim.learning_rate:g}, temporal order "
           f"T={config.task.seq_len}: {name}")
  plots.training_curves(os.path.join(workdir, workdir_lib.METRICS), out / f"curves_{name}.png",
                        clip_norm=clip, title=title)
  plots.gradflow_heatmap(os.path.join(workdir, workdir_lib.GRADFLOW),
                         out / f"gradflow_{name}.png",
                         title=f"||dL/dh_t|| over training (every {HOOK_EVERY} steps): {name}")


def table(stats) -> str:
  head = ["arm", "seed", "clipped steps", "median ||g|| (first 100)", "max ||g||",
          "steps ||g|| > 10x median",
          "max train loss", "first step loss > 2 ln 4", "final eval loss", "final eval accuracy"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for s in stats:
    e = s["final_eval"]
    lines.append(f"| {s['arm']} | {s.get('seed', 0)} | {s['clipped_steps']} | "
                 f"{s['median_norm_first_100']:.3g} | "
                 f"{s['max_norm']:.3g} | {s['spikes_over_10x']} | {s['max_loss']:.3g} | "
                 f"{s['first_loss_over_2x_chance'] or 'never'} | {e['eval/loss']:.4f} | "
                 f"{e['eval/accuracy']:.3f} |")
  return "\n".join(lines)


def summaries(stats) -> dict[str, dict]:
  """Per arm over its seeds: runs whose loss passed 2 ln 4, mean ± std of the largest
  gradient norm, the largest train loss and the final held-out loss and accuracy."""
  out = {}
  for name in dict.fromkeys(s["arm"] for s in stats):
    runs = [s for s in stats if s["arm"] == name]
    out[name] = {
        "seeds": len(runs),
        "blew_up": sum(s["first_loss_over_2x_chance"] is not None for s in runs),
        "max_norm": report.mean_std([s["max_norm"] for s in runs]),
        "max_loss": report.mean_std([s["max_loss"] for s in runs]),
        "final_eval_loss": report.mean_std([s["final_eval"]["eval/loss"] for s in runs]),
        "final_eval_accuracy": report.mean_std([s["final_eval"]["eval/accuracy"] for s in runs])}
  return out


def summary_table(summary: dict) -> str:
  lines = ["| arm | seeds whose loss passed 2 ln 4 | max ||g|| | max train loss | "
           "final eval loss | final eval accuracy |", "|---|---|---|---|---|---|"]
  f = lambda ms, d: f"{ms[0]:{d}} ± {ms[1]:{d}}"
  for name, s in summary.items():
    lines.append(f"| {name} | {s['blew_up']}/{s['seeds']} | {f(s['max_norm'], '.3g')} | "
                 f"{f(s['max_loss'], '.3g')} | {f(s['final_eval_loss'], '.4f')} | "
                 f"{f(s['final_eval_accuracy'], '.3f')} |")
  return "\n".join(lines)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--root", default=DEFAULT_ROOT, help="parent folder of the runs' workdirs")
  p.add_argument("--out", type=pathlib.Path, default=HERE, help="where figures go")
  p.add_argument("--seq_len", type=int, default=OVERRIDES["task.seq_len"])
  p.add_argument("--steps", type=int, default=OVERRIDES["train.num_steps"])
  p.add_argument("--seeds", default="0,1,2", help="comma list of seeds")
  args = p.parse_args()
  try:
    seeds = [int(s) for s in args.seeds.split(",")]
  except ValueError:
    p.error(f"--seeds takes a comma list of integers, got {args.seeds!r}")
  args.out.mkdir(parents=True, exist_ok=True)
  sizes = {"task.seq_len": args.seq_len, "train.num_steps": args.steps}
  start, stats = time.time(), []
  for name in ARMS:
    for seed in seeds:
      stopped = train_arm(name, args.root, sizes, seed)
      stats.append(statistics(name, args.root, stopped, seed))
    figures(name, args.root, args.out, sizes)
  summary = summaries(stats)
  with open(args.out / "results.json", "w") as f:
    json.dump({"stats": stats, "summary": summary,
               "commands": {run_name(n, s): command(n, args.root, sizes, s)
                            for n in ARMS for s in seeds},
               "wall_time_s": round(time.time() - start)}, f, indent=1)
  print(table(stats))
  print()
  print(summary_table(summary))
  print(f"wall time {time.time() - start:.0f} s")


if __name__ == "__main__":
  main()

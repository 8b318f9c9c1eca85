r"""What Pascanu et al.'s Omega regulariser adds where gradients vanish: a tanh RNN, SGD + clipping.

    python -m experiments.exploding_clipping.omega            # about 3-5 minutes on a 2-core CPU
    python -m experiments.exploding_clipping.omega --steps=20000 --seq_len=100 \
        --out=/tmp/omega_full                                 # closer to the paper (GPU)

The trainer has no Omega option yet, so this is its own small loop built from the
trainer's parts: the same config (configs/temporal_order.py with OVERRIDES), the
same initial parameters (``rnnlab.training.job.init_state``), the same batches
(``task.train_batch(step)``) and the same Optax chain (``optim.make_optimizer``:
global-norm clipping, then SGD). Only the loss differs:

    loss + weight * Omega          (``rnnlab.training.analyses.loss_and_omega``)

with Omega as in Pascanu, Mikolov & Bengio (2013), eq. 10: the sum over steps of
(||dL/dh_{k+1} dh_{k+1}/dh_k|| / ||dL/dh_{k+1}|| - 1)^2, dL/dh held constant.
Arms: WEIGHTS x SEEDS. Each step also records ||dL/dh_0|| / ||dL/dh_{T-1}|| (how much of
the gradient reaches the first step) from the dL/dh_t the loss computes anyway.
Writes omega_results.json and omega_*.png to --out (default: this folder).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from matplotlib.figure import Figure

from configs import temporal_order
from rnnlab import gradflow
from rnnlab.training import analyses
from rnnlab.training import config as config_lib
from rnnlab.training import job as job_lib

HERE = pathlib.Path(__file__).resolve().parent
WEIGHTS = (0.0, 1.0)  # Omega weight per arm; 0 is plain SGD with clipping (Pascanu's SGD-C)
SEEDS = (0, 1, 2)     # config.seed: initial parameters and every batch
OVERRIDES = {"model.cell": "rnn", "model.hidden_size": 64, "train.batch_size": 32,
             "optim.name": "sgd", "optim.learning_rate": 0.1, "optim.clip_mode": "global_norm",
             "optim.clip_norm": 1.0, "task.eval_size": 512}
RECORD_EVERY = 10


def make_config(seq_len: int, steps: int, seed: int = 0):
  return config_lib.override(temporal_order.get_config(), {
      **OVERRIDES, "task.seq_len": seq_len, "train.num_steps": steps, "seed": seed})


def make_step(job: job_lib.Job, weight: float):
  """Jitted (params, opt_state, step) -> (params, opt_state, stats) on training batch ``step``."""
  config = job.config

  def objective(params, batch, step):
    loss, metrics, omega, dl_dh = analyses.loss_and_omega(
        job.task, config.model, params, batch, rng=jax.random.PRNGKey(0), step=step)
    return loss + weight * omega, (metrics, omega, dl_dh)

  @jax.jit
  def step_fn(params, opt_state, step):
    batch = job.task.train_batch(step, job.batch_size)
    (_, (metrics, omega, dl_dh)), grads = jax.value_and_grad(objective, has_aux=True)(
        params, batch, step)
    updates, opt_state = job.tx.update(grads, opt_state, params)
    norms = gradflow.step_norms(dl_dh)[0, 0]
    stats = {**metrics, "omega": omega, "grad_norm": optax.global_norm(grads),
             "ratio_0": norms[0] / norms[-1]}
    return optax.apply_updates(params, updates), opt_state, stats
  return step_fn


def train_arm(config, weight: float) -> dict:
  """Trains one arm; returns its per-RECORD_EVERY stats and the final held-out metrics."""
  job = job_lib.build(config)
  state = job_lib.init_state(job)
  params, opt_state = state.params, state.opt_state
  step_fn, history = make_step(job, weight), []
  for step in range(job.num_steps):
    params, opt_state, stats = step_fn(params, opt_state, jnp.int32(step))
    if (step + 1) % RECORD_EVERY == 0:
      history.append({"step": step + 1, **{k: _round(v) for k, v in stats.items()}})
  final = job_lib.evaluate(job_lib.make_eval_fn(job), params, job.task.eval_batches(256))
  return {"weight": weight, "seed": config.seed, "history": history, "final": final,
          "baseline": job.task.baseline}


def _round(value) -> float:
  return float(f"{float(value):.4g}")


def figure(results, out: pathlib.Path):
  fig = Figure(figsize=(12, 3.6), layout="constrained")
  panels = (("loss", "train loss (cross-entropy)", "linear"),
            ("ratio_0", "||dL/dh_0|| / ||dL/dh_{T-1}||", "log"), ("omega", "Omega", "log"))
  for ax, (key, label, scale) in zip(fig.subplots(1, 3), panels):
    for r in results:
      ax.plot(*_smooth([h["step"] for h in r["history"]], [h[key] for h in r["history"]]),
              color=f"C{WEIGHTS.index(r['weight'])}", lw=1.2,
              label=f"Omega weight {r['weight']:g}" if r["seed"] == SEEDS[0] else None)
    ax.set(xlabel="training step", ylabel=label, yscale=scale)
    ax.grid(True, alpha=0.3)
  fig.axes[0].axhline(results[0]["baseline"]["loss"], color="k", ls="--", lw=1, label="chance")
  fig.axes[0].legend(fontsize="small")
  fig.suptitle(f"tanh RNN on temporal order, SGD + global-norm clipping, with and without "
               f"Omega; seeds {', '.join(map(str, SEEDS))} (running means over 5 records)")
  fig.savefig(out / "omega.png", dpi=90)


def _smooth(steps, values, width: int = 5):
  """(steps, running mean over ``width`` records) at each window's last step."""
  v = np.asarray(values, np.float64)
  if v.size < width:
    return steps, v
  return steps[width - 1:], np.convolve(v, np.ones(width) / width, mode="valid")


def table(results) -> str:
  lines = ["| Omega weight | seed | final eval loss | final eval accuracy | chance accuracy | "
           "ratio_0, first 100 steps | ratio_0, last 100 steps | Omega, last 100 steps |",
           "|---|---|---|---|---|---|---|---|"]
  for r in results:
    h = r["history"]
    mean = lambda key, part: float(np.exp(np.mean(np.log([x[key] for x in part]))))
    head, tail = h[:100 // RECORD_EVERY], h[-100 // RECORD_EVERY:]
    lines.append(f"| {r['weight']:g} | {r['seed']} | {r['final']['eval/loss']:.4f} | "
                 f"{r['final']['eval/accuracy']:.3f} | {r['baseline']['accuracy']:.3f} | "
                 f"{mean('ratio_0', head):.2e} | {mean('ratio_0', tail):.2e} | "
                 f"{mean('omega', tail):.3g} |")
  return "\n".join(lines) + "\n(ratio_0 and Omega: geometric means over the records)"


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--seq_len", type=int, default=50)
  p.add_argument("--steps", type=int, default=1000)
  p.add_argument("--out", type=pathlib.Path, default=HERE)
  args = p.parse_args()
  args.out.mkdir(parents=True, exist_ok=True)
  start = time.time()
  results = [train_arm(make_config(args.seq_len, args.steps, seed), w)
             for w in WEIGHTS for seed in SEEDS]
  figure(results, args.out)
  with open(args.out / "omega_results.json", "w") as f:
    json.dump({"config": config_lib.resolved(make_config(args.seq_len, args.steps)),
               "results": results,
               "wall_time_s": round(time.time() - start)}, f, indent=1)
  print(table(results))
  print(f"wall time {time.time() - start:.0f} s")


if __name__ == "__main__":
  main()

r"""Character-level LM study: bits per character, samples, context use and gradient reach.

    python -m experiments.char_lm.analyze --root=runs/char_lm_cells

Reads every finished run of ``configs/char_lm_cells.py``'s sweep in --root and, from
each run's final checkpoint (``trainer.load(workdir, "latest")``: the final step, no
selection), measures on the held-out text:

* ``bpc``: the run's final held-out bits per character (summary.json);
* context use: bits per character of the prediction made after exactly k characters
  of context (windows of k characters starting from a zero state, the last prediction
  scored; 512 windows at fixed random offsets of the held-out text, the same for every
  run), for k = 1 .. 1000. How far down the curve keeps going is how far back the model
  uses the text;
* gradient reach: ||d l_T / d h_t|| for the loss of the last prediction of 32 held-out
  windows of 300 characters, relative to t = T (``rnnlab.training.analyses.Measurer``
  with a custom loss): how far back the gradient that would train the model reaches;
* the seed article's example, "Hasan used to play football and he was pretty good at it.":
  ||d l / d h_t|| for the loss of predicting "he", at the step that reads the "n" of "Hasan"
  (27 steps earlier) relative to the step just before "he";
* samples at temperatures 0.5 and 1.0 after the prime "def " (seed 0 of each cell).

Writes results.json and figures to --out (default: this folder) and prints the tables
(mean ± std over seeds, ddof=1).
"""

from __future__ import annotations

import json
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
from matplotlib.figure import Figure

from configs.char_lm_cells import CELLS
from experiments.study_report import fmt_mean_std, mean_std, root_and_out, write_json
from rnnlab import sample as sample_lib
from rnnlab.training import analyses, trainer
from rnnlab.training import workdir as workdir_lib

HERE = pathlib.Path(__file__).resolve().parent
DEFAULT_ROOT = "runs/char_lm_cells"
CONTEXTS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
WINDOWS = 512
REACH_T, REACH_B = 300, 32
LAGS = (10, 30, 100, 299)
PRIME, SAMPLE_LEN, TEMPERATURES = "def ", 300, (0.5, 1.0)
HASAN = "Hasan used to play football and he was pretty good at it."


def held_out(job) -> np.ndarray:
  return np.asarray(job.task._held)  # pylint: disable=protected-access (the task's held-out ids)


def _apply(job, params, x):
  return job.model.apply(params, {"x": x}, task=job.task, model_cfg=job.config.model,
                         train=False, rng=None, step=0)["logits"]


def context_curve(job, params) -> dict[int, float]:
  """k -> bits per character of the prediction after exactly k characters of context."""
  ids = held_out(job)
  rng = np.random.default_rng(0)
  last_logits = jax.jit(lambda p, xx: _apply(job, p, xx)[:, -1])
  out = {}
  for k in CONTEXTS:
    starts = rng.integers(0, len(ids) - k - 1, WINDOWS)
    x = np.stack([ids[s:s + k] for s in starts])
    y = np.array([ids[s + k] for s in starts])
    nats = []
    for i in range(0, WINDOWS, 128):  # (128, k, V) logits at a time
      logits = last_logits(params, x[i:i + 128])
      nats.append(np.asarray(optax.softmax_cross_entropy_with_integer_labels(
          logits, y[i:i + 128])))
    out[k] = float(np.concatenate(nats).mean() / np.log(2))
  return out


def gradient_reach(job, params) -> list[float]:
  """||d l_T / d h_t|| / ||d l_T / d h_T|| for t = 0 .. T - 1 (T = REACH_T)."""
  ids = held_out(job)
  starts = np.random.default_rng(1).integers(0, len(ids) - REACH_T - 1, REACH_B)
  batch = {"x": np.stack([ids[s:s + REACH_T] for s in starts]),
           "y": np.stack([ids[s + 1:s + REACH_T + 1] for s in starts])}

  def last_loss(task, outputs, batch):
    del task
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
        outputs["logits"][:, -1], batch["y"][:, -1]))
  norms = analyses.Measurer(job, loss=last_loss)(params, jax.random.PRNGKey(0), 0, batch)
  curve = np.asarray(norms)[0, 0]  # one layer, one direction
  return (curve / curve[-1]).tolist()


def hasan_reach(job, params, chars) -> dict:
  """The gradient of the loss of "he" at the steps that read "Hasan", relative to the step
  that reads the space before "he"."""
  ids = sample_lib.encode(HASAN, chars)
  he = HASAN.index(" he ") + 1          # position of the "h" of "he"
  n_pos = HASAN.index("Hasan") + 4      # the step that reads the "n" of "Hasan"
  batch = {"x": ids[None, :-1], "y": ids[None, 1:]}
  targets = jnp.arange(ids.size - 1)

  def he_loss(task, outputs, batch):  # predicting "h" (read at he - 1) and "e" (at he)
    del task
    nll = optax.softmax_cross_entropy_with_integer_labels(outputs["logits"], batch["y"])
    return jnp.sum(jnp.where((targets == he - 1) | (targets == he), nll, 0.0), axis=-1)
  norms = np.asarray(analyses.Measurer(job, loss=he_loss)(params, jax.random.PRNGKey(0), 0,
                                                          batch))[0, 0]
  return {"lag": he - 1 - n_pos, "ratio": float(norms[n_pos] / norms[he - 1])}


def load_runs(root: str) -> list[dict]:
  runs = []
  for name in sorted(os.listdir(root)):
    workdir = os.path.join(root, name)
    if not os.path.exists(os.path.join(workdir, workdir_lib.SUMMARY)):
      continue
    with open(os.path.join(workdir, workdir_lib.SUMMARY)) as f:
      summary = json.load(f)
    job, step, state = trainer.load(workdir, "latest")
    cfg = job.config
    evals = [r for r in workdir_lib.read_metrics(workdir) if "eval/bpc" in r]
    run = {"name": name, "cell": cfg.model.cell, "hidden_size": cfg.model.hidden_size,
           "seed": cfg.seed, "step": step, "params": sum(a.size for a in
                                                        jax.tree.leaves(state.params)),
           "bpc": summary["final"]["eval/bpc"], "baseline_bpc": job.task.baseline["bpc"],
           "wall_time_s": summary["wall_time_s"],
           "curve": [(r["step"], r["eval/bpc"]) for r in evals],
           "context": context_curve(job, state.params),
           "reach": gradient_reach(job, state.params),
           "hasan": hasan_reach(job, state.params, sample_lib.read_vocab(workdir))}
    if cfg.seed == 0:
      run["samples"] = {str(t): sample_lib.sample(workdir, PRIME, SAMPLE_LEN, temperature=t,
                                                  checkpoint="latest") for t in TEMPERATURES}
    runs.append(run)
    print(f"{name}: bpc {run['bpc']:.3f}", flush=True)
  return runs


def aggregate(runs: list[dict]) -> list[dict]:
  arms = {}
  for r in runs:
    arms.setdefault(r["cell"], []).append(r)
  out = []
  # the config's order first, then any other cell found under the root
  for cell in [*(c for c in CELLS if c in arms), *sorted(set(arms) - set(CELLS))]:
    members = arms[cell]
    reach = np.array([m["reach"] for m in members])
    out.append({
        "cell": cell, "hidden_size": members[0]["hidden_size"], "params": members[0]["params"],
        "seeds": [m["seed"] for m in members], "steps": members[0]["step"],
        "bpc": mean_std([m["bpc"] for m in members]),
        "per_seed_bpc": {m["seed"]: m["bpc"] for m in members},
        "baseline_bpc": members[0]["baseline_bpc"],
        "wall_time_s": mean_std([m["wall_time_s"] for m in members]),
        "context": {k: mean_std([m["context"][k] for m in members]) for k in CONTEXTS},
        "reach": {lag: mean_std(reach[:, REACH_T - 1 - lag]) for lag in LAGS},
        "reach_mean": reach.mean(0).tolist(),
        "hasan": mean_std([m["hasan"]["ratio"] for m in members]),
        "hasan_lag": members[0]["hasan"]["lag"],
        "curve": {"step": [s for s, _ in members[0]["curve"]],
                  "mean": np.mean([[v for _, v in m["curve"]] for m in members], 0).tolist()},
        "samples": next((m["samples"] for m in members if "samples" in m), {})})
  return out


def figure(arms: list[dict], path):
  fig = Figure(figsize=(15, 4.2))
  ax_curve, ax_ctx, ax_reach = fig.subplots(1, 3)
  for arm in arms:
    label = f"{arm['cell']} ({arm['hidden_size']} units)"
    line, = ax_curve.plot(arm["curve"]["step"], arm["curve"]["mean"], marker="o", label=label)
    k = np.array(CONTEXTS)
    m = np.array([arm["context"][c][0] for c in CONTEXTS])
    s = np.array([arm["context"][c][1] for c in CONTEXTS])
    ax_ctx.plot(k, m, marker="o", color=line.get_color(), label=label)
    ax_ctx.fill_between(k, m - s, m + s, alpha=0.2, color=line.get_color())
    lag = np.arange(REACH_T)[::-1]
    ax_reach.plot(lag, arm["reach_mean"], color=line.get_color(), label=label)
  base = arms[0]["baseline_bpc"]
  for a in (ax_curve, ax_ctx):
    a.axhline(base, color="grey", ls=":", label="unigram baseline")
  ax_curve.set(xlabel="training step", ylabel="held-out bits per character",
               title=f"held-out bpc (mean of {len(arms[0]['seeds'])} seeds)")
  ax_ctx.set(xscale="log", xlabel="characters of context k",
             ylabel="bits per character of the next one", title="how much context is used")
  ax_reach.set(yscale="log", xlabel="lag T - t (characters back)",
               ylabel="||dl_T/dh_t|| / ||dl_T/dh_T||", title="how far back the gradient reaches")
  for a in (ax_curve, ax_ctx, ax_reach):
    a.grid(alpha=0.3)
  ax_curve.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def tables(arms: list[dict]) -> str:
  lines = ["| cell | units | parameters | held-out bpc (final) | per seed | wall time |",
           "|---|---|---|---|---|---|"]
  for a in arms:
    seeds = ", ".join(f"{v:.3f}" for v in a["per_seed_bpc"].values())
    lines.append(f"| {a['cell']} | {a['hidden_size']} | {a['params']:,} | "
                 f"{fmt_mean_std(a['bpc'])} | {seeds} | {a['wall_time_s'][0] / 60:.1f} min |")
  lines += ["", "| cell | " + " | ".join(f"k={k}" for k in CONTEXTS) + " |",
            "|" + "---|" * (len(CONTEXTS) + 1)]
  for a in arms:
    lines.append(f"| {a['cell']} | " + " | ".join(f"{a['context'][k][0]:.2f}" for k in CONTEXTS)
                 + " |")
  lines += ["", "| cell | " + " | ".join(f"lag {g}" for g in LAGS) + " |",
            "|" + "---|" * (len(LAGS) + 1)]
  for a in arms:
    lines.append(f"| {a['cell']} | " + " | ".join(
        f"{a['reach'][g][0]:.2e} ± {a['reach'][g][1]:.1e}" for g in LAGS) + " |")
  lines += ["", f"| cell | d l(he) / d h at 'Hasan' ({arms[0]['hasan_lag']} steps back), relative |",
            "|---|---|"]
  for a in arms:
    lines.append(f"| {a['cell']} | {a['hasan'][0]:.2e} ± {a['hasan'][1]:.1e} |")
  return "\n".join(lines)


def main():
  root, out = root_and_out(__doc__, DEFAULT_ROOT, HERE)
  runs = load_runs(root)
  if not runs:
    raise SystemExit(f"No finished runs in {root}.")
  arms = aggregate(runs)
  figure(arms, out / "char_lm.png")
  write_json(str(out / "results.json"), {"runs": runs, "arms": arms})
  print(tables(arms))
  for a in arms:
    for t, text in a["samples"].items():
      print(f"\n--- {a['cell']} seed 0, temperature {t} ---\n{PRIME}{text}")


if __name__ == "__main__":
  main()

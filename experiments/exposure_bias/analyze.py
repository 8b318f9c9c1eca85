r"""Teacher-forced against free-running accuracy for the exposure-bias sweep.

    python -m experiments.exposure_bias.analyze --root=runs/exposure_bias

For every run of ``configs/exposure_bias.py``'s sweep in --root: the final
checkpoint's parameters on the run's held-out set (the task's eval stream, the
same sequences the trainer evaluates), through the model kind's own eval apply
(``kind.apply(train=False)``), which returns both

  * teacher-forced logits: position i sees the reference prefix y_<i
    (their argmax is the teacher-forced prediction), and
  * greedily decoded tokens: position i sees the model's own earlier outputs
    (free running, what the trainer's eval/accuracy scores).

Reported per arm (mean ± std over seeds, std with ddof=1):
  fr_exact, tf_exact            exact match, free running / teacher forced;
  fr_token, tf_token            token accuracy over valid target positions (EOS included);
  after_first_error_fr / _tf    token accuracy at the positions after the first
                                free-running error, of the sequences that have one
                                (free running, and teacher forcing on the same positions);
  by length and by target position (figures).
Also the final eval/loss (teacher-forced NLL) and the schedule eps_i from
metrics.jsonl. Writes results.json and figures to --out (default: this folder).
"""

from __future__ import annotations

import json
import os
import pathlib

import jax
import ml_collections
import numpy as np
from matplotlib.figure import Figure

from experiments.study_report import fmt_mean_std, length_table, mean_std, root_and_out
from rnnlab.sweeps import report
from rnnlab.training import job as job_lib
from rnnlab.training import workdir as workdir_lib
from rnnlab.training.checkpoint import Checkpointer

HERE = pathlib.Path(__file__).resolve().parent
DEFAULT_ROOT = "runs/exposure_bias"
# Fields that fix the network; every run must agree so that one compiled function serves all.
ARCHITECTURE = ("cell", "hidden_size", "num_layers", "embed_size", "attention", "bridge",
                "reverse_source", "decode")


def arm_label(model: dict) -> str:
  if model["train_mode"] != "scheduled_sampling":
    return model["train_mode"]
  return f"scheduled_sampling ({model['ss_schedule']})"


def run_dirs(root: str) -> list[str]:
  return [os.path.join(root, n) for n in sorted(os.listdir(root))
          if os.path.exists(os.path.join(root, n, workdir_lib.SUMMARY))]


def load_config(run_dir: str) -> ml_collections.ConfigDict:
  with open(os.path.join(run_dir, "config.json")) as f:
    return ml_collections.ConfigDict(json.load(f))


def make_predict(job):
  """jitted (params, batch) -> (teacher-forced argmax (B, L), greedy tokens (B, L))."""
  def predict(params, batch):
    out = job.model.apply(params, batch, task=job.task, model_cfg=job.config.model, train=False)
    width = batch["tgt_out"].shape[1]
    return out["logits"].argmax(-1), out["tokens"][:, :width]
  return jax.jit(predict)


def restore_params(job, run_dir: str):
  template = job_lib.init_state(job)
  ckpt = Checkpointer(run_dir, job.config.train.keep_checkpoints, read_only=True)
  try:
    _, state = ckpt.restore(template, move_damaged=False)
  finally:
    ckpt.close()
  return state.params, int(state.step)


def measure(tf_pred, fr_pred, batch) -> dict:
  """The measurements of one run from the two predictions (numpy, see the docstring)."""
  target, tgt_len, src_len = (np.asarray(batch[k]) for k in ("tgt_out", "tgt_len", "src_len"))
  tf_pred, fr_pred = np.asarray(tf_pred), np.asarray(fr_pred)
  valid = np.arange(target.shape[1]) < tgt_len[:, None]
  tf_ok, fr_ok = (tf_pred == target) & valid, (fr_pred == target) & valid
  tf_exact, fr_exact = (tf_ok | ~valid).all(1), (fr_ok | ~valid).all(1)
  wrong = valid & ~fr_ok
  first = np.where(wrong.any(1), wrong.argmax(1), target.shape[1])
  after = valid & (np.arange(target.shape[1]) > first[:, None])
  lengths = sorted(set(src_len.tolist()))
  positions = range(target.shape[1])
  at = lambda ok, mask: float(ok[mask].mean()) if mask.any() else float("nan")
  return {
      "fr_exact": float(fr_exact.mean()), "tf_exact": float(tf_exact.mean()),
      "fr_token": at(fr_ok, valid), "tf_token": at(tf_ok, valid),
      "after_first_error_fr": at(fr_ok, after), "after_first_error_tf": at(tf_ok, after),
      "fr_exact_by_length": {n: float(fr_exact[src_len == n].mean()) for n in lengths},
      "tf_token_by_position": [at(tf_ok[:, i], valid[:, i]) for i in positions],
      "fr_token_by_position": [at(fr_ok[:, i], valid[:, i]) for i in positions]}


def measure_runs(root: str) -> list[dict]:
  dirs = run_dirs(root)
  if not dirs:
    raise SystemExit(f"No finished runs in {root}; run the sweep first (see README.md).")
  job = job_lib.build(load_config(dirs[0]))
  predict = make_predict(job)
  eval_batch = job.config.train.eval_batch_size or job.config.train.batch_size
  out = []
  for run_dir in dirs:
    config = load_config(run_dir)
    for field in ARCHITECTURE:
      assert config.model[field] == job.config.model[field], (run_dir, field)
    assert config.task.to_dict() == job.config.task.to_dict(), run_dir
    run_job = job_lib.build(config)
    params, step = restore_params(run_job, run_dir)
    # The run's own held-out set (it depends on the run's seed), in the trainer's batches.
    batches = run_job.task.eval_batches(eval_batch)
    batch = jax.tree.map(lambda *a: np.concatenate(a), *batches)
    preds = [predict(params, b) for b in batches]
    result = measure(np.concatenate([p[0] for p in preds]), np.concatenate([p[1] for p in preds]),
                     batch)
    with open(os.path.join(run_dir, workdir_lib.SUMMARY)) as f:
      summary = json.load(f)
    # The trainer's own eval of the same checkpoint on the same sequences must agree.
    assert abs(summary["final"]["eval/accuracy"] - result["fr_exact"]) < 1e-3, (
        run_dir, step, summary["final"]["eval/accuracy"], result["fr_exact"])
    result["fr_exact_trainer"] = summary["final"]["eval/accuracy"]
    rows = workdir_lib.read_jsonl(os.path.join(run_dir, workdir_lib.METRICS))
    out.append({"name": os.path.basename(run_dir), "label": arm_label(config.model.to_dict()),
                "seed": config.seed, "step": step, **result,
                "eval_loss": summary["final"]["eval/loss"],
                "wall_time_s": summary["wall_time_s"],
                "eps": [(r["step"], r["train/teacher_forcing_prob"]) for r in rows
                        if "train/teacher_forcing_prob" in r],
                "eval_curve": [(r["step"], r["eval/accuracy"]) for r in rows
                               if "eval/accuracy" in r],
                "train_token_curve": [(r["step"], r["train/token_accuracy"]) for r in rows
                                      if "train/token_accuracy" in r]})
  return out


SCALARS = ("fr_exact", "fr_exact_trainer", "tf_exact", "fr_token", "tf_token", "after_first_error_fr",
           "after_first_error_tf", "eval_loss", "wall_time_s")


def aggregate(runs: list[dict]) -> list[dict]:
  arms = {}
  for r in runs:
    arms.setdefault(r["label"], []).append(r)
  order = ["teacher_forcing", "scheduled_sampling (linear)",
           "scheduled_sampling (inverse_sigmoid)", "free_running"]
  out = []
  for label in sorted(arms, key=lambda l: order.index(l) if l in order else len(order)):
    m = arms[label]
    lengths = sorted(m[0]["fr_exact_by_length"])
    arm = {"label": label, "seeds": [r["seed"] for r in m], "steps": m[0]["step"],
           **{k: mean_std([r[k] for r in m]) for k in SCALARS},
           "gap_token": mean_std([r["tf_token"] - r["fr_token"] for r in m]),
           "fr_exact_by_length": {n: mean_std([r["fr_exact_by_length"][n] for r in m])
                                  for n in lengths}}
    for key in ("tf_token_by_position", "fr_token_by_position"):
      mean, std = report.mean_std([r[key] for r in m])
      arm[key] = {"mean": mean.round(4).tolist(), "std": std.round(4).tolist()}
    for key in ("eps", "eval_curve", "train_token_curve"):
      a = np.array([[v for _, v in r[key]] for r in m])
      arm[key] = {"step": [s for s, _ in m[0][key]], "mean": a.mean(0).round(4).tolist()}
    out.append(arm)
  return out


def _band(ax, x, mean, std, **kw):
  mean, std = np.asarray(mean), np.asarray(std)
  line, = ax.plot(x, mean, **kw)
  ax.fill_between(x, mean - std, mean + std, alpha=0.15, color=line.get_color())
  return line


def figure(arms: list[dict], path):
  fig = Figure(figsize=(15, 4))
  ax_len, ax_pos, ax_train = fig.subplots(1, 3)
  for arm in arms:
    n = sorted(arm["fr_exact_by_length"])
    line = _band(ax_len, n, [arm["fr_exact_by_length"][k][0] for k in n],
                 [arm["fr_exact_by_length"][k][1] for k in n], marker="o", ms=3,
                 label=arm["label"])
    color = line.get_color()
    pos = np.arange(1, len(arm["tf_token_by_position"]["mean"]) + 1)
    _band(ax_pos, pos, arm["tf_token_by_position"]["mean"], arm["tf_token_by_position"]["std"],
          color=color, ls="-")
    _band(ax_pos, pos, arm["fr_token_by_position"]["mean"], arm["fr_token_by_position"]["std"],
          color=color, ls="--")
    ax_train.plot(arm["eps"]["step"], arm["eps"]["mean"], color=color, ls=":")
    ax_train.plot(arm["eval_curve"]["step"], arm["eval_curve"]["mean"], color=color,
                  marker="o", ms=3)
  ax_len.set(xlabel="source length n", ylabel="held-out exact match, free running (greedy)",
             ylim=(-0.03, 1.03), title="free-running exact match by length")
  ax_pos.set(xlabel="target position i (1 = first output)", ylabel="token accuracy at i",
             ylim=(-0.03, 1.03),
             title="teacher forced (solid) vs free running (dashed)")
  ax_train.set(xlabel="training step", ylim=(-0.03, 1.03),
               title="eps_i (dotted), held-out exact match (dots)")
  for a in (ax_len, ax_pos, ax_train):
    a.grid(alpha=0.3)
  ax_len.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def table(arms: list[dict]) -> str:
  head = ["arm", "exact, free running", "exact, teacher forced", "token acc., teacher forced",
          "token acc., free running", "gap (TF - FR)", "after 1st error, FR",
          "same positions, TF", "eval loss (TF NLL)", "wall time"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for a in arms:
    cells = [fmt_mean_std(a[k]) for k in ("fr_exact", "tf_exact", "tf_token", "fr_token", "gap_token",
                                  "after_first_error_fr", "after_first_error_tf")]
    lines.append(f"| {a['label']} | " + " | ".join(cells) +
                 f" | {a['eval_loss'][0]:.4f} ± {a['eval_loss'][1]:.4f} | "
                 f"{a['wall_time_s'][0]:.0f} s |")
  return ("\n".join(lines) + "\n\nFree-running exact match per source length:\n\n"
          + length_table(arms, "fr_exact_by_length"))


def main():
  root, out = root_and_out(__doc__, DEFAULT_ROOT, HERE)
  runs = measure_runs(root)
  arms = aggregate(runs)
  figure(arms, out / "tf_vs_free_running.png")
  with open(out / "results.json", "w") as f:
    json.dump({"root": root, "runs": len(runs), "arms": arms,
               "per_run": [{k: r[k] for k in ("name", "seed", *SCALARS)} for r in runs]},
              f, indent=1)
  print(f"{len(runs)} runs in {root}\n")
  print(table(arms))


if __name__ == "__main__":
  main()

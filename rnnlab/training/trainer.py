"""Training and evaluation of one run, start to finish.

    summary = train_and_evaluate(config, workdir)

1. ``job.build(config)``: validate, then task, model, optimizer, plugins.
2. ``job.init_state``: the step-0 state (before the workdir is touched, so a bad
   value leaves no trace), then ``workdir.prepare``: config.json, or a refusal
   when the workdir holds another run.
3. Restore the newest checkpoint if there is one (a rerun resumes).
4. ``periodic.train_session``: the jitted step and the periodic actions (log,
   evaluate, checkpoint, stop on NaN, plugins) until the last step.
5. ``summarize``: final and best held-out metric against the baseline, to
   summary.json and the console.

The workdir's files are listed in ``rnnlab.training.workdir``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from typing import Callable, Sequence

from rnnlab.errors import CheckpointError, InvalidConfigError, NonFiniteError, RunError
from rnnlab.training import checkpoint
from rnnlab.training import config as config_lib
from rnnlab.training import distributed
from rnnlab.training import job as job_lib
from rnnlab.training import periodic
from rnnlab.training import workdir as workdir_lib
from rnnlab.training.plugins import Plugin


def restore(run: periodic.Run, state):
  """The run's newest intact checkpoint in the structure of ``state``, or ``state`` if there is none.

  Damaged checkpoints are reported and moved aside (``checkpoint.Checkpointer.restore``).
  """
  newest = run.ckpt.latest_step()
  step, state = run.ckpt.restore(state, console=run.console)
  if step is not None:
    intact = "" if step == newest else ", the newest intact one"
    run.console(f"Resuming from the checkpoint of step {step}{intact} in {run.ckpt.directory}.")
  return state


BASELINE_MARGIN = 0.05


def beats_baseline(value: float, baseline: float, higher_is_better: bool) -> bool:
  """Whether ``value`` is better than the trivial ``baseline`` by a margin: by at least
  ``BASELINE_MARGIN`` (5%) of the gap between the baseline and a perfect score (0 for a
  loss, 1 for an accuracy). Copy's chance accuracy is 0.125: 0.1276 does not beat it,
  0.17 does; adding's baseline MSE is 1/6: 0.158 beats it, 0.16 does not."""
  if higher_is_better:
    return value > baseline + BASELINE_MARGIN * (1.0 - baseline)
  return value < (1.0 - BASELINE_MARGIN) * baseline


def summarize(job: job_lib.Job, history: list[dict], wall: float) -> dict:
  """Final and best held-out primary metric against the task's baseline."""
  task = job.task
  key = f"eval/{task.primary_metric}"
  evals = [r for r in history if key in r]
  if not evals:
    raise RunError(f"metrics.jsonl holds no {key}; the run cannot be summarized. Start it "
                   "again with --overwrite.")
  best = periodic.best_row(evals, key, task.higher_is_better)
  final = evals[-1]
  base = task.baseline[task.primary_metric]
  beats = beats_baseline(final[key], base, task.higher_is_better)
  return {"task": task.describe(), "steps": final["step"], "primary_metric": key,
          "higher_is_better": task.higher_is_better, "baseline": base,
          "final": {k: v for k, v in final.items() if k.startswith("eval/")},
          "best": {"step": best["step"], key: best[key],
                   "checkpoint": f"{workdir_lib.CHECKPOINTS_BEST}/{best['step']}"},
          "beats_baseline": bool(beats), "baseline_margin": BASELINE_MARGIN,
          "wall_time_s": wall}


def summary_line(summary: dict) -> str:
  key = summary["primary_metric"]
  verdict = "beats" if summary["beats_baseline"] else "does NOT beat"  # by the margin
  return (f"Done: {summary['task']}. After {summary['steps']} steps {key} = "
          f"{summary['final'][key]:.4g} (best {summary['best'][key]:.4g} at step "
          f"{summary['best']['step']}), baseline {summary['baseline']:.4g}: {verdict} the "
          f"baseline. Wall time {periodic.fmt_duration(summary['wall_time_s'])}.")


def finish(run: periodic.Run, **extra) -> dict:
  """Writes the (closed) run's summary.json and its last console line; returns the summary.

  Across processes only process 0 writes; every process returns the summary.
  """
  summary = {**summarize(run.job, run.writer.history, run.wall), **extra}
  if distributed.is_primary():
    workdir_lib.write_json(os.path.join(run.workdir, workdir_lib.SUMMARY), summary)
  run.console(summary_line(summary))
  run.console(outputs_line(run.workdir))
  return summary


def outputs_line(workdir: str) -> str:
  """Where a finished run's outputs are, and the commands that show them."""
  install = ("" if importlib.util.find_spec("tensorboard") is not None else
             " (install it first: pip install 'rnnlab[tensorboard]')")
  return (f"Outputs in {workdir}: figures: python -m rnnlab.plots {workdir} ; "
          f"TensorBoard: tensorboard --logdir {workdir}{install}")


@contextlib.contextmanager
def close_on_exit(*runs: periodic.Run):
  """Closes ``runs`` however the block ends; an error while closing is raised only if the
  block itself succeeded (the first error is the one the user sees)."""
  try:
    yield
  except BaseException:
    for run in runs:
      with contextlib.suppress(RunError):
        run.close()
    raise
  for run in runs:
    run.close()


def load(workdir: str, which="best"):
  """``(job, step, state)`` of a run from its folder: the training state of its best
  evaluation (``which="best"``), of its newest checkpoint (``"latest"``) or of a step
  (an int), built from the run's config.json and verified. For sampling and analysis::

      job, step, state = trainer.load("runs/default")
      outputs = job.model.apply(state.params, batch, task=job.task, model_cfg=job.config.model,
                                train=False, rng=None, step=step)

  Raises CheckpointError (missing, damaged, or of another model) or InvalidConfigError.
  """
  if which not in ("best", "latest") and not isinstance(which, int):
    raise ValueError(f"which must be 'best', 'latest' or a step number; got {which!r}.")
  try:
    values = workdir_lib.read_config(workdir)
  except ValueError as err:
    raise InvalidConfigError(f"{workdir}/{workdir_lib.CONFIG} cannot be read: {err}.") from err
  if values is None:
    raise CheckpointError(f"{workdir} holds no run ({workdir_lib.CONFIG} is missing).")
  job = job_lib.build(config_lib.from_resolved(values))
  template = job_lib.init_state(job)
  folder = workdir_lib.CHECKPOINTS_BEST if which == "best" else workdir_lib.CHECKPOINTS
  directory = os.path.join(workdir, folder)
  none = CheckpointError(f"There is no checkpoint in {directory}" + (
      " (runs written before rnnlab kept the best evaluation's checkpoint have none; use "
      "which='latest')." if which == "best" else "."))
  if not os.path.isdir(directory):
    raise none
  ckpt = checkpoint.Checkpointer(workdir, 1, read_only=True, folder=folder)
  try:
    steps = ckpt.all_steps()
    if not steps:
      raise none
    step = which if isinstance(which, int) else steps[-1]
    return job, step, ckpt.restore_step(step, template)
  finally:
    ckpt.close()


def train_and_evaluate(config, workdir: str, *, overwrite: bool = False,
                       plugins: Sequence[Plugin] = (),
                       console: Callable[[str], None] = print) -> dict:
  """Trains ``config`` in ``workdir`` (resuming from its last checkpoint); returns the summary.

  Raises ``rnnlab.errors.RunError``: InvalidConfigError (also a ValueError) for
  bad config values, before anything is compiled; ConfigMismatchError for a
  workdir holding another run; CheckpointError for an unusable checkpoint;
  NonFiniteError for a NaN/Inf loss or gradient; DataNotFoundError for missing
  data. ``plugins`` join the ones the config switches on (``rnnlab.training.plugins``).

  Across processes (``rnnlab.training.distributed``) every process calls this; process 0
  alone writes the run folder and the console.
  """
  primary = distributed.is_primary()
  if primary:
    workdir_lib.check_writable(workdir)
  job = job_lib.build(config, plugins)
  state = job_lib.init_state(job)
  if primary:
    workdir_lib.prepare(config, workdir, overwrite, lambda: checkpoint.recorded(workdir),
                        console)
    workdir_lib.save_artifacts(job.task, workdir)
  distributed.barrier("rnnlab: run folder prepared")
  if not primary:
    console = lambda line: None
  run = periodic.Run(job, workdir, console)
  with close_on_exit(run):  # waits for the last checkpoint: summary.json then marks a complete run
    state = restore(run, state)
    periodic.train_session([run], periodic.Single(job), state, int(state.step))
  if run.failed:
    raise NonFiniteError(run.failed)
  return finish(run)

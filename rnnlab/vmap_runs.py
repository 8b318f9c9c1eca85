"""Many runs in one compiled program: ``jax.vmap`` over runs that differ only in values.

    summaries = vmap_runs.train_runs(configs, workdirs)

Runs whose configs differ only in fields that change no shape and no code path
(``VMAPPABLE``: the seed, learning rate, clip threshold and forget-gate bias)
share one jitted training step, vmapped over a leading run axis of the
training state: N runs cost one compilation and their small per-run matmuls
become one larger batched matmul. Each run still gets its own workdir, exactly
as a single run writes it (config.json, metrics.jsonl, TensorBoard events,
checkpoints of *its* state, summary.json), so it can be aggregated, inspected
and even resumed on its own with ``launch.py``.

Why this is exact: parameters are initialised run by run with the run's own
config (so forget_bias and the seed enter as they do in a single run) and then
stacked; the learning rate and clip threshold already live as arrays in
``opt_state.hyperparams`` (``rnnlab.optim``); each run's data stream is
``task.batch_at(PRNGKey(seed), step)``, with the key a vmapped argument. Each
run therefore sees the same data and the same computation as alone; only the
order in which XLA adds up a batched reduction (the global gradient norm, a
batched matmul) may differ, so values agree to float32 rounding (last one or
two bits; tests/test_vmap_runs.py checks 1e-5 relative on every logged metric),
and sometimes bitwise. A run that is chaotic (exploding, unclipped) can amplify
such rounding, exactly as it amplifies a change of BLAS or thread count.

A run whose loss or gradient turns NaN/Inf is recorded as failed (failed.json,
as a failing process in a sweep is) at the next periodic action; the others go
on (vmapped lanes do not mix). Used by ``launch.py --sweep --vmap=N``.
"""

from __future__ import annotations

import copy
import os
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rnnlab import config_utils, metrics_io, sweep, train
from rnnlab.checkpoint import Checkpointer
from rnnlab.errors import InvalidConfigError, NonFiniteError

# Fields whose values may differ between the runs of one program.
VMAPPABLE = frozenset({"seed", "optim.learning_rate", "optim.clip_norm",
                       "model.cell_options.forget_bias"})
FAILED = sweep.FAILED  # the file a failed run leaves, as a failed sweep process does


def static_part(config) -> dict:
  """The resolved config without the ``VMAPPABLE`` fields: equal for runs that can share."""
  flat = config_utils.flatten(config_utils.resolved(config))
  return {k: v for k, v in flat.items() if k not in VMAPPABLE}


def can_vmap(config) -> str | None:
  """None when runs of ``config`` can be vmapped, else the reason they cannot."""
  if config.get("gradflow", {}).get("every", 0):
    return "gradflow.every > 0 (the gradient-flow hook measures one run at a time)"
  return None


def with_overrides(config, overrides: dict):
  """A copy of ``config`` with dotted ``overrides`` set (the original is untouched)."""
  return config_utils.override(copy.deepcopy(config), overrides)


def stack(trees: Sequence):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack(tree, i: int):
  return jax.tree.map(lambda a: a[i], tree)


def _check_compatible(jobs: Sequence[train.Job]):
  first = static_part(jobs[0].config)
  for job in jobs[1:]:
    other = static_part(job.config)
    changes = config_utils.diff(first, other)
    if changes:
      raise InvalidConfigError(
          "Runs vmapped into one program may differ only in "
          f"{sorted(VMAPPABLE)}; these differ too: {'; '.join(changes)}.")
  reason = can_vmap(jobs[0].config)
  if reason:
    raise InvalidConfigError(f"These runs cannot be vmapped: {reason}.")
  if not jobs[0].task.on_device:
    raise InvalidConfigError(
        f"Task {jobs[0].task.name!r} is fed from the host; only on-device tasks "
        "(synthetic and seq2seq) can be vmapped. Run them as separate processes.")


class _Run:
  """The files of one run of the group: workdir, metrics writer, checkpoints, console."""

  def __init__(self, job: train.Job, workdir: str, state: train.TrainState):
    self.job, self.workdir = job, workdir
    self.ckpt = Checkpointer(workdir, job.config.train.keep_checkpoints)
    self.state = state
    self.writer = None
    self.failed = None  # the error message once the run failed
    self.wall = 0.0
    self._log = open(os.path.join(workdir, "log.txt"), "a")

  def console(self, line: str):
    self._log.write(line + "\n")
    self._log.flush()

  def fail(self, message: str):
    self.failed = message
    self.console(message)
    metrics_io.write_json(os.path.join(self.workdir, FAILED),
                          {"returncode": None, "error": message, "log_tail": message})

  def close(self):
    if self.writer is not None:
      self.writer.close()
    self.ckpt.close()
    self._log.close()


def make_step_fn(job: train.Job) -> Callable:
  """jit(vmap(train_step)) over (stacked state, per-run stream keys)."""
  def one(state, key):
    return train.train_step(job, state, job.task.batch_at(key, state.step, job.batch_size))
  return jax.jit(jax.vmap(one))


def make_eval_fn(job: train.Job) -> Callable:
  """jit(vmap(eval)) over (stacked params, stacked held-out batch)."""
  def one(params, batch):
    return train._loss(job, params, batch, jax.random.PRNGKey(0), 0, False)[1]  # pylint: disable=protected-access
  return jax.jit(jax.vmap(one))


def _stack_eval_batches(runs) -> tuple[list, list[int]]:
  """The held-out set of every run, stacked batch by batch (once per group), and batch sizes."""
  cfg = runs[0].job.config.train
  per_run = [r.job.task.eval_batches(cfg.eval_batch_size or cfg.batch_size) for r in runs]
  batches = [stack([batches[b] for batches in per_run]) for b in range(len(per_run[0]))]
  return batches, [len(jax.tree.leaves(b)[0]) for b in per_run[0]]


def _evaluate(eval_fn, params, batches: list, sizes: list[int]) -> list[dict[str, float]]:
  """``eval/<metric>`` per run, each the length-weighted mean over its held-out batches."""
  outs = [jax.device_get(eval_fn(params, batch)) for batch in batches]
  total = sum(sizes)
  runs = len(jax.tree.leaves(outs[0])[0])
  return [{f"eval/{k}": float(sum(o[k][i] * n for o, n in zip(outs, sizes)) / total)
           for k in outs[0]} for i in range(runs)]


def train_runs(configs: Sequence, workdirs: Sequence[str], *,
               console: Callable[[str], None] = print) -> list[dict | None]:
  """Trains ``configs[i]`` in ``workdirs[i]``, all in one vmapped program.

  Returns each run's summary (as ``train.train_and_evaluate`` does), or None
  for a run that failed (its failed.json says why). Raises InvalidConfigError
  before anything is written when the configs cannot share one program.
  Interrupted runs resume from their checkpoints; runs at different steps are
  trained as separate groups, one after the other.
  """
  if len(configs) != len(workdirs) or not configs:
    raise ValueError("train_runs needs one workdir per config, and at least one run.")
  jobs = [train.build(c) for c in configs]
  _check_compatible(jobs)
  states = [train._initial_state(job) for job in jobs]  # pylint: disable=protected-access
  runs = []
  for job, workdir, state in zip(jobs, workdirs, states):
    config_utils.prepare_workdir(job.config, workdir)
    train._save_artifacts(job.task, workdir)  # pylint: disable=protected-access
    runs.append(_Run(job, workdir, state))
  try:
    for run in runs:
      if os.path.exists(os.path.join(run.workdir, FAILED)):
        os.remove(os.path.join(run.workdir, FAILED))  # a retry
      run.state = train._restore(run.state, run.ckpt, run.console)  # pylint: disable=protected-access
    by_step: dict[int, list[_Run]] = {}
    for run in runs:
      by_step.setdefault(int(run.state.step), []).append(run)
    for start, members in sorted(by_step.items()):
      _train_group(members, start, console)
    summaries = [None if run.failed else _finish(run, len(runs)) for run in runs]
  finally:
    for run in runs:
      run.close()
  return summaries


def _finish(run: _Run, group_size: int) -> dict:
  summary = train.summarize(run.job, run.writer.history, run.wall)
  summary["vmapped_runs"] = group_size
  metrics_io.write_json(os.path.join(run.workdir, metrics_io.SUMMARY), summary)
  run.console(train.summary_line(summary))
  return summary


def _train_group(runs: list[_Run], start: int, console):
  job = runs[0].job
  total, cfg = job.num_steps, job.config.train
  for run in runs:
    run.writer = metrics_io.MetricsWriter(run.workdir, start)
  clock = train._Clock(start, max(train._last_wall(r.writer.history) for r in runs))  # pylint: disable=protected-access
  console(f"{len(runs)} vmapped runs of {job.task.describe()}; model {job.config.model.kind} "
          f"({job.config.model.get('cell', '')}) with {train.num_params(runs[0].state.params):,} "
          f"parameters each; steps {start}->{total}.")
  state = stack([r.state for r in runs])
  keys = jnp.stack([r.job.task.stream_key for r in runs])
  step_fn, eval_fn = make_step_fn(job), make_eval_fn(job)
  eval_data = None
  for step in range(start + 1, total + 1):
    state, stats = step_fn(state, keys)
    log = train.itstime(step, cfg.log_every, total, first=True)
    do_eval = train.itstime(step, cfg.eval_every, total)
    save = train.itstime(step, cfg.checkpoint_every, total)
    if not (log or do_eval or save):
      continue
    _record_failures(runs, state)
    rows = [{} for _ in runs]
    if log:
      sums, stats_h = jax.device_get(state.sums), jax.device_get(stats)
      for i, run in enumerate(runs):
        rows[i].update(**train.window_means(unstack(sums, i)), **unstack(stats_h, i),
                       **train.baseline_metrics(run.job.task))
      state = state.replace(sums=jax.tree.map(jnp.zeros_like, state.sums))
    if do_eval:
      if eval_data is None:
        eval_data = _stack_eval_batches(runs)
      for row, ev in zip(rows, _evaluate(eval_fn, state.params, *eval_data)):
        row.update(ev)
    timing = clock.tick(step)
    speed = clock.speed(step, total, timing["perf/steps_per_sec"])
    for i, run in enumerate(runs):
      if run.failed:
        continue
      rows[i].update(timing)
      run.writer.write(step, rows[i])
      run.console(train.progress_line(step, total, rows[i], run.job.task, speed))
      if save:
        run.ckpt.save(step, unstack(state, i))
    active = [r for r in runs if not r.failed]
    key = f"eval/{job.task.primary_metric}"
    values = [rows[i][key] for i, r in enumerate(runs) if not r.failed and key in rows[i]]
    metric = (f" | {key} min {min(values):.4g} median {float(np.median(values)):.4g} "
              f"max {max(values):.4g}" if values else "")
    console(f"step {step}/{total} | {len(active)}/{len(runs)} runs active{metric} | {speed}")
    if not active:
      break
  for run in runs:
    run.wall = clock.wall()


def _record_failures(runs: list[_Run], state):
  bad = jax.device_get(state.nonfinite_step)
  for i, run in enumerate(runs):
    if bad[i] >= 0 and not run.failed:
      run.fail(f"{NonFiniteError.__name__}: Training stopped: the loss or a gradient was "
               f"NaN/Inf at step {int(bad[i])} (vmapped run {os.path.basename(run.workdir)}). "
               "Nothing from that step on was logged or saved; the last good checkpoint is "
               f"{run.ckpt.describe_latest()}. Lower optim.learning_rate or clip the "
               "gradients.")

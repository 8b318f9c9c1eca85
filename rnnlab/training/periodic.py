"""The periodic actions of training, one engine for a single run and for N vmapped runs.

After step s (1-based) of T, ``itstime`` decides each action:

    log        every train.log_every steps, at step 1, at every evaluation and at T:
               window means of the train metrics, this step's gradient statistics,
               the baselines (one console line each, always with the train loss)
    evaluate   every train.eval_every steps and at T: the task's held-out set
    checkpoint every train.checkpoint_every steps and at T; and at every evaluation that
               beats the run's best so far, into checkpoints_best/ (one kept)
    plugins    every plugin.every steps and at T (``rnnlab.training.plugins``)

Before any of them the first non-finite step, if any, stops the run: nothing
from that step on is logged as progress nor saved. The rows go to each run's
metrics writer before its checkpoint, so a resumed run misses no row.

The state is either one run's (``Single``) or N runs' stacked on a leading axis
(``rnnlab.training.vmapped.Stacked``); a layout says how to read run i's part
and how to evaluate. A run that turns NaN/Inf is marked failed (the others of
a group go on); the trainer then raises, a vmapped group records failed.json.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rnnlab.errors import NonFiniteError
from rnnlab.training import config as config_lib
from rnnlab.training import job as job_lib
from rnnlab.training import sharding
from rnnlab.training import tracking
from rnnlab.training import workdir as workdir_lib
from rnnlab.training.checkpoint import Checkpointer


def itstime(step: int, every: int, total: int, first: bool = False) -> bool:
  """Whether a periodic action runs after ``step`` (1-based) of ``total``.

  True at multiples of ``every`` (0 means never), at the last step, and at
  step 1 when ``first``.
  """
  return (step == total or (every > 0 and step % every == 0)
          or (first and step == 1))


def fmt_duration(seconds: float) -> str:
  """1h05m above an hour, else 4m07s."""
  seconds = int(seconds)
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
      f"{seconds // 60}m{seconds % 60:02d}s"


def _due(step: int, cfg, total: int, plugins) -> tuple[bool, bool, bool, bool]:
  """(log, evaluate, checkpoint, plugins) after ``step``; an evaluation always logs too,
  so every console line carries the train loss."""
  do_eval = itstime(step, cfg.eval_every, total)
  return (itstime(step, cfg.log_every, total, first=True) or do_eval, do_eval,
          itstime(step, cfg.checkpoint_every, total), bool(plugins_due(step, plugins, total)))


def plugins_due(step: int, plugins, total: int) -> list:
  """The plugins whose ``act`` runs after ``step``."""
  return [p for p in plugins if itstime(step, p.every, total)]


class Clock:
  """Training time apart from the periodic actions, steps/s and an ETA that includes them.

  Steps/s counts only the time spent stepping (``pause`` at the start of the actions,
  ``resume`` after them), so an evaluation or a checkpoint does not read as slow
  training. The ETA adds, for the action steps still to come, the mean time the same
  kind of action step (same actions due) has taken so far in this session.
  """

  def __init__(self, step: int, wall_before: float, total: int, due: Callable[[int], tuple]):
    self.start = self.mark = time.time()
    self.wall_before, self.total = wall_before, total
    self.first_step, self.last_step, self.stepping = step, step, 0.0
    self.due = due
    self.ahead: dict[tuple, int] = {}  # action kind -> action steps still to come
    for s in range(step + 1, total + 1):
      kind = due(s)
      if any(kind):
        self.ahead[kind] = self.ahead.get(kind, 0) + 1
    self.spent: dict[tuple, list[float]] = {}  # action kind -> seconds each took

  def pause(self, step: int):
    """Steps up to ``step`` are done, its actions begin: the time since the last
    ``resume`` was training."""
    now = time.time()
    self.stepping += now - self.mark
    self.mark = now
    kind = self.due(step)
    self.ahead[kind] = self.ahead.get(kind, 1) - 1

  def resume(self, step: int):
    """The actions of ``step`` are done: the time since ``pause`` was theirs."""
    now = time.time()
    self.spent.setdefault(self.due(step), []).append(now - self.mark)
    self.mark = now

  def tick(self, step: int) -> dict[str, float]:
    """``perf/steps_per_sec`` (training time only) since the last tick, ``perf/wall_time_s``."""
    rate = (step - self.last_step) / max(self.stepping, 1e-9)
    self.last_step, self.stepping = step, 0.0
    return {"perf/steps_per_sec": rate, "perf/wall_time_s": self.wall()}

  def eta(self, step: int, rate: float) -> float:
    """Seconds left: the steps at ``rate`` plus the action steps still to come."""
    left = (self.total - step) / max(rate, 1e-9)
    for kind, count in self.ahead.items():
      took = self.spent.get(kind, [])[1:] or self.spent.get(kind, [])  # the first compiles
      if count > 0 and took:
        left += count * float(np.mean(took))
    return left

  def speed(self, step: int, rate: float) -> str:
    """"12.3 steps/s, ETA 1m05s"; the session's first interval includes compilation."""
    if self.first_step is not None:
      first, self.first_step = self.first_step, None
      return f"{step - first} step(s) in {time.time() - self.start:.1f}s incl. compilation"
    return f"{rate:.1f} steps/s, ETA {fmt_duration(self.eta(step, rate))}"

  def wall(self) -> float:
    return self.wall_before + time.time() - self.start


# --- rows and messages ---------------------------------------------------------------

def baseline_metrics(task) -> dict[str, float]:
  """``task/baseline`` (the loss) and ``task/baseline_<metric>`` for the others."""
  return {("task/baseline" if k == "loss" else f"task/baseline_{k}"): float(v)
          for k, v in task.baseline.items()}


def window_means(sums: dict) -> dict[str, float]:
  """Means of the train metrics since the last log from ``TrainState.sums`` (on the host)."""
  count = max(float(sums["count"]), 1.0)
  return {k: float(v) if k.endswith(job_lib.WINDOW_MAX) else float(v) / count
          for k, v in sums.items() if k != "count"}


def progress_line(step: int, total: int, row: dict, task, speed: str) -> str:
  """One console line: step, losses, primary metric, gradient norm, then ``speed`` (the
  baselines are in the session's first line)."""
  names = dict.fromkeys(["train/loss", "eval/loss", f"eval/{task.primary_metric}", "grad/norm"])
  parts = [f"step {step}/{total}"] + [f"{n} {row[n]:.4g}" for n in names if n in row]
  return " | ".join(parts + [speed])


def better(value: float, than: float | None, higher_is_better: bool) -> bool:
  """Whether ``value`` beats ``than`` strictly (anything beats None)."""
  return than is None or (value > than if higher_is_better else value < than)


def best_row(rows: Sequence[dict], key: str, higher_is_better: bool) -> dict | None:
  """The first row holding the best ``key`` (ties go to the earliest): the run's best
  evaluation, for checkpoints_best/ and summary.json alike."""
  best = None
  for row in rows:
    if key in row and better(row[key], None if best is None else best[key], higher_is_better):
      best = row
  return best


def nonfinite_message(step: int, ckpt: Checkpointer, run: str | None = None) -> str:
  """What a NaN/Inf at ``step`` means for the user and what to do."""
  where = f" (vmapped run {run})" if run else ""
  return (f"Training stopped: the loss or a gradient was NaN/Inf at step {step}{where}. "
          f"Nothing from that step on was logged as progress or saved; {ckpt.describe_latest()}. "
          "Lower optim.learning_rate or clip the gradients "
          "(optim.clip_mode, optim.clip_norm), then start a fresh workdir (or --overwrite).")


# --- one run's outputs -----------------------------------------------------------------

@dataclasses.dataclass
class Run:
  """One run of a session: its job, workdir, checkpoints, metrics and console.

  ``failed`` holds the NaN message once the run stopped; with ``record_failure``
  it is also written to failed.json (runs of a vmapped group, whose process
  goes on).
  """
  job: job_lib.Job
  workdir: str
  console: Callable[[str], None]
  record_failure: bool = False
  ckpt: Checkpointer = None
  best: Checkpointer = None
  writer: workdir_lib.MetricsWriter = None
  failed: str | None = None
  wall: float = 0.0
  best_value: float | None = None

  def __post_init__(self):
    record = config_lib.resolved(self.job.config)
    self.ckpt = Checkpointer(self.workdir, self.job.config.train.keep_checkpoints,
                             record=record)
    self.best = Checkpointer(self.workdir, 1, record=record,
                             folder=workdir_lib.CHECKPOINTS_BEST)

  def improves(self, row: dict) -> bool:
    """Whether ``row``'s primary held-out metric beats every earlier one (ties do not: the
    best step is the first to reach the best value, as in summary.json)."""
    key, task = f"eval/{self.job.task.primary_metric}", self.job.task
    if key not in row or not better(row[key], self.best_value, task.higher_is_better):
      return False
    self.best_value = row[key]
    return True

  @property
  def name(self) -> str:
    return os.path.basename(os.path.normpath(self.workdir))

  def fail(self, message: str):
    self.failed = message
    if self.record_failure:
      line = f"{NonFiniteError.__name__}: {message}"
      self.console(line)
      workdir_lib.write_json(os.path.join(self.workdir, workdir_lib.FAILED),
                             {"returncode": None, "error": line, "log_tail": line})

  def close(self):
    """Closes the metrics writer and waits for the last checkpoint (once; again is a no-op).

    Raises StorageError if that checkpoint could not be written.
    """
    if self.ckpt is None:
      return
    (ckpt, best), self.ckpt, self.best = (self.ckpt, self.best), None, None
    if self.writer is not None:
      self.writer.close()
    try:
      ckpt.close()
    finally:
      best.close()


class Single:
  """The layout of one run's state: no run axis."""

  def __init__(self, job: job_lib.Job):
    self.job = job
    self.eval_fn = job_lib.make_eval_fn(job)
    self._eval = None

  @staticmethod
  def part(tree, i: int):
    del i
    return tree

  def step_fn(self) -> Callable:
    return job_lib.make_step_fn(self.job)

  def feed(self, start: int):
    return job_lib.host_batches(self.job, start)

  def evaluate(self, runs: Sequence[Run], params) -> list[dict]:
    if self._eval is None:
      cfg = self.job.config.train
      self._eval = [self.job.placement.put_batch(b) for b in
                    self.job.task.eval_batches(cfg.eval_batch_size or cfg.batch_size)]
    return [job_lib.evaluate(self.eval_fn, params, self._eval)]

  def intro(self, runs: Sequence[Run], state, start: int) -> str:
    job = self.job
    return (f"{job.task.describe()}; model {job.config.model.kind} "
            f"({job.config.model.get('cell', '')}) with {job_lib.num_params(state.params):,} "
            f"parameters; steps {start}->{job.num_steps}; on {job.placement.describe()}.")


# --- the engine ------------------------------------------------------------------------

class PeriodicActions:
  """``actions(state, stats, step) -> state``: everything that is due after ``step``.

  Args:
    runs: the session's runs (one, or the N of a vmapped group, in lane order).
    layout: ``Single`` or ``vmapped.Stacked``: ``part(tree, i)``, ``evaluate``.
    clock: the session's ``Clock``.
    group_console: for N > 1, where the one-line summary of the group goes.
  """

  def __init__(self, runs: Sequence[Run], layout, clock: Clock,
               group_console: Callable[[str], None] | None = None):
    self.runs, self.layout, self.clock, self.group_console = runs, layout, clock, group_console
    self.job = runs[0].job

  def __call__(self, state, stats, step: int):
    cfg, total = self.job.config.train, self.job.num_steps
    log, do_eval, save, _ = _due(step, cfg, total, self.job.plugins)
    acting = plugins_due(step, self.job.plugins, total)
    if not (log or do_eval or save or acting):
      return state
    state.step.block_until_ready()
    self.clock.pause(step)
    for run in self.runs:
      run.ckpt.check()  # a background save that failed stops the session here
      run.best.check()
    self._check_finite(state)
    rows = [{} for _ in self.runs]
    if log:
      sums, host_stats = sharding.host((state.sums, stats))
      for i, (run, row) in enumerate(zip(self.runs, rows)):
        row.update(**window_means(self.layout.part(sums, i)), **self.layout.part(host_stats, i),
                   **baseline_metrics(run.job.task))
      state = state.replace(sums=jax.tree.map(jnp.zeros_like, state.sums))
    if do_eval:
      for row, metrics in zip(rows, self.layout.evaluate(self.runs, state.params)):
        row.update(metrics)
    if log:
      self._write(rows, step)
    for i, (run, row) in enumerate(zip(self.runs, rows)):
      if save and not run.failed:
        run.ckpt.save(step, self.layout.part(state, i))
      if do_eval and not run.failed and run.improves(row):
        run.best.save(step, self.layout.part(state, i))
    if not self.runs[0].failed:  # plugins refuse vmapping: one run here
      for plugin in acting:
        plugin.act(step, state)
    self.clock.resume(step)
    return state

  def _check_finite(self, state):
    bad = np.atleast_1d(sharding.host(state.nonfinite_step))
    for run, first_bad in zip(self.runs, bad):
      if first_bad >= 0 and not run.failed:
        run.fail(nonfinite_message(int(first_bad), run.ckpt,
                                   run.name if len(self.runs) > 1 else None))

  def _write(self, rows: list[dict], step: int):
    total = self.job.num_steps
    timing = self.clock.tick(step)
    speed = self.clock.speed(step, timing["perf/steps_per_sec"])
    for run, row in zip(self.runs, rows):
      if not run.failed:
        row.update(timing)
        run.writer.write(step, row)
        run.console(progress_line(step, total, row, run.job.task, speed))
    if self.group_console is not None:
      active = [row for run, row in zip(self.runs, rows) if not run.failed]
      metric = ""
      for key in ("train/loss", f"eval/{self.job.task.primary_metric}"):
        values = [row[key] for row in active if key in row]
        metric += (f" | {key} min {min(values):.4g} median {float(np.median(values)):.4g} "
                   f"max {max(values):.4g}" if values else "")
      self.group_console(f"step {step}/{total} | {len(active)}/{len(self.runs)} runs "
                         f"active{metric} | {speed}")

  @property
  def all_failed(self) -> bool:
    return all(run.failed for run in self.runs)


def train_session(runs: Sequence[Run], layout, state, start: int,
                  group_console: Callable[[str], None] | None = None):
  """Trains ``runs`` (all at step ``start``) to the last step, or until every run failed.

  Opens each run's metrics writer (dropping rows after ``start``), starts the
  plugins, then steps and acts. Returns the final state; each run's ``wall``
  is its wall time across sessions.
  """
  job = runs[0].job
  key = f"eval/{job.task.primary_metric}"
  for run in runs:
    resolved = config_lib.resolved(run.job.config)
    if jax.process_index() > 0:  # across processes, process 0 writes the files
      run.writer = workdir_lib.MemoryWriter(run.workdir, start)
      continue
    run.writer = workdir_lib.MetricsWriter(
        run.workdir, start, resolved, ("train/loss", "eval/loss", key),
        tracker=tracking.open_run(run.job.config, resolved, run.workdir))
    best = best_row(run.writer.history, key, job.task.higher_is_better)
    run.best_value = None if best is None else best[key]
  clock = Clock(start, max(workdir_lib.last_wall_time(r.writer.history) for r in runs),
                job.num_steps, lambda s: _due(s, job.config.train, job.num_steps, job.plugins))
  (group_console or runs[0].console)(layout.intro(runs, state, start))
  for plugin in job.plugins:
    plugin.start(job, runs[0].workdir, start, state)
  actions = PeriodicActions(runs, layout, clock, group_console)
  step_fn, feed = layout.step_fn(), layout.feed(start)
  in_flight = None
  for step in range(start + 1, job.num_steps + 1):
    state, stats = step_fn(state, next(feed))
    # At most one step queued behind the one running: JAX dispatches asynchronously, and
    # without this wait Ctrl-C or SIGTERM would let every step dispatched since the last
    # log finish first (minutes on a long sequence).
    if in_flight is not None:
      in_flight.block_until_ready()
    in_flight = state.step
    state = actions(state, stats, step)
    if actions.all_failed:
      break
  for run in runs:
    run.wall = clock.wall()
  return state

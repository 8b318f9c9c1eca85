"""Training and evaluation of one run: a state, a jitted step, and a loop of small helpers.

    summary = train_and_evaluate(config, workdir)

The state (``TrainState``) is one pytree holding everything that changes: the
step, parameters, optimizer state, rng key, the running sums of the train
metrics since the last log and the first non-finite step. Batch ``t`` and its
randomness are functions of (seed, t), so a run restored from its checkpoint
of step k continues exactly as the uninterrupted run would have: same batches,
same numbers, same ``metrics.jsonl``.

Per step (``train_step``):
    loss, grads = value_and_grad(task.loss(model.apply(params, batch)))
    params <- params + optimizer(clip(grads))          (see ``rnnlab.optim``)
Synthetic tasks (``task.on_device``) generate batch t inside the jitted step;
MNIST batches come from the host, prepared one step ahead in a thread.

Periodic actions use ``itstime``: logging (``train.log_every``), evaluation on
the task's fixed held-out set (``train.eval_every``) and checkpoints
(``train.checkpoint_every``); all happen at the last step too. Before any of
them the first non-finite step, if any, stops the run (``NonFiniteError``) so
that bad values are never logged as progress nor saved.

Workdir: config.json, metrics.jsonl, TensorBoard events, checkpoints/<step>,
<artifact>.npy from ``task.artifacts()``, and summary.json at the end.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
import time
from typing import Any, Callable, Iterator, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnnlab import config_utils, metrics_io, models, optim, tasks
from rnnlab.checkpoint import Checkpointer
from rnnlab.errors import DataNotFoundError, InvalidConfigError, NonFiniteError, RunError

# Model-side randomness (init, per-step rng) comes from fold_in(PRNGKey(seed), MODEL_STREAM).
# Tasks draw batch t from fold_in(PRNGKey(seed), t) and the held-out set from the last
# uint32 value; no run gets near 2**32 - 2 steps, so the streams never meet.
MODEL_STREAM = 2**32 - 2


@flax.struct.dataclass
class TrainState:
  """Everything a run needs to continue, as one pytree.

  Attributes:
    step: () int32, optimisation steps done; the next batch is batch ``step``.
    params: model parameters.
    opt_state: Optax state; ``opt_state.hyperparams`` holds lr and clip_norm.
    rng: (2,) uint32 key; step t's randomness is fold_in(rng, t).
    sums: running sums of the train metrics since the last log, and "count".
    nonfinite_step: () int32, the first step whose loss or gradient was
      NaN/Inf, -1 if none (checked on the host only at periodic actions).
  """
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  sums: dict
  nonfinite_step: jax.Array


@dataclasses.dataclass(frozen=True)
class Job:
  """The static parts of a run, built once from the config."""
  config: Any
  task: Any
  model: models.ModelKind
  tx: optax.GradientTransformation

  @property
  def num_steps(self) -> int:
    return self.config.train.num_steps

  @property
  def batch_size(self) -> int:
    return self.config.train.batch_size


def itstime(step: int, every: int, total: int, first: bool = False) -> bool:
  """Whether a periodic action runs after ``step`` (1-based) of ``total``.

  True at multiples of ``every`` (0 means never), at the last step, and at
  step 1 when ``first``.
  """
  return (step == total or (every > 0 and step % every == 0)
          or (first and step == 1))


def build(config) -> Job:
  """Validates ``config`` and builds the parts, before anything is compiled.

  Raises InvalidConfigError (a ValueError) naming the bad field and what is
  valid, or DataNotFoundError saying how to get a missing data set.
  """
  try:
    config_utils.validate(config)
    task = tasks.make_task(config.task, config.seed)
  except ValueError as err:
    raise InvalidConfigError(str(err)) from err
  except FileNotFoundError as err:
    raise DataNotFoundError(str(err)) from err
  model = models.get_model(config.model.kind)
  tx = optim.make_optimizer(config.optim, config.train.num_steps)
  return Job(config, task, model, tx)


# --- the step ------------------------------------------------------------------------

def _loss(job: Job, params, batch, rng, step, train: bool):
  weight = job.config.optim.get("omega_weight", 0.0)
  if train and weight:
    from rnnlab import gradflow_train  # pylint: disable=g-import-not-at-top (imports train)
    loss, metrics, omega, _ = gradflow_train.loss_and_omega(
        job.task, job.config.model, params, batch, rng=rng, step=step, train=True)
    return loss + weight * omega, {**metrics, "omega": omega}
  outputs = job.model.apply(params, batch, task=job.task, model_cfg=job.config.model,
                            train=train, rng=rng, step=step)
  return job.task.loss_and_metrics(outputs, batch)


def _window(task_metrics: dict, clipped) -> dict:
  """The per-step values summed into ``TrainState.sums`` (means at each log)."""
  return {**{f"train/{k}": v for k, v in task_metrics.items()},
          "grad/clipped_frac": clipped, "count": jnp.float32(1)}


def train_step(job: Job, state: TrainState, batch) -> tuple[TrainState, dict]:
  """One optimisation step on ``batch``; returns the new state and this step's statistics.

  Statistics: ``grad/norm`` (pre-clip global norm), ``grad/clipped``,
  ``optim/learning_rate`` and per-leaf ``grad/norm/<group>``,
  ``param/norm/<group>``, ``update/norm/<group>`` (group e.g. "layers_0/fwd/w_h").
  """
  rng = jax.random.fold_in(state.rng, state.step)
  (loss, task_metrics), grads = jax.value_and_grad(
      lambda p: _loss(job, p, batch, rng, state.step, True), has_aux=True)(state.params)
  ocfg = job.config.optim
  stats = optim.clip_stats(ocfg, grads, state.params, state.opt_state)
  stats["optim/learning_rate"] = optim.learning_rate(ocfg, job.num_steps, state.opt_state)
  updates, opt_state = job.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  step = state.step + 1
  bad = ~(jnp.isfinite(loss) & jnp.isfinite(stats["grad/norm"]))
  new = state.replace(
      step=step, params=params, opt_state=opt_state,
      sums=jax.tree.map(jnp.add, state.sums, _window(task_metrics, stats["grad/clipped"])),
      nonfinite_step=jnp.where(bad & (state.nonfinite_step < 0), step, state.nonfinite_step))
  return new, {**stats, **optim.group_norms(grads, "grad/norm"),
               **optim.group_norms(params, "param/norm"),
               **optim.group_norms(updates, "update/norm")}


def make_step_fn(job: Job) -> Callable:
  """The jitted ``(state, batch) -> (state, stats)``; synthetic tasks ignore ``batch``
  and generate batch ``state.step`` inside the compiled step."""
  if job.task.on_device:
    return jax.jit(lambda state, batch: train_step(
        job, state, job.task.train_batch(state.step, job.batch_size)))
  return jax.jit(functools.partial(train_step, job))


def host_batches(job: Job, start: int) -> Iterator[Any]:
  """Batches start, start+1, ... for the loop; each host batch is prepared one step ahead."""
  if job.task.on_device:
    while True:
      yield None
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    future = pool.submit(job.task.train_batch, start, job.batch_size)
    for step in range(start, job.num_steps):
      batch = future.result()
      if step + 1 < job.num_steps:
        future = pool.submit(job.task.train_batch, step + 1, job.batch_size)
      yield batch


# --- state -----------------------------------------------------------------------------

def _batch_spec(job: Job):
  return jax.eval_shape(functools.partial(job.task.train_batch, 0, job.batch_size))


def init_state(job: Job) -> TrainState:
  """Step-0 state: parameters from fold_in(PRNGKey(seed), MODEL_STREAM), zero sums."""
  key = jax.random.fold_in(jax.random.PRNGKey(job.config.seed), MODEL_STREAM)
  init_key, rng = jax.random.split(key)
  params = job.model.init(init_key, job.task, job.config.model)
  spec = jax.eval_shape(lambda p, b: _loss(job, p, b, rng, 0, True)[1], params,
                        _batch_spec(job))
  sums = jax.tree.map(lambda _: jnp.zeros((), jnp.float32), _window(spec, 0.0))
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                     opt_state=job.tx.init(params), rng=rng, sums=sums,
                     nonfinite_step=jnp.full((), -1, jnp.int32))
  # No weak types, every leaf committed to the device: a restored state (Orbax commits its
  # arrays) then has exactly the same signature and compile-cache key (no recompile).
  state = jax.tree.map(lambda a: jnp.array(a, a.dtype) if a.aval.weak_type else a, state)
  return jax.device_put(state, jax.devices()[0])


def num_params(params) -> int:
  return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params))


# --- evaluation ----------------------------------------------------------------------

def make_eval_fn(job: Job) -> Callable:
  """The jitted ``(params, batch) -> metrics`` of the task on one held-out batch."""
  def eval_step(params, batch):
    return _loss(job, params, batch, jax.random.PRNGKey(0), 0, False)[1]
  return jax.jit(eval_step)


def evaluate(eval_fn, params, batches: Sequence[dict]) -> dict[str, float]:
  """``eval/<metric>``: means over the held-out set, batches weighted by their length."""
  sizes = [len(jax.tree.leaves(b)[0]) for b in batches]  # any task's batch layout
  outs = jax.device_get([eval_fn(params, b) for b in batches])
  total = sum(sizes)
  return {f"eval/{k}": float(sum(o[k] * n for o, n in zip(outs, sizes)) / total)
          for k in outs[0]}


# --- logging -------------------------------------------------------------------------

def baseline_metrics(task) -> dict[str, float]:
  """``task/baseline`` (the loss) and ``task/baseline_<metric>`` for the others."""
  return {("task/baseline" if k == "loss" else f"task/baseline_{k}"): float(v)
          for k, v in task.baseline.items()}


def window_means(sums: dict) -> dict[str, float]:
  """Means of the train metrics since the last log from ``TrainState.sums``."""
  sums = jax.device_get(sums)
  count = max(float(sums["count"]), 1.0)
  return {k: float(v) / count for k, v in sums.items() if k != "count"}


def _fmt_time(seconds: float) -> str:
  seconds = int(seconds)
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
      f"{seconds // 60}m{seconds % 60:02d}s"


def progress_line(step: int, total: int, row: dict, task, speed: str) -> str:
  """One console line: step, losses, primary metric, baselines, then ``speed``."""
  names = dict.fromkeys(["train/loss", "eval/loss", f"eval/{task.primary_metric}", "grad/norm"])
  parts = [f"step {step}/{total}"] + [f"{n} {row[n]:.4g}" for n in names if n in row]
  parts += [f"baseline {k} {v:.4g}" for k, v in task.baseline.items()]
  return " | ".join(parts + [speed])


# --- the loop --------------------------------------------------------------------------

class _Clock:
  """Steps per second between logs and the wall time of the run across resumes."""

  def __init__(self, step: int, wall_before: float):
    self.start, self.wall_before = time.time(), wall_before
    self.first_step, self.last_step, self.last_time = step, step, self.start

  def tick(self, step: int) -> dict[str, float]:
    now = time.time()
    rate = (step - self.last_step) / max(now - self.last_time, 1e-9)
    self.last_step, self.last_time = step, now
    return {"perf/steps_per_sec": rate, "perf/wall_time_s": self.wall()}

  def speed(self, step: int, total: int, rate: float) -> str:
    """"12.3 steps/s, ETA 1m05s"; the session's first interval includes compilation."""
    if self.first_step is not None:
      first, self.first_step = self.first_step, None
      return f"{step - first} step(s) in {time.time() - self.start:.1f}s incl. compilation"
    return f"{rate:.1f} steps/s, ETA {_fmt_time((total - step) / max(rate, 1e-9))}"

  def wall(self) -> float:
    return self.wall_before + time.time() - self.start


def _check_finite(state: TrainState, ckpt: Checkpointer):
  bad = int(jax.device_get(state.nonfinite_step))
  if bad >= 0:
    raise NonFiniteError(
        f"Training stopped: the loss or a gradient was NaN/Inf at step {bad}. Nothing "
        f"from that step on was logged as progress or saved; the last good checkpoint is "
        f"{ckpt.describe_latest()}. Lower optim.learning_rate or clip the gradients "
        "(optim.clip_mode, optim.clip_norm), then start a fresh workdir (or --overwrite).")


class _Session:
  """The periodic actions of one session of a run (logging, evaluation, checkpoints)."""

  def __init__(self, job, ckpt, writer, clock, console):
    self.job, self.ckpt, self.writer, self.clock, self.console = job, ckpt, writer, clock, console
    self.eval_fn = make_eval_fn(job)
    self._eval_batches = None

  def eval_batches(self):
    if self._eval_batches is None:
      cfg = self.job.config.train
      self._eval_batches = self.job.task.eval_batches(cfg.eval_batch_size or cfg.batch_size)
    return self._eval_batches

  def after_step(self, state: TrainState, stats: dict, step: int) -> TrainState:
    """Logs, evaluates and checkpoints when it is time; returns the state (sums reset)."""
    cfg, total = self.job.config.train, self.job.num_steps
    log = itstime(step, cfg.log_every, total, first=True)
    do_eval = itstime(step, cfg.eval_every, total)
    save = itstime(step, cfg.checkpoint_every, total)
    if not (log or do_eval or save):
      return state
    _check_finite(state, self.ckpt)
    row = {}
    if log:
      row.update(**window_means(state.sums), **jax.device_get(stats),
                 **baseline_metrics(self.job.task))
      state = state.replace(sums=jax.tree.map(jnp.zeros_like, state.sums))
    if do_eval:
      row.update(evaluate(self.eval_fn, state.params, self.eval_batches()))
    if row:
      row.update(self.clock.tick(step))
      self.writer.write(step, row)  # before the checkpoint: a resumed run misses no row
      speed = self.clock.speed(step, total, row["perf/steps_per_sec"])
      self.console(progress_line(step, total, row, self.job.task, speed))
    if save:
      self.ckpt.save(step, state)
    return state


def _initial_state(job: Job) -> TrainState:
  """``init_state``; a value only the model's init can check (chrono's T_max) is a config error."""
  try:
    return init_state(job)
  except ValueError as err:
    raise InvalidConfigError(f"model ({job.config.model.kind}): {err}") from err


def _restore(state: TrainState, ckpt: Checkpointer, console) -> TrainState:
  """The latest checkpoint in the structure of ``state``, or ``state`` when there is none."""
  if ckpt.latest_step() is not None:
    console(f"Resuming from the checkpoint of step {ckpt.latest_step()} in {ckpt.directory}.")
    state = ckpt.restore(state)
  return state


def _save_artifacts(task, workdir: str):
  for name, array in task.artifacts().items():
    np.save(os.path.join(workdir, f"{name}.npy"), np.asarray(array))


def summarize(job: Job, history: list[dict], wall: float) -> dict:
  """Final and best held-out primary metric against the task's baseline."""
  task = job.task
  key = f"eval/{task.primary_metric}"
  evals = [r for r in history if key in r]
  if not evals:
    raise RunError(f"metrics.jsonl holds no {key}; the run cannot be summarized. Start it "
                   "again with --overwrite.")
  pick = max if task.higher_is_better else min
  best = pick(evals, key=lambda r: r[key])
  final = evals[-1]
  base = task.baseline[task.primary_metric]
  beats = final[key] > base if task.higher_is_better else final[key] < base
  return {"task": task.describe(), "steps": final["step"], "primary_metric": key,
          "higher_is_better": task.higher_is_better, "baseline": base,
          "final": {k: v for k, v in final.items() if k.startswith("eval/")},
          "best": {"step": best["step"], key: best[key]}, "beats_baseline": bool(beats),
          "wall_time_s": wall}


def summary_line(summary: dict) -> str:
  key = summary["primary_metric"]
  verdict = "beats" if summary["beats_baseline"] else "does NOT beat"
  return (f"Done: {summary['task']}. After {summary['steps']} steps {key} = "
          f"{summary['final'][key]:.4g} (best {summary['best'][key]:.4g} at step "
          f"{summary['best']['step']}), baseline {summary['baseline']:.4g}: {verdict} the "
          f"baseline. Wall time {_fmt_time(summary['wall_time_s'])}.")


def train_and_evaluate(config, workdir: str, *, overwrite: bool = False,
                       hooks: Sequence[Callable[[int, TrainState], None]] = (),
                       console: Callable[[str], None] = print) -> dict:
  """Trains ``config`` in ``workdir`` (resuming from its last checkpoint); returns the summary.

  Raises ``rnnlab.errors.RunError``: InvalidConfigError (also a ValueError) for
  bad config values, before anything is compiled; ConfigMismatchError for a
  workdir holding another run; CheckpointError for an unusable checkpoint;
  NonFiniteError for a NaN/Inf loss or gradient; DataNotFoundError for missing
  data. ``hooks`` are called as ``hook(step, state)`` after every step
  (analysis, profiling, tests).
  """
  job = build(config)
  state = _initial_state(job)  # before the workdir is touched: a bad value leaves no trace
  config_utils.prepare_workdir(config, workdir, overwrite)
  _save_artifacts(job.task, workdir)
  every = config.get("gradflow", {}).get("every", 0)
  if every:
    from rnnlab import gradflow_train  # pylint: disable=g-import-not-at-top (imports train)
    hooks = (*hooks, gradflow_train.make_hook(config, workdir, every))
  ckpt = Checkpointer(workdir, config.train.keep_checkpoints)
  try:
    state = _restore(state, ckpt, console)
    start = int(state.step)
    writer = metrics_io.MetricsWriter(workdir, start)
    try:
      clock = _Clock(start, _last_wall(writer.history))
      console(f"{job.task.describe()}; model {config.model.kind} "
              f"({config.model.get('cell', '')}) with {num_params(state.params):,} parameters; "
              f"steps {start}->{job.num_steps}.")
      session = _Session(job, ckpt, writer, clock, console)
      state = _loop(job, state, start, session, hooks)
      summary = summarize(job, writer.history, clock.wall())
    finally:
      writer.close()
  finally:
    ckpt.close()
  metrics_io.write_json(os.path.join(workdir, metrics_io.SUMMARY), summary)
  console(summary_line(summary))
  return summary


def _last_wall(history: list[dict]) -> float:
  walls = [r["perf/wall_time_s"] for r in history if "perf/wall_time_s" in r]
  return walls[-1] if walls else 0.0


def _loop(job, state, start, session, hooks) -> TrainState:
  step_fn = make_step_fn(job)
  batches = host_batches(job, start)
  for step in range(start + 1, job.num_steps + 1):
    state, stats = step_fn(state, next(batches))
    state = session.after_step(state, stats, step)
    for hook in hooks:
      hook(step, state)
  return state

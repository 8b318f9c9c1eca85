"""Many runs in one compiled program: ``jax.vmap`` over runs that differ only in values.

    summaries = vmapped.train_runs(configs, workdirs)

Runs whose configs differ only in fields that change no shape and no code path
(``VMAPPABLE``: the seed, learning rate, clip threshold, forget-gate bias and
chrono's T_max: the last two enter only the parameters' initial values)
share one jitted training step, vmapped over a leading run axis of the
training state: N runs cost one compilation and their small per-run matmuls
become one larger batched matmul. The periodic actions are the single run's
(``rnnlab.training.periodic``), reading run i's lane of the stacked state, and
each run gets its own workdir exactly as a single run writes it (config.json,
metrics.jsonl, TensorBoard events, checkpoints of *its* state, summary.json),
so it can be aggregated, inspected and even resumed on its own with ``launch.py``.

Why this is exact: parameters are initialised run by run with the run's own
config (so forget_bias, chrono and the seed enter as they do in a single run) and then
stacked; the learning rate and clip threshold already live as arrays in
``opt_state.hyperparams`` (``rnnlab.training.optim``); each run's data stream is
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

import itertools
import os
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from rnnlab import engine
from rnnlab.errors import InvalidConfigError
from rnnlab.training import checkpoint
from rnnlab.training import config as config_lib
from rnnlab.training import job as job_lib
from rnnlab.training import periodic
from rnnlab.training import sharding
from rnnlab.training import trainer
from rnnlab.training import workdir as workdir_lib

# Fields whose values may differ between the runs of one program.
VMAPPABLE = frozenset({"seed", "optim.learning_rate", "optim.clip_norm",
                       "model.cell_options.forget_bias", "model.cell_options.chrono"})


def static_part(config) -> dict:
  """The resolved config without the ``VMAPPABLE`` fields: equal for runs that can share."""
  flat = config_lib.flatten(config_lib.resolved(config))
  return {k: v for k, v in flat.items() if k not in VMAPPABLE}


def stack(trees: Sequence):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack(tree, i: int):
  return jax.tree.map(lambda a: a[i], tree)


def check_compatible(jobs: Sequence[job_lib.Job]):
  """InvalidConfigError unless the jobs can share one vmapped program."""
  first = static_part(jobs[0].config)
  for job in jobs[1:]:
    changes = config_lib.diff(first, static_part(job.config))
    if changes:
      raise InvalidConfigError(
          "Runs vmapped into one program may differ only in "
          f"{sorted(VMAPPABLE)}; these differ too: {'; '.join(changes)}.")
  refusals = [p.vmap_refusal for p in jobs[0].plugins if p.vmap_refusal]
  if refusals:
    raise InvalidConfigError(f"These runs cannot be vmapped: {'; '.join(refusals)}.")
  if not jobs[0].task.on_device:
    raise InvalidConfigError(
        f"Task {jobs[0].task.name!r} is fed from the host; only on-device tasks "
        "(synthetic and seq2seq) can be vmapped. Run them as separate processes.")


class Stacked:
  """The layout of N runs' states stacked on a leading axis (``periodic`` reads lane i)."""

  def __init__(self, runs: Sequence[periodic.Run]):
    self.job = runs[0].job
    # The runs split over the devices (a lane never talks to another: no communication).
    self.placement = sharding.runs_placement(len(runs), self.job.config)
    self.keys = self.placement.put_state(jnp.stack([r.job.task.stream_key for r in runs]))
    job = self.job
    self.eval_fn = jax.jit(jax.vmap(lambda params, batch: job_lib.eval_metrics(
        job, params, batch)))
    self._eval = None

  def place(self, state):
    return self.placement.put_state(state)

  part = staticmethod(unstack)

  def step_fn(self) -> Callable:
    """jit(vmap(train_step)) over (stacked state, per-run stream keys)."""
    job = self.job

    def one(state, key):
      return job_lib.train_step(job, state, job.task.batch_at(key, state.step, job.batch_size))

    def step(state, keys):
      state, stats = jax.vmap(one)(state, keys)
      return self.placement.constrain_state(state), stats
    return jax.jit(step)

  def feed(self, start: int):
    del start
    return itertools.repeat(self.keys)

  def evaluate(self, runs: Sequence[periodic.Run], params) -> list[dict]:
    """``eval/<metric>`` per run, each the length-weighted mean over its held-out batches."""
    if self._eval is None:  # every run's held-out set, stacked batch by batch, once
      cfg = self.job.config.train
      per_run = [r.job.task.eval_batches(cfg.eval_batch_size or cfg.batch_size) for r in runs]
      self._eval = ([self.placement.put_state(stack([batches[b] for batches in per_run]))
                     for b in range(len(per_run[0]))],
                    [len(jax.tree.leaves(b)[0]) for b in per_run[0]])
    batches, sizes = self._eval
    means = job_lib.weighted_means([sharding.host(self.eval_fn(params, b)) for b in batches],
                                   sizes)
    return [{k: float(v[i]) for k, v in means.items()} for i in range(len(runs))]

  def intro(self, runs: Sequence[periodic.Run], state, start: int) -> str:
    job = self.job
    return (f"{len(runs)} vmapped runs of {job.task.describe()}; model {job.config.model.kind} "
            f"({job.config.model.get('cell', '')}) with "
            f"{job_lib.num_params(unstack(state.params, 0)):,} parameters each; "
            f"steps {start}->{job.num_steps}; on {self.placement.describe()}.")


def train_runs(configs: Sequence, workdirs: Sequence[str], *,
               console: Callable[[str], None] = print) -> list[dict | None]:
  """Trains ``configs[i]`` in ``workdirs[i]``, all in one vmapped program.

  Returns each run's summary (as ``trainer.train_and_evaluate`` does), or None
  for a run that failed (its failed.json says why). Raises InvalidConfigError
  before anything is written when the configs cannot share one program.
  Interrupted runs resume from their checkpoints; runs at different steps are
  trained as separate groups, one after the other. Everything is traced inside
  ``engine.vmapped_runs()``: the engine's defaults pick what batches over the runs (the
  scan, where one run alone would take oneDNN's one call per run).
  """
  with engine.vmapped_runs():
    return _train_runs(configs, workdirs, console)


def _train_runs(configs, workdirs, console):
  if len(configs) != len(workdirs) or not configs:
    raise ValueError("train_runs needs one workdir per config, and at least one run.")
  for workdir in workdirs:
    workdir_lib.check_writable(workdir)
  jobs = [job_lib.build(c) for c in configs]
  check_compatible(jobs)
  states = [job_lib.init_state(job) for job in jobs]
  runs, logs = [], []
  try:
    for job, workdir in zip(jobs, workdirs):
      workdir_lib.prepare(job.config, workdir, recorded=lambda w=workdir: checkpoint.recorded(w),
                          console=console)
      workdir_lib.save_artifacts(job.task, workdir)
      failed = os.path.join(workdir, workdir_lib.FAILED)
      if os.path.exists(failed):
        os.remove(failed)  # a retry: the earlier failure is no longer the run's state
      with workdir_lib.storage("write", os.path.join(workdir, workdir_lib.LOG)):
        logs.append(open(os.path.join(workdir, workdir_lib.LOG), "a"))
      runs.append(periodic.Run(job, workdir, _writer(logs[-1]), record_failure=True))
    with trainer.close_on_exit(*runs):
      states = [trainer.restore(run, state) for run, state in zip(runs, states)]
      by_step: dict[int, list[int]] = {}
      for i, state in enumerate(states):
        by_step.setdefault(int(state.step), []).append(i)
      for start, members in sorted(by_step.items()):
        group = [runs[i] for i in members]
        layout = Stacked(group)
        periodic.train_session(group, layout, layout.place(stack([states[i] for i in members])),
                               start, group_console=console)
    return [None if run.failed else trainer.finish(run, vmapped_runs=len(runs))
            for run in runs]
  finally:
    for log in logs:
      log.close()


def _writer(log) -> Callable[[str], None]:
  def write(line: str):
    log.write(line + "\n")
    log.flush()
  return write

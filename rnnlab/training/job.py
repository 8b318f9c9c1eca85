"""A run's static parts (``Job``), its state (``TrainState``) and the jitted step.

    job = build(config)            # validates first: InvalidConfigError names the field
    state = init_state(job)
    step_fn = make_step_fn(job)    # (state, batch) -> (state, stats), jitted
    state, stats = step_fn(state, batch)

Per step (``train_step``):
    loss, grads = value_and_grad(task.loss(model.apply(params, batch)))
    params <- params + optimizer(clip(grads))          (see ``rnnlab.training.optim``)
Plugins (``rnnlab.training.plugins``) may wrap the loss. Synthetic tasks
(``task.on_device``) generate batch t inside the jitted step; MNIST batches
come from the host, prepared one step ahead in a thread (``host_batches``).

Batch t and its randomness are functions of (seed, t), so a run restored from
its checkpoint of step k continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import math
from typing import Any, Callable, Iterator, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnnlab import heap, models, tasks
from rnnlab.checks import check_int
from rnnlab.errors import DataNotFoundError, InvalidConfigError
from rnnlab.training import analyses, optim, sharding, tracking
from rnnlab.training import config as config_lib
from rnnlab.training.plugins import Plugin

# Model-side randomness (init, per-step rng) comes from fold_in(PRNGKey(seed), MODEL_STREAM).
# Tasks draw batch t from fold_in(PRNGKey(seed), t) and the held-out set from the last
# uint32 value; no run gets near 2**32 - 2 steps, so the streams never meet.
MODEL_STREAM = 2**32 - 2
SECTIONS = ("seed", "task", "model", "optim", "train", "gradflow")


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
    carry: for a stateful task (truncated BPTT, ``Task.stateful``) the model's
      final carry of the last batch, which the next batch starts from; () otherwise.
  """
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  sums: dict
  nonfinite_step: jax.Array
  carry: Any = ()


@dataclasses.dataclass(frozen=True)
class Job:
  """The static parts of a run, built once from the config."""
  config: Any
  task: Any
  model: models.ModelKind
  tx: optax.GradientTransformation
  plugins: tuple[Plugin, ...] = ()
  placement: sharding.Placement | None = None  # the devices (rnnlab.training.sharding)

  @property
  def num_steps(self) -> int:
    return self.config.train.num_steps

  @property
  def batch_size(self) -> int:
    return self.config.train.batch_size


# --- building ----------------------------------------------------------------------

def _validate_train(cfg):
  """``config.train``: sizes positive; periods >= 0 (0 = only at the last step)."""
  check_int("train.batch_size", cfg.batch_size)
  check_int("train.num_steps", cfg.num_steps)
  if cfg.eval_batch_size is not None:
    check_int("train.eval_batch_size", cfg.eval_batch_size)
  for field in ("log_every", "eval_every", "checkpoint_every"):
    check_int(f"train.{field}", cfg[field], 0)
  check_int("train.keep_checkpoints", cfg.keep_checkpoints)


def _check_finite(config):
  """No field anywhere holds NaN or +-Inf (each field's own check then bounds its range)."""
  for name, value in config_lib.flatten(config.to_dict()).items():
    for v in (value if isinstance(value, (list, tuple)) else [value]):
      if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number; got {v}.")


def validate(config):
  """Raises ValueError for the first bad field of a training config."""
  missing = [s for s in SECTIONS if s not in config]
  if missing:
    raise ValueError(f"The config has no {missing}; a training config has {list(SECTIONS)} "
                     "(build it from configs/base.py).")
  _check_finite(config)
  heap.mode()  # a bad RNNLAB_MALLOC (read at import, where it cannot stop anything)
  check_int("seed", config.seed, 0, 2**31 - 1)
  tasks.validate(config.task)
  models.validate(config.model)
  fits = tasks.task_class(config.task.name).model_kinds
  if config.model.kind not in fits:
    raise ValueError(f"model.kind {config.model.kind!r} does not fit task "
                     f"{config.task.name!r}; it needs {' or '.join(map(repr, fits))}.")
  _validate_train(config.train)
  optim.validate(config.optim, config.train.num_steps)
  analyses.validate(config)
  if "wandb" in config:
    tracking.validate(config.wandb)
  if "mesh" in config:
    sharding.validate(config.mesh, config.train.batch_size)


def build(config, plugins: Sequence[Plugin] = ()) -> Job:
  """Validates ``config`` and builds the parts, before anything is compiled.

  The job's plugins are the built-in ones the config switches on
  (``analyses.from_config``) followed by ``plugins``. Raises
  InvalidConfigError (a ValueError) naming the bad field and what is valid, or
  DataNotFoundError saying how to get a missing data set.
  """
  try:
    validate(config)
    task = tasks.make_task(config.task, config.seed)
  except ValueError as err:
    raise InvalidConfigError(str(err)) from err
  except FileNotFoundError as err:
    raise DataNotFoundError(str(err)) from err
  model = models.get_model(config.model.kind)
  tx = optim.make_optimizer(config.optim, config.train.num_steps)
  return Job(config, task, model, tx, (*analyses.from_config(config), *plugins),
             sharding.placement(config))


# --- the step ------------------------------------------------------------------------

# The metrics key under which a stateful task's loss hands the model's final carry to the step.
NEXT_CARRY = "next_carry"


def _task_loss(job: Job, params, batch, rng, step, train: bool):
  """The task's loss and metrics; with ``model.dtype = "bfloat16"`` the model computes in
  bfloat16 on cast copies of the parameters and of the batch's floats, and the loss in
  float32 (``models.COMPUTE_DTYPES``): the gradient reaches the float32 parameters."""
  dtype = models.compute_dtype(job.config.model)
  model_batch = batch
  if dtype is not None:
    params, model_batch = models.cast_floats((params, batch), dtype)
  outputs = job.model.apply(params, model_batch, task=job.task, model_cfg=job.config.model,
                            train=train, rng=rng, step=step)
  if dtype is not None:
    outputs = models.cast_floats(outputs, jnp.float32)
  loss, metrics = job.task.loss_and_metrics(outputs, batch)
  if "carry" in batch:  # truncated BPTT: no gradient flows into the previous batch
    metrics = {**metrics, NEXT_CARRY: jax.lax.stop_gradient(outputs["carry"])}
  return loss, metrics


def training_loss(job: Job) -> Callable:
  """``(params, batch, rng, step) -> (loss, metrics)``: the task's, wrapped by the plugins."""
  loss_fn = lambda params, batch, rng, step: _task_loss(job, params, batch, rng, step, True)
  for plugin in job.plugins:
    loss_fn = plugin.wrap_loss(job, loss_fn)
  return loss_fn


WINDOW_MAX = "_max"  # a window entry whose name ends so is a running maximum, not a sum


def _window(task_metrics: dict, clipped, grad_norm) -> dict:
  """The per-step values accumulated into ``TrainState.sums``: summed (means at each log),
  or, for names ending in ``WINDOW_MAX``, the largest value since the last log.

  ``grad/norm_mean`` and ``grad/norm_max`` see the pre-clip global norm of every
  step, so a spike between two logs is not missed (``grad/norm`` is the logged
  step's own value).
  """
  return {**{f"train/{k}": v for k, v in task_metrics.items()},
          "grad/clipped_frac": clipped, "grad/norm_mean": grad_norm,
          "grad/norm" + WINDOW_MAX: grad_norm, "count": jnp.float32(1)}


def accumulate(sums: dict, window: dict) -> dict:
  """``sums`` with one step's ``_window`` values added (or maxed, for ``WINDOW_MAX`` names)."""
  return {k: (jnp.maximum(v, window[k]) if k.endswith(WINDOW_MAX) else v + window[k])
          for k, v in sums.items()}


def train_step(job: Job, state: TrainState, batch) -> tuple[TrainState, dict]:
  """One optimisation step on ``batch``; returns the new state and this step's statistics.

  Statistics: ``grad/norm`` (pre-clip global norm), ``grad/clipped``,
  ``optim/learning_rate`` and per-leaf ``grad/norm/<group>``,
  ``param/norm/<group>``, ``update/norm/<group>`` (group e.g. "layers_0/fwd/w_h").
  """
  rng = jax.random.fold_in(state.rng, state.step)
  loss_fn = training_loss(job)
  if job.task.stateful:
    batch = {**batch, "carry": state.carry}
  (loss, task_metrics), grads = jax.value_and_grad(
      lambda p: loss_fn(p, batch, rng, state.step), has_aux=True)(state.params)
  carry = task_metrics.pop(NEXT_CARRY) if job.task.stateful else state.carry
  ocfg = job.config.optim
  stats = optim.clip_stats(ocfg, grads, state.params, state.opt_state)
  stats["optim/learning_rate"] = optim.learning_rate(ocfg, job.num_steps, state.opt_state)
  updates, opt_state = job.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  step = state.step + 1
  bad = ~(jnp.isfinite(loss) & jnp.isfinite(stats["grad/norm"]))
  new = state.replace(
      step=step, params=params, opt_state=opt_state, carry=carry,
      sums=accumulate(state.sums, _window(task_metrics, stats["grad/clipped"],
                                          stats["grad/norm"])),
      nonfinite_step=jnp.where(bad & (state.nonfinite_step < 0), step, state.nonfinite_step))
  return new, {**stats, **optim.group_norms(grads, "grad/norm"),
               **optim.group_norms(params, "param/norm"),
               **optim.group_norms(updates, "update/norm")}


def make_step_fn(job: Job) -> Callable:
  """The jitted ``(state, batch) -> (state, stats)``; synthetic tasks ignore ``batch``
  and generate batch ``state.step`` inside the compiled step, split over the mesh."""
  place = job.placement

  def step(state, batch):
    if job.task.on_device:
      batch = place.constrain_batch(job.task.train_batch(state.step, job.batch_size))
    state, stats = train_step(job, state, batch)
    return place.constrain_state(state), stats
  return jax.jit(step)


def host_batches(job: Job, start: int) -> Iterator[Any]:
  """Batches start, start+1, ... for the loop; each host batch is prepared one step ahead."""
  if job.task.on_device:
    while True:
      yield None
  prepare = lambda step: job.placement.put_batch(job.task.train_batch(step, job.batch_size))
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    future = pool.submit(prepare, start)
    for step in range(start, job.num_steps):
      batch = future.result()
      if step + 1 < job.num_steps:
        future = pool.submit(prepare, step + 1)
      yield batch


# --- state -----------------------------------------------------------------------------

def init_state(job: Job) -> TrainState:
  """Step-0 state: parameters from fold_in(PRNGKey(seed), MODEL_STREAM), zero sums.

  A value only the model's init can check (chrono's T_max) is an InvalidConfigError.
  """
  key = jax.random.fold_in(jax.random.PRNGKey(job.config.seed), MODEL_STREAM)
  init_key, rng = jax.random.split(key)
  try:
    params = job.model.init(init_key, job.task, job.config.model)
  except ValueError as err:
    raise InvalidConfigError(f"model ({job.config.model.kind}): {err}") from err
  carry = ()
  if job.task.stateful:
    carry = job.model.init_carry(params, job.task, job.config.model, job.batch_size)
  batch_spec = jax.eval_shape(functools.partial(job.task.train_batch, 0, job.batch_size))
  if job.task.stateful:
    batch_spec = {**batch_spec, "carry": carry}
  spec = jax.eval_shape(lambda p, b: training_loss(job)(p, b, rng, 0)[1], params, batch_spec)
  spec.pop(NEXT_CARRY, None)
  sums = jax.tree.map(lambda _: jnp.zeros((), jnp.float32), _window(spec, 0.0, 0.0))
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                     opt_state=job.tx.init(params), rng=rng, sums=sums,
                     nonfinite_step=jnp.full((), -1, jnp.int32), carry=carry)
  # No weak types, every leaf committed to the device: a restored state (Orbax commits its
  # arrays) then has exactly the same signature and compile-cache key (no recompile).
  state = jax.tree.map(lambda a: jnp.array(a, a.dtype) if a.aval.weak_type else a, state)
  return job.placement.put_state(state)


def num_params(params) -> int:
  return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params))


# --- evaluation ----------------------------------------------------------------------

def eval_metrics(job: Job, params, batch) -> dict:
  """The task's metrics of one held-out batch (deterministic: train=False, fixed rng)."""
  return _task_loss(job, params, batch, jax.random.PRNGKey(0), 0, False)[1]


def make_eval_fn(job: Job) -> Callable:
  """The jitted ``(params, batch) -> metrics`` of the task on one held-out batch."""
  return jax.jit(functools.partial(eval_metrics, job))


def weighted_means(outs: Sequence[dict], sizes: Sequence[int]) -> dict:
  """``eval/<metric>``: per-batch metrics averaged with the batches' lengths as weights.

  Works on host scalars and on (runs,) arrays of a vmapped group alike.
  """
  total = sum(sizes)
  return {f"eval/{k}": sum(o[k] * n for o, n in zip(outs, sizes)) / total for k in outs[0]}


def evaluate(eval_fn, params, batches: Sequence[dict]) -> dict[str, float]:
  """``eval/<metric>``: means over the held-out set, batches weighted by their length."""
  sizes = [len(jax.tree.leaves(b)[0]) for b in batches]  # any task's batch layout
  outs = sharding.host([eval_fn(params, b) for b in batches])
  return {k: float(v) for k, v in weighted_means(outs, sizes).items()}

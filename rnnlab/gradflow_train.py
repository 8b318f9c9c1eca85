"""Per-step gradient norms ||dL/dh_t|| measured while a model trains, as a trainer hook.

    hook = gradflow_train.make_hook(config, workdir, every=100)
    train.train_and_evaluate(config, workdir, hooks=[hook])

At step 0 (the initialisation), every ``every`` steps and at the last step the
hook appends one JSON object a line to ``<workdir>/gradflow.jsonl``::

    {"step": s, "dL_dh_norm": [...]}   # over t; [[...] per layer] for a stack;
                                       # [layer][direction][t] when bidirectional

Record s is measured with the parameters after s updates, on training batch s
and with the per-step rng the trainer would use next: it is the gradient that
update s + 1 differentiates (before clipping). The norm is gradflow's: the
per-example gradient d l_b / d h_t^b of the task loss, its L2 norm over hidden
units, averaged over the batch (padded steps excluded).

How: the model's own apply runs with a zero perturbation added to every
layer's h_t (its ``perturbations`` argument, passed on to ``engine.apply_stack``);
the gradient of the task loss with respect to the perturbations is dL/dh_t for
every t and layer in one backward pass. The measurement is one jitted function per config, compiled
once, and it only reads the training state, so a run with the hook follows
exactly the trajectory of a run without it (tests/test_gradflow_train.py).

Resume: a run restarted from its checkpoint of step k drops the records after
step k on its first step (they are measured again, identically), as the trainer
does with metrics.jsonl; a run from step 0 starts the file afresh.

Also here: ``loss_and_omega``, the task loss with Pascanu et al.'s Omega
regulariser computed through the same perturbed apply (for a trainer option or
an experiment's own loop), and ``Measurer(config, loss=...)`` for analyses that
follow one read-out alone. A model kind is supported when it is registered in
``PERTURBABLE`` (the classifier is).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

# rnnlab.train may import this module (for Omega), so ``train.`` is used inside functions only.
from rnnlab import gradflow, models, train

GRADFLOW = "gradflow.jsonl"


# --- running a model kind with perturbed hidden states -----------------------------------

@dataclasses.dataclass(frozen=True)
class Perturbable:
  """How to run a model kind with an additive perturbation of every h_t.

  Attributes:
    stack: ``model_cfg -> engine.Stack``, the layout of the perturbations
      ([{direction: (B, T, H)}] per layer, ``gradflow.zero_perturbations``).
    apply: ``ModelKind.apply`` with one more keyword, ``perturbations``.
    stack_inputs: ``(params, batch) -> (stack params, stack inputs (B, T, D))``,
      what the recurrent stack reads (Omega re-runs it layer by layer).
  """
  stack: Callable
  apply: Callable
  stack_inputs: Callable


def accepts_perturbations(apply: Callable) -> bool:
  """Whether a model kind's apply takes a ``perturbations`` keyword."""
  return "perturbations" in inspect.signature(apply).parameters


PERTURBABLE: dict[str, Perturbable] = {
    "classifier": Perturbable(
        models._stack,  # pylint: disable=protected-access
        models.CLASSIFIER.apply,
        lambda params, batch: (params["layers"], batch["x"])),
}


def get_perturbable(kind: str) -> Perturbable:
  """The ``Perturbable`` of ``config.model.kind``; an unsupported kind says what is needed."""
  if kind not in PERTURBABLE or not accepts_perturbations(PERTURBABLE[kind].apply):
    raise ValueError(
        f"Gradient-flow measurement does not support model.kind {kind!r}; supported: "
        f"{', '.join(sorted(PERTURBABLE))}. Register a Perturbable (its stack layout and an "
        "apply taking perturbations=[{direction: (B, T, H)}] per layer) in "
        "gradflow_train.PERTURBABLE.")
  return PERTURBABLE[kind]


# --- the measurement -----------------------------------------------------------------------

def task_loss(task, outputs, batch):
  """The training loss of the task (the batch mean)."""
  return task.loss_and_metrics(outputs, batch)[0]


def _norms_of_batch(job: train.Job, perturbable: Perturbable, loss, params, rng, step, batch):
  """(layers, directions, T): mean_b ||d l_b / d h_t^b|| of ``loss`` on ``batch``."""
  x = batch["x"]
  stack = perturbable.stack(job.config.model)
  zeros = gradflow.zero_perturbations(stack, x.shape[:-2], x.shape[-2], x.dtype)

  def loss_fn(perturbations):
    outputs = perturbable.apply(params, batch, task=job.task, model_cfg=job.config.model,
                                train=True, rng=rng, step=step, perturbations=perturbations)
    return loss(job.task, outputs, batch)
  mask = gradflow.valid_mask(x, batch.get("lengths"), batch.get("mask"))
  return gradflow.dL_dh_norms_from_loss(loss_fn, zeros, mask)


def loss_and_omega(task, model_cfg, params, batch, *, rng, step, train: bool = True):
  """The task loss, Pascanu et al.'s (2013) Omega and dL/dh_t, from one forward-backward pass.

  A trainer with the regulariser minimises ``loss + weight * omega``::

      Omega = mean_b sum_{layer, dir, k} (||a_{k+1} dx_{k+1}/dx_k|| / ||a_{k+1}|| - 1)^2,

  a_{k+1} = dL/dx_{k+1} held constant (``gradflow.omega_stack``), so Omega is
  differentiable w.r.t. ``params`` without second derivatives of the loss.

  Args:
    task, model_cfg: the run's task and ``config.model``.
    params, batch: model parameters; batch {"x": (B, T, D), ...}.
    rng, step, train: passed to the model's apply as the trainer does.

  Returns:
    (loss, metrics, omega, dl_dh): the task's loss and metrics, Omega (a scalar)
    and dl_dh [{dir: (B, T, H)}] per layer, the gradient of the batch-mean loss
    (B times smaller than gradflow's per-example convention).
  """
  perturbable = get_perturbable(model_cfg.kind)
  stack = perturbable.stack(model_cfg)
  layers, xs = perturbable.stack_inputs(params, batch)
  zeros = gradflow.zero_perturbations(stack, xs.shape[:-2], xs.shape[-2], xs.dtype)

  def loss_fn(perturbations):
    outputs = perturbable.apply(params, batch, task=task, model_cfg=model_cfg, train=train,
                                rng=rng, step=step, perturbations=perturbations)
    return task.loss_and_metrics(outputs, batch)
  (loss, metrics), dl_dh = jax.value_and_grad(loss_fn, has_aux=True)(zeros)
  omega = gradflow.omega_stack(stack, layers, xs, dl_dh, lengths=batch.get("lengths"),
                               mask=batch.get("mask"))
  return loss, metrics, omega, dl_dh


class Measurer:
  """``measure(params, rng, step)``: per-step ||dL/dh_t|| of a config's model on batch ``step``.

  ``rng`` is the run's key (``TrainState.rng``); the model gets fold_in(rng, step)
  as in ``train.train_step``. Synthetic tasks generate the batch inside the
  compiled function, host tasks (MNIST) pass it in; either way one compile.

  Args:
    config: the run's training config.
    loss: ``(task, outputs, batch) -> loss`` (batch mean or per-example) to
      differentiate; default the task's training loss. Analyses use it to
      follow one read-out alone (e.g. only the recall steps of copy).
  """

  def __init__(self, config, loss: Callable = task_loss):
    self.job = train.build(config)
    self.perturbable = get_perturbable(config.model.kind)
    size = self.job.batch_size

    def norms(params, rng, step, batch=None):
      if batch is None:
        batch = self.job.task.train_batch(step, size)
      return _norms_of_batch(self.job, self.perturbable, loss, params,
                             jax.random.fold_in(rng, step), step, batch)
    self._norms = jax.jit(norms)

  def __call__(self, params, rng, step: int, batch=None) -> np.ndarray:
    """(layers, directions, T) float64 norms on the host; ``batch`` replaces training batch
    ``step`` (e.g. a held-out batch, the same for every model compared)."""
    if batch is None and not self.job.task.on_device:
      batch = self.job.task.train_batch(int(step), self.job.batch_size)
    return np.asarray(self._norms(params, rng, jnp.int32(step), batch), np.float64)

  def initial_state(self) -> train.TrainState:
    """The step-0 state the trainer starts a fresh run from (same seed, same numbers)."""
    return train.init_state(self.job)


# --- the hook ------------------------------------------------------------------------------

def _read_records(path: str) -> list[dict]:
  """The records of a gradflow.jsonl; a line cut short by a crash is skipped."""
  if not os.path.exists(path):
    return []
  records = []
  with open(path) as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return records


def _write_records(path: str, records: list[dict]):
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in records)
  os.replace(tmp, path)


class GradflowHook:
  """``hook(step, state)`` for ``train.train_and_evaluate``: writes gradflow.jsonl records.

  Args:
    measurer: the ``Measurer`` of the run's config (shareable between hooks).
    workdir: the run's workdir; records go to ``<workdir>/gradflow.jsonl``.
    every: measure after every ``every``-th step (and after the last one).
    initial: also record step 0, the initialisation, when the run starts fresh.
  """

  def __init__(self, measurer: Measurer, workdir: str, every: int, *, initial: bool = True):
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
      raise ValueError(f"every must be an integer >= 1 (measure after every every-th step); "
                       f"got {every!r}.")
    self.measurer, self.every, self.initial = measurer, every, initial
    self.path = os.path.join(workdir, GRADFLOW)
    self._started = False

  def _start(self, start: int):
    """First call, the run being at step ``start``: keep the records up to it, or start afresh."""
    kept = [r for r in _read_records(self.path) if r.get("step", -1) <= start] if start else []
    _write_records(self.path, kept)
    if start == 0 and self.initial:
      state = self.measurer.initial_state()
      self._append(0, state.params, state.rng)
    self._started = True

  def _append(self, step: int, params, rng):
    record = gradflow.gradflow_record(step, self.measurer(params, rng, step))
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")

  def __call__(self, step: int, state: train.TrainState):
    if not self._started:
      self._start(step - 1)
    if train.itstime(step, self.every, self.measurer.job.num_steps):
      self._append(step, state.params, state.rng)


def make_hook(config, workdir: str, every: int, *, initial: bool = True) -> GradflowHook:
  """A ``GradflowHook`` for ``config`` run in ``workdir`` (see the module docstring)."""
  return GradflowHook(Measurer(config), workdir, every, initial=initial)


def read_gradflow(workdir: str) -> tuple[np.ndarray, np.ndarray]:
  """(steps (N,), norms (N, ...)) from ``<workdir>/gradflow.jsonl``, sorted by step."""
  records = sorted(_read_records(os.path.join(workdir, GRADFLOW)), key=lambda r: r["step"])
  if not records:
    raise ValueError(f"{os.path.join(workdir, GRADFLOW)} holds no records; run training "
                     "with gradflow_train.make_hook(...) in hooks.")
  return (np.array([r["step"] for r in records]),
          np.array([r["dL_dh_norm"] for r in records], np.float64))

"""Hidden-state analyses while a model trains: dL/dh_t per step and Pascanu et al.'s Omega.

Both run the model's own apply with a zero perturbation added to every layer's
h_t (its ``perturbations`` argument, passed on to ``engine.apply_stack``); the
gradient of the loss with respect to the perturbations is dL/dh_t for every t
and layer in one backward pass. They plug into the trainer as plugins
(``rnnlab.training.plugins``), switched on by config fields:

``gradflow.every = N`` (``GradflowRecorder``): at step 0 (the initialisation),
every N steps and at the last step, one JSON object a line in
``<workdir>/gradflow.jsonl``::

    {"step": s, "dL_dh_norm": [...]}   # over t; [[...] per layer] for a stack;
                                       # [layer][direction][t] when bidirectional

Record s is measured with the parameters after s updates, on training batch s
and with the per-step rng the trainer would use next: it is the gradient that
update s + 1 differentiates (before clipping). The norm is gradflow's: the
per-example gradient d l_b / d h_t^b of the task loss, its L2 norm over hidden
units, averaged over the batch (padded steps excluded). The measurement only
reads the training state, so a run with it follows exactly the trajectory of a
run without it. A run resumed from its checkpoint of step k drops the records
after step k (they are measured again, identically); a fresh run starts the
file afresh.

``optim.omega_weight = w`` (``Omega``): the training loss becomes
``loss + w * Omega`` (``loss_and_omega``), and ``train/omega`` is logged.

``Measurer(job, loss=...)`` measures one read-out alone for analyses of their
own. A model kind is supported when it is registered in ``PERTURBABLE`` (the
classifier is).
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from rnnlab import gradflow, lm, models, tasks
from rnnlab.checks import check_int
from rnnlab.training import workdir as workdir_lib
from rnnlab.training.plugins import Plugin


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
    "lm": Perturbable(lm._stack, models.LM.apply, lm.stack_inputs),  # pylint: disable=protected-access
}


def get_perturbable(kind: str) -> Perturbable:
  """The ``Perturbable`` of ``config.model.kind``; an unsupported kind says what is needed."""
  if kind not in PERTURBABLE or not accepts_perturbations(PERTURBABLE[kind].apply):
    raise ValueError(
        f"Gradient-flow measurement does not support model.kind {kind!r}; supported: "
        f"{', '.join(sorted(PERTURBABLE))}. Register a Perturbable (its stack layout and an "
        "apply taking perturbations=[{direction: (B, T, H)}] per layer) in "
        "rnnlab.training.analyses.PERTURBABLE.")
  return PERTURBABLE[kind]


# --- the measurement -----------------------------------------------------------------------

def task_loss(task, outputs, batch):
  """The training loss of the task (the batch mean)."""
  return task.loss_and_metrics(outputs, batch)[0]


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
  """``measure(params, rng, step)``: per-step ||dL/dh_t|| of a job's model on batch ``step``.

  ``rng`` is the run's key (``TrainState.rng``); the model gets fold_in(rng, step)
  as in the trainer's step. Synthetic tasks generate the batch inside the
  compiled function, host tasks (MNIST) pass it in; either way one compile.

  Args:
    job: the run's ``rnnlab.training.job.Job`` (``job.build(config)``).
    loss: ``(task, outputs, batch) -> loss`` (batch mean or per-example) to
      differentiate; default the task's training loss. Analyses use it to
      follow one read-out alone (e.g. only the recall steps of copy).
  """

  def __init__(self, job, loss: Callable = task_loss):
    self.job = job
    perturbable = get_perturbable(job.config.model.kind)
    model_cfg, task = job.config.model, job.task
    stack = perturbable.stack(model_cfg)

    def norms(params, rng, step, batch=None):
      if batch is None:
        batch = task.train_batch(step, job.batch_size)
      x = perturbable.stack_inputs(params, batch)[1]  # what the stack reads: (B, T, D)
      zeros = gradflow.zero_perturbations(stack, x.shape[:-2], x.shape[-2], x.dtype)

      def loss_fn(perturbations):
        outputs = perturbable.apply(params, batch, task=task, model_cfg=model_cfg, train=True,
                                    rng=jax.random.fold_in(rng, step), step=step,
                                    perturbations=perturbations)
        return loss(task, outputs, batch)
      mask = gradflow.valid_mask(x, batch.get("lengths"), batch.get("mask"))
      return gradflow.dL_dh_norms_from_loss(loss_fn, zeros, mask)
    self._norms = jax.jit(norms)

  def __call__(self, params, rng, step: int, batch=None) -> np.ndarray:
    """(layers, directions, T) float64 norms on the host; ``batch`` replaces training batch
    ``step`` (e.g. a held-out batch, the same for every model compared)."""
    if batch is None and not self.job.task.on_device:
      batch = self.job.task.train_batch(int(step), self.job.batch_size)
    return np.asarray(self._norms(params, rng, jnp.int32(step), batch), np.float64)


# --- the plugins ---------------------------------------------------------------------------

class GradflowRecorder(Plugin):
  """Writes gradflow.jsonl records (see the module docstring) every ``every`` steps.

  Args:
    every: measure after every ``every``-th step (and after the last one).
    initial: also record step 0, the initialisation, when the run starts fresh.
  """
  vmap_refusal = "gradflow.every > 0 (the gradient-flow recorder measures one run at a time)"

  def __init__(self, every: int, *, initial: bool = True):
    self.every = check_int("every (measure after every every-th step)", every)
    self.initial = initial
    self.measurer = self.path = None

  def start(self, job, workdir: str, step: int, state):
    """Keeps the records up to ``step`` (a resume) or starts the file afresh."""
    if self.measurer is None or self.measurer.job is not job:
      self.measurer = Measurer(job)
    self.path = os.path.join(workdir, workdir_lib.GRADFLOW)
    kept = [r for r in workdir_lib.read_jsonl(self.path) if r.get("step", -1) <= step] \
        if step else []
    workdir_lib.write_jsonl(self.path, kept)
    if step == 0 and self.initial:
      self.act(0, state)

  def act(self, step: int, state):
    record = gradflow.gradflow_record(step, self.measurer(state.params, state.rng, step))
    workdir_lib.append_jsonl(self.path, record)


class Omega(Plugin):
  """Trains on ``loss + weight * Omega`` (``loss_and_omega``) and logs ``train/omega``."""

  def __init__(self, weight: float):
    self.weight = weight

  def wrap_loss(self, job, loss_fn):
    del loss_fn  # the task loss comes from the same perturbed pass as Omega

    def loss_with_omega(params, batch, rng, step):
      loss, metrics, omega, _ = loss_and_omega(job.task, job.config.model, params, batch,
                                               rng=rng, step=step, train=True)
      return loss + self.weight * omega, {**metrics, "omega": omega}
    return loss_with_omega


def validate(config):
  """``gradflow.every`` >= 0 and ``optim.omega_weight`` >= 0; either needs a PERTURBABLE kind."""
  every = check_int("gradflow.every", config.gradflow.every, 0)
  weight = config.optim.omega_weight
  if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight < np.inf:
    raise ValueError(f"optim.omega_weight must be a number >= 0 (0 turns Omega off); got "
                     f"{weight!r}.")
  if weight and tasks.task_class(config.task.name).stateful:
    raise ValueError(f"optim.omega_weight applies to tasks whose batches are independent; "
                     f"{config.task.name!r} carries the state across batches. Set it to 0.")
  uses = [n for n, v in (("gradflow.every", every), ("optim.omega_weight", weight)) if v]
  if uses and config.model.kind not in PERTURBABLE:
    raise ValueError(f"{' and '.join(uses)} need model.kind "
                     f"{' or '.join(map(repr, sorted(PERTURBABLE)))} (they perturb its "
                     f"recurrent stack's hidden states); got {config.model.kind!r}.")


def from_config(config) -> list[Plugin]:
  """The built-in plugins a (validated) config switches on."""
  plugins: list[Plugin] = []
  if config.optim.omega_weight:
    plugins.append(Omega(config.optim.omega_weight))
  if config.gradflow.every:
    plugins.append(GradflowRecorder(config.gradflow.every))
  return plugins


def read_gradflow(workdir: str) -> tuple[np.ndarray, np.ndarray]:
  """(steps (N,), norms (N, ...)) from ``<workdir>/gradflow.jsonl``, sorted by step."""
  path = os.path.join(workdir, workdir_lib.GRADFLOW)
  records = sorted(workdir_lib.read_jsonl(path), key=lambda r: r["step"])
  if not records:
    raise ValueError(f"{path} holds no records; train with --config.gradflow.every=N.")
  return (np.array([r["step"] for r in records]),
          np.array([r["dL_dh_norm"] for r in records], np.float64))

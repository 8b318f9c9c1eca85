"""What every task shares: the ``Task`` protocol, config checks, losses.

A task is a class registered by name in ``rnnlab.tasks.TASKS``. The class
owns its config and its checks; an instance makes batches and scores outputs::

    cfg = Task.default_config()                  # the ``task`` sub-config, commented
    Task.check(cfg_dict)                         # ValueError naming a bad field
    task = Task(cfg_dict, seed)
    batch = task.train_batch(step, batch_size)   # {"x": (B, T, D), "y": ...}
    outputs = model(batch["x"])                  # (B, K) or (B, T, K)
    loss, metrics = task.loss_and_metrics(outputs, batch)

``output_mode`` says which outputs the model produces: ``"last"`` reads out
once after the last step (many-to-one), ``"all"`` at every step (many-to-many),
``"seq2seq"`` decoder logits and tokens (``rnnlab.tasks.seq2seq``);
``model_kinds`` names the model kinds (``rnnlab.models``) that produce them.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from rnnlab import checks

Batch = dict[str, Any]


class Task:
  """Base class; subclasses set the attributes and implement the batch methods.

  Attributes:
    name: registry name.
    seq_len: T, the number of steps of the model input.
    input_size: D, features per step.
    output_size: K, classes (or 1 for regression) per read-out.
    output_mode: "last" (read out after the last step) or "all" (every step).
    baseline: metric name -> value of the trivial, memoryless predictor.
    primary_metric, higher_is_better: the metric that decides success.
    model_kinds: the ``config.model.kind`` values that fit the task.
    on_device: True when ``train_batch`` is a pure jittable JAX function of
      (step, static batch_size); False when it returns host numpy arrays.
    stateful: True when consecutive training batches continue the same streams
      (truncated BPTT): the trainer keeps the model's final carry in
      ``TrainState.carry`` and passes it as ``batch["carry"]`` to the next step;
      the model kind then has ``init_carry`` and returns {"logits", "carry"}.
  """
  name: str
  seq_len: int
  input_size: int
  output_size: int
  output_mode: str
  baseline: dict[str, float]
  primary_metric: str = "accuracy"
  higher_is_better: bool = True
  on_device: bool = True
  stateful: bool = False
  model_kinds: tuple[str, ...] = ("classifier",)

  @staticmethod
  def default_config() -> ml_collections.ConfigDict:
    """The ``task`` sub-config: ``name`` and every field the task reads, commented."""
    raise NotImplementedError

  @staticmethod
  def check(cfg: dict):
    """Raises ValueError for a bad value in ``cfg`` (its fields are already the right ones;
    ``eval_size`` is checked by the registry)."""

  def train_batch(self, step, batch_size: int) -> Batch:
    raise NotImplementedError

  # On-device tasks only: the training stream as a function of its key, so that runs
  # with different seeds can share one vmapped program (rnnlab.training.vmapped).
  # train_batch(step, B) == batch_at(stream_key, step, B).
  stream_key: jax.Array

  def batch_at(self, key: jax.Array, step, batch_size: int) -> Batch:
    raise NotImplementedError(f"task {self.name!r} is fed from the host; only on-device "
                              "tasks have batch_at.")

  def eval_batches(self, batch_size: int) -> list[Batch]:
    raise NotImplementedError

  def loss_and_metrics(self, outputs, batch: Batch):
    raise NotImplementedError

  def artifacts(self) -> dict[str, np.ndarray]:
    """Arrays the trainer saves as ``<workdir>/<name>.npy`` (none by default)."""
    return {}

  def headline(self) -> str:
    """The task and its sizes, e.g. "copy T=100 (input 120 steps)"."""
    return f"{self.name} T={self.seq_len}"

  def describe(self) -> str:
    """One line for logs: the headline and the trivial baselines."""
    words = {"loss": "baseline loss", "accuracy": "chance accuracy"}
    parts = [f"{words.get(k, k)} {v:.4f}" for k, v in self.baseline.items()]
    return ", ".join([self.headline(), *parts])


# --- config checks -------------------------------------------------------------

def config_dict(**fields) -> ml_collections.ConfigDict:
  """A ConfigDict from keyword fields, in the given order."""
  cfg = ml_collections.ConfigDict()
  for key, value in fields.items():
    cfg[key] = value
  return cfg


def as_dict(cfg) -> dict[str, Any]:
  """A ConfigDict or mapping as a plain dict of resolved values."""
  if hasattr(cfg, "to_dict"):
    return cfg.to_dict()
  if isinstance(cfg, Mapping):
    return dict(cfg)
  raise ValueError(f"A task config must be a ConfigDict or a mapping, got {type(cfg).__name__}.")


def check_int(cfg: Mapping, field: str, low: int, high: int | None = None, why: str = ""):
  """Raises ValueError unless ``cfg[field]`` is an int in [low, high]."""
  checks.check_int(f"task {cfg['name']!r}: {field}", cfg[field], low, high, why)


def check_step(step):
  """Python-int steps must index the training stream: 0 <= step < 2**32 - 1."""
  if isinstance(step, (int, np.integer)) and not 0 <= step < TRAIN_STEPS:
    raise ValueError(f"step must be in [0, {TRAIN_STEPS}), got {step}.")


# Training batches use fold_in(key, step) for step < 2**32 - 1; the last uint32
# value is kept for the held-out set so that no training step can reproduce it.
TRAIN_STEPS = 2**32 - 1
EVAL_STREAM = 2**32 - 1


def split_batches(batch: Batch, batch_size: int) -> list[Batch]:
  """Cuts a batch of N examples into consecutive batches of ``batch_size``.

  The last batch holds the remaining N mod batch_size examples, so averages
  over batches must be weighted by batch length.
  """
  checks.check_int("batch_size", batch_size)
  n = len(batch["y"])
  return [{k: v[i:i + batch_size] for k, v in batch.items()} for i in range(0, n, batch_size)]


# --- losses ----------------------------------------------------------------------

def check_outputs(task: Task, outputs, batch: Batch):
  """Raises ValueError unless outputs are (B, K) for "last" or (B, T, K) for "all"."""
  b = batch["y"].shape[0]
  want = (b, task.output_size) if task.output_mode == "last" else (b, task.seq_len,
                                                                    task.output_size)
  if tuple(outputs.shape) != want:
    raise ValueError(f"{task.name}: outputs have shape {tuple(outputs.shape)}; expected {want} "
                     f"(output_mode {task.output_mode!r}).")


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean of -log softmax(logits)[label]. logits: (..., K); labels: (...,) int."""
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Fraction of argmax(logits) == labels. logits: (..., K); labels: (...,)."""
  return jnp.mean(jnp.argmax(logits, axis=-1) == labels)


def classification(task: Task, logits, batch: Batch):
  """Cross-entropy loss and accuracy of a many-to-one classifier."""
  check_outputs(task, logits, batch)
  loss = cross_entropy(logits, batch["y"])
  return loss, {"loss": loss, "accuracy": accuracy(logits, batch["y"])}

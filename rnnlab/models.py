"""Models by kind: ``config.model.kind`` -> how to init and apply the network.

A model kind is two pure functions and a validator; the task computes the
loss from the outputs, so the trainer never assumes the model is a stack::

    init(key, task, model_cfg) -> params
    apply(params, batch, *, task, model_cfg, train: bool, rng, step) -> outputs
    validate(model_cfg)        -> None, or ValueError saying what is wrong

``outputs`` is (B, task.output_size) when ``task.output_mode == "last"`` and
(B, T, task.output_size) when it is ``"all"``.

Kind ``"classifier"``: a recurrent stack (``rnnlab.engine``, any registered
cell, stacked, bidirectional and residual optional) and a dense readout

    y = h W_out + b_out

of the top layer's hidden state at each sequence's last valid step ("last":
many-to-one classification or regression) or at every step ("all":
many-to-many). Parameters::

    {"layers": [{"fwd": cell params, ["bwd": ...]}, ...],   # engine.init_stack
     "readout": {"kernel": (H_out, O), "bias": (O,)}}        # H_out = H * directions

Kind ``"seq2seq"``: an encoder-decoder over any cell (``rnnlab.seq2seq.kind``;
its model config is ``rnnlab.seq2seq.kind.default_config()``), trained on the
seq2seq tasks (``rnnlab.tasks.seq2seq``, whose ``model_kinds`` name it).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from rnnlab import cells, engine, initializers


@dataclasses.dataclass(frozen=True)
class ModelKind:
  """What a model kind provides (see the module docstring)."""
  init: Callable
  apply: Callable
  validate: Callable


_KINDS: dict[str, ModelKind] = {}


def register(name: str, kind: ModelKind) -> ModelKind:
  """Adds a model kind (a name may be registered once)."""
  if name in _KINDS:
    raise ValueError(f"Model kind {name!r} is already registered.")
  _KINDS[name] = kind
  return kind


def names() -> list[str]:
  return sorted(_KINDS)


def get_model(name: str) -> ModelKind:
  """The registered kind called ``name``; an unknown name lists the valid ones."""
  if name not in _KINDS:
    raise ValueError(f"Unknown model.kind {name!r}. Valid kinds: {', '.join(names())}.")
  return _KINDS[name]


def validate(model_cfg):
  """Checks ``config.model`` before anything is built: the kind, then its own checks."""
  kind = get_model(model_cfg.kind)
  try:
    kind.validate(model_cfg)
  except ValueError as err:
    raise ValueError(f"model ({model_cfg.kind}): {err}") from err


# --- the classifier -------------------------------------------------------------------

def _stack(model_cfg) -> engine.Stack:
  return engine.make_stack(model_cfg.cell, model_cfg.hidden_size, model_cfg.num_layers,
                           bidirectional=model_cfg.bidirectional, residual=model_cfg.residual,
                           **cells.set_options(model_cfg.cell_options))


def _validate_classifier(model_cfg):
  cells.get_cell(model_cfg.cell)
  _stack(model_cfg)  # sizes must be positive integers
  try:
    engine.resolve_unroll(model_cfg.unroll)
  except ValueError as e:
    raise ValueError(f"model.{e}") from None
  cells.check_options(model_cfg.cell, model_cfg.cell_options)


def _classifier_init(key, task, model_cfg):
  stack = _stack(model_cfg)
  k_rnn, k_out = jax.random.split(key)
  kernel = initializers.get_initializer("lecun_normal")(
      k_out, (stack.output_size, task.output_size), jnp.float32)
  return {"layers": engine.init_stack(k_rnn, stack, task.input_size),
          "readout": {"kernel": kernel, "bias": jnp.zeros((task.output_size,), jnp.float32)}}


def _classifier_apply(params, batch, *, task, model_cfg, train, rng, step, perturbations=None):
  """batch["x"]: (B, T, D), optional "lengths" (B,) or "mask" (B, T).

  Returns (B, O) for output_mode "last", (B, T, O) for "all". ``perturbations``
  (see ``engine.apply_stack``) lets gradient-flow studies take dL/dh_t.
  """
  del train, rng, step  # deterministic: no dropout
  stack = _stack(model_cfg)
  finals, ys = engine.apply_stack(stack, params["layers"], batch["x"],
                                  lengths=batch.get("lengths"), mask=batch.get("mask"),
                                  unroll=model_cfg.unroll, remat=model_cfg.remat,
                                  perturbations=perturbations)
  features = engine.last_hidden(stack, finals) if task.output_mode == "last" else ys
  return features @ params["readout"]["kernel"] + params["readout"]["bias"]


CLASSIFIER = register("classifier", ModelKind(
    init=_classifier_init, apply=_classifier_apply, validate=_validate_classifier))


# --- the encoder-decoder --------------------------------------------------------------

# Imported here, after ModelKind exists; rnnlab.seq2seq never imports this module.
from rnnlab.seq2seq import kind as _seq2seq_kind  # pylint: disable=g-import-not-at-top,wrong-import-position

SEQ2SEQ = register("seq2seq", ModelKind(
    init=_seq2seq_kind.init, apply=_seq2seq_kind.apply, validate=_seq2seq_kind.validate))

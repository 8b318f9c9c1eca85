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

With ``model.block = "glu"`` the stack is the deep model the LRU and minGRU
papers train instead (Orvieto et al. 2023, Fig. 1): a dense input projection
D -> H, then ``num_layers`` residual blocks

    x <- x + dropout(GLU(GELU(recurrent(LayerNorm(x)))))     GLU(u) = (u W_a) * sigmoid(u W_b)

and the readout of the top block's output (at each sequence's last valid step,
or at every step). Parameters add ``"encoder"`` {kernel (D, H), bias} and
``"blocks"`` [{"norm": {scale, bias}, "glu": {kernel (H, 2H), bias}}] beside
``"layers"`` (one unidirectional recurrent layer H -> H per block).
``model.dropout`` is the blocks' dropout rate during training.

Kind ``"lm"``: a recurrent language model over token ids with its regularisers
(``rnnlab.lm``, model config ``rnnlab.lm.default_config()``), trained on
``char_lm`` with its state carried across batches.

Kind ``"seq2seq"``: an encoder-decoder over any cell (``rnnlab.seq2seq.kind``;
its model config is ``rnnlab.seq2seq.kind.default_config()``), trained on the
seq2seq tasks (``rnnlab.tasks.seq2seq``, whose ``model_kinds`` name it).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from rnnlab import cells, engine, initializers, lm


@dataclasses.dataclass(frozen=True)
class ModelKind:
  """What a model kind provides (see the module docstring)."""
  init: Callable
  apply: Callable
  validate: Callable
  # Kinds that train on stateful tasks (truncated BPTT, ``Task.stateful``):
  # ``(params, task, model_cfg, batch_size) -> carry``, the zero state of the streams.
  init_carry: Callable | None = None


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


# model.dtype -> the dtype the model computes in (None: the parameters' own, float32).
# bfloat16 is mixed precision: the training step casts the float32 parameters and the batch's
# float arrays to it for the forward and backward pass, and the outputs back to float32 for
# the loss; parameters, gradients and the optimizer state stay float32.
COMPUTE_DTYPES = {None: None, "float32": None, "bfloat16": jnp.bfloat16}


def compute_dtype(model_cfg):
  return COMPUTE_DTYPES[model_cfg.get("dtype")]


def cast_floats(tree, dtype):
  """Every floating-point leaf of ``tree`` as ``dtype`` (other leaves as they are)."""
  return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(jnp.result_type(a),
                                                                  jnp.floating) else a, tree)


def validate(model_cfg):
  """Checks ``config.model`` before anything is built: the kind, then its own checks."""
  kind = get_model(model_cfg.kind)
  dtype = model_cfg.get("dtype")
  if dtype not in COMPUTE_DTYPES:
    raise ValueError(f"model.dtype must be one of {[d for d in COMPUTE_DTYPES if d]} (or None: "
                     f"float32); got {dtype!r}.")
  try:
    kind.validate(model_cfg)
  except ValueError as err:
    raise ValueError(f"model ({model_cfg.kind}): {err}") from err
  except (AttributeError, KeyError) as err:  # a model section built for another kind
    name = str(err.args[0] if err.args else err).strip("'\"")
    raise ValueError(f"model ({model_cfg.kind}): the model section has no field {name!r} that "
                     f"kind {model_cfg.kind!r} needs; build it from configs/base.py (classifier), "
                     "rnnlab.seq2seq.kind.default_config() (seq2seq) or "
                     "rnnlab.lm.default_config() (lm).") from err


# --- the classifier -------------------------------------------------------------------

def _stack(model_cfg) -> engine.Stack:
  return engine.make_stack(model_cfg.cell, model_cfg.hidden_size, model_cfg.num_layers,
                           bidirectional=model_cfg.bidirectional, residual=model_cfg.residual,
                           **cells.set_options(model_cfg.cell_options))


BLOCKS = ("none", "glu")


def _validate_classifier(model_cfg):
  cells.get_cell(model_cfg.cell)
  _stack(model_cfg)  # sizes must be positive integers
  if model_cfg.block not in BLOCKS:
    raise ValueError(f"Unknown model.block {model_cfg.block!r}; valid: {', '.join(BLOCKS)}.")
  if model_cfg.block != "none" and model_cfg.bidirectional:
    raise ValueError("model.block='glu' runs unidirectional layers; set bidirectional False.")
  if not 0.0 <= model_cfg.dropout < 1.0:
    raise ValueError(f"model.dropout must be in [0, 1); got {model_cfg.dropout}.")
  if model_cfg.dropout and model_cfg.block == "none":
    raise ValueError("model.dropout applies inside model.block='glu' blocks; the plain stack "
                     "has none. Set model.block='glu' or leave dropout 0.")
  engine.check_config(model_cfg)


def _dense(key, n_in, n_out):
  return {"kernel": initializers.get_initializer("lecun_normal")(key, (n_in, n_out), jnp.float32),
          "bias": jnp.zeros((n_out,), jnp.float32)}


def _classifier_init(key, task, model_cfg):
  stack = _stack(model_cfg)
  k_rnn, k_out, k_enc, k_glu = jax.random.split(key, 4)
  readout = _dense(k_out, stack.output_size, task.output_size)
  if model_cfg.block == "none":
    return {"layers": engine.init_stack(k_rnn, stack, task.input_size), "readout": readout}
  h = stack.hidden_size
  blocks = [{"norm": {"scale": jnp.ones((h,), jnp.float32), "bias": jnp.zeros((h,), jnp.float32)},
             "glu": _dense(k, h, 2 * h)} for k in jax.random.split(k_glu, stack.num_layers)]
  return {"encoder": _dense(k_enc, task.input_size, h), "layers": engine.init_stack(k_rnn, stack, h),
          "blocks": blocks, "readout": readout}


def _layer_norm(p, x, eps=1e-5):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / jnp.sqrt(var + eps) * p["scale"] + p["bias"]


def _blocks_apply(params, batch, model_cfg, stack, train, rng, perturbations):
  """The residual GLU blocks (module docstring): (B, T, H) outputs, zero at padding."""
  valid = engine.resolve_mask(batch["x"], batch.get("lengths"), batch.get("mask"))
  x = batch["x"] @ params["encoder"]["kernel"] + params["encoder"]["bias"]
  rate = model_cfg.dropout if train else 0.0
  keys = jax.random.split(rng, stack.num_layers) if rate else [None] * stack.num_layers
  for i, (layer, block) in enumerate(zip(params["layers"], params["blocks"])):
    _, u = engine.scan(stack.cell, layer["fwd"], _layer_norm(block["norm"], x), mask=valid,
                       unroll=model_cfg.unroll, remat=model_cfg.remat,
                       parallel=model_cfg.parallel, fused=model_cfg.get("fused"),
                       cudnn=model_cfg.get("cudnn"), onednn=model_cfg.get("onednn"),
                       perturbation=None if perturbations is None else perturbations[i]["fwd"])
    u = jax.nn.gelu(u) @ block["glu"]["kernel"] + block["glu"]["bias"]
    a, b = jnp.split(u, 2, axis=-1)
    u = a * jax.nn.sigmoid(b)
    if rate:
      keep = jax.random.bernoulli(keys[i], 1.0 - rate, u.shape)
      u = jnp.where(keep, u / (1.0 - rate), 0.0)
    x = x + u
  return x if valid is None else jnp.where(valid[..., None], x, 0.0)


def _last_valid(ys, batch):
  """ys (B, T, H) at each sequence's last valid step: (B, H)."""
  t = ys.shape[1]
  if "lengths" in batch:
    last = jnp.asarray(batch["lengths"]) - 1
  elif "mask" in batch:
    last = t - 1 - jnp.argmax(jnp.asarray(batch["mask"])[:, ::-1], axis=1)
  else:
    return ys[:, -1]
  return jnp.take_along_axis(ys, last[:, None, None], axis=1)[:, 0]


def _classifier_apply(params, batch, *, task, model_cfg, train, rng, step, perturbations=None):
  """batch["x"]: (B, T, D), optional "lengths" (B,) or "mask" (B, T).

  Returns (B, O) for output_mode "last", (B, T, O) for "all". ``perturbations``
  (see ``engine.apply_stack``) lets gradient-flow studies take dL/dh_t.
  """
  del step
  stack = _stack(model_cfg)
  if model_cfg.block != "none":
    ys = _blocks_apply(params, batch, model_cfg, stack, train, rng, perturbations)
    features = _last_valid(ys, batch) if task.output_mode == "last" else ys
    return features @ params["readout"]["kernel"] + params["readout"]["bias"]
  finals, ys = engine.apply_stack(stack, params["layers"], batch["x"],
                                  lengths=batch.get("lengths"), mask=batch.get("mask"),
                                  unroll=model_cfg.unroll, remat=model_cfg.remat,
                                  parallel=model_cfg.parallel, fused=model_cfg.get("fused"),
                                  cudnn=model_cfg.get("cudnn"), onednn=model_cfg.get("onednn"),
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

LM = register("lm", ModelKind(init=lm.init, apply=lm.apply, validate=lm.validate,
                              init_carry=lm.init_carry))

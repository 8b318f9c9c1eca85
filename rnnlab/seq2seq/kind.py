"""The "seq2seq" model kind for the trainer: config -> parameters -> outputs.

Follows ``rnnlab.models.ModelKind``::

    init(key, task, model_cfg) -> params
    apply(params, batch, *, task, model_cfg, train, rng, step) -> outputs
    validate(model_cfg)        -> None, or ValueError saying what is wrong

and the task (``rnnlab.tasks.seq2seq``) turns the outputs into loss and metrics:

  train=True:  {"logits": (B, L, V) under the training mode,
                "teacher_forcing_prob": eps at this step (the mode, as a number to log)}
  train=False: {"logits": (B, L, V) teacher-forced (so the eval loss is the
                reference's NLL), "tokens": (B, max_len) decoded greedily or the
                best beam, "teacher_forcing_prob": 1}
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from rnnlab import cells
from rnnlab.checks import check_int
from rnnlab import engine
from rnnlab.seq2seq import decode as decode_lib
from rnnlab.seq2seq import model as model_lib
from rnnlab.seq2seq import sampling

def default_config() -> ml_collections.ConfigDict:
  """The ``model`` sub-config of a seq2seq run, every field commented.

  The first fields mirror the classifier's (configs/base.py ``model()``), so a
  seq2seq config can start from those; ``cell_options`` entries that are None
  mean the cell's default (``rnnlab.cells.INIT_OPTIONS``).
  """
  c = ml_collections.ConfigDict()
  c.kind = "seq2seq"               # model registry key
  c.cell = "lstm"                  # encoder cell (rnnlab.cells.names())
  c.hidden_size = 128              # encoder H per layer and direction
  c.num_layers = 1                 # encoder layers
  c.bidirectional = False          # bidirectional encoder (outputs 2H)
  c.residual = False               # residual connections where sizes agree (encoder and decoder)
  c.cell_options = cells.options_config()  # cell init options (cells.INIT_OPTIONS); None = default
  c.unroll = ml_collections.config_dict.placeholder(int)  # scan unroll of the encoder and
  #                                  one-pass decoder (speed only); None = 1 on CPU, 4 on GPU/TPU
  c.remat = False                  # recompute encoder/one-pass decoder steps in the backward pass
  c.dtype = ml_collections.config_dict.placeholder(str)  # compute dtype: None (float32) or "bfloat16" (mixed precision: parameters and optimizer state stay float32)
  c.parallel = ml_collections.config_dict.placeholder(bool)  # linear cells (lru, mingru,
  #                                  minlstm): associative scan over time; None = by backend
  c.decoder_cell = None            # decoder cell; None = same as cell
  c.decoder_hidden_size = None     # None = hidden_size
  c.decoder_num_layers = None      # None = num_layers
  c.embed_size = 32                # E of the source and target token embeddings
  c.bridge = "auto"                # decoder start: auto | copy | dense | zero (model.BRIDGES)
  c.attention = "none"             # none | bahdanau (additive) | general | dot (Luong's
  #                                  multiplicative scores); masked to the valid source
  c.attention_size = None          # A of the additive scorer; None = decoder hidden size
  c.reverse_source = False         # Sutskever et al. 2014: reverse the valid source tokens
  c.train_mode = "teacher_forcing"  # teacher_forcing | scheduled_sampling | free_running
  c.ss_schedule = "inverse_sigmoid"  # linear | exponential | inverse_sigmoid (Bengio 2015)
  c.ss_k = 1000.0                  # schedule constant k (inverse_sigmoid: >= 1; exp: <= 1)
  c.ss_c = 1e-4                    # linear: decay per step c
  c.ss_eps_min = 0.0               # linear: floor eps_min
  c.ss_feed = "sample"             # fed-back token: sample (from the softmax) | argmax
  c.decode = "greedy"              # eval decoding: greedy | beam
  c.beam_width = 4                 # K of beam search
  c.length_penalty = "gnmt"        # none | length (|Y|^a) | gnmt (((5+|Y|)/6)^a)
  c.length_alpha = 0.6             # alpha of the length penalty (>= 0)
  c.max_decode_len = None          # None = the task's target length
  return c


def _or(value, default):
  return default if value is None else value


def _stacks(model_cfg):
  """(encoder, decoder) ``engine.Stack``s; validates cells and sizes."""
  options = cells.set_options(model_cfg.cell_options)
  encoder = engine.make_stack(model_cfg.cell, model_cfg.hidden_size, model_cfg.num_layers,
                              bidirectional=model_cfg.bidirectional,
                              residual=model_cfg.residual, **options)
  decoder = engine.make_stack(_or(model_cfg.decoder_cell, model_cfg.cell),
                              _or(model_cfg.decoder_hidden_size, model_cfg.hidden_size),
                              _or(model_cfg.decoder_num_layers, model_cfg.num_layers),
                              residual=model_cfg.residual, **options)
  return encoder, decoder


def make_spec(task, model_cfg) -> model_lib.Spec:
  """The static model description for ``task`` (its vocabulary and special ids)."""
  encoder, decoder = _stacks(model_cfg)
  return model_lib.make_spec(
      src_vocab=task.src_vocab_size, tgt_vocab=task.tgt_vocab_size, bos_id=task.bos_id,
      eos_id=task.eos_id, pad_id=task.pad_id, embed_size=model_cfg.embed_size,
      encoder=encoder, decoder=decoder, attention=model_cfg.attention,
      attention_size=model_cfg.attention_size, bridge=model_cfg.bridge,
      reverse_source=model_cfg.reverse_source, unroll=model_cfg.unroll, remat=model_cfg.remat,
      parallel=model_cfg.parallel, src_features=task.src_features)


def _check_choice(field, value, valid):
  if value not in valid:
    raise ValueError(f"Unknown model.{field} {value!r}; valid: {', '.join(valid)}.")


def validate(model_cfg) -> None:
  """Raises ValueError on any bad field, before the task or anything else is built."""
  encoder, decoder = _stacks(model_cfg)
  for stack in (encoder, decoder):  # options a chosen cell does not take fail here, not at init
    cells.check_options(stack.cell, model_cfg.cell_options)
  check_int("embed_size", model_cfg.embed_size)
  model_lib.check_architecture(encoder, decoder, attention=model_cfg.attention,
                               attention_size=model_cfg.attention_size, bridge=model_cfg.bridge,
                               unroll=model_cfg.unroll, parallel=model_cfg.parallel)
  _check_choice("train_mode", model_cfg.train_mode, sampling.MODES)
  if model_cfg.train_mode == "scheduled_sampling":
    sampling.validate_schedule(model_cfg.ss_schedule, model_cfg.ss_k, model_cfg.ss_c,
                               model_cfg.ss_eps_min)
  _check_choice("ss_feed", model_cfg.ss_feed, tuple(sampling.FEEDS))
  _check_choice("decode", model_cfg.decode, tuple(DECODERS))
  decode_lib._check(_or(model_cfg.max_decode_len, 1), model_cfg.beam_width,  # 1: any valid
                    model_cfg.length_penalty, model_cfg.length_alpha)


def init(key: jax.Array, task, model_cfg) -> dict:
  """Parameters for ``task`` (see ``model.init_params``)."""
  return model_lib.init_params(key, make_spec(task, model_cfg))


def _teacher_forced(spec, params, enc, batch, model_cfg, rng, eps):
  del model_cfg, rng, eps
  return model_lib.teacher_forced_logits(spec, params, enc, batch["tgt_in"])


def _mixed(spec, params, enc, batch, model_cfg, rng, eps):
  if rng is None:
    raise ValueError(f"train_mode={model_cfg.train_mode!r} feeds back model outputs and needs "
                     "an rng key; got rng=None.")
  return sampling.mixed_logits(spec, params, enc, batch["tgt_in"], eps, rng,
                               feed=model_cfg.ss_feed)


# Teacher forcing takes the one-pass decoder; the other modes step token by token.
TRAIN_LOGITS = {"teacher_forcing": _teacher_forced, "scheduled_sampling": _mixed,
                "free_running": _mixed}


def _greedy_tokens(spec, params, batch, max_len, model_cfg):
  del model_cfg
  return decode_lib.greedy(spec, params, batch["src"], batch["src_len"], max_len=max_len)[0]


def _beam_tokens(spec, params, batch, max_len, model_cfg):
  tokens, _, _ = decode_lib.beam_search(
      spec, params, batch["src"], batch["src_len"], beam_width=model_cfg.beam_width,
      max_len=max_len, length_penalty=model_cfg.length_penalty, alpha=model_cfg.length_alpha)
  return tokens[:, 0]


DECODERS = {"greedy": _greedy_tokens, "beam": _beam_tokens}


def apply(params, batch, *, task, model_cfg, train: bool, rng=None, step=0) -> dict:
  """Outputs for ``task.loss_and_metrics`` (see the module docstring).

  batch: {"src" (B, S), "src_len" (B,), "tgt_in" (B, L), ...}; rng: PRNG key
  (needed by scheduled sampling and free running); step: training step (for eps).
  """
  spec = make_spec(task, model_cfg)
  enc = model_lib.encode(spec, params, batch["src"], batch["src_len"])
  if train:
    eps = sampling.teacher_forcing_prob(
        model_cfg.train_mode, step, schedule=model_cfg.ss_schedule, k=model_cfg.ss_k,
        c=model_cfg.ss_c, eps_min=model_cfg.ss_eps_min)
    logits = TRAIN_LOGITS[model_cfg.train_mode](spec, params, enc, batch, model_cfg, rng, eps)
    return {"logits": logits, "teacher_forcing_prob": eps}
  max_len = _or(model_cfg.max_decode_len, task.max_tgt_len)
  return {"logits": model_lib.teacher_forced_logits(spec, params, enc, batch["tgt_in"]),
          "tokens": DECODERS[model_cfg.decode](spec, params, batch, max_len, model_cfg),
          "teacher_forcing_prob": jnp.float32(1.0)}

"""Encoder-decoder (seq2seq) model over any registered cell, as pure functions.

Shapes: B batch, S source length, L target length, V vocabulary, E embedding,
H_d decoder hidden size, C = encoder output size (H_e times 2 if bidirectional).

    encoder:   x_j = E_src[src_j];  (h_1 .. h_S), final carries = stack(x) over j < src_len
    bridge:    decoder carries s_0 from the encoder's final carries (``BRIDGES``)
    decoder:   s_i = stack_step(s_{i-1}, [E_tgt[y_{i-1}]; c_i]),  y_0 = BOS
    attention: c_i = sum_j a_ij h_j  (additive, Bahdanau et al. 2015, or Luong et al.'s
               multiplicative scores "general" and "dot"; ``attention.py``)
    readout:   logits_i = [s_i; c_i] W_o + b_o     (s_i: top decoder layer's hidden state)

Without attention c_i is absent from the input and the readout. With it, the
context follows Bahdanau et al. 2015: computed from the previous state s_{i-1},
fed into the decoder input together with the previous token, and into the
readout (a linear readout in place of their maxout layer).

Bridge rule (``Spec.bridge``, default "auto"): when encoder and decoder use the
same cell, hidden size and layer count and the encoder is unidirectional
(``carries_match``), decoder layer l starts from encoder layer l's final carry
unchanged ("copy"). Otherwise ("dense") every carry leaf k of decoder layer l
(LSTM: c and h) is ``tanh(z_l W_lk + b_lk)``, z_l = all final carry leaves of
encoder layer l, both directions, concatenated; when the layer counts differ,
every decoder layer reads the top encoder layer. "zero" starts from zeros (the
source then reaches the decoder through attention only).

One-to-many (``Spec.src_features`` = F > 0): the source is a feature vector v
(B, F), not a token sequence, and there is no encoder: every carry leaf k of
decoder layer l is ``tanh(v W_lk + b_lk)`` (the dense bridge from the vector,
as a captioning model starts its decoder from an image feature; Vinyals et
al. 2015 feed it as the first input instead). Attention and source reversal
need a source sequence and are refused.

Source reversal (Sutskever et al. 2014) reverses the valid part of each source
sequence before the encoder; padding stays at the end.

The decoder is steppable one token at a time (``decoder_step``, ``cell.step``
inside) for scheduled sampling and decoding; teacher forcing without attention
runs the whole target through ``engine.apply_stack`` at once.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rnnlab import cells as cells_lib
from rnnlab.checks import check_int
from rnnlab import engine
from rnnlab import initializers
from rnnlab.seq2seq import attention as attention_lib
from rnnlab.seq2seq import sequences

ATTENTIONS = ("none", *attention_lib.KINDS)
BRIDGE_NAMES = ("auto", "copy", "dense", "zero")


@dataclasses.dataclass(frozen=True)
class Spec:
  """Static description of a seq2seq model (hashable: a jit static argument).

  Attributes:
    src_vocab, tgt_vocab: vocabulary sizes; bos_id, eos_id, pad_id: target ids.
    embed_size: E of both token embeddings.
    encoder: ``engine.Stack`` (may be bidirectional); decoder: unidirectional Stack.
    attention: "none", "bahdanau" (additive), "general" or "dot" (multiplicative);
      attention_size: A of the additive score (0 without attention).
    bridge: how the decoder's initial carries are made, see ``BRIDGES``:
      "auto" = "copy" when ``carries_match`` else "dense"; "copy"; "dense"; "zero".
    reverse_source: reverse the valid part of each source sequence.
    unroll, remat, parallel: ``engine.scan`` options of the encoder and of the
      one-pass (teacher-forced, attention-free) decoder; speed and memory only.
    src_features: F > 0 when the source is a (B, F) feature vector (one-to-many:
      no encoder, the decoder starts from a dense bridge of the vector); 0 for tokens.
  """
  src_vocab: int
  tgt_vocab: int
  bos_id: int
  eos_id: int
  pad_id: int
  embed_size: int
  encoder: engine.Stack
  decoder: engine.Stack
  attention: str = "none"
  attention_size: int = 0
  bridge: str = "auto"
  reverse_source: bool = False
  unroll: int | None = None
  remat: bool = False
  parallel: bool | None = None
  src_features: int = 0

  @property
  def has_attention(self) -> bool:
    return self.attention != "none"

  @property
  def context_size(self) -> int:
    return self.encoder.output_size if self.has_attention else 0

  @property
  def bridge_kind(self) -> str:
    if self.src_features:
      return "vector"
    if self.bridge == "auto":
      return "copy" if carries_match(self.encoder, self.decoder) else "dense"
    return self.bridge


def carries_match(encoder: engine.Stack, decoder: engine.Stack) -> bool:
  """True when encoder layer l's final carry can start decoder layer l unchanged:
  same cell, hidden size and layer count, and a unidirectional encoder."""
  return (encoder.cell == decoder.cell and encoder.hidden_size == decoder.hidden_size
          and encoder.num_layers == decoder.num_layers and not encoder.bidirectional)


def _choice(what, value, valid):
  if value not in valid:
    raise ValueError(f"Unknown {what} {value!r}; valid: {', '.join(valid)}.")


def check_architecture(encoder: engine.Stack, decoder: engine.Stack, *, attention="none",
                       attention_size=None, bridge="auto", unroll=None, parallel=None) -> None:
  """The vocabulary-independent checks of ``make_spec`` (a config can be checked
  before its task exists). Raises ValueError saying what is valid."""
  if decoder.bidirectional:
    raise ValueError("The decoder generates left to right; it cannot be bidirectional.")
  _choice("attention", attention, ATTENTIONS)
  _choice("bridge", bridge, BRIDGE_NAMES)
  if bridge == "copy" and not carries_match(encoder, decoder):
    raise ValueError("bridge='copy' needs the same cell, hidden size and layer count in encoder "
                     "and decoder and a unidirectional encoder; use 'dense' or 'auto'.")
  if attention != "none" and attention_size is not None:
    check_int("attention_size", attention_size)
  if attention != "none":
    attention_lib.check(attention, decoder.hidden_size, encoder.output_size)
  engine.resolve_unroll(unroll)
  for stack in (encoder, decoder):
    engine.resolve_parallel(stack.cell, parallel)


def make_spec(*, src_vocab, tgt_vocab, bos_id, eos_id, pad_id, embed_size, encoder, decoder,
              attention="none", attention_size=None, bridge="auto", reverse_source=False,
              unroll=None, remat=False, parallel=None, src_features=0) -> Spec:
  """A validated ``Spec``; attention_size None means the decoder's hidden size."""
  for name, value in (("src_vocab", src_vocab), ("tgt_vocab", tgt_vocab),
                      ("embed_size", embed_size)):
    check_int(name, value)
  for name, value in (("bos_id", bos_id), ("eos_id", eos_id), ("pad_id", pad_id)):
    if not 0 <= value < tgt_vocab:
      raise ValueError(f"{name}={value} is outside the target vocabulary [0, {tgt_vocab}).")
  check_architecture(encoder, decoder, attention=attention, attention_size=attention_size,
                     bridge=bridge, unroll=unroll, parallel=parallel)
  if src_features:
    check_int("src_features", src_features)
    if attention != "none" or reverse_source or bridge not in ("auto", "dense"):
      raise ValueError("The source of this task is a feature vector (one-to-many): the decoder "
                       "starts from a dense bridge of it, and there is no source sequence to "
                       "attend to or reverse; set attention 'none', reverse_source False and "
                       "bridge 'auto' or 'dense'.")
  size = 0
  if attention != "none":
    size = decoder.hidden_size if attention_size is None else attention_size
  return Spec(src_vocab, tgt_vocab, bos_id, eos_id, pad_id, embed_size, encoder, decoder,
              attention, size, bridge, bool(reverse_source), unroll, bool(remat), parallel,
              int(src_features))


# --- parameters ---------------------------------------------------------------------

def _dense_init(key, fan_in, fan_out, dtype):
  return {"w": initializers.get_initializer("lecun_normal")(key, (fan_in, fan_out), dtype),
          "b": jnp.zeros((fan_out,), dtype)}


def _carry_sizes(stack: engine.Stack, layer_params) -> list[int]:
  """Sizes of the carry leaves of one layer direction (LSTM: [H, H])."""
  carry = cells_lib.get_cell(stack.cell).init_carry(layer_params["fwd"], ())
  return [leaf.shape[-1] for leaf in jax.tree.leaves(carry)]


def _init_bridge(key, spec, enc_params, dec_params, dtype):
  """Per decoder layer, per carry leaf: {w: (Z, n), b: (n,)}, Z = all encoder leaves (or
  the F source features of a one-to-many model)."""
  z = spec.src_features or (
      sum(_carry_sizes(spec.encoder, enc_params[0])) * len(spec.encoder.directions))
  layer_keys = jax.random.split(key, len(dec_params))
  out = []
  for layer_key, layer in zip(layer_keys, dec_params):
    sizes = _carry_sizes(spec.decoder, layer)
    out.append([_dense_init(k, z, n, dtype)
                for k, n in zip(jax.random.split(layer_key, len(sizes)), sizes)])
  return out


def init_params(key: jax.Array, spec: Spec, dtype=jnp.float32) -> dict:
  """Parameters: embeddings N(0, 1); encoder/decoder as ``engine.init_stack``;
  readout, bridge and attention kernels LeCun-normal, biases zero."""
  k = dict(zip(("src", "tgt", "enc", "dec", "out", "bridge", "attn"), jax.random.split(key, 7)))
  e, c = spec.embed_size, spec.context_size
  normal = initializers.get_initializer("normal:1.0")
  params = {
      "tgt_embed": normal(k["tgt"], (spec.tgt_vocab, e), dtype),
      "decoder": engine.init_stack(k["dec"], spec.decoder, e + c, dtype),
      "readout": _dense_init(k["out"], spec.decoder.hidden_size + c, spec.tgt_vocab, dtype),
  }
  if not spec.src_features:
    params["src_embed"] = normal(k["src"], (spec.src_vocab, e), dtype)
    params["encoder"] = engine.init_stack(k["enc"], spec.encoder, e, dtype)
  if spec.bridge_kind in ("dense", "vector"):
    params["bridge"] = _init_bridge(k["bridge"], spec, params.get("encoder"), params["decoder"],
                                    dtype)
  if spec.has_attention:
    params["attention"] = attention_lib.init(
        k["attn"], spec.decoder.hidden_size, spec.encoder.output_size, spec.attention_size, dtype,
        kind=spec.attention)
  return params


# --- bridge: the decoder's initial carries ------------------------------------------

def _copy_bridge(spec, params, enc_finals, batch_size):
  del params, batch_size
  return [{"fwd": layer["fwd"]} for layer in enc_finals]


def _zero_bridge(spec, params, enc_finals, batch_size):
  del enc_finals
  return engine.init_carries(spec.decoder, params["decoder"], (batch_size,))


def _dense_bridge(spec, params, enc_finals, batch_size):
  """Decoder layer l, carry leaf k: tanh(z_l W_lk + b_lk), z_l = every carry leaf of
  encoder layer l (the top encoder layer when the layer counts differ), all
  directions, concatenated."""
  templates = _zero_bridge(spec, params, enc_finals, batch_size)
  same_depth = spec.encoder.num_layers == spec.decoder.num_layers
  out = []
  for l, (template, dense) in enumerate(zip(templates, params["bridge"])):
    source = enc_finals[l if same_depth else -1]
    z = jnp.concatenate([leaf for d in spec.encoder.directions
                         for leaf in jax.tree.leaves(source[d])], axis=-1)
    treedef = jax.tree.structure(template["fwd"])
    new = [jnp.tanh(z @ p["w"] + p["b"]) for p in dense]
    out.append({"fwd": jax.tree.unflatten(treedef, new)})
  return out


def _vector_bridge(spec, params, features, batch_size):
  """One-to-many: decoder layer l, carry leaf k: tanh(v W_lk + b_lk), v (B, F)."""
  templates = _zero_bridge(spec, params, None, batch_size)
  return [{"fwd": jax.tree.unflatten(jax.tree.structure(template["fwd"]),
                                     [jnp.tanh(features @ p["w"] + p["b"]) for p in dense])}
          for template, dense in zip(templates, params["bridge"])]


BRIDGES = {"copy": _copy_bridge, "dense": _dense_bridge, "zero": _zero_bridge,
           "vector": _vector_bridge}


# --- encoder, decoder step, readout -------------------------------------------------

def encode(spec: Spec, params, src: jax.Array, src_len: jax.Array) -> dict:
  """Runs the encoder and prepares everything the decoder needs.

  src: (B, S) int; src_len: (B,) >= 1 valid lengths. Returns
  {"carries": decoder initial carries [{"fwd": carry}] per layer,
   "memory": attention memory (values (B, S, C), keys, mask) or {}}.
  One-to-many (``spec.src_features``): src is the (B, F) feature vector, src_len unused.
  """
  if spec.src_features:
    features = jnp.asarray(src, jnp.float32)
    if features.ndim != 2 or features.shape[1] != spec.src_features:
      raise ValueError(f"a one-to-many source is (B, {spec.src_features}) features; got shape "
                       f"{features.shape}.")
    return {"carries": _vector_bridge(spec, params, features, features.shape[0]), "memory": {}}
  if spec.reverse_source:
    src = sequences.reverse_valid(src, src_len)
  x = params["src_embed"][src]
  finals, ys = engine.apply_stack(spec.encoder, params["encoder"], x, lengths=src_len,
                                  unroll=spec.unroll, remat=spec.remat, parallel=spec.parallel)
  carries = BRIDGES[spec.bridge_kind](spec, params, finals, src.shape[0])
  memory = {}
  if spec.has_attention:
    mask = sequences.valid_mask(src_len, src.shape[1])
    memory = attention_lib.memory(params["attention"], ys, mask)
  return {"carries": carries, "memory": memory}


def readout(params, s: jax.Array, context: jax.Array | None) -> jax.Array:
  """logits = [s; c] W_o + b_o. s: (..., H_d); context: (..., C) or None."""
  if context is not None:
    s = jnp.concatenate([s, context], axis=-1)
  return s @ params["readout"]["w"] + params["readout"]["b"]


def decoder_step(spec: Spec, params, memory: dict, carries, tokens: jax.Array):
  """One target position: feeds y_{i-1} and returns the distribution over y_i.

  tokens: (B,) ids of y_{i-1}; carries: [{"fwd": carry}] per layer.
  Returns (carries, logits (B, V), attention weights (B, S) or None).
  """
  cell = cells_lib.get_cell(spec.decoder.cell)
  x = params["tgt_embed"][tokens]
  context = weights = None
  if spec.has_attention:
    query = cell.hidden(carries[-1]["fwd"])
    context, weights = attention_lib.attend(params["attention"], memory, query)
    x = jnp.concatenate([x, context], axis=-1)
  new = []
  for layer, carry in zip(params["decoder"], carries):
    c, y = cell.step(layer["fwd"], carry["fwd"], x)
    # residual as in engine.apply_stack: where a layer's input and output sizes agree
    x = y + x if spec.decoder.residual and y.shape == x.shape else y
    new.append({"fwd": c})
  return new, readout(params, x, context), weights


def teacher_forced_logits(spec: Spec, params, enc: dict, tgt_in: jax.Array) -> jax.Array:
  """logits (B, L, V) of y_i given the reference prefix tgt_in[:, :i+1] (B, L).

  Positions past a target's length are computed too (the decoder is causal, so
  they never affect valid ones); the loss masks them.
  """
  if not spec.has_attention:  # no per-step context: one engine pass, hoisted projection
    _, ys = engine.apply_stack(spec.decoder, params["decoder"], params["tgt_embed"][tgt_in],
                               carries=enc["carries"], unroll=spec.unroll, remat=spec.remat,
                               parallel=spec.parallel)
    return readout(params, ys, None)

  def body(carries, tokens):
    carries, logits, _ = decoder_step(spec, params, enc["memory"], carries, tokens)
    return carries, logits

  _, logits = jax.lax.scan(body, enc["carries"], tgt_in.T)
  return jnp.swapaxes(logits, 0, 1)


"""Greedy decoding and beam search, batched and jitted, stopping at EOS.

Both feed the decoder its own output from y_0 = BOS for at most ``max_len``
tokens. Returned sequences hold the generated tokens y_1 .. y_n (EOS included
when one was generated) followed by PAD; a hypothesis that reaches ``max_len``
without EOS is kept as it is (truncated).

Beam search scores a hypothesis Y by its length-normalised log-probability
``log P(Y | X) / lp(|Y|)``, |Y| = number of generated tokens (EOS included), with
one of ``PENALTIES``:

    none:   lp = 1
    length: lp = |Y| ** alpha
    gnmt:   lp = ((5 + |Y|) / 6) ** alpha        (Wu et al. 2016, GNMT)

Each step expands every live hypothesis by every token and keeps the best K
candidates by log-probability; those ending in EOS leave the beam for the
finished pool (the best K finished by score are kept), the others stay live.
So the beam narrows as hypotheses finish, and width 1 is greedy decoding
exactly. (Keeping 2K candidates so that K stay live, as GNMT/T5 do, would let
width 1 return an early-EOS hypothesis that beats a greedy output truncated at
max_len.) The search stops at ``max_len``, when nothing is live, or once no
live hypothesis can beat the K-th finished one: log-probabilities only fall as
tokens are added and lp grows with |Y| (alpha >= 0), so logP_live / lp(max_len)
bounds every continuation.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnnlab.checks import check_int
from rnnlab.seq2seq import model as model_lib

PENALTIES = {
    "none": lambda n, alpha: jnp.ones_like(n, jnp.float32),
    "length": lambda n, alpha: jnp.asarray(n, jnp.float32) ** alpha,
    "gnmt": lambda n, alpha: ((5.0 + jnp.asarray(n, jnp.float32)) / 6.0) ** alpha,
}


def _check(max_len, beam_width=1, length_penalty="none", alpha=0.0):
  check_int("max_len", max_len)
  check_int("beam_width", beam_width)
  if length_penalty not in PENALTIES:
    raise ValueError(f"Unknown length_penalty {length_penalty!r}; valid: {', '.join(PENALTIES)}.")
  if alpha < 0:
    raise ValueError(f"length-penalty alpha must be >= 0 (the search's stopping bound needs "
                     f"lp to grow with length), got {alpha}.")


@functools.partial(jax.jit, static_argnames=("spec", "max_len"))
def greedy(spec, params, src: jax.Array, src_len: jax.Array, *, max_len: int):
  """Feeds back the argmax token. src: (B, S); src_len: (B,).

  Returns (tokens (B, max_len) int32, lengths (B,) = generated tokens incl. EOS).
  """
  _check(max_len)
  enc = model_lib.encode(spec, params, src, src_len)
  b = src.shape[0]

  def cond(s):
    t, _, _, done, _, _ = s
    return (t < max_len) & ~jnp.all(done)

  def body(s):
    t, carries, prev, done, tokens, lengths = s
    carries, logits, _ = model_lib.decoder_step(spec, params, enc["memory"], carries, prev)
    tok = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    tokens = tokens.at[:, t].set(jnp.where(done, spec.pad_id, tok))
    ends = ~done & (tok == spec.eos_id)
    return t + 1, carries, tok, done | ends, tokens, jnp.where(ends, t + 1, lengths)

  state = (0, enc["carries"], jnp.full((b,), spec.bos_id, jnp.int32), jnp.zeros((b,), bool),
           jnp.full((b, max_len), spec.pad_id, jnp.int32), jnp.full((b,), max_len, jnp.int32))
  _, _, _, _, tokens, lengths = jax.lax.while_loop(cond, body, state)
  return tokens, lengths


class _Beams(NamedTuple):
  """Search state. Live: (B, K, ...) with decoder carries flat as (B*K, ...)."""
  t: jax.Array
  carries: object
  last: jax.Array        # (B, K) token fed next
  live_tokens: jax.Array  # (B, K, max_len)
  live_logp: jax.Array   # (B, K), -inf for empty slots
  fin_tokens: jax.Array  # (B, K, max_len)
  fin_score: jax.Array   # (B, K) normalised, sorted descending, -inf for empty
  fin_len: jax.Array     # (B, K)


def _gather(a, index):
  """a: (B, N, ...), index: (B, M) -> (B, M, ...)."""
  return jax.vmap(lambda row, i: row[i])(a, index)


def _merge(tokens, score, lengths, new_tokens, new_score, new_len, k):
  """Best k of the union of two (B, ., ...) hypothesis pools, by score."""
  score = jnp.concatenate([score, new_score], axis=1)
  best, index = jax.lax.top_k(score, k)
  tokens = _gather(jnp.concatenate([tokens, new_tokens], axis=1), index)
  lengths = _gather(jnp.concatenate([lengths, new_len], axis=1), index)
  return tokens, best, lengths


def _expand(step_fn, s: _Beams, *, k, eos_id, lp):
  """One beam-search step (see the module docstring)."""
  b = s.live_logp.shape[0]
  carries, logits = step_fn(s.carries, s.last.reshape(-1))
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  v = logp.shape[-1]
  cand = (s.live_logp[..., None] + logp.reshape(b, k, v)).reshape(b, k * v)
  top_logp, top = jax.lax.top_k(cand, k)
  beam, tok = top // v, (top % v).astype(jnp.int32)
  seqs = _gather(s.live_tokens, beam).at[:, :, s.t].set(tok)
  is_eos = tok == eos_id
  n = jnp.full(tok.shape, s.t + 1, jnp.int32)
  fin = _merge(s.fin_tokens, s.fin_score, s.fin_len, seqs,
               jnp.where(is_eos, top_logp / lp(n), -jnp.inf), n, k)
  rows = (jnp.arange(b)[:, None] * k + beam).reshape(-1)
  carries = jax.tree.map(lambda a: a[rows], carries)
  live_logp = jnp.where(is_eos, -jnp.inf, top_logp)  # finished ones leave the beam
  return _Beams(s.t + 1, carries, tok, seqs, live_logp, *fin)


def search(step_fn, carries, batch_size: int, *, bos_id: int, eos_id: int, pad_id: int,
           beam_width: int, max_len: int, length_penalty: str = "gnmt", alpha: float = 0.6):
  """Beam search over any step function (model-independent core).

  step_fn(carries, tokens (N,)) -> (carries, logits (N, V)) with N = B*K, row
  b*K + j for beam j of batch item b; carries: decoder state for N rows.
  Returns (tokens (B, K, max_len), scores (B, K) sorted descending, lengths (B, K));
  a slot no hypothesis reached has score -inf.
  """
  _check(max_len, beam_width, length_penalty, alpha)
  k, b = beam_width, batch_size
  lp = functools.partial(PENALTIES[length_penalty], alpha=alpha)
  empty = jnp.full((b, k, max_len), pad_id, jnp.int32)
  start_logp = jnp.where(jnp.arange(k) == 0, 0.0, -jnp.inf)  # one start, no duplicates
  s = _Beams(jnp.int32(0), carries, jnp.full((b, k), bos_id, jnp.int32), empty,
             jnp.broadcast_to(start_logp, (b, k)), empty, jnp.full((b, k), -jnp.inf),
             jnp.zeros((b, k), jnp.int32))

  def cond(s):
    bound = jnp.max(s.live_logp, axis=1) / lp(max_len)
    return (s.t < max_len) & ~jnp.all(s.fin_score[:, -1] >= bound)

  s = jax.lax.while_loop(cond, functools.partial(_expand, step_fn, k=k, eos_id=eos_id, lp=lp), s)
  # Live hypotheses count as truncated outputs only if they reached max_len.
  truncated = jnp.where(s.t == max_len, s.live_logp / lp(max_len), -jnp.inf)
  return _merge(s.fin_tokens, s.fin_score, s.fin_len, s.live_tokens, truncated,
                jnp.full((b, k), max_len, jnp.int32), k)


@functools.partial(jax.jit, static_argnames=("spec", "beam_width", "max_len",
                                             "length_penalty", "alpha"))
def beam_search(spec, params, src: jax.Array, src_len: jax.Array, *, beam_width: int,
                max_len: int, length_penalty: str = "gnmt", alpha: float = 0.6):
  """Beam search for the seq2seq model. src: (B, S); src_len: (B,).

  Returns (tokens (B, K, max_len), scores (B, K) best first, lengths (B, K)).
  """
  _check(max_len, beam_width, length_penalty, alpha)
  enc = model_lib.encode(spec, params, src, src_len)
  tiled = jax.tree.map(lambda a: jnp.repeat(a, beam_width, axis=0), enc)

  def step_fn(carries, tokens):
    carries, logits, _ = model_lib.decoder_step(spec, params, tiled["memory"], carries, tokens)
    return carries, logits

  return search(step_fn, tiled["carries"], src.shape[0], bos_id=spec.bos_id,
                eos_id=spec.eos_id, pad_id=spec.pad_id, beam_width=beam_width,
                max_len=max_len, length_penalty=length_penalty, alpha=alpha)


@functools.partial(jax.jit, static_argnames=("spec",))
def sequence_logprob(spec, params, src, src_len, tokens, lengths) -> jax.Array:
  """log P(Y | X) of given outputs under the model (teacher forcing). tokens: (B, L)
  generated tokens y_1.. (as returned by the decoders); lengths: (B,). Returns (B,)."""
  b = tokens.shape[0]
  tgt_in = jnp.concatenate([jnp.full((b, 1), spec.bos_id, jnp.int32), tokens[:, :-1]], axis=1)
  enc = model_lib.encode(spec, params, src, src_len)
  logp = jax.nn.log_softmax(model_lib.teacher_forced_logits(spec, params, enc, tgt_in), axis=-1)
  picked = jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]
  return jnp.sum(jnp.where(jnp.arange(tokens.shape[1]) < lengths[:, None], picked, 0.0), axis=1)

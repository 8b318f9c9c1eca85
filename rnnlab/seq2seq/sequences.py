"""Token-array helpers shared by the seq2seq model and task generators.

Sequences are right-padded int32 arrays ``(B, T)`` with a length vector
``(B,)``: positions ``t < length`` are valid, the rest hold ``pad_id``.
Everything here is pure JAX and jittable.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def valid_mask(lengths: jax.Array, width: int) -> jax.Array:
  """lengths: (B,) -> (B, width) bool, True at t < length."""
  return jnp.arange(width) < jnp.asarray(lengths)[:, None]


def reverse_valid(tokens: jax.Array, lengths: jax.Array) -> jax.Array:
  """Reverses the valid prefix of every row; padding stays at the end.

  tokens: (B, T); lengths: (B,). Row b becomes
  ``tokens[b, n-1], ..., tokens[b, 0], tokens[b, n], ..., tokens[b, T-1]``
  with n = lengths[b] (Sutskever et al. 2014 reverse the source this way).
  """
  t = jnp.arange(tokens.shape[1])
  n = jnp.asarray(lengths)[:, None]
  index = jnp.where(t < n, n - 1 - t, t)
  return jnp.take_along_axis(tokens, index, axis=1)


def decoder_pair(body: jax.Array, lengths: jax.Array, *, bos_id: int, eos_id: int,
                 pad_id: int):
  """Target tokens for teacher forcing from a right-padded answer body.

  body: (B, W) answer tokens, valid where t < lengths. Returns
  ``(tgt_in, tgt_out, tgt_len)`` with tgt_in, tgt_out: (B, W + 1) and
  tgt_len = lengths + 1 (the EOS counts)::

      tgt_out = y_1 ... y_n EOS pad ...
      tgt_in  = BOS y_1 ... y_n pad ...     (tgt_in[t] = tgt_out[t-1], tgt_in[0] = BOS)
  """
  b, w = body.shape
  lengths = jnp.asarray(lengths, jnp.int32)
  padded = jnp.concatenate([body, jnp.full((b, 1), pad_id, body.dtype)], axis=1)
  t = jnp.arange(w + 1)
  tgt_out = jnp.where(t < lengths[:, None], padded, pad_id)
  tgt_out = jnp.where(t == lengths[:, None], eos_id, tgt_out)
  shifted = jnp.concatenate([jnp.full((b, 1), bos_id, body.dtype), tgt_out[:, :-1]], axis=1)
  tgt_in = jnp.where(t <= lengths[:, None], shifted, pad_id)
  return tgt_in.astype(jnp.int32), tgt_out.astype(jnp.int32), lengths + 1


def pack(pieces, width: int, pad_id: int):
  """Concatenates ragged pieces row by row into a right-padded (B, width) array.

  pieces: sequence of (tokens (B, w_i), counts (B,)); the first counts[b]
  tokens of each piece are written one after the other. Returns
  ``(packed (B, width), total_counts (B,))``; the caller sizes ``width`` to
  hold the longest row (anything beyond it would be dropped).
  """
  b = pieces[0][0].shape[0]
  out = jnp.full((b, width), pad_id, jnp.int32)
  rows = jnp.arange(b)[:, None]
  offset = jnp.zeros((b,), jnp.int32)
  for tokens, counts in pieces:
    k = jnp.arange(tokens.shape[1])
    pos = jnp.where(k < counts[:, None], offset[:, None] + k, width)  # width = dropped
    out = out.at[rows, pos].set(tokens.astype(jnp.int32), mode="drop")
    offset = offset + counts
  return out, offset


def decimal_digits(n: jax.Array, width: int):
  """Decimal digits of non-negative ints, most significant first, left-aligned.

  n: (B,) int32 < 10**width. Returns (digits (B, width) in 0..9, zero beyond
  the count; counts (B,)), e.g. 47 -> [4, 7, 0, ...], 2 (0 has one digit).
  """
  n = jnp.asarray(n, jnp.int32)
  powers = 10 ** jnp.arange(1, width, dtype=jnp.int32)
  counts = 1 + jnp.sum(n[:, None] >= powers, axis=1).astype(jnp.int32)
  p = jnp.arange(width)
  exponent = jnp.clip(counts[:, None] - 1 - p, 0, None)
  digits = (n[:, None] // 10 ** exponent) % 10
  return jnp.where(p < counts[:, None], digits, 0), counts


def token_nll(logits: jax.Array, targets: jax.Array, lengths: jax.Array) -> jax.Array:
  """Mean cross-entropy over valid positions t < lengths (EOS included).

  logits: (B, L, V); targets: (B, L); lengths: (B,).
  """
  logp = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
  mask = valid_mask(lengths, targets.shape[1])
  return jnp.sum(jnp.where(mask, nll, 0.0)) / jnp.maximum(jnp.sum(mask), 1)

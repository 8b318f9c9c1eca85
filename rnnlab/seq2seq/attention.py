"""Additive (Bahdanau) attention over encoder outputs, masked to valid positions.

Bahdanau, Cho & Bengio 2015, eq. (6) and the alignment model of their appendix:

    e_ij = v . tanh(W_q s_{i-1} + W_k h_j)
    a_ij = exp(e_ij) / sum_{k valid} exp(e_ik)      for valid j, a_ij = 0 on padding
    c_i  = sum_j a_ij h_j

s_{i-1} is the decoder's previous (top-layer) hidden state, h_j the encoder
output at source position j. ``W_k h_j`` does not depend on i, so it is
computed once per source sequence (``keys``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnnlab import initializers


def init(key: jax.Array, query_size: int, value_size: int, attention_size: int, dtype=jnp.float32):
  """Parameters w_q: (H_d, A), w_k: (C, A), v: (A,), all LeCun-normal."""
  k_q, k_k, k_v = jax.random.split(key, 3)
  lecun = initializers.get_initializer("lecun_normal")
  return {"w_q": lecun(k_q, (query_size, attention_size), dtype),
          "w_k": lecun(k_k, (value_size, attention_size), dtype),
          "v": lecun(k_v, (attention_size, 1), dtype)[:, 0]}


def memory(params, values: jax.Array, mask: jax.Array) -> dict:
  """What every decoder step attends to. values: (B, S, C); mask: (B, S) bool.

  Returns {"values": (B, S, C), "keys": (B, S, A) = values W_k, "mask": (B, S)}.
  """
  return {"values": values, "keys": values @ params["w_k"], "mask": mask}


def masked_softmax(scores: jax.Array, mask: jax.Array) -> jax.Array:
  """Softmax over the last axis restricted to ``mask``; exactly 0 where mask is False.

  Each row needs at least one valid position (an all-padding row is NaN).
  """
  return jax.nn.softmax(jnp.where(mask, scores, -jnp.inf), axis=-1)


def attend(params, mem: dict, query: jax.Array):
  """query: (B, H_d) = s_{i-1}. Returns (context c_i (B, C), weights a_i (B, S))."""
  q = query @ params["w_q"]                                         # (B, A)
  scores = jnp.tanh(q[:, None, :] + mem["keys"]) @ params["v"]      # (B, S)
  weights = masked_softmax(scores, mem["mask"])
  context = jnp.einsum("bs,bsc->bc", weights, mem["values"])
  return context, weights

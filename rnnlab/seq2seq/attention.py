"""Attention over encoder outputs, masked to valid positions: additive or multiplicative scores.

    a_ij = exp(e_ij) / sum_{k valid} exp(e_ik)      for valid j, a_ij = 0 on padding
    c_i  = sum_j a_ij h_j

with the score e_ij of the query q = s_{i-1} (the decoder's previous top-layer
hidden state) and the encoder output h_j at source position j:

    "bahdanau"  e_ij = v . tanh(W_q q + W_k h_j)   (additive; Bahdanau, Cho & Bengio
                                                     2015, eq. 6 and their appendix)
    "general"   e_ij = q . (W_a h_j)                (multiplicative; Luong, Pham &
    "dot"       e_ij = q . h_j                       Manning 2015, eq. 8; dot needs
                                                     H_d = C)

The part that depends only on h_j (``W_k h_j``, ``W_a h_j``) is computed once per
source sequence (``keys``). The placement is rnnlab's for every score (see
``rnnlab.seq2seq.model``): the query is s_{i-1} and c_i enters the decoder input and
the readout. Luong et al. score the *current* state s_i instead and feed an
attentional state tanh(W_c [c_i; s_i]) back ("input feeding"); that placement is not
implemented, only their scores.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnnlab import initializers


KINDS = ("bahdanau", "general", "dot")


def check(kind: str, query_size: int, value_size: int):
  """Raises ValueError for an unknown score or a dot score between sizes that differ."""
  if kind not in KINDS:
    raise ValueError(f"Unknown attention {kind!r}; valid: none, {', '.join(KINDS)}.")
  if kind == "dot" and query_size != value_size:
    raise ValueError(f"attention='dot' needs the decoder's hidden size ({query_size}) to equal "
                     f"the encoder's output size ({value_size}; twice the hidden size when "
                     "bidirectional); use 'general', which learns W_a, or match the sizes.")


def init(key: jax.Array, query_size: int, value_size: int, attention_size: int,
         dtype=jnp.float32, kind: str = "bahdanau"):
  """Parameters, LeCun-normal. bahdanau: w_q (H_d, A), w_k (C, A), v (A,);
  general: w_a (C, H_d); dot: none."""
  check(kind, query_size, value_size)
  lecun = initializers.get_initializer("lecun_normal")
  if kind == "dot":
    return {}
  if kind == "general":
    return {"w_a": lecun(key, (value_size, query_size), dtype)}
  k_q, k_k, k_v = jax.random.split(key, 3)
  return {"w_q": lecun(k_q, (query_size, attention_size), dtype),
          "w_k": lecun(k_k, (value_size, attention_size), dtype),
          "v": lecun(k_v, (attention_size, 1), dtype)[:, 0]}


def memory(params, values: jax.Array, mask: jax.Array) -> dict:
  """What every decoder step attends to. values: (B, S, C); mask: (B, S) bool.

  Returns {"values": (B, S, C), "keys", "mask": (B, S)}; keys: values W_k (B, S, A)
  for bahdanau, values W_a (B, S, H_d) for general, the values for dot.
  """
  if "w_k" in params:
    keys = values @ params["w_k"]
  elif "w_a" in params:
    keys = values @ params["w_a"]
  else:
    keys = values
  return {"values": values, "keys": keys, "mask": mask}


def masked_softmax(scores: jax.Array, mask: jax.Array) -> jax.Array:
  """Softmax over the last axis restricted to ``mask``; exactly 0 where mask is False.

  Each row needs at least one valid position (an all-padding row is NaN).
  """
  return jax.nn.softmax(jnp.where(mask, scores, -jnp.inf), axis=-1)


def attend(params, mem: dict, query: jax.Array):
  """query: (B, H_d) = s_{i-1}. Returns (context c_i (B, C), weights a_i (B, S))."""
  if "w_q" in params:  # additive
    q = query @ params["w_q"]                                       # (B, A)
    scores = jnp.tanh(q[:, None, :] + mem["keys"]) @ params["v"]    # (B, S)
  else:  # multiplicative: q . keys_j
    scores = jnp.einsum("bh,bsh->bs", query, mem["keys"])
  weights = masked_softmax(scores, mem["mask"])
  context = jnp.einsum("bs,bsc->bc", weights, mem["values"])
  return context, weights

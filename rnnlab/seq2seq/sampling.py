"""Training modes: teacher forcing, scheduled sampling, free running.

Scheduled sampling (Bengio, Vinyals, Jaitly & Shazeer 2015): at every target
position i > 0 of every sequence, a coin with probability eps picks the
reference token y_{i-1} as the decoder input, otherwise the model's own
previous output, drawn from its distribution (``feed="sample"``) or its argmax
(``feed="argmax"``). eps decays with the training step i by one of the
paper's schedules (``SCHEDULES``)::

    linear:           eps_i = max(eps_min, k - c * i)
    exponential:      eps_i = k ** i                  (k < 1)
    inverse_sigmoid:  eps_i = k / (k + exp(i / k))    (k >= 1)

Teacher forcing is eps = 1 and free running eps = 0 (``MODES``). The choice of
input is not differentiated through (the sampled token is discrete).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnnlab.seq2seq import model as model_lib

SCHEDULES = {
    "linear": lambda i, k, c, eps_min: jnp.maximum(eps_min, k - c * i),
    "exponential": lambda i, k, c, eps_min: jnp.power(k, i),
    "inverse_sigmoid": lambda i, k, c, eps_min: k / (k + jnp.exp(i / k)),
}

# Valid ranges of the schedule constants: (check on (k, c, eps_min), message).
_SCHEDULE_CHECKS = {
    "linear": (lambda k, c, e: 0 <= e <= 1 and c >= 0 and k >= e,
               "linear needs 0 <= eps_min <= k, c >= 0"),
    "exponential": (lambda k, c, e: 0 < k <= 1, "exponential needs 0 < k <= 1"),
    "inverse_sigmoid": (lambda k, c, e: k >= 1, "inverse_sigmoid needs k >= 1"),
}

FEEDS = {
    "sample": lambda key, logits: jax.random.categorical(key, logits, axis=-1),
    "argmax": lambda key, logits: jnp.argmax(logits, axis=-1),
}

MODES = ("teacher_forcing", "scheduled_sampling", "free_running")


def validate_schedule(schedule: str, k: float, c: float, eps_min: float) -> None:
  if schedule not in SCHEDULES:
    raise ValueError(f"Unknown scheduled-sampling schedule {schedule!r}; "
                     f"valid: {', '.join(SCHEDULES)}.")
  check, message = _SCHEDULE_CHECKS[schedule]
  if not check(k, c, eps_min):
    raise ValueError(f"Bad scheduled-sampling constants k={k}, c={c}, eps_min={eps_min}: "
                     f"{message}.")


def teacher_forcing_prob(mode: str, step, *, schedule="inverse_sigmoid", k=1.0, c=0.0,
                         eps_min=0.0) -> jax.Array:
  """eps at training step ``step`` (scalar float32; jittable in step)."""
  if mode not in MODES:
    raise ValueError(f"Unknown training mode {mode!r}; valid: {', '.join(MODES)}.")
  fixed = {"teacher_forcing": 1.0, "free_running": 0.0}
  if mode in fixed:
    return jnp.float32(fixed[mode])
  i = jnp.asarray(step, jnp.float32)
  return jnp.asarray(SCHEDULES[schedule](i, k, c, eps_min), jnp.float32)


def mixed_logits(spec, params, enc: dict, tgt_in: jax.Array, eps, key: jax.Array,
                 feed: str = "sample") -> jax.Array:
  """Decoder logits (B, L, V) when each input is the reference with probability eps.

  tgt_in: (B, L) reference decoder inputs (tgt_in[:, 0] = BOS, always fed);
  eps: scalar in [0, 1]; key: PRNG key for the coins and the sampled tokens.
  Position i > 0 gets tgt_in[:, i] where u_i < eps (u_i ~ U[0, 1) per sequence
  and position), else FEEDS[feed](logits_{i-1}).
  """
  if feed not in FEEDS:
    raise ValueError(f"Unknown feed {feed!r}; valid: {', '.join(FEEDS)}.")
  b, length = tgt_in.shape
  coin_key, token_key = jax.random.split(key)
  use_reference = jax.random.uniform(coin_key, (length, b)) < eps
  use_reference = use_reference.at[0].set(True)
  token_keys = jax.random.split(token_key, length)

  def body(state, inp):
    carries, prev_logits = state
    reference, take_reference, k = inp
    own = jax.lax.stop_gradient(FEEDS[feed](k, prev_logits))
    tokens = jnp.where(take_reference, reference, own).astype(jnp.int32)
    carries, logits, _ = model_lib.decoder_step(spec, params, enc["memory"], carries, tokens)
    return (carries, logits), logits

  init_logits = jnp.zeros((b, spec.tgt_vocab), params["readout"]["w"].dtype)
  _, logits = jax.lax.scan(body, (enc["carries"], init_logits),
                           (tgt_in.T, use_reference, token_keys))
  return jnp.swapaxes(logits, 0, 1)

"""The "lm" model kind: a recurrent language model with the regularisers RNN LMs train with.

    e_t = E[x_t]                                       E (V, embed_size)
    h^0_t = drop(e_t);   h^l_t = drop(cell_l(h^l_{t-1}, h^(l-1)_t))   l = 1..num_layers
    logits_t = h^L_t W + b                             W (H, V), or E^T when tied

Follows ``rnnlab.models.ModelKind``; ``apply`` returns ``{"logits": (B, T, V),
"carry": final carries}`` and reads ``batch["carry"]`` (the previous batch's
final carries, truncated BPTT; zeros when absent or when ``batch["reset"]``).
Parameters::

    {"embed": (V, E), "layers": [{"fwd": cell params}, ...],
     "readout": {"kernel": (H, V), "bias": (V,)}}       # tied: {"bias": (V,)} only

Regularisers (training only; every one is off at evaluation):
  ``dropout``: dropout of rate p on the embeddings, between layers and before
    the readout (Zaremba et al. 2014), a fresh mask at every step;
  ``variational``: those masks drawn once per sequence and shared by every step
    (Gal & Ghahramani 2016's locked dropout);
  ``recurrent_dropout``: a locked dropout mask on h_{t-1} where the cell reads it
    (Gal & Ghahramani 2016; cells whose h enters only through W_h: rnn, irnn, the
    LSTMs);
  ``zoneout``: each unit of the carry keeps its previous value with probability z
    (Krueger et al. 2017); at evaluation the carry is the expectation z c_{t-1} +
    (1 - z) c_t;
  ``tie_embeddings``: the readout is E^T (Press & Wolf 2017; Inan et al. 2017):
    needs embed_size = hidden_size;
  the layer-normalised LSTM (Ba et al. 2016) is the cell ``lstm_ln``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from rnnlab import cells, engine, initializers
from rnnlab.checks import check_int


def default_config() -> ml_collections.ConfigDict:
  """The ``model`` sub-config of a language model, every field commented."""
  c = ml_collections.ConfigDict()
  c.kind = "lm"                    # model registry key
  c.cell = "lstm"                  # rnnlab.cells.names(); lstm_ln = layer-normalised LSTM
  c.hidden_size = 256              # H per layer
  c.num_layers = 2                 # stacked recurrent layers
  c.cell_options = cells.options_config()  # cell init options (cells.INIT_OPTIONS); None = default
  c.unroll = ml_collections.config_dict.placeholder(int)  # scan unroll (speed only);
  #                                  None = 1 on CPU, 4 on GPU/TPU
  c.remat = False                  # recompute steps in the backward pass (less memory)
  c.dtype = ml_collections.config_dict.placeholder(str)  # compute dtype: None (float32) or "bfloat16" (mixed precision: parameters and optimizer state stay float32)
  c.parallel = ml_collections.config_dict.placeholder(bool)  # linear cells: associative
  #                                  scan over time; None = by backend
  c.fused = ml_collections.config_dict.placeholder(bool)  # fused backward pass; None =
  #                                  engine.FUSED_DEFAULT where it applies
  c.cudnn = ml_collections.config_dict.placeholder(bool)  # plain lstm on cuDNN (CUDA GPU);
  #                                  None = engine.CUDNN_DEFAULT where it applies
  c.onednn = ml_collections.config_dict.placeholder(bool)  # plain lstm or gru on oneDNN (CPU,
  #                                  full-length sequences); None = engine.ONEDNN_DEFAULT (on)
  #                                  where it applies
  c.embed_size = ml_collections.config_dict.placeholder(int)  # E; None = hidden_size
  c.dropout = 0.0                  # dropout on embeddings, between layers, before the readout
  c.variational = False            # those dropout masks locked over time (Gal & Ghahramani)
  c.recurrent_dropout = 0.0        # locked dropout on h_(t-1) inside the recurrence (Gal)
  c.zoneout = 0.0                  # probability a carry unit keeps its value (Krueger et al.)
  c.tie_embeddings = False         # readout = embedding^T (needs embed_size = hidden_size)
  return c


def _embed_size(model_cfg) -> int:
  return model_cfg.hidden_size if model_cfg.embed_size is None else model_cfg.embed_size


def _stack(model_cfg) -> engine.Stack:
  return engine.make_stack(model_cfg.cell, model_cfg.hidden_size, model_cfg.num_layers,
                           **cells.set_options(model_cfg.cell_options))


def _rate(model_cfg, field: str) -> float:
  value = model_cfg[field]
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
    raise ValueError(f"model.{field} must be a rate in [0, 1); got {value!r}.")
  return float(value)


def validate(model_cfg):
  cell = cells.get_cell(model_cfg.cell)
  _stack(model_cfg)
  check_int("model.embed_size", _embed_size(model_cfg))
  for field in ("dropout", "recurrent_dropout", "zoneout"):
    _rate(model_cfg, field)
  if model_cfg.variational and not model_cfg.dropout:
    raise ValueError("model.variational locks the dropout masks over time; set model.dropout "
                     "> 0 too (or variational False).")
  if model_cfg.recurrent_dropout and not cell.hidden_only_in_w_h:
    valid = [n for n in cells.names() if cells.get_cell(n).hidden_only_in_w_h]
    raise ValueError(f"model.recurrent_dropout needs a cell whose h_(t-1) enters the step only "
                     f"through W_h; {cell.name!r} is not one. Cells that take it: "
                     f"{', '.join(valid)}.")
  if model_cfg.zoneout and cell.linear is not None:
    raise ValueError(f"model.zoneout applies to the classic cells; {cell.name!r} is a linear "
                     "recurrence.")
  if model_cfg.tie_embeddings and _embed_size(model_cfg) != model_cfg.hidden_size:
    raise ValueError(f"model.tie_embeddings reads out with the embedding matrix, so "
                     f"embed_size ({_embed_size(model_cfg)}) must equal hidden_size "
                     f"({model_cfg.hidden_size}); set embed_size None or equal.")
  engine.check_config(model_cfg, zoneout=bool(model_cfg.zoneout),
                      recurrent_dropout=bool(model_cfg.recurrent_dropout))


def init(key, task, model_cfg):
  stack = _stack(model_cfg)
  k_emb, k_rnn, k_out = jax.random.split(key, 3)
  e, v = _embed_size(model_cfg), task.vocab_size
  params = {"embed": jax.random.normal(k_emb, (v, e), jnp.float32) / jnp.sqrt(float(e)),
            "layers": engine.init_stack(k_rnn, stack, e),
            "readout": {"bias": jnp.zeros((v,), jnp.float32)}}
  if not model_cfg.tie_embeddings:
    params["readout"]["kernel"] = initializers.get_initializer("lecun_normal")(
        k_out, (stack.output_size, v), jnp.float32)
  return params


def init_carry(params, task, model_cfg, batch_size: int):
  """Zero carries for ``batch_size`` streams: [{"fwd": carry}] per layer."""
  del task
  return engine.init_carries(_stack(model_cfg), params["layers"], (batch_size,))


def _dropout(key, x, rate: float, locked: bool):
  """x (B, T, F) with units dropped at ``rate`` and the rest scaled by 1 / (1 - rate); a
  locked mask is drawn once per sequence (B, 1, F) and shared by every step."""
  shape = (x.shape[0], 1, x.shape[-1]) if locked else x.shape
  keep = jax.random.bernoulli(key, 1.0 - rate, shape)
  return jnp.where(keep, x / (1.0 - rate), 0.0)


def apply(params, batch, *, task, model_cfg, train, rng, step, perturbations=None):
  """batch["x"]: (B, T) int ids; optional "carry" (``init_carry``'s structure) and
  "reset" (() bool: start from zeros). ``perturbations`` as in ``engine.apply_stack``."""
  del task, step
  stack = _stack(model_cfg)
  x = jnp.asarray(batch["x"])
  b = x.shape[0]
  zeros = engine.init_carries(stack, params["layers"], (b,))
  carries = batch.get("carry")
  if carries is None:
    carries = zeros
  elif "reset" in batch:
    reset = jnp.asarray(batch["reset"])
    carries = jax.tree.map(lambda z, c: jnp.where(reset, z, c), zeros, carries)
  drop = model_cfg.dropout if train else 0.0
  rdrop = model_cfg.recurrent_dropout if train else 0.0
  zone = model_cfg.zoneout
  keys = iter(jax.random.split(rng, 3 * stack.num_layers + 1) if train and rng is not None
              else [None] * (3 * stack.num_layers + 1))
  h = params["embed"][x]
  k = next(keys)
  if drop:
    h = _dropout(k, h, drop, model_cfg.variational)
  cell = cells.get_cell(stack.cell)
  finals = []
  for i, layer in enumerate(params["layers"]):
    k_r, k_z, k_d = next(keys), next(keys), next(keys)
    mask = None
    if rdrop:
      keep = jax.random.bernoulli(k_r, 1.0 - rdrop, (b, stack.hidden_size))
      mask = keep / (1.0 - rdrop)
    zoneout = None
    if zone and train:
      def draw(c, kk, t=x.shape[1]):  # 1 = keep the previous value, per unit and step
        return jax.random.bernoulli(kk, zone, (*c.shape[:-1], t, c.shape[-1])).astype(c.dtype)
      leaves, tree = jax.tree.flatten(carries[i]["fwd"])
      zoneout = jax.tree.unflatten(tree, [draw(c, kk) for c, kk in
                                          zip(leaves, jax.random.split(k_z, len(leaves)))])
    elif zone:
      zoneout = zone
    final, h = engine.scan(cell, layer["fwd"], h, carry=carries[i]["fwd"],
                           unroll=model_cfg.unroll, remat=model_cfg.remat,
                           parallel=model_cfg.parallel, recurrent_mask=mask, zoneout=zoneout,
                           fused=model_cfg.get("fused"), cudnn=model_cfg.get("cudnn"),
                           onednn=model_cfg.get("onednn"),
                           perturbation=None if perturbations is None else perturbations[i]["fwd"])
    finals.append({"fwd": final})
    if drop:
      h = _dropout(k_d, h, drop, model_cfg.variational)
  kernel = params["embed"].T if model_cfg.tie_embeddings else params["readout"]["kernel"]
  return {"logits": h @ kernel + params["readout"]["bias"], "carry": finals}


def stack_inputs(params, batch):
  """(stack params, the stack's inputs (B, T, E)): the embedded characters."""
  return params["layers"], params["embed"][jnp.asarray(batch["x"])]


# --- sampling ------------------------------------------------------------------------------

def next_token(key, logits, *, temperature: float = 1.0, top_k: int | None = None):
  """Token ids (...,) drawn from softmax(logits / temperature) over the ``top_k`` largest
  logits (all when None); temperature 0 is greedy (argmax)."""
  if temperature == 0:
    return jnp.argmax(logits, axis=-1)
  if top_k is not None:
    kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  return jax.random.categorical(key, logits / temperature, axis=-1)


def generate(params, model_cfg, prime, length: int, key, *, temperature: float = 1.0,
             top_k: int | None = None):
  """``length`` token ids continuing ``prime`` (P,) ids (P >= 1), one sequence.

  The prime is read in one pass; then each step feeds the drawn token back, the
  state carried, as at evaluation (no dropout; zoneout's expectation). Jittable with
  ``length``, ``temperature`` and ``top_k`` static.
  """
  run = lambda x, carry: apply(params, {"x": x, **({} if carry is None else {"carry": carry})},
                               task=None, model_cfg=model_cfg, train=False, rng=None, step=0)
  out = run(jnp.asarray(prime, jnp.int32)[None], None)
  logits, carry = out["logits"][0, -1], out["carry"]

  def body(state, k):
    logits, carry = state
    token = next_token(k, logits, temperature=temperature, top_k=top_k)
    out = run(token[None, None], carry)
    return (out["logits"][0, -1], out["carry"]), token

  _, tokens = jax.lax.scan(body, (logits, carry), jax.random.split(key, length))
  return tokens

"""Seq2seq model, training modes and decoding against independent references.

The reference (``_reference_logits``) runs one example at a time in Python,
calling only ``cell.step`` on the valid source tokens, so it shares no masking,
bridging, attention or scan code with the model.
"""

import dataclasses
import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlab import cells
from rnnlab import engine
from rnnlab.seq2seq import attention
from rnnlab.seq2seq import decode
from rnnlab.seq2seq import kind
from rnnlab.seq2seq import model
from rnnlab.seq2seq import sampling
from rnnlab.seq2seq import sequences
from rnnlab import tasks

V, PAD, EOS, BOS = 7, 0, 1, 2
# Plain Gaussian kernels keep the one real initialisation (the model-kind test)
# cheap to compile (no QR); the default initialisers are tested with the cells.
FAST_INIT = dict(input_init="normal:0.5", recurrent_init="normal:0.5")


def _stack(cell, num_layers=1, bidirectional=False, residual=False):
  return engine.make_stack(cell, 5, num_layers, bidirectional=bidirectional, residual=residual)


def _spec(vocab=V, **kw):
  base = dict(src_vocab=vocab, tgt_vocab=vocab, bos_id=BOS, eos_id=EOS, pad_id=PAD, embed_size=4,
              encoder=_stack("lstm"), decoder=_stack("lstm"))
  return model.make_spec(**{**base, **kw})


# A: same LSTM both sides, no attention -> "copy" bridge and the one-pass decoder.
SPEC_A = _spec()
# B: 2-layer bidirectional GRU encoder into a 1-layer LSTM decoder, with attention
# and source reversal -> "dense" bridge from the top encoder layer.
SPEC_B = _spec(encoder=_stack("gru", 2, bidirectional=True), decoder=_stack("lstm"),
               attention="bahdanau", attention_size=3, reverse_source=True)
# C: 2-layer residual LSTMs (the residual joins where sizes agree: the second layer).
SPEC_C = _spec(encoder=_stack("lstm", 2, residual=True), decoder=_stack("lstm", 2, residual=True))

SRC = jnp.array([[3, 4, 5, 6], [6, 3, 0, 0], [5, 0, 0, 0]], jnp.int32)
SRC_LEN = jnp.array([4, 2, 1], jnp.int32)
TGT_IN = jnp.array([[BOS, 6, 5, 4], [BOS, 3, 6, PAD], [BOS, PAD, PAD, PAD]], jnp.int32)
TGT_OUT = jnp.array([[6, 5, 4, EOS], [3, 6, EOS, PAD], [5, EOS, PAD, PAD]], jnp.int32)
TGT_LEN = jnp.array([4, 3, 2], jnp.int32)

@functools.lru_cache(maxsize=None)
def _params(spec, seed=0, scale=0.5):
  """Random N(0, scale^2) values in the exact pytree ``init_params`` makes.

  ``eval_shape`` traces the real initialiser without compiling it; numpy fills
  the values, so no random-number kernels are compiled for each test model.
  """
  shapes = jax.eval_shape(lambda key: model.init_params(key, spec), jax.random.PRNGKey(0))
  rng = np.random.RandomState(seed)
  return jax.tree.map(lambda a: jnp.asarray(scale * rng.standard_normal(a.shape), a.dtype), shapes)


@functools.partial(jax.jit, static_argnums=0)
def _tf_logits(spec, p, src, n, tgt_in):
  return model.teacher_forced_logits(spec, p, model.encode(spec, p, src, n), tgt_in)


@functools.partial(jax.jit, static_argnums=(0, 7))
def _mixed(spec, p, src, n, tgt_in, eps, key, feed):
  return sampling.mixed_logits(spec, p, model.encode(spec, p, src, n), tgt_in, eps, key, feed)


@functools.partial(jax.jit, static_argnums=0)
def _first_step(spec, p, src, n, tokens):
  enc = model.encode(spec, p, src, n)
  return model.decoder_step(spec, p, enc["memory"], enc["carries"], tokens)


# --- the independent reference -------------------------------------------------------

def _run_encoder(spec, params, tokens):
  """Python loop over valid tokens only. Returns (outputs list, finals per layer)."""
  cell = cells.get_cell(spec.encoder.cell)
  xs = [params["src_embed"][t] for t in tokens]
  finals = []
  for layer in params["encoder"]:
    outs, fin = {}, {}
    for d in spec.encoder.directions:
      carry = cell.init_carry(layer[d], ())
      order = range(len(xs)) if d == "fwd" else reversed(range(len(xs)))
      ys = [None] * len(xs)
      for j in order:
        carry, ys[j] = cell.step(layer[d], carry, xs[j])
      outs[d], fin[d] = ys, carry
    ys = [jnp.concatenate([outs[d][j] for d in spec.encoder.directions]) for j in range(len(xs))]
    xs = [y + x if spec.encoder.residual and y.shape == x.shape else y for x, y in zip(xs, ys)]
    finals.append(fin)
  return xs, finals


def _start_carries(spec, params, finals):
  cell = cells.get_cell(spec.decoder.cell)
  if spec.bridge_kind == "copy":
    return [f["fwd"] for f in finals]
  out = []
  for l, layer in enumerate(params["decoder"]):
    source = finals[l] if spec.encoder.num_layers == spec.decoder.num_layers else finals[-1]
    z = jnp.concatenate([leaf for d in spec.encoder.directions
                         for leaf in jax.tree.leaves(source[d])])
    template = cell.init_carry(layer["fwd"], ())
    leaves = [jnp.tanh(z @ p["w"] + p["b"]) for p in params["bridge"][l]]
    out.append(jax.tree.unflatten(jax.tree.structure(template), leaves))
  return out


def _reference_logits(spec, params, src, src_len, tgt_in=None, steps=None):
  """(B, L, V) logits; tgt_in=None feeds back the argmax (free running)."""
  cell = cells.get_cell(spec.decoder.cell)
  out = []
  for b in range(src.shape[0]):
    tokens = [int(t) for t in src[b, :int(src_len[b])]]
    if spec.reverse_source:
      tokens = tokens[::-1]
    hs, finals = _run_encoder(spec, params, tokens)
    h = jnp.stack(hs)
    carries = _start_carries(spec, params, finals)
    token, rows = BOS, []
    for t in range(steps or tgt_in.shape[1]):
      token = tgt_in[b, t] if tgt_in is not None else token
      x = params["tgt_embed"][token]
      if spec.has_attention:
        a = params["attention"]
        e = jnp.tanh(cell.hidden(carries[-1]) @ a["w_q"] + h @ a["w_k"]) @ a["v"]
        context = jax.nn.softmax(e) @ h
        x = jnp.concatenate([x, context])
      for l, layer in enumerate(params["decoder"]):
        carries[l], y = cell.step(layer["fwd"], carries[l], x)
        x = y + x if spec.decoder.residual and y.shape == x.shape else y
      if spec.has_attention:
        x = jnp.concatenate([x, context])
      logits = x @ params["readout"]["w"] + params["readout"]["b"]
      rows.append(logits)
      token = jnp.argmax(logits)
    out.append(jnp.stack(rows))
  return jnp.stack(out)


# --- teacher forcing, scheduled sampling, free running -------------------------------

@pytest.mark.parametrize("spec", [SPEC_A, SPEC_B], ids=["lstm-copy", "bigru-attn-lstm"])
def test_teacher_forced_loss_matches_step_by_step_reference(spec):
  params = _params(spec)
  logits = _tf_logits(spec, params, SRC, SRC_LEN, TGT_IN)
  ref = _reference_logits(spec, params, SRC, SRC_LEN, TGT_IN)
  np.testing.assert_allclose(logits, ref, rtol=1e-5, atol=1e-5)
  ref_nll = -np.mean([jax.nn.log_softmax(ref[b, t])[TGT_OUT[b, t]]
                      for b in range(3) for t in range(int(TGT_LEN[b]))])
  assert float(sequences.token_nll(logits, TGT_OUT, TGT_LEN)) == pytest.approx(ref_nll, rel=1e-5)


def test_bridge_rule():
  assert SPEC_A.bridge_kind == "copy" and "bridge" not in _params(SPEC_A)
  assert SPEC_B.bridge_kind == "dense"
  # dense: one (Z, n) kernel per decoder carry leaf (LSTM: c, h), Z = 2 directions x 1 GRU
  # leaf x 5, reading the top of the 2 encoder layers.
  assert [p["w"].shape for p in _params(SPEC_B)["bridge"][0]] == [(10, 5), (10, 5)]
  zero = dataclasses.replace(SPEC_A, bridge="zero")
  carries = model.BRIDGES["zero"](zero, _params(SPEC_A), None, 3)
  assert [leaf.shape for leaf in jax.tree.leaves(carries)] == [(3, 5), (3, 5)]
  assert all(float(jnp.abs(leaf).max()) == 0 for leaf in jax.tree.leaves(carries))


@pytest.mark.parametrize("spec", [SPEC_A, SPEC_B, SPEC_C],
                         ids=["lstm-copy", "bigru-attn-lstm", "residual"])
def test_scheduled_sampling_extremes(spec):
  params = _params(spec)
  key = jax.random.PRNGKey(3)
  tf = _tf_logits(spec, params, SRC, SRC_LEN, TGT_IN)
  np.testing.assert_allclose(_mixed(spec, params, SRC, SRC_LEN, TGT_IN, 1.0, key, "argmax"),
                             tf, rtol=1e-5, atol=1e-5)
  free = _mixed(spec, params, SRC, SRC_LEN, TGT_IN, 0.0, key, "argmax")
  np.testing.assert_allclose(free, _reference_logits(spec, params, SRC, SRC_LEN, steps=4),
                             rtol=1e-5, atol=1e-5)
  # in between, some but not all inputs differ from the reference tokens
  half = _mixed(spec, params, SRC, SRC_LEN, TGT_IN, 0.5, key, "argmax")
  assert not np.allclose(half, tf, atol=1e-6) and not np.allclose(half, free, atol=1e-6)


def test_eps_schedules_follow_bengio_2015():
  tfp = sampling.teacher_forcing_prob
  lin = dict(schedule="linear", k=1.0, c=0.01, eps_min=0.1)
  assert [float(tfp("scheduled_sampling", i, **lin)) for i in (0, 50, 100)] == \
      pytest.approx([1.0, 0.5, 0.1])
  assert float(tfp("scheduled_sampling", 100, schedule="exponential", k=0.99)) == \
      pytest.approx(0.99**100, rel=1e-5)
  assert float(tfp("scheduled_sampling", 30, schedule="inverse_sigmoid", k=10.0)) == \
      pytest.approx(10 / (10 + math.exp(3.0)), rel=1e-5)
  assert float(tfp("teacher_forcing", 10**6)) == 1.0 and float(tfp("free_running", 0)) == 0.0
  with pytest.raises(ValueError, match="inverse_sigmoid needs k >= 1"):
    sampling.validate_schedule("inverse_sigmoid", 0.5, 0.0, 0.0)
  with pytest.raises(ValueError, match="valid: teacher_forcing"):
    tfp("professor_forcing", 0)


# --- decoding ------------------------------------------------------------------------

def test_greedy_equals_beam_width_one_and_free_running():
  params = _params(SPEC_B, seed=1)
  tokens, lengths = decode.greedy(SPEC_B, params, SRC, SRC_LEN, max_len=5)
  beam, scores, beam_len = decode.beam_search(SPEC_B, params, SRC, SRC_LEN, beam_width=1,
                                              max_len=5, length_penalty="none", alpha=0.0)
  np.testing.assert_array_equal(beam[:, 0], tokens)
  np.testing.assert_array_equal(beam_len[:, 0], lengths)
  ref = np.argmax(_reference_logits(SPEC_B, params, SRC, SRC_LEN, steps=5), axis=-1)
  for b in range(3):
    n = int(lengths[b])
    np.testing.assert_array_equal(tokens[b, :n], ref[b, :n])
    assert (n == 5 or tokens[b, n - 1] == EOS) and np.all(tokens[b, n:] == PAD)
  logp = decode.sequence_logprob(SPEC_B, params, SRC, SRC_LEN, tokens, lengths)
  np.testing.assert_allclose(scores[:, 0], logp, rtol=1e-5)


def _enumerate(vocab, max_len):
  """Every output: non-EOS tokens then EOS (length <= max_len), or max_len non-EOS tokens."""
  other = [t for t in range(vocab) if t != EOS]
  seqs = []
  for n in range(max_len + 1):
    for body in itertools.product(other, repeat=n):
      if n < max_len:
        seqs.append(list(body) + [EOS])
      else:
        seqs.append(list(body))
  return seqs


def test_beam_search_finds_the_best_enumerated_sequences(penalty="gnmt", alpha=1.5):
  vocab, max_len, k = 4, 3, 16
  spec = _spec(vocab=vocab)
  params = _params(spec, seed=3, scale=1.0)  # a model where greedy misses the best output
  src = jnp.array([[3, 2, 3, 3], [2, 3, 0, 0], [3, 0, 0, 0]], jnp.int32)
  seqs = _enumerate(vocab, max_len)  # 1 + 3 + 9 ending in EOS, 27 truncated
  lengths = jnp.array([len(s) for s in seqs], jnp.int32)
  tokens = jnp.array([s + [PAD] * (max_len - len(s)) for s in seqs], jnp.int32)
  beam, scores, _ = decode.beam_search(spec, params, src, SRC_LEN, beam_width=k,
                                       max_len=max_len, length_penalty=penalty, alpha=alpha)
  greedy, _ = decode.greedy(spec, params, src, SRC_LEN, max_len=max_len)
  lp = decode.PENALTIES[penalty](lengths, alpha)
  found_better_than_greedy = False
  for b in range(3):
    rep = lambda a: jnp.repeat(a[b:b + 1], len(seqs), axis=0)
    score = decode.sequence_logprob(spec, params, rep(src), rep(SRC_LEN), tokens, lengths) / lp
    order = np.argsort(-np.asarray(score))
    np.testing.assert_allclose(scores[b], np.asarray(score)[order[:k]], rtol=1e-5)
    np.testing.assert_array_equal(beam[b, 0], tokens[order[0]])
    found_better_than_greedy |= not np.array_equal(greedy[b], tokens[order[0]])
  assert found_better_than_greedy  # the model is one where beam search matters


def test_decoders_reject_bad_arguments():
  params = _params(SPEC_A)
  with pytest.raises(ValueError, match="valid: none, length, gnmt"):
    decode.beam_search(SPEC_A, params, SRC, SRC_LEN, beam_width=2, max_len=3,
                       length_penalty="wu")
  with pytest.raises(ValueError, match="max_len must be an integer >= 1"):
    decode.greedy(SPEC_A, params, SRC, SRC_LEN, max_len=0)


# --- attention and source handling ---------------------------------------------------

def test_attention_weights_sum_to_one_over_valid_positions_and_zero_on_padding():
  rng = np.random.RandomState(0)
  p = {"w_q": rng.randn(6, 3), "w_k": rng.randn(10, 3), "v": rng.randn(3)}
  values = jnp.asarray(rng.randn(3, 4, 10))
  mask = sequences.valid_mask(SRC_LEN, 4)
  context, w = attention.attend(p, attention.memory(p, values, mask), jnp.ones((3, 6)))
  np.testing.assert_allclose(jnp.sum(w, axis=1), 1.0, rtol=1e-6)
  assert np.all(np.asarray(w)[~np.asarray(mask)] == 0.0)
  assert np.all(np.asarray(w)[np.asarray(mask)] > 0.0)
  np.testing.assert_allclose(context[2], values[2, 0], rtol=1e-6)  # one valid position
  # inside the model: decoder-step weights, and garbage in the padding changes nothing
  params = _params(SPEC_B)
  _, _, w = _first_step(SPEC_B, params, SRC, SRC_LEN, TGT_IN[:, 0])
  np.testing.assert_allclose(jnp.sum(w, axis=1), 1.0, rtol=1e-6)
  assert np.all(np.asarray(w)[~np.asarray(mask)] == 0.0)
  garbage = jnp.where(mask, SRC, 6)
  np.testing.assert_array_equal(_tf_logits(SPEC_B, params, garbage, SRC_LEN, TGT_IN),
                                _tf_logits(SPEC_B, params, SRC, SRC_LEN, TGT_IN))


def test_luong_scores_dot_and_general():
  """dot: e_ij = q . h_j; general: q . (W_a h_j), which is dot when W_a = I; padding gets 0."""
  rng = np.random.RandomState(1)
  values, query = jnp.asarray(rng.randn(3, 4, 6)), jnp.asarray(rng.randn(3, 6))
  mask = sequences.valid_mask(SRC_LEN, 4)
  key = jax.random.PRNGKey(0)
  dot = attention.init(key, 6, 6, 0, kind="dot")
  assert dot == {}
  context, w = attention.attend(dot, attention.memory(dot, values, mask), query)
  scores = np.einsum("bh,bsh->bs", query, values)
  expected = np.where(mask, np.exp(scores - scores.max(1, keepdims=True)), 0)
  expected /= expected.sum(1, keepdims=True)
  np.testing.assert_allclose(w, expected, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(context, np.einsum("bs,bsc->bc", expected, values), rtol=1e-5)
  general = attention.init(key, 6, 6, 0, kind="general")
  assert general["w_a"].shape == (6, 6)
  eye = {"w_a": jnp.eye(6)}
  np.testing.assert_allclose(attention.attend(eye, attention.memory(eye, values, mask), query)[1],
                             w, rtol=1e-6)
  # general between different sizes: C = 10 encoder outputs, H_d = 6 queries
  wide = attention.init(key, 6, 10, 0, kind="general")
  ctx, w10 = attention.attend(wide, attention.memory(wide, jnp.ones((3, 4, 10)), mask), query)
  assert ctx.shape == (3, 10) and np.all(np.asarray(w10)[~np.asarray(mask)] == 0.0)


@pytest.mark.parametrize("score", ["general", "dot"])
def test_luong_attention_in_the_model_trains_and_decodes(score):
  spec = _spec(attention=score)  # LSTM 5 -> LSTM 5: dot's sizes agree
  params = _params(spec)
  _, _, w = _first_step(spec, params, SRC, SRC_LEN, TGT_IN[:, 0])
  np.testing.assert_allclose(jnp.sum(w, axis=1), 1.0, rtol=1e-6)
  loss = lambda p: jnp.mean(_tf_logits(spec, p, SRC, SRC_LEN, TGT_IN) ** 2)
  grads = jax.grad(loss)(params)
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
  if score == "general":
    assert float(jnp.abs(grads["attention"]["w_a"]).sum()) > 0
  tokens, lengths = decode.greedy(spec, params, SRC, SRC_LEN, max_len=3)
  assert tokens.shape == (3, 3) and lengths.shape == (3,)
  beams = decode.beam_search(spec, params, SRC, SRC_LEN, beam_width=2, max_len=3)
  assert jax.tree.leaves(beams)[0].shape[0] == 3


def test_dot_attention_between_sizes_that_differ_says_what_to_use():
  with pytest.raises(ValueError, match="attention='dot' needs the decoder's hidden size .5. to "
                     "equal the encoder's output size .10.*use 'general'"):
    _spec(encoder=_stack("gru", bidirectional=True), attention="dot")


def test_reverse_valid_keeps_padding_at_the_end():
  out = sequences.reverse_valid(SRC, SRC_LEN)
  np.testing.assert_array_equal(out, [[6, 5, 4, 3], [3, 6, 0, 0], [5, 0, 0, 0]])


def test_spec_validation():
  with pytest.raises(ValueError, match="valid: none, bahdanau"):
    _spec(attention="luong")
  with pytest.raises(ValueError, match="bridge='copy' needs"):
    _spec(encoder=engine.make_stack("lstm", 5, bidirectional=True), bridge="copy")
  with pytest.raises(ValueError, match="cannot be bidirectional"):
    _spec(decoder=engine.make_stack("lstm", 5, bidirectional=True))
  with pytest.raises(ValueError, match="outside the target vocabulary"):
    _spec(bos_id=V)


# --- the model kind --------------------------------------------------------------------

def _tiny_task_and_config(**overrides):
  task_cfg = tasks.default_config("reverse")
  task_cfg.seq_len, task_cfg.num_symbols, task_cfg.eval_size = 3, 3, 4
  task = tasks.make_task(task_cfg, seed=0)
  cfg = kind.default_config()
  cfg.embed_size, cfg.hidden_size = 4, 5
  cfg.cell_options.update(FAST_INIT)
  cfg.update(overrides)
  return task, cfg


def test_kind_train_and_eval_outputs_are_deterministic():
  task, cfg = _tiny_task_and_config(train_mode="scheduled_sampling", ss_k=10.0,
                                    decode="beam", beam_width=2)
  kind.validate(cfg)
  params = kind.init(jax.random.PRNGKey(0), task, cfg)
  batch = task.train_batch(0, 4)
  apply = functools.partial(kind.apply, task=task, model_cfg=cfg)
  train = jax.jit(lambda p, b, rng, step: apply(p, b, train=True, rng=rng, step=step))
  out, again = (train(params, batch, jax.random.PRNGKey(1), 20) for _ in range(2))
  np.testing.assert_array_equal(out["logits"], again["logits"])
  assert float(out["teacher_forcing_prob"]) == pytest.approx(10 / (10 + math.exp(2.0)), rel=1e-6)
  with pytest.raises(ValueError, match="needs an rng key"):
    apply(params, batch, train=True, rng=None, step=0)
  ev = jax.jit(lambda p, b: apply(p, b, train=False, rng=None, step=0))(params, batch)
  assert ev["tokens"].shape == (4, task.max_tgt_len)
  assert ev["logits"].shape == (4, task.max_tgt_len, task.vocab_size)
  _, metrics = task.loss_and_metrics(ev, batch)
  assert 0.0 <= float(metrics["accuracy"]) <= 1.0


@pytest.mark.parametrize("field,value,match", [
    ("train_mode", "tf", "valid: teacher_forcing"),
    ("decode", "sample", "valid: greedy, beam"),
    ("length_alpha", -1.0, "alpha must be >= 0"),
    ("cell", "lstmx", "Unknown cell"),
    ("attention", "luong", "valid: none, bahdanau"),
    ("cell", "gru", "do not apply to cell 'gru'"),  # FAST_INIT is fine, forget_bias is not
])
def test_kind_validation(field, value, match):
  _, cfg = _tiny_task_and_config(**{field: value})
  if value == "gru":
    cfg.cell_options.forget_bias = 1.0
  with pytest.raises(ValueError, match=match):
    kind.validate(cfg)


# --- one-to-many --------------------------------------------------------------------------

def test_a_vector_source_starts_the_decoder_from_a_dense_bridge_of_it():
  """No encoder parameters; the decoder's first carry is tanh(v W + b) per carry leaf, so
  two sources that differ only in the vector give different outputs, and the greedy
  decoder equals the argmax of the model re-reading its own output."""
  decode_lib, model_lib = decode, model
  stack = engine.make_stack("lstm", 8)
  spec = model_lib.make_spec(src_vocab=13, tgt_vocab=13, bos_id=2, eos_id=1, pad_id=0,
                             embed_size=4, encoder=stack, decoder=stack, src_features=5)
  params = model_lib.init_params(jax.random.PRNGKey(0), spec)
  assert "encoder" not in params and "src_embed" not in params
  v = jax.random.normal(jax.random.PRNGKey(1), (3, 5))
  enc = model_lib.encode(spec, params, v, jnp.ones((3,), jnp.int32))
  c, h = enc["carries"][0]["fwd"]
  (w_c, w_h) = params["bridge"][0]
  np.testing.assert_allclose(c, jnp.tanh(v @ w_c["w"] + w_c["b"]), rtol=1e-6)
  np.testing.assert_allclose(h, jnp.tanh(v @ w_h["w"] + w_h["b"]), rtol=1e-6)
  tokens, _ = decode_lib.greedy(spec, params, v, jnp.ones((3,), jnp.int32), max_len=6)
  tgt_in = jnp.concatenate([jnp.full((3, 1), 2, jnp.int32), tokens[:, :-1]], axis=1)
  logits = model_lib.teacher_forced_logits(spec, params, enc, tgt_in)
  first = np.asarray(jnp.argmax(logits, -1))[:, 0]
  np.testing.assert_array_equal(first, np.asarray(tokens)[:, 0])
  other = model_lib.encode(spec, params, -v, jnp.ones((3,), jnp.int32))
  assert not np.allclose(other["carries"][0]["fwd"][1], h)
  with pytest.raises(ValueError, match="feature vector"):
    model_lib.make_spec(src_vocab=13, tgt_vocab=13, bos_id=2, eos_id=1, pad_id=0, embed_size=4,
                        encoder=stack, decoder=stack, src_features=5, attention="bahdanau")

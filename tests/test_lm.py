"""The language model's regularisers and sampling from a trained run."""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import quiet
from rnnlab import cells, engine, lm, models, sample
from rnnlab.training import trainer
from test_char_lm import corpus, small

V, B, T = 11, 3, 7


class Vocab:  # what lm.init reads of the task
  vocab_size = V


def model_cfg(**fields):
  cfg = lm.default_config()
  cfg.hidden_size, cfg.num_layers, cfg.embed_size = 8, 2, 8
  for k, v in fields.items():
    cfg[k] = v
  lm.validate(cfg)
  return cfg


def run(cfg, params, x, *, train, seed=0, carry=None):
  batch = {"x": x, **({} if carry is None else {"carry": carry})}
  return lm.apply(params, batch, task=None, model_cfg=cfg, train=train,
                  rng=jax.random.PRNGKey(seed), step=0)


X = np.random.default_rng(0).integers(0, V, (B, T)).astype(np.int32)


# --- dropout ---------------------------------------------------------------------------

def test_dropout_is_off_at_evaluation_and_on_in_training(eager):
  cfg = model_cfg(dropout=0.5)
  params = lm.init(jax.random.PRNGKey(0), Vocab, cfg)
  plain = run(model_cfg(), params, X, train=True)["logits"]
  for seed in (0, 1):
    np.testing.assert_array_equal(run(cfg, params, X, train=False, seed=seed)["logits"], plain)
  a, b = (run(cfg, params, X, train=True, seed=s)["logits"] for s in (0, 1))
  assert not np.allclose(a, plain) and not np.allclose(a, b)


def test_variational_dropout_masks_are_shared_by_every_step(eager):
  x = jnp.ones((4, 50, 16))
  locked = np.asarray(lm._dropout(jax.random.PRNGKey(0), x, 0.5, locked=True))
  fresh = np.asarray(lm._dropout(jax.random.PRNGKey(0), x, 0.5, locked=False))
  assert set(np.unique(locked)) == {0.0, 2.0}                 # kept units scaled by 1/(1-p)
  assert (locked == locked[:, :1]).all()                      # the same mask at every step
  assert not (fresh == fresh[:, :1]).all()
  assert 0.3 < (fresh == 0).mean() < 0.7
  with pytest.raises(ValueError, match="set model.dropout"):
    model_cfg(variational=True)


# --- recurrent dropout -----------------------------------------------------------------

def test_recurrent_dropout_masks_h_where_the_cell_reads_it(eager):
  cell = cells.get_cell("rnn")
  params = cell.init(jax.random.PRNGKey(0), 5, 6)
  xs = jax.random.normal(jax.random.PRNGKey(1), (B, T, 5))
  _, plain = engine.scan(cell, params, xs)
  _, ones = engine.scan(cell, params, xs, recurrent_mask=jnp.ones((B, 6)))
  np.testing.assert_allclose(ones, plain, rtol=1e-6)
  _, none = engine.scan(cell, params, xs, recurrent_mask=jnp.zeros((B, 6)))
  np.testing.assert_allclose(none, jnp.tanh(xs @ params["w_x"] + params["b"]), rtol=1e-6)
  half = jnp.array([[1.0, 0.0] * 3] * B)  # units 1, 3, 5 of h_(t-1) never reach the step
  _, masked = engine.scan(cell, params, xs, recurrent_mask=half)
  ref = jnp.zeros((B, 6))
  for t in range(T):
    ref = jnp.tanh(xs[:, t] @ params["w_x"] + (ref * half) @ params["w_h"] + params["b"])
    np.testing.assert_allclose(masked[:, t], ref, rtol=1e-5, atol=1e-6)


def test_recurrent_dropout_refuses_cells_that_carry_h_past_w_h(eager):
  gru = cells.get_cell("gru")
  params = gru.init(jax.random.PRNGKey(0), 5, 6)
  with pytest.raises(ValueError, match="Cells that take it: .*lstm"):
    engine.scan(gru, params, jnp.zeros((B, T, 5)), recurrent_mask=jnp.ones((B, 6)))
  with pytest.raises(ValueError, match="recurrent_dropout needs"):
    model_cfg(cell="gru", recurrent_dropout=0.2)
  cfg = model_cfg(cell="lstm", recurrent_dropout=0.3)
  params = lm.init(jax.random.PRNGKey(0), Vocab, cfg)
  np.testing.assert_array_equal(run(cfg, params, X, train=False)["logits"],
                                run(model_cfg(), params, X, train=False)["logits"])
  assert not np.allclose(run(cfg, params, X, train=True)["logits"],
                         run(model_cfg(), params, X, train=True)["logits"])


# --- zoneout -----------------------------------------------------------------------------

def test_zoneout_zero_is_the_plain_cell_and_one_freezes_the_state(eager):
  cell = cells.get_cell("lstm")
  params = cell.init(jax.random.PRNGKey(0), 5, 6)
  xs = jax.random.normal(jax.random.PRNGKey(1), (B, T, 5))
  start = jax.tree.map(lambda a: a + 0.5, cell.init_carry(params, (B,)))
  plain = engine.scan(cell, params, xs, carry=start)
  zero = jax.tree.map(jnp.zeros_like, jax.tree.map(lambda c: jnp.stack([c] * T, 1), start))
  for z in (0.0, zero):
    got = engine.scan(cell, params, xs, carry=start, zoneout=z)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), got, plain)
  frozen = engine.scan(cell, params, xs, carry=start,
                       zoneout=jax.tree.map(jnp.ones_like, zero))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b), frozen[0], start)
  np.testing.assert_allclose(frozen[1], jnp.broadcast_to(start[1][:, None], (B, T, 6)))


def test_zoneout_at_evaluation_is_the_expected_update(eager):
  cell, z = cells.get_cell("lstm"), 0.3
  params = cell.init(jax.random.PRNGKey(0), 5, 6)
  xs = jax.random.normal(jax.random.PRNGKey(1), (B, T, 5))
  final, ys = engine.scan(cell, params, xs, zoneout=z)
  carry = cell.init_carry(params, (B,))
  for t in range(T):
    new, _ = cell.step(params, carry, xs[:, t])
    carry = jax.tree.map(lambda n, o: z * o + (1 - z) * n, new, carry)
    np.testing.assert_allclose(ys[:, t], carry[1], rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="classic cells"):
    model_cfg(cell="mingru", zoneout=0.1)


def test_zoneout_in_the_model_draws_in_training_only(eager):
  cfg = model_cfg(zoneout=0.5)
  params = lm.init(jax.random.PRNGKey(0), Vocab, cfg)
  e1, e2 = (run(cfg, params, X, train=False, seed=s)["logits"] for s in (0, 1))
  np.testing.assert_array_equal(e1, e2)
  t1, t2 = (run(cfg, params, X, train=True, seed=s)["logits"] for s in (0, 1))
  assert not np.allclose(t1, t2) and not np.allclose(t1, e1)


# --- weight tying --------------------------------------------------------------------------

def test_tied_embeddings_read_out_with_the_embedding_matrix(eager):
  cfg = model_cfg(tie_embeddings=True)
  params = lm.init(jax.random.PRNGKey(0), Vocab, cfg)
  assert set(params["readout"]) == {"bias"}
  out = run(cfg, params, X, train=False)
  h = run(cfg, {**params, "readout": {"bias": jnp.zeros(V)}}, X, train=False)["logits"]
  untied = {**params, "readout": {"kernel": params["embed"].T, "bias": params["readout"]["bias"]}}
  np.testing.assert_allclose(out["logits"], run(model_cfg(), untied, X, train=False)["logits"],
                             rtol=1e-6)
  grads = jax.grad(lambda p: run(cfg, p, X, train=False)["logits"][:, :, 0].sum())(params)
  assert np.abs(np.asarray(grads["embed"][0])).max() > 0  # readout row 0 is embedding row 0
  assert h.shape == (B, T, V)
  with pytest.raises(ValueError, match="embed_size .* must equal hidden_size"):
    model_cfg(tie_embeddings=True, embed_size=4)


# --- sampling from a trained run -----------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  folder = tmp_path_factory.mktemp("lm")
  workdir = str(folder / "run")
  trainer.train_and_evaluate(small(corpus(folder)), workdir, console=quiet)
  return workdir


@pytest.fixture(scope="module")
def loaded(trained):
  """(job, params, vocabulary, generate): the trained run, loaded once."""
  job, _, state = trainer.load(trained)
  generate = jax.jit(lambda p, x, k, t, top_k: lm.generate(p, job.config.model, x, 30, k,
                                                           temperature=t, top_k=top_k),
                     static_argnums=(3, 4))
  return job, state.params, sample.read_vocab(trained), generate


def test_greedy_samples_are_the_argmax_of_the_model_reading_its_own_output(loaded):
  """The carried state in sampling equals re-reading the whole text in one pass."""
  job, params, chars, generate = loaded
  prime = sample.encode("Hasan used ", chars)
  tokens = np.asarray(generate(params, prime, jax.random.PRNGKey(0), 0.0, None))
  ids = np.concatenate([prime, tokens])
  logits = models.LM.apply(params, {"x": ids[None, :-1]}, task=job.task,
                           model_cfg=job.config.model, train=False, rng=None, step=0)["logits"]
  np.testing.assert_array_equal(np.argmax(logits[0, len(prime) - 1:], -1), tokens)
  np.testing.assert_array_equal(generate(params, prime, jax.random.PRNGKey(5), 1.0, 1), tokens)


def test_sampling_is_reproducible_and_follows_the_temperature(loaded, trained):
  _, params, chars, generate = loaded
  prime = sample.encode("He", chars)
  draw = lambda seed, t: np.asarray(generate(params, prime, jax.random.PRNGKey(seed), t, None))
  np.testing.assert_array_equal(draw(0, 1.0), draw(0, 1.0))
  assert not np.array_equal(draw(0, 1.0), draw(1, 1.0))
  cold = np.concatenate([draw(s, 0.2) for s in range(4)])
  hot = np.concatenate([draw(s, 3.0) for s in range(4)])
  assert len(set(cold)) < len(set(hot))
  text = sample.sample(trained, "He", 50, seed=3)  # the library call: prime's continuation
  assert len(text) == 50 and set(text) <= set(chars)


@pytest.mark.parametrize("temperature, top_k", [(1.0, None), (0.5, None), (2.0, 2)])
def test_next_token_draws_from_the_tempered_top_k_softmax(temperature, top_k):
  logits = jnp.array([0.0, 1.0, 2.0, -1.0])
  keys = jax.random.split(jax.random.PRNGKey(0), 20000)
  draws = jax.vmap(lambda k: lm.next_token(k, logits, temperature=temperature, top_k=top_k))(keys)
  freq = np.bincount(np.asarray(draws), minlength=4) / len(keys)
  kept = logits if top_k is None else jnp.where(logits >= jnp.sort(logits)[-top_k], logits, -jnp.inf)
  np.testing.assert_allclose(freq, jax.nn.softmax(kept / temperature), atol=0.015)
  assert int(lm.next_token(keys[0], logits, temperature=0.0)) == 2


def test_the_command_prints_the_prime_and_its_continuation(trained, capsys):
  assert sample.main([f"--workdir={trained}", "--prime=Ayse", "--length=40",
                      "--temperature=0.8", "--top_k=5"]) == 0
  out = capsys.readouterr().out
  assert out.startswith("Ayse") and len(out.rstrip("\n")) >= 40


@pytest.mark.parametrize("args, message", [
    (lambda w, t: [f"--workdir={t}"], "holds no run"),
    (lambda w, t: [f"--workdir={w}", "--prime=Ω"], "outside the run's vocabulary"),
    (lambda w, t: [f"--workdir={w}", "--temperature=0"], "use --greedy"),
    (lambda w, t: [f"--workdir={w}", "--top_k=0"], "--top_k must be in"),
    (lambda w, t: [f"--workdir={w}", "--checkpoint=newest"], "best, latest or a step"),
])
def test_bad_input_is_one_line_and_exit_2(trained, tmp_path, capsys, args, message):
  assert sample.main(args(trained, str(tmp_path))) == 2
  err = capsys.readouterr().err
  assert message in err and err.count("\n") == 1 and "Traceback" not in err
  assert os.path.exists(os.path.join(trained, "summary.json"))


def test_fused_backward_pass_gives_the_scan_numbers():
  """``model.fused=True`` reaches the language model's scan: loss and gradients as autodiff."""
  def loss_and_grads(fused):
    cfg = model_cfg(fused=fused)
    params = lm.init(jax.random.PRNGKey(0), Vocab, cfg)
    loss = lambda p: jnp.mean(run(cfg, p, X, train=False)["logits"] ** 2)
    return jax.value_and_grad(loss)(params)
  want, got = loss_and_grads(False), loss_and_grads(True)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, want)

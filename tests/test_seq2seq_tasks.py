"""Seq2seq task generators: correct examples, ranges, determinism, metrics."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlab import tasks
from rnnlab.tasks import seq2seq

EOS, PAD = seq2seq.EOS, seq2seq.PAD
SMALL = dict(seq_len=6, min_len=2, num_symbols=5)  # reverse/sort: lengths 2..6 over 5 symbols


@functools.lru_cache(maxsize=None)
def _task(name, seed=0, **fields):
  cfg = tasks.default_config(name)
  cfg.update(fields)
  return tasks.make_task(cfg, seed)


@functools.lru_cache(maxsize=None)
def _batch(name, step=0, seed=0, size=64, **fields):
  task = _task(name, seed, **fields)
  return jax.tree.map(np.asarray, task.train_batch(step, size))


def _check_decoder_pair(batch, b, answer, bos):
  """tgt_out = answer EOS PAD..; tgt_in = BOS answer PAD..; tgt_len = |answer| + 1."""
  n, width = len(answer), batch["tgt_out"].shape[1]
  assert batch["tgt_len"][b] == n + 1
  np.testing.assert_array_equal(batch["tgt_out"][b], answer + [EOS] + [PAD] * (width - n - 1))
  np.testing.assert_array_equal(batch["tgt_in"][b], [bos] + answer + [PAD] * (width - n - 1))


def test_addition_tokenises_like_the_flax_example_and_answers_the_sum():
  task = _task("addition")
  assert (task.vocab_size, task.bos_id, task.max_src_len, task.max_tgt_len) == (15, 14, 7, 5)
  batch = _batch("addition")
  for b in range(64):
    n = batch["src_len"][b]
    query = task.to_text(batch["src"][b][:n])
    assert batch["src"][b][n] == EOS and np.all(batch["src"][b][n + 1:] == PAD)
    a, c = (int(x) for x in query.split("+"))
    assert a <= c and 0 <= a <= 99 and c <= 999 and len(query) == n  # smaller operand first
    digits = [seq2seq._ADDITION_IDS[ch] for ch in str(a + c)]
    _check_decoder_pair(batch, b, digits, task.bos_id)
    assert task.to_text(batch["tgt_in"][b]) == "=" + str(a + c)
  assert seq2seq._ADDITION_IDS["+"] == 3 and seq2seq._ADDITION_IDS["0"] == 4


def test_addition_without_sorting_keeps_the_operand_ranges():
  task = _task("addition", sort_operands=False)
  batch = _batch("addition", sort_operands=False)
  pairs = [tuple(int(x) for x in task.to_text(batch["src"][b][:batch["src_len"][b]]).split("+"))
           for b in range(64)]
  assert all(0 <= a <= 99 and 0 <= c <= 999 for a, c in pairs)
  assert any(a > c for a, c in pairs)  # both orders occur


@pytest.mark.parametrize("name,answer", [("reverse", lambda s: s[::-1]), ("sort", sorted)])
def test_reverse_and_sort_examples(name, answer):
  task, batch = _task(name, **SMALL), _batch(name, **SMALL)
  lengths = batch["src_len"]
  assert lengths.min() >= 2 and lengths.max() <= 6 and len(set(lengths.tolist())) == 5
  for b in range(64):
    n = lengths[b]
    src = batch["src"][b][:n].tolist()
    assert all(3 <= t < 8 for t in src) and np.all(batch["src"][b][n:] == PAD)
    _check_decoder_pair(batch, b, list(answer(src)), seq2seq.BOS)


def test_batches_are_deterministic_in_seed_and_step():
  task = _task("reverse", **SMALL)
  same = _batch("reverse", step=5, **SMALL)
  again = jax.jit(task.train_batch, static_argnums=1)(jnp.int32(5), 64)  # traced step
  for key in same:
    np.testing.assert_array_equal(same[key], again[key])
  assert not np.array_equal(same["src"], _batch("reverse", step=6, **SMALL)["src"])
  assert not np.array_equal(same["src"], _batch("reverse", step=5, seed=1, **SMALL)["src"])


def test_eval_set_is_fixed_and_held_out():
  task = _task("sort", eval_size=100, **SMALL)
  first, second = task.eval_batches(32), task.eval_batches(32)
  assert [len(b["src"]) for b in first] == [32, 32, 32, 4]
  for x, y in zip(first, second):
    np.testing.assert_array_equal(x["src"], y["src"])
  train = _batch("sort", eval_size=100, **SMALL)["src"]
  assert not np.array_equal(first[0]["src"], train[:32])


def _one_hot_logits(tokens, vocab, scale=20.0):
  return scale * jax.nn.one_hot(tokens, vocab)


def test_metrics_token_sequence_and_by_length():
  task, batch = _task("reverse", **SMALL), _batch("reverse", **SMALL)
  v = task.vocab_size
  metrics_fn = jax.jit(task.loss_and_metrics)  # one compile per batch shape beats eager ops
  loss, m = metrics_fn({"logits": _one_hot_logits(batch["tgt_out"], v)}, batch)
  assert float(loss) < 1e-6 and float(m["token_accuracy"]) == 1.0 and float(m["accuracy"]) == 1.0
  assert sum(float(m[f"frac@len{n}"]) for n in task.lengths) == pytest.approx(1.0)
  assert set(seq2seq.accuracy_by_length(m).values()) == {1.0}
  # one wrong token in row 0 (its source length n0): one sequence wrong, at length n0 only
  wrong = batch["tgt_out"].copy()
  wrong[0, 0] = (wrong[0, 0] + 1) % v
  _, m = metrics_fn({"logits": _one_hot_logits(wrong, v)}, batch)
  n0, valid = int(batch["src_len"][0]), int(batch["tgt_len"].sum())
  assert float(m["accuracy"]) == pytest.approx(63 / 64)
  assert float(m["token_accuracy"]) == pytest.approx((valid - 1) / valid)
  by_len = seq2seq.accuracy_by_length(m)
  assert by_len[n0] == pytest.approx(1 - 1 / (64 * float(m[f"frac@len{n0}"])))
  assert all(acc == 1.0 for n, acc in by_len.items() if n != n0)
  # pooled over unequal batches weighted by size, as the trainer's eval does: same numbers
  parts = [metrics_fn({"logits": _one_hot_logits(wrong[part], v)},
                      jax.tree.map(lambda a: a[part], batch))[1]
           for part in (slice(0, 16), slice(16, 64))]
  pooled = {f"eval/{k}": (16 * float(parts[0][k]) + 48 * float(parts[1][k])) / 64 for k in parts[0]}
  assert seq2seq.accuracy_by_length(pooled) == pytest.approx(by_len)
  # decoded tokens win over the logits' argmax; uniform logits give the baseline loss
  outputs = {"logits": jnp.zeros(batch["tgt_out"].shape + (v,)), "tokens": batch["tgt_out"]}
  loss, m = metrics_fn(outputs, batch)
  assert float(loss) == pytest.approx(task.baseline["loss"]) and float(m["accuracy"]) == 1.0


def test_baselines():
  task = _task("reverse", seq_len=3, min_len=1, num_symbols=4)  # V = 7, answers of 1..3
  assert task.baseline["accuracy"] == pytest.approx(np.mean([7.0 ** -(n + 1) for n in (1, 2, 3)]))
  small = _task("addition", digits_a=1, digits_b=2)
  sums = np.add.outer(np.arange(10), np.arange(100)).ravel()
  counts = np.bincount([len(str(s)) for s in sums])
  expected = sum(c / sums.size * 15.0 ** -(d + 1) for d, c in enumerate(counts) if c)
  assert small.baseline["accuracy"] == pytest.approx(expected)
  assert small.baseline["loss"] == pytest.approx(math.log(15))
  assert "addition" in small.describe() and "uniform-guess loss 2.7081" in small.describe()


@pytest.mark.parametrize("name,fields,match", [
    ("copy2", {}, r"Unknown task .copy2.; valid tasks: "
                  r"\[.*.reverse., .sort., .addition., .digits., .char_lm.\]"),
    ("reverse", {"min_len": 7, "seq_len": 5}, "min_len=7 exceeds task.seq_len=5"),
    ("sort", {"num_symbols": 1}, "num_symbols must be an integer >= 2"),
    ("addition", {"seq_len": 8}, "seq_len is derived"),
    ("addition", {"digits_b": 7}, r"digits_b must be an integer in \[1, 6\]"),
    ("reverse", {"eval_size": 0}, "eval_size must be an integer >= 1"),
])
def test_validate_rejects_bad_configs(name, fields, match):
  cfg = tasks.default_config("reverse" if name == "copy2" else name)
  cfg.update(fields)
  if name == "copy2":
    cfg.name = name
  with pytest.raises(ValueError, match=match):
    tasks.validate(cfg)


def test_accuracy_by_length_picks_one_prefix():
  row = {"train/frac@len2": 0.5, "train/correct@len2": 0.5,
         "eval/frac@len2": 0.5, "eval/correct@len2": 0.25}
  with pytest.raises(ValueError, match="prefix"):
    seq2seq.accuracy_by_length(row)
  assert seq2seq.accuracy_by_length(row, prefix="eval/") == {2: 0.5}
  assert seq2seq.accuracy_by_length(row, prefix="train/") == {2: 1.0}


# --- one-to-many: digits --------------------------------------------------------------

def test_digits_gives_the_bits_as_a_vector_and_the_decimal_digits_as_the_target():
  task = _task("digits")
  batch = _batch("digits")
  assert task.src_features == 14 == batch["src"].shape[1] and batch["src"].dtype == np.float32
  for b in range(8):
    bits = "".join("1" if v > 0 else "0" for v in batch["src"][b])
    n = int(bits, 2)
    assert n < 10**4 and batch["src_len"][b] == len(str(n))
    _check_decoder_pair(batch, b, [int(c) + 3 for c in str(n)], seq2seq.BOS)
    assert task.to_text(batch["tgt_out"][b]) == str(n)


def test_digits_never_trains_on_a_held_out_number():
  task = _task("digits", digits=3, eval_size=200)
  held = {int("".join("1" if v > 0 else "0" for v in row), 2)
          for row in np.asarray(task.eval_batches(1000)[0]["src"])}
  assert len(held) == 200  # the shuffle is a bijection: 200 distinct numbers
  seen = set()
  for step in range(40):
    src = np.asarray(task.train_batch(step, 64)["src"])
    seen |= {int("".join("1" if v > 0 else "0" for v in row), 2) for row in src}
  assert not seen & held and len(seen) > 700  # the other 800 numbers, nearly all drawn
  with pytest.raises(ValueError, match="at most half"):
    _task("digits", digits=2, eval_size=60)

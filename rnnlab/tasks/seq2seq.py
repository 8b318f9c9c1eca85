"""Seq2seq toy tasks generated on device: ``reverse``, ``sort``, ``addition``.

Tasks like every other (``rnnlab.tasks.base.Task``: ``default_config``,
``check``, ``train_batch``, ``eval_batches``, ``loss_and_metrics``, ``baseline``),
registered in ``rnnlab.tasks``, for model kind "seq2seq" (``model_kinds``), with
seq2seq batches:

    src (B, S) int32     source tokens, right-padded with PAD
    src_len (B,) int32   valid source length (what the encoder reads)
    tgt_in (B, L) int32  decoder inputs  BOS y_1 .. y_n PAD ..
    tgt_out (B, L) int32 targets         y_1 .. y_n EOS PAD ..
    tgt_len (B,) int32   n + 1 (the EOS counts)

Token ids: PAD = 0, EOS = 1. ``reverse`` / ``sort``: BOS = 2, symbols 3 ..
num_symbols + 2. ``addition`` uses the Flax seq2seq example's character table
over "0123456789+= " exactly (PAD 0, EOS 1, then the sorted characters: ' ' 2
(unused), '+' 3, '0'..'9' 4..13, '=' 14), with '=' as the decoder's start
token: source "a+b" then EOS, decoder input "=sum", target "sum" then EOS. As
in Flax, the source EOS sits just past the valid length (the encoder reads
"a+b" only) and the two operands are sorted so the smaller comes first
(``sort_operands``).

Metrics (``loss_and_metrics``): "loss" = mean cross-entropy over valid target
positions; "token_accuracy" over valid target positions; "accuracy" = exact
sequence match (every valid target token right, EOS included); and for every
source length n: "correct@len{n}" and "frac@len{n}", the fractions of the batch
that have src_len = n and are exactly right, and that have src_len = n. Their
ratio is the exact accuracy at length n, and it stays exact when the trainer
sums the metrics or averages them weighted by batch size (``accuracy_by_length``
forms it). Predictions are ``outputs["tokens"]`` (decoded)
when present, else the argmax of ``outputs["logits"]`` (teacher-forced: its exact
match equals greedy decoding's, since identical inputs give identical outputs).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from rnnlab.seq2seq import sequences
from rnnlab.tasks import base

PAD, EOS, BOS = 0, 1, 2
_FIRST_SYMBOL = 3
# Flax examples/seq2seq CharacterTable('0123456789+= '): ids 2.. for the sorted characters.
_ADDITION_CHARS = sorted(set("0123456789+= "))
_ADDITION_IDS = {ch: i + 2 for i, ch in enumerate(_ADDITION_CHARS)}
_EVAL_STREAM = 2**31 - 1  # fold_in index of the held-out set; training never reaches it


def accuracy_by_length(metrics: dict, prefix: str | None = None) -> dict[int, float]:
  """{n: exact accuracy at source length n} from (summed or averaged) metrics.

  Keys may carry a prefix such as "eval/"; ``prefix`` picks one when the dict
  holds several (a metrics.jsonl row at an eval step has "train/" and "eval/"
  keys), and mixing them without choosing is an error. Lengths that never
  occurred are left out.
  """
  found: dict[str, dict[int, float]] = {}
  for key, frac in metrics.items():
    pre, sep, n = key.rpartition("frac@len")
    if sep and (prefix is None or pre == prefix) and float(frac) > 0:
      found.setdefault(pre, {})[int(n)] = float(metrics[f"{pre}correct@len{n}"]) / float(frac)
  if len(found) > 1:
    raise ValueError(f"metrics hold per-length keys under several prefixes {sorted(found)}; "
                     "pass prefix= to choose one.")
  return dict(sorted(next(iter(found.values()), {}).items()))


class Seq2SeqTask(base.Task):
  """Shared batching, metrics and description; subclasses define ``_examples``."""
  output_mode = "seq2seq"
  model_kinds = ("seq2seq",)
  on_device = True
  primary_metric = "accuracy"
  higher_is_better = True
  pad_id, eos_id = PAD, EOS
  src_features = 0  # > 0: the source is a (B, src_features) vector (one-to-many)

  def __init__(self, cfg: dict, seed: int):
    self.seed = int(seed)
    self.eval_size = cfg["eval_size"]

  # Vocabulary and sizes: subclasses set bos_id, vocab_size, max_src_len,
  # max_tgt_len and lengths (the src_len values that occur).
  @property
  def src_vocab_size(self) -> int:
    return self.vocab_size

  @property
  def tgt_vocab_size(self) -> int:
    return self.vocab_size

  @property
  def seq_len(self) -> int:
    return self.max_src_len

  @property
  def input_size(self) -> int:
    return self.src_vocab_size

  @property
  def output_size(self) -> int:
    return self.tgt_vocab_size

  def train_batch(self, step, batch_size: int) -> dict:
    """Batch ``step`` of the training stream: a pure function of (seed, step).

    Jitted here (batch_size static) so that eager calls compile once; inside
    the trainer's jit it is simply inlined.
    """
    return self._stream(step, batch_size)

  @property
  def stream_key(self) -> jax.Array:
    """PRNGKey(seed): the key the training stream is folded from."""
    return jax.random.PRNGKey(self.seed)

  def batch_at(self, key, step, batch_size: int) -> dict:
    """Batch ``step`` of the stream of ``key`` (traced keys allowed: vmapped runs)."""
    return self._examples(jax.random.fold_in(key, step), batch_size)

  @functools.cached_property
  def _stream(self):
    def batch(step, batch_size):
      return self.batch_at(jax.random.PRNGKey(self.seed), step, batch_size)
    return jax.jit(batch, static_argnums=1)

  def eval_batches(self, batch_size: int) -> list[dict]:
    """The fixed held-out set (``eval_size`` examples from their own key), in batches."""
    data = self._stream(_EVAL_STREAM, self.eval_size)
    return [jax.tree.map(lambda a: a[i:i + batch_size], data)
            for i in range(0, self.eval_size, batch_size)]

  def loss_and_metrics(self, outputs: dict, batch: dict):
    """(loss, metrics); see the module docstring. Pure JAX, jittable."""
    logits, target, tgt_len = outputs["logits"], batch["tgt_out"], batch["tgt_len"]
    loss = sequences.token_nll(logits, target, tgt_len)
    pred = _fit_width(outputs.get("tokens", jnp.argmax(logits, axis=-1)), target.shape[1])
    valid = sequences.valid_mask(tgt_len, target.shape[1])
    right = (pred == target) | ~valid
    exact = jnp.all(right, axis=1)
    metrics = {"loss": loss,
               "token_accuracy": jnp.sum(right & valid) / jnp.maximum(jnp.sum(valid), 1),
               "accuracy": jnp.mean(exact)}
    for n in self.lengths:
      at_n = batch["src_len"] == n
      metrics[f"correct@len{n}"] = jnp.mean(at_n & exact)
      metrics[f"frac@len{n}"] = jnp.mean(at_n)
    if "teacher_forcing_prob" in outputs:
      metrics["teacher_forcing_prob"] = outputs["teacher_forcing_prob"]
    return loss, metrics

  @property
  def baseline(self) -> dict[str, float]:
    """A uniform guess over the target vocabulary: loss ln V, token accuracy 1/V,
    exact accuracy E[V^-(n+1)] over the answer lengths n."""
    v = self.tgt_vocab_size
    return {"loss": math.log(v), "token_accuracy": 1.0 / v,
            "accuracy": float(sum(p * v ** -float(n + 1) for n, p in self._answer_lengths()))}

  def describe(self) -> str:
    b = self.baseline
    return (f"{self._summary()}; source <= {self.max_src_len}, target <= {self.max_tgt_len} "
            f"tokens, vocab {self.tgt_vocab_size}; uniform-guess loss {b['loss']:.4f}, "
            f"token accuracy {b['token_accuracy']:.4f}")

  def artifacts(self) -> dict:
    """Arrays to store with a run: none (everything follows from the config)."""
    return {}

  def to_text(self, tokens) -> str:
    """One sequence of ids as text up to the first EOS, PAD dropped (for logging decodes)."""
    out = []
    for t in np.asarray(tokens).tolist():
      if t == EOS:
        break
      if t != PAD:
        out.append(self._token_text(t))
    return "".join(out)


def _fit_width(tokens, width):
  """Crops or PAD-extends (B, W) predictions to the target width."""
  tokens = tokens[:, :width]
  return jnp.pad(tokens, ((0, 0), (0, width - tokens.shape[1])), constant_values=PAD)


# --- reverse and sort ---------------------------------------------------------------

class _SymbolTask(Seq2SeqTask):
  """Source: n ~ U{min_len..seq_len} symbols, i.i.d. uniform; target: f(source)."""

  @classmethod
  def default_config(cls):
    return base.config_dict(
        name=cls.name,    # task registry key
        seq_len=10,       # longest source sequence (the target is one longer: EOS)
        min_len=1,        # shortest source sequence; lengths ~ U{min_len..seq_len}
        num_symbols=10,   # distinct source symbols
        eval_size=1000,   # held-out examples
    )

  @staticmethod
  def check(cfg: dict):
    base.check_int(cfg, "seq_len", 1)
    base.check_int(cfg, "min_len", 1)
    base.check_int(cfg, "num_symbols", 2)
    if cfg["min_len"] > cfg["seq_len"]:
      raise ValueError(f"task.min_len={cfg['min_len']} exceeds task.seq_len={cfg['seq_len']}; "
                       "need 1 <= min_len <= seq_len.")

  def __init__(self, cfg: dict, seed: int):
    super().__init__(cfg, seed)
    self.num_symbols = cfg["num_symbols"]
    self.min_len = cfg["min_len"]
    self.bos_id = BOS
    self.vocab_size = cfg["num_symbols"] + _FIRST_SYMBOL
    self.max_src_len = cfg["seq_len"]
    self.max_tgt_len = cfg["seq_len"] + 1
    self.lengths = tuple(range(cfg["min_len"], cfg["seq_len"] + 1))

  def _examples(self, key, batch_size):
    k_len, k_sym = jax.random.split(key)
    n = jax.random.randint(k_len, (batch_size,), self.min_len, self.max_src_len + 1)
    sym = jax.random.randint(k_sym, (batch_size, self.max_src_len), 0, self.num_symbols)
    src = jnp.where(sequences.valid_mask(n, self.max_src_len), sym + _FIRST_SYMBOL, PAD)
    tgt_in, tgt_out, tgt_len = sequences.decoder_pair(
        self._target(src, n), n, bos_id=BOS, eos_id=EOS, pad_id=PAD)
    return {"src": src.astype(jnp.int32), "src_len": n.astype(jnp.int32), "tgt_in": tgt_in,
            "tgt_out": tgt_out, "tgt_len": tgt_len}

  def _answer_lengths(self):
    p = 1.0 / len(self.lengths)
    return [(n, p) for n in self.lengths]

  def _token_text(self, t):
    return f"{t - _FIRST_SYMBOL} " if t >= _FIRST_SYMBOL else "^ "


class ReverseTask(_SymbolTask):
  """Output the source reversed: y = x_n .. x_1."""
  name = "reverse"

  def _target(self, src, n):
    return sequences.reverse_valid(src, n)

  def _summary(self):
    return f"reverse {self.min_len}-{self.max_src_len} symbols of {self.num_symbols}"


class SortTask(_SymbolTask):
  """Output the source sorted ascending (ties kept)."""
  name = "sort"

  def _target(self, src, n):
    valid = sequences.valid_mask(n, src.shape[1])
    return jnp.sort(jnp.where(valid, src, jnp.iinfo(jnp.int32).max), axis=1)

  def _summary(self):
    return f"sort {self.min_len}-{self.max_src_len} symbols of {self.num_symbols}"


# --- addition -----------------------------------------------------------------------

class AdditionTask(Seq2SeqTask):
  """"a+b" -> "=sum", a ~ U{0..10^digits_a - 1}, b ~ U{0..10^digits_b - 1} (Flax example)."""

  name = "addition"

  @staticmethod
  def default_config():
    return base.config_dict(
        name="addition",  # task registry key
        seq_len=None,     # source width, derived: digits_a + digits_b + 2 ("a+b", EOS)
        digits_a=2,       # a in [0, 10^digits_a - 1]; the Flax example: [0, 99]
        digits_b=3,       # b in [0, 10^digits_b - 1]; the Flax example: [0, 999]
        sort_operands=True,  # Flax writes the smaller operand first ("min+max")
        eval_size=1000,   # held-out examples
    )

  @staticmethod
  def check(cfg: dict):
    for field in ("digits_a", "digits_b"):  # <= 6 keeps a + b in int32, the baseline sum small
      base.check_int(cfg, field, 1, 6)
    derived = cfg["digits_a"] + cfg["digits_b"] + 2
    if cfg["seq_len"] is not None and cfg["seq_len"] != derived:
      raise ValueError(f"addition's seq_len is derived (digits_a + digits_b + 2 = {derived}); "
                       f"leave it None, got {cfg['seq_len']}.")

  def __init__(self, cfg: dict, seed: int):
    super().__init__(cfg, seed)
    self.digits_a, self.digits_b = cfg["digits_a"], cfg["digits_b"]
    self.sort_operands = cfg["sort_operands"]
    self.bos_id = _ADDITION_IDS["="]
    self.vocab_size = len(_ADDITION_CHARS) + 2
    self.max_src_len = self.digits_a + self.digits_b + 2  # "a+b" and the EOS after it
    self.max_tgt_len = max(self.digits_a, self.digits_b) + 2  # sum digits and EOS
    self.lengths = tuple(range(3, self.digits_a + self.digits_b + 2))

  def _examples(self, key, batch_size):
    k_a, k_b = jax.random.split(key)
    a = jax.random.randint(k_a, (batch_size,), 0, 10**self.digits_a)
    b = jax.random.randint(k_b, (batch_size,), 0, 10**self.digits_b)
    if self.sort_operands:
      a, b = jnp.minimum(a, b), jnp.maximum(a, b)
    width = max(self.digits_a, self.digits_b) + 1
    zero, one = _ADDITION_IDS["0"], jnp.ones((batch_size,), jnp.int32)
    da, na = sequences.decimal_digits(a, width)
    db, nb = sequences.decimal_digits(b, width)
    plus = jnp.full((batch_size, 1), _ADDITION_IDS["+"])
    src, n = sequences.pack([(da + zero, na), (plus, one), (db + zero, nb),
                             (jnp.full((batch_size, 1), EOS), one)], self.max_src_len, PAD)
    ds, ns = sequences.decimal_digits(a + b, width)
    tgt_in, tgt_out, tgt_len = sequences.decoder_pair(
        ds + zero, ns, bos_id=self.bos_id, eos_id=EOS, pad_id=PAD)
    return {"src": src, "src_len": n - 1, "tgt_in": tgt_in, "tgt_out": tgt_out,
            "tgt_len": tgt_len}

  def _answer_lengths(self):
    """Distribution of the number of digits of a + b (sorting does not change it)."""
    size_a, size_b = 10**self.digits_a, 10**self.digits_b
    a = np.arange(size_a, dtype=np.int64)
    below = lambda x: np.minimum(size_b, np.maximum(0, x - a)).sum()  # pairs with a+b < x
    total, out, prev = size_a * size_b, [], 0
    for d in range(1, max(self.digits_a, self.digits_b) + 2):
      cum = below(10**d)
      out.append((d, (cum - prev) / total))
      prev = cum
    return out

  def _token_text(self, t):
    chars = {i: ch for ch, i in _ADDITION_IDS.items()}
    return chars.get(t, "_")

  def _summary(self):
    order = ", smaller operand first" if self.sort_operands else ""
    return (f"addition a<10^{self.digits_a}, b<10^{self.digits_b} "
            f"(\"a+b\" -> \"=sum\"{order})")


# --- one-to-many: digits ---------------------------------------------------------------

class DigitsTask(Seq2SeqTask):
  """One-to-many: from the binary code of n (a feature vector) generate n's decimal digits.

  The numbers 0..N-1 (N = 10^digits) are shuffled by the bijection
  i -> (2011 i + 12345) mod N (2011 is prime and coprime to N); the first
  ``eval_size`` of that order are the held-out set and training draws uniformly
  from the rest, so every held-out number is one training never shows.
  The source is the vector of n's F = ceil(digits log2 10)
  bits, most significant first, as -1/+1 floats (``src`` (B, F) float32), so the
  model reads no sequence: a decoder starts from a dense bridge of the vector
  (``rnnlab.seq2seq.model``, ``src_features``). The target is n in decimal without
  leading zeros, then EOS: writing it needs the whole binary-to-decimal
  conversion, every output digit depending on every input bit. ``src_len`` holds
  the number of decimal digits of n, so "correct@len{d}" / "frac@len{d}" give the
  exact accuracy by output length. Token ids: PAD 0, EOS 1, BOS 2, digits 3..12.
  """
  name = "digits"

  @staticmethod
  def default_config():
    return base.config_dict(
        name="digits",    # task registry key
        seq_len=None,     # source width, derived: the bits of 10^digits - 1
        digits=4,         # n in [0, 10^digits - 1], written in at most `digits` digits
        eval_size=1000,   # held-out numbers, never drawn in training
    )

  @staticmethod
  def check(cfg: dict):
    base.check_int(cfg, "digits", 1, 6)  # 2011 * 10^6 < 2^31: the shuffle stays in int32
    base.check_int(cfg, "eval_size", 1, 10**cfg["digits"] // 2,
                   why=" (at most half of the 10^digits numbers; the rest train)")
    bits = DigitsTask.bits(cfg["digits"])
    if cfg["seq_len"] is not None and cfg["seq_len"] != bits:
      raise ValueError(f"digits' seq_len is derived (the {bits} bits of 10^{cfg['digits']} - 1);"
                       f" leave it None, got {cfg['seq_len']}.")

  @staticmethod
  def bits(digits: int) -> int:
    return int(math.ceil(digits * math.log2(10)))

  def __init__(self, cfg: dict, seed: int):
    super().__init__(cfg, seed)
    self.digits = cfg["digits"]
    self.src_features = self.max_src_len = self.bits(self.digits)
    self.bos_id = BOS
    self.vocab_size = 10 + _FIRST_SYMBOL
    self.max_tgt_len = self.digits + 1
    self.lengths = tuple(range(1, self.digits + 1))

  def number(self, i):
    """The i-th number of the shuffled order: (2011 i + 12345) mod 10^digits."""
    return (2011 * i + 12345) % 10**self.digits

  def _examples(self, key, batch_size):
    i = jax.random.randint(key, (batch_size,), self.eval_size, 10**self.digits)
    return self._encode(self.number(i))

  def eval_batches(self, batch_size: int) -> list[dict]:
    """The held-out numbers: the first ``eval_size`` of the shuffled order."""
    data = self._encode(self.number(jnp.arange(self.eval_size, dtype=jnp.int32)))
    return [jax.tree.map(lambda a: a[i:i + batch_size], data)
            for i in range(0, self.eval_size, batch_size)]

  def _encode(self, n):
    shifts = jnp.arange(self.src_features - 1, -1, -1)
    bits = (n[:, None] >> shifts) & 1
    digits, count = sequences.decimal_digits(n, self.digits)
    tgt_in, tgt_out, tgt_len = sequences.decoder_pair(
        digits + _FIRST_SYMBOL, count, bos_id=BOS, eos_id=EOS, pad_id=PAD)
    return {"src": (2.0 * bits - 1.0).astype(jnp.float32), "src_len": count.astype(jnp.int32),
            "tgt_in": tgt_in, "tgt_out": tgt_out, "tgt_len": tgt_len}

  def _answer_lengths(self):  # over all numbers (the held-out set is a uniform sample of them)
    total = 10**self.digits
    return [(1, 10 / total)] + [(d, 9 * 10**(d - 1) / total) for d in range(2, self.digits + 1)]

  def _token_text(self, t):
    return str(t - _FIRST_SYMBOL) if t >= _FIRST_SYMBOL else "_"

  def _summary(self):
    return (f"digits: the {self.src_features}-bit binary code of n < 10^{self.digits} (a vector) "
            "-> n's decimal digits")


TASKS = {cls.name: cls for cls in (ReverseTask, SortTask, AdditionTask, DigitsTask)}

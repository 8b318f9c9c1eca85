"""Character-level language modelling on any UTF-8 text (``char_lm``).

The model reads characters and predicts the next one at every step; the loss is
the cross-entropy in nats, reported also as bits per character (bpc = nats /
ln 2) and perplexity (exp of the nats). The baseline is the unigram model: every
character predicted with its frequency in the training split (add-one
smoothed over the vocabulary), scored on the held-out split.

The corpus (``task.path``): a UTF-8 file, or a folder whose files are read in
sorted order of their relative paths (files that are not UTF-8 text are skipped
and counted). None takes a corpus every machine has without a download: the
top-level modules of the running Python's standard library (``*.py`` in
``sysconfig.get_paths()["stdlib"]``, sorted by name; CPython 3.11.7: 168 files,
4.7 million characters), as char-rnn trained on the Linux kernel's sources. Its
size and sha256 are on the first console line of a run, so a run on another
Python version says that its corpus differs.

Split: the first ``1 - holdout`` of the characters train, the rest is held out
(contiguous, never shuffled). The vocabulary is every character of the corpus,
sorted by code point; it is stored with the run as ``vocab.npy`` (code points)
and ``rnnlab.sample`` reads it there.

Training is truncated backpropagation through time over contiguous streams, as
Zaremba et al. (2014) and char-rnn do: the training text is cut into B streams
of L = N // B characters; batch t holds characters [t T, t T + T) of every stream
(targets shifted by one) and the trainer carries the model's final state of
batch t into batch t + 1 (``Task.stateful``), so the state has seen the whole
stream while gradients flow back T steps. After ``(L - 1) // T`` batches (an
epoch) the streams start again with a zero state (``batch["reset"]``). The data
order is the same for every seed, as in char-rnn; the seed changes the
initialisation and the dropout draws.

Evaluation cuts the first ``eval_size`` held-out characters into as many
streams as the evaluation batch size and runs each stream from a zero state in
one pass (no gradient, so no truncation), so ``eval/bpc`` is the held-out bits
per character of a model reading up to eval_size / B characters of context.
"""

from __future__ import annotations

import hashlib
import math
import operator
import os
import sysconfig

import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import config_dict as mlc

from rnnlab import checks
from rnnlab.tasks import base

LN2 = math.log(2.0)


def stdlib_files() -> list[str]:
  """The default corpus: the standard library's top-level modules, sorted by name."""
  root = sysconfig.get_paths()["stdlib"]
  return sorted(os.path.join(root, n) for n in os.listdir(root) if n.endswith(".py"))


def corpus_files(path: str | None) -> list[str]:
  """The files of ``path`` (a file, or a folder's files in sorted relative-path order)."""
  if path is None:
    return stdlib_files()
  if os.path.isfile(path):
    return [path]
  if not os.path.isdir(path):
    raise FileNotFoundError(f"task.path {path!r} is neither a file nor a folder; point it at a "
                            "UTF-8 text file or a folder of them (None = the Python standard "
                            "library's sources).")
  found = []
  for root, dirs, names in os.walk(path):
    dirs.sort()
    found += [os.path.join(root, n) for n in sorted(names)]
  return sorted(found, key=lambda f: os.path.relpath(f, path))


def read_corpus(path: str | None, max_chars: int | None = None) -> tuple[str, int, int]:
  """(text, files read, files skipped): the corpus, cut to ``max_chars`` characters.

  A single file that is not UTF-8 is an error; a folder's non-UTF-8 files are skipped.
  """
  files = corpus_files(path)
  parts, skipped, size = [], 0, 0
  for f in files:
    try:
      with open(f, encoding="utf-8") as fh:
        text = fh.read()
    except UnicodeDecodeError as err:
      if len(files) == 1:
        raise ValueError(f"task.path {f!r} is not UTF-8 text ({err.reason} at byte "
                         f"{err.start}).") from None
      skipped += 1
      continue
    parts.append(text)
    size += len(text)
    if max_chars is not None and size >= max_chars:
      break
  text = "".join(parts)
  return (text if max_chars is None else text[:max_chars]), len(parts), skipped


def unigram_cross_entropy(train_ids: np.ndarray, held_ids: np.ndarray, vocab_size: int) -> float:
  """Nats per character of the held-out ids under the training split's add-one-smoothed
  character frequencies."""
  counts = np.bincount(train_ids, minlength=vocab_size).astype(np.float64) + 1.0
  logp = np.log(counts / counts.sum())
  return float(-logp[held_ids].mean())


class CharLM(base.Task):
  """Next-character prediction with state carried across batches (module docstring).

  Batches: x (B, T) int32 character ids, y (B, T) the next characters, reset ()
  bool (True at the first batch of an epoch: start from a zero state).
  """
  name = "char_lm"
  output_mode = "all"
  model_kinds = ("lm",)
  primary_metric = "bpc"
  higher_is_better = False
  on_device = False
  stateful = True
  input_size = 1

  @staticmethod
  def default_config():
    return base.config_dict(
        name="char_lm",
        path=mlc.placeholder(str),       # UTF-8 file or folder; None = the Python stdlib sources
        max_chars=mlc.placeholder(int),  # use the corpus' first max_chars characters; None = all
        seq_len=100,                     # T: truncated-BPTT length (steps a gradient flows back)
        holdout=0.05,                    # the corpus' last fraction, held out for evaluation
        eval_size=65_536,                # held-out characters evaluated (cut into eval streams)
    )

  @staticmethod
  def check(cfg: dict):
    base.check_int(cfg, "seq_len", 1)
    if cfg["max_chars"] is not None:
      base.check_int(cfg, "max_chars", 2)
    if cfg["path"] is not None and (not isinstance(cfg["path"], str) or not cfg["path"]):
      raise ValueError(f"task 'char_lm': path must be a non-empty path or None (the Python "
                       f"standard library's sources); got {cfg['path']!r}.")
    h = cfg["holdout"]
    if isinstance(h, bool) or not isinstance(h, (int, float)) or not 0.0 < h < 1.0:
      raise ValueError(f"task 'char_lm': holdout must be a fraction in (0, 1); got {h!r}.")

  def __init__(self, cfg: dict, seed: int):
    self.seed, self.path, self.seq_len = seed, cfg["path"], cfg["seq_len"]
    text, self.files, self.skipped = read_corpus(self.path, cfg["max_chars"])
    if not text:
      raise ValueError(f"task 'char_lm': the corpus {self.where()} holds no UTF-8 text.")
    self.sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
    self.chars = sorted(set(text))
    self.index = {c: i for i, c in enumerate(self.chars)}
    points = np.frombuffer(text.encode("utf-32-le"), np.uint32)
    ids = np.searchsorted(np.array([ord(c) for c in self.chars], np.uint32), points)
    ids = ids.astype(np.int32)
    self.num_chars = len(ids)
    split = int(round(len(ids) * (1.0 - cfg["holdout"])))
    self._train, held = ids[:split], ids[split:]
    need = self.seq_len + 1
    if len(self._train) < need or len(held) < 2:
      raise ValueError(f"task 'char_lm': the corpus {self.where()} has {len(ids)} characters: "
                       f"too few for {len(self._train)} training characters of at least "
                       f"seq_len + 1 = {need} and a held-out split of at least 2 (holdout "
                       f"{cfg['holdout']}).")
    self.eval_size = min(cfg["eval_size"], len(held) - 1)
    self._held = held[:self.eval_size + 1]
    self.output_size = self.vocab_size = len(self.chars)
    nats = unigram_cross_entropy(self._train, held, self.vocab_size)
    self.baseline = {"loss": nats, "bpc": nats / LN2, "perplexity": math.exp(nats)}

  def where(self) -> str:
    return "of the Python standard library" if self.path is None else f"{self.path!r}"

  # --- batches ---------------------------------------------------------------------

  def stream_shape(self, batch_size: int) -> tuple[int, int]:
    """(stream length L, batches per epoch) for ``batch_size`` streams."""
    length = len(self._train) // batch_size
    per_epoch = (length - 1) // self.seq_len
    if per_epoch < 1:
      raise ValueError(f"task 'char_lm': {len(self._train)} training characters cut into "
                       f"{batch_size} streams give {length} characters each, fewer than "
                       f"seq_len + 1 = {self.seq_len + 1}; lower train.batch_size or "
                       "task.seq_len, or use a larger corpus.")
    return length, per_epoch

  def train_batch(self, step: int, batch_size: int) -> base.Batch:
    """Batch ``step``: characters [t T, t T + T] of each of the B streams, t = step mod the
    batches of an epoch."""
    checks.check_int("batch_size", batch_size)
    step = operator.index(step)
    base.check_step(step)
    length, per_epoch = self.stream_shape(batch_size)
    t = step % per_epoch
    streams = self._train[:batch_size * length].reshape(batch_size, length)
    window = streams[:, t * self.seq_len:t * self.seq_len + self.seq_len + 1]
    return {"x": np.ascontiguousarray(window[:, :-1]), "y": np.ascontiguousarray(window[:, 1:]),
            "reset": np.array(t == 0)}

  def eval_batches(self, batch_size: int) -> list[base.Batch]:
    """One batch: the held-out characters as min(batch_size, eval_size) streams."""
    n = min(batch_size, self.eval_size)
    length = self.eval_size // n
    ids = self._held[:n * length + 1]
    x = ids[:-1].reshape(n, length)
    y = ids[1:].reshape(n, length)
    return [{"x": x, "y": y}]

  # --- loss --------------------------------------------------------------------------

  def loss_and_metrics(self, outputs, batch):
    """outputs["logits"]: (B, T, V); batch["y"]: (B, T) next-character ids."""
    logits = outputs["logits"]
    want = (*batch["y"].shape, self.vocab_size)
    if tuple(logits.shape) != want:
      raise ValueError(f"char_lm: logits have shape {tuple(logits.shape)}; expected {want}.")
    nats = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]))
    return nats, {"loss": nats, "bpc": nats / LN2, "perplexity": jnp.exp(nats),
                  "accuracy": base.accuracy(logits, batch["y"])}

  # --- the run's record ----------------------------------------------------------------

  def artifacts(self) -> dict[str, np.ndarray]:
    return {"vocab": np.array([ord(c) for c in self.chars], np.int32)}

  def headline(self):
    files = f"{self.files} file{'s' * (self.files != 1)}" + (
        f", {self.skipped} non-UTF-8 skipped" if self.skipped else "")
    return (f"char_lm T={self.seq_len} on the corpus {self.where()} ({files}, "
            f"{self.num_chars:,} characters, sha256 {self.sha256[:12]}), vocabulary "
            f"{self.vocab_size}, {len(self._train):,} train / {self.eval_size:,} held-out "
            "characters")

  def describe(self):
    return (f"{self.headline()}; unigram baseline {self.baseline['bpc']:.3f} bpc "
            f"(perplexity {self.baseline['perplexity']:.2f})")

"""Synthetic long-dependency tasks generated on device: copy, adding, temporal order.

Each task has a pure generator ``*_batch(key, batch_size, ...) -> {"x", "y"}``
(jittable; sizes static) and a ``Task`` class around it. Training batch
``step`` is drawn from ``fold_in(PRNGKey(seed), step)``; the held-out set of
``eval_size`` examples is drawn once from ``fold_in(PRNGKey(seed), 2**32 - 1)``,
a key no training step uses. Definitions follow docs/references.md.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from rnnlab.tasks import base

# Copy task symbols (Arjovsky et al. 2016): 0 blank, 1..8 data, 9 delimiter.
COPY_BLANK, COPY_DELIMITER = 0, 9
COPY_SYMBOLS = 8      # data symbols 1..8
COPY_LENGTH = 10      # symbols to remember

# Temporal order: symbols 0 = A and 1 = B are relevant, 2..5 are distractors.
ORDER_SYMBOLS = 6
ORDER_RELEVANT = 2
# Start of each relevant interval in tenths of the length; each spans a tenth.
ORDER_INTERVALS = {2: (1, 5), 3: (1, 3, 6)}


# --- generators --------------------------------------------------------------------

def copy_batch(key: jax.Array, batch_size: int, delay: int) -> base.Batch:
  """Copy-memory sequences, Arjovsky, Shah & Bengio (2016) layout.

  With L = delay + 20 and s_1..s_10 ~ U{1..8} i.i.d.:
    input  = s_1..s_10, 0 * (delay - 1), 9, 0 * 10        (length L)
    target = 0 * (delay + 10), s_1..s_10                    (length L)
  so the recall starts one step after the delimiter. Other papers move the
  marker (TCN fills the last 11 inputs with 9; expRNN recalls from the
  delimiter on); rnnlab uses this layout.

  Returns:
    x: (B, L, 10) float32 one-hot inputs; y: (B, L) int32 targets in 0..8.
  """
  data = jax.random.randint(key, (batch_size, COPY_LENGTH), 1, COPY_SYMBOLS + 1, jnp.int32)
  blanks = lambda n: jnp.full((batch_size, n), COPY_BLANK, jnp.int32)
  delimiter = jnp.full((batch_size, 1), COPY_DELIMITER, jnp.int32)
  inputs = jnp.concatenate([data, blanks(delay - 1), delimiter, blanks(COPY_LENGTH)], axis=1)
  targets = jnp.concatenate([blanks(delay + COPY_LENGTH), data], axis=1)
  return {"x": jax.nn.one_hot(inputs, COPY_SYMBOLS + 2, dtype=jnp.float32), "y": targets}


def selective_copy_batch(key: jax.Array, batch_size: int, delay: int) -> base.Batch:
  """Selective copy (Jing et al. 2019; the Mamba paper's selective copying, on which Feng et
  al. 2024 test minGRU and minLSTM): ``copy_batch`` with the 10 data symbols spread, in
  order, over random distinct positions of the first delay + 9 steps (blanks between them),
  instead of at the start. The delimiter, the recall and the targets are copy's, so the
  model must pick the symbols out of the blanks as they come, not count from the start.

  Returns:
    x: (B, L, 10) float32 one-hot inputs, L = delay + 20; y: (B, L) int32 targets in 0..8.
  """
  k_data, k_pos = jax.random.split(key)
  batch = copy_batch(k_data, batch_size, delay)
  symbols = jnp.argmax(batch["x"], axis=-1)
  slots = delay + COPY_LENGTH - 1  # every step before the delimiter
  # 10 distinct positions per sequence, in increasing order (the data keep their order)
  positions = jnp.sort(jnp.argsort(jax.random.uniform(k_pos, (batch_size, slots)), axis=1)
                       [:, :COPY_LENGTH], axis=1)
  rows = jnp.arange(batch_size)[:, None]
  spread = symbols.at[:, :slots].set(COPY_BLANK).at[rows, positions].set(
      symbols[:, :COPY_LENGTH])
  return {"x": jax.nn.one_hot(spread, COPY_SYMBOLS + 2, dtype=jnp.float32), "y": batch["y"]}


def adding_batch(key: jax.Array, batch_size: int, seq_len: int) -> base.Batch:
  """Adding-problem sequences, Le et al. (2015) / Arjovsky et al. (2016) layout.

  Channel 0: v_t ~ U[0, 1). Channel 1: zero except ones at i ~ U{t : t < T/2}
  and j ~ U{t : T/2 <= t < T}. Target y = v_i + v_j, read at the last step.

  Returns:
    x: (B, T, 2) float32; y: (B,) float32.
  """
  k_v, k_i, k_j = jax.random.split(key, 3)
  half = (seq_len + 1) // 2  # first integer position >= T/2
  values = jax.random.uniform(k_v, (batch_size, seq_len), jnp.float32)
  first = jax.random.randint(k_i, (batch_size,), 0, half)
  second = jax.random.randint(k_j, (batch_size,), half, seq_len)
  markers = (jax.nn.one_hot(first, seq_len, dtype=jnp.float32)
             + jax.nn.one_hot(second, seq_len, dtype=jnp.float32))
  return {"x": jnp.stack([values, markers], axis=-1), "y": jnp.sum(values * markers, axis=-1)}


def order_intervals(seq_len: int, bits: int) -> list[tuple[int, int]]:
  """Integer positions [lo, hi) of the relevant intervals [a l / 10, (a + 1) l / 10)."""
  ceil_tenths = lambda a: -(-a * seq_len // 10)
  return [(ceil_tenths(a), ceil_tenths(a + 1)) for a in ORDER_INTERVALS[bits]]


def temporal_order_batch(key: jax.Array, batch_size: int, seq_len: int, bits: int) -> base.Batch:
  """Temporal-order sequences, Hochreiter & Schmidhuber (1997) task 6a as in docs/references.md.

  Every position holds a distractor ~ U{2..5} except one relevant symbol
  r_k ~ U{A=0, B=1} in each interval [a_k l / 10, (a_k + 1) l / 10), a_k in
  (1, 5) for 2 bits and (1, 3, 6) for 3 bits. The class is the ordered tuple
  read as a binary number, first symbol most significant:
  class = sum_k r_k 2^(bits-1-k) (2 bits: AA 0, AB 1, BA 2, BB 3). H&S also
  frame the sequence with start/end symbols; docs/references.md has 6 symbols and
  no frame, and so does rnnlab.

  Returns:
    x: (B, l, 6) float32 one-hot; y: (B,) int32 in [0, 2^bits).
  """
  k_d, k_r, *k_pos = jax.random.split(key, 2 + bits)
  symbols = jax.random.randint(k_d, (batch_size, seq_len), ORDER_RELEVANT, ORDER_SYMBOLS,
                               jnp.int32)
  positions = jnp.stack([jax.random.randint(k, (batch_size,), lo, hi)
                         for k, (lo, hi) in zip(k_pos, order_intervals(seq_len, bits))], axis=1)
  relevant = jax.random.randint(k_r, (batch_size, bits), 0, ORDER_RELEVANT, jnp.int32)
  symbols = symbols.at[jnp.arange(batch_size)[:, None], positions].set(relevant)
  labels = jnp.sum(relevant * 2 ** jnp.arange(bits - 1, -1, -1), axis=1).astype(jnp.int32)
  return {"x": jax.nn.one_hot(symbols, ORDER_SYMBOLS, dtype=jnp.float32), "y": labels}


# --- tasks -----------------------------------------------------------------------------

class SyntheticTask(base.Task):
  """A task whose batches come from a jittable generator ``(key, batch_size) -> batch``."""
  on_device = True

  def __init__(self, cfg: dict, seed: int, generator):
    self.eval_size = cfg["eval_size"]
    self._root = jax.random.PRNGKey(seed)
    self._generate = jax.jit(generator, static_argnums=1)
    self._eval = None

  @property
  def stream_key(self) -> jax.Array:
    """PRNGKey(seed): the key the training stream is folded from."""
    return self._root

  def train_batch(self, step, batch_size: int) -> base.Batch:
    """The batch of training ``step`` (an int or traced int32), from fold_in(seed, step)."""
    return self.batch_at(self._root, step, batch_size)

  def batch_at(self, key, step, batch_size: int) -> base.Batch:
    """Batch ``step`` of the stream of ``key`` (traced keys allowed: vmapped runs)."""
    base.check_step(step)
    return self._generate(jax.random.fold_in(key, step), batch_size)

  def eval_batches(self, batch_size: int) -> list[base.Batch]:
    """The fixed held-out set of ``eval_size`` examples, in batches of ``batch_size``."""
    if self._eval is None:
      key = jax.random.fold_in(self._root, base.EVAL_STREAM)
      self._eval = self._generate(key, self.eval_size)
    return base.split_batches(self._eval, batch_size)


class CopyTask(SyntheticTask):
  """Copy memory: recall 10 symbols from {1..8} after a delay (see ``copy_batch``).

  Loss: mean cross-entropy over all delay + 20 positions. Accuracy: over the 10
  recall positions. A memoryless model predicts blank before the recall and
  guesses at it: loss 10 ln 8 / (delay + 20), accuracy 1/8.
  """
  name = "copy"
  output_mode = "all"
  input_size = COPY_SYMBOLS + 2
  output_size = COPY_SYMBOLS + 1
  generator = staticmethod(copy_batch)

  @staticmethod
  def default_config():
    return base.config_dict(
        name="copy",
        seq_len=100,      # the delay T between the last data symbol and the delimiter; input T+20
        eval_size=1000,   # held-out sequences, generated once
    )

  @staticmethod
  def check(cfg: dict):
    base.check_int(cfg, "seq_len", 1, why=" (the delay T; the input has T+20 steps)")

  def __init__(self, cfg: dict, seed: int):
    self.delay = cfg["seq_len"]
    self.seq_len = self.delay + 2 * COPY_LENGTH
    self.baseline = {"loss": COPY_LENGTH * math.log(COPY_SYMBOLS) / self.seq_len,
                     "accuracy": 1.0 / COPY_SYMBOLS}
    super().__init__(cfg, seed, functools.partial(self.generator, delay=self.delay))

  def loss_and_metrics(self, outputs, batch):
    """outputs: (B, T+20, 9) logits; batch["y"]: (B, T+20)."""
    base.check_outputs(self, outputs, batch)
    loss = base.cross_entropy(outputs, batch["y"])
    recall = slice(-COPY_LENGTH, None)
    acc = base.accuracy(outputs[:, recall], batch["y"][:, recall])
    return loss, {"loss": loss, "accuracy": acc}

  def headline(self):
    return f"copy T={self.delay} (input {self.seq_len} steps)"


class SelectiveCopyTask(CopyTask):
  """Selective copy: copy's recall with the 10 symbols at random positions among the blanks
  (see ``selective_copy_batch``). Loss, accuracy and baselines are copy's."""
  name = "selective_copy"
  generator = staticmethod(selective_copy_batch)

  @staticmethod
  def default_config():
    cfg = CopyTask.default_config()
    cfg.name = "selective_copy"
    return cfg

  def headline(self):
    return f"selective copy T={self.delay} (input {self.seq_len} steps)"


class AddingTask(SyntheticTask):
  """Adding problem: regress the sum of the two marked values (see ``adding_batch``).

  Loss: MSE of the last-step output. Always predicting 1 gives
  E[(v_i + v_j - 1)^2] = Var(v_i + v_j) = 2/12 = 1/6.
  """
  name = "adding"
  output_mode = "last"
  input_size = 2
  output_size = 1
  primary_metric = "loss"
  higher_is_better = False
  baseline = {"loss": 1.0 / 6.0}

  @staticmethod
  def default_config():
    return base.config_dict(
        name="adding",
        seq_len=100,      # T, sequence length; marks fall in [0, T/2) and [T/2, T)
        eval_size=1000,   # held-out sequences, generated once
    )

  @staticmethod
  def check(cfg: dict):
    base.check_int(cfg, "seq_len", 2, why=" (one mark in each half)")

  def __init__(self, cfg: dict, seed: int):
    self.seq_len = cfg["seq_len"]
    super().__init__(cfg, seed, functools.partial(adding_batch, seq_len=self.seq_len))

  def loss_and_metrics(self, outputs, batch):
    """outputs: (B, 1) predictions; batch["y"]: (B,) float32."""
    base.check_outputs(self, outputs, batch)
    loss = jnp.mean((outputs[:, 0] - batch["y"]) ** 2)
    return loss, {"loss": loss}

  def headline(self):
    return f"adding T={self.seq_len} (loss = MSE of the sum)"


class TemporalOrderTask(SyntheticTask):
  """Temporal order: classify the order of 2 or 3 relevant symbols (see ``temporal_order_batch``).

  Loss: cross-entropy of the last-step output; chance ln(2^bits), 1/2^bits.
  """
  name = "temporal_order"
  output_mode = "last"
  input_size = ORDER_SYMBOLS

  @staticmethod
  def default_config():
    return base.config_dict(
        name="temporal_order",
        seq_len=100,      # l, sequence length (H&S 1997 used about 100)
        bits=2,           # relevant symbols: 2 (4 classes) or 3 (8 classes)
        eval_size=1000,   # held-out sequences, generated once
    )

  @staticmethod
  def check(cfg: dict):
    bits = cfg["bits"]
    if not isinstance(bits, int) or isinstance(bits, bool) or bits not in ORDER_INTERVALS:
      raise ValueError(f"task 'temporal_order': bits must be one of {sorted(ORDER_INTERVALS)}; "
                       f"got {cfg['bits']!r}.")
    min_len = min_order_length(cfg["bits"])
    base.check_int(cfg, "seq_len", min_len,
                   why=f" so that each relevant interval of {cfg['bits']} bits holds a position")

  def __init__(self, cfg: dict, seed: int):
    self.seq_len, self.bits = cfg["seq_len"], cfg["bits"]
    self.output_size = 2 ** self.bits
    self.baseline = {"loss": math.log(self.output_size), "accuracy": 1.0 / self.output_size}
    generator = functools.partial(temporal_order_batch, seq_len=self.seq_len, bits=self.bits)
    super().__init__(cfg, seed, generator)

  def loss_and_metrics(self, outputs, batch):
    """outputs: (B, 2^bits) logits; batch["y"]: (B,) int32."""
    return base.classification(self, outputs, batch)

  def headline(self):
    return f"temporal_order {self.bits}-bit l={self.seq_len} ({self.output_size} classes)"


def min_order_length(bits: int) -> int:
  """Shortest l from which on every relevant interval holds an integer position.

  Intervals span l/10 >= 1 positions for l >= 10, so only shorter l can fail.
  """
  empty = [l for l in range(1, 10) if any(lo >= hi for lo, hi in order_intervals(l, bits))]
  return max(empty, default=0) + 1

"""Sequential (smnist) and permuted (psmnist) pixel-by-pixel MNIST.

Each 28x28 image is read as 784 steps of one grey value scaled to [0, 1], in
row-major order (smnist) or in the order of one fixed random permutation of
the 784 positions (psmnist: step t reads pixel ``permutation[t]``); the class
is read out after the last step.

Data come from ``tfds.data_source("mnist")`` (array_record files, random
access, no TensorFlow). tfds itself needs TensorFlow to *build* MNIST;
``prepare_mnist.py`` writes the same files without it::

    python -m rnnlab.tasks.prepare_mnist --data_dir=DIR   # downloads ~11 MB, checks sha256

Both splits are decoded into memory once when the task is made (60000 x 784
uint8 = 47 MB; tfds decodes about 2500 images/s here, so tens of seconds).
"""

from __future__ import annotations

import math
import operator
import threading

import numpy as np
from ml_collections import config_dict as mlc

from rnnlab import checks
from rnnlab.tasks import base

PIXELS = 28 * 28
NUM_CLASSES = 10
TEST_SIZE = 10_000
SOURCE_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"


def import_tfds():
  # Importing tfds costs about a second; runs of synthetic tasks never pay it.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds


def resolved_data_dir(data_dir: str | None) -> str:
  """data_dir, or tfds' default ($TFDS_DATA_DIR or ~/tensorflow_datasets) when None."""
  return data_dir or import_tfds().core.constants.DATA_DIR


def missing_message(data_dir: str | None) -> str:
  where = resolved_data_dir(data_dir)
  return (
      f"MNIST in array_record format was not found under {where!r}. rnnlab reads it with "
      "tfds.data_source (no TensorFlow), but tfds needs TensorFlow to build it, so get it "
      "once with either\n"
      f"  python -m rnnlab.tasks.prepare_mnist --data_dir={where}\n"
      f"    (downloads the 4 original files from {SOURCE_URL}, checks their sha256 and writes "
      "the tfds array_record files; no TensorFlow needed), or, where TensorFlow is installed,\n"
      f"  tfds build mnist --file_format=array_record --data_dir={where}\n"
      "and point config.task.data_dir at that directory (None means the tfds default).")


# --- reading ------------------------------------------------------------------------

def open_split(split: str, data_dir: str | None):
  """The tfds random-access source of one split; FileNotFoundError (with the fix) if absent."""
  try:
    return import_tfds().data_source("mnist", split=split, data_dir=data_dir, download=False,
                                     builder_kwargs={"file_format": "array_record"})
  except (KeyError, NotImplementedError, FileNotFoundError) as err:
    # tfds reports a missing dataset as an empty split table (KeyError) or as an
    # unsupported file format (NotImplementedError); neither says what to do.
    raise FileNotFoundError(missing_message(data_dir)) from err


def load_split(split: str, data_dir: str | None, limit: int | None = None):
  """The first ``limit`` (default all) examples of a split, decoded.

  Returns:
    pixels: (N, 784) uint8 in row-major order; labels: (N,) int32.
  """
  source = open_split(split, data_dir)
  n = len(source) if limit is None else limit
  if n > len(source):
    raise ValueError(f"MNIST {split} split holds {len(source)} examples; {n} requested "
                     "(lower task.eval_size).")
  examples = [source[i] for i in range(n)]
  pixels = np.stack([np.asarray(e["image"], np.uint8).reshape(PIXELS) for e in examples])
  return pixels, np.array([e["label"] for e in examples], np.int32)


def to_steps(pixels: np.ndarray) -> np.ndarray:
  """(B, 784) uint8 -> (B, 784, 1) float32 grey values in [0, 1]."""
  return (pixels.astype(np.float32) / 255.0)[..., None]


# --- tasks --------------------------------------------------------------------------

class SequentialMnist(base.Task):
  """Pixel MNIST: 784 steps of one pixel, 10 classes read out at the end.

  Training batch ``step`` takes positions [step B, (step + 1) B) of the endless
  stream of epochs, epoch e being the training split in the order
  ``RandomState([seed, e]).permutation(60000)``; so a batch depends on
  (seed, step, B) only. The held-out set is the first ``eval_size`` test images.
  """
  name = "smnist"
  seq_len = PIXELS
  input_size = 1
  output_size = NUM_CLASSES
  output_mode = "last"
  on_device = False
  baseline = {"loss": math.log(NUM_CLASSES), "accuracy": 1.0 / NUM_CLASSES}
  permutation = None

  @staticmethod
  def default_config():
    return base.config_dict(
        name="smnist",
        seq_len=PIXELS,                      # fixed: one step per pixel of a 28x28 image
        data_dir=mlc.placeholder(str),       # tfds data dir holding mnist/3.0.1; None = default
        eval_size=TEST_SIZE,                 # first test images used for evaluation (all 10000)
    )

  @staticmethod
  def check(cfg: dict):
    if cfg["seq_len"] != PIXELS:
      raise ValueError(f"task {cfg['name']!r}: seq_len is fixed at {PIXELS} (one step per pixel); "
                       f"got {cfg['seq_len']!r}.")
    base.check_int(cfg, "eval_size", 1, TEST_SIZE, why=" (the MNIST test split size)")
    if cfg["data_dir"] is not None and (not isinstance(cfg["data_dir"], str)
                                        or not cfg["data_dir"]):
      raise ValueError(f"task {cfg['name']!r}: data_dir must be a non-empty path or None "
                       f"(the tfds default); got {cfg['data_dir']!r}.")

  def __init__(self, cfg: dict, seed: int):
    self.seed, self.data_dir = seed, cfg["data_dir"]
    pixels, self._train_y = load_split("train", self.data_dir)
    self._train_x = self._reorder(pixels)
    pixels, labels = load_split("test", self.data_dir, limit=cfg["eval_size"])
    self._eval = {"x": to_steps(self._reorder(pixels)), "y": labels}
    self._orders: dict[int, np.ndarray] = {}
    self._orders_lock = threading.Lock()  # the trainer prepares batches in a worker thread

  def _reorder(self, pixels: np.ndarray) -> np.ndarray:
    return pixels if self.permutation is None else pixels[:, self.permutation]

  def epoch_order(self, epoch: int) -> np.ndarray:
    """The training-split indices of ``epoch``, in order (the last two are cached)."""
    with self._orders_lock:
      if epoch not in self._orders:
        if len(self._orders) >= 2:
          del self._orders[min(self._orders)]
        rng = np.random.RandomState([self.seed, epoch])
        self._orders[epoch] = rng.permutation(len(self._train_y))
      return self._orders[epoch]

  def train_indices(self, step: int, batch_size: int) -> np.ndarray:
    """(B,) training-split indices of batch ``step``; a batch may span two epochs."""
    step = operator.index(step)
    base.check_step(step)
    positions = step * batch_size + np.arange(batch_size)
    epochs, offsets = np.divmod(positions, len(self._train_y))
    indices = np.empty(batch_size, np.int64)
    for epoch in np.unique(epochs):
      here = epochs == epoch
      indices[here] = self.epoch_order(int(epoch))[offsets[here]]
    return indices

  def train_batch(self, step: int, batch_size: int) -> base.Batch:
    """Host numpy batch: x (B, 784, 1) float32 in [0, 1], y (B,) int32."""
    checks.check_int("batch_size", batch_size)
    indices = self.train_indices(step, batch_size)
    return {"x": to_steps(self._train_x[indices]), "y": self._train_y[indices]}

  def eval_batches(self, batch_size: int) -> list[base.Batch]:
    return base.split_batches(self._eval, batch_size)

  def loss_and_metrics(self, outputs, batch):
    """outputs: (B, 10) logits; batch["y"]: (B,) int32."""
    return base.classification(self, outputs, batch)

  def headline(self):
    return (f"{self.name} {self.seq_len} steps, {len(self._train_y)} train / "
            f"{len(self._eval['y'])} test images")


class PermutedMnist(SequentialMnist):
  """Permuted pixel MNIST: one fixed permutation of the 784 positions for all images.

  ``permutation = RandomState(permutation_seed).permutation(784)`` (NumPy keeps
  the RandomState stream fixed across versions); step t reads pixel
  ``permutation[t]`` of the row-major image. ``artifacts()`` hands it to the
  trainer, which stores it with the run.
  """
  name = "psmnist"

  @staticmethod
  def default_config():
    cfg = SequentialMnist.default_config()
    cfg.name = "psmnist"
    cfg.permutation_seed = 0                 # seeds the pixel permutation, apart from `seed`
    return cfg

  @staticmethod
  def check(cfg: dict):
    SequentialMnist.check(cfg)
    base.check_int(cfg, "permutation_seed", 0, 2**32 - 1)

  def __init__(self, cfg: dict, seed: int):
    self.permutation_seed = cfg["permutation_seed"]
    self.permutation = np.random.RandomState(self.permutation_seed).permutation(PIXELS)
    super().__init__(cfg, seed)

  def artifacts(self) -> dict[str, np.ndarray]:
    return {"permutation": self.permutation}

  def headline(self):
    return f"{super().headline()} (permutation seed {self.permutation_seed})"

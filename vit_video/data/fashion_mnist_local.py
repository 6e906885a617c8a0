"""Fashion-MNIST as a local tfds builder, built from idx files on disk (no download, no checksums).

The Debian package `dataset-fashion-mnist` carries the real data, but its .gz bytes differ from upstream, so
tfds's checksummed `fashion_mnist` builder rejects them. `FashionMnistLocal` produces the same features as
tfds `fashion_mnist` (image (28, 28, 1) uint8, label ClassLabel with the 10 class names; splits train 60,000
and test 10,000) from any directory holding the four idx files, gzipped or not, passed as `manual_dir`:

  python -m vit_video.data.prepare fashion_mnist_local        # fetches them into data/raw/fashion_mnist first
  python -m vit_video.data.prepare fashion_mnist_local --manual_dir DIR   # idx files already in DIR

Defining the class registers the name `fashion_mnist_local` with tfds (tfds does this for every builder
subclass), so `tfds.builder('fashion_mnist_local', data_dir=...)` works once this module is imported.
"""
import gzip
import os
import zlib

import numpy as np
import tensorflow_datasets as tfds

CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
IMAGE_SHAPE = (28, 28, 1)
# Split name -> (images file, labels file), without the optional ".gz".
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# idx type code (third magic byte) -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}


def read_idx(path: str) -> np.ndarray:
  """Reads an idx file (gzipped when the name ends in .gz) into a native-endian numpy array.

  Format: magic `00 00 TT DD` (TT: element type code, DD: number of dimensions), DD big-endian uint32 sizes,
  then the elements in big-endian C order. Raises ValueError naming `path` when the magic number, the type
  code or the file length is wrong.
  """
  opener = gzip.open if str(path).endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      data = f.read()
  except (gzip.BadGzipFile, EOFError, zlib.error) as e:
    raise ValueError(f"idx file {path}: not a valid gzip file ({e})") from e
  if len(data) < 4 or data[0] != 0 or data[1] != 0:
    raise ValueError(f"idx file {path}: bad magic number {data[:4].hex()!r}, expected '0000TTDD'")
  type_code, ndim = data[2], data[3]
  if type_code not in _IDX_DTYPES:
    raise ValueError(f"idx file {path}: unknown element type code {type_code:#04x} in the magic number")
  if ndim == 0:
    raise ValueError(f"idx file {path}: magic number says 0 dimensions")
  header = 4 + 4 * ndim
  if len(data) < header:
    raise ValueError(f"idx file {path}: {len(data)} bytes, too short for the {ndim} sizes of its header")
  shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
  dtype = _IDX_DTYPES[type_code]
  expected = header + int(np.prod(shape)) * dtype.itemsize
  if len(data) != expected:
    raise ValueError(
        f"idx file {path}: {len(data)} bytes but its header says shape {shape} of {dtype.name} "
        f"({expected} bytes)")
  return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str, array: np.ndarray) -> None:
  """Writes `array` as an idx file (gzipped when the name ends in .gz); the inverse of `read_idx`."""
  array = np.asarray(array)
  codes = {dtype.newbyteorder("="): code for code, dtype in _IDX_DTYPES.items()}
  if array.dtype not in codes:
    raise ValueError(f"idx cannot hold dtype {array.dtype}; use one of {sorted(str(d) for d in codes)}")
  header = bytes([0, 0, codes[array.dtype], array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
  body = array.astype(array.dtype.newbyteorder(">")).tobytes()
  opener = gzip.open if str(path).endswith(".gz") else open
  with opener(path, "wb") as f:
    f.write(header + body)


def find_idx_file(directory: str, stem: str) -> str:
  """Returns `directory/stem.gz` or `directory/stem`, whichever exists (ValueError if neither)."""
  for name in (stem + ".gz", stem):
    path = os.path.join(directory, name)
    if os.path.exists(path):
      return path
  raise ValueError(f"neither {stem}.gz nor {stem} found in {directory}")


def load_split(directory: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  """Reads one split's idx files: uint8 images [N,28,28,1] and int64 labels [N] in file order.

  Raises ValueError naming the file when a file is malformed, has the wrong shape, labels outside [0, 10),
  or when the counts of images and labels differ.
  """
  images_stem, labels_stem = SPLIT_FILES[split]
  images_path = find_idx_file(directory, images_stem)
  labels_path = find_idx_file(directory, labels_stem)
  images = read_idx(images_path)
  labels = read_idx(labels_path)
  if images.dtype != np.uint8 or images.shape[1:] != IMAGE_SHAPE[:2]:
    raise ValueError(
        f"idx file {images_path}: expected uint8 images of shape [N, 28, 28], got {images.dtype} {images.shape}")
  if labels.ndim != 1:
    raise ValueError(f"idx file {labels_path}: expected labels of shape [N], got shape {labels.shape}")
  if len(images) != len(labels):
    raise ValueError(
        f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels")
  if labels.size and not 0 <= labels.min() <= labels.max() < len(CLASS_NAMES):
    raise ValueError(
        f"idx file {labels_path}: labels span [{labels.min()}, {labels.max()}], expected [0, {len(CLASS_NAMES)})")
  return images[..., None], labels.astype(np.int64)  # [N,28,28] -> [N,28,28,1]


class FashionMnistLocal(tfds.core.GeneratorBasedBuilder):
  """Fashion-MNIST from local idx files (features identical to tfds `fashion_mnist`)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: same features as tfds fashion_mnist 3.0.1, from local idx files."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put the four Fashion-MNIST idx files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
      "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte; each optionally .gz) in manual_dir, e.g. with "
      "`vit_video.data.fetch.fetch_fashion_mnist('data/raw/fashion_mnist')` (Debian package dataset-fashion-mnist).")

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            "Fashion-MNIST (Zalando article images, 28x28 grayscale, 10 classes; 60,000 train and 10,000 "
            "test examples), built from local idx files such as those of the Debian package "
            "dataset-fashion-mnist."),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=IMAGE_SHAPE),
            "label": tfds.features.ClassLabel(names=list(CLASS_NAMES)),
        }),
        supervised_keys=("image", "label"),
        homepage="https://github.com/zalandoresearch/fashion-mnist",
        citation="@article{xiao2017fashion, title={Fashion-MNIST: a Novel Image Dataset for Benchmarking "
                 "Machine Learning Algorithms}, author={Xiao, Han and Rasul, Kashif and Vollgraf, Roland}, "
                 "journal={arXiv preprint arXiv:1708.07747}, year={2017}}",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    directory = os.fspath(dl_manager.manual_dir)
    return {split: self._generate_examples(directory, split) for split in SPLIT_FILES}

  def _generate_examples(self, directory: str, split: str):
    images, labels = load_split(directory, split)
    for index, (image, label) in enumerate(zip(images, labels)):
      yield index, {"image": image, "label": int(label)}

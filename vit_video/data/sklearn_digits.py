"""scikit-learn's bundled 8x8 digits (`sklearn.datasets.load_digits`) as a tfds builder; nothing is downloaded.

The 1,797 images are the UCI "Optical Recognition of Handwritten Digits" test set (CC BY 4.0): 32x32 bitmaps
reduced to 8x8 counts of on pixels, integers 0..16. `SklearnDigits` stores them at their native 8x8 (the input
pipeline resizes) as image (8, 8, 1) uint8 = round(x * 255 / 16) and label ClassLabel "0".."9". Splits, a
deterministic stratified rule: the j-th example of each class in dataset order (counting from 0) goes to `test`
when j is odd, else to `train` (`split_of`), giving train 901 and test 896. Example keys are the dataset indices.

  python -m vit_video.data.prepare sklearn_digits

scikit-learn is imported only when the dataset is built (`load_sklearn_digits`), so importing this module, which
registers the name `sklearn_digits` with tfds, does not need it.
"""
import numpy as np
import tensorflow_datasets as tfds

CLASS_NAMES = tuple(str(d) for d in range(10))
IMAGE_SHAPE = (8, 8, 1)
MAX_VALUE = 16  # load_digits pixels are counts of on pixels in 4x4 blocks: 0..16.
SPLITS = ("train", "test")


def split_of(rank: int) -> str:
  """The split of the `rank`-th example (from 0, in dataset order) of its class: 'test' when odd, else 'train'."""
  return "test" if rank % 2 == 1 else "train"


def load_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
  """scikit-learn's digits in dataset order: uint8 images [1797,8,8,1] = round(x * 255 / 16), int64 labels [1797].

  Raises ImportError saying how to install scikit-learn when it is missing.
  """
  try:
    from sklearn.datasets import load_digits  # noqa: PLC0415  (optional dependency, needed only to build)
  except ImportError as e:
    raise ImportError(
        "building sklearn_digits needs scikit-learn, which bundles the data: `pip install scikit-learn`") from e
  bunch = load_digits()
  data = np.asarray(bunch.data, np.float64)
  if data.shape[1:] != (IMAGE_SHAPE[0] * IMAGE_SHAPE[1],) or data.min() < 0 or data.max() > MAX_VALUE:
    raise ValueError(
        f"sklearn.datasets.load_digits: expected values in [0, {MAX_VALUE}] of shape [N, 64], got shape "
        f"{data.shape} spanning [{data.min()}, {data.max()}]")
  images = np.round(data * 255 / MAX_VALUE).astype(np.uint8).reshape(-1, *IMAGE_SHAPE)  # [N,64] -> [N,8,8,1]
  return images, np.asarray(bunch.target, np.int64)


class SklearnDigits(tfds.core.GeneratorBasedBuilder):
  """The 1,797 8x8 digits bundled with scikit-learn, split 50/50 per class (odd ranks in a class are test)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: sklearn load_digits at 8x8, x * 255 / 16; test iff odd rank in class."}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            "scikit-learn's load_digits: 1,797 handwritten digits as 8x8 counts 0..16 (the UCI Optical "
            "Recognition of Handwritten Digits test set, CC BY 4.0), scaled to uint8 by round(x * 255 / 16). "
            "Split deterministically within each class: the j-th example of a class is in test when j is odd."),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=IMAGE_SHAPE),
            "label": tfds.features.ClassLabel(names=list(CLASS_NAMES)),
        }),
        supervised_keys=("image", "label"),
        homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html",
        citation="@misc{alpaydin1998optical, title={Optical Recognition of Handwritten Digits}, author={Alpaydin, "
                 "E. and Kaynak, C.}, howpublished={UCI Machine Learning Repository}, year={1998}, "
                 "doi={10.24432/C50P49}}",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # nothing to download: scikit-learn ships the data
    images, labels = load_sklearn_digits()
    return {split: self._generate_examples(images, labels, split) for split in SPLITS}

  def _generate_examples(self, images: np.ndarray, labels: np.ndarray, split: str):
    seen = np.zeros(len(CLASS_NAMES), np.int64)  # examples of each class met so far
    for index, (image, label) in enumerate(zip(images, labels)):
      rank = seen[label]
      seen[label] += 1
      if split_of(rank) == split:
        yield index, {"image": image, "label": int(label)}

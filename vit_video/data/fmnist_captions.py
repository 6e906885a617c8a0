"""Fashion-MNIST captions: scenes of real Fashion-MNIST items on a 2x2 layout, each with reference captions
generated from the layout, for image captioning (Show, Attend and Tell in miniature), rendered offline.

A scene is a black greyscale S x S canvas (uint8 [S,S,1]) cut into a 2x2 grid of cells of side S/2. `num_items`
items (uniform in [min_items, max_items]) go into distinct cells drawn at random; each is a real 28x28 Fashion-MNIST
image scaled to a square of side uniform in [min_item_size, max_item_size] px at a uniform position inside its cell
(rendered by `fmnist_scenes.compose`: items never overlap, so every item is whole and its box is the tight box of its
non-zero pixels).

Captions. The items are named by one-word nouns (NOUNS; "trousers" as "a pair of trousers"), a group of items by
counts in reading order ("two shirts and a bag"). Candidate captions of a scene, each a fact of its layout:
  listing      "{all}", "a picture of {all}", "{n} items: {all}"
  vertical     "{top row} above {bottom row}", "{bottom row} below {top row}"   (when both rows hold items)
  horizontal   "{left column} to the left of {right column}", "{right column} to the right of {left column}"
               (when both columns hold items)
e.g. "a sneaker to the left of a bag", "two shirts above a dress". There are at least 5 candidates for any scene of
two or more items; `num_captions` of them (distinct, in random order) are the scene's references.

Held-out combinations (HELD_OUT): 10 facts "class a above class b" / "class a left of class b" (a item of class a in
the top row / left column and one of class b in the bottom row / right column; the captions' "b below a" and
"b to the right of a" state the same fact). No training scene holds one (a training scene that would is drawn
again, from the same generator), so no training caption states one; test scenes are drawn freely and the flag
`held_out` marks those that hold at least one. Every word of a held-out scene's captions occurs in training: only
the combination is new. The vocabulary is built from the training captions (`caption_eval.Vocabulary`).

Train scenes draw their items from the Fashion-MNIST train file, test scenes from the test file. Scene i of a split
is drawn with np.random.default_rng([seed, SPLITS.index(split), i]), so the dataset is deterministic given the
config's seed.

  python -m vit_video.data.prepare fmnist_captions          # fetches the Debian package into data/raw/fashion_mnist
  python -m vit_video.data.prepare fmnist_captions/tiny --manual_dir data/raw/fashion_mnist

Configs: `default`, 64x64 canvases of 2-4 items of 18-30 px, 12,000 train / 2,000 test scenes, 5 captions each
(60,000 / 10,000); 385 test scenes hold a held-out fact, and 2,867 training draws were redrawn to avoid one; 56 s to
prepare on 2 shared cores, 21 MB; vocabulary of 35 words (`builder.info.metadata['counts']` has the counts).
`tiny` (tests), 32x32 canvases of 2-3 items of 9-15 px, 48 train / 24 test scenes, 5 captions each. Defining the
class registers the name with tfds.
"""
import dataclasses
import os
from typing import NamedTuple

import numpy as np
import tensorflow_datasets as tfds

from vit_video.data import fashion_mnist_local
from vit_video.data import fmnist_scenes

SPLITS = ("train", "test")
GRID = 2  # the canvas is a GRID x GRID layout of cells
# One-word nouns of the 10 Fashion-MNIST classes (fashion_mnist_local.CLASS_NAMES order): (singular, plural).
NOUNS = (("top", "tops"), ("pair of trousers", "pairs of trousers"), ("pullover", "pullovers"), ("dress", "dresses"),
         ("coat", "coats"), ("sandal", "sandals"), ("shirt", "shirts"), ("sneaker", "sneakers"), ("bag", "bags"),
         ("boot", "boots"))
NUMBERS = ("zero", "one", "two", "three", "four")
RELATIONS = ("above", "left")  # a above b: a in the top row, b in the bottom row; a left b: left and right columns
# Held-out facts (class a, relation, class b): never in a training scene.
HELD_OUT = ((7, "left", 8), (8, "above", 3), (6, "left", 1), (4, "above", 5), (0, "left", 9), (2, "above", 7),
            (3, "left", 4), (9, "above", 6), (5, "left", 2), (1, "above", 0))
MAX_REDRAWS = 1000  # a training scene is drawn again at most this often to avoid the held-out facts
COUNT_KEYS = ("scenes", "held_out", "redrawn", "captions")


@dataclasses.dataclass(kw_only=True)
class FmnistCaptionsConfig(tfds.core.BuilderConfig):
  """Canvas, item, caption and split sizes of one `fmnist_captions` config."""
  size: int  # S: scenes are S x S, cut into 2x2 cells of S/2 (S even)
  min_items: int  # items per scene: uniform in [min_items, max_items], 2 <= min_items <= max_items <= 4
  max_items: int
  min_item_size: int  # side (px) of the square an item is scaled to: uniform in [min_item_size, max_item_size]
  max_item_size: int  # at most S/2, so an item fits its cell
  num_train: int  # scenes of train (items from Fashion-MNIST train)
  num_test: int  # scenes of test (items from Fashion-MNIST test)
  num_captions: int = 5  # reference captions per scene, at most 5 (the fewest candidates a scene has)
  seed: int = 0  # scene i of split s uses np.random.default_rng([seed, s, i])


class CaptionedScene(NamedTuple):
  """One scene: the rendered image and objects, each object's cell, the references and the held-out flag."""
  scene: fmnist_scenes.Scene
  cell: np.ndarray  # int64 [M]: row * 2 + column of each object's cell
  captions: list[str]
  held_out: bool  # the scene holds a HELD_OUT fact


def check_config(config: FmnistCaptionsConfig) -> None:
  """Raises ValueError naming the fields unless the canvas, items and captions are possible."""
  if config.size % GRID:
    raise ValueError(f"size must be even (a 2x2 grid of cells), got {config.size}")
  if not 2 <= config.min_items <= config.max_items <= GRID * GRID:
    raise ValueError(f"items per scene must satisfy 2 <= min_items <= max_items <= 4, got {config.min_items}, "
                     f"{config.max_items}")
  if not 1 <= config.min_item_size <= config.max_item_size <= config.size // GRID:
    raise ValueError(f"item sizes must satisfy 1 <= min_item_size <= max_item_size <= size / 2, got "
                     f"{config.min_item_size}, {config.max_item_size}, size {config.size}")
  if not 1 <= config.num_captions <= 5:
    raise ValueError(f"num_captions must be in [1, 5], got {config.num_captions}")


def group_phrase(labels: list[int]) -> str:
  """Items of classes `labels` (reading order) named by counts, in order of first appearance:
  [6, 8, 6] -> 'two shirts and a bag'; [0, 1, 3] -> 'a top, a pair of trousers and a dress'."""
  if not labels:
    raise ValueError("a group phrase needs at least one item")
  classes = list(dict.fromkeys(int(k) for k in labels))
  parts = [f"a {NOUNS[k][0]}" if labels.count(k) == 1 else f"{NUMBERS[labels.count(k)]} {NOUNS[k][1]}"
           for k in classes]
  return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def facts(labels: list[int], cells: list[int]) -> set[tuple[int, str, int]]:
  """The (class a, relation, class b) facts of a layout: a above b, a left of b (RELATIONS)."""
  rows, cols = [c // GRID for c in cells], [c % GRID for c in cells]
  out = set()
  for i, a in enumerate(labels):
    for j, b in enumerate(labels):
      if rows[i] == 0 and rows[j] == 1:
        out.add((int(a), "above", int(b)))
      if cols[i] == 0 and cols[j] == 1:
        out.add((int(a), "left", int(b)))
  return out


def candidate_captions(labels: list[int], cells: list[int]) -> list[str]:
  """Every caption the layout states (module docstring), listing first, then vertical, then horizontal."""
  order = np.argsort(cells, kind="stable")  # reading order: top row left to right, then the bottom row
  labels, cells = [int(labels[i]) for i in order], [int(cells[i]) for i in order]
  every = group_phrase(labels)
  out = [every, f"a picture of {every}", f"{NUMBERS[len(labels)]} items: {every}"]
  top = [k for k, c in zip(labels, cells) if c // GRID == 0]
  bottom = [k for k, c in zip(labels, cells) if c // GRID == 1]
  if top and bottom:
    out += [f"{group_phrase(top)} above {group_phrase(bottom)}", f"{group_phrase(bottom)} below {group_phrase(top)}"]
  left = [k for k, c in zip(labels, cells) if c % GRID == 0]
  right = [k for k, c in zip(labels, cells) if c % GRID == 1]
  if left and right:
    out += [f"{group_phrase(left)} to the left of {group_phrase(right)}",
            f"{group_phrase(right)} to the right of {group_phrase(left)}"]
  return out


def sample_layout(num_pool: int, config: FmnistCaptionsConfig, rng: np.random.Generator
                  ) -> tuple[list[fmnist_scenes.Placement], list[int]]:
  """A scene's items from a pool of `num_pool`: placements (each inside its cell) and the cells they occupy."""
  half = config.size // GRID
  num_items = int(rng.integers(config.min_items, config.max_items + 1))
  cells = [int(c) for c in rng.choice(GRID * GRID, size=num_items, replace=False)]
  placements = []
  for cell in cells:
    size = int(rng.integers(config.min_item_size, config.max_item_size + 1))
    top, left = (int(v) for v in rng.integers(0, half - size + 1, size=2))
    placements.append(fmnist_scenes.Placement(int(rng.integers(num_pool)), size, (cell // GRID) * half + top,
                                              (cell % GRID) * half + left))
  return placements, cells


def make_scene(items: np.ndarray, labels: np.ndarray, index: int, *, split: str,
               config: FmnistCaptionsConfig) -> tuple[CaptionedScene, int]:
  """Scene `index` of `split` from that split's items [N,28,28,1] and labels [N]; also how often it was redrawn
  (a training scene holding a held-out fact is drawn again)."""
  check_config(config)
  rng = np.random.default_rng([config.seed, SPLITS.index(split), index])
  held_out_facts = set(HELD_OUT)
  for redraws in range(MAX_REDRAWS + 1):
    placements, cells = sample_layout(len(items), config, rng)
    item_labels = [int(labels[p.item_index]) for p in placements]
    held_out = bool(facts(item_labels, cells) & held_out_facts)
    if split == "test" or not held_out:
      break
  else:
    raise ValueError(f"train scene {index}: every one of {MAX_REDRAWS + 1} draws holds a held-out fact")
  scene = fmnist_scenes.compose(items, labels, placements, size=config.size, min_visible=0.0)
  if len(scene.label) != len(placements):
    raise ValueError(f"{split} scene {index}: an item is blank after scaling (its sizes are too small)")
  candidates = candidate_captions(item_labels, cells)
  picked = rng.permutation(len(candidates))[:config.num_captions]
  return CaptionedScene(scene, np.array(cells, np.int64), [candidates[i] for i in picked], held_out), redraws


def to_example(captioned: CaptionedScene, image_id: int) -> dict:
  """The tfds example of a captioned scene."""
  scene = captioned.scene
  return {"image": scene.image, "image_id": image_id, "captions": captioned.captions,
          "held_out": captioned.held_out,
          "objects": {"bbox": scene.bbox, "label": scene.label, "cell": captioned.cell}}


class FmnistCaptions(tfds.core.GeneratorBasedBuilder):
  """Fashion-MNIST captions: caption scenes of 2-4 real Fashion-MNIST items on a 2x2 layout."""

  name = "fmnist_captions"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: 2-4 items on a 2x2 layout, 5 layout captions, 10 held-out facts."}
  BUILDER_CONFIGS = [
      FmnistCaptionsConfig(name="default", description="64x64, 2-4 items of 18-30 px; 12,000 train / 2,000 test.",
                           size=64, min_items=2, max_items=4, min_item_size=18, max_item_size=30,
                           num_train=12_000, num_test=2_000),
      FmnistCaptionsConfig(name="tiny", description="32x32, 2-3 items of 9-15 px; 48 train / 24 test (for tests).",
                           size=32, min_items=2, max_items=3, min_item_size=9, max_item_size=15,
                           num_train=48, num_test=24),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = fashion_mnist_local.FashionMnistLocal.MANUAL_DOWNLOAD_INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    s = self.builder_config.size
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            "Fashion-MNIST captions: 2-4 real Fashion-MNIST items in distinct cells of a 2x2 layout on a black "
            "canvas, each scene with reference captions generated from its layout (what is there, what is above, "
            "below, left and right of what). Facts of HELD_OUT never occur in train; test scenes holding one are "
            "flagged held_out. Train scenes use Fashion-MNIST train items, test scenes test items."),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(s, s, 1)),
            "image_id": tfds.features.Scalar(dtype=np.int64),
            "captions": tfds.features.Sequence(tfds.features.Text()),
            "held_out": tfds.features.Scalar(dtype=np.bool_),
            "objects": tfds.features.Sequence({
                "bbox": tfds.features.BBoxFeature(),
                "label": tfds.features.ClassLabel(names=list(fashion_mnist_local.CLASS_NAMES)),
                "cell": tfds.features.Scalar(dtype=np.int64),
            }),
        }),
        homepage="https://github.com/zalandoresearch/fashion-mnist",
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    check_config(self.builder_config)
    directory = os.fspath(dl_manager.manual_dir)
    self.info.metadata["counts"] = {split: dict.fromkeys(COUNT_KEYS, 0) for split in SPLITS}
    self.info.metadata["held_out"] = [list(f) for f in HELD_OUT]
    return {split: self._generate_examples(directory, split) for split in SPLITS}

  def _generate_examples(self, directory: str, split: str):
    config = self.builder_config
    items, labels = fashion_mnist_local.load_split(directory, split)  # [N,28,28,1], [N]
    counts = self.info.metadata["counts"][split]
    for i in range(config.num_train if split == "train" else config.num_test):
      captioned, redraws = make_scene(items, labels, i, split=split, config=config)
      counts["scenes"] += 1
      counts["held_out"] += int(captioned.held_out)
      counts["redrawn"] += redraws
      counts["captions"] += len(captioned.captions)
      yield i, to_example(captioned, i)  # tfds shuffles the examples by key when writing

"""Tests for vit_video.data.fmnist_captions: captions state the layout's facts, training scenes never hold a held-out
fact and test scenes are flagged exactly when they do, bad configs raise; then the tiny config prepared from the real
Fashion-MNIST files (references among the layout's captions, counts, held-out flags)."""
import dataclasses

import numpy as np
import pytest
import tensorflow_datasets as tfds

from vit_video.data import builders
from vit_video.data import fmnist_captions as fc

TINY = next(c for c in fc.FmnistCaptions.BUILDER_CONFIGS if c.name == "tiny")


def test_group_phrases_count_in_order_of_first_appearance():
  assert fc.group_phrase([6, 8, 6]) == "two shirts and a bag"
  assert fc.group_phrase([0, 1, 3]) == "a top, a pair of trousers and a dress"
  assert fc.group_phrase([1, 1, 1, 1]) == "four pairs of trousers"
  with pytest.raises(ValueError, match="at least one item"):
    fc.group_phrase([])


def test_captions_state_the_layout():
  """Cells: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right. Shirts top left and right, a dress bottom right:
  'two shirts above a dress', 'a shirt to the left of a shirt and a dress'."""
  captions = fc.candidate_captions([3, 6, 6], [3, 1, 0])
  assert captions[:3] == ["two shirts and a dress", "a picture of two shirts and a dress",
                          "three items: two shirts and a dress"]
  assert captions[3:] == ["two shirts above a dress", "a dress below two shirts",
                          "a shirt to the left of a shirt and a dress", "a shirt and a dress to the right of a shirt"]
  same_row = fc.candidate_captions([7, 8], [1, 0])  # a bag top left, a sneaker top right: no vertical fact
  assert same_row[3:] == ["a bag to the left of a sneaker", "a sneaker to the right of a bag"]
  assert fc.facts([7, 8], [1, 0]) == {(8, "left", 7)}
  assert fc.facts([3, 6, 6], [3, 1, 0]) == {(6, "above", 3), (6, "left", 6), (6, "left", 3)}


def _synthetic_items(num: int = 40) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(0)
  return rng.integers(1, 256, (num, 28, 28, 1)).astype(np.uint8), np.arange(num) % 10


def test_train_scenes_avoid_the_held_out_facts_and_test_scenes_are_flagged():
  items, labels = _synthetic_items()
  config = dataclasses.replace(TINY, min_items=3, max_items=4)
  flagged = 0
  for split in fc.SPLITS:
    for i in range(60):
      captioned, redraws = fc.make_scene(items, labels, i, split=split, config=config)
      cells = list(captioned.cell)
      holds = bool(fc.facts(list(captioned.scene.label), cells) & set(fc.HELD_OUT))
      assert captioned.held_out == holds
      assert len(set(cells)) == len(cells) and len(captioned.captions) == 5
      assert len(set(captioned.captions)) == 5
      if split == "train":
        assert not holds
      else:
        assert redraws == 0
        flagged += holds
      for box, cell in zip(captioned.scene.bbox * config.size, cells):  # every item stays inside its cell
        half = config.size // 2
        assert (cell // 2) * half <= box[0] and box[2] <= (cell // 2 + 1) * half
        assert (cell % 2) * half <= box[1] and box[3] <= (cell % 2 + 1) * half
  assert flagged > 0


@pytest.mark.parametrize("fields, message", [
    ({"size": 31}, "size must be even"),
    ({"min_items": 1}, "2 <= min_items <= max_items <= 4, got 1, 3"),
    ({"max_item_size": 17}, r"max_item_size <= size / 2, got 9, 17, size 32"),
    ({"num_captions": 6}, r"num_captions must be in \[1, 5\], got 6"),
])
def test_bad_config_raises(fields, message):
  items, labels = _synthetic_items()
  with pytest.raises(ValueError, match=message):
    fc.make_scene(items, labels, 0, split="train", config=dataclasses.replace(TINY, **fields))


def test_tiny_prepared_from_real_items(tiny_captions):
  builder = builders.check_prepared("fmnist_captions/tiny", tiny_captions)
  counts = builder.info.metadata["counts"]
  assert counts["train"]["scenes"] == 48 and counts["test"]["scenes"] == 24 and counts["train"]["held_out"] == 0
  splits = {s: list(tfds.as_numpy(builder.as_dataset(split=s))) for s in fc.SPLITS}
  assert sum(bool(ex["held_out"]) for ex in splits["test"]) == counts["test"]["held_out"]
  for split, examples in splits.items():
    for ex in examples:
      captions = [c.decode() for c in ex["captions"]]
      labels, cells = list(ex["objects"]["label"]), list(ex["objects"]["cell"])
      assert ex["image"].shape == (32, 32, 1) and 2 <= len(labels) <= 3
      assert set(captions) <= set(fc.candidate_captions(labels, cells))
      assert bool(ex["held_out"]) == bool(fc.facts(labels, cells) & set(fc.HELD_OUT))
      assert ex["image"].any()

"""Tests for vit_video.data.fmnist_scenes: occlusion and bad-annotation rules on synthetic items, then the tiny
config prepared from real Fashion-MNIST items (boxes tight on the visible pixels, classes and pixels those of the
split's own items, counts, determinism) and scored by coco_eval."""
import dataclasses
import glob
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from etils import epath

from vit_video.data import boxes, builders, coco_eval, prepare
from vit_video.data import fashion_mnist_local as fml
from vit_video.data import fmnist_scenes as fs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REAL_RAW_DIR = os.path.join(REPO, "data", "raw", "fashion_mnist")
NUM_REAL = {"train": 300, "test": 100}  # the first items of each real split that the tiny scenes draw from
TINY = next(c for c in fs.FmnistScenes.BUILDER_CONFIGS if c.name == "tiny")
SQUARE = np.full((1, 28, 28, 1), 255, np.uint8)  # an item whose pixels all count


def test_occlusion_threshold_and_modal_boxes():
  """Item 0 (10 px square at the origin) covered by item 1 from column `left` on: 30 % visible is kept with the box
  of its visible columns, 20 % is dropped and counted; the item on top keeps its whole box."""
  items, labels = np.concatenate([SQUARE, SQUARE]), np.array([4, 7])
  kept = fs.compose(items, labels, [fs.Placement(0, 10, 0, 0), fs.Placement(1, 10, 0, 3)], size=16, min_visible=0.3)
  np.testing.assert_array_equal(kept.bbox * 16, [[0, 0, 10, 3], [0, 3, 10, 13]])
  np.testing.assert_array_equal(kept.label, [4, 7])
  np.testing.assert_array_equal(kept.area, [30, 100])
  np.testing.assert_allclose(kept.visible, [0.3, 1.0])
  assert (kept.occluded, kept.blank) == (0, 0)
  dropped = fs.compose(items, labels, [fs.Placement(0, 10, 0, 0), fs.Placement(1, 10, 0, 2)], size=16,
                       min_visible=0.3)
  np.testing.assert_array_equal(dropped.label, [7])
  assert (dropped.occluded, dropped.blank) == (1, 0)
  assert dropped.image[..., 0].sum() == 255 * (100 + 20)  # the dropped item's pixels stay in the image


def test_blank_items_are_skipped_and_an_empty_scene_cannot_become_an_example():
  items = np.concatenate([SQUARE, np.zeros_like(SQUARE)])  # item 1 is blank
  scene = fs.compose(items, np.array([1, 2]), [fs.Placement(1, 12, 2, 2), fs.Placement(0, 5, 0, 0)], size=16,
                     min_visible=0.3)
  assert (list(scene.label), scene.blank, scene.occluded) == ([1], 1, 0)
  empty = fs.compose(items, np.array([1, 2]), [fs.Placement(1, 12, 2, 2)], size=16, min_visible=0.3)
  assert empty.bbox.shape == (0, 4) and empty.blank == 1
  with pytest.raises(ValueError, match="scene 5 has no object: such scenes are skipped, not written"):
    fs.to_example(empty, 5)
  flat = scene._replace(bbox=np.array([[0.1, 0.2, 0.1, 0.4]], np.float32))
  with pytest.raises(ValueError, match="scene 6 has a box of zero width or height"):
    fs.to_example(flat, 6)


@pytest.mark.parametrize("fields, message", [
    ({"min_items": 0}, "1 <= min_items <= max_items, got 0, 4"),
    ({"max_item_size": 41}, "max_item_size <= size, got 10, 41, size 40"),
    ({"min_visible": 1.5}, r"min_visible must be in \[0, 1\], got 1.5"),
])
def test_bad_config_raises(fields, message):
  config = dataclasses.replace(TINY, **fields)
  with pytest.raises(ValueError, match=message):
    fs.sample_placements(10, config, np.random.default_rng(0))


def _write_idx(directory, data):
  os.makedirs(directory, exist_ok=True)
  for split, (items, labels) in data.items():
    images_stem, labels_stem = fml.SPLIT_FILES[split]
    fml.write_idx(os.path.join(directory, images_stem), items[..., 0])
    fml.write_idx(os.path.join(directory, labels_stem), labels.astype(np.uint8))


def test_prepare_skips_and_counts_empty_scenes(tmp_path, capsys):
  """Fake items, 60 % of them blank: the scenes left with no object are not written, and the counts say so."""
  rng = np.random.default_rng(0)
  data = {}
  for split, n in (("train", 20), ("test", 10)):
    items = np.where(rng.random((n, 1, 1, 1)) < 0.6, 0, rng.integers(1, 256, (n, 28, 28, 1))).astype(np.uint8)
    data[split] = (items, rng.integers(0, 10, n))
  _write_idx(tmp_path / "raw", data)
  prepare.main(["fmnist_scenes/tiny", "--data_dir", str(tmp_path / "tfds"), "--manual_dir", str(tmp_path / "raw")])
  out = capsys.readouterr().out
  builder = builders.check_prepared("fmnist_scenes/tiny", str(tmp_path / "tfds"))
  counts = builder.info.metadata["counts"]
  assert f"objects kept and left out per split: {counts}" in out
  for split, num_scenes in (("train", TINY.num_train), ("test", TINY.num_test)):
    scenes = [fs.make_scene(*data[split], i, split=split, config=TINY) for i in range(num_scenes)]
    empty = sum(not len(s.label) for s in scenes)
    assert counts[split] == {"scenes": num_scenes - empty, "objects": sum(len(s.label) for s in scenes),
                             "occluded": sum(s.occluded for s in scenes), "blank": sum(s.blank for s in scenes),
                             "empty_scenes": empty}
    assert empty > 5 and builder.info.splits[split].num_examples == num_scenes - empty


@pytest.fixture(scope="module")
def real(tmp_path_factory):
  """The tiny config prepared from the first real Fashion-MNIST items of each split, twice into two data_dirs:
  {'data': {split: (items [N,28,28,1], labels [N])}, 'dirs': (data_dir, data_dir), 'builder': the first}."""
  if not os.path.exists(os.path.join(REAL_RAW_DIR, "train-images-idx3-ubyte.gz")):
    pytest.skip("real Fashion-MNIST idx files absent: run `python -m vit_video.data.prepare fashion_mnist_local`")
  root = tmp_path_factory.mktemp("fmnist_scenes")
  data = {split: tuple(a[:n] for a in fml.load_split(REAL_RAW_DIR, split)) for split, n in NUM_REAL.items()}
  _write_idx(root / "raw", data)
  dirs = (str(root / "a"), str(root / "b"))
  for data_dir in dirs:
    prepare.prepare("fmnist_scenes/tiny", data_dir, manual_dir=str(root / "raw"))
  return {"data": data, "dirs": dirs, "builder": builders.check_prepared("fmnist_scenes/tiny", dirs[0])}


def _examples(builder, split):
  return sorted(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)), key=lambda e: e["image_id"])


def test_real_scenes_boxes_classes_and_pixels(real):
  """Every object is re-derived from its placement (drawn as the docstring says) without the owner map: its visible
  pixels are its scaled item's non-zero pixels minus those of the later items; its box is their tight box, the image
  shows the item's own pixels there, and an unoccluded object's box crop is its scaled item's tight crop."""
  builder, config = real["builder"], TINY
  assert builder.info.features["objects"]["label"].names == list(fml.CLASS_NAMES)
  counts = builder.info.metadata["counts"]
  for split, (items, labels) in real["data"].items():
    examples = _examples(builder, split)
    assert len(examples) == counts[split]["scenes"] == {"train": config.num_train, "test": config.num_test}[split]
    dropped = 0
    for ex in examples:
      rng = np.random.default_rng([config.seed, fs.SPLITS.index(split), ex["image_id"]])
      placements = fs.sample_placements(len(items), config, rng)
      image = ex["image"][..., 0]
      masks, scaled = [], []
      for p in placements:
        s = fs.scale_item(items[p.item_index, ..., 0], p.size)
        mask = np.zeros((config.size, config.size), bool)
        mask[p.top:p.top + p.size, p.left:p.left + p.size] = s > 0
        masks.append(mask)
        scaled.append(s)
      objects = ex["objects"]
      kept = 0
      for k, p in enumerate(placements):
        shown = masks[k] & ~np.any(masks[k + 1:], axis=0)
        if shown.sum() < config.min_visible * masks[k].sum():
          dropped += 1
          continue
        assert objects["item_index"][kept] == p.item_index
        assert objects["label"][kept] == labels[p.item_index]
        assert objects["area"][kept] == shown.sum()
        np.testing.assert_allclose(objects["visible"][kept], shown.sum() / masks[k].sum(), rtol=1e-6)
        rows, cols = np.flatnonzero(shown.any(1)), np.flatnonzero(shown.any(0))
        x0, y0, x1, y1 = boxes.tfds_to_xyxy(objects["bbox"][kept], height=config.size, width=config.size)
        np.testing.assert_allclose([y0, x0, y1, x1], [rows[0], cols[0], rows[-1] + 1, cols[-1] + 1], atol=1e-4)
        window = image[p.top:p.top + p.size, p.left:p.left + p.size]
        visible = shown[p.top:p.top + p.size, p.left:p.left + p.size]
        np.testing.assert_array_equal(window[visible], scaled[k][visible])  # the item's own pixels
        if objects["visible"][kept] == 1:
          r, c = np.flatnonzero((scaled[k] > 0).any(1)), np.flatnonzero((scaled[k] > 0).any(0))
          crop = image[round(y0):round(y1), round(x0):round(x1)]
          tight = scaled[k][r[0]:r[-1] + 1, c[0]:c[-1] + 1]
          assert crop.shape == tight.shape
          np.testing.assert_array_equal(crop[tight > 0], tight[tight > 0])
        kept += 1
      assert kept == len(objects["label"]) > 0
    assert dropped == counts[split]["occluded"] > 0 and counts[split]["blank"] == counts[split]["empty_scenes"] == 0


def test_real_scenes_splits_share_no_item_and_builds_are_identical(real):
  data, builder = real["data"], real["builder"]
  used = {split: {data[split][0][i].tobytes() for ex in _examples(builder, split) for i in ex["objects"]["item_index"]}
          for split in fs.SPLITS}
  assert len(used["train"]) > 50 and len(used["test"]) > 30 and not used["train"] & used["test"]
  records = []
  for data_dir in real["dirs"]:
    paths = sorted(glob.glob(os.path.join(data_dir, "fmnist_scenes", "tiny", "1.0.0", "*.tfrecord*")))
    records.append([(os.path.basename(p), epath.Path(p).read_bytes()) for p in paths])
  assert len(records[0]) == 2 and records[0] == records[1]
  scene = fs.make_scene(*data["train"], 0, split="train", config=TINY)
  np.testing.assert_array_equal(scene.image, fs.make_scene(*data["train"], 0, split="train", config=TINY).image)
  other = fs.make_scene(*data["train"], 0, split="train", config=dataclasses.replace(TINY, seed=1))
  assert not np.array_equal(other.image, scene.image)


def test_real_scenes_ground_truth_scores_itself_one(real):
  examples = _examples(real["builder"], "test")
  gt = coco_eval.ground_truth(examples, fml.CLASS_NAMES)
  assert len(gt.getAnnIds()) == sum(len(ex["objects"]["label"]) for ex in examples)
  dets = [{**a, "score": 1.0} for a in gt.loadAnns(gt.getAnnIds())]
  dets = [{k: d[k] for k in ("image_id", "category_id", "bbox", "score")} for d in dets]
  metrics = coco_eval.evaluate(gt, dets)
  assert metrics["AP"] == metrics["AP50"] == metrics["AR100"] == pytest.approx(1.0)

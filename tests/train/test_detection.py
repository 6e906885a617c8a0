"""Tests for DETR training on detection scenes: data/detection_pipeline.py on the tiny fmnist_scenes prepared from
real Fashion-MNIST items (boxes round-trip, padding and masks, every eval image once, resumable order), and
train/detection.py (the step learns a batch, the learning rates per group, frozen leaves stay, and an end-to-end
tiny run that trains, checkpoints, resumes to the same state and reports COCO AP)."""
import json

import jax
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from etils import epath

from tests.experiment_files import get_config
from vit_video.data import boxes as box_ops
from vit_video.data import builders, detection_pipeline, prepare
from vit_video.data.common import normalize
from vit_video.train import detection
from vit_video.train.run_folder import RunFolder

REAL_RAW_DIR = epath.Path(__file__).parents[2] / "data" / "raw" / "fashion_mnist"
NAME = "fmnist_scenes/tiny"
COMMON = dict(image_size=40, max_objects=5, process_index=0, process_count=1)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """fmnist_scenes/tiny (60 train, 30 test scenes of 1-4 items) prepared from the real Fashion-MNIST files."""
  if not (REAL_RAW_DIR / "train-images-idx3-ubyte.gz").exists():
    pytest.skip("real Fashion-MNIST idx files absent: run `python -m vit_video.data.prepare fashion_mnist_local`")
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  prepare.prepare(NAME, data_dir, manual_dir=str(REAL_RAW_DIR))
  return data_dir


@pytest.fixture(scope="module")
def config(data_dir):
  config = get_config("detr_scenes", "tiny").unlock()
  config.dataset.data_dir = data_dir
  return config.lock()


@pytest.fixture(scope="module")
def detector(config):
  """The tiny config's compiled steps, shared: the train step's host callback keeps it out of XLA's disk cache."""
  return detection.Detector(config, config.total_steps)


def test_eval_batches_hold_every_image_once_with_its_boxes(data_dir):
  """30 test scenes in batches of 8: 4 batches, the last 2 rows padding; grey repeated to 3 channels; each real
  row's boxes (cxcywh) turn back into the dataset's tfds boxes, its labels are the dataset's, padding is masked."""
  batches = list(detection_pipeline.make_eval_iterator(NAME, "test", data_dir, global_batch_size=8, channels=3,
                                                       **COMMON))
  assert len(batches) == 4
  batch = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
  assert batch["image"].shape == (32, 40, 40, 3) and batch["boxes"].shape == (32, 5, 4)
  assert batch["labels"].dtype == np.int32 and batch["box_mask"].dtype == bool
  np.testing.assert_array_equal(batch["mask"], [True] * 30 + [False] * 2)
  assert not batch["box_mask"][30:].any() and (batch["image_id"][30:] == -1).all()
  builder = builders.check_prepared(NAME, data_dir)
  examples = {int(e["image_id"]): e for e in tfds.as_numpy(builder.as_dataset(split="test"))}
  assert sorted(batch["image_id"][:30]) == sorted(examples)  # every image once
  for i in range(30):
    ex = examples[int(batch["image_id"][i])]
    n = len(ex["objects"]["label"])
    np.testing.assert_array_equal(batch["box_mask"][i], np.arange(5) < n)
    np.testing.assert_array_equal(batch["labels"][i, :n], ex["objects"]["label"])
    assert not batch["labels"][i, n:].any() and not batch["boxes"][i, n:].any()
    xyxy = box_ops.cxcywh_to_xyxy(batch["boxes"][i, :n])
    np.testing.assert_allclose(box_ops.xyxy_to_tfds(xyxy, height=1, width=1), ex["objects"]["bbox"], atol=1e-6)
    np.testing.assert_allclose(batch["image"][i], np.repeat(normalize(ex["image"].astype(np.float32)), 3, -1))
  small = list(detection_pipeline.make_eval_iterator(NAME, "test", data_dir, global_batch_size=8, channels=1,
                                                     **{**COMMON, "image_size": 24}))
  assert small[0]["image"].shape == (8, 24, 24, 1)  # resized; normalised boxes stay
  np.testing.assert_array_equal(np.concatenate([b["boxes"] for b in small]), batch["boxes"])


def test_eval_shards_of_two_hosts_cover_every_image_once(data_dir):
  shards = [list(detection_pipeline.make_eval_iterator(
      NAME, "test", data_dir, global_batch_size=8, channels=1, **{**COMMON, "process_index": p, "process_count": 2}))
      for p in range(2)]
  assert [len(s) for s in shards] == [4, 4] and all(len(b["mask"]) == 4 for s in shards for b in s)
  ids = np.concatenate([b["image_id"][b["mask"]] for s in shards for b in s])
  assert len(ids) == len(set(ids)) == 30


def test_train_order_resumes_and_too_many_objects_raise(data_dir):
  """60 scenes, batches of 8: batch s is the same whether the iterator started at 0 or at s (across an epoch
  boundary at 7.5 batches); each epoch holds every scene once; more objects than max_objects stop the iterator."""
  make = lambda start, stop, **kw: list(detection_pipeline.make_train_iterator(  # noqa: E731
      NAME, "train", data_dir, global_batch_size=kw.pop("batch", 8), channels=1, seed=3, start_step=start,
      stop_step=stop, **{**COMMON, **kw}))
  full, resumed = make(0, 11), make(6, 11)
  assert len(full) == 11 and len(resumed) == 5
  for a, b in zip(full[6:], resumed):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  epochs = make(0, 2, batch=60)  # two whole epochs: the same scenes, in another order
  keys = [sorted(map(bytes, e["image"].reshape(60, -1).astype(np.float16))) for e in epochs]
  assert keys[0] == keys[1] and not np.array_equal(epochs[0]["image"], epochs[1]["image"])
  with pytest.raises(tf.errors.InvalidArgumentError, match="more objects than max_objects = 1"):
    make(0, 8, max_objects=1)


def test_step_learns_a_batch_at_the_groups_rates_and_leaves_frozen_leaves(data_dir, config, detector):
  """Ten steps on one batch: the loss falls; Adam's first update moves each trained leaf by about its group's rate
  (the transformer 1e-3, the backbone 0.1 times that); the stem, layer1 and the BatchNorm constants never move."""
  ds = config.dataset  # the run's batch shapes, so that the end-to-end run reuses this compiled step
  batch = next(detection_pipeline.make_train_iterator(
      NAME, "train", data_dir, global_batch_size=config.batch_size, image_size=ds.image_size, channels=ds.channels,
      max_objects=ds.max_objects, seed=0, start_step=0, process_index=0, process_count=1))
  first = detector.init(0)
  init = jax.device_get(first)
  state, losses = first, []
  for step in range(10):
    state, metrics = detector.step(state, batch)
    losses.append(float(metrics["loss"]))
    if step == 0:
      moved = jax.device_get(state.params)
  assert np.isfinite(losses).all() and max(losses[-3:]) < 0.95 * losses[0], losses
  delta = lambda path: np.abs(_at(moved, path) - _at(init.params, path)).max()  # noqa: E731
  lr = config.optimizer.learning_rate
  assert delta(("class_embed", "kernel")) == pytest.approx(lr, rel=0.05)
  assert delta(("backbone", "layer2", "block0", "conv2", "kernel")) == pytest.approx(
      lr * config.optimizer.backbone_lr_factor, rel=0.05)
  final = jax.device_get(state)
  for frozen in ("conv1", "layer1"):
    np.testing.assert_array_equal(_flat(final.params["backbone"][frozen]), _flat(init.params["backbone"][frozen]))
  np.testing.assert_array_equal(_flat(final.constants), _flat(init.constants))


def _at(tree, path):
  for key in path:
    tree = tree[key]
  return np.asarray(tree)


def _flat(tree):
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


def test_end_to_end_run_checkpoints_resumes_and_reports_ap(config, detector, tmp_path):
  """6 steps, checkpoints at 3 and 6, COCO AP at the end; with step 6's checkpoint removed, the same call resumes
  from step 3 and ends with the same parameters and the same metrics records."""
  workdir = tmp_path / "run"
  state, summary = detection.train_and_evaluate_detr(config, str(workdir), detector=detector)
  assert {f"eval_{k}" for k in ("AP", "AP50", "AP75", "AR100")} <= set(summary) and summary["step"] == 6
  assert 0 <= summary["eval_AP"] <= 1 and summary["trained_params"] < summary["params"]
  folder = RunFolder(workdir)
  records = folder.read_metrics()
  assert [(r["step"], r["kind"]) for r in records] == [(2, "train"), (4, "train"), (6, "train"), (6, "eval")]
  assert sorted(int(p.name) for p in folder.checkpoints.iterdir() if p.name.isdigit()) == [3, 6]
  (folder.checkpoints / "6").rmtree()
  (workdir / "summary.json").unlink()
  resumed, again = detection.train_and_evaluate_detr(config, str(workdir), detector=detector)
  for a, b in zip(jax.tree.leaves(jax.device_get(state)), jax.tree.leaves(jax.device_get(resumed))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  drop = lambda rs: json.dumps([{k: v for k, v in r.items() if k != "examples_per_second"} for r in rs])  # noqa: E731
  assert drop(folder.read_metrics()) == drop(records)
  assert again["eval_AP"] == pytest.approx(summary["eval_AP"], abs=1e-6)

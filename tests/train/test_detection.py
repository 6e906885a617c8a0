"""Tests for DETR training on detection scenes: data/detection_pipeline.py on the tiny fmnist_scenes prepared from
real Fashion-MNIST items (boxes round-trip, padding and masks, every eval image once, resumable order), and
train/detection.py (the step learns a batch, the learning rates per group, frozen leaves stay, and an end-to-end
tiny run that trains, checkpoints, resumes to the same state and reports COCO AP)."""
import json
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from etils import epath

from tests.experiment_files import ROOT, get_config
from tests.train.test_multihost import _env, _free_port, _wait
from vit_video import checkpoints
from vit_video.data import boxes as box_ops
from vit_video.data import builders, detection_pipeline, prepare
from vit_video.data.common import normalize
from vit_video.train import checkpointing, detection
from vit_video.train.run_folder import RunFolder

NAME = "fmnist_scenes/tiny"
COMMON = dict(image_size=40, max_objects=5, process_index=0, process_count=1)


@pytest.fixture(scope="module")
def data_dir(tiny_scenes):
  """fmnist_scenes/tiny (60 train, 30 test scenes of 1-4 items) prepared from the real Fashion-MNIST files."""
  return tiny_scenes


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


def test_keep_aspect_ratio_pads_with_a_pixel_mask_and_crowd_or_empty_boxes_are_no_targets():
  """A 30x60 image (coco-like: varied shapes, crowd flags): the longer side goes to S = 40 (a 20x40 image padded
  below with zeros), the pixel mask marks the image, the normalised boxes stay; the crowd object and a box of no
  width are dropped from the targets, the others keep their order."""
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (30, 60, 3)).astype(np.uint8)
  bbox = np.array([[0.1, 0.2, 0.5, 0.6], [0.2, 0.3, 0.9, 0.3], [0.0, 0.0, 1.0, 1.0], [0.5, 0.5, 0.7, 0.9]],
                  np.float32)  # (y0, x0, y1, x1); the second has no width
  example = {"image": tf.constant(image), "image_id": tf.constant(4, tf.int64),
             "objects": {"bbox": tf.constant(bbox), "label": tf.constant([1, 2, 3, 4], tf.int64),
                         "is_crowd": tf.constant([False, False, True, False])}}
  out = {k: v.numpy() for k, v in detection_pipeline._preprocess(
      example, image_size=40, channels=3, max_objects=5, keep_aspect_ratio=True).items()}
  assert out["image"].shape == (40, 40, 3) and out["pixel_mask"].shape == (40, 40)
  np.testing.assert_array_equal(out["pixel_mask"], np.arange(40)[:, None] < 20 * np.ones((1, 40), bool))
  assert not out["image"][20:].any()  # zero padding (the normalised image's 0)
  resized = tf.image.resize(image.astype(np.float32), (20, 40), antialias=True).numpy()
  np.testing.assert_allclose(out["image"][:20], normalize(resized), atol=1e-5)
  np.testing.assert_array_equal(out["box_mask"], [True, True, False, False, False])
  np.testing.assert_array_equal(out["labels"][:2], [1, 4])
  np.testing.assert_allclose(box_ops.xyxy_to_tfds(box_ops.cxcywh_to_xyxy(out["boxes"][:2]), height=1, width=1),
                             bbox[[0, 3]], atol=1e-6)
  square = detection_pipeline._preprocess(example, image_size=40, channels=3, max_objects=5)
  assert "pixel_mask" not in square and square["image"].shape == (40, 40, 3)


def test_backbone_starts_from_a_resnet_classifier_run(config, detector, tmp_path):
  """A checkpoint of a bottleneck ResNet classifier with DETR's backbone shape (stages (1, 1), width 8, 1 channel):
  `init_backbone` puts its kernels in params and its BatchNorm scale, bias and statistics in the constants, and
  leaves the transformer as it was; a classifier of another width is refused naming the shapes."""
  from vit_video import models  # noqa: PLC0415
  resnet = models.create_model("resnet50", num_classes=10, stage_sizes=(1, 1), width=8, in_channels=1)
  variables = jax.jit(lambda r: resnet.init(r, np.zeros((1, 28, 28, 1), np.float32), train=False))(
      jax.random.key(1))
  stats = jax.tree.map(lambda a: np.random.default_rng(2).uniform(0.5, 2.0, a.shape).astype(np.float32),
                       variables["batch_stats"])
  with checkpointing.Checkpointer(epath.Path(tmp_path) / "resnet" / "checkpoints", save_every_steps=1,
                                  total_steps=1, async_save=False) as ckpt:
    ckpt.save(1, {"params": variables["params"], "batch_stats": stats}, meta={"step": 1}, force=True)
  state = detector.init(0)
  started = jax.device_get(detector.init_backbone(state, str(tmp_path / "resnet")))
  first = variables["params"]["layer1"]["block0"]
  np.testing.assert_array_equal(started.params["backbone"]["layer1"]["block0"]["conv2"]["kernel"],
                                first["conv2"]["kernel"])
  bn = started.constants["backbone"]["layer2"]["block0"]["downsample_bn"]
  np.testing.assert_array_equal(bn["var"], stats["layer2"]["block0"]["downsample_bn"]["var"])
  np.testing.assert_array_equal(bn["scale"], variables["params"]["layer2"]["block0"]["downsample_bn"]["scale"])
  np.testing.assert_array_equal(started.params["query_embed"], jax.device_get(state.params["query_embed"]))
  wide = models.create_model("resnet50", num_classes=10, stage_sizes=(1, 1), width=16, in_channels=1)
  other = jax.eval_shape(lambda r: wide.init(r, np.zeros((1, 28, 28, 1), np.float32), train=False),
                         jax.random.key(1))
  other = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), other)
  with pytest.raises(ValueError, match=r"shapes differ: constants/backbone/bn1/bias: classifier \(16,\), "
                                       r"DETR \(8,\)"):
    checkpoints.detr_backbone_from_resnet(other, jax.device_get({"params": state.params,
                                                                   "constants": state.constants}))


def test_two_processes_train_and_score_every_image(config, detector, data_dir, tmp_path):
  """The tiny run as a job of two processes on 127.0.0.1 (2 CPU devices each; each host reads its half of the
  scenes and matches its own images): it trains and checkpoints, process 0 alone writes the records, and the COCO
  metrics it reports are those of its final parameters scored over all 30 test images in this one process."""
  workdir, address = tmp_path / "job", f"127.0.0.1:{_free_port()}"
  procs = [subprocess.Popen(
      [sys.executable, "-m", "vit_video.detection", f"--config={ROOT}/experiments/detr_scenes.py:tiny",
       f"--workdir={workdir}", f"--config.dataset.data_dir={data_dir}", "--config.distributed.initialize=True",
       f"--config.distributed.coordinator_address={address}", "--config.distributed.num_processes=2",
       f"--config.distributed.process_id={i}"], cwd=ROOT, env=_env(2), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for i in range(2)]
  _wait(procs)
  folder = RunFolder(workdir)
  records = folder.read_metrics()
  assert [(r["step"], r["kind"]) for r in records] == [(2, "train"), (4, "train"), (6, "train"), (6, "eval")]
  assert all(np.isfinite(r["loss"]) for r in records if r["kind"] == "train")
  summary = json.loads((workdir / "summary.json").read_text())
  with checkpointing.Checkpointer(folder.checkpoints, save_every_steps=3, total_steps=6, async_save=False) as ckpt:
    state, meta = ckpt.restore_latest(detector.abstract_state, expected_meta=detection.META)
  assert meta["step"] == 6
  ds = config.dataset
  batches = detection_pipeline.make_eval_iterator(
      ds.name, ds.eval_split, data_dir, global_batch_size=config.batch_size, image_size=ds.image_size,
      channels=ds.channels, max_objects=ds.max_objects, process_index=0, process_count=1)
  here = detector.evaluate(detector.place(state), batches, detection_pipeline.ground_truth(ds.name, "test", data_dir))
  assert summary["eval_images"] == here["images"] == 30
  for k in ("AP", "AP50", "AR100"):
    assert summary[f"eval_{k}"] == pytest.approx(here[k], abs=1e-9), k

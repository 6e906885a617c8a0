"""Tests for vit_video.data.moving_fmnist: the clip renderer, its single-frame uninformativeness, the tfds builder."""
import glob
import math
import os

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from vit_video.data import flow
from vit_video.data import fashion_mnist_local as fml
from vit_video.data import moving_fmnist as mf
from vit_video.data import builders

T, S = 7, 36  # test clips: T frames of S x S, all different from each other and from the item's 28


def fake_items(rng, n, values=(120, 256)):
  """n uint8 [28,28] items: a filled ellipse (semi-axes 8-12 by 4-6 px, random angle, grey level in `values`).

  Like real items they differ in size, shape, orientation and brightness, and they stay within 13 px of their
  centroid (mf.ITEM_RADIUS is 17), so a frame always shows the whole item.
  """
  items = np.zeros((n, 28, 28), np.uint8)
  for item in items:
    axes = (int(rng.integers(8, 13)), int(rng.integers(4, 7)))
    cv2.ellipse(item, (14, 14), axes, rng.uniform(0, 180), 0, 360, int(rng.integers(*values)), -1)
  return items


BAR = np.zeros((28, 28), np.uint8)
cv2.ellipse(BAR, (14, 14), (12, 4), 0, 0, 360, 200, -1)  # a long bar, for orientation


def moments(frames):
  """uint8 [..., S, S, 1] -> (mass [...], centroid x [...], centroid y [...], orientation [...] in degrees).

  The orientation is the second-moment angle of the principal axis in [-90, 90), counter-clockwise as seen on
  screen (y flipped to point up): computed from the pixels only, independently of the renderer's matrices.
  """
  f = frames[..., 0].astype(np.float64)
  ys, xs = np.indices(f.shape[-2:])
  mass = f.sum((-2, -1))
  cx = (f * xs).sum((-2, -1)) / mass
  cy = (f * ys).sum((-2, -1)) / mass
  dx, dy = xs - cx[..., None, None], -(ys - cy[..., None, None])  # y up
  mxx, myy, mxy = ((f * d).sum((-2, -1)) / mass for d in (dx * dx, dy * dy, dx * dy))
  return mass, cx, cy, np.degrees(0.5 * np.arctan2(2 * mxy, mxx - myy))


def wrap180(angle):
  """Angle differences of axes (defined mod 180 degrees) mapped to [-90, 90)."""
  return (angle + 90) % 180 - 90


@pytest.mark.parametrize("motion", mf.MOTIONS)
def test_render_clip_shape_determinism_and_mass(motion):
  item = fake_items(np.random.default_rng(1), 1)[0]
  clip = mf.render_clip(item, motion, num_frames=T, size=S, rng=np.random.default_rng(5))
  assert clip.shape == (T, S, S, 1) and clip.dtype == np.uint8
  np.testing.assert_array_equal(clip, mf.render_clip(item, motion, num_frames=T, size=S,
                                                     rng=np.random.default_rng(5)))
  assert not np.array_equal(clip, mf.render_clip(item, motion, num_frames=T, size=S,
                                                 rng=np.random.default_rng(6)))
  trajectory = mf.sample_trajectory(motion, num_frames=T, size=S, rng=np.random.default_rng(5))
  np.testing.assert_array_equal(clip, mf.render(item, trajectory, size=S))
  # The whole item is visible in every frame: its mass is the item's times scale^2 (area), to rounding.
  mass, cx, cy, _ = moments(clip)
  np.testing.assert_allclose(mass, item.sum() * trajectory.scales ** 2, rtol=0.03)
  # Its intensity centroid is where the trajectory puts it (the renderer's coordinate convention).
  np.testing.assert_allclose(np.stack([cx, cy], 1), trajectory.centres, atol=0.25)
  assert not clip[:, [0, -1]].any() and not clip[:, :, [0, -1]].any()  # the canvas border stays black


@pytest.mark.parametrize("motion, axis, sign", [("left", 0, -1), ("right", 0, 1), ("up", 1, -1), ("down", 1, 1)])
def test_translations_move_the_documented_way(motion, axis, sign):
  item = fake_items(np.random.default_rng(2), 1)[0]
  rng = np.random.default_rng(7)
  clip = mf.render_clip(item, motion, num_frames=T, size=S, rng=rng)
  speed = mf.sample_trajectory(motion, num_frames=T, size=S, rng=np.random.default_rng(7)).speed
  _, cx, cy, _ = moments(clip)
  steps = np.diff(np.stack([cx, cy], 1), axis=0)  # [T-1, 2]
  lo, hi = (mf.TRANSLATION_SPEED * j for j in mf.SPEED_JITTER)
  assert lo <= speed <= hi
  np.testing.assert_allclose(sign * steps[:, axis], speed, atol=0.05)  # x (or y) changes by the speed
  np.testing.assert_allclose(steps[:, 1 - axis], 0, atol=0.05)  # and the other coordinate does not


@pytest.mark.parametrize("motion, sign", [("rotate_ccw", 1), ("rotate_cw", -1)])
def test_rotations_turn_the_documented_way_about_the_centroid(motion, sign):
  clip = mf.render_clip(BAR, motion, num_frames=T, size=S, rng=np.random.default_rng(3))
  speed = mf.sample_trajectory(motion, num_frames=T, size=S, rng=np.random.default_rng(3)).speed
  mass, cx, cy, angle = moments(clip)
  turns = wrap180(np.diff(angle))  # counter-clockwise on screen is positive
  assert np.all(sign * turns > 0.5 * speed)  # every step turns the documented way (a ~9 px bar: +-2 degrees)
  np.testing.assert_allclose(sign * wrap180(angle[-1] - angle[0]), speed * (T - 1), atol=1.5)
  np.testing.assert_allclose(cx, cx[0], atol=0.1)
  np.testing.assert_allclose(cy, cy[0], atol=0.1)
  np.testing.assert_allclose(mass, mass[0], rtol=0.03)


@pytest.mark.parametrize("motion, sign", [("zoom_in", 1), ("zoom_out", -1)])
def test_zooms_change_mass_and_extent_the_documented_way(motion, sign):
  item = fake_items(np.random.default_rng(4), 1)[0]
  clip = mf.render_clip(item, motion, num_frames=T, size=S, rng=np.random.default_rng(8))
  speed = mf.sample_trajectory(motion, num_frames=T, size=S, rng=np.random.default_rng(8)).speed
  mass, cx, cy, _ = moments(clip)
  f = clip[..., 0].astype(np.float64)
  ys, xs = np.indices((S, S))
  extent = np.sqrt((f * ((xs - cx[:, None, None]) ** 2 + (ys - cy[:, None, None]) ** 2)).sum((1, 2)) / mass)
  assert np.all(sign * np.diff(mass) > 0) and np.all(sign * np.diff(extent) > 0)
  # Per frame the scale changes by exp(+-speed): the area (mass) by exp(+-2 speed), lengths by exp(+-speed).
  np.testing.assert_allclose(np.log(mass[-1] / mass[0]), sign * 2 * speed * (T - 1), atol=0.03)
  np.testing.assert_allclose(np.log(extent[-1] / extent[0]), sign * speed * (T - 1), atol=0.03)


def test_still_frames_are_identical():
  clip = mf.render_clip(BAR, "still", num_frames=T, size=S, rng=np.random.default_rng(0))
  assert clip.any() and all(np.array_equal(frame, clip[0]) for frame in clip)
  assert mf.sample_trajectory("still", num_frames=T, size=S, rng=np.random.default_rng(0)).speed == 0


def test_bounce_moves_diagonally_stays_inside_and_reflects():
  # 36 frames, the most check_geometry allows: each half of the clip moves at least 0.81 px per frame for 17.5
  # frames = 14.2 px along each axis, more than the 12.3 px from the middle of the walls to either wall (the walls
  # are 36 - 2 * 17 * scale apart, scale >= 0.25 * exp(0.0165 * 35 / 2) = 0.334 at the midpoint), so the item
  # reflects on both axes whatever the start state.
  num_frames = 36
  item = fake_items(np.random.default_rng(5), 1)[0]
  for seed in range(3):
    clip = mf.render_clip(item, "bounce", num_frames=num_frames, size=S, rng=np.random.default_rng(seed))
    mass, cx, cy, _ = moments(clip)
    np.testing.assert_allclose(mass, mass[0], rtol=0.03)  # the item stays whole on the canvas
    assert not clip[:, [0, -1]].any() and not clip[:, :, [0, -1]].any()
    steps = np.diff(np.stack([cx, cy], 1), axis=0)  # [T-1, 2]
    assert np.all(np.abs(steps).mean(0) > 0.5 * mf.BOUNCE_SPEED)  # it moves along both axes
    for axis in (0, 1):  # and turns back along each
      assert np.any(steps[:, axis] > 0.1) and np.any(steps[:, axis] < -0.1)


def test_every_motion_shares_the_midpoint_state_and_opposites_are_time_reversals():
  """The argument of the module docstring, exactly: one rng state gives every motion the same middle frame, and
  reversing a clip's time gives the clip of the opposite motion (so their frames pool to the same distribution)."""
  for seed in range(20):
    trajectories = {m: mf.sample_trajectory(m, num_frames=T, size=S, rng=np.random.default_rng(seed))
                    for m in mf.MOTIONS}
    middle = [(t.centres[T // 2], t.angles[T // 2], t.scales[T // 2]) for t in trajectories.values()]
    for centre, angle, scale in middle:
      np.testing.assert_allclose(centre, middle[0][0], atol=1e-9)
      np.testing.assert_allclose([angle, scale], [middle[0][1], middle[0][2]], atol=1e-9)
    for a, b in (("left", "right"), ("up", "down"), ("rotate_cw", "rotate_ccw"), ("zoom_in", "zoom_out")):
      ta, tb = trajectories[a], trajectories[b]
      np.testing.assert_allclose(ta.centres[::-1], tb.centres, atol=1e-9)
      np.testing.assert_allclose(np.cos(np.radians(ta.angles[::-1] - tb.angles)), 1, atol=1e-9)
      np.testing.assert_allclose(ta.scales[::-1], tb.scales, rtol=1e-9)


def _features(frames):
  """Single-frame features [N, 42]: centroid, log mass, orientation (cos 2a, sin 2a) and 6x6 area-mean pixels."""
  mass, cx, cy, angle = moments(frames)
  a = np.radians(2 * angle)
  pixels = np.stack([cv2.resize(f[..., 0], (6, 6), interpolation=cv2.INTER_AREA).ravel() for f in frames]) / 255
  return np.concatenate([np.stack([cx, cy, np.log(mass), np.cos(a), np.sin(a)], 1), pixels], 1)


def _pair_features(first, last):
  """Features [N, 8] of a (first, last) frame pair: the changes of centroid, log mass and orientation, with the
  absolute values of the centroid changes (bounce moves along both axes with random signs)."""
  mass0, cx0, cy0, angle0 = moments(first)
  mass1, cx1, cy1, angle1 = moments(last)
  d = np.stack([cx1 - cx0, cy1 - cy0, np.log(mass1 / mass0), wrap180(angle1 - angle0)], 1)
  return np.concatenate([d, np.abs(d[:, :2])], 1)


def _held_out_accuracy(x, y, num_train):
  classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
  classifier.fit(x[:num_train], y[:num_train])
  return classifier.score(x[num_train:], y[num_train:])


def test_no_single_frame_tells_the_motion_but_two_frames_do():
  """Logistic regression on one frame is near chance (1/10) on held-out clips; on (first, last) it is not.

  700 clips (70 per motion) of 11 frames of 32 x 32 (the default canvas; 11 frames keep a rotation's turn
  between first and last below 90 degrees, where an axis's orientation is unambiguous), 500 to train, 200 held
  out. With 200 held-out clips a chance-level accuracy has a standard deviation of sqrt(0.1 * 0.9 / 200) = 0.021.
  Measured when written (this seed; the worst of seeds 0-7 in brackets): middle frame 0.10 (0.13), a random
  frame per clip 0.11 (0.14), first frame 0.175 (0.20: the documented leak at the clip's ends, where the item
  sits or how big it is), (first, last) 1.00 (1.00). The bounds leave 3 to 4 standard deviations above the
  worst seed for the single frames and 0.1 below the pair.
  """
  num_frames, size, num_clips, num_train = 11, 32, 700, 500
  rng = np.random.default_rng(0)
  items = fake_items(rng, num_clips)
  labels = np.arange(num_clips) % len(mf.MOTIONS)
  clips = np.stack([mf.render_clip(item, mf.MOTIONS[label], num_frames=num_frames, size=size, rng=rng)
                    for item, label in zip(items, labels)])  # [N,T,S,S,1]
  middle = _held_out_accuracy(_features(clips[:, num_frames // 2]), labels, num_train)
  random_frame = _held_out_accuracy(
      _features(clips[np.arange(num_clips), rng.integers(0, num_frames, num_clips)]), labels, num_train)
  first = _held_out_accuracy(_features(clips[:, 0]), labels, num_train)
  pair = _held_out_accuracy(_pair_features(clips[:, 0], clips[:, -1]), labels, num_train)
  print(f"held-out accuracy: middle frame {middle:.3f}, random frame {random_frame:.3f}, first frame {first:.3f}, "
        f"(first, last) {pair:.3f}")
  assert middle < 0.2
  assert random_frame < 0.22  # pooled over time opposite motions match exactly; what is left is small
  assert first < 0.3  # the leak at the clip's ends stays bounded
  assert pair > 0.9


def _write_raw(directory, num_train=23, num_test=17):
  """Fashion-MNIST idx files of fake items: train items all grey 100, test items all grey 250 (so a clip's
  brightest pixel tells its item's split); returns {split: (items [N,28,28,1], labels [N])}."""
  rng = np.random.default_rng(0)
  os.makedirs(directory, exist_ok=True)
  data = {}
  for split, n, value in (("train", num_train, 100), ("test", num_test, 250)):
    items = fake_items(rng, n, values=(value, value + 1))
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images_stem, labels_stem = fml.SPLIT_FILES[split]
    fml.write_idx(os.path.join(directory, images_stem + ".gz"), items)
    fml.write_idx(os.path.join(directory, labels_stem + ".gz"), labels)
    data[split] = (items[..., None], labels.astype(np.int64))
  return data


def _build_tiny(raw, data_dir):
  builder = tfds.builder("moving_fmnist_actions/tiny", data_dir=data_dir)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(raw)))
  return builder


def test_builder_tiny_config(tmp_path):
  data = _write_raw(tmp_path / "raw")
  builder = _build_tiny(tmp_path / "raw", str(tmp_path / "a"))
  config = builder.builder_config
  assert (config.name, config.num_frames, config.size, config.num_train, config.num_test) == ("tiny", 6, 20, 60, 30)
  features = builder.info.features
  assert features["video"].shape == (6, 20, 20, 1) and features["video"].dtype == np.uint8
  assert features["label"].names == list(mf.MOTIONS)
  assert features["object_label"].names == list(fml.CLASS_NAMES)
  assert builder.info.supervised_keys == ("video", "label")
  config_split = {"train": config.num_train, "test": config.num_test}
  for split, (items, object_labels) in data.items():
    examples = list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))
    assert len(examples) == builder.info.splits[split].num_examples == config_split[split]
    labels = np.array([ex["label"] for ex in examples])
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), [config_split[split] // 10] * 10)
    for ex in examples:
      assert ex["video"].shape == (6, 20, 20, 1) and ex["video"].dtype == np.uint8
      assert 0 <= ex["item_index"] < len(items)
      assert ex["object_label"] == object_labels[ex["item_index"]]
      # The clip's item comes from this split's Fashion-MNIST file: train items are grey 100, test items 250.
      assert (ex["video"].max() <= 100) == (split == "train")
      kind = mf.MOTIONS[ex["label"]]
      base = {"left": mf.TRANSLATION_SPEED, "right": mf.TRANSLATION_SPEED, "up": mf.TRANSLATION_SPEED,
              "down": mf.TRANSLATION_SPEED, "rotate_cw": mf.ROTATION_SPEED, "rotate_ccw": mf.ROTATION_SPEED,
              "zoom_in": mf.ZOOM_SPEED, "zoom_out": mf.ZOOM_SPEED, "bounce": math.sqrt(2) * mf.BOUNCE_SPEED,
              "still": 0.0}[kind]
      assert base * 0.9 - 1e-6 <= ex["speed"] <= base * 1.1 + 1e-6
    # Stored examples are exactly the rendered ones (PNG frames are lossless), as a set (tfds shuffles by key).
    expected = [mf.make_example(items, object_labels, i, split=split, config=config)
                for i in range(config_split[split])]
    assert sorted((ex["video"].tobytes(), ex["flow"].tobytes(), ex["item_index"], mf.MOTIONS[ex["label"]])
                  for ex in examples) == sorted(
        (ex["video"].tobytes(), ex["flow"].tobytes(), ex["item_index"], ex["label"]) for ex in expected)
    # The stored flow is DIS flow of the stored frames, quantised at FLOW_BOUND: uint8 [T-1,S,S,2].
    ex = examples[0]
    assert ex["flow"].shape == (5, 20, 20, 2) and ex["flow"].dtype == np.uint8
    np.testing.assert_array_equal(ex["flow"], flow.quantize_flow(flow.compute_flow(ex["video"]), bound=mf.FLOW_BOUND))
    # It points the way the item moves: mean x flow < 0 for left, > 0 for right; y likewise for up / down.
    for ex in examples:
      field = flow.dequantize_flow(ex["flow"], bound=mf.FLOW_BOUND)  # [T-1,S,S,2]
      moving = ex["video"][:-1, ..., 0] > 20  # the item's pixels
      axis, sign = {"left": (0, -1), "right": (0, 1), "up": (1, -1), "down": (1, 1)}.get(mf.MOTIONS[ex["label"]],
                                                                                       (None, 0))
      if axis is not None:
        assert sign * field[..., axis][moving].mean() > 0.1, (mf.MOTIONS[ex["label"]], field[..., axis][moving].mean())
  # Building again into another folder gives byte-identical records.
  _build_tiny(tmp_path / "raw", str(tmp_path / "b"))
  records = {}
  for name in ("a", "b"):
    paths = sorted(glob.glob(str(tmp_path / name / "moving_fmnist_actions" / "tiny" / str(builder.version) /
                                 "*.tfrecord*")))
    records[name] = []
    for path in paths:
      with open(path, "rb") as f:
        records[name].append((os.path.basename(path), f.read()))
  assert len(records["a"]) == 2 and records["a"] == records["b"]


def test_tiny_moving_fmnist_fixture(tiny_moving_fmnist):
  assert builders.num_examples("moving_fmnist_actions/tiny", "train", tiny_moving_fmnist) == 60
  assert builders.num_examples("moving_fmnist_actions/tiny", "test", tiny_moving_fmnist) == 30


def test_default_and_tiny_configs():
  configs = {c.name: c for c in mf.MovingFashionMnistActions.BUILDER_CONFIGS}
  assert [(c.name, c.num_frames, c.size, c.num_train, c.num_test) for c in configs.values()] == [
      ("default", 16, 32, 8000, 2000), ("tiny", 6, 20, 60, 30)]
  for c in configs.values():
    mf.check_geometry(c.num_frames, c.size)


@pytest.mark.parametrize("kwargs, message", [
    ({"motion": "spin"}, r"unknown motion 'spin'; valid motions: left, right, up, down, rotate_cw"),
    ({"size": 15}, r"canvas size 15 is smaller than the item, which spans up to 15.3 px"),
    ({"size": 17}, r"canvas size 17 is too small for 7 frames: .* moves up to 2.6 px, .* larger than 17.9 px"),
    ({"num_frames": 40}, r"num_frames 40 is too many: .* use at most 36 frames"),
    ({"num_frames": 1}, r"num_frames 1 is below 2"),
    ({"item": np.zeros((28, 27), np.uint8)}, r"item must be a uint8 image of shape \(28, 28\), got uint8 \(28, 27\)"),
    ({"item": np.zeros((28, 28), np.float32)}, r"item must be a uint8 image of shape \(28, 28\), got float32"),
])
def test_bad_input_raises(kwargs, message):
  args = {"item": BAR, "motion": "left", "num_frames": T, "size": S} | kwargs
  with pytest.raises(ValueError, match=message):
    mf.render_clip(args.pop("item"), args.pop("motion"), rng=np.random.default_rng(0), **args)

"""Tests for vit_video.data.video_folder on a tiny folder of videos written here with imageio-ffmpeg's ffmpeg:
lossless (FFV1 in .mkv, PNG in .avi) and lossy (H.264 or MPEG-4 in .mp4) files of different sizes and lengths,
a corrupt and an empty file, in train/ and test/ with three classes (one of them only in test); and, for the
stored optical flow, a second folder of moving textures."""
import contextlib
import io
import logging
import logging.handlers
import os
import subprocess
import types

import cv2
import imageio_ffmpeg
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from vit_video.data import builders, flow, prepare
from vit_video.data import video_folder as vf
from vit_video.data import video_io
from vit_video.data import video_pipeline as vp
from vit_video.data.common import normalize

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
CONFIG = vf.VideoFolder.builder_configs["tiny"]
NAME = "video_folder/tiny"
V_MAX, (H, W) = CONFIG.num_frames, CONFIG.size  # 5 frames of 12 x 16
FFV1 = ("-c:v", "ffv1", "-pix_fmt", "bgr0")
PNG = ("-c:v", "png")


def _lossy_codec():
  encoders = subprocess.run([FFMPEG, "-hide_banner", "-encoders"], capture_output=True, text=True,
                            check=True).stdout
  codec = "libx264" if " libx264 " in encoders else "mpeg4"
  return ("-c:v", codec, "-pix_fmt", "yuv420p")


LOSSY = _lossy_codec()
# (relative path, codec, source (h, w), source frames). Sources are 1, 2, 3 or 4 times (H, W); all lengths differ.
VIDEOS = (
    ("train/ants/a0.mkv", FFV1, (24, 32), 7),  # longer than num_frames: its first 5 are kept
    ("train/ants/a1.avi", PNG, (36, 48), 3),  # shorter: stored as it is
    ("train/bees/b0.mkv", FFV1, (12, 16), 5),  # already (H, W)
    ("train/bees/b1.mp4", LOSSY, (48, 64), 6),
    ("test/ants/t0.avi", PNG, (24, 32), 4),
    ("test/cats/c0.mkv", FFV1, (36, 48), 2),  # a class only in test
)
# Unreadable files: random bytes, an empty file, a valid Matroska file with a video stream of zero frames.
CORRUPT, EMPTY, ZERO_FRAMES = "train/bees/corrupt.mp4", "test/bees/empty.webm", "train/ants/zero.mkv"
SKIPPED = {"train": [ZERO_FRAMES, CORRUPT], "test": [EMPTY]}  # in listing order
CLASSES = ["ants", "bees", "cats"]


def pattern(seed, num_frames, h, w):
  """uint8 [T,h,w,3]: four quadrants of solid colours that change per frame and per seed (h, w even)."""
  frames = np.zeros((num_frames, h, w, 3), np.uint8)
  for t in range(num_frames):
    for q, (rows, cols) in enumerate([(slice(0, h // 2), slice(0, w // 2)), (slice(0, h // 2), slice(w // 2, w)),
                                      (slice(h // 2, h), slice(0, w // 2)), (slice(h // 2, h), slice(w // 2, w))]):
      frames[t, rows, cols] = [(37 * seed + 61 * q + 23 * t + 91 * c) % 220 + 20 for c in range(3)]
  return frames


def write_video(path, frames, codec, fps=10):
  """Encodes uint8 [T,h,w,3] RGB frames with ffmpeg (raw rgb24 frames piped in)."""
  _, h, w, _ = frames.shape
  os.makedirs(os.path.dirname(path), exist_ok=True)
  subprocess.run([FFMPEG, "-nostdin", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
                  "-r", str(fps), "-i", "pipe:", *codec, "-y", str(path)], input=frames.tobytes(), check=True)


def expected(path):
  """The stored frames of a VIDEOS path: its pattern at (H, W), first min(T, num_frames) frames."""
  seed = [v[0] for v in VIDEOS].index(path)
  return pattern(seed, min(VIDEOS[seed][3], V_MAX), H, W)


def is_lossless(path):
  return {v[0]: v[1] for v in VIDEOS}[path] != LOSSY


def assert_content(path, video):
  if is_lossless(path):
    np.testing.assert_array_equal(video, expected(path), err_msg=path)
  else:  # measured with libx264 (yuv420p, default quality): max 6, mean 1.7 grey levels
    error = np.abs(video.astype(int) - expected(path))
    assert error.max() <= 12 and error.mean() <= 4, (path, error.max(), error.mean())


@pytest.fixture(scope="module")
def manual_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("videos")
  for seed, (path, codec, (h, w), num_frames) in enumerate(VIDEOS):
    write_video(root / path, pattern(seed, num_frames, h, w), codec)
  (root / CORRUPT).write_bytes(np.random.default_rng(0).integers(0, 256, 3000, np.uint8).tobytes())
  (root / EMPTY).parent.mkdir()  # test/bees holds only the empty file
  (root / EMPTY).write_bytes(b"")
  subprocess.run([FFMPEG, "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "color=c=red:s=16x12:r=10",
                  "-frames:v", "0", *FFV1, "-y", str(root / ZERO_FRAMES)], check=True)
  assert (root / ZERO_FRAMES).stat().st_size > 0
  (root / "train" / "ants" / "notes.txt").write_text("not a video")
  return root


@pytest.fixture(scope="module")
def built(manual_dir, tmp_path_factory):
  """Prepares video_folder/tiny through the CLI: (data_dir, its stdout, the video_folder log records, manual_dir).

  The records are caught by a handler on the module's logger (caplog is per test; this build is per module).
  """
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  handler = logging.handlers.BufferingHandler(capacity=10_000)
  logger = logging.getLogger(vf.__name__)
  logger.addHandler(handler)
  out = io.StringIO()
  try:
    with contextlib.redirect_stdout(out):
      prepare.main([NAME, "--data_dir", data_dir, "--manual_dir", str(manual_dir)])
  finally:
    logger.removeHandler(handler)
  return data_dir, out.getvalue(), handler.buffer, str(manual_dir)


def videos_of(split):
  return [v[0] for v in VIDEOS if v[0].startswith(split + "/")]


def _examples_of(name, data_dir, split):
  return list(tfds.builder(name, data_dir=data_dir).as_dataset(split=split, shuffle_files=False)
              .as_numpy_iterator())


def _examples(data_dir, split):
  return _examples_of(NAME, data_dir, split)


def test_list_videos_layout_and_warnings(manual_dir, caplog):
  with caplog.at_level(logging.WARNING, logger=vf.__name__):
    videos, classes = vf.list_videos(str(manual_dir))
  assert classes == CLASSES
  assert videos == {"train": [("train/ants/a0.mkv", "ants"), ("train/ants/a1.avi", "ants"),
                              (ZERO_FRAMES, "ants"), ("train/bees/b0.mkv", "bees"), ("train/bees/b1.mp4", "bees"),
                              (CORRUPT, "bees")],
                    "test": [("test/ants/t0.avi", "ants"), (EMPTY, "bees"), ("test/cats/c0.mkv", "cats")]}
  text = caplog.text
  assert "notes.txt" in text and os.path.join(str(manual_dir), "train", "ants") in text
  assert "class folders of test not in train" in text and "cats" in text


def test_list_videos_rejects_bad_layouts(tmp_path):
  with pytest.raises(ValueError, match="has no split folder"):
    vf.list_videos(str(tmp_path))
  (tmp_path / "train" / "a").mkdir(parents=True)
  (tmp_path / "train" / "a" / "x.mov").write_bytes(b"")  # not a video suffix
  with pytest.raises(ValueError, match=r"split folder .*train holds no video file"):
    vf.list_videos(str(tmp_path))
  (tmp_path / "train" / "a" / "x.MP4").write_bytes(b"")  # suffixes match in any case
  assert vf.list_videos(str(tmp_path)) == ({"train": [("train/a/x.MP4", "a")]}, ["a"])
  (tmp_path / "val-1" / "a").mkdir(parents=True)
  with pytest.raises(ValueError, match="val-1: a split name must be"):
    vf.list_videos(str(tmp_path))
  with pytest.raises(ValueError, match="is not a folder"):
    vf.list_videos(str(tmp_path / "missing"))


def test_counts_labels_frames_resize_and_content(built):
  data_dir, out, _, _ = built
  builder = tfds.builder(NAME, data_dir=data_dir)
  assert builder.info.features["label"].names == CLASSES
  assert builder.info.features["video"].shape == (None, H, W, 3)
  assert {s: i.num_examples for s, i in builder.info.splits.items()} == {"train": 4, "test": 2}
  assert "video_folder/tiny/1.0.0 prepared" in out and "(test 2, train 4)" in out, out  # splits in sorted order
  seen = []
  for split in ("train", "test"):
    for ex in _examples(data_dir, split):
      path = ex["path"].decode()
      source_frames = {v[0]: v[3] for v in VIDEOS}[path]
      assert path.startswith(split + "/")
      assert CLASSES[ex["label"]] == path.split("/")[1]
      assert ex["num_frames"] == len(ex["video"]) == min(source_frames, V_MAX)
      assert ex["video"].shape[1:] == (H, W, 3) and ex["video"].dtype == np.uint8
      assert_content(path, ex["video"])
      seen.append(path)
  assert sorted(seen) == sorted(v[0] for v in VIDEOS)


def test_unreadable_files_are_skipped_logged_and_recorded(built):
  data_dir, out, records, _ = built
  skipped = tfds.builder(NAME, data_dir=data_dir).info.metadata["skipped"]
  assert {split: [entry["path"] for entry in entries] for split, entries in skipped.items()} == SKIPPED
  for entries in skipped.values():
    for entry in entries:
      assert f"cannot decode video file '{os.path.join(built[3], entry['path'])}'" in entry["error"]
      assert "ffmpeg exited with status" in entry["error"]
  assert os.path.isfile(os.path.join(data_dir, "video_folder", "tiny", "1.0.0", "metadata.json"))
  assert "3 unreadable video files skipped" in out
  warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
  for split, paths in SKIPPED.items():
    for count, (path, entry) in enumerate(zip(paths, skipped[split]), 1):
      (message,) = [m for m in warnings if m.startswith(f"skipped unreadable video {path} ")]
      assert f"({count} skipped in {split} so far)" in message and entry["error"] in message
    summary = f"split {split}: kept {len(videos_of(split))} videos, skipped {len(paths)} unreadable ones"
    assert any(m.startswith(summary) for m in warnings), summary


def test_split_without_a_readable_video_raises(tmp_path):
  write_video(tmp_path / "raw" / "train" / "a" / "ok.mkv", pattern(0, 2, H, W), FFV1)
  (tmp_path / "raw" / "validation" / "a").mkdir(parents=True)
  (tmp_path / "raw" / "validation" / "a" / "bad.mp4").write_bytes(b"\x00" * 100)
  with pytest.raises(ValueError, match=r"split folder .*validation: none of its 1 video files could be decoded"):
    prepare.prepare(NAME, str(tmp_path / "tfds"), str(tmp_path / "raw"))


def test_prepare_needs_manual_dir_unless_prepared(built, tmp_path):
  with pytest.raises(ValueError, match="pass --manual_dir DIR"):
    prepare.prepare(NAME, str(tmp_path / "tfds"))
  with pytest.raises(ValueError, match="missing is not a folder"):
    prepare.prepare(NAME, str(tmp_path / "tfds"), str(tmp_path / "missing"))
  assert prepare.prepare(NAME, built[0]).info.splits["train"].num_examples == 4  # prepared: no sources needed
  assert builders.prepare_command(NAME, "/d") == (
      f"python -m vit_video.data.prepare {NAME} --data_dir /d --manual_dir DIR")


def test_decode_video_fps_and_bad_configs(tmp_path):
  source = pattern(7, 9, 2 * H, 2 * W)
  write_video(tmp_path / "v.mkv", source, FFV1, fps=10)
  resized = pattern(7, 9, H, W)
  # fps 5 from 10 keeps every other frame; fps None is video_io's decoding.
  np.testing.assert_array_equal(vf.decode_video(tmp_path / "v.mkv", num_frames=4, size=(H, W), fps=5),
                                resized[[0, 2, 4, 6]])
  np.testing.assert_array_equal(vf.decode_video(tmp_path / "v.mkv", num_frames=20, size=(H, W), fps=None),
                                video_io.read_video_frames(tmp_path / "v.mkv", max_frames=20, size=(H, W)))
  (tmp_path / "v.mkv").write_bytes(b"garbage")
  with pytest.raises(ValueError, match="v.mkv"):
    vf.decode_video(tmp_path / "v.mkv", num_frames=4, size=(H, W), fps=5)
  with pytest.raises(ValueError, match="fps 0 must be positive"):
    vf.VideoFolder(config=vf.VideoFolderConfig(name="x", num_frames=2, size=(H, W), fps=0), data_dir=str(tmp_path))
  with pytest.raises(ValueError, match=r"size \(0, 4\)"):
    vf.check_config(vf.VideoFolderConfig(name="x", num_frames=2, size=(0, 4), fps=None))


def test_clip_eval_iterator_reads_the_built_dataset(built):
  data_dir = built[0]
  num_frames, size = 4, 8  # T = 4 > the 3 frames of a1.avi: its last frame is repeated
  batches = list(vp.make_clip_eval_iterator(
      NAME, "train", data_dir, global_batch_size=4, num_frames=num_frames, frame_stride=1, image_size=size,
      num_clips=1, num_crops=1, process_index=0, process_count=1))
  assert len(batches) == 1
  batch = batches[0]
  assert batch["video"].shape == (4, num_frames, size, size, 3) and batch["mask"].all()
  examples = _examples(data_dir, "train")  # file order: video_index i is the i-th example
  np.testing.assert_array_equal(batch["video_index"], np.arange(4))
  np.testing.assert_array_equal(batch["label"], [ex["label"] for ex in examples])
  for clip, ex in zip(batch["video"], examples):
    path = ex["path"].decode()
    frames = expected(path)
    delta = max(len(frames) - num_frames, 0)  # one clip: the window starts at delta // 2
    indices = np.minimum(delta // 2 + np.arange(num_frames), len(frames) - 1)
    x0 = (W - H) // 2  # centre crop of side min(H, W) = H
    want = normalize(tf.image.resize(frames[indices, :, x0:x0 + H].astype(np.float32), (size, size), "bilinear",
                                     antialias=True).numpy())
    np.testing.assert_allclose(clip, want, atol=1e-5 if is_lossless(path) else 0.1, err_msg=path)


# Optical flow: video_folder/tiny_flow (4 frames of 12 x 16, flow bound 4 px) from lossless videos of a smooth
# texture moving (dy, dx) px per frame at the source size. (relative path, source (h, w), source frames, (dy, dx)).
FLOW_NAME = "video_folder/tiny_flow"
FLOW_CONFIG = vf.VideoFolder.builder_configs["tiny_flow"]
FLOW_VIDEOS = (
    ("train/left/l0.mkv", (24, 32), 6, (0, -2)),  # twice the stored size: 1 px left per stored frame; 4 of 6 kept
    ("train/down/d0.mkv", (12, 16), 3, (1, 0)),  # shorter than num_frames: 2 fields
    ("test/left/one.mkv", (12, 16), 1, (0, 0)),  # one frame: flow [0,H,W,2]
)


def moving(seed, num_frames, h, w, dy, dx):
  """uint8 [T,h,w,3]: a window on a smooth random texture, its content moving (dy, dx) px per frame."""
  margin = 2 * max(abs(dy), abs(dx)) * num_frames + 2
  noise = np.random.default_rng(seed).integers(0, 256, (h + 2 * margin, w + 2 * margin, 3), np.uint8)
  texture = cv2.GaussianBlur(noise, (0, 0), h / 12)
  # frame_{t+1}(p + d) = frame_t(p): the window's origin moves by -d each frame.
  return np.stack([texture[margin - t * dy:margin - t * dy + h, margin - t * dx:margin - t * dx + w]
                   for t in range(num_frames)])


class _Bar:
  """Stands in for tqdm.tqdm in video_folder: records its arguments and updates (tqdm is off without a TTY)."""
  made = []

  def __init__(self, **kwargs):
    self.kwargs, self.n = kwargs, 0
    _Bar.made.append(self)

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    return False

  def update(self, n=1):
    self.n += n

  def set_postfix(self, **kwargs):
    pass


@pytest.fixture(scope="module")
def built_flow(tmp_path_factory):
  """Prepares video_folder/tiny_flow from FLOW_VIDEOS: (data_dir, the progress bars made)."""
  root = tmp_path_factory.mktemp("flow_videos")
  for seed, (path, (h, w), num_frames, (dy, dx)) in enumerate(FLOW_VIDEOS):
    write_video(root / path, moving(seed, num_frames, h, w, dy, dx), FFV1)
  data_dir = str(tmp_path_factory.mktemp("tfds_flow"))
  _Bar.made = []
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(vf, "tqdm", types.SimpleNamespace(tqdm=_Bar))
    prepare.prepare(FLOW_NAME, data_dir, str(root))
  return data_dir, list(_Bar.made)


def test_flow_configs():
  configs = vf.VideoFolder.builder_configs
  for config in configs.values():
    vf.check_config(config)
  assert [name for name, c in configs.items() if c.flow] == ["ucf101_flow", "kinetics_flow", "tiny_flow"]
  assert all(c.flow_bound is None for c in configs.values() if not c.flow)
  kinetics, kinetics_flow = configs["kinetics"], configs["kinetics_flow"]
  assert (kinetics_flow.num_frames, kinetics_flow.size, kinetics_flow.fps) == (
      kinetics.num_frames, kinetics.size, kinetics.fps)
  assert kinetics_flow.flow_bound == configs["ucf101_flow"].flow_bound == vf.FLOW_BOUND
  assert (configs["ucf101_flow"].size, configs["ucf101_flow"].fps) == ((240, 320), 25)


def test_check_config_flow_errors(tmp_path):
  def config(**kwargs):
    return vf.VideoFolderConfig(name="x", num_frames=2, size=(H, W), fps=None, **kwargs)

  with pytest.raises(ValueError, match="config x: flow_bound None must be positive"):
    vf.check_config(config(flow=True))
  for bound in (0.0, -2.0):
    with pytest.raises(ValueError, match=f"flow_bound {bound} must be positive"):
      vf.check_config(config(flow=True, flow_bound=bound))
  with pytest.raises(ValueError, match="flow_bound 20.0 is set but flow is False"):
    vf.check_config(config(flow_bound=20.0))
  with pytest.raises(ValueError, match="flow 1 must be True or False"):
    vf.check_config(config(flow=1, flow_bound=20.0))
  with pytest.raises(ValueError, match="flow_bound None"):  # the builder checks its config
    vf.VideoFolder(config=config(flow=True), data_dir=str(tmp_path))


def test_quantized_flow_in_chunks_is_the_whole_video_flow():
  frames = moving(3, 6, H, W, 1, -1)
  whole = flow.quantize_flow(flow.compute_flow(frames), bound=4.0)  # [5,H,W,2]
  np.testing.assert_array_equal(vf.quantized_flow(frames, bound=4.0, chunk=2), whole)
  one = vf.quantized_flow(frames[:1], bound=4.0)
  assert one.shape == (0, H, W, 2) and one.dtype == np.uint8


def test_flow_feature_is_the_flow_of_the_stored_frames(built_flow):
  data_dir, bars = built_flow
  builder = tfds.builder(FLOW_NAME, data_dir=data_dir)
  feature = builder.info.features["flow"]
  assert isinstance(feature, tfds.features.Tensor) and feature.shape == (None, H, W, 2)
  assert feature.np_dtype == np.uint8 and feature._encoding == tfds.features.Encoding.ZLIB  # no public accessor
  bound = builder.builder_config.flow_bound
  assert bound == FLOW_CONFIG.flow_bound == 4.0
  seen = []
  for split in ("train", "test"):
    for ex in _examples_of(FLOW_NAME, data_dir, split):
      path, video, stored = ex["path"].decode(), ex["video"], ex["flow"]
      _, _, source_frames, (dy, dx) = {v[0]: v for v in FLOW_VIDEOS}[path]
      assert len(video) == ex["num_frames"] == min(source_frames, FLOW_CONFIG.num_frames), path
      assert stored.shape == (len(video) - 1, H, W, 2) and stored.dtype == np.uint8, (path, stored.shape)
      seen.append(path)
      if len(video) < 2:
        continue
      want = np.clip(flow.compute_flow(video), -bound, bound)  # [V-1,H,W,2] on the stored frames
      np.testing.assert_allclose(flow.dequantize_flow(stored, bound=bound), want, atol=bound / 255 + 1e-5,
                                 err_msg=path)
      scale = H / {v[0]: v[1] for v in FLOW_VIDEOS}[path][0]  # source px -> stored px
      np.testing.assert_allclose(want.mean(axis=(0, 1, 2)), [dx * scale, dy * scale], atol=0.1, err_msg=path)
  assert sorted(seen) == sorted(v[0] for v in FLOW_VIDEOS)
  # One progress bar per split (in sorted order), counting all of its videos.
  assert [(bar.kwargs["desc"], bar.kwargs["total"], bar.n) for bar in bars] == [
      ("video_folder/tiny_flow test", 1, 1), ("video_folder/tiny_flow train", 2, 2)]


def test_clip_pipeline_reads_the_stored_flow(built_flow):
  num_frames, size = 3, 8
  (batch,) = vp.make_clip_train_iterator(
      FLOW_NAME, "train", built_flow[0], global_batch_size=2, num_frames=num_frames, frame_stride=1,
      image_size=size, seed=0, process_index=0, process_count=1, stop_step=1, flow=True)
  assert batch["flow"].shape == (2, size, size, 2 * (num_frames - 1)) and batch["flow"].dtype == np.float32
  classes = tfds.builder(FLOW_NAME, data_dir=built_flow[0]).info.features["label"].names
  for fields, label in zip(batch["flow"], batch["label"]):
    x, y = np.abs(fields[..., 0::2]).mean(), np.abs(fields[..., 1::2]).mean()
    # 1 px per frame at 12 x 16, times S / crop side (8 / 10 to 8 / 12), over the bound 4: about 0.2.
    moving_x = classes[label] == "left"
    assert 0.1 < (x if moving_x else y) < 0.3 and (y if moving_x else x) < 0.05, (classes[label], x, y)


def test_without_flow_there_is_no_flow_feature(built):
  builder = tfds.builder(NAME, data_dir=built[0])
  assert set(builder.info.features) == {"video", "label", "path", "num_frames"}
  assert (builder.builder_config.flow, builder.builder_config.flow_bound) == (False, None)
  with pytest.raises(ValueError, match="has no uint8 'flow' feature"):
    vp.make_clip_train_iterator(NAME, "train", built[0], global_batch_size=2, num_frames=2, frame_stride=1,
                                image_size=8, seed=0, process_index=0, process_count=1, flow=True)


def test_clip_pipeline_reads_a_one_frame_video_as_zero_flow(built_flow):
  (batch,) = vp.make_clip_eval_iterator(
      FLOW_NAME, "test", built_flow[0], global_batch_size=1, num_frames=3, frame_stride=1, image_size=8,
      num_clips=1, num_crops=1, process_index=0, process_count=1, flow=True)
  assert batch["mask"].all()
  np.testing.assert_array_equal(batch["flow"], np.zeros((1, 8, 8, 4), np.float32))

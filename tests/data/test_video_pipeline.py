"""Tests for vit_video.data.video_pipeline on the tiny moving Fashion-MNIST (6 frames of 20x20, 60 train / 30
test clips) and on a few videos written here of varying length and frame size (wide, tall, square; 3 channels)."""
import logging
import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from vit_video.data import common
from vit_video.data import video_pipeline as vp
from vit_video.data.common import normalize

MOVING = "moving_fmnist_actions/tiny"
# (V, H, W) of the videos written by VideoPipelineTestVideos, by key: short, tall, wide, tall, square.
SHAPES = ((2, 8, 12), (4, 12, 8), (7, 8, 12), (9, 12, 8), (5, 8, 8))
CORRUPT_KEY, CORRUPT_FRAME = 2, 1  # in the 'corrupt' config, this video's frame is not a PNG


class VideoPipelineTestVideos(tfds.core.GeneratorBasedBuilder):
  """SHAPES videos of random RGB pixels (labels key % 3); 'corrupt' breaks one frame; 'images' has no video."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=name) for name in ("clean", "corrupt", "images")]

  def _info(self):
    label = tfds.features.ClassLabel(num_classes=3)
    if self.builder_config.name == "images":
      features = {"image": tfds.features.Image(shape=(8, 12, 3)), "label": label}
    else:
      features = {"video": tfds.features.Video(shape=(None, None, None, 3)), "label": label}
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for key, shape in enumerate(SHAPES):
      if self.builder_config.name == "images":
        yield key, {"image": np.zeros((8, 12, 3), np.uint8), "label": key % 3}
        continue
      frames = list(np.random.default_rng(key).integers(0, 256, (*shape, 3), dtype=np.uint8))
      if self.builder_config.name == "corrupt" and key == CORRUPT_KEY:
        frames[CORRUPT_FRAME] = b"not a png"  # stored as is: tfds does not check encoded bytes
      yield key, {"video": frames, "label": key % 3}


@pytest.fixture(scope="module")
def videos_dir(tmp_path_factory) -> str:
  data_dir = str(tmp_path_factory.mktemp("test_videos"))
  for config in ("clean", "corrupt", "images"):
    VideoPipelineTestVideos(config=config, data_dir=data_dir).download_and_prepare()
  return data_dir


def _decoded(name, split, data_dir):
  """The examples in file order, decoded by tfds: 'video' uint8 [V,H,W,C]."""
  return list(tfds.builder(name, data_dir=data_dir).as_dataset(split=split, shuffle_files=False)
              .as_numpy_iterator())


def _frames(video, start, num_frames, stride):
  """The documented window: frames min(start + t stride, V - 1), t < T."""
  return video[[min(start + t * stride, len(video) - 1) for t in range(num_frames)]]


def _resized(frames, size):
  """uint8 [T,h,w,C] -> float32 [T,S,S,C] in [-1, 1] (resized as the pipeline documents)."""
  return normalize(tf.image.resize(frames.astype(np.float32), (size, size), "bilinear", antialias=True).numpy())


def _train(data_dir, split="train", *, name=MOVING, **kwargs):
  args = dict(global_batch_size=8, num_frames=3, frame_stride=2, image_size=12, seed=3, process_index=0,
              process_count=1) | kwargs
  return vp.make_clip_train_iterator(name, split, data_dir, **args)


def _eval(data_dir, split="test", *, name=MOVING, **kwargs):
  args = dict(global_batch_size=8, num_frames=3, frame_stride=2, image_size=12, num_clips=2, num_crops=1,
              process_index=0, process_count=1) | kwargs
  return list(vp.make_clip_eval_iterator(name, split, data_dir, **args))


def _concat(batches):
  return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def test_even_offsets():
  assert vp.even_offsets(6, 3) == [0, 3, 6]
  assert vp.even_offsets(4, 1) == [2]
  assert vp.even_offsets(1, 3) == [0, 0, 1]
  assert vp.even_offsets(0, 2) == [0, 0]


def test_train_clip_is_one_window_crop_and_flip_of_its_video(tiny_moving_fmnist):
  """Every clip of a one-video split equals one documented window, square crop and flip of the whole clip."""
  examples = _decoded(MOVING, "train", tiny_moving_fmnist)
  k = next(i for i, e in enumerate(examples) if e["label"] != 9)  # not 'still': the frames differ
  video = examples[k]["video"]  # [6,20,20,1]
  assert not np.array_equal(video[0], video[4])
  candidates, params = [], []  # every documented (start, side, y, x, flip): 2 starts, sides 18..20
  for start in (0, 1):
    window = _frames(video, start, 3, 2)
    for side in (18, 19, 20):
      for y in range(21 - side):
        for x in range(21 - side):
          clip = _resized(window[:, y:y + side, x:x + side], 12)
          candidates += [clip, clip[:, :, ::-1]]
          params += [(start, side, False), (start, side, True)]
  candidates = np.stack(candidates)  # [56,T,S,S,C]
  batches = list(_train(tiny_moving_fmnist, f"train[{k}:{k + 1}]", stop_step=2, label_key="object_label"))
  assert len(batches) == 2
  found = set()
  for batch in batches:
    assert batch["video"].shape == (8, 3, 12, 12, 1) and batch["video"].dtype == np.float32
    assert batch["label"].dtype == np.int32 and np.all(batch["label"] == examples[k]["object_label"])
    for clip in batch["video"]:
      errors = np.abs(candidates - clip).max(axis=(1, 2, 3, 4))
      assert errors.min() < 1e-4, errors.min()
      found.add(params[int(errors.argmin())])
  assert {p[0] for p in found} == {0, 1} and {p[2] for p in found} == {False, True}
  assert len({p[1] for p in found}) >= 2


def test_train_batches_are_deterministic_resumable_and_host_independent(tiny_moving_fmnist):
  full = list(_train(tiny_moving_fmnist, stop_step=10))  # 80 clips of a 60-clip split: two epochs
  assert len(full) == 10
  for batch in full:
    assert batch["video"].shape == (8, 3, 12, 12, 1) and -1 <= batch["video"].min() < batch["video"].max() <= 1
    assert batch["label"].dtype == np.int32 and np.all((0 <= batch["label"]) & (batch["label"] < 10))
  again = _train(tiny_moving_fmnist)
  np.testing.assert_array_equal(next(again)["video"], full[0]["video"])
  assert not np.array_equal(next(_train(tiny_moving_fmnist, seed=4))["video"], full[0]["video"])
  resumed = list(_train(tiny_moving_fmnist, start_step=7, stop_step=10))  # step 7 crosses the epoch boundary
  assert len(resumed) == 3
  for got, want in zip(resumed, full[7:]):
    np.testing.assert_array_equal(got["video"], want["video"])
    np.testing.assert_array_equal(got["label"], want["label"])
  hosts = [list(_train(tiny_moving_fmnist, start_step=7, stop_step=9, process_index=p, process_count=2))
           for p in range(2)]
  for step in range(2):
    np.testing.assert_array_equal(
        np.concatenate([hosts[0][step]["video"], hosts[1][step]["video"]]), full[7 + step]["video"])


# Whole videos (T = V = 6 frames at stride 1, S = 20, no crop or flip): each clip is its record's video.
WHOLE = dict(num_frames=6, frame_stride=1, image_size=20, flip=False, scale_range=(1.0, 1.0))


def _video_ids(data_dir, split="train"):
  """The uint8 bytes of each video of `split` -> its index in file order."""
  return {e["video"].tobytes(): i for i, e in enumerate(_decoded(MOVING, split, data_dir))}


def _records(batches, ids):
  """The file indices of the whole-video clips of `batches` (float32 [B,T,S,S,C] in [-1, 1]), in stream order."""
  return [ids[np.round((clip + 1.0) * 127.5).astype(np.uint8).tobytes()] for b in batches for clip in b["video"]]


def test_split_sharding_streams_each_hosts_shard_once_per_epoch(tiny_moving_fmnist):
  """3 hosts of batches of 4 (12 global): each streams its 20-clip even_splits shard, 5 batches an epoch; the
  shards are disjoint and cover the 60 clips. With one process 'split' is 'global'."""
  ids = _video_ids(tiny_moving_fmnist)
  epochs = []
  for p in range(3):
    batches = list(_train(tiny_moving_fmnist, global_batch_size=12, process_index=p, process_count=3,
                          host_sharding="split", stop_step=10, **WHOLE))
    assert [b["video"].shape for b in batches] == [(4, 6, 20, 20, 1)] * 10
    records = _records(batches, ids)
    assert sorted(records[:20]) == sorted(records[20:]) == list(range(20 * p, 20 * p + 20))
    assert records[:20] != records[20:]  # each epoch in its own order
    epochs += records[:20]
  assert sorted(epochs) == list(range(60))
  for split, whole in zip(_train(tiny_moving_fmnist, host_sharding="split", stop_step=2), _train(tiny_moving_fmnist)):
    np.testing.assert_array_equal(split["video"], whole["video"])


@pytest.mark.parametrize("host_sharding, shuffle_buffer_size", [("split", None), ("split", 5), ("global", 5)])
def test_a_resumed_iterator_yields_the_uninterrupted_batches(tiny_moving_fmnist, host_sharding, shuffle_buffer_size):
  """Host 1 of 2, 4 clips per host and step: the 30-clip shard ('split') or 60-clip split ('global') ends an epoch
  in step 7; starting at steps 3 and 7 gives the same batches as the run from step 0."""
  args = dict(process_index=1, process_count=2, host_sharding=host_sharding, shuffle_buffer_size=shuffle_buffer_size,
              stop_step=10)
  full = list(_train(tiny_moving_fmnist, **args))
  assert len(full) == 10
  for start in (3, 7):
    resumed = list(_train(tiny_moving_fmnist, start_step=start, **args))
    assert len(resumed) == 10 - start
    for got, want in zip(resumed, full[start:]):
      np.testing.assert_array_equal(got["video"], want["video"])
      np.testing.assert_array_equal(got["label"], want["label"])


def test_a_bounded_shuffle_buffer_is_local_and_still_covers_each_epoch(tiny_moving_fmnist):
  """Buffer 4: the clip at position i of an epoch is one of the first i + 4 records read; an epoch is still
  every record once. The exact shuffle (None) is not local."""
  ids = _video_ids(tiny_moving_fmnist)
  local = _records(_train(tiny_moving_fmnist, global_batch_size=10, shuffle_buffer_size=4, stop_step=6, **WHOLE), ids)
  assert sorted(local) == list(range(60))
  assert all(record < position + 4 for position, record in enumerate(local))
  exact = _records(_train(tiny_moving_fmnist, global_batch_size=10, stop_step=6, **WHOLE), ids)
  assert sorted(exact) == list(range(60)) and any(record >= position + 4 for position, record in enumerate(exact))


def test_memory_rule_caches_only_what_fits_and_warns_of_a_big_exact_shuffle(tiny_moving_fmnist, caplog):
  builder = tfds.builder(MOVING, data_dir=tiny_moving_fmnist)
  size, test_size = (int(builder.info.splits[s].num_bytes) for s in ("train", "test"))
  assert 0 < common.split_bytes(builder, "train") == size < common.MEMORY_LIMIT_BYTES
  thirds = [common.split_bytes(builder, s) for s in tfds.even_splits("train", 3)]  # a host's share: tfds's
  assert abs(sum(thirds) - size) <= 2 and max(thirds) - min(thirds) <= 1  # bytes per example times 20 examples
  assert abs(common.split_bytes(builder, "train[:10]+test") - (size / 6 + test_size)) <= 1
  assert common.cache_records("auto", builder, "train")  # the tiny split: cached
  assert not common.cache_records("auto", builder, "train", limit_bytes=0)
  assert not common.cache_records("auto", builder, "train", limit_bytes=size - 1)
  assert common.cache_records("auto", builder, tfds.even_splits("train", 3)[0], limit_bytes=size // 2)
  assert common.cache_records(True, builder, "train", limit_bytes=0)
  assert not common.cache_records(False, builder, "train")
  with pytest.raises(ValueError, match="cache 'yes' is not one of 'auto', True, False"):
    common.cache_records("yes", builder, "train")
  assert common.shuffle_buffer(None, builder, "train") == 60 and common.shuffle_buffer(7, builder, "train") == 7
  assert "exactly" not in caplog.text
  assert common.shuffle_buffer(None, builder, "train", limit_bytes=0) == 60
  assert "shuffle_buffer_size None shuffles train exactly" in caplog.text


def test_the_pipeline_caches_by_the_rule_what_this_host_reads(tiny_moving_fmnist, monkeypatch):
  calls = []
  monkeypatch.setattr(vp, "cache_records", lambda cache, builder, split: calls.append((cache, split)) or False)
  for host_sharding in ("split", "global"):
    next(_train(tiny_moving_fmnist, process_index=1, process_count=2, host_sharding=host_sharding, stop_step=1))
  next(_train(tiny_moving_fmnist, cache=True, stop_step=1))
  assert calls == [("auto", tfds.even_splits("train", 2)[1]), ("auto", "train"), (True, "train")]


def test_short_videos_repeat_their_last_frame(tiny_moving_fmnist):
  """T=4 frames at stride 2 need 7 frames; the 6-frame videos give frames 0, 2, 4, 5."""
  examples = _decoded(MOVING, "test", tiny_moving_fmnist)
  views = _concat(_eval(tiny_moving_fmnist, "test[:4]", num_frames=4, image_size=20, global_batch_size=4))
  assert views["mask"].all() and list(views["video_index"]) == [0, 0, 1, 1, 2, 2, 3, 3]
  for view, i in zip(views["video"], views["video_index"]):
    np.testing.assert_allclose(view, normalize(examples[i]["video"][[0, 2, 4, 5]].astype(np.float32)), atol=1e-5)
  batch = next(_train(tiny_moving_fmnist, "test[:1]", num_frames=4, image_size=20, flip=False,
                      scale_range=(1.0, 1.0)))
  for clip in batch["video"]:
    np.testing.assert_allclose(clip, normalize(examples[0]["video"][[0, 2, 4, 5]].astype(np.float32)), atol=1e-5)


def test_eval_views_resized_in_file_order(tiny_moving_fmnist):
  examples = _decoded(MOVING, "test", tiny_moving_fmnist)
  batches = _eval(tiny_moving_fmnist)  # 30 videos x 2 windows (starts 0, 1) x 1 crop, in batches of 8
  assert len(batches) == vp.num_clip_eval_batches(MOVING, "test", tiny_moving_fmnist, global_batch_size=8,
                                                  num_clips=2, num_crops=1, process_count=1) == 8
  views = _concat(batches)
  assert views["video"].shape == (64, 3, 12, 12, 1) and views["video"].dtype == np.float32
  assert views["label"].dtype == np.int32 and views["video_index"].dtype == np.int32
  np.testing.assert_array_equal(views["mask"], np.arange(64) < 60)
  np.testing.assert_array_equal(views["video_index"][:60], np.repeat(np.arange(30), 2))
  assert np.all(views["video_index"][60:] == -1) and np.all(views["video"][60:] == 0)
  for n in range(60):
    example = examples[views["video_index"][n]]
    assert views["label"][n] == example["label"]
    np.testing.assert_allclose(views["video"][n], _resized(_frames(example["video"], n % 2, 3, 2), 12), atol=1e-5)


def test_eval_views_are_the_documented_windows_and_crops_on_every_host(videos_dir):
  """3 windows x 3 crops of videos of 2 to 9 frames, wide, tall and square; two hosts."""
  name, num_views = "video_pipeline_test_videos/clean", 9
  examples = _decoded(name, "train", videos_dir)
  hosts = [_eval(videos_dir, "train", name=name, global_batch_size=6, num_frames=2, image_size=8, num_clips=3,
                 num_crops=3, process_index=p, process_count=2) for p in range(2)]
  assert [len(h) for h in hosts] == [9, 9]  # ceil(3 videos x 9 views / 3) on both hosts
  views = _concat(hosts[0] + hosts[1])
  real = views["mask"]
  assert real.sum() == 5 * num_views and np.all(views["video_index"][~real] == -1)
  np.testing.assert_array_equal(np.bincount(views["video_index"][real]), [num_views] * 5)
  starts_of_9_frames = []
  for n in np.flatnonzero(real):
    example = examples[views["video_index"][n]]
    video = example["video"]
    v, h, w = video.shape[:3]
    r = n % num_views if n < 27 else (n - 27) % num_views  # the view's rank within its video (host 1 at 27)
    j, k = divmod(r, 3)  # window j, crop k
    delta = max(v - 3, 0)  # (T - 1) stride + 1 = 3 frames
    start = delta * j // 2
    offset = (max(h, w) - 8) * k // 2  # crops of side min(H, W) = 8 along the longer side
    y, x = (0, offset) if w >= h else (offset, 0)
    want = normalize(_frames(video, start, 2, 2)[:, y:y + 8, x:x + 8].astype(np.float32))
    np.testing.assert_array_equal(views["video"][n], want)
    assert views["label"][n] == example["label"]
    if v == 9 and k == 0:
      starts_of_9_frames.append(start)
  assert starts_of_9_frames == [0, 3, 6]


def test_aggregate_views_averages_exactly_the_views_of_each_video():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(7, 4))
  video_index = np.array([3, 3, 0, 3, 0, -1, 0])
  mask = np.array([True, True, True, True, True, False, True])
  logits[5] = [100, 0, 0, 0]  # padding: must not count
  scores, videos = vp.aggregate_views(logits, video_index, mask)
  softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
  np.testing.assert_array_equal(videos, [0, 3])
  np.testing.assert_allclose(scores, [softmax[[2, 4, 6]].mean(0), softmax[[0, 1, 3]].mean(0)], rtol=1e-6)
  probabilities, _ = vp.aggregate_views(softmax, video_index, mask, from_logits=False)
  np.testing.assert_allclose(probabilities, scores, rtol=1e-6)
  with pytest.raises(ValueError, match=r"\(7, 4\)"):
    vp.aggregate_views(logits, video_index[:6], mask)


def test_video_top1_differs_from_clip_top1_on_planted_logits():
  # One video of label 2: two views narrowly wrong (class 1), one confidently right -> clip 1/3, video 1.
  logits = np.array([[0, 1.0, 0.9, 0], [0, 1.0, 0.9, 0], [0, 0, 8.0, 0], [9.0, 0, 0, 0]])
  labels, video_index, mask = np.array([2, 2, 2, 0]), np.array([5, 5, 5, -1]), np.array([1, 1, 1, 0], bool)
  metrics = vp.clip_and_video_top1(logits, labels, video_index, mask)
  assert metrics["clip_top1"] == pytest.approx(1 / 3) and metrics["video_top1"] == 1.0
  with pytest.raises(ValueError, match="different labels"):
    vp.clip_and_video_top1(logits, np.array([2, 1, 2, 0]), video_index, mask)


def test_clip_and_video_top1_on_eval_outputs(videos_dir):
  """Centre crops confidently right, the other views narrowly wrong: clip top-1 1/3, video top-1 1."""
  views = _concat(_eval(videos_dir, "train", name="video_pipeline_test_videos/clean", global_batch_size=4,
                        num_frames=2, image_size=8, num_clips=2, num_crops=3))
  crop = np.arange(len(views["mask"])) % 3  # views of a video follow each other, crop-minor
  logits = np.where((crop == 1)[:, None], 3 * np.eye(3)[views["label"]], np.eye(3)[(views["label"] + 1) % 3])
  logits[~views["mask"]] = 50 * np.eye(3)[(views["label"][~views["mask"]] + 1) % 3]  # padding: ignored
  metrics = vp.clip_and_video_top1(logits, views["label"], views["video_index"], views["mask"])
  assert metrics == {"clip_top1": pytest.approx(1 / 3), "video_top1": 1.0}


def test_corrupt_record_is_skipped_counted_and_logged(videos_dir, caplog):
  name = "video_pipeline_test_videos/corrupt"
  records = list(tfds.builder(name, data_dir=videos_dir).as_dataset(
      split="train", shuffle_files=False, decoders={"video": tfds.decode.SkipDecoding()},
      read_config=tfds.ReadConfig(add_tfds_id=True)).as_numpy_iterator())
  position = next(i for i, r in enumerate(records) if r["video"][CORRUPT_FRAME] == b"not a png")
  key = records[position]["tfds_id"].decode()
  skipped = []
  with caplog.at_level(logging.WARNING, logger=vp.__name__):
    views = _concat(_eval(videos_dir, "train", name=name, global_batch_size=4, num_frames=2, image_size=8,
                          num_clips=1, num_crops=1, skipped=skipped))
  assert skipped == [key] and f"{key} (1 skipped so far)" in caplog.text
  assert sorted(views["video_index"][views["mask"]]) == [i for i in range(5) if i != position]
  skipped = []
  # 7 frames at stride 1 cover the whole 7-frame video, corrupt frame included: skipped in every epoch.
  batches = list(_train(videos_dir, name=name, global_batch_size=4, num_frames=7, frame_stride=1, image_size=8,
                        stop_step=3, skipped=skipped))  # 12 clips from 4 good videos: three epochs, no crash
  assert [b["video"].shape for b in batches] == [(4, 7, 8, 8, 3)] * 3
  assert len(skipped) >= 3 and set(skipped) == {key}
  only_corrupt = _train(videos_dir, f"train[{position}:{position + 1}]", name=name, num_frames=7, frame_stride=1)
  with pytest.raises(tf.errors.InvalidArgumentError, match=f"1 video records in a row could not be decoded.*{key}"):
    next(only_corrupt)  # a split where nothing decodes raises instead of skipping forever


def test_bad_inputs_raise_naming_the_value(tiny_moving_fmnist, videos_dir):
  with pytest.raises(ValueError, match="num_frames 0"):
    _train(tiny_moving_fmnist, num_frames=0)
  with pytest.raises(ValueError, match="frame_stride -1"):
    _eval(tiny_moving_fmnist, frame_stride=-1)
  with pytest.raises(ValueError, match="image_size 0"):
    _train(tiny_moving_fmnist, image_size=0)
  with pytest.raises(ValueError, match="num_crops 0"):
    _eval(tiny_moving_fmnist, num_crops=0)
  with pytest.raises(ValueError, match="'validation'"):
    _train(tiny_moving_fmnist, "validation")
  with pytest.raises(ValueError, match="'validation'"):
    _eval(tiny_moving_fmnist, "validation")
  with pytest.raises(ValueError, match="'speed'"):
    _train(tiny_moving_fmnist, label_key="speed")
  with pytest.raises(ValueError, match="no 'video' feature"):
    _eval(videos_dir, "train", name="video_pipeline_test_videos/images")
  with pytest.raises(ValueError, match=r"scale_range \(0.0, 1.0\)"):
    _train(tiny_moving_fmnist, scale_range=(0.0, 1.0))
  with pytest.raises(ValueError, match="host_sharding 'hosts' is not one of 'global', 'split'"):
    _train(tiny_moving_fmnist, host_sharding="hosts")
  with pytest.raises(ValueError, match="shuffle_buffer_size 0 must be None"):
    _train(tiny_moving_fmnist, shuffle_buffer_size=0)
  with pytest.raises(ValueError, match="cache 1 is not one of"):
    _train(tiny_moving_fmnist, cache=1)
  assert math.isnan(vp.clip_and_video_top1(np.zeros((2, 3)), np.zeros(2), np.zeros(2), np.zeros(2))["clip_top1"])


# --- Optical flow read with the clip (moving_fmnist_actions stores DIS flow, quantised at FLOW_BOUND) ---

def _stored_flow(data_dir, split):
  """The examples' stored flow, dequantised: float32 [V-1,H,W,2] pixels each, in file order."""
  from vit_video.data import flow as flow_lib, moving_fmnist  # noqa: PLC0415
  return [flow_lib.dequantize_flow(ex["flow"], bound=moving_fmnist.FLOW_BOUND) for ex in _decoded(MOVING, split,
                                                                                                  data_dir)]


def _stacked(fields):
  """[...,T-1,S,S,2] -> [...,S,S,2(T-1)] in x_0, y_0, x_1, ... order, by explicit indexing."""
  *lead, n, h, w, _ = fields.shape
  out = np.zeros((*lead, h, w, 2 * n), fields.dtype)
  for t in range(n):
    out[..., 2 * t] = fields[..., t, :, :, 0]
    out[..., 2 * t + 1] = fields[..., t, :, :, 1]
  return out


def test_eval_flow_of_a_whole_uncropped_video_is_its_stored_flow_stacked(tiny_moving_fmnist):
  from vit_video.data import moving_fmnist  # noqa: PLC0415
  stored = _stored_flow(tiny_moving_fmnist, "test")  # 30 x [5,20,20,2]
  batches = list(_eval(tiny_moving_fmnist, num_frames=6, frame_stride=1, image_size=20, num_clips=1, flow=True))
  flow = np.concatenate([b["flow"] for b in batches])[:len(stored)]  # [30,20,20,10]
  index = np.concatenate([b["video_index"] for b in batches])[:len(stored)]
  assert flow.shape == (30, 20, 20, 10) and flow.dtype == np.float32
  np.testing.assert_allclose(flow, _stacked(np.stack(stored)[index]) / moving_fmnist.FLOW_BOUND, atol=1e-5)


def test_flow_of_padded_frames_is_zero_and_the_rest_is_the_stored_flow(tiny_moving_fmnist):
  """T = 8 > V = 6: frames 0..5, 5, 5 -> fields 0..4 then two zero fields (the repeated last frame)."""
  from vit_video.data import moving_fmnist  # noqa: PLC0415
  stored = np.stack(_stored_flow(tiny_moving_fmnist, "test"))
  batch = next(iter(_eval(tiny_moving_fmnist, num_frames=8, frame_stride=1, image_size=20, num_clips=1, flow=True)))
  assert batch["flow"].shape == (8, 20, 20, 14)
  np.testing.assert_array_equal(batch["flow"][..., 10:], 0.0)
  expected = _stacked(stored[batch["video_index"]]) / moving_fmnist.FLOW_BOUND
  np.testing.assert_allclose(batch["flow"][..., :10], expected, atol=1e-5)


def test_train_flow_follows_the_clip_flip_with_its_x_component_negated(tiny_moving_fmnist):
  """Same seed with and without flips: the draws of the window and crop are the same, so every clip is either
  identical or mirrored, and its flow mirrored with x negated exactly when the frames are."""
  common = dict(num_frames=4, frame_stride=1, image_size=16, flow=True, global_batch_size=16)
  plain = next(iter(_train(tiny_moving_fmnist, flip=False, **common)))
  maybe = next(iter(_train(tiny_moving_fmnist, flip=True, **common)))
  assert plain["flow"].shape == (16, 16, 16, 6)
  sign = np.tile([-1.0, 1.0], 3)  # x_0, y_0, x_1, ... -> -x, y
  mirrored = [not np.array_equal(a, b) for a, b in zip(plain["video"], maybe["video"])]
  assert 0 < sum(mirrored) < 16
  for i, m in enumerate(mirrored):
    if m:
      np.testing.assert_allclose(maybe["video"][i], plain["video"][i][:, :, ::-1], atol=1e-6)
      np.testing.assert_allclose(maybe["flow"][i], plain["flow"][i][:, ::-1] * sign, atol=1e-6)
    else:
      np.testing.assert_array_equal(maybe["flow"][i], plain["flow"][i])


def test_resizing_scales_the_flow_vectors(tiny_moving_fmnist):
  """Upsampling 20 -> 40 px doubles displacements: the mean field (resizing keeps means) doubles."""
  small = next(iter(_eval(tiny_moving_fmnist, num_frames=6, frame_stride=1, image_size=20, num_clips=1, flow=True)))
  large = next(iter(_eval(tiny_moving_fmnist, num_frames=6, frame_stride=1, image_size=40, num_clips=1, flow=True)))
  mean_small, mean_large = small["flow"].mean(axis=(1, 2)), large["flow"].mean(axis=(1, 2))  # [B,10]
  assert np.abs(mean_small).max() > 1e-3
  np.testing.assert_allclose(mean_large, 2 * mean_small, atol=0.02 * np.abs(mean_small).max())


def test_flow_of_a_dataset_without_it_is_a_clear_error(videos_dir):
  with pytest.raises(ValueError, match="no uint8 'flow' feature"):
    _train(videos_dir, name="video_pipeline_test_videos/clean", flow=True)

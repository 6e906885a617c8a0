"""tf.data input pipelines for video classification (clips of frames); they yield numpy batches and know no model.

Datasets are prepared tfds datasets with a `video` feature (a tfds Video, i.e. a Sequence of encoded Image
frames, [V,H,W,C] with V frames per video) and a ClassLabel to train on (`label_key`, e.g. moving_fmnist_actions'
'label' (the motion) or 'object_label' (the item)). Frames are kept encoded until a clip's frames are chosen, so
training decodes only the T frames it uses. Batches are dicts of numpy arrays, B = global_batch_size /
process_count per host:
  'video': float32 [B,T,S,S,C] in [-1, 1] (x / 127.5 - 1; S = image_size),
  'label': int32 [B],
  'mask', 'video_index' (eval only, see `make_clip_eval_iterator`),
  'flow' (with flow=True): float32 [B,S,S,2(T-1)], the clip's optical flow stacked as flow.stack_flow does
    (channel 2t the x, 2t+1 the y displacement from clip frame t to t+1), in pixels of the S x S output
    divided by the dataset's quantisation bound (so mostly in [-1, 1]).

Optical flow. A dataset with flow has a feature 'flow', uint8 [V-1,H,W,2]: field i is the flow from video frame i
to i+1 (`flow.compute_flow`), quantised by `flow.quantize_flow` with the bound its builder config's `flow_bound`
holds (moving_fmnist_actions stores it, as do video_folder's configs with flow). Field t of a clip is the stored
field at its frame i_t, i.e. from i_t to i_t + 1: the flow between clip frames t and t+1 when frame_stride is 1, and the
forward flow at each sampled frame otherwise (the two-stream papers stack consecutive fields). Where i_{t+1}
== i_t (the padding of short videos repeats the last frame) the field is zero. The flow gets the clip's crop and
flip: cropped like the frames, resized to S x S with its vectors scaled by S / side, and mirrored with its x
component negated.

Clip geometry. A clip is T = num_frames frames at stride s = frame_stride, spanning (T - 1) s + 1 frames:
  frames  i_t = min(start + t s, V - 1), t = 0..T-1.
Padding rule for short videos (V < (T - 1) s + 1): the start is 0 and the indices past the video repeat its
last frame (the `min` above), e.g. V = 6, T = 4, s = 2 -> frames 0, 2, 4, 5.
  Training: start uniform over the delta + 1 valid starts {0, ..., delta}, delta = max(V - (T - 1) s - 1, 0);
    a square crop of side round(sqrt(a) min(H, W)), a ~ U(scale_range) the fraction of the shorter side's square
    it covers, at an offset uniform over the valid ones, resized to S x S (bilinear, antialiased), then mirrored
    left-right with probability 1/2 (if `flip`). The crop and flip are drawn once per clip and applied to all of
    its frames.
  Evaluation (multi-view, as in the non-local and SlowFast papers): num_clips windows evenly spaced over the
    video, starts `even_offsets(delta, num_clips)`, times num_crops square crops of side c = round(crop_fraction
    min(H, W)) (1.0: the whole shorter side, as the papers' resize-then-crop), resized to S x S, at offsets
    `even_offsets(L - c, num_crops)` along the longer side L (the width when H == W), centred on the other:
    num_crops = 1 is the centre crop, 3 is left/centre/right (or top/centre/bottom).
  even_offsets(delta, n) = [delta // 2] if n == 1 else [delta j // (n - 1) for j in 0..n-1] (first, evenly
    spaced, last).

Training batches follow the image pipeline's host sharding (`pipeline.make_train_iterator`, whose module
docstring has the details; with one process both modes give the same batches):
  'global': one stream, the split shuffled per epoch from (seed, epoch); global batch s is stream positions
    [s G, (s + 1) G) and host p keeps its rows [p B, (p + 1) B) before decoding; each clip's random temporal
    window, crop and flip derive from (seed, epoch, position in the epoch). The hosts' batches concatenated are
    the 1-process batch, but every host reads every record.
  'split': host p reads only its `tfds.even_splits(split, P)[p]` shard and streams it alone: order from (seed,
    p, epoch), batch s its positions [s B, (s + 1) B), clip seeds from (seed, p, epoch, position). 1/P of the
    reading (Kinetics-sized data on a pod), but the global batches depend on P.
In both, the same (seed, step) gives the same batch whatever `start_step` the iterator started at (whole epochs
are skipped arithmetically, the positions before it in its epoch read and shuffled but not decoded).
`shuffle_buffer_size` None shuffles the split or shard exactly each epoch, holding its encoded videos in memory;
an int shuffles in a buffer of that many encoded videos. `cache` "auto" keeps the encoded videos read in memory
only when they fit `common.cache_records`'s bound (1 GiB).

Undecodable records (a corrupt frame) do not stop an epoch: each record is processed in its own small dataset
with `ignore_errors`, followed by a placeholder flagged as failed, so a record that fails yields the placeholder;
placeholders are dropped before batching, and each logs a warning naming the record's tfds key and the running
count, and appends the key to the caller's `skipped` list if one is given (`tf.data.experimental.ignore_errors`
alone could not count or name them). Training decodes only a clip's frames, so a record with one corrupt frame
is skipped only when its window uses that frame (evaluation decodes every frame). After as many failures in a
row as the host reads records (training: the split, or its shard under 'split'; evaluation: its shard), the
iterator raises (tf.errors.InvalidArgumentError wrapping a ValueError) rather than skip forever. Skipping keeps
every batch full but shifts the rest of that host's stream by one example: after a skip, a run resumed with
`start_step` no longer sees exactly the batches of the uninterrupted run (it is still deterministic), and under
'global' the hosts' batches no longer concatenate to the 1-process batch. In evaluation a skipped video simply
has no views (its `video_index` is absent) and the padding grows.
"""
import logging
import math
from collections.abc import Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vit_video.data import augment as augment_lib
from vit_video.data.builders import check_prepared
from vit_video.data.common import (cache_records, check_host_sharding, deterministic, int_seed, local_batch_size,
                                   normalize, shard_sizes, shuffle_buffer)

_LOG = logging.getLogger(__name__)
# Seed streams folded into the user's seed (as in pipeline.py), and into each clip's seed.
_SHUFFLE_STREAM, _EXAMPLE_STREAM = 0, 1
_START, _SCALE, _Y, _X, _FLIP = range(5)


def even_offsets(delta: int, n: int) -> list[int]:
  """n offsets in [0, delta]: [delta // 2] for n == 1, else delta j // (n - 1), j = 0..n-1 (first to last)."""
  return [delta // 2] if n == 1 else [delta * j // (n - 1) for j in range(n)]


def _tf_even_offsets(delta: tf.Tensor, n: int) -> tf.Tensor:
  """`even_offsets` with a scalar int32 tensor delta -> int32 [n]."""
  if n == 1:
    return tf.reshape(delta // 2, [1])
  return delta * tf.range(n) // (n - 1)


def _frame_indices(starts: tf.Tensor, num_video_frames: tf.Tensor, num_frames: int, stride: int) -> tf.Tensor:
  """starts int32 [...] -> [..., T]: min(start + t stride, V - 1) (short videos repeat their last frame)."""
  return tf.minimum(starts[..., None] + stride * tf.range(num_frames), num_video_frames - 1)


def _check_args(num_frames, frame_stride, image_size) -> None:
  for what, value in (("num_frames", num_frames), ("frame_stride", frame_stride), ("image_size", image_size)):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"{what} {value!r} must be a positive int")


def video_builder(name: str, split: str, data_dir: str, label_key: str,
                   flow: bool = False) -> tfds.core.DatasetBuilder:
  """The prepared builder; ValueError naming the problem unless it has a `video` and a ClassLabel `label_key`
  (and with `flow`, a uint8 'flow' feature [V-1,H,W,2] and a `flow_bound` in its builder config)."""
  builder = check_prepared(name, data_dir)
  features = builder.info.features
  video = features["video"] if "video" in features else None
  if not (isinstance(video, tfds.features.Sequence) and isinstance(video.feature, tfds.features.Image)):
    raise ValueError(
        f"dataset {name} has no 'video' feature of image frames (features: {', '.join(features)}; "
        f"'video': {video})")
  if not isinstance(features[label_key] if label_key in features else None, tfds.features.ClassLabel):
    raise ValueError(f"label_key {label_key!r} is not a ClassLabel feature of {name} "
                     f"(features: {', '.join(features)})")
  if flow:
    field = features["flow"] if "flow" in features else None
    if not (isinstance(field, tfds.features.Tensor) and field.dtype == np.uint8 and len(field.shape) == 4
            and field.shape[-1] == 2):
      raise ValueError(f"flow=True, but dataset {name} has no uint8 'flow' feature [V-1,H,W,2] (features: "
                       f"{', '.join(features)}; 'flow': {field})")
    if not getattr(builder.builder_config, "flow_bound", None):
      raise ValueError(f"dataset {name}'s builder config has no flow_bound to dequantise its flow with")
  try:
    builder.info.splits[split]  # raises for an unknown split or a bad slice
  except (KeyError, ValueError) as e:
    raise ValueError(f"split {split!r} is not a split of {name} (splits: {', '.join(builder.info.splits)})") from e
  return builder


def _read_videos(builder: tfds.core.DatasetBuilder, split, label_key: str, flow: bool = False) -> tf.data.Dataset:
  """The split in file order, {'video': encoded frames [V] (string), 'label': int64, 'key': tfds id (string)},
  and with `flow` 'flow': uint8 [V-1,H,W,2]."""
  ds = builder.as_dataset(split=split, shuffle_files=False, decoders={"video": tfds.decode.SkipDecoding()},
                          read_config=tfds.ReadConfig(add_tfds_id=True))
  keys = ("video", "flow") if flow else ("video",)
  return ds.map(lambda ex: {**{k: ex[k] for k in keys}, "label": ex[label_key], "key": ex["tfds_id"]})


def _decode_frames(builder: tfds.core.DatasetBuilder, encoded: tf.Tensor) -> tf.Tensor:
  """Encoded frames [N] -> float32 [N,H,W,C] in [0, 255]."""
  image = builder.info.features["video"].feature
  frames = tf.map_fn(image.decode_example, encoded,
                     fn_output_signature=tf.TensorSpec(image.shape, image.tf_dtype))  # [N,H,W,C]
  return tf.cast(frames, tf.float32)


def _resize(frames: tf.Tensor, size: int) -> tf.Tensor:
  """[N,h,w,C] -> [N,S,S,C] (bilinear, antialiased)."""
  return tf.image.resize(frames, (size, size), method="bilinear", antialias=True)


def _clip_flow(quantized: tf.Tensor, indices: tf.Tensor, bound: float) -> tf.Tensor:
  """Stored fields uint8 [V-1,H,W,2] and clip frame indices int32 [...,T] -> float32 [...,T-1,H,W,2] pixels.

  Field t is stored field i_t (from frame i_t to i_t + 1), zero where i_{t+1} == i_t (padding).
  """
  first, following = indices[..., :-1], indices[..., 1:]  # [...,T-1]
  # One zero field appended, so that a one-frame video (no stored field) gathers something; it is masked below.
  quantized = tf.pad(quantized, [[0, 1], [0, 0], [0, 0], [0, 0]])  # [V,H,W,2]
  fields = tf.gather(quantized, tf.minimum(first, tf.shape(quantized)[0] - 1))  # [...,T-1,H,W,2]
  fields = tf.cast(fields, tf.float32) * (2.0 * bound / 255.0) - bound  # flow.dequantize_flow
  moving = tf.cast(following > first, tf.float32)[..., None, None, None]
  return fields * moving


def _crop_flow(fields: tf.Tensor, y0, x0, side, size: int) -> tf.Tensor:
  """[N,H,W,2] pixels -> the side x side crop at (y0, x0) resized to [N,S,S,2], vectors scaled by S / side."""
  crop = fields[:, y0:y0 + side, x0:x0 + side]
  return _resize(crop, size) * (size / tf.cast(side, tf.float32))


def _stack_flow(fields: tf.Tensor) -> tf.Tensor:
  """[...,T-1,S,S,2] -> [...,S,S,2(T-1)] (x_0, y_0, x_1, y_1, ...), as flow.stack_flow."""
  rank = len(fields.shape)
  perm = list(range(rank - 4)) + [rank - 3, rank - 2, rank - 4, rank - 1]
  moved = tf.transpose(fields, perm)  # [...,S,S,T-1,2]
  return tf.reshape(moved, tf.concat([tf.shape(moved)[:-2], [-1]], 0))


def _decode_or_skip(ds: tf.data.Dataset, preprocess, skipped: list, limit: int) -> tf.data.Dataset:
  """Elements (key, *args) -> preprocess(*args), dropping (and reporting) those where preprocess fails.

  Each element runs in its own one-element dataset with `ignore_errors`, followed by a zero placeholder flagged
  as failed; `take(1)` keeps the result or, on failure, the placeholder. Placeholders are then filtered out and
  reported: a warning with the record's key and the running count, and the key appended to `skipped`. After
  `limit` failures in a row the iterator raises instead (an unreadable dataset would otherwise skip forever).
  """
  def report(key, failures_in_a_row):
    skipped.append(key.numpy().decode())
    _LOG.warning("skipped undecodable video record %s (%d skipped so far)", skipped[-1], len(skipped))
    if failures_in_a_row >= limit:
      raise ValueError(f"{int(failures_in_a_row)} video records in a row could not be decoded, the last "
                       f"{skipped[-1]}: is the dataset readable?")
    return False

  def attempt(key, *args):
    result = tf.data.Dataset.from_tensors(args).map(preprocess).ignore_errors()
    placeholder = tf.nest.map_structure(lambda s: tf.zeros(s.shape, s.dtype), result.element_spec)
    tagged = result.map(lambda out: (True, key, out))
    return tagged.concatenate(tf.data.Dataset.from_tensors((False, key, placeholder))).take(1)

  def count(failures_in_a_row, element):
    failures_in_a_row = tf.where(element[0], tf.constant(0, tf.int64), failures_in_a_row + 1)
    return failures_in_a_row, (*element, failures_in_a_row)

  def keep(ok, key, out, failures_in_a_row):
    del out
    return tf.cond(ok, lambda: tf.constant(True),
                   lambda: tf.py_function(report, [key, failures_in_a_row], tf.bool))

  ds = ds.interleave(attempt, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.scan(tf.constant(0, tf.int64), count)
  return ds.filter(keep).map(lambda ok, key, out, failures_in_a_row: out)


def make_clip_train_iterator(
    name: str, split: str, data_dir: str, *, global_batch_size: int, num_frames: int, frame_stride: int,
    image_size: int, seed: int, process_index: int, process_count: int, start_step: int = 0, flip: bool = True,
    scale_range: tuple[float, float] = (0.8, 1.0), label_key: str = "label", stop_step: int | None = None,
    host_sharding: str = "global", shuffle_buffer_size: int | None = None, cache: bool | str = "auto",
    skipped: list | None = None, flow: bool = False,
) -> Iterator[dict[str, np.ndarray]]:
  """Shuffled, augmented clips for this host, batches `start_step` to `stop_step` (None: endless).

  Yields {'video': float32 [B,T,S,S,C] in [-1, 1], 'label': int32 [B]} (T = num_frames, S = image_size,
  and with `flow` 'flow' float32 [B,S,S,2(T-1)] (module docstring);
  B = global_batch_size / process_count); the clip sampling, padding rule, crop and flip are in the module
  docstring. `host_sharding` 'global' (the hosts' batches concatenated are the 1-process batch) or 'split' (host
  p streams its own `tfds.even_splits` shard). Same (seed, step, process_index, process_count) -> same batch,
  whatever `start_step` the iterator started at (with no skipped records). `shuffle_buffer_size` None: an exact
  permutation of the split ('global') or shard ('split') each epoch, holding its encoded videos in memory; an
  int: a buffer of that many. `cache` "auto" (`common.cache_records`), True or False. `skipped`: if given, the
  tfds key of an undecodable record is appended to it each time it is skipped (as the pipeline reaches it: it
  reads ahead of the batches yielded).
  """
  _check_args(num_frames, frame_stride, image_size)
  check_host_sharding(host_sharding)
  lo, hi = scale_range
  if not 0 < lo <= hi <= 1:
    raise ValueError(f"scale_range {scale_range} must satisfy 0 < low <= high <= 1")
  if start_step < 0 or (stop_step is not None and stop_step < start_step):
    raise ValueError(f"start_step {start_step} and stop_step {stop_step} must satisfy 0 <= start <= stop")
  b = local_batch_size(global_batch_size, process_index, process_count)
  builder = video_builder(name, split, data_dir, label_key, flow)
  bound = builder.builder_config.flow_bound if flow else None
  is_global = host_sharding == "global"
  read_split = split if is_global else tfds.even_splits(split, process_count)[process_index]
  n = builder.info.splits[read_split].num_examples
  if n == 0:
    raise ValueError(f"split {split!r} of {name} has no examples for process {process_index} of {process_count}")
  stream_batch = global_batch_size if is_global else b  # stream positions per step, on this host's stream
  start_epoch, skip = divmod(start_step * stream_batch, n)
  buffer_size = shuffle_buffer(shuffle_buffer_size, builder, read_split)
  skipped = [] if skipped is None else skipped

  # 'global': the order and clip seeds of process 0 under 'split', the same on every host.
  root = tf.constant([seed, 0], tf.int64)
  stream_key = augment_lib.fold_in(root, 0 if is_global else process_index)
  shuffle_key = augment_lib.fold_in(stream_key, _SHUFFLE_STREAM)
  example_key = augment_lib.fold_in(stream_key, _EXAMPLE_STREAM)
  base = _read_videos(builder, read_split, label_key, flow)
  if cache_records(cache, builder, read_split):
    base = base.cache()

  def epoch_examples(epoch):
    ds = base.shuffle(buffer_size, seed=int_seed(augment_lib.fold_in(shuffle_key, epoch))).enumerate()
    ds = ds.skip(tf.where(epoch == start_epoch, tf.constant(skip, tf.int64), 0))
    return ds.map(lambda position, example: (epoch, position, example))

  def own_rows(*batch):
    """A global batch of G stream entries -> this host's rows [p B, (p + 1) B)."""
    return tf.nest.map_structure(lambda x: x[process_index * b:(process_index + 1) * b], batch)  # [G] -> [B]

  def preprocess(epoch, position, example):
    clip_seed = augment_lib.fold_in(augment_lib.fold_in(example_key, epoch), position)
    encoded = example["video"]  # [V]
    v = tf.shape(encoded)[0]
    delta = tf.maximum(v - (num_frames - 1) * frame_stride - 1, 0)
    start = tf.random.stateless_uniform([], augment_lib.fold_in(clip_seed, _START), 0, delta + 1, tf.int32)
    indices = _frame_indices(start, v, num_frames, frame_stride)  # [T]
    frames = _decode_frames(builder, tf.gather(encoded, indices))
    h, w = tf.shape(frames)[1], tf.shape(frames)[2]
    short = tf.cast(tf.minimum(h, w), tf.float32)
    area = tf.random.stateless_uniform([], augment_lib.fold_in(clip_seed, _SCALE), lo, hi)
    side = tf.clip_by_value(tf.cast(tf.round(tf.sqrt(area) * short), tf.int32), 1, tf.minimum(h, w))
    y0 = tf.random.stateless_uniform([], augment_lib.fold_in(clip_seed, _Y), 0, h - side + 1, tf.int32)
    x0 = tf.random.stateless_uniform([], augment_lib.fold_in(clip_seed, _X), 0, w - side + 1, tf.int32)
    clip = _resize(frames[:, y0:y0 + side, x0:x0 + side], image_size)  # [T,side,side,C] -> [T,S,S,C]
    if flow:
      fields = _crop_flow(_clip_flow(example["flow"], indices, bound), y0, x0, side, image_size)  # [T-1,S,S,2]
    if flip:
      mirrored = tf.random.stateless_uniform([], augment_lib.fold_in(clip_seed, _FLIP)) < 0.5
      clip = tf.where(mirrored, tf.reverse(clip, axis=[2]), clip)
      if flow:
        fields = tf.where(mirrored, tf.reverse(fields, axis=[2]) * [-1.0, 1.0], fields)
    clip = tf.ensure_shape(normalize(clip), (num_frames, image_size, image_size, frames.shape[-1]))
    out = {"video": clip, "label": tf.cast(example["label"], tf.int32)}
    if flow:
      out["flow"] = tf.ensure_shape(_stack_flow(fields / bound), (image_size, image_size, 2 * (num_frames - 1)))
    return out

  ds = tf.data.Dataset.counter(start_epoch).flat_map(epoch_examples)
  if is_global and process_count > 1:
    # Every host reads every record but decodes only its rows; the stream starts at a batch boundary.
    ds = ds.batch(global_batch_size).map(own_rows).unbatch()
  ds = ds.map(lambda epoch, position, example: (example["key"], epoch, position, example))
  ds = _decode_or_skip(ds, preprocess, skipped, limit=n).batch(b, drop_remainder=True)
  if stop_step is not None:
    # Cut after batching, so skipped records cannot shorten the run (read-ahead may touch the next epoch).
    ds = ds.take(stop_step - start_step)
  return deterministic(ds.prefetch(tf.data.AUTOTUNE)).as_numpy_iterator()


def num_clip_eval_batches(name: str, split: str, data_dir: str, *, global_batch_size: int, num_clips: int,
                          num_crops: int, process_count: int) -> int:
  """Batches every host's clip eval iterator yields: ceil(largest shard * num_clips * num_crops / B)."""
  b = local_batch_size(global_batch_size, 0, process_count)
  builder = check_prepared(name, data_dir)
  return math.ceil(max(shard_sizes(builder, split, process_count)) * num_clips * num_crops / b)


def make_clip_eval_iterator(
    name: str, split: str, data_dir: str, *, global_batch_size: int, num_frames: int, frame_stride: int,
    image_size: int, num_clips: int, num_crops: int, process_index: int, process_count: int,
    label_key: str = "label", crop_fraction: float = 1.0, skipped: list | None = None, flow: bool = False,
) -> Iterator[dict[str, np.ndarray]]:
  """Multi-view evaluation: num_clips x num_crops views of every video of this host's shard, each once.

  Yields {'video': float32 [B,T,S,S,C] in [-1, 1], 'label': int32 [B], 'mask': bool [B] (False: padding),
  'video_index': int32 [B]} (and with `flow` 'flow' float32 [B,S,S,2(T-1)], module docstring). Host p reads its
  `tfds.even_splits` shard in file order and numbers its videos from the total size of shards 0..p-1 (so indices are unique across hosts: 0..N-1 for a plain split); the views
  of a video follow each other, clip-major: view j num_crops + k is window j (start even_offsets(delta,
  num_clips)[j]) and crop k (see the module docstring). Every host yields `num_clip_eval_batches(...)` batches:
  padding views (zero video, label 0, video_index -1, mask False) fill the rest. Average the views' softmax
  scores per video with `aggregate_views`. `skipped`: as in `make_clip_train_iterator`.
  """
  _check_args(num_frames, frame_stride, image_size)
  for what, value in (("num_clips", num_clips), ("num_crops", num_crops)):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"{what} {value!r} must be a positive int")
  if not 0 < crop_fraction <= 1:
    raise ValueError(f"crop_fraction {crop_fraction} is outside (0, 1]")
  b = local_batch_size(global_batch_size, process_index, process_count)
  builder = video_builder(name, split, data_dir, label_key, flow)
  bound = builder.builder_config.flow_bound if flow else None
  sizes = shard_sizes(builder, split, process_count)
  num_batches = math.ceil(max(sizes) * num_clips * num_crops / b)
  num_views = num_clips * num_crops
  skipped = [] if skipped is None else skipped

  def views(video_index, example):
    frames = _decode_frames(builder, example["video"])  # [V,H,W,C]
    v, h, w = tf.shape(frames)[0], tf.shape(frames)[1], tf.shape(frames)[2]
    delta = tf.maximum(v - (num_frames - 1) * frame_stride - 1, 0)
    indices = _frame_indices(_tf_even_offsets(delta, num_clips), v, num_frames, frame_stride)  # [num_clips,T]
    clips = tf.gather(frames, indices)  # [num_clips,T,H,W,C]
    side = tf.maximum(tf.cast(tf.round(crop_fraction * tf.cast(tf.minimum(h, w), tf.float32)), tf.int32), 1)
    along = _tf_even_offsets(tf.maximum(h, w) - side, num_crops)  # [num_crops] on the longer side
    wide = w >= h
    if flow:
      clip_fields = _clip_flow(example["flow"], indices, bound)  # [num_clips,T-1,H,W,2]
      clip_fields = tf.reshape(clip_fields, tf.concat([[num_clips * (num_frames - 1)], tf.shape(frames)[1:3], [2]], 0))
    crops, flow_crops = [], []
    for k in range(num_crops):
      y0 = tf.where(wide, (h - side) // 2, along[k])
      x0 = tf.where(wide, along[k], (w - side) // 2)
      crops.append(clips[:, :, y0:y0 + side, x0:x0 + side])  # [num_clips,T,side,side,C]
      if flow:
        flow_crops.append(tf.reshape(_crop_flow(clip_fields, y0, x0, side, image_size),
                                     [num_clips, num_frames - 1, image_size, image_size, 2]))
    crops = tf.stack(crops, axis=1)  # [num_clips,num_crops,T,side,side,C]
    c = frames.shape[-1]
    flat = tf.reshape(crops, [num_views * num_frames, side, side, c])  # [num_views T,side,side,C]
    out = tf.reshape(_resize(flat, image_size), [num_views, num_frames, image_size, image_size, c])
    result = {"video": normalize(out),
              "label": tf.fill([num_views], tf.cast(example["label"], tf.int32)),
              "mask": tf.ones([num_views], tf.bool),
              "video_index": tf.fill([num_views], tf.cast(video_index, tf.int32))}
    if flow:  # [num_clips,num_crops,T-1,S,S,2] -> [num_views,S,S,2(T-1)], views clip-major like the frames
      fields = tf.reshape(tf.stack(flow_crops, axis=1), [num_views, num_frames - 1, image_size, image_size, 2])
      result["flow"] = tf.ensure_shape(_stack_flow(fields / bound),
                                       (num_views, image_size, image_size, 2 * (num_frames - 1)))
    return result

  host_split = tfds.even_splits(split, process_count)[process_index]
  ds = _read_videos(builder, host_split, label_key, flow).enumerate(start=sum(sizes[:process_index]))
  ds = ds.map(lambda video_index, example: (example["key"], video_index, example))
  ds = _decode_or_skip(ds, views, skipped, limit=max(sizes[process_index], 1))
  ds = ds.unbatch()  # [num_views,...] per video -> views, those of a video one after the other
  spec = ds.element_spec
  padding = tf.data.Dataset.from_tensors({
      **{k: tf.zeros(spec[k].shape, spec[k].dtype) for k in spec}, "video_index": tf.constant(-1)})
  ds = ds.concatenate(padding.repeat()).take(num_batches * b).batch(b)
  return deterministic(ds.prefetch(tf.data.AUTOTUNE)).as_numpy_iterator()


def _check_views(scores: np.ndarray, video_index: np.ndarray, mask: np.ndarray) -> None:
  if scores.ndim != 2 or video_index.shape != scores.shape[:1] or mask.shape != scores.shape[:1]:
    raise ValueError(f"scores {scores.shape} must be [N,K] with video_index {video_index.shape} and mask "
                     f"{mask.shape} both [N]")


def aggregate_views(scores, video_index, mask, *, from_logits: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """Per-video scores: the mean over each video's real views of their softmax (of `scores` if from_logits).

  scores float [N,K] (logits, or probabilities with from_logits=False), video_index int [N], mask bool [N]
  (views with mask False are ignored) -> (per_video_scores float32 [V,K], videos int32 [V]): row v averages the
  views with video_index == videos[v]; videos are the distinct indices of the real views, ascending.
  """
  scores, video_index, mask = np.asarray(scores, np.float64), np.asarray(video_index), np.asarray(mask, bool)
  _check_views(scores, video_index, mask)
  scores, video_index = scores[mask], video_index[mask]
  if from_logits:
    scores = np.exp(scores - scores.max(axis=1, keepdims=True))
    scores /= scores.sum(axis=1, keepdims=True)
  videos, row = np.unique(video_index, return_inverse=True)
  sums = np.zeros((len(videos), scores.shape[1]))
  np.add.at(sums, row, scores)
  return (sums / np.bincount(row, minlength=len(videos))[:, None]).astype(np.float32), videos.astype(np.int32)


def clip_and_video_top1(logits, labels, video_index, mask) -> dict[str, float]:
  """Top-1 accuracy of the views ('clip_top1') and of the videos ('video_top1', from `aggregate_views`).

  Takes the eval iterator's outputs concatenated over batches (and hosts): logits float [N,K], labels, video_index
  and mask [N]. A video's label is its views' label (ValueError if its views disagree). NaN if no view is real.
  """
  logits, labels = np.asarray(logits), np.asarray(labels)
  video_index, mask = np.asarray(video_index), np.asarray(mask, bool)
  _check_views(logits, video_index, mask)
  if labels.shape != mask.shape:
    raise ValueError(f"labels {labels.shape} must be [N] like mask {mask.shape}")
  if not mask.any():
    return {"clip_top1": math.nan, "video_top1": math.nan}
  clip_top1 = float(np.mean(logits[mask].argmax(axis=1) == labels[mask]))
  per_video, videos = aggregate_views(logits, video_index, mask)
  video_labels = np.zeros(len(videos), labels.dtype)
  row = np.searchsorted(videos, video_index[mask])
  video_labels[row] = labels[mask]
  if np.any(video_labels[row] != labels[mask]):
    raise ValueError("the views of a video have different labels")
  return {"clip_top1": clip_top1, "video_top1": float(np.mean(per_video.argmax(axis=1) == video_labels))}

"""tf.data input pipelines for object detection (DETR's targets); they yield numpy batches and know no model.

Any prepared tfds dataset with the features of `fmnist_scenes` (and tfds coco) serves: 'image' [H,W,C] uint8,
'image_id' int, 'objects' {'bbox': [M,4] tfds (y_min, x_min, y_max, x_max) normalised, 'label': [M] ClassLabel,
optionally 'is_crowd': [M] bool (coco)}. Batches are dicts of numpy arrays:
  'image':    float32 [B,S,S,C] in [-1, 1] (pipeline.normalize), resized (bilinear, antialiased) to S x S when the
              dataset's size differs; grey images are repeated to C = 3 channels when `channels` is 3. With
              `keep_aspect_ratio` (images of varied shapes, as coco) the longer side is resized to S and the image
              padded with zeros at the bottom and right to S x S, as DETR batches images of different sizes,
  'pixel_mask': bool [B,S,S] (keep_aspect_ratio only): True on the image, False on its padding (DETR's mask),
  'boxes':    float32 [B,M,4] (cx, cy, w, h) normalised to [0, 1] by the image's own size (DETR's format; resizing
              and padding keep them), zero padding,
  'labels':   int32 [B,M] class indices, 0 on padding,
  'box_mask': bool [B,M], True on the real objects (each image's first objects, in the dataset's order),
and in evaluation 'image_id' int64 [B] (-1 on padding) and 'mask' bool [B] (False on padding images).
M = `max_objects`; an image with more objects stops the iterator with an InvalidArgumentError naming M. Crowd
objects (is_crowd) and boxes of no width or height are not targets (DETR's training filter; COCO evaluation reads
the crowd regions from the ground truth, coco_eval); images without objects stay (every query's target is "no
object").

Sharding: host p of P reads its `tfds.even_splits(split, P)[p]` shard (the image pipeline's 'split' mode), so B is
global_batch_size / P. Training: each epoch is the shard in a permutation that depends on (seed, p, epoch), epochs
follow each other without dropping examples, and `start_step=s` yields exactly what an uninterrupted iterator yields
from batch s (whole epochs skipped arithmetically, then the rest before decoding). No augmentation. Evaluation: the
shard in file order, padded with blank images to ceil(largest shard / B) batches, so each image is scored once.
"""
import math
from collections.abc import Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from pycocotools.coco import COCO

from vit_video.data import augment as augment_lib
from vit_video.data import coco_eval
from vit_video.data.builders import check_prepared
from vit_video.data.common import cache_records, deterministic, int_seed, local_batch_size, normalize, shard_sizes


def detection_builder(name: str, data_dir: str) -> tfds.core.DatasetBuilder:
  """The prepared builder of `name`; ValueError unless it has an image, an image_id and objects with bbox and label."""
  builder = check_prepared(name, data_dir)
  features = builder.info.features
  objects = features["objects"] if "objects" in features else {}
  if "image" not in features or "image_id" not in features or not {"bbox", "label"} <= set(objects.keys()):
    raise ValueError(f"dataset {name} has features {list(features)}, expected 'image', 'image_id' and 'objects' "
                     "with 'bbox' and 'label'")
  return builder


def class_names(name: str, data_dir: str) -> list[str]:
  """The names of the K object classes (the 'objects/label' ClassLabel)."""
  return list(detection_builder(name, data_dir).info.features["objects"]["label"].names)


def ground_truth(name: str, split: str, data_dir: str) -> COCO:
  """The split's annotations as an in-memory COCO ground truth (coco_eval.ground_truth), image ids the dataset's."""
  builder = detection_builder(name, data_dir)
  examples = tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False))
  return coco_eval.ground_truth(examples, class_names(name, data_dir))


def _resize(image: tf.Tensor, image_size: int, keep_aspect_ratio: bool) -> tuple[tf.Tensor, tf.Tensor | None]:
  """[H,W,C] float -> [S,S,C] normalised (and the [S,S] pixel mask with keep_aspect_ratio; else None)."""
  if not keep_aspect_ratio:
    if tuple(image.shape[:2]) != (image_size, image_size):
      image = tf.image.resize(image, (image_size, image_size), method="bilinear", antialias=True)
    return normalize(tf.ensure_shape(image, (image_size, image_size, image.shape[-1]))), None
  hw = tf.cast(tf.shape(image)[:2], tf.float32)
  new_hw = tf.maximum(tf.cast(tf.round(hw * image_size / tf.reduce_max(hw)), tf.int32), 1)  # longer side: S
  image = normalize(tf.image.resize(image, new_hw, method="bilinear", antialias=True))
  image = tf.image.pad_to_bounding_box(image, 0, 0, image_size, image_size)  # zeros below and right
  mask = tf.image.pad_to_bounding_box(tf.ones((*tf.unstack(new_hw), 1)), 0, 0, image_size, image_size)[..., 0] > 0
  return tf.ensure_shape(image, (image_size, image_size, image.shape[-1])), mask


def _preprocess(example: dict, *, image_size: int, channels: int, max_objects: int,
                keep_aspect_ratio: bool = False) -> dict:
  """A decoded tfds example -> {'image' [S,S,C], ('pixel_mask' [S,S]), 'boxes' [M,4] cxcywh, 'labels' [M],
  'box_mask' [M], 'image_id'}."""
  image = tf.cast(example["image"], tf.float32)  # [H,W,c]
  if image.shape[-1] not in (1, channels):
    raise ValueError(f"images have {image.shape[-1]} channels; cannot feed {channels}")
  if image.shape[-1] != channels:
    image = tf.repeat(image, channels, axis=-1)  # grey [H,W,1] -> [H,W,C]
  image, pixel_mask = _resize(image, image_size, keep_aspect_ratio)
  objects = example["objects"]
  bbox = tf.reshape(tf.cast(objects["bbox"], tf.float32), (-1, 4))  # [n,4] (y0, x0, y1, x1)
  labels = tf.cast(objects["label"], tf.int32)
  y0, x0, y1, x1 = tf.unstack(bbox, axis=-1)
  keep = (x1 > x0) & (y1 > y0)  # degenerate boxes are no targets
  if "is_crowd" in objects:
    keep &= ~tf.cast(objects["is_crowd"], tf.bool)
  bbox, labels = tf.boolean_mask(bbox, keep), tf.boolean_mask(labels, keep)
  y0, x0, y1, x1 = tf.unstack(bbox, axis=-1)
  boxes = tf.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], axis=-1)  # [n,4] (cx, cy, w, h)
  n = tf.shape(boxes)[0]
  with tf.control_dependencies([tf.debugging.assert_less_equal(
      n, max_objects, message=f"an image has more objects than max_objects = {max_objects}")]):
    pad = max_objects - n
  return {
      "image": image,
      **({} if pixel_mask is None else {"pixel_mask": pixel_mask}),
      "boxes": tf.ensure_shape(tf.pad(boxes, [[0, pad], [0, 0]]), (max_objects, 4)),  # [M,4]
      "labels": tf.ensure_shape(tf.pad(labels, [[0, pad]]), (max_objects,)),
      "box_mask": tf.ensure_shape(tf.sequence_mask(n, max_objects), (max_objects,)),
      "image_id": tf.cast(example["image_id"], tf.int64),
  }


def make_train_iterator(
    name: str, split: str, data_dir: str, *, global_batch_size: int, image_size: int, channels: int,
    max_objects: int, seed: int, start_step: int, process_index: int, process_count: int,
    stop_step: int | None = None, keep_aspect_ratio: bool = False, cache: bool | str = "auto",
) -> Iterator[dict[str, np.ndarray]]:
  """Shuffled batches {'image', ('pixel_mask'), 'boxes', 'labels', 'box_mask'} for this host, batches
  `start_step` to `stop_step` (None: endless); the same (seed, step, process) gives the same batch whatever step
  the iterator started at. `cache`: keep this host's encoded records in memory after the first epoch (True, False
  or "auto": when they take at most 1 GiB, common.cache_records)."""
  b = local_batch_size(global_batch_size, process_index, process_count)
  if start_step < 0 or (stop_step is not None and stop_step < start_step):
    raise ValueError(f"need 0 <= start_step <= stop_step; got {start_step}, {stop_step}")
  builder = detection_builder(name, data_dir)
  shard = tfds.even_splits(split, process_count)[process_index]
  n = builder.info.splits[shard].num_examples
  if n == 0:
    raise ValueError(f"split {split!r} has no examples for process {process_index} of {process_count}")
  start_epoch, skip = divmod(start_step * b, n)
  shuffle_key = augment_lib.fold_in(tf.constant([seed, 0], tf.int64), process_index)
  base = builder.as_dataset(split=shard, shuffle_files=False, decoders={"image": tfds.decode.SkipDecoding()})
  if cache_records(cache, builder, shard):
    base = base.cache()
  image_feature = builder.info.features["image"]

  def decode(example):
    return {**example, "image": image_feature.decode_example(example["image"])}

  def epoch_examples(epoch):
    ds = base.shuffle(n, seed=int_seed(augment_lib.fold_in(shuffle_key, epoch)))
    return ds.skip(tf.where(epoch == start_epoch, tf.constant(skip, tf.int64), 0))

  ds = tf.data.Dataset.counter(start_epoch).flat_map(epoch_examples)
  if stop_step is not None:
    ds = ds.take((stop_step - start_step) * b)
  ds = ds.map(lambda ex: _preprocess(decode(ex), image_size=image_size, channels=channels, max_objects=max_objects,
                                     keep_aspect_ratio=keep_aspect_ratio), num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.map(lambda ex: {k: v for k, v in ex.items() if k != "image_id"})
  return deterministic(ds.batch(b, drop_remainder=True).prefetch(tf.data.AUTOTUNE)).as_numpy_iterator()


def make_eval_iterator(
    name: str, split: str, data_dir: str, *, global_batch_size: int, image_size: int, channels: int,
    max_objects: int, process_index: int, process_count: int, keep_aspect_ratio: bool = False,
) -> Iterator[dict[str, np.ndarray]]:
  """One pass over this host's shard in file order: batches {'image', ('pixel_mask'), 'boxes', 'labels',
  'box_mask', 'image_id', 'mask'}, padded (blank image, all pixels real, no object, image_id -1, mask False) to
  ceil(largest shard / B) full batches."""
  b = local_batch_size(global_batch_size, process_index, process_count)
  builder = detection_builder(name, data_dir)
  num_batches = math.ceil(max(shard_sizes(builder, split, process_count)) / b)
  shard = tfds.even_splits(split, process_count)[process_index]
  ds = builder.as_dataset(split=shard, shuffle_files=False).map(
      lambda ex: {**_preprocess(ex, image_size=image_size, channels=channels, max_objects=max_objects,
                                keep_aspect_ratio=keep_aspect_ratio),
                  "mask": tf.constant(True)}, num_parallel_calls=tf.data.AUTOTUNE)
  padding = tf.data.Dataset.from_tensors({
      "image": tf.zeros((image_size, image_size, channels)),
      **({"pixel_mask": tf.ones((image_size, image_size), tf.bool)} if keep_aspect_ratio else {}),
      "boxes": tf.zeros((max_objects, 4)),
      "labels": tf.zeros((max_objects,), tf.int32), "box_mask": tf.zeros((max_objects,), tf.bool),
      "image_id": tf.constant(-1, tf.int64), "mask": tf.constant(False)})
  ds = ds.concatenate(padding.repeat()).take(num_batches * b).batch(b)
  return deterministic(ds.prefetch(tf.data.AUTOTUNE)).as_numpy_iterator()

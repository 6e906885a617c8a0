"""tf.data input pipelines for image classification; they yield numpy batches and know no model.

Datasets are read from a prepared tfds data_dir and never downloaded (`check_prepared` fails at once with the
`python -m vit_video.data.prepare ...` command to run). Batches are dicts of numpy arrays:
  'image': float32 [B,H,W,C], scaled to [-1, 1] by x / 127.5 - 1 (`normalize`),
  'label': int32 [B], or float32 soft labels [B,K] summing to one when mixup/cutmix are on,
  'mask':  bool [B] (eval only): True for real examples, False for padding.
B is the host's share of the batch, global_batch_size / process_count; the global batch is the concatenation of
the hosts' batches in process order.

Train sharding, `make_train_iterator(host_sharding=...)`; with one process both modes give the same batches:
  'global' (default): the global batches are the same whatever the number of processes, so a run on P hosts
    trains on exactly the global batches of a 1-process run (mixup/cutmix aside). There is one stream: the
    whole split in a permutation per epoch that depends only on (seed, epoch), epochs following each other;
    global batch s is stream positions [s G, (s + 1) G) (G = global_batch_size) and host p yields its rows
    [p B, (p + 1) B). Every host reads every record but keeps only its rows before decoding, and each example's
    augmentation seed derives from (seed, epoch, position in the epoch), so an example is augmented alike for
    any P. Mixup/cutmix mix within a host's B rows with seeds from (seed, step, process_index): that part
    depends on P. Cost: each host reads (and when cached holds) the whole split's encoded records, P times the
    I/O of 'split'; fine for small and medium datasets, not for ImageNet-scale data on a pod.
  'split': each host reads only its contiguous shard, `tfds.even_splits(split, process_count)[process_index]`
    (disjoint, covering the split, sizes differing by at most one), and streams it alone: epochs are the shard
    in a permutation that depends on (seed, process_index, epoch), batch s holds the host's stream positions
    [s B, (s + 1) B), augmentation seeds derive from (seed, process_index, epoch, position). 1/P of the I/O,
    but the global batches (and so the training curve) depend on the process count.
In both modes batches run across epoch boundaries (nothing is dropped) and `start_step=s` reproduces exactly
the batches an uninterrupted run sees from step s: whole epochs are skipped arithmetically, then the first
s G mod n ('global', n: examples in the split) or s B mod n ('split', n: in the shard) positions of the
epoch, before decoding.

Memory (`common.cache_records`, `common.shuffle_buffer`): `cache="auto"` keeps the encoded records this host
reads (the split, or its shard under 'split') in memory after the first epoch only when tfds's recorded size of
them is at most 1 GiB; `shuffle_buffer_size` None (an exact permutation per epoch) holds all of them in the
shuffle buffer, and an int that many.

Eval sharding: each host reads its `tfds.even_splits` shard in file order, padded to a common number of batches.
"""
import math
from typing import Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vit_video.data import augment as augment_lib
from vit_video.data.builders import check_prepared
from vit_video.data.common import HOST_SHARDINGS  # noqa: F401  (the values of host_sharding)
from vit_video.data.common import (cache_records, check_host_sharding, deterministic, int_seed, local_batch_size,
                                   normalize, shard_sizes, shuffle_buffer)

# Seed streams folded into the user's seed, one per use.
_SHUFFLE_STREAM, _EXAMPLE_STREAM, _BATCH_STREAM = 0, 1, 2


def _as_hw(image_size: int | tuple[int, int]) -> tuple[int, int]:
  """7 -> (7, 7); (5, 6) -> (5, 6)."""
  hw = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
  if len(hw) != 2 or min(hw) < 1:
    raise ValueError(f"image_size {image_size} must be a positive int or (height, width)")
  return hw


def _read_encoded(builder: tfds.core.DatasetBuilder, split) -> tf.data.Dataset:
  """The split in file order, {'image': encoded bytes, 'label': int64} (decoding is deferred)."""
  features = builder.info.features
  if "image" not in features or "label" not in features:
    raise ValueError(f"dataset {builder.name} has features {list(features)}, expected 'image' and 'label'")
  ds = builder.as_dataset(split=split, shuffle_files=False, decoders={"image": tfds.decode.SkipDecoding()})
  return ds.map(lambda ex: {"image": ex["image"], "label": ex["label"]})


def _decode_resize(builder: tfds.core.DatasetBuilder, encoded: tf.Tensor, hw: tuple[int, int]) -> tf.Tensor:
  """Encoded image -> float32 [H,W,C] in [0, 255], resized (bilinear, antialiased) only if its size differs."""
  feature = builder.info.features["image"]
  image = tf.cast(feature.decode_example(encoded), tf.float32)
  if tuple(feature.shape[:2]) != hw:
    image = tf.image.resize(image, hw, method="bilinear", antialias=True)
  return tf.ensure_shape(image, (*hw, feature.shape[2]))


def make_train_iterator(
    name: str, split: str, data_dir: str, *, global_batch_size: int, image_size: int | tuple[int, int],
    seed: int, start_step: int, process_index: int, process_count: int, augment: augment_lib.AugmentConfig,
    num_classes: int, shuffle_buffer_size: int | None = None, cache: bool | str = "auto",
    host_sharding: str = "global", stop_step: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
  """Shuffled, augmented batches for this host, from batch `start_step` to `stop_step` (None: endless).

  A training loop should pass its last step as `stop_step`: the pipeline then stops reading exactly there,
  instead of shuffling and decoding the next epoch in the background while the process tries to exit.

  Yields {'image': float32 [B,H,W,C] in [-1, 1], 'label': int32 [B]} with B = global_batch_size /
  process_count, or 'label': float32 [B,K] (rows sum to one) when `augment` has mixup or cutmix on.
  `host_sharding` (see the module docstring):
    'global': host p yields rows [p B, (p + 1) B) of each batch of one stream over the whole split, so the hosts'
      batches concatenated in process order are the 1-process batch, whatever process_count (mixing aside).
    'split': host p streams only its own `tfds.even_splits` shard (reads 1/P of the records, but the global
      batches depend on process_count).
  Same (seed, step, process_index, process_count) -> same batch, whatever `start_step` the iterator started at.
  `shuffle_buffer_size` None shuffles the whole split ('global') or shard ('split') each epoch (an exact
  permutation; holds its encoded images in memory); an int shuffles locally in a buffer of that many. `cache`
  "auto" (`common.cache_records`), True or False: keep the encoded images read in memory after the first epoch.
  """
  check_host_sharding(host_sharding)
  b = local_batch_size(global_batch_size, process_index, process_count)
  hw = _as_hw(image_size)
  if start_step < 0:
    raise ValueError(f"start_step {start_step} is negative")
  builder = check_prepared(name, data_dir)
  dataset_classes = builder.info.features["label"].num_classes
  if num_classes != dataset_classes:
    raise ValueError(f"num_classes {num_classes} differs from the {dataset_classes} classes of {name}")
  is_global = host_sharding == "global"
  read_split = split if is_global else tfds.even_splits(split, process_count)[process_index]
  n = builder.info.splits[read_split].num_examples
  if n == 0:
    raise ValueError(f"split {split!r} has no examples for process {process_index} of {process_count}")
  stream_batch = global_batch_size if is_global else b  # stream positions per step, on this host's stream
  start_epoch, skip = divmod(start_step * stream_batch, n)
  buffer_size = shuffle_buffer(shuffle_buffer_size, builder, read_split)

  root = tf.constant([seed, 0], tf.int64)
  host_key = augment_lib.fold_in(root, process_index)
  # 'global': order and per-example seeds are those of process 0 under 'split', the same on every host (and so
  # with one process both modes give the same batches); mixing stays per host in both modes.
  stream_key = augment_lib.fold_in(root, 0) if is_global else host_key
  shuffle_key = augment_lib.fold_in(stream_key, _SHUFFLE_STREAM)
  example_key = augment_lib.fold_in(stream_key, _EXAMPLE_STREAM)
  batch_key = augment_lib.fold_in(host_key, _BATCH_STREAM)

  base = _read_encoded(builder, read_split)
  if cache_records(cache, builder, read_split):
    base = base.cache()

  def epoch_examples(epoch):
    ds = base.shuffle(buffer_size, seed=int_seed(augment_lib.fold_in(shuffle_key, epoch)))
    ds = ds.enumerate()  # (position in the epoch, example)
    ds = ds.skip(tf.where(epoch == start_epoch, tf.constant(skip, tf.int64), 0))
    return ds.map(lambda position, example: (epoch, position, example))

  def own_rows(*batch):
    """'global': a global batch of G stream entries (epoch, position, example) -> this host's rows [p B, (p+1) B)."""
    return tf.nest.map_structure(lambda x: x[process_index * b:(process_index + 1) * b], batch)  # [G] -> [B]

  def preprocess(epoch, position, example):
    image = _decode_resize(builder, example["image"], hw)
    seed_ = augment_lib.fold_in(augment_lib.fold_in(example_key, epoch), position)
    image = normalize(augment_lib.augment_image(image, augment, seed_))
    label = tf.cast(example["label"], tf.int32)
    if augment.mixes:
      label = tf.one_hot(label, num_classes, dtype=tf.float32)  # [K]
    return {"image": image, "label": label}

  def mix(step, batch):
    images, labels = augment_lib.mix_batch(
        batch["image"], batch["label"], augment, augment_lib.fold_in(batch_key, step))
    return {"image": images, "label": labels}

  ds = tf.data.Dataset.counter(start_epoch).flat_map(epoch_examples)
  if stop_step is not None:
    if stop_step < start_step:
      raise ValueError(f"stop_step {stop_step} is before start_step {start_step}")
    # Cut the stream of examples (global batches of G under 'global' sharding, else this host's b) at the
    # source, so nothing upstream (the next epoch's shuffle) starts after the last batch.
    ds = ds.take((stop_step - start_step) * (global_batch_size if is_global and process_count > 1 else b))
  if is_global and process_count > 1:
    # Before decoding: every host reads every record but decodes only its rows. The stream starts at a batch
    # boundary (stream position start_step * G), so its batches of G are the global batches; batching the
    # encoded records and slicing is about 7x faster than a per-record `filter` on the position.
    ds = ds.batch(global_batch_size).map(own_rows).unbatch()
  ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(b, drop_remainder=True)
  if augment.mixes:
    # Mixing commutes with `normalize` (an affine map; the mixing weights sum to one).
    ds = ds.enumerate(start=start_step).map(mix, num_parallel_calls=tf.data.AUTOTUNE)
  return deterministic(ds.prefetch(tf.data.AUTOTUNE)).as_numpy_iterator()


def num_eval_batches(name: str, split: str, data_dir: str, *, global_batch_size: int, process_count: int) -> int:
  """Batches every host's eval iterator yields: ceil(largest shard / (global_batch_size / process_count))."""
  b = local_batch_size(global_batch_size, 0, process_count)
  return math.ceil(max(shard_sizes(check_prepared(name, data_dir), split, process_count)) / b)


def make_eval_iterator(
    name: str, split: str, data_dir: str, *, global_batch_size: int, image_size: int | tuple[int, int],
    process_index: int, process_count: int,
) -> Iterator[dict[str, np.ndarray]]:
  """One pass over this host's shard, in file order, padded so that every example counts exactly once.

  Yields {'image': float32 [B,H,W,C] in [-1, 1], 'label': int32 [B], 'mask': bool [B]}, B = global_batch_size
  / process_count. Every host yields the same number of batches, `num_eval_batches(...)` = ceil(largest
  shard / B) (so collective eval steps line up): the shard is followed by padding examples (zero image,
  label 0, mask False) up to that many full batches. Weight per-example metrics by 'mask'.
  """
  b = local_batch_size(global_batch_size, process_index, process_count)
  hw = _as_hw(image_size)
  builder = check_prepared(name, data_dir)
  num_batches = math.ceil(max(shard_sizes(builder, split, process_count)) / b)
  host_split = tfds.even_splits(split, process_count)[process_index]

  def preprocess(example):
    image = normalize(_decode_resize(builder, example["image"], hw))
    return {"image": image, "label": tf.cast(example["label"], tf.int32), "mask": tf.constant(True)}

  ds = _read_encoded(builder, host_split).map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  padding = tf.data.Dataset.from_tensors(
      {"image": tf.zeros(ds.element_spec["image"].shape), "label": tf.constant(0), "mask": tf.constant(False)})
  ds = ds.concatenate(padding.repeat()).take(num_batches * b).batch(b)
  return deterministic(ds.prefetch(tf.data.AUTOTUNE)).as_numpy_iterator()


def make_array_iterator(
    images: np.ndarray, labels: np.ndarray, *, global_batch_size: int, process_index: int, process_count: int,
) -> Iterator[dict[str, np.ndarray]]:
  """`make_eval_iterator` for in-memory arrays (numpy only): same sharding, normalisation, padding and mask.

  images: uint8 [N,H,W,C] (used at their size), labels: int [N]. Host p gets the contiguous shard
  tfds.even_splits would give it (the first N mod P hosts hold one extra example).
  """
  b = local_batch_size(global_batch_size, process_index, process_count)
  images, labels = np.asarray(images), np.asarray(labels)
  if images.dtype != np.uint8 or images.ndim != 4:
    raise ValueError(f"images must be uint8 [N,H,W,C], got {images.dtype} of shape {images.shape}")
  if labels.shape != images.shape[:1]:
    raise ValueError(f"labels of shape {labels.shape} do not match {len(images)} images")
  n, p = len(images), process_count
  start = process_index * (n // p) + min(process_index, n % p)
  stop = start + n // p + (process_index < n % p)
  return _array_batches(images[start:stop], labels[start:stop], b, math.ceil(math.ceil(n / p) / b))


def _array_batches(shard_images: np.ndarray, shard_labels: np.ndarray, b: int,
                   num_batches: int) -> Iterator[dict[str, np.ndarray]]:
  for i in range(num_batches):
    image = np.zeros((b, *shard_images.shape[1:]), np.float32)  # [B,H,W,C], padding stays 0
    label = np.zeros((b,), np.int32)
    mask = np.zeros((b,), bool)
    real = len(shard_images[i * b:(i + 1) * b])
    image[:real] = normalize(shard_images[i * b:(i + 1) * b].astype(np.float32))
    label[:real] = shard_labels[i * b:(i + 1) * b]
    mask[:real] = True
    yield {"image": image, "label": label, "mask": mask}

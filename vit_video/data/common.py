"""What the image and clip pipelines share: pixel scaling, host shards of a split, the host sharding modes, the
memory rule (what to cache, when an exact shuffle is too big), and tf.data settings."""
import logging
import os

import tensorflow as tf
import tensorflow_datasets as tfds

_LOG = logging.getLogger(__name__)
# Values of the train iterators' `host_sharding` (pipeline.py's module docstring says what each does).
HOST_SHARDINGS = ("global", "split")
# The records a host may hold in memory: cache="auto" caches up to this many bytes of encoded records, and an
# exact shuffle (shuffle_buffer_size None) of more logs a warning.
MEMORY_LIMIT_BYTES = 2**30  # 1 GiB


def normalize(image):
  """Maps pixel values in [0, 255] to [-1, 1]: x / 127.5 - 1 (works on tf and numpy arrays)."""
  return image / 127.5 - 1.0


def local_batch_size(global_batch_size: int, process_index: int, process_count: int) -> int:
  """This host's rows of a global batch, global_batch_size / process_count; ValueError unless it divides."""
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} is outside [0, process_count={process_count})")
  if global_batch_size < 1 or global_batch_size % process_count:
    raise ValueError(
        f"global batch size {global_batch_size} is not a positive multiple of process count {process_count}")
  return global_batch_size // process_count


def shard_sizes(builder: tfds.core.DatasetBuilder, split: str, process_count: int) -> list[int]:
  """Examples in each host's shard, `tfds.even_splits(split, process_count)` (each `+` part split evenly)."""
  return [builder.info.splits[s].num_examples for s in tfds.even_splits(split, process_count)]


def check_host_sharding(host_sharding: str) -> None:
  if host_sharding not in HOST_SHARDINGS:
    raise ValueError(f"host_sharding {host_sharding!r} is not one of {', '.join(map(repr, HOST_SHARDINGS))}")


def check_cache(cache: bool | str) -> None:
  if not (isinstance(cache, bool) or cache == "auto"):
    raise ValueError(f"cache {cache!r} is not one of 'auto', True, False")


def split_bytes(builder: tfds.core.DatasetBuilder, split) -> int:
  """Bytes of `split`'s records on disk, as tfds recorded them when preparing the dataset.

  tfds records bytes per named split only; a slice, a `tfds.even_splits` shard or a sum of splits counts, for
  each file it reads, the bytes per example of that file's split times the examples it reads there.
  """
  info = builder.info.splits[split]
  if info.num_bytes:
    return int(info.num_bytes)
  per_example = {file: s.num_bytes / max(s.num_examples, 1) for s in builder.info.splits.values()
                 for file in s.filenames}
  return round(sum(per_example[os.path.basename(f.filename)] * f.take for f in info.file_instructions))


def cache_records(cache: bool | str, builder: tfds.core.DatasetBuilder, split,
                  limit_bytes: int = MEMORY_LIMIT_BYTES) -> bool:
  """Whether a train pipeline keeps the encoded records it reads, `split`, in memory after the first epoch.

  True / False: as given. "auto": only when `split_bytes(builder, split)` <= `limit_bytes` (1 GiB), i.e. when
  this host's share fits: the split this host reads is the whole split under 'global' host sharding, its
  `tfds.even_splits` shard under 'split'. So the embedded datasets are cached (the train splits of Fashion-MNIST
  and moving_fmnist_actions are some 30 and 50 MB), and ImageNet or Kinetics shards are read again each epoch.
  Bytes are on disk: the cache holds more where tfds decodes a feature (moving_fmnist_actions' zlib-compressed
  flow, 30 KB a clip in memory).
  """
  check_cache(cache)
  if cache == "auto":
    return split_bytes(builder, split) <= limit_bytes
  return cache


def shuffle_buffer(shuffle_buffer_size: int | None, builder: tfds.core.DatasetBuilder, split,
                   limit_bytes: int = MEMORY_LIMIT_BYTES) -> int:
  """The `Dataset.shuffle` buffer for `split`: `shuffle_buffer_size`, or None for all of its records (an exact
  permutation, which holds the split's encoded records in memory; a warning says so above `limit_bytes`)."""
  if shuffle_buffer_size is None:
    size = split_bytes(builder, split)
    if size > limit_bytes:
      _LOG.warning("shuffle_buffer_size None shuffles %s exactly, holding its %.1f GiB of encoded records in "
                   "memory on each host; set a buffer size to bound it", split, size / 2**30)
    return builder.info.splits[split].num_examples
  if isinstance(shuffle_buffer_size, bool) or not isinstance(shuffle_buffer_size, int) or shuffle_buffer_size < 1:
    raise ValueError(f"shuffle_buffer_size {shuffle_buffer_size!r} must be None (exact) or a positive int")
  return shuffle_buffer_size


def int_seed(seed: tf.Tensor) -> tf.Tensor:
  """A scalar int64 (for `Dataset.shuffle`) drawn from a stateless seed [2]."""
  return tf.random.stateless_uniform([], seed=seed, minval=None, maxval=None, dtype=tf.int64)


def deterministic(ds: tf.data.Dataset) -> tf.data.Dataset:
  """`ds` with deterministic element order (parallel maps keep their input order)."""
  options = tf.data.Options()
  options.deterministic = True
  return ds.with_options(options)

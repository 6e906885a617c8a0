"""What the image and clip pipelines share: pixel scaling, host shards of a split, and tf.data settings."""
import tensorflow as tf
import tensorflow_datasets as tfds


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


def int_seed(seed: tf.Tensor) -> tf.Tensor:
  """A scalar int64 (for `Dataset.shuffle`) drawn from a stateless seed [2]."""
  return tf.random.stateless_uniform([], seed=seed, minval=None, maxval=None, dtype=tf.int64)


def deterministic(ds: tf.data.Dataset) -> tf.data.Dataset:
  """`ds` with deterministic element order (parallel maps keep their input order)."""
  options = tf.data.Options()
  options.deterministic = True
  return ds.with_options(options)

"""`make_iterators(config)`: a run's input, images or clips, from its config (the one place that tells them apart).

    iterators = make_iterators(config)            # checks the dataset is prepared and the split exists
    train = iterators.train(start_step=0, stop_step=total_steps)   # this host's B = G / P rows of each step
    batches = iterators.eval(config.dataset.eval_split)            # one padded pass, every example once

`config.video.num_frames > 0` reads clips (`video_pipeline`: 'video' [B,T,S,S,C], and 'flow' with
`config.video.flow`; evaluation adds 'video_index' for per-video aggregation), otherwise images (`pipeline`:
'image' [B,S,S,C]). The host is this process (`jax.process_index()` of `jax.process_count()`). Both kinds train
with the config's `dataset.host_sharding` ('global': the hosts' rows of one stream over the whole split, the
batches of a 1-process run; 'split': each host streams its own 1/P shard), `dataset.shuffle_buffer_size` (0: an
exact permutation per epoch) and `dataset.cache` ("auto", True, False; `common.cache_records`); evaluation reads
each host's shard once, so every example (video) counts exactly once across hosts.
"""
import dataclasses
from collections.abc import Iterator

import jax
import ml_collections
import numpy as np

from vit_video.data import augment as augment_lib
from vit_video.data import builders, common, pipeline, video_pipeline

_IMAGE_AUGMENTATIONS = ("crop_padding", "flip", "randaugment_layers", "mixup_alpha", "cutmix_alpha")


def input_keys(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The model inputs the config's batches carry (beside 'label', and 'mask' in evaluation): ("image",),
  ("video",), or ("video", "flow") with `config.video.flow` (the model contract's input names)."""
  v = config.video
  if v.flow and v.num_frames < 2:
    raise ValueError(f"video.flow needs num_frames >= 2 (2(T-1) flow channels); got {v.num_frames}")
  return ("video", "flow") if v.flow else ("video",) if v.num_frames > 0 else ("image",)


@dataclasses.dataclass(frozen=True)
class Iterators:
  """A run's input: the size of its training split, and iterators over it and over any evaluation split."""
  config: ml_collections.ConfigDict
  num_train_examples: int

  @property
  def video(self) -> bool:
    return "video" in input_keys(self.config)

  def train(self, start_step: int, stop_step: int | None) -> Iterator[dict[str, np.ndarray]]:
    """Shuffled, augmented batches `start_step` to `stop_step` (None: endless), the same for any restart."""
    c, ds, v = self.config, self.config.dataset, self.config.video
    hosts = dict(process_index=jax.process_index(), process_count=jax.process_count())
    if self.video:
      return video_pipeline.make_clip_train_iterator(
          ds.name, ds.train_split, ds.data_dir, global_batch_size=c.batch_size, num_frames=v.num_frames,
          frame_stride=v.frame_stride, image_size=ds.image_size, seed=c.seed, start_step=start_step,
          flip=v.flip, scale_range=(v.min_crop_area, 1.0), label_key=v.label_key, stop_step=stop_step,
          host_sharding=ds.host_sharding, shuffle_buffer_size=ds.shuffle_buffer_size or None, cache=ds.cache,
          flow=v.flow, **hosts)
    return pipeline.make_train_iterator(
        ds.name, ds.train_split, ds.data_dir, global_batch_size=c.batch_size, image_size=ds.image_size,
        seed=c.seed, start_step=start_step, augment=augment_lib.AugmentConfig(**c.augment),
        num_classes=c.num_classes, shuffle_buffer_size=ds.shuffle_buffer_size or None, cache=ds.cache,
        host_sharding=ds.host_sharding, stop_step=stop_step, **hosts)

  def eval(self, split: str) -> Iterator[dict[str, np.ndarray]]:
    """One pass over `split`, padded ('mask'); clips: eval_num_clips x eval_num_crops views per video."""
    c, ds, v = self.config, self.config.dataset, self.config.video
    hosts = dict(process_index=jax.process_index(), process_count=jax.process_count())
    if self.video:
      return video_pipeline.make_clip_eval_iterator(
          ds.name, split, ds.data_dir, global_batch_size=c.batch_size, num_frames=v.num_frames,
          frame_stride=v.frame_stride, image_size=ds.image_size, num_clips=v.eval_num_clips,
          num_crops=v.eval_num_crops, label_key=v.label_key, flow=v.flow, **hosts)
    return pipeline.make_eval_iterator(ds.name, split, ds.data_dir, global_batch_size=c.batch_size,
                                       image_size=ds.image_size, **hosts)


def make_iterators(config: ml_collections.ConfigDict) -> Iterators:
  """The run's input; ValueError before any reading when the dataset is not prepared, a split is unknown, the
  config's class count differs from the dataset's, a video dataset lacks the label or the flow the config reads,
  image augmentations are set on a video config, or `dataset.host_sharding` or `dataset.cache` is not one of its
  values."""
  ds, v = config.dataset, config.video
  common.check_host_sharding(ds.host_sharding)
  common.check_cache(ds.cache)
  video = "video" in input_keys(config)
  if video and any(config.augment[k] for k in _IMAGE_AUGMENTATIONS):
    raise ValueError("the image augmentations (config.augment) do not apply to video; clips are cropped and "
                     "flipped by config.video.min_crop_area and config.video.flip")
  label_key = v.label_key if video else "label"
  if video:  # a video feature, a ClassLabel label_key, and the stored flow a flow config reads
    video_pipeline.video_builder(ds.name, ds.train_split, ds.data_dir, label_key, flow=v.flow)
  classes = builders.num_classes(ds.name, ds.data_dir, label_key)
  if config.num_classes != classes:
    raise ValueError(f"num_classes {config.num_classes} differs from the {classes} classes of {ds.name}'s "
                     f"{label_key!r}")
  builders.num_examples(ds.name, ds.eval_split, ds.data_dir)  # an unknown split fails now, not after training
  return Iterators(config, builders.num_examples(ds.name, ds.train_split, ds.data_dir))

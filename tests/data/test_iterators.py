"""vit_video.data.iterators: a run's batches from its config (images, clips, clips with flow), and the config errors
it names before anything is read."""
import numpy as np
import pytest

from tests.experiment_files import load_module
from tests.train.test_loop import tiny_config
from vit_video.data import iterators, pipeline, video_pipeline


def _video_config(data_dir, name="single_frame", **overrides):
  c = load_module("video_classics").member_config(name, "motion", tiny=True, data_dir=data_dir)
  for key, value in overrides.items():
    *path, leaf = key.split(".")
    target = c
    for part in path:
      target = target[part]
    target[leaf] = value
  return c


def test_images(tiny_fmnist):
  config = tiny_config(tiny_fmnist)
  assert iterators.input_keys(config) == ("image",)
  data = iterators.make_iterators(config)
  assert data.num_train_examples == 320 and not data.video
  batch = next(data.train(start_step=0, stop_step=1))
  assert sorted(batch) == ["image", "label"] and batch["image"].shape == (16, 28, 28, 1)
  evaluated = list(data.eval("test"))
  assert sorted(evaluated[0]) == ["image", "label", "mask"]
  assert sum(int(b["mask"].sum()) for b in evaluated) == 70  # every test image once


def test_clips_and_flow(tiny_moving_fmnist):
  config = _video_config(tiny_moving_fmnist, "two_stream")
  assert iterators.input_keys(config) == ("video", "flow")
  data = iterators.make_iterators(config)
  assert data.num_train_examples == 60 and data.video
  batch = next(data.train(start_step=0, stop_step=1))
  t = config.video.num_frames
  assert batch["video"].shape == (8, t, 20, 20, 1) and batch["flow"].shape == (8, 20, 20, 2 * (t - 1))
  views = list(data.eval("test"))
  assert sorted(views[0]) == ["flow", "label", "mask", "video", "video_index"]
  assert len(np.unique(np.concatenate([b["video_index"][b["mask"]] for b in views]))) == 30


def test_config_errors_are_named_before_reading(tiny_fmnist, tiny_moving_fmnist, tmp_path):
  with pytest.raises(ValueError, match=r"num_classes 5 differs from the 10 classes of fashion_mnist_local's 'label'"):
    iterators.make_iterators(tiny_config(tiny_fmnist, num_classes=5))
  with pytest.raises(ValueError, match=r"num_classes 2 differs from the 10 classes of moving_fmnist_actions/tiny's "
                     r"'object_label'"):
    iterators.make_iterators(_video_config(tiny_moving_fmnist, **{"video.label_key": "object_label", "num_classes": 2}))
  with pytest.raises(ValueError, match=r"split 'validation' is not a split of fashion_mnist_local"):
    iterators.make_iterators(tiny_config(tiny_fmnist, **{"dataset.eval_split": "validation"}))
  with pytest.raises(ValueError, match="do not apply to video"):
    iterators.make_iterators(_video_config(tiny_moving_fmnist, **{"augment.flip": True}))
  missing = str(tmp_path / "no_data")  # the config's values are checked before the data_dir is read
  with pytest.raises(ValueError, match="host_sharding 'hosts' is not one of 'global', 'split'"):
    iterators.make_iterators(_video_config(missing, **{"dataset.host_sharding": "hosts"}))
  with pytest.raises(ValueError, match="cache 'yes' is not one of 'auto', True, False"):
    iterators.make_iterators(tiny_config(missing, **{"dataset.cache": "yes"}))
  with pytest.raises(ValueError, match="video.flow needs num_frames >= 2"):
    iterators.input_keys(_video_config(tiny_moving_fmnist, **{"video.flow": True, "video.num_frames": 1}))


@pytest.mark.parametrize("video", [False, True])
def test_train_passes_the_configs_host_sharding_shuffle_and_cache(tiny_fmnist, tiny_moving_fmnist, monkeypatch, video):
  """Images and clips alike: dataset.host_sharding, shuffle_buffer_size (0 -> None: exact) and cache reach the
  pipeline."""
  module, function = (video_pipeline, "make_clip_train_iterator") if video else (pipeline, "make_train_iterator")
  calls = []
  monkeypatch.setattr(module, function, lambda *args, **kwargs: calls.append(kwargs))
  for sharding, buffer, cache in (("split", 0, "auto"), ("global", 5, False)):
    over = {"dataset.host_sharding": sharding, "dataset.shuffle_buffer_size": buffer, "dataset.cache": cache}
    config = _video_config(tiny_moving_fmnist, **over) if video else tiny_config(tiny_fmnist, **over)
    iterators.make_iterators(config).train(start_step=0, stop_step=1)
  assert [(c["host_sharding"], c["shuffle_buffer_size"], c["cache"]) for c in calls] == [
      ("split", None, "auto"), ("global", 5, False)]


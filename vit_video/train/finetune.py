"""Fine-tuning: start a run from another experiment's checkpoint or a published .npz.

The loaded parameters replace the fresh ones key by key. The classifier head is kept fresh when its shape
differs (new classes), or always with `reset_head` (transfer to another dataset with as many classes); a
learned position embedding is resampled when the grid differs (new resolution); any other difference in keys
or shapes means a checkpoint of another model, and raises.
"""
import os

import flax
import jax
import numpy as np

from vit_video import checkpoints
from vit_video.layers.embed import resample_pos_embedding
from vit_video.train import checkpointing
from vit_video.train.steps import TrainState

HEAD_KEYS = ("head/kernel", "head/bias", "fc/kernel", "fc/bias")  # ViT/BiT "head", ResNet "fc"


def merge_params(fresh: dict, loaded: dict, *, source: str, reset_head: bool = False) -> dict:
  """Loaded values for every key of `fresh`, adapting the head and position embedding (see module doc).

  `reset_head`: keep `fresh`'s (zero-initialised) head even when the loaded one has the same shape.
  """
  flat_fresh = flax.traverse_util.flatten_dict(fresh, sep="/")
  flat_loaded = flax.traverse_util.flatten_dict(loaded, sep="/")
  missing = sorted(k for k in set(flat_fresh) - set(flat_loaded) if k not in HEAD_KEYS)
  extra = sorted(k for k in set(flat_loaded) - set(flat_fresh) if k not in HEAD_KEYS)
  if missing or extra:
    raise ValueError(f"{source} is not a checkpoint of this model: it lacks {missing[:5]} and has extra "
                     f"{extra[:5]}{' ...' if max(len(missing), len(extra)) > 5 else ''}")
  merged = {}
  for key, value in flat_fresh.items():
    new = flat_loaded.get(key)
    if new is None or (key in HEAD_KEYS and (reset_head or new.shape != value.shape)):
      merged[key] = value  # a new head
    elif new.shape == value.shape:
      merged[key] = np.asarray(new, value.dtype)
    elif key.endswith("pos_embedding"):
      prefix = 1 if "cls/token" in flat_fresh else 0
      grid = int(round(np.sqrt(value.shape[1] - prefix)))
      if grid * grid != value.shape[1] - prefix:
        raise ValueError(f"cannot resample {key} from {new.shape} to the non-square {value.shape}")
      merged[key] = np.asarray(resample_pos_embedding(new, (grid, grid), num_prefix_tokens=prefix), value.dtype)
    else:
      raise ValueError(f"{source} is not a checkpoint of this model: {key} has shape {tuple(new.shape)}, "
                       f"the model expects {tuple(value.shape)}")
  return flax.traverse_util.unflatten_dict(merged, sep="/")


def init_from(state: TrainState, config) -> TrainState:
  """Replaces `state`'s parameters (and BatchNorm statistics) with those of `config.init.checkpoint`: a `.npz`
  published checkpoint, or another run's workdir / checkpoint folder. Optimizer state and EMA start afresh from
  them. `config.init.reset_head` keeps the fresh classifier head (see `merge_params`)."""
  path, model_name, image_size = config.init.checkpoint, config.model_name, config.dataset.image_size
  reset_head = config.init.reset_head
  if path.endswith(".npz"):
    loaded = checkpoints.import_vit_npz(model_name, path, image_size=image_size)
  elif os.path.isdir(path):
    loaded = checkpointing.restore_params(path)
  else:
    raise ValueError(f"init checkpoint {path!r} is neither a .npz file nor a run's workdir")
  state = jax.device_get(state)
  params = merge_params(state.params, loaded["params"], source=path, reset_head=reset_head)
  batch_stats = state.batch_stats
  if batch_stats and "batch_stats" in loaded:
    batch_stats = merge_params(batch_stats, loaded["batch_stats"], source=path)
  ema = jax.tree.map(np.copy, params) if state.ema_params else state.ema_params
  return state.replace(params=params, batch_stats=batch_stats, ema_params=ema)

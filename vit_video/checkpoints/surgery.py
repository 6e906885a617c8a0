"""Loaded parameters fitted to a model: of its own family (`merge_params`) or its image family (`from_image_model`).

    params = merge_params(fresh["params"], loaded["params"], source="run_a", head=model.head)
    variables = from_image_model(video_model, image_variables, video_template, image_size=224)

`merge_params`: the loaded values replace the fresh ones key by key. The classifier (the family's top-level `head`
key, the model contract's ClassVar) is kept fresh when its shape differs (new classes), or always with
`reset_head` (transfer to another dataset with as many classes); a learned position embedding is resampled when the
grid differs (new resolution); any other difference in keys or shapes means a checkpoint of another model, and
raises. `from_image_model`: the 2D -> 3D initialisations of inflate.py and inflate_vit.py, picked by the model.
"""
import flax
import flax.linen as nn
import numpy as np

from vit_video.checkpoints.inflate import Inflation, i3d_from_resnet, video_swin_from_swin
from vit_video.checkpoints.inflate_vit import timesformer_from_vit, vivit_from_vit
from vit_video.layers.embed import resample_pos_embedding
from vit_video.models import i3d, resnet, swin, timesformer, video_swin, vit, vivit


def merge_params(fresh: dict, loaded: dict, *, source: str, head: str | None = "head",
                 reset_head: bool = False) -> dict:
  """Loaded values for every key of `fresh` (one collection), adapting the head and position embedding.

  head: the top-level key of the classifier (`type(model).head`); None for a collection without one
    (`batch_stats`). reset_head: keep `fresh`'s (zero-initialised) head even when the loaded one has the same shape.
  """
  flat_fresh = flax.traverse_util.flatten_dict(fresh, sep="/")
  flat_loaded = flax.traverse_util.flatten_dict(loaded, sep="/")
  is_head = lambda key: head is not None and key.split("/", 1)[0] == head  # noqa: E731
  missing = sorted(k for k in set(flat_fresh) - set(flat_loaded) if not is_head(k))
  extra = sorted(k for k in set(flat_loaded) - set(flat_fresh) if not is_head(k))
  if missing or extra:
    raise ValueError(f"{source} is not a checkpoint of this model: it lacks {missing[:5]} and has extra "
                     f"{extra[:5]}{' ...' if max(len(missing), len(extra)) > 5 else ''}")
  fresh_head = [k for k in flat_fresh if is_head(k)]
  new_head = reset_head or any(k not in flat_loaded or flat_loaded[k].shape != flat_fresh[k].shape for k in fresh_head)
  merged = {}
  for key, value in flat_fresh.items():
    new = flat_loaded.get(key)
    if is_head(key) and new_head:
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


# The video family -> the image family whose parameters initialise it.
IMAGE_FAMILY = {
    vivit.ViViT: vit.ViT,
    timesformer.TimeSformer: vit.ViT,
    video_swin.VideoSwin: swin.Swin,
    i3d.I3DResNet: resnet.ResNet,
}


def from_image_model(model: nn.Module, image_variables: dict, template: dict, *, mode: Inflation | None = None,
                     image_size: int | tuple[int, int] | None = None) -> dict:
  """Variables for the video `model` from its image family's (IMAGE_FAMILY), as its paper initialises them.

  image_variables: the image model's `{"params": ...[, "batch_stats": ...]}`. template: the video model's
  variables; the same collections come back. mode: the kernel inflation (inflate.INFLATIONS; None: the family's
  default: ViViT "central_frame", Video Swin and I3D "average"; TimeSformer takes none). image_size: the clip's
  frame size (H, W): ViViT's and TimeSformer's per-frame token grid, to which the ViT's position embedding is
  resampled (None: taken as it is). Video Swin's window comes from the model.
  """
  if type(model) not in IMAGE_FAMILY:
    raise ValueError(f"{type(model).__name__} is not initialised from an image model; those that are: "
                     f"{', '.join(c.__name__ for c in IMAGE_FAMILY)}")
  kwargs = {} if mode is None else {"mode": mode}
  if isinstance(model, i3d.I3DResNet):
    return i3d_from_resnet(image_variables, template, **kwargs)
  source, target = image_variables["params"], template["params"]
  if isinstance(model, video_swin.VideoSwin):
    params = video_swin_from_swin(source, target, window_size=tuple(model.window_size), **kwargs)
  else:
    grid = None
    if image_size is not None:
      h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
      grid = (h // model.patch_size, w // model.patch_size)
    if isinstance(model, vivit.ViViT):
      params = vivit_from_vit(source, target, frame_grid=grid, **kwargs)
    elif mode is not None:
      raise ValueError(f"a TimeSformer embeds every frame with the ViT's 2D patch kernel: no inflation mode "
                       f"applies (got {mode!r})")
    else:
      params = timesformer_from_vit(source, target, frame_grid=grid)
  return {**template, "params": params}

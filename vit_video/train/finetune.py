"""A run's initial parameters from another run's checkpoint or a published .npz (`config.init`).

Two cases, by the checkpoint's family (`init.model_name`, "" for model_name's own):
  the same family  another run's parameters (BatchNorm statistics too): the head is kept fresh when its shape
                   differs or with `init.reset_head`; a position embedding is resampled for another resolution
                   (checkpoints.surgery.merge_params). An .npz is imported into the run's model (model_name with
                   config.model) at the run's image size; one whose other arrays do not fit it is refused, listing
                   them and the sizes that differ.
  its image family a video model initialised from an image checkpoint as its paper does: ViViT and TimeSformer from
                   a ViT, Video Swin from a Swin, I3D from a ResNet (checkpoints.surgery.from_image_model), at the
                   run's frame size and window, with `init.inflation`'s kernel mode.
Any other pair raises ValueError naming both models (a hybrid ViT's parameters are refused by the ViT inflations,
checkpoints/inflate_vit.py). The optimizer state and the EMA start afresh.
"""
import flax.linen as nn
import jax
import numpy as np

from vit_video import checkpoints, models
from vit_video.checkpoints import surgery
from vit_video.checkpoints.npz import ModelMismatchError
from vit_video.train import checkpointing, parallel
from vit_video.train.steps import TrainState


def init_from(state: TrainState, config, model: nn.Module) -> TrainState:
  """`state` (one host copy, as `Trainer.host_state` gives it) with its parameters (and BatchNorm statistics)
  replaced by those of `config.init.checkpoint` (see the module docstring); `model` is the run's model
  (`Trainer.model`), whose shapes an inflation fits."""
  init, target_name = config.init, config.model_name
  path = str(init.checkpoint)
  target = models.model_class(target_name)
  source_name = init.model_name or target_name
  source = models.model_class(source_name)
  same = source is target
  if not same:
    _check_pair(target_name, target, source_name, source)
  if path.endswith(".npz"):
    overrides = {"in_channels": config.dataset.channels, **dict(config.model if same else init.model)}
    try:
      loaded = checkpoints.import_vit_npz(source_name, path, image_size=config.dataset.image_size if same else None,
                                          **overrides)
    except ModelMismatchError as e:
      if same:
        built = (f"this run's model, {target_name} with config.model (in_channels: dataset.channels); only its head "
                 f"(another num_classes, or init.reset_head) and position embedding (resampled to "
                 f"dataset.image_size) adapt to a checkpoint")
        fix = "set config.model to the checkpoint's sizes, or leave init.checkpoint empty to train from scratch"
      else:
        built = f"the model it is read as, init.model_name {source_name} with init.model {dict(init.model)}"
        fix = "set init.model to the checkpoint's sizes"
      raise ValueError(f"init.checkpoint {path} does not fit {built}: {e}. To use it, {fix}") from e
  else:
    loaded = checkpointing.restore_params(path)
  state = parallel.fetch(state)  # whole on every host, also when FSDP shards it across hosts
  if same:
    params = surgery.merge_params(state.params, loaded["params"], source=path, head=target.head,
                                  reset_head=init.reset_head)
    batch_stats = state.batch_stats
    if batch_stats and "batch_stats" in loaded:
      batch_stats = surgery.merge_params(batch_stats, loaded["batch_stats"], source=path, head=None)
  else:
    template = {"params": state.params, **({"batch_stats": state.batch_stats} if state.batch_stats else {})}
    variables = surgery.from_image_model(model, loaded, template, mode=init.inflation or None,
                                         image_size=config.dataset.image_size)
    params, batch_stats = variables["params"], variables.get("batch_stats", state.batch_stats)
    if init.reset_head and target.head in params:
      params = {**params, target.head: state.params[target.head]}
  ema = jax.tree.map(np.copy, params) if state.ema_params else state.ema_params
  return state.replace(params=params, batch_stats=batch_stats, ema_params=ema)


def _check_pair(target_name: str, target: type, source_name: str, source: type) -> None:
  """ValueError naming both models unless `source` is `target`'s image family."""
  image = surgery.IMAGE_FAMILY.get(target)
  if image is not source:
    allowed = f"from a {image.__name__} checkpoint or one of its own family" if image else "only from its own family"
    raise ValueError(f"a {source_name} checkpoint ({source.__name__}, init.model_name) cannot initialise "
                     f"{target_name} ({target.__name__}): it starts {allowed}")

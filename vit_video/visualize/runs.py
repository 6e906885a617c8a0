"""A trained run, read back for visualisation: its config, the eval model and its variables.

    run = load_run("workdirs/vit_vs_resnet/vit_s")        # local or any etils.epath URI (gs://...)
    logits = run.model.apply(run.variables, images, train=False)
    inputs, labels = read_examples(run.config, 16)        # the first 16 eval examples, {"image": [16,H,W,C]}

The model is rebuilt from the run's config.json (`train.loop.build_model`) with rematerialisation off (the same
parameters; `hooks` cannot read a layer under nn.remat), and the variables come from the newest readable
checkpoint step (`checkpointing.restore_params`). `read_examples` takes the first examples of the run's own dataset
through its eval pipeline (pixels as the model saw them in training).
"""
import dataclasses
import os

import flax.linen as nn
import ml_collections
import numpy as np
from etils import epath

from vit_video import models
from vit_video.data import iterators
from vit_video.train import checkpointing, loop
from vit_video.train.run_folder import RunFolder


@dataclasses.dataclass(frozen=True)
class Run:
  """A trained run: `config` (locked, as trained), `model` (the eval model), `variables` ({"params", ...})."""
  workdir: epath.Path
  config: ml_collections.ConfigDict
  model: nn.Module
  variables: dict

  @property
  def input_shapes(self) -> tuple[tuple[int, ...], ...]:
    """Per-example shapes of the model's inputs, in the order of its family's `inputs` (see models)."""
    return loop.input_shapes(self.config)

  @property
  def inputs(self) -> tuple[str, ...]:
    """The model's positional inputs by name: ("image",), ("video",) or ("video", "flow")."""
    return models.model_class(self.config.model_name).inputs


def load_run(workdir: str | os.PathLike) -> Run:
  """The run in `workdir`; ValueError naming the folder when it holds no config or no readable checkpoint."""
  path = epath.Path(workdir)
  saved = RunFolder(path).read_config() if path.exists() else None
  if saved is None:
    raise ValueError(f"{path} holds no config.json: not a run folder of vit_video.main (or never started)")
  config = ml_collections.ConfigDict(saved)
  if "remat" in config.model:
    config.model.remat = False
  config.lock()
  model = loop.build_model(config)
  variables = checkpointing.restore_params(path)
  return Run(workdir=path, config=config, model=model, variables=variables)


def read_examples(config: ml_collections.ConfigDict, count: int, split: str = "") -> tuple[dict[str, np.ndarray],
                                                                                            np.ndarray]:
  """The first `count` examples of `split` (default: the config's eval split) of a run's dataset through its eval
  pipeline, one view per video (the first window, centre crop): ({input name: [count,...]}, labels [count])."""
  c = ml_collections.ConfigDict(config.to_dict())
  c.video.eval_num_clips, c.video.eval_num_crops, c.batch_size = 1, 1, count
  split = split or c.dataset.eval_split
  batch = next(iter(iterators.make_iterators(c).eval(split)))
  if int(batch["mask"].sum()) < count:
    raise ValueError(f"{c.dataset.name}:{split} has fewer than {count} examples")
  return {k: batch[k] for k in iterators.input_keys(c)}, batch["label"]

"""A DETR backbone from one of the package's own ResNet classifiers (models/resnet.py, trained by `vit_video.main`).

    resnet = checkpoints.restore_params("workdirs/detr_backbone")          # {"params", "batch_stats"}
    variables = detr_backbone_from_resnet(resnet, detr_variables)           # the backbone replaced

The classifier and DETR's `FrozenResNet` share torchvision's layout and names (conv1, bn1, layer{i}/block{j}/
{conv,bn}{k}, downsample_{conv,bn}), so the surgery is a move: convolution kernels into params/backbone, each
BatchNorm's scale and bias (params) and running mean and variance (batch_stats) into constants/backbone, where DETR
keeps them frozen. The classifier's head (fc) is dropped. Every array is checked against DETR's, by name and shape.
"""
from typing import Any

import flax
import numpy as np


def detr_backbone_from_resnet(resnet: dict, detr_variables: dict) -> dict:
  """`detr_variables` ({"params", "constants"}) with params/backbone and constants/backbone taken from `resnet`
  ({"params", "batch_stats"} of a bottleneck `ResNet` with DETR's stage_sizes, width and in_channels).

  Raises ValueError naming the arrays that are missing on either side or differ in shape (another depth, width or
  number of input channels; a basic-block ResNet).
  """
  if "batch_stats" not in resnet:
    raise ValueError(f"the classifier's variables {sorted(resnet)} have no batch_stats: not a BatchNorm ResNet")
  flat = lambda tree: flax.traverse_util.flatten_dict(flax.core.unfreeze(tree), sep="/")  # noqa: E731
  params, stats = flat(resnet["params"]), flat(resnet["batch_stats"])
  moved: dict[str, Any] = {}
  for name, value in params.items():
    if name.startswith("fc/"):
      continue
    if name.endswith("/kernel"):
      moved[f"params/backbone/{name}"] = value
    else:  # a BatchNorm's scale or bias
      moved[f"constants/backbone/{name}"] = value
  for name, value in stats.items():
    moved[f"constants/backbone/{name}"] = value
  out = {c: flat(detr_variables[c]) for c in ("params", "constants")}
  target = {f"{c}/{k}": v for c in out for k, v in out[c].items() if k.startswith("backbone/")}
  missing, extra = sorted(set(target) - set(moved)), sorted(set(moved) - set(target))
  shapes = [f"{k}: classifier {np.shape(moved[k])}, DETR {np.shape(target[k])}"
            for k in sorted(set(target) & set(moved)) if np.shape(moved[k]) != np.shape(target[k])]
  if missing or extra or shapes:
    raise ValueError("the classifier does not fit DETR's backbone: " + "; ".join(
        [*([f"DETR arrays it lacks: {missing[:4]}{' ...' if len(missing) > 4 else ''}"] if missing else []),
         *([f"arrays DETR lacks: {extra[:4]}{' ...' if len(extra) > 4 else ''}"] if extra else []),
         *(["shapes differ: " + "; ".join(shapes[:3])] if shapes else [])]))
  for key, value in moved.items():
    collection, name = key.split("/", 1)
    out[collection][name] = np.asarray(value, dtype=target[key].dtype)
  return {c: flax.traverse_util.unflatten_dict(out[c], sep="/") for c in out}

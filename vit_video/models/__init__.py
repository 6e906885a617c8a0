"""Every named model, one explicit dict, and the contract every model keeps.

    model = create_model("vit_b16", num_classes=10, dtype=jnp.bfloat16)
    logits = model.apply(variables, images, train=False)  # [B,H,W,C] -> [B,K] float32

The contract (tests/models/test_contract.py checks it for every name in MODELS):
  - Call: `model.apply(variables, *inputs, train=...)`. `train` is keyword-only with no default: True runs dropout,
    stochastic depth and BatchNorm on batch statistics (updated with `mutable=["batch_stats"]`), False the eval
    model. The positional inputs are those named by the family's `inputs`, in order, from
      "image" [B,H,W,C]; "video" [B,T,H,W,C]; "flow" [B,H,W,2(T-1)] (the T-1 optical-flow fields between
      consecutive frames, x and y interleaved),
    which are also the data pipelines' batch keys. Pixels are float (any range the data pipeline gives).
  - Output: float32 logits [B,K] whatever `dtype`; with `num_classes=0`, float32 features [B,D] and no classifier
    parameters.
  - Attributes every model has: `num_classes` (K), `in_channels` (C, checked against the input), `dtype` (compute),
    `param_dtype` (parameters, float32 by default). Families with BatchNorm also have `axis_name`: the named batch
    axis (under pmap or shard_map) over which batch statistics are averaged.
  - What a family declares on its top-level class, as `typing.ClassVar`s (not dataclass fields, so not settable):
      inputs: tuple[str, ...]   its positional inputs, e.g. ("image",), ("video",), ("video", "flow")
      head: str                 the top-level params key holding the classifier ("head"; "fc" for ResNet and
                                I3D, "fc8" for C3D); absent when num_classes == 0
      batch_norm: bool          True when the family keeps BatchNorm statistics in `batch_stats` (LRCN and VTN
                                only with a ResNet backbone) and so has `axis_name`
  - Feature grids: the image families ViT (and its hybrids), ResNet, BiT, ConvNeXt and Swin (Video Swin too) take
    `return_grid=True` with `num_classes=0` and return the float32 map they would pool, [B,h,w,D] (ViT: the patch
    tokens after the final LayerNorm, class token dropped), for models that attend over image regions (captioning,
    VQA); tests/models/test_feature_grid.py checks that it averages to the pooled features.
Every family file ends with `MODELS = {name: functools.partial(Class, **variant_attributes)}`; this module merges
them. A reader goes from a name to its file in one hop: vit_* and r*_vit_* -> vit.py, resnet* -> resnet.py,
bit_* -> bit.py, single_frame, late_fusion_*, early_fusion, slow_fusion -> video_cnn.py, c3d -> c3d.py,
i3d_r50, nl_i3d_r50 -> i3d.py, lrcn -> lrcn.py, two_stream -> two_stream.py, vivit_* -> vivit.py,
timesformer_* -> timesformer.py, swin_* -> swin.py, convnext_* -> convnext.py, video_swin_* -> video_swin.py,
mvit_* -> mvit.py, vtn_* -> vtn.py.

Detectors keep the same call and ClassVars but not the classifier's output, so they live apart, in DETECTORS
(detr_r50 -> detr.py): `model.apply({"params", "constants"}, images [B,H,W,C], train=..., mask=None)` with `mask`
[B,H,W] bool (True on real pixels; None: all) returns {"logits": [B,Q,K+1] float32 (the last class is "no object"),
"boxes": [B,Q,4] float32 (cx, cy, w, h in [0, 1]), "aux": one such dict per earlier decoder layer}; "constants"
holds what is never trained (DETR's frozen BatchNorm), and `detr.trainable_mask(params)` the parameters it freezes.

Not image or video classifiers, so in no dict here: sequence.py's LSTM, GRU and Transformer classifiers of token ids
[B,N] -> [B,K] (its own VARIANTS; the long-range study trains them with its own loop).
"""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_video.models import (bit, c3d, convnext, detr, i3d, lrcn, mvit, resnet, swin, timesformer, two_stream,
                              video_cnn, video_swin, vit, vivit, vtn)

_FAMILIES = (vit, resnet, bit, swin, convnext, video_cnn, c3d, i3d, lrcn, two_stream, vivit, timesformer, video_swin, mvit, vtn)


def _merge(*modules) -> dict:
  merged = {}
  for module in modules:
    for name, factory in module.MODELS.items():
      if name in merged:
        raise ValueError(f"model name {name!r} is registered twice: {merged[name].func.__name__} and "
                         f"{factory.func.__name__} ({module.__name__})")
      merged[name] = factory
  return merged


MODELS = _merge(*_FAMILIES)
DETECTORS = dict(detr.MODELS)


def model_class(name: str) -> type:
  """The module class (the family) behind a name, e.g. `vit.ViT` for "vit_b16"; its ClassVars are the contract's.

  Raises ValueError listing the valid names on an unknown name.
  """
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}")
  return MODELS[name].func


def input_shapes(family: type, *, frames: int, height: int, width: int, channels: int) -> tuple[tuple[int, ...], ...]:
  """Per-example shapes of a family's positional inputs, in the order of its `inputs`: "image" (H, W, C), "video"
  (T, H, W, C), "flow" (H, W, 2(T-1)) (frames is unused for image families)."""
  shapes = {"image": (height, width, channels), "video": (frames, height, width, channels),
            "flow": (height, width, 2 * (frames - 1))}
  return tuple(shapes[name] for name in family.inputs)


def create_model(name: str, *, num_classes: int, **overrides) -> nn.Module:
  """Builds the named model with `num_classes` outputs (0: pooled features); overrides set module attributes.

  Raises ValueError listing the valid names, or the valid attributes, on an unknown name or key.
  """
  cls = model_class(name)
  fields = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ValueError(f"unknown attribute(s) {unknown} for model {name!r} ({cls.__name__}); "
                     f"valid: {', '.join(sorted(fields))}")
  return MODELS[name](num_classes=num_classes, **overrides)


def count_params(model: nn.Module, *input_shapes: tuple[int, ...]) -> int:
  """Number of parameters (the 'params' collection only), from `jax.eval_shape`: no memory, no FLOPs.

  `input_shapes`: one shape per positional input of the model (default one (1, 224, 224, 3) image batch;
  video models take e.g. (1, 16, 112, 112, 3), two_stream an RGB and a flow shape).
  """
  input_shapes = input_shapes or ((1, 224, 224, 3),)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *map(jnp.zeros, input_shapes), train=False))
  return int(sum(np.prod(a.shape) for a in jax.tree.leaves(shapes["params"])))

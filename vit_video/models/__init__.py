"""Every named model, one explicit dict, and `create_model`.

    model = create_model("vit_b16", num_classes=10, dtype=jnp.bfloat16)
    logits = model.apply(variables, images, train=False)  # [B,H,W,C] -> [B,K] float32

Each name maps to `functools.partial(ModuleClass, **variant_attributes)`; overrides are module attributes.
A reader goes from a name to its file in one hop: vit_* and r*_vit_* -> vit.py, resnet* -> resnet.py,
bit_* -> bit.py, single_frame, late_fusion_*, early_fusion, slow_fusion -> video_cnn.py, c3d -> c3d.py,
i3d_r50, nl_i3d_r50 -> i3d.py, lrcn -> lrcn.py, two_stream -> two_stream.py, vivit_* -> vivit.py,
timesformer_* -> timesformer.py, swin_* -> swin.py, video_swin_* -> video_swin.py.
"""
import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_video.models import (bit, c3d, i3d, lrcn, resnet, swin, timesformer, two_stream, video_cnn, video_swin, vit,
                              vivit)

MODELS = {
    **vit.MODELS,
    **vivit.MODELS,
    **timesformer.MODELS,
    **swin.MODELS,
    **video_swin.MODELS,
    **{name: functools.partial(resnet.ResNet, **kw) for name, kw in resnet.VARIANTS.items()},
    **{name: functools.partial(bit.BiT, **kw) for name, kw in bit.VARIANTS.items()},
    "single_frame": functools.partial(video_cnn.SingleFrame),
    "late_fusion_fc": functools.partial(video_cnn.LateFusion, fusion="fc"),
    "late_fusion_pool": functools.partial(video_cnn.LateFusion, fusion="pool"),
    "early_fusion": functools.partial(video_cnn.EarlyFusion),
    "slow_fusion": functools.partial(video_cnn.SlowFusion),
    "c3d": functools.partial(c3d.C3D),
    "i3d_r50": functools.partial(i3d.I3DResNet),
    "nl_i3d_r50": functools.partial(i3d.I3DResNet, nonlocal_after=((), (1, 3), (1, 3, 5), ())),
    "lrcn": functools.partial(lrcn.LRCN),
    "two_stream": functools.partial(two_stream.TwoStream),
}


def create_model(name: str, *, num_classes: int, **overrides) -> nn.Module:
  """Builds the named model with `num_classes` outputs (0: pooled features); overrides set module attributes.

  Raises ValueError listing the valid names, or the valid attributes, on an unknown name or key.
  """
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}")
  factory = MODELS[name]
  fields = {f.name for f in dataclasses.fields(factory.func)} - {"parent", "name"}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ValueError(f"unknown attribute(s) {unknown} for model {name!r} ({factory.func.__name__}); "
                     f"valid: {', '.join(sorted(fields))}")
  return factory(num_classes=num_classes, **overrides)


def count_params(model: nn.Module, *input_shapes: tuple[int, ...]) -> int:
  """Number of parameters (the 'params' collection only), from `jax.eval_shape`: no memory, no FLOPs.

  `input_shapes`: one shape per positional input of the model (default one (1, 224, 224, 3) image batch;
  video models take e.g. (1, 16, 112, 112, 3), two_stream an RGB and a flow shape).
  """
  input_shapes = input_shapes or ((1, 224, 224, 3),)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *map(jnp.zeros, input_shapes), train=False))
  return int(sum(np.prod(a.shape) for a in jax.tree.leaves(shapes["params"])))

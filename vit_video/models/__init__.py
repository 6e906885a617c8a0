"""Every named model, one explicit dict, and `create_model`.

    model = create_model("vit_b16", num_classes=10, dtype=jnp.bfloat16)
    logits = model.apply(variables, images, train=False)  # [B,H,W,C] -> [B,K] float32

Each name maps to `functools.partial(ModuleClass, **variant_attributes)`; overrides are module attributes.
A reader goes from a name to its file in one hop: vit_* and r*_vit_* -> vit.py, resnet* -> resnet.py,
bit_* -> bit.py.
"""
import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_video.models import bit, resnet, vit

MODELS = {
    **vit.MODELS,
    **{name: functools.partial(resnet.ResNet, **kw) for name, kw in resnet.VARIANTS.items()},
    **{name: functools.partial(bit.BiT, **kw) for name, kw in bit.VARIANTS.items()},
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


def count_params(model: nn.Module, input_shape: tuple[int, ...] = (1, 224, 224, 3)) -> int:
  """Number of parameters (the 'params' collection only), from `jax.eval_shape`: no memory, no FLOPs."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(input_shape), train=False))
  return int(sum(np.prod(a.shape) for a in jax.tree.leaves(shapes["params"])))

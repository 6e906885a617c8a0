"""The roadmap of ConvNeXt's paper (Liu et al. 2022, Figure 2): from ResNet-50 to ConvNeXt-T in steps, in miniature.

`ConvNeXtRoadmap`'s defaults are torchvision's ResNet-50 (the same 25,557,032 parameters as `resnet50`), and
`ROADMAP[step]` holds the attributes of each step of Figure 2, in order (the changes accumulate); the last, "micro",
is ConvNeXt-T (vit_video/models/convnext.py) with the same parameter tree, so ConvNeXt-T's variables run in it
unchanged. The changes, step by step: stage ratio 3:4:6:3 -> 3:3:9:3; the 7x7 stem and max pool -> a 4x4 stride-4
"patchify" conv; ResNeXt-ify (the 3x3 conv depthwise, width 64 -> 96); the inverted bottleneck (hidden width 4x the
block's instead of 1/4); large kernels (the depthwise conv moved before the 1x1 convs, 3x3 -> 7x7); the micro design
(GELU, one activation and one norm per block, LayerNorm for BatchNorm, separate downsampling layers). Layer scale is
not a step (the paper uses it in all its ConvNeXt training, Appendix A.1); "micro" switches it on, and the conv
biases ResNet leaves out (each of its convs feeds a BatchNorm). Every step is initialised as ConvNeXt (kernels
N(0, 0.02^2), not torchvision's He init). Not a named model of vit_video.models: a study tool.
"""
import dataclasses
import functools
import itertools
from typing import ClassVar, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_video.layers.conv import batch_norm
from vit_video.layers.mlp import DropPath
from vit_video.models.convnext import INIT, LN_EPS, check_input, conv, drop_path_rates


class _Design(nn.Module, kw_only=True):
  """The block design of the roadmap, shared by its model, stages and blocks (defaults: ResNet-50's).

  Attributes:
    kernel_size: of the spatial conv.
    depthwise: the spatial conv is depthwise (`conv_dw`; "ResNeXt-ify") rather than dense (`conv`).
    spatial_first: the spatial conv comes before the two 1x1 convs ("moving up the depthwise conv") rather than
      between them; it then runs at the block's width instead of the hidden one.
    activation: "relu" or "gelu" (exact).
    fewer_activations: one activation, after `fc1`, instead of after every norm but the last and after the sum.
    fewer_norms: one norm, after the first layer, instead of after every layer (`norm` after the spatial conv,
      `norm1`/`norm2` after `fc1`/`fc2`).
    normalization: "batch" (torchvision's BatchNorm) or "layer" (LayerNorm, eps 1e-6).
    conv_bias: biases on the convs (ResNet has none, each conv being followed by a BatchNorm).
    layer_scale_init: gamma's initial value; None: no layer scale.
    axis_name: the named batch axis for BatchNorm statistics under shard_map/pmap.
    dtype, param_dtype: compute and parameter dtypes.
  """
  kernel_size: int = 3
  depthwise: bool = False
  spatial_first: bool = False
  activation: Literal["relu", "gelu"] = "relu"
  fewer_activations: bool = False
  fewer_norms: bool = False
  normalization: Literal["batch", "layer"] = "batch"
  conv_bias: bool = False
  layer_scale_init: float | None = None
  axis_name: str | None = None
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  def design(self) -> dict:
    """These attributes, to pass on to a child."""
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(_Design) if f.name not in ("parent", "name")}

  def norm_layer(self, deterministic: bool):
    """The norm, partially applied: call it with `name=`."""
    if self.normalization == "batch":
      return batch_norm(deterministic, self.axis_name, self.dtype, self.param_dtype)
    return functools.partial(nn.LayerNorm, epsilon=LN_EPS, dtype=self.dtype, param_dtype=self.param_dtype)

  def act(self, x: jax.Array) -> jax.Array:
    return nn.gelu(x, approximate=False) if self.activation == "gelu" else nn.relu(x)


class RoadmapBlock(_Design):
  """A residual block of the roadmap: `[B,H,W,D_in] -> [B,H/s,W/s,D]` (s = `strides`, D = `width`).

  The layers, in order: fc1 (1x1 conv D_in -> hidden), the spatial conv (stride s, on the hidden width), fc2
  (1x1 conv hidden -> D); with `spatial_first` the spatial conv (on D_in) comes first. A projection shortcut
  (`shortcut_conv`, `shortcut_norm`) when the shape changes, as in ResNet v1.5.
  """
  width: int
  hidden: int
  strides: int = 1
  drop_path_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    norm = self.norm_layer(deterministic)
    d_in, s = x.shape[-1], self.strides
    c = d_in if self.spatial_first else self.hidden
    spatial = conv(c, self.kernel_size, s, groups=c if self.depthwise else 1, bias=self.conv_bias,
                   name="conv_dw" if self.depthwise else "conv", **kw)
    fc1 = nn.Dense(self.hidden, use_bias=self.conv_bias, kernel_init=INIT, name="fc1", **kw)
    fc2 = nn.Dense(self.width, use_bias=self.conv_bias, kernel_init=INIT, name="fc2", **kw)
    # (layer, the name of the norm after it)
    layers = [(fc1, "norm1"), (spatial, "norm"), (fc2, "norm2")]
    if self.spatial_first:
      layers = [layers[1], layers[0], layers[2]]
    y = x
    for n, (layer, norm_name) in enumerate(layers):
      y = layer(y)  # [B,H',W',hidden] for the first two (D_in for a spatial-first conv), then [B,H',W',D]
      if n == 0 or not self.fewer_norms:
        y = norm(name=norm_name)(y)
      if (layer is fc1) if self.fewer_activations else (n < 2):  # One, between the 1x1 convs; or ResNet's two.
        y = self.act(y)
    if self.layer_scale_init is not None:
      gamma = self.param("gamma", nn.initializers.constant(self.layer_scale_init), (self.width,), self.param_dtype)
      y = y * gamma.astype(self.dtype)
    if s != 1 or d_in != self.width:
      x = conv(self.width, 1, s, bias=self.conv_bias, name="shortcut_conv", **kw)(x)
      x = norm(name="shortcut_norm")(x)
    x = x + DropPath()(y, self.drop_path_rate, deterministic=deterministic)
    return x if self.fewer_activations else self.act(x)


class RoadmapStage(_Design):
  """With `downsample`, separate downsampling layers (`downsample_norm`, 2x2 stride-2 `downsample_conv`) or else a
  first block of stride 2; then the blocks: `[B,H,W,D_in] -> [B,H',W',D]`."""
  width: int
  hidden: int
  drop_path_rates: tuple[float, ...]
  downsample: bool
  separate_downsampling: bool

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    separate = self.downsample and self.separate_downsampling
    if separate:
      x = self.norm_layer(deterministic)(name="downsample_norm")(x)
      x = conv(self.width, 2, 2, pad=False, bias=self.conv_bias, name="downsample_conv", dtype=self.dtype,
                param_dtype=self.param_dtype)(x)  # [B,H/2,W/2,D]
    for j, rate in enumerate(self.drop_path_rates):
      strides = 2 if self.downsample and not separate and j == 0 else 1
      x = RoadmapBlock(width=self.width, hidden=self.hidden, strides=strides, drop_path_rate=rate, name=f"block_{j}",
                       **self.design())(x, deterministic=deterministic)
    return x


_CHOICES = {"stem": ("resnet", "patchify"), "activation": ("relu", "gelu"), "normalization": ("batch", "layer")}


class ConvNeXtRoadmap(_Design):
  """The roadmap's network: ResNet-50 by default, ConvNeXt-T at `ROADMAP["micro"]` (`_Design` has the blocks'
  attributes; `batch_norm` holds for `normalization="batch"`, the steps before "micro").

  Attributes:
    num_classes, in_channels, drop_path_rate: as ConvNeXt's.
    depths, dims: blocks and block width per stage; a block's hidden width is mlp_ratio * its width.
    stem: "resnet" (7x7 stride-2 conv, norm, activation, 3x3 stride-2 max pool) or "patchify" (4x4 stride-4 conv,
      norm), of `stem_width` channels.
    separate_downsampling: a norm and a 2x2 stride-2 conv start each stage i > 0, and a norm follows the pooling
      (otherwise a stage's first block has stride 2 and a projection shortcut).
  """
  inputs: ClassVar[tuple[str, ...]] = ("image",)
  head: ClassVar[str] = "head"
  batch_norm: ClassVar[bool] = True
  num_classes: int
  depths: tuple[int, ...] = (3, 4, 6, 3)
  dims: tuple[int, ...] = (256, 512, 1024, 2048)
  mlp_ratio: float = 0.25
  stem: Literal["resnet", "patchify"] = "resnet"
  stem_width: int = 64
  separate_downsampling: bool = False
  drop_path_rate: float = 0.0
  in_channels: int = 3

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """`[B,H,W,C] -> [B,K]` float32 logits (or `[B,D]` features when num_classes == 0)."""
    check_input(self, x)
    for attribute, allowed in _CHOICES.items():
      if getattr(self, attribute) not in allowed:
        raise ValueError(f"{attribute} must be one of {allowed}; got {getattr(self, attribute)!r}")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    norm = self.norm_layer(not train)
    x = x.astype(self.dtype)
    if self.stem == "resnet":
      x = conv(self.stem_width, 7, 2, bias=self.conv_bias, name="stem_conv", **kw)(x)  # [B,H/2,W/2,D_s]
      x = self.act(norm(name="stem_norm")(x))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))  # [B,H/4,W/4,D_s]
    else:
      x = conv(self.stem_width, 4, 4, pad=False, bias=self.conv_bias, name="stem_conv", **kw)(x)  # [B,H/4,W/4,D_s]
      x = norm(name="stem_norm")(x)
    for i, (width, rates) in enumerate(zip(self.dims, drop_path_rates(self.drop_path_rate, self.depths))):
      x = RoadmapStage(width=width, hidden=int(self.mlp_ratio * width), drop_path_rates=rates, downsample=i > 0,
                       separate_downsampling=self.separate_downsampling, name=f"stage_{i}", **self.design())(
                           x, deterministic=not train)  # [B,H_i,W_i,D_i]
    x = x.mean(axis=(1, 2))  # [B,D]
    if self.separate_downsampling:
      x = norm(name="norm")(x)
    if not self.num_classes:
      return x.astype(jnp.float32)
    return nn.Dense(self.num_classes, kernel_init=INIT, name="head", **kw)(x).astype(jnp.float32)


# Figure 2's steps, each with the attributes it changes (ROADMAP accumulates them). The paper's FLOPs and accuracy
# per step (GMACs, its "GFLOPs"; ImageNet-1k top-1): 4.1 78.8, 4.5 79.4, 4.4 79.5, 5.3 80.5, 4.6 80.6, 4.2 80.6 (7x7,
# after moving the depthwise conv up: 4.1 79.9), 4.5 82.0. Ours, counting the convs and linear layers as fvcore does
# (tests/models/test_convnext_roadmap.py): 4.09, 4.53, 4.42, 5.27, 4.64, 4.15, 4.46.
_STEPS = (
    ("resnet50", {}),
    ("stage_ratio", dict(depths=(3, 3, 9, 3))),
    ("patchify", dict(stem="patchify")),
    ("depthwise", dict(depthwise=True, stem_width=96, dims=(384, 768, 1536, 3072))),  # ResNeXt-ify, width 64 -> 96.
    ("inverted_bottleneck", dict(dims=(96, 192, 384, 768), mlp_ratio=4.0)),
    ("large_kernel", dict(spatial_first=True, kernel_size=7)),
    ("micro", dict(activation="gelu", fewer_activations=True, fewer_norms=True, normalization="layer",
                   separate_downsampling=True, conv_bias=True, layer_scale_init=1e-6)),
)
ROADMAP = dict(zip([name for name, _ in _STEPS],
                   itertools.accumulate([changes for _, changes in _STEPS], lambda a, b: {**a, **b})))

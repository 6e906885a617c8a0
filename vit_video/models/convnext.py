"""ConvNeXt (Liu et al. 2022, "A ConvNet for the 2020s"), as timm 1.0.31 builds `convnext_{tiny,small,base,large}`.

An image `[B,H,W,C]` goes through a patchify stem (4x4 conv of stride 4, LayerNorm), then stages of widths `dims`;
stage i > 0 first downsamples (LayerNorm, 2x2 conv of stride 2). Every block is

    x = x + DropPath(gamma * Dense_D(GELU(Dense_4D(LN(DepthwiseConv_7x7(x))))))

(the two Dense layers are the paper's 1x1 convs; GELU is the exact erf form, as torch's; gamma, the layer scale,
starts at 1e-6). A global average pool, a LayerNorm and the head give `[B,K]`. LayerNorm eps is 1e-6 (timm's), the
stochastic-depth rate grows linearly from 0 over all blocks, and every kernel starts N(0, 0.02^2) truncated at
2 std, biases at 0 (timm's `_init_weights`). Sides that are not multiples of 32 floor at the stem and at each
downsampling, as timm's unpadded convs do. Parameter names (timm's keys in vit_video/checkpoints/timm_convnext.py):
`stem_conv`, `stem_norm`, `stage_{i}/downsample_{norm,conv}` (i > 0), `stage_{i}/block_{j}/{conv_dw,norm,fc1,fc2,
gamma}`, `norm`, `head`. Counts at 1000 classes equal timm's (T 28,589,128 ... L 197,767,336; the paper's 29M,
50M, 89M, 198M; tests/models/test_convnext.py).

The paper's roadmap from ResNet-50 to ConvNeXt-T (its Figure 2) is convnext_roadmap.py.
"""
import functools
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_video.layers import conv_lowering
from vit_video.layers.mlp import DropPath

LN_EPS = 1e-6  # timm's LayerNorm2d / LayerNorm for ConvNeXt (torch's default is 1e-5).
INIT = nn.initializers.truncated_normal(0.02)


def conv(features: int, k: int, stride: int, *, groups: int = 1, bias: bool = True, pad: bool = True,
         dtype: jnp.dtype, param_dtype: jnp.dtype, name: str) -> nn.Conv:
  """A k x k conv, padded k // 2 on every side (torch's symmetric padding) unless `pad` is False (unpadded)."""
  return nn.Conv(features, (k, k), (stride, stride), padding=[(k // 2, k // 2)] * 2 if pad else "VALID",
                 feature_group_count=groups, use_bias=bias, kernel_init=INIT, dtype=dtype, param_dtype=param_dtype,
                 name=name, conv_general_dilated=conv_lowering.conv_general_dilated)  # depthwise 7x7: fused taps


def check_input(model: nn.Module, x: jax.Array) -> None:
  """ValueError unless `x` is `[B,H,W,in_channels]` with one width per stage and no stage map empty."""
  if x.ndim != 4 or x.shape[-1] != model.in_channels:
    raise ValueError(f"{type(model).__name__} expects images [B,H,W,{model.in_channels}]; got shape {x.shape}")
  if len(model.depths) != len(model.dims):
    raise ValueError(f"depths {tuple(model.depths)} and dims {tuple(model.dims)} must have one entry per stage")
  if min(x.shape[1:3]) < 2 ** (len(model.depths) + 1):
    raise ValueError(f"image size {x.shape[1:3]} is too small for {len(model.depths)} stages (the last stage's map "
                     f"would be empty): sides of at least {2 ** (len(model.depths) + 1)} are needed")


def drop_path_rates(rate: float, depths) -> list[tuple[float, ...]]:
  """Per stage, its blocks' rates: linear from 0 to `rate` over all blocks (timm's)."""
  rates = [float(r) for r in np.linspace(0.0, rate, sum(depths))]
  starts = np.cumsum((0,) + tuple(depths))
  return [tuple(rates[starts[i]:starts[i + 1]]) for i in range(len(depths))]


class ConvNeXtBlock(nn.Module):
  """`[B,H,W,D] -> [B,H,W,D]`: x + DropPath(gamma * fc2(GELU(fc1(norm(conv_dw(x)))))), fc1 to mlp_ratio * D.

  `layer_scale_init` None: no gamma (the branch is not scaled).
  """
  kernel_size: int = 7
  mlp_ratio: float = 4.0
  layer_scale_init: float | None = 1e-6
  drop_path_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    d = x.shape[-1]
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    y = conv(d, self.kernel_size, 1, groups=d, name="conv_dw", **kw)(x)  # [B,H,W,D], each channel alone
    y = nn.LayerNorm(epsilon=LN_EPS, name="norm", **kw)(y)
    y = nn.gelu(nn.Dense(int(self.mlp_ratio * d), kernel_init=INIT, name="fc1", **kw)(y), approximate=False)
    y = nn.Dense(d, kernel_init=INIT, name="fc2", **kw)(y)  # [B,H,W,D]
    if self.layer_scale_init is not None:
      gamma = self.param("gamma", nn.initializers.constant(self.layer_scale_init), (d,), self.param_dtype)
      y = y * gamma.astype(self.dtype)
    return x + DropPath()(y, self.drop_path_rate, deterministic=deterministic)


class ConvNeXtStage(nn.Module):
  """Optional downsampling (`downsample_norm`, then the 2x2 stride-2 `downsample_conv` to `width`), then one block
  per rate of `drop_path_rates`: `[B,H,W,D_in] -> [B,H',W',D]` (H' = floor(H/2) when downsampling)."""
  width: int
  drop_path_rates: tuple[float, ...]
  downsample: bool
  kernel_size: int = 7
  mlp_ratio: float = 4.0
  layer_scale_init: float | None = 1e-6
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    if self.downsample:
      x = nn.LayerNorm(epsilon=LN_EPS, name="downsample_norm", **kw)(x)
      x = conv(self.width, 2, 2, pad=False, name="downsample_conv", **kw)(x)  # [B,H/2,W/2,D]
    for j, rate in enumerate(self.drop_path_rates):
      x = ConvNeXtBlock(self.kernel_size, self.mlp_ratio, self.layer_scale_init, rate, name=f"block_{j}",
                        **kw)(x, deterministic=deterministic)
    return x


class ConvNeXt(nn.Module):
  """ConvNeXt classifier.

  Attributes:
    num_classes: K; 0 returns the pooled, normalised features `[B, dims[-1]]`.
    return_grid: with num_classes 0, return the last stage's map `[B,H/32,W/32,dims[-1]]` (before the pool and
      the final LayerNorm, which normalises the pooled vector) instead.
    depths, dims: blocks and width per stage (as many stages as entries).
    kernel_size: of the depthwise convs.
    mlp_ratio: hidden width of the blocks' MLP / their width.
    layer_scale_init: gamma's initial value; None: no layer scale.
    drop_path_rate: stochastic depth of the last block; block n of L (over all stages) uses rate * n / (L-1).
    in_channels: C expected of the input.
    dtype, param_dtype: compute and parameter dtypes.
  """
  inputs: ClassVar[tuple[str, ...]] = ("image",)
  head: ClassVar[str] = "head"
  batch_norm: ClassVar[bool] = False
  num_classes: int
  depths: tuple[int, ...] = (3, 3, 9, 3)
  dims: tuple[int, ...] = (96, 192, 384, 768)
  kernel_size: int = 7
  mlp_ratio: float = 4.0
  layer_scale_init: float | None = 1e-6
  drop_path_rate: float = 0.0
  in_channels: int = 3
  return_grid: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """`[B,H,W,C] -> [B,K]` float32 logits (or `[B,D]` features when num_classes == 0, `[B,h,w,D]` with
    return_grid)."""
    if self.return_grid and self.num_classes:
      raise ValueError(f"return_grid needs num_classes=0 (no classifier); got num_classes={self.num_classes}")
    check_input(self, x)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = conv(self.dims[0], 4, 4, pad=False, name="stem_conv", **kw)(x.astype(self.dtype))  # [B,H/4,W/4,D_0]
    x = nn.LayerNorm(epsilon=LN_EPS, name="stem_norm", **kw)(x)
    for i, (width, rates) in enumerate(zip(self.dims, drop_path_rates(self.drop_path_rate, self.depths))):
      x = ConvNeXtStage(width, rates, downsample=i > 0, kernel_size=self.kernel_size, mlp_ratio=self.mlp_ratio,
                        layer_scale_init=self.layer_scale_init, name=f"stage_{i}", **kw)(
                            x, deterministic=not train)  # [B,H_i,W_i,D_i]
    if self.return_grid:
      return x.astype(jnp.float32)  # [B,h,w,D]
    x = nn.LayerNorm(epsilon=LN_EPS, name="norm", **kw)(x.mean(axis=(1, 2)))  # [B,D]
    if not self.num_classes:
      return x.astype(jnp.float32)
    return nn.Dense(self.num_classes, kernel_init=INIT, name="head", **kw)(x).astype(jnp.float32)


# Sizes from the paper's Section 3 (timm's convnext_{tiny,small,base,large}). Its ImageNet-1k training uses
# stochastic depth 0.1 / 0.4 / 0.5 / 0.5 for T / S / B / L (Appendix A.1); set `drop_path_rate` (default 0, as timm).
VARIANTS = {
    "convnext_t": dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768)),
    "convnext_s": dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768)),
    "convnext_b": dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024)),
    "convnext_l": dict(depths=(3, 3, 27, 3), dims=(192, 384, 768, 1536)),
}

MODELS = {name: functools.partial(ConvNeXt, **kwargs) for name, kwargs in VARIANTS.items()}

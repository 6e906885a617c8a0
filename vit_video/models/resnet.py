"""ResNet v1.5 with BatchNorm, in torchvision's layout (He et al. 2016; stride on the 3x3 conv).

`ResNet(num_classes, stage_sizes, block, ...)` with `block="basic"` (two 3x3 convs, resnet18/34) or
`block="bottleneck"` (1x1 -> 3x3 (stride) -> 1x1 with 4x expansion, resnet50/101/152). Paddings are
torchvision's symmetric ones (7x7 conv: 3, 3x3 conv: 1, 3x3/2 max pool: 1), not TF "SAME", so a
torchvision or timm state dict reproduces its outputs. `num_classes=0` drops the classifier and returns
the pooled features [B,D] (for linear probes and transfer evaluation).

BatchNorm: torchvision's (vit_video.layers.conv.batch_norm), running statistics in the `batch_stats` collection:
`model.apply(v, x, train=True, mutable=["batch_stats"])` updates them, `train=False` uses them. Set `axis_name`
when the batch is split over a named axis (shard_map/pmap) so batch statistics are global.

Parameter names and the torchvision/timm state-dict keys they map to (i is 1-based, j 0-based, as in
torchvision; conv kernels are HWIO = torch OIHW.transpose(2, 3, 1, 0); Dense kernel = torch weight.T):
  conv1/kernel                          conv1.weight
  bn1/{scale,bias}                      bn1.{weight,bias}
  batch_stats: bn1/{mean,var}           bn1.{running_mean,running_var}
  layer{i}/block{j}/conv{k}/kernel      layer{i}.{j}.conv{k}.weight          (k = 1, 2 [, 3 bottleneck])
  layer{i}/block{j}/bn{k}/...           layer{i}.{j}.bn{k}.*
  layer{i}/block0/downsample_conv/...   layer{i}.0.downsample.0.weight
  layer{i}/block0/downsample_bn/...     layer{i}.0.downsample.1.*
  fc/{kernel,bias}                      fc.{weight.T,bias}
"""
import functools
from typing import ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_video.layers.conv import FC_INIT, batch_norm, torch_conv

class BasicBlock(nn.Module):
  """Two 3x3 convs (stride on the first) plus a shortcut; output width `features` (expansion 1)."""
  features: int
  strides: int = 1
  zero_init_last: bool = False  # bn2.scale = 0: the block starts as relu(shortcut).
  axis_name: str | None = None
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  expansion = 1  # Not a field: output channels = expansion * features.

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    """[B,H,W,C] -> [B,ceil(H/s),ceil(W/s),F]; `deterministic`: use BatchNorm running averages."""
    conv = functools.partial(torch_conv, dtype=self.dtype, param_dtype=self.param_dtype)
    norm = batch_norm(deterministic, self.axis_name, self.dtype, self.param_dtype)
    shortcut = x
    if self.strides != 1 or x.shape[-1] != self.features:
      shortcut = conv(self.features, (1, 1), (self.strides,) * 2, name="downsample_conv")(x)
      shortcut = norm(name="downsample_bn")(shortcut)
    y = nn.relu(norm(name="bn1")(conv(self.features, (3, 3), (self.strides,) * 2, name="conv1")(x)))
    y = conv(self.features, (3, 3), (1, 1), name="conv2")(y)
    y = norm(name="bn2", scale_init=nn.initializers.zeros if self.zero_init_last else nn.initializers.ones)(y)
    return nn.relu(shortcut + y)


class BottleneckBlock(nn.Module):
  """1x1 (features) -> 3x3 (features, stride) -> 1x1 (4 * features) plus a shortcut (ResNet v1.5)."""
  features: int
  strides: int = 1
  zero_init_last: bool = False  # bn3.scale = 0: the block starts as relu(shortcut).
  axis_name: str | None = None
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  expansion = 4  # Not a field: output channels = expansion * features.

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    """[B,H,W,C] -> [B,ceil(H/s),ceil(W/s),4F]; `deterministic`: use BatchNorm running averages."""
    conv = functools.partial(torch_conv, dtype=self.dtype, param_dtype=self.param_dtype)
    norm = batch_norm(deterministic, self.axis_name, self.dtype, self.param_dtype)
    out = self.features * self.expansion
    shortcut = x
    if self.strides != 1 or x.shape[-1] != out:
      shortcut = conv(out, (1, 1), (self.strides,) * 2, name="downsample_conv")(x)
      shortcut = norm(name="downsample_bn")(shortcut)
    y = nn.relu(norm(name="bn1")(conv(self.features, (1, 1), (1, 1), name="conv1")(x)))
    y = nn.relu(norm(name="bn2")(conv(self.features, (3, 3), (self.strides,) * 2, name="conv2")(y)))
    y = conv(out, (1, 1), (1, 1), name="conv3")(y)
    y = norm(name="bn3", scale_init=nn.initializers.zeros if self.zero_init_last else nn.initializers.ones)(y)
    return nn.relu(shortcut + y)


BLOCKS = {"basic": BasicBlock, "bottleneck": BottleneckBlock}


class ResNetLayer(nn.Module):
  """One stage (torchvision's `layer{i}`): `num_blocks` blocks `block{j}`, the first one strided."""
  block: str
  num_blocks: int
  features: int
  strides: int
  zero_init_residual: bool = False
  axis_name: str | None = None
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    """[B,H,W,C] -> [B,ceil(H/s),ceil(W/s),expansion*F]."""
    for j in range(self.num_blocks):
      x = BLOCKS[self.block](
          self.features, strides=self.strides if j == 0 else 1, zero_init_last=self.zero_init_residual,
          axis_name=self.axis_name, dtype=self.dtype, param_dtype=self.param_dtype,
          name=f"block{j}")(x, deterministic=deterministic)
    return x


class ResNet(nn.Module):
  """ResNet v1.5 classifier (torchvision layout); `num_classes=0` returns pooled features."""
  inputs: ClassVar[tuple[str, ...]] = ("image",)
  head: ClassVar[str] = "fc"
  batch_norm: ClassVar[bool] = True
  num_classes: int  # 0: no classifier, __call__ returns the pooled features [B,D].
  stage_sizes: Sequence[int]  # Blocks per stage, e.g. (3, 4, 6, 3); stage i has width * 2**i features.
  block: str  # "basic" (resnet18/34) or "bottleneck" (resnet50/101/152).
  width: int = 64  # Stem channels and first-stage bottleneck width (64 in all published models).
  return_grid: bool = False  # With num_classes 0: return the last feature map [B,h,w,D] instead of pooling it.
  zero_init_residual: bool = False  # Zero every block's last BN scale (Goyal et al. 2017); off as in torchvision.
  in_channels: int = 3  # Input channels C, checked on every call.
  axis_name: str | None = None  # Named batch axis for BatchNorm statistics under shard_map/pmap.
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """[B,H,W,C] -> [B,K] float32 logits, or [B,D] float32 pooled features when num_classes == 0.

    D = width * 2**(S-1) * expansion (expansion 1 basic, 4 bottleneck; S = len(stage_sizes)); the last
    feature map is [B,ceil(H/2**(S+1)),ceil(W/2**(S+1)),D]. `train`: BatchNorm uses (and, with
    mutable=["batch_stats"], updates) batch statistics; otherwise the running averages.
    """
    if self.return_grid and self.num_classes:
      raise ValueError(f"return_grid needs num_classes=0 (no classifier); got num_classes={self.num_classes}")
    if self.block not in BLOCKS:
      raise ValueError(f"block {self.block!r} is not one of {sorted(BLOCKS)}")
    if not self.stage_sizes:
      raise ValueError("stage_sizes is empty; a ResNet needs at least one stage")
    if x.ndim != 4 or x.shape[-1] != self.in_channels:
      raise ValueError(f"input shape {x.shape} is not [B,H,W,C] with C = in_channels = {self.in_channels}")
    x = torch_conv(self.width, (7, 7), (2, 2), dtype=self.dtype, param_dtype=self.param_dtype,
                   name="conv1")(x)  # [B,ceil(H/2),ceil(W/2),width]
    x = batch_norm(not train, self.axis_name, self.dtype, self.param_dtype)(name="bn1")(x)
    x = nn.relu(x)
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))  # [B,ceil(H/4),ceil(W/4),width]
    for i, num_blocks in enumerate(self.stage_sizes):
      x = ResNetLayer(
          self.block, num_blocks, self.width * 2**i, strides=1 if i == 0 else 2,
          zero_init_residual=self.zero_init_residual, axis_name=self.axis_name, dtype=self.dtype,
          param_dtype=self.param_dtype, name=f"layer{i + 1}")(x, deterministic=not train)
    if self.return_grid:
      return x.astype(jnp.float32)  # [B,h,w,D]
    x = jnp.mean(x, axis=(1, 2), dtype=jnp.float32)  # [B,D]
    if self.num_classes == 0:
      return x
    x = nn.Dense(self.num_classes, kernel_init=FC_INIT, dtype=self.dtype, param_dtype=self.param_dtype,
                 name="fc")(x)  # [B,K]
    return x.astype(jnp.float32)


# Name -> ResNet attributes; build with ResNet(num_classes=K, **VARIANTS[name]).
VARIANTS = {
    "resnet18": dict(stage_sizes=(2, 2, 2, 2), block="basic"),
    "resnet34": dict(stage_sizes=(3, 4, 6, 3), block="basic"),
    "resnet50": dict(stage_sizes=(3, 4, 6, 3), block="bottleneck"),
    "resnet101": dict(stage_sizes=(3, 4, 23, 3), block="bottleneck"),
    "resnet152": dict(stage_sizes=(3, 8, 36, 3), block="bottleneck"),
}

MODELS = {name: functools.partial(ResNet, **kwargs) for name, kwargs in VARIANTS.items()}

"""BiT (Big Transfer, Kolesnikov et al. 2020): ResNet-v2 with weight standardisation and GroupNorm.

`BiT`, the pre-activation ResNet-v2 classifier of the BiT paper, matches timm's `resnetv2_{50x1,...}_bit` forward:
BiT's root (vit_video.layers.stems.BiTRoot: StdConv 7x7/2, zero padding, 3x3/2 max pool); stages of
pre-activation bottlenecks `relu(GN(x))` -> 1x1 -> relu(GN) -> 3x3 (stride) -> relu(GN) -> 1x1 (4x), the
projection shortcut (first unit of every stage) taking the pre-activated input; then relu(GN) -> global
average pool -> zero-initialised Dense head. Convs are weight-standardised (vit_video.layers.conv.StdConv, timm's
(w - mean) / sqrt(var + 1e-8)) and pad symmetrically (k // 2) as in timm and BiT's own PyTorch code, not TF "SAME";
GroupNorm eps 1e-5 as timm. Names follow timm with `.` -> `/` (conv kernels HWIO = torch OIHW
.transpose(2, 3, 1, 0); i and j 0-based, as in timm):
  stem_conv/kernel                           stem.conv.weight
  stage{i}/block{j}/{norm,conv}{k}           stages.{i}.blocks.{j}.{norm,conv}{k}   (k = 1, 2, 3)
  stage{i}/block0/downsample_conv/kernel     stages.{i}.blocks.0.downsample.conv.weight
  norm/{scale,bias}                          norm.{weight,bias}
  head/{kernel,bias}                         head.fc.weight[:, :, 0, 0].T, head.fc.bias
(The ViT hybrids' post-activation trunk is vit_video.layers.stems.ResNetStem.)
"""
import functools
from typing import ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_video.layers.conv import StdConv
from vit_video.layers.stems import BiTRoot


class PreActBottleneck(nn.Module):
  """Pre-activation bottleneck unit: `[B,H,W,C] -> [B,ceil(H/s),ceil(W/s),4F]`.

  x + conv3(relu(GN(conv2(relu(GN(conv1(relu(GN(x))))))))), with the shortcut a 1x1 strided projection
  of relu(GN(x)) when `project` (the first unit of a stage).
  """
  features: int  # Bottleneck width F; the unit outputs 4F channels.
  strides: int = 1
  project: bool = False
  num_groups: int = 32
  gn_epsilon: float = 1e-5
  std_eps: float = 1e-8
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = functools.partial(StdConv, eps=self.std_eps, dtype=self.dtype, param_dtype=self.param_dtype)
    norm = functools.partial(nn.GroupNorm, num_groups=self.num_groups, epsilon=self.gn_epsilon,
                             use_fast_variance=False, dtype=self.dtype, param_dtype=self.param_dtype)
    s = (self.strides, self.strides)
    x_preact = nn.relu(norm(name="norm1")(x))
    shortcut = x
    if self.project:
      shortcut = conv(4 * self.features, (1, 1), s, padding="VALID", name="downsample_conv")(x_preact)
    y = conv(self.features, (1, 1), padding="VALID", name="conv1")(x_preact)
    y = conv(self.features, (3, 3), s, padding=((1, 1), (1, 1)), name="conv2")(nn.relu(norm(name="norm2")(y)))
    y = conv(4 * self.features, (1, 1), padding="VALID", name="conv3")(nn.relu(norm(name="norm3")(y)))
    return y + shortcut


class BiTStage(nn.Module):
  """`num_blocks` pre-activation units `block{j}`; the first projects and strides."""
  num_blocks: int
  features: int
  strides: int
  num_groups: int = 32
  gn_epsilon: float = 1e-5
  std_eps: float = 1e-8
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[B,H,W,C] -> [B,ceil(H/s),ceil(W/s),4F]."""
    for j in range(self.num_blocks):
      x = PreActBottleneck(
          self.features, strides=self.strides if j == 0 else 1, project=j == 0, num_groups=self.num_groups,
          gn_epsilon=self.gn_epsilon, std_eps=self.std_eps, dtype=self.dtype, param_dtype=self.param_dtype,
          name=f"block{j}")(x)
    return x


class BiT(nn.Module):
  """BiT ResNet-v2 classifier (timm `resnetv2_*_bit` layout); `num_classes=0` returns pooled features."""
  inputs: ClassVar[tuple[str, ...]] = ("image",)
  head: ClassVar[str] = "head"
  batch_norm: ClassVar[bool] = False
  num_classes: int  # 0: no head, __call__ returns the pooled features [B,D].
  stage_sizes: Sequence[int]  # Units per stage, e.g. (3, 4, 6, 3) for R50.
  width_factor: int = 1  # The "x1".."x4" of BiT-R50x1..; multiplies every width.
  width: int = 64  # Base width: stem channels at width_factor 1 (64 in all published models).
  num_groups: int = 32  # GroupNorm groups.
  gn_epsilon: float = 1e-5  # timm's GroupNorm epsilon.
  std_eps: float = 1e-8  # Weight standardisation, (w - mean) / sqrt(var + std_eps), as timm.
  in_channels: int = 3  # Input channels C, checked on every call.
  return_grid: bool = False  # With num_classes 0: return the final map relu(norm(x)) [B,h,w,D] instead of pooling.
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """[B,H,W,C] -> [B,K] float32 logits, or [B,D] float32 pooled features when num_classes == 0.

    D = 4 * width * width_factor * 2**(S-1) (S = len(stage_sizes)); the last feature map is
    [B,ceil(H/2**(S+1)),ceil(W/2**(S+1)),D]. `train` is unused: GroupNorm has no train mode and BiT has
    no dropout.
    """
    del train
    if self.return_grid and self.num_classes:
      raise ValueError(f"return_grid needs num_classes=0 (no classifier); got num_classes={self.num_classes}")
    if not self.stage_sizes:
      raise ValueError("stage_sizes is empty; BiT needs at least one stage")
    if x.ndim != 4 or x.shape[-1] != self.in_channels:
      raise ValueError(f"input shape {x.shape} is not [B,H,W,C] with C = in_channels = {self.in_channels}")
    width = self.width * self.width_factor
    x = BiTRoot(width, eps=self.std_eps, dtype=self.dtype, param_dtype=self.param_dtype,
                name="stem_conv")(x)  # [B,ceil(H/4),ceil(W/4),width]
    for i, num_blocks in enumerate(self.stage_sizes):
      x = BiTStage(num_blocks, width * 2**i, strides=1 if i == 0 else 2, num_groups=self.num_groups,
                   gn_epsilon=self.gn_epsilon, std_eps=self.std_eps, dtype=self.dtype,
                   param_dtype=self.param_dtype, name=f"stage{i}")(x)
    x = nn.GroupNorm(num_groups=self.num_groups, epsilon=self.gn_epsilon, use_fast_variance=False,
                     dtype=self.dtype, param_dtype=self.param_dtype, name="norm")(x)
    if self.return_grid:
      return nn.relu(x).astype(jnp.float32)  # [B,h,w,D]
    x = jnp.mean(nn.relu(x), axis=(1, 2), dtype=jnp.float32)  # [B,D]
    if self.num_classes == 0:
      return x
    x = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, dtype=self.dtype,
                 param_dtype=self.param_dtype, name="head")(x)  # [B,K]
    return x.astype(jnp.float32)


# Name -> BiT attributes; build with BiT(num_classes=K, **VARIANTS[name]).
VARIANTS = {
    "bit_r50x1": dict(stage_sizes=(3, 4, 6, 3), width_factor=1),
    "bit_r50x3": dict(stage_sizes=(3, 4, 6, 3), width_factor=3),
    "bit_r101x1": dict(stage_sizes=(3, 4, 23, 3), width_factor=1),
    "bit_r101x3": dict(stage_sizes=(3, 4, 23, 3), width_factor=3),
    "bit_r152x2": dict(stage_sizes=(3, 8, 36, 3), width_factor=2),
    "bit_r152x4": dict(stage_sizes=(3, 8, 36, 3), width_factor=4),
}

MODELS = {name: functools.partial(BiT, **kwargs) for name, kwargs in VARIANTS.items()}

"""I3D-style 3D ResNet-50 and its non-local version (Wang et al. 2018, "Non-local neural networks", Table 1).

The ResNet-50 of resnet.py (v1.5, torchvision layout, BatchNorm) with 3D kernels:

  conv1  5x7x7, 64, stride (temporal_strides[0], 2, 2), padding (2, 3, 3)
  pool1  3x3x3 max, stride (temporal_strides[1], 2, 2), padding 1 (1x3x3 when temporal_strides[1] == 1)
  layer1 bottlenecks [kt x1x1, 64; 1x3x3, 64; 1x1x1, 256] x 3
  pool2  3x1x1 max, stride (temporal_strides[2], 1, 1), padding (1, 0, 0) (none when temporal_strides[2] == 1)
  layer2..4 as layer1 at widths 128, 256, 512 (x 4, 6, 3), spatial stride 2 on the first block's 1x3x3 conv
  global average pool over (T, H, W), fc

kt = 3 (padding 1) in the first conv of block j of layer i where `inflate[i][j]` is 1, else 1: the papers'
(1,1,1), (1,0,1,0), (1,0,1,0,1,0), (0,1,0). Defaults follow the non-local paper: a 32x224x224 clip becomes
16x112x112 after conv1, 8x56x56 after pool1, 4x56x56 after pool2 and 4x7x7 after layer4.

`nl_i3d_r50` inserts a non-local block after blocks 1 and 3 of layer2 and 1, 3, 5 of layer3 (the paper's 5
blocks, "every other residual block"): `FeatureSelfAttention` over all T*H*W positions with C/2 channels for
queries, keys and values as in the paper, embedded Gaussian (softmax) or dot-product (`nonlocal_mode`), and a
zero-initialised gain, so the block is the identity at initialisation (the paper zero-initialises a BatchNorm
scale instead; its max-pool subsampling of keys and values is left out).

Parameter names are those of resnet.ResNet (conv1, bn1, layer{i}/block{j}/{conv,bn}{k},
layer{i}/block0/downsample_{conv,bn}, fc) with 5D kernels [kt,kh,kw,C,D], plus layer{i}/nonlocal{j}/...;
`checkpoints.inflate.i3d_from_resnet` maps a 2D ResNet-50's variables onto them.
"""
import functools
from typing import ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_video.layers.feature_attention import FeatureSelfAttention
from vit_video.layers.conv import FC_INIT, batch_norm, torch_conv


class Bottleneck3D(nn.Module):
  """kt x1x1 (features) -> 1x3x3 (features, spatial stride) -> 1x1x1 (4 features), plus a shortcut."""
  features: int
  strides: int = 1  # Spatial stride of the 1x3x3 conv and the projection shortcut.
  temporal_kernel: int = 1  # kt of the first conv: 3 in "inflated" blocks, else 1.
  zero_init_last: bool = False  # bn3.scale = 0: the block starts as relu(shortcut).
  axis_name: str | None = None
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    """[B,T,H,W,C] -> [B,T,ceil(H/s),ceil(W/s),4F]; `deterministic`: use BatchNorm running averages."""
    conv = functools.partial(torch_conv, dtype=self.dtype, param_dtype=self.param_dtype)
    norm = batch_norm(deterministic, self.axis_name, self.dtype, self.param_dtype)
    out, s = 4 * self.features, (1, self.strides, self.strides)
    shortcut = x
    if self.strides != 1 or x.shape[-1] != out:
      shortcut = norm(name="downsample_bn")(conv(out, (1, 1, 1), s, name="downsample_conv")(x))
    y = nn.relu(norm(name="bn1")(conv(self.features, (self.temporal_kernel, 1, 1), (1, 1, 1), name="conv1")(x)))
    y = nn.relu(norm(name="bn2")(conv(self.features, (1, 3, 3), s, name="conv2")(y)))
    y = conv(out, (1, 1, 1), (1, 1, 1), name="conv3")(y)
    y = norm(name="bn3", scale_init=nn.initializers.zeros if self.zero_init_last else nn.initializers.ones)(y)
    return nn.relu(shortcut + y)


class I3DLayer(nn.Module):
  """One stage `layer{i}`: blocks `block{j}` (the first strided), a non-local block `nonlocal{j}` after some."""
  num_blocks: int
  features: int
  strides: int
  inflate: Sequence[int]  # Per block: 1 for a 3x1x1 first conv, 0 for 1x1x1.
  nonlocal_after: Sequence[int] = ()  # Block indices followed by a non-local block.
  nonlocal_mode: str = "embedded_gaussian"
  zero_init_residual: bool = False
  axis_name: str | None = None
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    """[B,T,H,W,C] -> [B,T,ceil(H/s),ceil(W/s),4F]."""
    for j in range(self.num_blocks):
      x = Bottleneck3D(self.features, self.strides if j == 0 else 1, 3 if self.inflate[j] else 1,
                       self.zero_init_residual, self.axis_name, self.dtype, self.param_dtype,
                       name=f"block{j}")(x, deterministic=deterministic)
      if j in self.nonlocal_after:
        x = FeatureSelfAttention(qk_reduction=2, value_reduction=2, mode=self.nonlocal_mode, dtype=self.dtype,
                                 param_dtype=self.param_dtype, name=f"nonlocal{j}")(x)
    return x


class I3DResNet(nn.Module):
  """I3D-style 3D ResNet (bottleneck blocks), optionally with non-local blocks; `num_classes=0`: features."""
  inputs: ClassVar[tuple[str, ...]] = ("video",)
  head: ClassVar[str] = "fc"
  batch_norm: ClassVar[bool] = True
  num_classes: int  # 0: no classifier, __call__ returns the pooled features [B,D].
  stage_sizes: Sequence[int] = (3, 4, 6, 3)  # Blocks per stage (ResNet-50).
  inflate: Sequence[Sequence[int]] = ((1, 1, 1), (1, 0, 1, 0), (1, 0, 1, 0, 1, 0), (0, 1, 0))  # 1: 3x1x1 conv1.
  nonlocal_after: Sequence[Sequence[int]] = ((), (), (), ())  # Per stage: blocks followed by a non-local block.
  nonlocal_mode: str = "embedded_gaussian"  # or "dot_product" (FeatureSelfAttention's modes).
  temporal_strides: tuple[int, int, int] = (2, 2, 2)  # conv1, pool1, pool2 (the non-local paper's 32 -> 4).
  width: int = 64  # Stem channels and first-stage bottleneck width.
  zero_init_residual: bool = False
  in_channels: int = 3
  axis_name: str | None = None
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """[B,T,H,W,C] -> [B,K] float32 logits, or [B,D] pooled features (D = 4 width 2**(S-1)) if K == 0.

    Time: T -> ceil(T/s0) (conv1) -> ceil(./s1) (pool1) -> ceil(./s2) (pool2); space as resnet.ResNet.
    `train`: BatchNorm uses (and, with mutable=["batch_stats"], updates) batch statistics.
    """
    n = len(self.stage_sizes)
    if n == 0 or len(self.inflate) != n or len(self.nonlocal_after) != n:
      raise ValueError(f"stage_sizes {tuple(self.stage_sizes)}, inflate and nonlocal_after need one entry per "
                       f"stage, got {n}, {len(self.inflate)}, {len(self.nonlocal_after)}")
    for i, (blocks, inflate, nl) in enumerate(zip(self.stage_sizes, self.inflate, self.nonlocal_after)):
      if len(inflate) != blocks or any(not 0 <= j < blocks for j in nl):
        raise ValueError(f"stage {i} has {blocks} blocks but inflate {tuple(inflate)} and nonlocal_after "
                         f"{tuple(nl)} (indices must be < {blocks})")
    if x.ndim != 5 or x.shape[-1] != self.in_channels:
      raise ValueError(f"input shape {x.shape} is not [B,T,H,W,C] with C = in_channels = {self.in_channels}")
    s0, s1, s2 = self.temporal_strides
    x = torch_conv(self.width, (5, 7, 7), (s0, 2, 2), dtype=self.dtype, param_dtype=self.param_dtype, name="conv1")(x)
    x = nn.relu(batch_norm(not train, self.axis_name, self.dtype, self.param_dtype)(name="bn1")(x))
    kt1 = 3 if s1 > 1 else 1
    x = nn.max_pool(x, (kt1, 3, 3), (s1, 2, 2), padding=((kt1 // 2,) * 2, (1, 1), (1, 1)))  # [B,T1,H/4,W/4,width]
    for i, num_blocks in enumerate(self.stage_sizes):
      if i == 1 and s2 > 1:
        x = nn.max_pool(x, (3, 1, 1), (s2, 1, 1), padding=((1, 1), (0, 0), (0, 0)))  # pool2: [B,ceil(T1/s2),...]
      x = I3DLayer(num_blocks, self.width * 2**i, 1 if i == 0 else 2, self.inflate[i], self.nonlocal_after[i],
                   self.nonlocal_mode, self.zero_init_residual, self.axis_name, self.dtype, self.param_dtype,
                   name=f"layer{i + 1}")(x, deterministic=not train)
    x = jnp.mean(x, axis=(1, 2, 3), dtype=jnp.float32)  # [B,D]
    if self.num_classes == 0:
      return x
    return nn.Dense(self.num_classes, kernel_init=FC_INIT, dtype=self.dtype, param_dtype=self.param_dtype,
                    name="fc")(x).astype(jnp.float32)


MODELS = {
    "i3d_r50": functools.partial(I3DResNet),
    "nl_i3d_r50": functools.partial(I3DResNet, nonlocal_after=((), (1, 3), (1, 3, 5), ())),
}

"""Stems: BiT's root and the ViT hybrids' ResNet trunk (the layers before the patches or the stages).

`BiTRoot`: BiT's (Kolesnikov et al. 2020) root as timm's `resnetv2_*_bit` runs it: StdConv 7x7/2 (padding 3), zero
padding 1, then a 3x3/2 max pool without padding (BiT's "fixed" padding: the conv is not followed by a relu, so zero
padding differs from max-pool's -inf padding).

`ResNetStem`: the post-activation trunk of the ViT hybrids (vit_jax `models_resnet.py`), with vit_jax's parameter
names (conv_root, gn_root, block{i}/unit{j}/{conv,gn}{1,2,3}, conv_proj, gn_proj; i, j 1-based), TF "SAME"
padding everywhere and vit_jax's numerics by default (weight standardisation (w - mean) / (std + 1e-5), GroupNorm
eps 1e-6), so R50+ViT .npz checkpoints map 1:1; timm's port uses eps 1e-8 on the variance and GroupNorm eps 1e-5.
"""
import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_video.layers.conv import StdConv


class BiTRoot(StdConv):
  """BiT's root: `[B,H,W,C] -> [B,ceil(H/4),ceil(W/4),features]`: the StdConv 7x7/2 (padding 3), zero padding 1,
  3x3/2 max pool.

  A StdConv subclass rather than a module holding one, so that its only parameter is its own `kernel`: BiT names
  the root `stem_conv`, and `stem_conv/kernel` stays timm's `stem.conv.weight` and big_transfer's root conv.
  """
  kernel_size: tuple[int, int] = (7, 7)
  strides: tuple[int, int] = (2, 2)
  padding: str | Sequence[tuple[int, int]] = ((3, 3), (3, 3))

  def __call__(self, x: jax.Array) -> jax.Array:
    x = super().__call__(x)  # [B,ceil(H/2),ceil(W/2),features]
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))  # Zeros, not -inf: BiT's "fixed" padding.
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")  # [B,ceil(H/4),ceil(W/4),features]


class ResidualUnit(nn.Module):
  """vit_jax's post-activation bottleneck: `[B,H,W,C] -> [B,ceil(H/s),ceil(W/s),4F]`.

  relu(proj(x) + GN3(conv3(relu(GN2(conv2(relu(GN1(conv1(x))))))))), with gn3's scale zero-initialised
  (the unit starts as relu(proj(x))) and proj = GN(1x1 strided conv) when the shape changes, else identity.
  """
  features: int  # Bottleneck width F; the unit outputs 4F channels.
  strides: int = 1
  num_groups: int = 32
  gn_epsilon: float = 1e-6
  std_eps: float = 1e-5
  eps_on_std: bool = True
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = functools.partial(StdConv, eps=self.std_eps, eps_on_std=self.eps_on_std, dtype=self.dtype,
                             param_dtype=self.param_dtype)
    norm = functools.partial(nn.GroupNorm, num_groups=self.num_groups, epsilon=self.gn_epsilon,
                             use_fast_variance=False, dtype=self.dtype, param_dtype=self.param_dtype)
    s = (self.strides, self.strides)
    residual = x
    if x.shape[-1] != 4 * self.features or self.strides != 1:
      residual = norm(name="gn_proj")(conv(4 * self.features, (1, 1), s, name="conv_proj")(x))
    y = nn.relu(norm(name="gn1")(conv(self.features, (1, 1), name="conv1")(x)))
    y = nn.relu(norm(name="gn2")(conv(self.features, (3, 3), s, name="conv2")(y)))
    y = norm(name="gn3", scale_init=nn.initializers.zeros)(conv(4 * self.features, (1, 1), name="conv3")(y))
    return nn.relu(residual + y)


class ResidualStage(nn.Module):
  """vit_jax's ResNetStage: `num_units` units `unit{j}` (1-based), the first one strided."""
  num_units: int
  features: int
  first_stride: int = 1
  num_groups: int = 32
  gn_epsilon: float = 1e-6
  std_eps: float = 1e-5
  eps_on_std: bool = True
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[B,H,W,C] -> [B,ceil(H/s),ceil(W/s),4F]."""
    for j in range(self.num_units):
      x = ResidualUnit(self.features, strides=self.first_stride if j == 0 else 1, num_groups=self.num_groups,
                       gn_epsilon=self.gn_epsilon, std_eps=self.std_eps, eps_on_std=self.eps_on_std, dtype=self.dtype,
                       param_dtype=self.param_dtype, name=f"unit{j + 1}")(x)
    return x


class ResNetStem(nn.Module):
  """The ResNet trunk of the ViT hybrids (vit_jax), with vit_jax's parameter names.

  Root: conv_root 7x7/2 -> gn_root -> relu -> 3x3/2 max pool, all TF "SAME"; then stages `block{i}` of
  units `unit{j}` (1-based), bottleneck width width * width_factor * 2**(i-1), stride 1 in the first stage
  and 2 after. Channels C are taken from the input (no check beyond the rank: the caller checks them).
  """
  stage_sizes: Sequence[int] = ()  # Units per stage; () is the root block alone, (3, 4, 9) for R50+ViT-B/16.
  width_factor: float = 1.0  # Width = int(width * width_factor), as vit_jax.
  width: int = 64  # Base width (64 in all published models).
  num_groups: int = 32
  gn_epsilon: float = 1e-6  # Flax's default, as in vit_jax.
  std_eps: float = 1e-5  # Added to the kernel's std, as in vit_jax.
  eps_on_std: bool = True  # vit_jax: (w - mean) / (std + eps); False: / sqrt(var + eps), as timm.
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[B,H,W,C] -> [B,ceil(H/R),ceil(W/R),D], R = 4 * 2**max(S-1, 0).

    D = int(width * width_factor) for S = 0 stages, else 4 * int(width * width_factor) * 2**(S-1).
    """
    if x.ndim != 4:
      raise ValueError(f"input shape {x.shape} is not [B,H,W,C]")
    width = int(self.width * self.width_factor)
    x = StdConv(width, (7, 7), (2, 2), eps=self.std_eps, eps_on_std=self.eps_on_std, dtype=self.dtype,
                param_dtype=self.param_dtype, name="conv_root")(x)  # [B,ceil(H/2),ceil(W/2),width]
    x = nn.GroupNorm(num_groups=self.num_groups, epsilon=self.gn_epsilon, use_fast_variance=False,
                     dtype=self.dtype, param_dtype=self.param_dtype, name="gn_root")(x)
    x = nn.max_pool(nn.relu(x), (3, 3), strides=(2, 2), padding="SAME")  # [B,ceil(H/4),ceil(W/4),width]
    for i, num_units in enumerate(self.stage_sizes):
      x = ResidualStage(num_units, width * 2**i, first_stride=1 if i == 0 else 2, num_groups=self.num_groups,
                        gn_epsilon=self.gn_epsilon, std_eps=self.std_eps, eps_on_std=self.eps_on_std,
                        dtype=self.dtype, param_dtype=self.param_dtype, name=f"block{i + 1}")(x)
    return x

"""BiT (Big Transfer, Kolesnikov et al. 2020): ResNet-v2 with weight standardisation and GroupNorm.

Two trunks share `StdConv` (a conv whose kernel is standardised per output channel on every call):

`BiT`: the pre-activation ResNet-v2 classifier of the BiT paper, matching timm's `resnetv2_{50x1,...}_bit`
forward: stem StdConv 7x7/2 (padding 3) -> zero padding 1 -> 3x3/2 max pool (BiT's "fixed" padding: the
stem is not followed by a relu, so padding with zeros is not the same as max-pool's -inf padding); stages of
pre-activation bottlenecks `relu(GN(x))` -> 1x1 -> relu(GN) -> 3x3 (stride) -> relu(GN) -> 1x1 (4x), the
projection shortcut (first unit of every stage) taking the pre-activated input; then relu(GN) -> global
average pool -> zero-initialised Dense head. Convs pad symmetrically (k // 2) as in timm and BiT's own
PyTorch code, not TF "SAME". Names follow timm with `.` -> `/` (conv kernels HWIO = torch OIHW
.transpose(2, 3, 1, 0); i and j 0-based, as in timm):
  stem_conv/kernel                           stem.conv.weight
  stage{i}/block{j}/{norm,conv}{k}           stages.{i}.blocks.{j}.{norm,conv}{k}   (k = 1, 2, 3)
  stage{i}/block0/downsample_conv/kernel     stages.{i}.blocks.0.downsample.conv.weight
  norm/{scale,bias}                          norm.{weight,bias}
  head/{kernel,bias}                         head.fc.weight[:, :, 0, 0].T, head.fc.bias

`ResNetStem`: the post-activation trunk of the ViT hybrids (vit_jax `models_resnet.py`), with vit_jax's
parameter names (conv_root, gn_root, block{i}/unit{j}/{conv,gn}{1,2,3}, conv_proj, gn_proj; i, j 1-based),
TF "SAME" padding everywhere and vit_jax's numerics, so R50+ViT .npz checkpoints map 1:1.

Weight-standardisation epsilon. timm's BiT and hybrid models use (w - mean) / sqrt(var + 1e-8); BiT's own
PyTorch code used 1e-10 inside the sqrt; vit_jax and big_vision use (w - mean) / (std + 1e-5), with the
epsilon on the standard deviation, not the variance. `StdConv.eps_on_std` picks the form: `BiT` defaults to
timm's (1e-8 on the variance), `ResNetStem` to vit_jax's (1e-5 on the std). GroupNorm epsilon: timm 1e-5
(`BiT`), Flax's default 1e-6 as used by vit_jax (`ResNetStem`).
"""
import functools
from typing import Callable, ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# kaiming_normal_(mode="fan_out") as in timm; standardisation removes the scale anyway.
CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def standardize(w: jax.Array, *, eps: float, eps_on_std: bool = False) -> jax.Array:
  """Standardises a kernel [..., O] over all axes but the last, in float32.

  (w - mean) / sqrt(var + eps), or (w - mean) / (std + eps) when `eps_on_std` (vit_jax, big_vision); the
  variance is the biased one.
  """
  w = w.astype(jnp.float32)
  axes = tuple(range(w.ndim - 1))
  w = w - jnp.mean(w, axis=axes, keepdims=True)
  var = jnp.mean(jnp.square(w), axis=axes, keepdims=True)
  return w / (jnp.sqrt(var) + eps) if eps_on_std else w * jax.lax.rsqrt(var + eps)


class StdConv(nn.Module):
  """Bias-free 2D conv with a weight-standardised kernel: `[B,H,W,C] -> [B,H',W',features]`.

  The stored parameter `kernel` [kh,kw,C,O] is raw; `standardize` runs on every call, in float32, before
  the kernel is cast to `dtype`.
  """
  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  padding: str | Sequence[tuple[int, int]] = "SAME"  # "SAME", "VALID" or ((top, bottom), (left, right)).
  eps: float = 1e-8
  eps_on_std: bool = False  # Add eps to the std (vit_jax) rather than to the variance (timm, BiT).
  kernel_init: Callable = CONV_INIT
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", self.kernel_init, (*self.kernel_size, x.shape[-1], self.features),
                        self.param_dtype)  # [kh,kw,C,O]
    w = standardize(kernel, eps=self.eps, eps_on_std=self.eps_on_std)
    return jax.lax.conv_general_dilated(
        x.astype(self.dtype), w.astype(self.dtype), self.strides, self.padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"))


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
    if not self.stage_sizes:
      raise ValueError("stage_sizes is empty; BiT needs at least one stage")
    if x.ndim != 4 or x.shape[-1] != self.in_channels:
      raise ValueError(f"input shape {x.shape} is not [B,H,W,C] with C = in_channels = {self.in_channels}")
    width = self.width * self.width_factor
    x = StdConv(width, (7, 7), (2, 2), padding=((3, 3), (3, 3)), eps=self.std_eps, dtype=self.dtype,
                param_dtype=self.param_dtype, name="stem_conv")(x)  # [B,ceil(H/2),ceil(W/2),width]
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))  # Zeros, not -inf: BiT's "fixed" padding.
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")  # [B,ceil(H/4),ceil(W/4),width]
    for i, num_blocks in enumerate(self.stage_sizes):
      x = BiTStage(num_blocks, width * 2**i, strides=1 if i == 0 else 2, num_groups=self.num_groups,
                   gn_epsilon=self.gn_epsilon, std_eps=self.std_eps, dtype=self.dtype,
                   param_dtype=self.param_dtype, name=f"stage{i}")(x)
    x = nn.GroupNorm(num_groups=self.num_groups, epsilon=self.gn_epsilon, use_fast_variance=False,
                     dtype=self.dtype, param_dtype=self.param_dtype, name="norm")(x)
    x = jnp.mean(nn.relu(x), axis=(1, 2), dtype=jnp.float32)  # [B,D]
    if self.num_classes == 0:
      return x
    x = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, dtype=self.dtype,
                 param_dtype=self.param_dtype, name="head")(x)  # [B,K]
    return x.astype(jnp.float32)


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

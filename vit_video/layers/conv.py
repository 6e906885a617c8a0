"""Shared CNN pieces: initialisers, torch-padded convs, torchvision's BatchNorm, weight-standardised convs.

  torch_conv    a bias-free conv with torch's symmetric padding k // 2 on every axis (ResNet, I3D), not TF "SAME",
                so torchvision and timm state dicts reproduce their outputs
  batch_norm    BatchNorm with torchvision's hyperparameters, averaged over `axis_name` under pmap/shard_map
  StdConv       a bias-free 2D conv whose kernel is standardised per output channel on every call (BiT, the ViT
                hybrids' trunk: `standardize`)
"""
import functools
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_video.layers import conv_lowering

# kaiming_normal_(mode="fan_out", nonlinearity="relu"), torchvision's and timm's conv init (ResNet, I3D, BiT).
CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# nn.Linear's default U(+-1/sqrt(fan_in)) for a classifier kernel (its bias starts at zero here).
FC_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
# He init for ReLU layers in networks without normalisation layers (C3D, Karpathy et al.'s towers, LRCN, two-stream).
RELU_INIT = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def torch_conv(features: int, kernel_size: Sequence[int], strides: Sequence[int], *, dtype: jnp.dtype,
               param_dtype: jnp.dtype, name: str) -> nn.Conv:
  """A bias-free conv (2D or 3D, one entry per axis) padded k // 2 on both sides of every axis, CONV_INIT:
  `[B,*S,C] -> [B,*ceil(S/s),F]` for odd kernels."""
  return nn.Conv(features, tuple(kernel_size), tuple(strides), padding=[(k // 2, k // 2) for k in kernel_size],
                 use_bias=False, kernel_init=CONV_INIT, dtype=dtype, param_dtype=param_dtype, name=name,
                 conv_general_dilated=conv_lowering.conv_general_dilated)


def batch_norm(deterministic: bool, axis_name: str | None, dtype: jnp.dtype, param_dtype: jnp.dtype):
  """`nn.BatchNorm` with torchvision's hyperparameters (momentum 0.1 in torch's convention, 0.9 in Flax's; eps 1e-5),
  partially applied: call it with `name=` (and `scale_init=`). `deterministic`: use the running averages.

  Flax updates the running variance with the biased batch variance where torch uses the unbiased one; this only
  matters when importing a torch training run mid-way. Under `jit` with a sharded batch the statistics are global
  already; under pmap or shard_map, `axis_name` names the batch axis to average them over.
  """
  return functools.partial(nn.BatchNorm, use_running_average=deterministic, momentum=0.9, epsilon=1e-5,
                           use_fast_variance=False, axis_name=axis_name, dtype=dtype, param_dtype=param_dtype)


def standardize(w: jax.Array, *, eps: float, eps_on_std: bool = False) -> jax.Array:
  """Standardises a kernel [..., O] over all axes but the last, in float32.

  (w - mean) / sqrt(var + eps), or (w - mean) / (std + eps) when `eps_on_std` (vit_jax, big_vision); the
  variance is the biased one. timm's BiT and hybrids use 1e-8 on the variance, BiT's own PyTorch code 1e-10,
  vit_jax and big_vision 1e-5 on the standard deviation.
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
    return conv_lowering.conv_general_dilated(  # XLA's conv; its kernel gradient as matmuls
        x.astype(self.dtype), w.astype(self.dtype), self.strides, self.padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"))

"""A drop-in `lax.conv_general_dilated` that lowers convolutions to what XLA's CPU backend runs fast.

Three rewrites, each measured on a train step here (batch 8 at 224px for images, one 16x224x224 clip for video,
2-core CPU, benchmarks/vs_pytorch.py; README "Speed against PyTorch"):

- Kernel gradients as one matrix product per kernel tap. XLA rewrites a kernel gradient as a convolution whose
  window is the whole output map (dim_labels b01f_01io->b01f, e.g. a 28x28 window, a 2x2 kernel dilation for a
  strided conv), after transposing the activations to channel-major; its CPU backend runs that at a tenth of its
  matmul rate (ResNet-50's 1x1 layers: 10-13 GFLOP/s, their forward passes 60-150). A tap's gradient is a plain
  product, dW[tap] = sum over (b, output position) of x_padded[b, stride * position + tap, :]^T g[b, position, :],
  which XLA's dot runs at 70-110 GFLOP/s. ResNet-50: 4.1 s -> 2.5 s (2.74 s with the products for 1x1 and 3x1x1
  kernels only: the 3x3 and 7x7 ones gain too).
- 3D convolutions as the sum over the kernel's temporal taps of a 2D convolution of the frames each tap sees
  (folded into the batch): I3D-R50 2.32 s -> 1.56 s.
- Depthwise convolutions (one kernel per channel) as the sum over taps of the shifted input times the tap's weights,
  elementwise work that XLA fuses, where it runs grouped convolutions as scalar loops: MViT-B's 3D pooling convs
  took 68% of a 22.5 s step; 5.5 s after.

Forward passes and input gradients of 2D convolutions are XLA's own (its transposed convolution); everything else
equals XLA's up to float summation order (tests/layers/test_conv_lowering.py). Dilated convolutions, grouped ones
other than depthwise, and other dimension orders fall through to `lax.conv_general_dilated` unchanged. Flax takes it
as `nn.Conv(..., conv_general_dilated=conv_general_dilated)`; every convolution of the package's models does.
"""
import functools
import itertools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax


def _channels_last(ndim: int) -> lax.ConvDimensionNumbers:
  """[B,*S,C] inputs and outputs, [*K,C,F] kernels: Flax's layout (flax.linen.linear._conv_dimension_numbers)."""
  lhs = (0, ndim - 1) + tuple(range(1, ndim - 1))
  return lax.ConvDimensionNumbers(lhs, (ndim - 1, ndim - 2) + tuple(range(ndim - 2)), lhs)


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int], padding,
                         lhs_dilation: Sequence[int] | None = None, rhs_dilation: Sequence[int] | None = None,
                         dimension_numbers=None, feature_group_count: int = 1, batch_group_count: int = 1,
                         precision=None, preferred_element_type=None) -> jax.Array:
  """`lax.conv_general_dilated`; channels-last, undilated, ungrouped or depthwise convolutions take the rewrites of
  the module docstring."""
  spatial = lhs.shape[1:-1]
  depthwise = feature_group_count == lhs.shape[-1] == rhs.shape[-1] > 1 and rhs.shape[-2] == 1
  plain = ((feature_group_count == 1 or depthwise) and batch_group_count == 1 and preferred_element_type is None
           and all(d == 1 for d in (lhs_dilation or ())) and all(d == 1 for d in (rhs_dilation or ()))
           and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == _channels_last(lhs.ndim))
  if plain and isinstance(padding, str):
    padding = lax.padtype_to_pads(spatial, rhs.shape[:-2], window_strides, padding)
  if not plain or any(p < 0 for pair in padding for p in pair):
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                                    feature_group_count, batch_group_count, precision, preferred_element_type)
  padding = tuple(tuple(p) for p in padding)
  if depthwise:
    return _depthwise(lhs, rhs, tuple(window_strides), padding)
  if lhs.ndim == 5:
    return _conv3d_as_2d(lhs, rhs, tuple(window_strides), padding, precision)
  return _conv(lhs, rhs, tuple(window_strides), padding, precision)


def _windows(x, kernel: Sequence[int], strides, padding):
  """The padded input `x` [B,*S,C] as each kernel tap sees it: (tap, [B,*S',C]) for every tap of `kernel`."""
  x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
  out = [(n - k) // s + 1 for n, k, s in zip(x.shape[1:-1], kernel, strides)]
  for tap in itertools.product(*(range(k) for k in kernel)):
    yield tap, x[(slice(None), *(slice(t, t + (n - 1) * s + 1, s) for t, n, s in zip(tap, out, strides)))]


def _depthwise(x, w, strides, padding):
  """[B,*S,C] * [*K,1,C] (one kernel per channel) -> [B,*S',C] as a sum over the taps of the shifted input times the
  tap's per-channel weights: elementwise work XLA fuses, where its CPU backend runs grouped convolutions (MViT's 3D
  pooling, ConvNeXt's 7x7) as scalar loops. Accumulates in float32 (as XLA's convolutions do) for any dtype."""
  y = None
  for tap, window in _windows(x, w.shape[:-2], strides, padding):
    term = window.astype(jnp.float32) * w[tap][0].astype(jnp.float32)
    y = term if y is None else y + term
  return y.astype(x.dtype)


def _conv3d_as_2d(x, w, strides, padding, precision):
  """[B,T,H,W,C] * [kt,kh,kw,C,F] -> [B,T',H',W',F] as the sum over the kt temporal taps of a 2D conv of the
  frames that tap sees (folded into the batch): XLA's CPU backend runs 2D convolutions several times faster."""
  (before, after), stride, kt = padding[0], strides[0], w.shape[0]
  x = jnp.pad(x, ((0, 0), (before, after), (0, 0), (0, 0), (0, 0)))
  frames = (x.shape[1] - kt) // stride + 1
  out = None
  for t in range(kt):
    seen = x[:, t:t + (frames - 1) * stride + 1:stride]  # [B,T',H,W,C]
    y = _conv(seen.reshape(-1, *seen.shape[2:]), w[t], strides[1:], padding[1:], precision)  # [B*T',H',W',F]
    out = y if out is None else out + y
  return out.reshape(x.shape[0], frames, *out.shape[1:])


def _xla_conv(x, w, strides, padding, precision):
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_channels_last(x.ndim),
                                  precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv(x, w, strides, padding, precision):
  return _xla_conv(x, w, strides, padding, precision)


def _conv_fwd(x, w, strides, padding, precision):
  return _xla_conv(x, w, strides, padding, precision), (x, w)


def _conv_bwd(strides, padding, precision, residuals, g):
  """Input gradient: XLA's transposed convolution. Kernel gradient [*K,C,F]: one [C,F] product per tap."""
  x, w = residuals
  dx = jax.vjp(lambda x: _xla_conv(x, w, strides, padding, precision), x)[1](g)[0]
  taps = []
  for _, window in _windows(x, w.shape[:-2], strides, padding):
    rows = window.reshape(-1, window.shape[-1])  # [B*prod(out),C]
    taps.append(jnp.matmul(rows.T, g.reshape(-1, g.shape[-1]).astype(rows.dtype), precision=precision))
  return dx, jnp.stack(taps).reshape(w.shape).astype(w.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)

"""layers/conv_lowering.py: kernel gradients as one matrix product per tap, 3D convolutions as sums of 2D ones,
depthwise ones as per-tap multiply-adds: each against `lax.conv_general_dilated`."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from vit_video.layers.conv_lowering import conv_general_dilated

CHANNELS_LAST = {2: ("NHWC", "HWIO", "NHWC"), 3: ("NDHWC", "DHWIO", "NDHWC")}
# (input [B,*S,C], kernel [*K,C,F], strides, padding): 1x1, strided 1x1, 3x3 with odd sizes, 7x7/2 stem, "SAME",
# I3D's 3x1x1 and a strided 3D kernel; spatial sizes all differ, and some do not divide by the stride.
CASES = [
    ((2, 9, 11, 5), (1, 1, 5, 7), (1, 1), ((0, 0), (0, 0))),
    ((2, 9, 11, 5), (1, 1, 5, 7), (2, 2), ((0, 0), (0, 0))),
    ((3, 10, 13, 4), (3, 3, 4, 6), (1, 1), ((1, 1), (1, 1))),
    ((2, 15, 17, 3), (7, 7, 3, 8), (2, 2), ((3, 3), (3, 3))),
    ((2, 10, 13, 4), (3, 5, 4, 6), (2, 3), "SAME"),
    ((2, 5, 9, 11, 4), (3, 1, 1, 4, 6), (1, 1, 1), ((1, 1), (0, 0), (0, 0))),
    ((2, 6, 9, 11, 3), (3, 3, 3, 3, 5), (2, 2, 2), ((1, 1), (1, 1), (1, 1))),
    ((1, 7, 10, 9, 3), (5, 7, 7, 3, 4), (2, 2, 2), ((2, 2), (3, 3), (3, 3))),  # I3D's stem, odd sizes
    ((2, 5, 8, 6, 4), (1, 3, 3, 4, 5), (1, 2, 2), ((0, 0), (1, 1), (1, 1))),
    ((2, 5, 8, 6, 4), (2, 2, 2, 4, 5), (2, 2, 2), "VALID"),  # Video Swin's non-overlapping 3D patches
]


def operands(x_shape, w_shape, seed=0):
  kx, kw = jax.random.split(jax.random.key(seed))
  return jax.random.normal(kx, x_shape), jax.random.normal(kw, w_shape)


@pytest.mark.parametrize("x_shape, w_shape, strides, padding", CASES)
def test_output_and_gradients_are_xlas(x_shape, w_shape, strides, padding):
  """Same output, same input gradient, and the kernel gradient up to summation order, for a random cotangent."""
  x, w = operands(x_shape, w_shape)
  dn = CHANNELS_LAST[len(strides)]
  ours = lambda x, w: conv_general_dilated(x, w, strides, padding, dimension_numbers=dn)  # noqa: E731
  xla = lambda x, w: lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=dn)  # noqa: E731
  y, vjp = jax.vjp(jax.jit(ours), x, w)
  y_ref, vjp_ref = jax.vjp(jax.jit(xla), x, w)
  if len(strides) == 2:  # XLA's own 2D convolution
    np.testing.assert_array_equal(y, y_ref)
  else:  # 3D: a sum of 2D convolutions over the temporal taps, equal up to float summation order
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  g = jax.random.normal(jax.random.key(7), y.shape)
  (dx, dw), (dx_ref, dw_ref) = vjp(g), vjp_ref(g)
  np.testing.assert_allclose(dx, dx_ref, rtol=1e-5, atol=1e-5)
  assert dw.shape == w.shape and dw.dtype == w.dtype
  np.testing.assert_allclose(dw, dw_ref, rtol=1e-4, atol=1e-4 * float(jnp.abs(dw_ref).max()))


@pytest.mark.parametrize("x_shape, kernel, strides", [
    ((2, 11, 9, 6), (7, 7), (1, 1)),  # ConvNeXt's depthwise 7x7
    ((2, 5, 9, 7, 6), (3, 3, 3), (1, 2, 2)),  # MViT's pooling conv, strided
    ((1, 6, 8, 9, 4), (3, 3, 3), (2, 1, 2)),
])
def test_depthwise_matches_xla(x_shape, kernel, strides):
  c = x_shape[-1]
  x, w = operands(x_shape, (*kernel, 1, c))
  padding = [(k // 2, k // 2) for k in kernel]
  dn = CHANNELS_LAST[len(kernel)]

  def run(conv):
    f = lambda x, w: conv(x, w, strides, padding, dimension_numbers=dn, feature_group_count=c)  # noqa: E731
    y, vjp = jax.vjp(jax.jit(f), x, w)
    return y, *vjp(jnp.cos(y))
  for ours, xla in zip(run(conv_general_dilated), run(lax.conv_general_dilated)):
    np.testing.assert_allclose(ours, xla, rtol=1e-4, atol=1e-4 * float(jnp.abs(xla).max()))


def test_flax_conv_parameter_gradient_matches_plain_conv():
  """As Flax's `conv_general_dilated`: a layer's parameter gradient under jit matches plain nn.Conv's."""
  x = jax.random.normal(jax.random.key(0), (2, 12, 10, 3))
  ours = nn.Conv(4, (3, 3), (2, 2), padding=((1, 1), (1, 1)), conv_general_dilated=conv_general_dilated)
  xla = nn.Conv(4, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
  params = xla.init(jax.random.key(1), x)["params"]
  loss = lambda model: jax.jit(jax.grad(lambda p: jnp.sum(jnp.sin(model.apply({"params": p}, x)))))  # noqa: E731
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), loss(ours)(params),
               loss(xla)(params))


@pytest.mark.parametrize("kwargs", [dict(feature_group_count=2), dict(rhs_dilation=(2, 2)),
                                    dict(lhs_dilation=(2, 1))])
def test_other_convolutions_fall_through_to_xla(kwargs):
  """Grouped and dilated convolutions are lax's own (bit-equal output and gradients)."""
  x, w = operands((2, 9, 8, 4), (3, 3, 4 // kwargs.get("feature_group_count", 1), 6))
  args = ((1, 1), ((1, 1), (1, 1)))

  def grads(conv):
    loss = lambda x, w: jnp.sum(conv(x, w, *args, dimension_numbers=CHANNELS_LAST[2], **kwargs) ** 2)  # noqa: E731
    return jax.grad(loss, argnums=(0, 1))(x, w)
  jax.tree.map(np.testing.assert_array_equal, grads(conv_general_dilated), grads(lax.conv_general_dilated))


def test_channels_first_falls_through_to_xla():
  x, w = operands((2, 4, 9, 8), (6, 4, 3, 3))
  dn = ("NCHW", "OIHW", "NCHW")
  np.testing.assert_array_equal(conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn),
                                lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn))


def test_bfloat16_kernel_gradient_keeps_the_kernel_dtype():
  x, w = operands((2, 8, 8, 4), (1, 1, 4, 5))
  x, w = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
  dw = jax.grad(lambda w: jnp.sum(conv_general_dilated(x, w, (1, 1), "VALID",
                                                       dimension_numbers=CHANNELS_LAST[2]).astype(jnp.float32)))(w)
  expected = jnp.einsum("bhwc->c", x.astype(jnp.float32))[:, None] * jnp.ones((1, 5))
  assert dw.dtype == jnp.bfloat16
  np.testing.assert_allclose(dw[0, 0].astype(jnp.float32), expected, rtol=2e-2)

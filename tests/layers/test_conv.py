"""layers/conv.py: torch-padded convs, weight standardisation, torchvision's BatchNorm hyperparameters."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_video.layers.conv import StdConv, batch_norm, torch_conv

B, H, W, C = 2, 36, 44, 5


def images(seed=0, h=H, w=W):
  return jax.random.normal(jax.random.key(seed), (B, h, w, C))


@pytest.mark.parametrize("kernel, strides", [((3, 3), (2, 2)), ((7, 7), (2, 2)), ((1, 3, 3), (1, 2, 2)),
                                             ((5, 7, 7), (2, 2, 2))])
def test_torch_conv_pads_k_over_2_on_both_sides(kernel, strides):
  """The same as a VALID conv of the input zero-padded by k // 2 on both sides of every axis: ceil(S/s) outputs for
  odd kernels (TF "SAME" would pad the odd total at the end only)."""
  x = images() if len(kernel) == 2 else jax.random.normal(jax.random.key(1), (B, 6, H, W, C))
  layer = torch_conv(4, kernel, strides, dtype=jnp.float32, param_dtype=jnp.float32, name="conv")
  params = layer.init(jax.random.key(0), x)["params"]
  assert set(params) == {"kernel"}  # bias-free
  padded = jnp.pad(x, [(0, 0)] + [(k // 2, k // 2) for k in kernel] + [(0, 0)])
  expected = nn.Conv(4, kernel, strides, padding="VALID", use_bias=False).apply({"params": params}, padded)
  y = layer.apply({"params": params}, x)
  assert y.shape[1:-1] == tuple(-(-n // s) for n, s in zip(x.shape[1:-1], strides))
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_batch_norm_has_torchvisions_momentum_and_epsilon():
  x = images()
  norm = batch_norm(False, None, jnp.float32, jnp.float32)(name="bn")
  variables = norm.init(jax.random.key(0), x)
  y, state = norm.apply(variables, x, mutable=["batch_stats"])
  mean, var = np.asarray(x).mean((0, 1, 2)), np.asarray(x).var((0, 1, 2))
  np.testing.assert_allclose(state["batch_stats"]["mean"], 0.1 * mean, rtol=1e-5, atol=1e-6)  # torch momentum 0.1
  np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-5), rtol=1e-4, atol=1e-5)
  frozen = batch_norm(True, None, jnp.float32, jnp.float32)(name="bn")  # running averages: (x - 0) / sqrt(1 + eps)
  np.testing.assert_allclose(frozen.apply(variables, x), x / np.sqrt(1 + 1e-5), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("eps_on_std", [False, True])
@pytest.mark.parametrize("strides, padding", [((1, 1), "SAME"), ((2, 2), ((1, 2), (0, 1)))])
def test_std_conv_is_a_conv_with_the_standardised_kernel(eps_on_std, strides, padding):
  x = images()
  layer = StdConv(6, (3, 3), strides, padding=padding, eps=1e-3, eps_on_std=eps_on_std)
  params = layer.init(jax.random.key(0), x)["params"]
  w = np.asarray(params["kernel"], np.float64)  # [3,3,C,6]
  flat = w.reshape(-1, 6)  # [3*3*C,6]
  mean, std = flat.mean(axis=0), flat.std(axis=0)
  w_std = (w - mean) / (std + 1e-3 if eps_on_std else np.sqrt(std**2 + 1e-3))
  plain = nn.Conv(6, (3, 3), strides, padding=padding, use_bias=False)
  expected = plain.apply({"params": {"kernel": jnp.asarray(w_std, jnp.float32)}}, x)
  y = layer.apply({"params": params}, x)
  assert y.shape == expected.shape
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
  # The raw kernel is not already standardised, so the test above is not vacuous.
  assert not np.allclose(flat.std(axis=0), 1.0, atol=0.1)

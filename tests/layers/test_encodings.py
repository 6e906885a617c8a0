"""Tests for vit_video/layers/encodings.py: formulas by explicit loops, per-axis structure, shift invariance."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_video.layers import encodings

T, H, W = 3, 4, 5


def _loop_sinusoidal(n, d):
  out = np.zeros((n, d))
  for p in range(n):
    for i in range(d // 2):
      out[p, 2 * i] = math.sin(p / 10000 ** (2 * i / d))
      out[p, 2 * i + 1] = math.cos(p / 10000 ** (2 * i / d))
  return out


@pytest.mark.parametrize("n,d", [(7, 6), (50, 16), (1, 2)])
def test_sinusoidal_1d_matches_formula_loop(n, d):
  enc = encodings.sinusoidal_1d(n, d)
  assert enc.shape == (n, d) and enc.dtype == jnp.float32
  np.testing.assert_allclose(enc, _loop_sinusoidal(n, d), rtol=0, atol=1e-6)


def test_sinusoidal_1d_even_channels_are_sines():
  enc = np.asarray(encodings.sinusoidal_1d(9, 8))
  np.testing.assert_array_equal(enc[0, 0::2], 0.0)  # sin(0)
  np.testing.assert_array_equal(enc[0, 1::2], 1.0)  # cos(0)
  np.testing.assert_allclose(enc[1, :2], [math.sin(1.0), math.cos(1.0)], atol=1e-7)  # i = 0: frequency 1


def test_sinusoidal_1d_dot_products_depend_only_on_offset():
  n, d = 40, 16
  enc = np.asarray(encodings.sinusoidal_1d(n, d), np.float64)
  gram = enc @ enc.T  # [N,N]
  omega = 1.0 / 10000 ** (np.arange(0, d, 2) / d)
  for k in range(-n + 1, n):
    diagonal = np.diagonal(gram, offset=k)
    np.testing.assert_allclose(diagonal, np.cos(k * omega).sum(), atol=1e-5)
  # ... and do depend on the offset, so the check above can fail.
  assert abs(gram[0, 1] - gram[0, 5]) > 0.1
  np.testing.assert_allclose(np.diagonal(gram), d / 2, atol=1e-5)  # sin^2 + cos^2 per frequency


def test_sinusoidal_2d_is_row_then_column_concatenation():
  d = 12
  enc = np.asarray(encodings.sinusoidal_2d(H, W, d))
  assert enc.shape == (H * W, d)
  rows, cols = np.asarray(encodings.sinusoidal_1d(H, d // 2)), np.asarray(encodings.sinusoidal_1d(W, d // 2))
  for r in range(H):
    for c in range(W):
      np.testing.assert_array_equal(enc[r * W + c, : d // 2], rows[r])  # first half: row only
      np.testing.assert_array_equal(enc[r * W + c, d // 2 :], cols[c])  # second half: column only


def test_sinusoidal_3d_is_frame_row_column_concatenation():
  d = 18
  enc = np.asarray(encodings.sinusoidal_3d(T, H, W, d))
  assert enc.shape == (T * H * W, d)
  e = d // 3
  per_axis = [np.asarray(encodings.sinusoidal_1d(n, e)) for n in (T, H, W)]
  for f in range(T):
    for r in range(H):
      for c in range(W):
        token = enc[(f * H + r) * W + c]
        np.testing.assert_array_equal(token[:e], per_axis[0][f])
        np.testing.assert_array_equal(token[e : 2 * e], per_axis[1][r])
        np.testing.assert_array_equal(token[2 * e :], per_axis[2][c])
  assert len(np.unique(enc.round(6), axis=0)) == T * H * W  # every position gets its own code


@pytest.mark.parametrize(
    "fn,args,match",
    [
        (encodings.sinusoidal_1d, (5, 7), "d=7"),
        (encodings.sinusoidal_1d, (5, 0), "d=0"),
        (encodings.sinusoidal_1d, (-1, 4), "n=-1"),
        (encodings.sinusoidal_2d, (H, W, 6), "d=6"),
        (encodings.sinusoidal_3d, (T, H, W, 8), "d=8"),
        (encodings.sinusoidal_3d, (T, H, W, 9), "d=9"),
    ],
)
def test_bad_sizes_raise(fn, args, match):
  with pytest.raises(ValueError, match=match):
    fn(*args)


def test_basic_fourier_features():
  v = jax.random.uniform(jax.random.key(0), (2, 7, 3))
  g = np.asarray(encodings.basic_fourier_features(v))
  assert g.shape == (2, 7, 6)
  vn = np.asarray(v, np.float64)
  np.testing.assert_allclose(g[..., :3], np.cos(2 * np.pi * vn), atol=1e-5)
  np.testing.assert_allclose(g[..., 3:], np.sin(2 * np.pi * vn), atol=1e-5)


def test_positional_fourier_features_match_loop():
  d, m, sigma = 2, 5, 8.0
  v = jax.random.uniform(jax.random.key(0), (3, d))
  g = np.asarray(encodings.positional_fourier_features(v, m, sigma))
  assert g.shape == (3, 2 * d * m)
  vn = np.asarray(v, np.float64)
  for row in range(3):
    for k in range(d):
      for j in range(m):
        arg = 2 * math.pi * sigma ** (j / m) * vn[row, k]
        np.testing.assert_allclose(g[row, k * m + j], math.cos(arg), atol=1e-5)
        np.testing.assert_allclose(g[row, d * m + k * m + j], math.sin(arg), atol=1e-5)
  with pytest.raises(ValueError, match="num_freqs=0"):
    encodings.positional_fourier_features(v, 0, sigma)
  with pytest.raises(ValueError, match="sigma=-1"):
    encodings.positional_fourier_features(v, m, -1.0)


def test_gaussian_fourier_features_constant_projection():
  d, m, sigma = 3, 7, 2.5
  v = jax.random.uniform(jax.random.key(0), (2, 6, d))
  module = encodings.GaussianFourierFeatures(num_features=m, sigma=sigma)
  variables = module.init(jax.random.key(1), v)
  assert set(variables) == {"constants"}  # nothing for the optimizer
  b = np.asarray(variables["constants"]["projection"], np.float64)
  assert b.shape == (d, m)
  g = np.asarray(module.apply(variables, v))
  assert g.shape == (2, 6, 2 * m)
  proj = 2 * np.pi * np.asarray(v, np.float64) @ b
  np.testing.assert_allclose(g, np.concatenate([np.cos(proj), np.sin(proj)], -1), atol=1e-4)
  # The stored B is what is used: a different B gives different features.
  other = {"constants": {"projection": jnp.asarray(b[:, ::-1])}}
  assert not np.allclose(module.apply(other, v), g)
  with pytest.raises(ValueError, match="input has 2 coordinates but the projection was built for 3"):
    module.apply(variables, v[..., :2])


def test_gaussian_fourier_features_std_close_to_sigma():
  sigma, m = 3.0, 4096
  variables = encodings.GaussianFourierFeatures(num_features=m, sigma=sigma).init(
      jax.random.key(0), jnp.zeros((1, 2)))
  b = np.asarray(variables["constants"]["projection"])
  assert abs(b.std() / sigma - 1.0) < 0.05
  assert abs(b.mean()) < 0.1 * sigma


def test_gaussian_fourier_features_bfloat16():
  module = encodings.GaussianFourierFeatures(num_features=4, sigma=1.0, dtype=jnp.bfloat16)
  g, variables = module.init_with_output(jax.random.key(0), jnp.ones((5, 2)))
  assert g.dtype == jnp.bfloat16
  assert variables["constants"]["projection"].dtype == jnp.float32


def test_normalized_sine_2d_formula_axes_and_padding():
  """DETR's encoding: sin/cos pairs, rows in the first half and columns in the second, the formula at two channels,
  and the same encoding for an image whatever padding surrounds it."""
  d, valid = 8, np.ones((1, 3, 5), bool)
  enc = np.asarray(encodings.normalized_sine_2d(valid, d))  # [1,3,5,8]
  assert enc.shape == (1, 3, 5, d) and enc.dtype == np.float32
  np.testing.assert_allclose(enc[..., 0::2] ** 2 + enc[..., 1::2] ** 2, 1.0, rtol=1e-6)  # sin/cos pairs
  np.testing.assert_array_equal(enc[:, :, :1, :d // 2], enc[:, :, 4:, :d // 2])  # first half: rows only
  np.testing.assert_array_equal(enc[:, :1, :, d // 2:], enc[:, 2:, :, d // 2:])  # second half: columns only
  np.testing.assert_allclose(enc[0, :, 0, 0], np.sin(2 * math.pi * np.arange(1, 4) / (3 + 1e-6)), atol=1e-6)
  np.testing.assert_allclose(enc[0, 0, :, d // 2 + 2], np.sin(2 * math.pi * np.arange(1, 6) / (5 + 1e-6) / 100),
                             atol=1e-6)  # channel 2i = 2 of a half of 4: frequency 10000^(-2/4)
  padded = np.zeros((1, 6, 9), bool)
  padded[:, :3, :5] = True  # the same 3 x 5 image, padded: the encoding of its pixels does not change
  np.testing.assert_allclose(encodings.normalized_sine_2d(padded, d)[:, :3, :5], enc, rtol=1e-6)

"""Patch/tubelet embedding, class token, position embedding and its resampling."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_video.layers import embed


def test_patch_embedding_equals_strided_conv():
  x = jax.random.normal(jax.random.key(0), (2, 8, 12, 5))
  pe = embed.PatchEmbedding((4, 3), 7)
  variables = pe.init(jax.random.key(1), x)
  variables = jax.tree.map(lambda a: a + 0.1, variables)  # a nonzero bias too
  conv = nn.Conv(7, (4, 3), strides=(4, 3), padding="VALID")
  expected = conv.apply(variables, x)
  out = pe.apply(variables, x)
  assert out.shape == (2, 2, 4, 7)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_tubelet_embedding_equals_3d_conv():
  x = jax.random.normal(jax.random.key(2), (2, 4, 6, 9, 3))
  pe = embed.PatchEmbedding((2, 3, 3), 5)
  variables = pe.init(jax.random.key(1), x)
  expected = nn.Conv(5, (2, 3, 3), strides=(2, 3, 3), padding="VALID").apply(variables, x)
  np.testing.assert_allclose(pe.apply(variables, x), expected, rtol=1e-5, atol=1e-5)


def test_patch_embedding_bad_input():
  pe = embed.PatchEmbedding((4, 4), 7)
  with pytest.raises(ValueError, match=r"input size \(8, 10\) is not divisible by patch size \(4, 4\)"):
    pe.init(jax.random.key(0), jnp.ones((1, 8, 10, 3)))
  with pytest.raises(ValueError, match="rank-4"):
    pe.init(jax.random.key(0), jnp.ones((1, 2, 8, 8, 3)))


def test_class_token_prepends():
  x = jax.random.normal(jax.random.key(0), (3, 5, 4))
  variables = {"params": {"token": jnp.arange(4.0)[None, None]}}
  out = embed.ClassToken().apply(variables, x)
  assert out.shape == (3, 6, 4)
  np.testing.assert_array_equal(out[:, 0], jnp.broadcast_to(jnp.arange(4.0), (3, 4)))
  np.testing.assert_array_equal(out[:, 1:], x)


def test_resample_to_same_grid_is_identity():
  pe = jax.random.normal(jax.random.key(0), (1, 1 + 3 * 5, 6))
  np.testing.assert_array_equal(embed.resample_pos_embedding(pe, (3, 5), old_grid=(3, 5)), pe)
  sq = jax.random.normal(jax.random.key(1), (1, 1 + 16, 6))
  np.testing.assert_array_equal(embed.resample_pos_embedding(sq, (4, 4)), sq)


def test_resample_bilinear_preserves_linear_ramps_and_prefix():
  gh, gw = 4, 6
  rows = jnp.arange(gh, dtype=jnp.float32)[:, None] * jnp.ones((1, gw))
  grid = jnp.stack([rows, jnp.ones((gh, gw)) * 2.0], -1).reshape(1, gh * gw, 2)
  pe = jnp.concatenate([jnp.full((1, 1, 2), 9.0), grid], axis=1)
  out = embed.resample_pos_embedding(pe, (8, 3), old_grid=(gh, gw))
  assert out.shape == (1, 1 + 24, 2)
  np.testing.assert_array_equal(out[0, 0], [9.0, 9.0])
  new = np.asarray(out[0, 1:]).reshape(8, 3, 2)
  np.testing.assert_allclose(new[..., 1], 2.0, rtol=1e-6)  # constants stay constant
  assert np.all(np.diff(new[:, 0, 0]) >= 0) and new[0, 0, 0] >= 0 and new[-1, 0, 0] <= gh - 1 + 1e-5  # monotone ramp


def test_resample_bad_grid():
  with pytest.raises(ValueError, match="not a square grid"):
    embed.resample_pos_embedding(jnp.ones((1, 1 + 15, 4)), (4, 4))
  with pytest.raises(ValueError, match=r"old grid \(3, 4\)"):
    embed.resample_pos_embedding(jnp.ones((1, 1 + 15, 4)), (4, 4), old_grid=(3, 4))

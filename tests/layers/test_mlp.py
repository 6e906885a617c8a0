"""MLP block and stochastic depth."""
import jax
import jax.numpy as jnp
import numpy as np

from vit_video.layers import mlp


def test_mlp_block_formula():
  x = jax.random.normal(jax.random.key(0), (2, 3, 5))
  block = mlp.MlpBlock(mlp_dim=7, out_dim=4)
  v = block.init(jax.random.key(1), x, deterministic=True)
  p = v["params"]
  h = jax.nn.gelu(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"], approximate=False)
  expected = h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]
  np.testing.assert_allclose(block.apply(v, x, deterministic=True), expected, rtol=1e-5, atol=1e-6)


def test_drop_path_drops_whole_examples_and_keeps_expectation():
  x = jnp.ones((4000, 3, 2))
  out = mlp.drop_path(x, 0.25, jax.random.key(0))
  per_example = np.asarray(out).reshape(4000, -1)
  assert np.all(np.isclose(per_example, 0.0) | np.isclose(per_example, 1 / 0.75))
  assert np.all(per_example.min(1) == per_example.max(1))  # whole examples
  assert abs(per_example.mean() - 1.0) < 0.05
  layer = mlp.DropPath()
  np.testing.assert_array_equal(layer.apply({}, x, 0.5, deterministic=True), x)

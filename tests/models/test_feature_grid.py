"""`return_grid`: the image families that keep their last feature map ([B,h,w,D]) for attention over it.

Property: the grid is what the model pools. Its spatial mean equals the pooled features (`num_classes=0`) for the
families whose pooling is a plain mean (ResNet, BiT, Swin, ViT with mean pooling); for ConvNeXt, the final
LayerNorm of that mean; for ViT with a class token, the grid is every token but the class token. Sizes all differ.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_video import models

H, W = 20, 28  # the test image; every family below maps it to a grid of other sides
TINY = {  # name -> attributes that keep it tiny, and the grid (h, w) a 20x28 image gives
    "resnet18": (dict(stage_sizes=(1, 1), width=8), (3, 4)),
    "bit_r50x1": (dict(stage_sizes=(1, 1), width=8, num_groups=4), (3, 4)),
    "swin_t": (dict(depths=(1, 1), num_heads=(1, 2), width=8, window_size=5, patch_size=2), (5, 7)),
    "convnext_t": (dict(depths=(1, 1), dims=(8, 16)), (2, 3)),
    "vit_ti16": (dict(depth=1, width=12, num_heads=2, mlp_dim=16, patch_size=4, pool="gap"), (5, 7)),
}


def _features(name: str, **overrides):
  attributes, grid = TINY[name]
  x = jax.random.normal(jax.random.key(1), (2, H, W, 3))
  pooled_model = models.create_model(name, num_classes=0, **attributes, **overrides)
  grid_model = models.create_model(name, num_classes=0, return_grid=True, **attributes, **overrides)

  @jax.jit  # one compiled program instead of many eagerly dispatched ones
  def both(x):
    variables = pooled_model.init(jax.random.key(0), x, train=False)
    return grid_model.apply(variables, x, train=False), pooled_model.apply(variables, x, train=False), variables

  grid_features, pooled, variables = both(x)
  return grid_features, pooled, grid, variables


@pytest.mark.parametrize("name", ["resnet18", "bit_r50x1", "swin_t", "vit_ti16"])
def test_the_grid_averages_to_the_pooled_features(name):
  grid, pooled, (h, w), _ = _features(name)
  assert grid.shape == (2, h, w, pooled.shape[-1]) and grid.dtype == jnp.float32
  np.testing.assert_allclose(grid.mean(axis=(1, 2)), pooled, rtol=1e-5, atol=1e-5)


def test_convnext_normalises_the_mean_of_its_grid():
  grid, pooled, (h, w), variables = _features("convnext_t")
  assert grid.shape == (2, h, w, 16)
  norm = nn.LayerNorm(epsilon=1e-6).apply({"params": variables["params"]["norm"]}, grid.mean(axis=(1, 2)))
  np.testing.assert_allclose(norm, pooled, rtol=1e-5, atol=1e-5)


def test_vit_class_token_is_left_out_of_the_grid():
  """With a class token, the grid holds the N patch tokens in row-major order: perturbing the patch at row r,
  column c of the image moves grid cell (r, c) most (its own token, before any mixing it has the largest change)."""
  attributes, (h, w) = TINY["vit_ti16"]
  attributes = dict(attributes, pool="token")
  model = models.create_model("vit_ti16", num_classes=0, return_grid=True, **attributes)
  r, c = 3, 5

  @jax.jit
  def grid_and_moved(x):
    variables = model.init(jax.random.key(0), x, train=False)
    moved = x.at[:, 4 * r:4 * r + 4, 4 * c:4 * c + 4].add(3.0)
    return model.apply(variables, x, train=False), model.apply(variables, moved, train=False)

  grid, moved = grid_and_moved(jax.random.normal(jax.random.key(1), (1, H, W, 3)))
  assert grid.shape == (1, h, w, 12)
  change = np.abs(np.asarray(moved - grid)).sum(axis=-1)[0]  # [h,w]
  assert np.unravel_index(change.argmax(), change.shape) == (r, c)


def test_return_grid_with_a_classifier_is_refused():
  attributes, _ = TINY["resnet18"]
  model = models.create_model("resnet18", num_classes=4, return_grid=True, **attributes)
  with pytest.raises(ValueError, match="return_grid needs num_classes=0"):
    model.init(jax.random.key(0), jnp.zeros((1, H, W, 3)), train=False)

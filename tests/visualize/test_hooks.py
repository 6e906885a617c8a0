"""hooks: a layer's activation and its gradient, read through the model contract without touching the models."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_video import models
from vit_video.visualize import hooks


def _vit(**overrides):
  model = models.create_model("vit_ti16", num_classes=5, depth=2, width=8, num_heads=2, mlp_dim=12, patch_size=4,
                              in_channels=3, **overrides)
  x = jax.random.normal(jax.random.key(1), (3, 12, 8, 3))  # B=3, H=12, W=8, C=3: 6 patches + class token
  return model, model.init(jax.random.key(0), x, train=False), x


def test_layer_paths_run_in_order_and_end_with_the_head():
  model, variables, x = _vit()
  paths = hooks.layer_paths(model, variables, x)
  assert paths[0] == "embedding" and paths[-1] == "head"
  assert paths.index("Transformer/encoderblock_0/MlpBlock_3") < paths.index("Transformer/encoderblock_1/MlpBlock_3")
  assert len(paths) == len(set(paths))


def test_the_head_layer_is_the_logits_and_its_gradient_is_one_hot():
  model, variables, x = _vit()
  logits, act = hooks.apply_with_layer(model, variables, x, layer="head")
  np.testing.assert_allclose(act, logits, rtol=1e-6)
  np.testing.assert_allclose(hooks.objective(model, variables, index=2)(x), logits[:, 2], rtol=1e-6)
  np.testing.assert_allclose(hooks.objective(model, variables, layer="head", index=2)(x), logits[:, 2], rtol=1e-6)
  grad = jax.grad(lambda d: hooks.apply_with_layer(model, variables, x, layer="head", delta=d)[0][:, 2].sum())(
      jnp.zeros_like(act))
  np.testing.assert_array_equal(grad, np.eye(5)[[2, 2, 2]])


def test_the_gradient_at_a_middle_layer_matches_a_finite_difference():
  model, variables, x = _vit()
  layer = "Transformer/encoderblock_0/MlpBlock_3"
  logits, act = hooks.apply_with_layer(model, variables, x, layer=layer)
  f = lambda d: hooks.apply_with_layer(model, variables, x, layer=layer, delta=d)[0][:, 1].sum()
  grad = jax.grad(f)(jnp.zeros_like(act))
  bump = jnp.zeros_like(act).at[0, 3, 5].set(1e-2)
  np.testing.assert_allclose((f(bump) - f(-bump)) / 2e-2, grad[0, 3, 5], rtol=2e-2, atol=1e-5)
  channel_mean = hooks.objective(model, variables, layer=layer, index=4)(x)
  np.testing.assert_allclose(channel_mean, act[..., 4].mean(axis=1), rtol=1e-6)


def test_bad_layers_are_refused_by_name():
  model, variables, x = _vit()
  with pytest.raises(ValueError, match="does not run.*encoderblock_1"):
    hooks.apply_with_layer(model, variables, x, layer="Transformer/encoderblock_7")
  with pytest.raises(ValueError, match="delta has shape"):
    hooks.apply_with_layer(model, variables, x, layer="head", delta=jnp.zeros((3, 4)))
  with pytest.raises(ValueError, match="out of range: layer 'head' has 5"):
    hooks.objective(model, variables, layer="head", index=5)(x)
  for lifted in (dict(scan=True), dict(remat=True)):
    model, variables, x = _vit(**lifted)
    block = "encoderblock" if "scan" in lifted else "encoderblock_0"
    with pytest.raises(ValueError, match="nn.scan or nn.remat"):
      hooks.apply_with_layer(model, variables, x, layer=f"Transformer/{block}/MlpBlock_3")


class _Shared(nn.Module):
  @nn.compact
  def __call__(self, a, b, *, train):
    del train
    tower = nn.Dense(4, name="tower")
    return tower(a) + tower(b)


def test_a_module_called_twice_is_refused_with_its_count():
  model, a = _Shared(), jnp.ones((2, 3))
  variables = model.init(jax.random.key(0), a, a, train=False)
  with pytest.raises(ValueError, match="runs 2 times"):
    hooks.apply_with_layer(model, variables, a, a, layer="tower")

"""CoordinateMLP: output shapes and range, each mapping's width, the Gaussian B kept out of the parameters, bf16."""
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_video.models.coordinate_mlp import CoordinateMLP, mapped_width


@pytest.mark.parametrize("mapping", CoordinateMLP.MAPPINGS)
def test_output_shape_range_and_first_layer_width(mapping):
  """[3,5,d] coordinates -> [3,5,out] in (0, 1), float32; the first Dense reads mapped_width(mapping, d, m)
  channels: none d, basic 2d, positional and Gaussian 2m (d = 2 and 3, m = 6 frequencies)."""
  model = CoordinateMLP(mapping=mapping, num_features=6, sigma=3.0, depth=3, width=7, out_features=4)
  for d in (2, 3):
    shapes = jax.eval_shape(lambda v: model.init(jax.random.key(0), v, train=False), jnp.zeros((3, 5, d)))
    assert shapes["params"]["dense_0"]["kernel"].shape == (mapped_width(mapping, d, 6), 7)
    assert shapes["params"]["output"]["kernel"].shape == (7, 4)
    assert len(shapes["params"]) == 3  # depth - 1 hidden layers and the output layer
  v = jax.random.uniform(jax.random.key(3), (3, 5, 3))
  out = jax.jit(lambda v: model.apply(model.init(jax.random.key(0), v, train=False), v, train=False))(v)
  assert out.shape == (3, 5, 4) and out.dtype == jnp.float32
  assert bool(jnp.all((out > 0) & (out < 1)))
  assert [mapped_width(m, 2, 6) for m in CoordinateMLP.MAPPINGS] == [2, 4, 12, 12]


def test_gaussian_projection_is_a_constant_not_a_parameter():
  """B [d, m] ~ N(0, sigma^2) lives in "constants": no gradient reaches it, yet the output depends on it."""
  model = CoordinateMLP(mapping="gaussian", num_features=500, sigma=5.0, depth=2, width=8)
  v = jax.random.uniform(jax.random.key(1), (9, 3))

  @jax.jit
  def check(v):
    variables = model.init(jax.random.key(0), v, train=False)
    b = variables["constants"]["fourier_features"]["projection"]
    grads = jax.grad(lambda p: jnp.sum(model.apply({**variables, "params": p}, v, train=True)))(variables["params"])
    moved = {**variables, "constants": {"fourier_features": {"projection": 2 * b}}}
    return variables, grads, model.apply(variables, v, train=False), model.apply(moved, v, train=False)

  variables, grads, out, out_moved = check(v)
  b = variables["constants"]["fourier_features"]["projection"]
  assert b.shape == (3, 500) and abs(float(jnp.std(b)) - 5.0) < 0.5
  assert all("projection" not in path for path in flax.traverse_util.flatten_dict(variables["params"]))
  assert jax.tree.structure(grads) == jax.tree.structure(variables["params"])
  assert not np.allclose(out, out_moved)


def test_positional_mapping_spreads_the_frequencies_over_the_coordinates():
  """Positional: num_features / d frequencies per coordinate; moving only x changes the features that read x."""
  model = CoordinateMLP(mapping="positional", num_features=6, sigma=4.0)
  v = jnp.asarray([[0.1, 0.2, 0.3]])
  features = model.bind({}).features(v)  # [1, 12]: cosines (x: 0-1, y: 2-3, z: 4-5), then sines
  moved = model.bind({}).features(v.at[0, 0].set(0.4))
  changed = np.flatnonzero(~np.isclose(features, moved)[0])
  assert features.shape == (1, 12) and set(changed) <= {0, 1, 6, 7} and len(changed) > 0


def test_bad_attributes_raise():
  v = jnp.zeros((4, 3))
  with pytest.raises(ValueError, match="divisible"):
    CoordinateMLP(mapping="positional", num_features=8).init(jax.random.key(0), v, train=False)
  with pytest.raises(ValueError, match="unknown mapping 'fourier'"):
    CoordinateMLP(mapping="fourier").init(jax.random.key(0), v, train=False)
  with pytest.raises(ValueError, match="depth=0"):
    CoordinateMLP(depth=0).init(jax.random.key(0), v, train=False)
  with pytest.raises(ValueError, match="unknown mapping"):
    mapped_width("fourier", 2, 4)


def test_bf16_activations_float32_output():
  """dtype=bfloat16 computes the Dense layers in bf16 (parameters stay float32); the output comes back float32."""
  model = CoordinateMLP(mapping="basic", depth=3, width=8, dtype=jnp.bfloat16)
  v = jax.random.uniform(jax.random.key(2), (5, 2))

  @jax.jit
  def run(v):
    variables = model.init(jax.random.key(0), v, train=False)
    return variables, model.apply(variables, v, train=False, capture_intermediates=True)

  variables, (out, state) = run(v)
  assert state["intermediates"]["dense_0"]["__call__"][0].dtype == jnp.bfloat16
  assert variables["params"]["dense_0"]["kernel"].dtype == jnp.float32
  assert out.dtype == jnp.float32

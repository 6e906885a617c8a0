"""Random weights for model property tests, drawn with numpy.

Cheaper than `model.init`, whose PRNG is compiled anew for every parameter shape (seconds each on this machine).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

# BatchNorm statistics and affine terms (and non-local gates) drawn uniformly away from their init values (1, 0),
# so that a property that held only at initialisation fails.
_UNIFORM = {"scale": (0.5, 1.5), "mean": (-0.3, 0.3), "var": (0.5, 2.0), "gamma": (0.5, 1.5)}


def random_variables(model, *inputs, seed: int = 0):
  """Variables of `model` for `inputs` (arrays or ShapeDtypeStructs): kernels N(0, 2 / fan_in), BatchNorm
  scale/mean/var and `gamma` uniform away from 1 and 0 (see _UNIFORM), every other leaf (biases) N(0, 0.1^2)."""
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = path[-1].key
    if name in _UNIFORM:
      value = rng.uniform(*_UNIFORM[name], leaf.shape)
    else:
      std = np.sqrt(2 / np.prod(leaf.shape[:-1])) if name == "kernel" else 0.1
      value = rng.normal(0, std, leaf.shape)
    return jnp.asarray(value, leaf.dtype)

  shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), *inputs)
  return jax.tree_util.tree_map_with_path(draw, shapes)


def noise(shape, seed: int = 0) -> jax.Array:
  """float32 N(0, 1) of `shape`, drawn with numpy (jax.random compiles anew for every shape)."""
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


@functools.partial(jax.jit, static_argnums=0)
def forward_with_intermediates(model, variables, x):
  """(output, intermediates) of an eval-mode forward pass, jitted: one compile per model and shape."""
  out, state = model.apply(variables, x, train=False, capture_intermediates=True, mutable=["intermediates"])
  return out, state["intermediates"]

"""Coordinate MLP (Tancik et al. 2020, "Fourier Features Let Networks Learn High Frequency Functions in Low
Dimensional Domains"): a ReLU MLP from coordinates v [..., d] (in [0, 1)) to a signal, after a fixed input mapping.

    model = CoordinateMLP(mapping="gaussian", num_features=256, sigma=10.0)
    variables = model.init(jax.random.key(0), coords, train=False)   # {"params", "constants" (gaussian only)}
    rgb = model.apply(variables, coords, train=False)                # [..., d] -> [..., out_features] in (0, 1)

The mappings gamma(v) (vit_video/layers/encodings.py), with m = num_features frequencies:

  none        gamma(v) = v                                                         [..., d]
  basic       [cos(2 pi v), sin(2 pi v)]                                           [..., 2d]
  positional  log-linear frequencies sigma^(j/k), j < k = m/d, on each coordinate  [..., 2m]
  gaussian    [cos(2 pi v B), sin(2 pi v B)], B [d, m] ~ N(0, sigma^2), fixed       [..., 2m]

then `depth - 1` Dense+ReLU layers of `width` and a Dense output with a sigmoid (the paper's demo network,
"4 x 256": depth 4, width 256). The Gaussian B lives in the "constants" collection, never in "params", so an
optimizer on variables["params"] does not train it; it must be saved beside the parameters.

This is no image classifier (it maps coordinates to pixel values): it is not in `vit_video.models.MODELS` and does
not keep the classifier contract (vit_video/models/__init__.py).
"""
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_video.layers import encodings

Dtype = Any


def mapped_width(mapping: str, d: int, num_features: int) -> int:
  """Channels of gamma(v) for `d` coordinates: none d, basic 2d, positional and gaussian 2 * num_features."""
  widths = {"none": d, "basic": 2 * d, "positional": 2 * num_features, "gaussian": 2 * num_features}
  if mapping not in widths:
    raise ValueError(f"unknown mapping {mapping!r}; valid: {', '.join(CoordinateMLP.MAPPINGS)}")
  return widths[mapping]


class CoordinateMLP(nn.Module):
  """gamma(v) -> (depth - 1) x [Dense(width), ReLU] -> Dense(out_features) -> sigmoid.

  Attributes:
    mapping: "none", "basic", "positional" or "gaussian" (the module docstring's table).
    num_features: m, the number of frequencies of "positional" (m / d per coordinate, so d must divide m) and
      "gaussian"; both give 2m channels. Unused by "none" and "basic".
    sigma: the scale: the highest positional frequency is below sigma (in cycles per unit of v), the Gaussian
      frequencies' standard deviation is sigma.
    depth: Dense layers, the output layer included (the paper's 4).
    width: hidden width (the paper's 256).
    out_features: the signal's channels (3 for RGB).
  """

  MAPPINGS: ClassVar[tuple[str, ...]] = ("none", "basic", "positional", "gaussian")

  mapping: str = "gaussian"
  num_features: int = 256
  sigma: float = 10.0
  depth: int = 4
  width: int = 256
  out_features: int = 3
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def features(self, v: jax.Array) -> jax.Array:
    """gamma(v): [..., d] -> [..., mapped_width(mapping, d, num_features)]."""
    d = v.shape[-1]
    if self.mapping == "none":
      return v
    if self.mapping == "basic":
      return encodings.basic_fourier_features(v)
    if self.mapping == "positional":
      if self.num_features % d:
        raise ValueError(f"positional mapping: num_features={self.num_features} must be divisible by the "
                         f"{d} coordinates (num_features / d frequencies per coordinate)")
      return encodings.positional_fourier_features(v, self.num_features // d, self.sigma)
    if self.mapping == "gaussian":
      return encodings.GaussianFourierFeatures(self.num_features, self.sigma, dtype=jnp.float32,
                                               param_dtype=self.param_dtype, name="fourier_features")(v)
    raise ValueError(f"unknown mapping {self.mapping!r}; valid: {', '.join(self.MAPPINGS)}")

  @nn.compact
  def __call__(self, v: jax.Array, *, train: bool) -> jax.Array:
    """[..., d] coordinates -> [..., out_features] float32 in (0, 1). `train` changes nothing (no dropout)."""
    del train
    if self.depth < 1:
      raise ValueError(f"depth={self.depth} must be >= 1 (the output layer)")
    x = self.features(v.astype(jnp.float32))  # [..., F], the mapping in float32 (phases 2 pi v B need it)
    for i in range(self.depth - 1):
      x = nn.relu(nn.Dense(self.width, dtype=self.dtype, param_dtype=self.param_dtype, name=f"dense_{i}")(x))
    x = nn.Dense(self.out_features, dtype=self.dtype, param_dtype=self.param_dtype, name="output")(x)
    return nn.sigmoid(x.astype(jnp.float32))

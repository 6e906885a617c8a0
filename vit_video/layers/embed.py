"""Token embeddings: patches (2D) and tubelets (3D), the class token, learned position embeddings.

A patch embedding is a convolution whose stride equals its kernel: each non-overlapping patch of
`p_1 x ... x p_k x C` values is flattened and projected to `D`. Written as a reshape and one matmul, which is
the same operation (and lets a 2D kernel be inflated to 3D by adding an axis).
"""
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


class PatchEmbedding(nn.Module):
  """Non-overlapping patch (or tubelet) embedding, the conv with stride = kernel.

  Parameters `kernel [p_1,...,p_k,C,D]` and `bias [D]`, the layout of an `nn.Conv` kernel, so published
  `embedding/kernel` weights load unchanged.

  Attributes:
    patch_size: `(p_h, p_w)` for images or `(p_t, p_h, p_w)` for tubelets.
    features: output width D.
  """
  patch_size: Sequence[int]
  features: int
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """`[B, *S, C] -> [B, *(S // p), D]` with S = (H, W) or (T, H, W)."""
    p = tuple(self.patch_size)
    k = len(p)
    if x.ndim != k + 2:
      raise ValueError(f"patch size {p} needs a rank-{k + 2} input [B,{','.join('THW'[-k:])},C]; got shape {x.shape}")
    spatial = x.shape[1:-1]
    if any(s % q for s, q in zip(spatial, p)):
      raise ValueError(f"input size {spatial} is not divisible by patch size {p}")
    c = x.shape[-1]
    kernel = self.param("kernel", self.kernel_init, (*p, c, self.features), self.param_dtype)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
    grid = tuple(s // q for s, q in zip(spatial, p))
    # [B, g_1*p_1, ..., g_k*p_k, C] -> [B, g_1, p_1, ..., g_k, p_k, C]
    x = x.reshape(x.shape[0], *[d for pair in zip(grid, p) for d in pair], c)
    # -> [B, g_1, ..., g_k, p_1, ..., p_k, C]
    x = x.transpose(0, *range(1, 2 * k, 2), *range(2, 2 * k + 1, 2), 2 * k + 1)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    kernel = kernel.reshape(-1, self.features)  # [p_1*...*p_k*C, D]
    x = x.reshape(*x.shape[: k + 1], -1)  # [B, g_1, ..., g_k, p_1*...*p_k*C]
    return x @ kernel + bias  # [B, g_1, ..., g_k, D]


class ClassToken(nn.Module):
  """Prepends a learned token (zero-initialised, parameter `token [1,1,D]`): `[B,N,D] -> [B,1+N,D]`."""
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    token = self.param("token", nn.initializers.zeros, (1, 1, x.shape[-1]), self.param_dtype)
    token = jnp.broadcast_to(token.astype(x.dtype), (x.shape[0], 1, x.shape[-1]))
    return jnp.concatenate([token, x], axis=1)


class AddPositionEmbedding(nn.Module):
  """Adds a learned position embedding `pos_embedding [1,N,D]` (normal, std 0.02): `[B,N,D] -> [B,N,D]`."""
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if x.ndim != 3:
      raise ValueError(f"position embedding expects tokens [B,N,D]; got shape {x.shape}")
    pe = self.param("pos_embedding", nn.initializers.normal(stddev=0.02), (1, *x.shape[1:]), self.param_dtype)
    return x + pe.astype(x.dtype)


def resample_pos_embedding(posemb: np.ndarray | jax.Array, new_grid: Sequence[int], *, num_prefix_tokens: int = 1,
                           old_grid: Sequence[int] | None = None) -> jax.Array:
  """Bilinearly resamples a learned grid position embedding to a new grid, for fine-tuning at another resolution.

  Args:
    posemb: `[1, P + gh*gw, D]`, the first P = `num_prefix_tokens` rows (class token) kept as they are.
    new_grid: `(gh', gw')`.
    old_grid: `(gh, gw)`; default: the square grid that the token count implies.

  Returns:
    `[1, P + gh'*gw', D]`. Resampling to the same grid returns the input unchanged.
  """
  posemb = jnp.asarray(posemb)
  if posemb.ndim != 3 or posemb.shape[0] != 1:
    raise ValueError(f"position embedding must be [1,N,D]; got shape {posemb.shape}")
  prefix, grid = posemb[:, :num_prefix_tokens], posemb[0, num_prefix_tokens:]
  n = grid.shape[0]
  if old_grid is None:
    side = int(round(np.sqrt(n)))
    if side * side != n:
      raise ValueError(f"{n} grid tokens are not a square grid; pass old_grid (num_prefix_tokens={num_prefix_tokens})")
    old_grid = (side, side)
  if old_grid[0] * old_grid[1] != n:
    raise ValueError(f"old grid {tuple(old_grid)} does not hold the {n} grid tokens of a {posemb.shape} embedding")
  grid = grid.reshape(*old_grid, -1)  # [gh, gw, D]
  if tuple(old_grid) != tuple(new_grid):
    grid = jax.image.resize(grid, (*new_grid, grid.shape[-1]), method="bilinear")  # [gh', gw', D]
  return jnp.concatenate([prefix, grid.reshape(1, -1, grid.shape[-1])], axis=1)

"""Fixed positional encodings (Vaswani et al. 2017) and Fourier features of coordinates (Tancik et al. 2020).

Sinusoidal encodings of integer positions p = 0..n-1, with omega_i = 1 / 10000^(2i/d):

  f(p, 2i)   = sin(p * omega_i)
  f(p, 2i+1) = cos(p * omega_i)                        (interleaved: even channels sin, odd channels cos)

The 2D and 3D encodings concatenate 1D encodings of each axis over equal channel splits and are flattened
row-major. Their dot products depend only on position offsets: <f(p), f(q)> = sum_i cos((q - p) omega_i).

`normalized_sine_2d` is DETR's variant (Carion et al. 2020) for padded images: the positions are the valid pixels'
1-based cumulative counts along each axis, rescaled to (0, 2 pi] over the valid extent, so the encoding of an image
does not depend on how much padding surrounds it.

Fourier features of real coordinates v [..., d], all of the form gamma(v) = [cos(2 pi v B), sin(2 pi v B)]
(cosines first, then sines) for some frequency matrix B [d, m]:

  basic_fourier_features           B = I                                                    -> [..., 2d]
  positional_fourier_features      B = diag over coordinates of (sigma^(j/m))_{j<m}          -> [..., 2dm]
  GaussianFourierFeatures          B_kj ~ N(0, sigma^2), drawn once and kept fixed            -> [..., 2m]
"""
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any


def sinusoidal_1d(n: int, d: int) -> jax.Array:
  """Sinusoidal encoding of positions 0..n-1: f(p,2i) = sin(p/10000^(2i/d)), f(p,2i+1) = cos(p/10000^(2i/d)).

  () -> [N,D] float32. Computed in float64 numpy from static sizes, then cast.
  """
  if d <= 0 or d % 2:
    raise ValueError(f"sinusoidal encoding width d={d} must be a positive even number")
  if n < 0:
    raise ValueError(f"number of positions n={n} must be >= 0")
  p = np.arange(n, dtype=np.float64)[:, None]  # [N,1]
  omega = 1.0 / 10000.0 ** (np.arange(0, d, 2, dtype=np.float64) / d)  # [D/2], 1/10000^(2i/d)
  enc = np.empty((n, d), np.float64)
  enc[:, 0::2] = np.sin(p * omega)  # even channels 2i
  enc[:, 1::2] = np.cos(p * omega)  # odd channels 2i+1
  return jnp.asarray(enc, jnp.float32)


def sinusoidal_2d(h: int, w: int, d: int) -> jax.Array:
  """2D encoding: channels [0, d/2) encode the row, [d/2, d) the column, each by sinusoidal_1d(., d/2).

  () -> [H*W, D] float32, row-major: token r*W + c is position (row r, column c). d must be divisible by 4.
  """
  if d <= 0 or d % 4:
    raise ValueError(f"2D sinusoidal encoding width d={d} must be a positive multiple of 4 (two even halves)")
  rows = jnp.broadcast_to(sinusoidal_1d(h, d // 2)[:, None, :], (h, w, d // 2))  # [H,1,D/2] -> [H,W,D/2]
  cols = jnp.broadcast_to(sinusoidal_1d(w, d // 2)[None, :, :], (h, w, d // 2))  # [1,W,D/2] -> [H,W,D/2]
  return jnp.concatenate([rows, cols], axis=-1).reshape(h * w, d)  # [H,W,D] -> [H*W,D]


def sinusoidal_3d(t: int, h: int, w: int, d: int) -> jax.Array:
  """3D encoding: channels [0, d/3) encode the frame, [d/3, 2d/3) the row, [2d/3, d) the column.

  () -> [T*H*W, D] float32, row-major: token (f*H + r)*W + c is position (frame f, row r, column c).
  Each third is sinusoidal_1d(., d/3), so d must be divisible by 6.
  """
  if d <= 0 or d % 6:
    raise ValueError(f"3D sinusoidal encoding width d={d} must be a positive multiple of 6 (three even thirds)")
  e = d // 3
  frames = jnp.broadcast_to(sinusoidal_1d(t, e)[:, None, None, :], (t, h, w, e))  # [T,1,1,E] -> [T,H,W,E]
  rows = jnp.broadcast_to(sinusoidal_1d(h, e)[None, :, None, :], (t, h, w, e))  # [1,H,1,E] -> [T,H,W,E]
  cols = jnp.broadcast_to(sinusoidal_1d(w, e)[None, None, :, :], (t, h, w, e))  # [1,1,W,E] -> [T,H,W,E]
  return jnp.concatenate([frames, rows, cols], axis=-1).reshape(t * h * w, d)  # [T,H,W,D] -> [T*H*W,D]


def normalized_sine_2d(valid: jax.Array, d: int, *, temperature: float = 10000.0,
                       scale: float = 2 * math.pi) -> jax.Array:
  """DETR's 2D sine encoding of the valid pixels of padded images: [B,H,W] bool -> [B,H,W,D] float32.

  y = the count of valid pixels down each column up to and including this one, x the same along each row, each
  divided by its column's (row's) total + 1e-6 and multiplied by `scale`. Channels [0, D/2) encode y, [D/2, D) x;
  within a half of width n = D/2, channel 2i is sin(y / temperature^(2i/n)) and 2i+1 cos(y / temperature^(2i/n)).
  Padded pixels get whatever the counts give them (they are masked out downstream). D must be divisible by 4.
  """
  if d <= 0 or d % 4:
    raise ValueError(f"2D sine encoding width d={d} must be a positive multiple of 4 (two even halves)")
  if valid.ndim != 3:
    raise ValueError(f"valid must be [B,H,W]; got shape {valid.shape}")
  n = d // 2
  y = jnp.cumsum(valid, axis=1, dtype=jnp.float32)  # [B,H,W]
  x = jnp.cumsum(valid, axis=2, dtype=jnp.float32)  # [B,H,W]
  y = y / (y[:, -1:, :] + 1e-6) * scale
  x = x / (x[:, :, -1:] + 1e-6) * scale
  omega = 1.0 / temperature ** (np.arange(0, n, 2, dtype=np.float64) / n)  # [n/2]

  def encode(p):  # [B,H,W] -> [B,H,W,n], sin and cos interleaved
    angles = p[..., None] * jnp.asarray(omega, jnp.float32)  # [B,H,W,n/2]
    return jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(*p.shape, n)  # [B,H,W,n/2,2] -> [.,n]

  return jnp.concatenate([encode(y), encode(x)], axis=-1)  # [B,H,W,D]


def _fourier(v: jax.Array, b: jax.Array) -> jax.Array:
  """gamma(v) = [cos(2 pi v B), sin(2 pi v B)]: v [..., d], B [d, m] -> [..., 2m]."""
  proj = 2 * math.pi * (v @ b)  # [..., m]
  return jnp.concatenate([jnp.cos(proj), jnp.sin(proj)], axis=-1)


def basic_fourier_features(v: jax.Array) -> jax.Array:
  """gamma(v) = [cos(2 pi v), sin(2 pi v)]: [..., d] -> [..., 2d] (all cosines, then all sines)."""
  return jnp.concatenate([jnp.cos(2 * math.pi * v), jnp.sin(2 * math.pi * v)], axis=-1)


def positional_fourier_features(v: jax.Array, num_freqs: int, sigma: float) -> jax.Array:
  """Log-linear frequencies f_j = sigma^(j/m), j = 0..m-1 (m = num_freqs), applied to each coordinate.

  [..., d] -> [..., 2*d*m] = [cos(2 pi f_j v_k), sin(2 pi f_j v_k)], each half ordered coordinate-major
  (index k*m + j).
  """
  if num_freqs < 1:
    raise ValueError(f"num_freqs={num_freqs} must be >= 1")
  if sigma <= 0:
    raise ValueError(f"sigma={sigma} must be > 0")
  d = v.shape[-1]
  dtype = v.dtype if jnp.issubdtype(v.dtype, jnp.inexact) else jnp.float32
  freqs = sigma ** (np.arange(num_freqs) / num_freqs)  # [m]
  b = np.kron(np.eye(d), freqs[None, :])  # [d, d*m], b[k, k*m + j] = f_j
  return _fourier(v.astype(dtype), jnp.asarray(b, dtype))


class GaussianFourierFeatures(nn.Module):
  """Random Fourier features gamma(v) = [cos(2 pi v B), sin(2 pi v B)] with a fixed B [d, m], B_kj ~ N(0, sigma^2).

  B is not a parameter: it lives in the "constants" collection, drawn at `init` from the "params" rng, and
  must be passed back on `apply` (`model.apply({"params": ..., "constants": ...}, v)`). An optimizer built on
  variables["params"] never sees it; checkpoints must save the "constants" collection too.
  """

  num_features: int  # m, the number of frequencies; the output has 2m channels.
  sigma: float = 10.0  # std of the frequencies; larger sigma fits higher frequencies (Tancik et al. 2020).
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, v: jax.Array) -> jax.Array:
    """[..., d] -> [..., 2m]; gamma(v) = [cos(2 pi v B), sin(2 pi v B)]."""
    if self.num_features < 1:
      raise ValueError(f"num_features={self.num_features} must be >= 1")
    d = v.shape[-1]
    b = self.variable(
        "constants", "projection",
        lambda: self.sigma * jax.random.normal(self.make_rng("params"), (d, self.num_features), self.param_dtype))
    if b.value.shape[0] != d:
      raise ValueError(f"input has {d} coordinates but the projection was built for {b.value.shape[0]}")
    v, bv = nn.dtypes.promote_dtype(v, b.value, dtype=self.dtype)
    return _fourier(v, bv)

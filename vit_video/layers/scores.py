"""Attention as the lecture builds it up: scores, weights, weighted sum.

A query `s` (e.g. a decoder state) attends over N items `h_i` (e.g. encoder states):

  e_i = score(h_i, s)                      scores      [B,N]
  a_i = exp(e_i) / sum_j exp(e_j)          weights     [B,N], sum_i a_i = 1
  c   = sum_i a_i V h_i                    context     [B,D_v]

Scores, from least to most expressive:

  dot_scores       e_i = h_i^T s  (optionally / sqrt(D))        no parameters, D_h = D_s
  BilinearScores   e_i = h_i^T K s                              K [D_h, D_s]
  AdditiveScores   e_i = v^T tanh(W_h h_i + W_s s)  (Bahdanau)  W_h [D_h, A], W_s [D_s, A], v [A]

The multi-head `q k^T / sqrt(d)` attention of transformers is the scaled dot score of many queries at once;
it lives in `vit_video.layers.attention`.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_video.layers.attention import attention_weights_from_logits

Dtype = Any
SCORES = ("dot", "scaled_dot", "bilinear", "additive")


def _check_query(h: jax.Array, s: jax.Array) -> None:
  if h.ndim != 3 or s.ndim != 2:
    raise ValueError(f"expected h [B,N,D] and s [B,D], got shapes {h.shape} and {s.shape}")
  if h.shape[0] != s.shape[0]:
    raise ValueError(f"batch sizes differ: h {h.shape} and s {s.shape}")


def dot_scores(h: jax.Array, s: jax.Array, *, scale: bool = False) -> jax.Array:
  """Dot-product scores e_i = h_i^T s, or h_i^T s / sqrt(D) with `scale=True`.

  h [B,N,D], s [B,D] -> [B,N]. Scaling keeps the scores' variance near 1 when h and s have unit-variance
  entries, so that the softmax does not saturate as D grows.
  """
  _check_query(h, s)
  if h.shape[-1] != s.shape[-1]:
    raise ValueError(f"dot scores need equal widths, got h {h.shape} and s {s.shape}")
  e = jnp.einsum("bnd,bd->bn", h, s)
  if scale:
    e = e / jnp.sqrt(jnp.asarray(h.shape[-1], e.dtype))
  return e


def attention_weights(scores: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """Softmax over the last axis: a_i = exp(e_i) / sum_{j: mask_j} exp(e_j); a_i = 0 exactly where mask is False.

  scores [B,N], mask bool broadcastable to [B,N] (True = attend) -> weights [B,N], same dtype as scores.
  The softmax runs in float32. A row whose mask is all False gets all-zero weights (not NaN). This is the
  transformer's masked softmax (`attention.attention_weights_from_logits`) with the shape checked first.
  """
  if mask is not None:
    try:
      shape = jnp.broadcast_shapes(mask.shape, scores.shape)
    except ValueError:
      shape = None
    if shape != scores.shape:
      raise ValueError(f"mask shape {mask.shape} does not broadcast to scores shape {scores.shape}")
  return attention_weights_from_logits(scores, mask).astype(scores.dtype)


def weighted_sum(weights: jax.Array, h: jax.Array, value_proj: jax.Array | None = None) -> jax.Array:
  """Context c = sum_i a_i V h_i; without `value_proj`, V is the identity and c = sum_i a_i h_i.

  weights [B,N], h [B,N,D], value_proj V [D,D_v] (kernel layout: V h_i is computed as h_i @ V) -> [B,D_v].
  V is linear, so it is applied once after the sum: sum_i a_i (h_i @ V) = (sum_i a_i h_i) @ V.
  """
  if weights.ndim != 2 or h.ndim != 3 or weights.shape != h.shape[:2]:
    raise ValueError(f"expected weights [B,N] and h [B,N,D], got shapes {weights.shape} and {h.shape}")
  c = jnp.einsum("bn,bnd->bd", weights, h)
  if value_proj is not None:
    if value_proj.ndim != 2 or value_proj.shape[0] != h.shape[-1]:
      raise ValueError(f"value_proj must be [D,D_v] with D={h.shape[-1]}, got shape {value_proj.shape}")
    c = c @ value_proj
  return c


class BilinearScores(nn.Module):
  """Bilinear ("general", Luong) scores e_i = h_i^T K s with a learned K [D_h, D_s]; K = I gives dot scores."""

  kernel_init: Any = nn.initializers.lecun_normal()
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, h: jax.Array, s: jax.Array) -> jax.Array:
    """h [B,N,D_h], s [B,D_s] -> scores [B,N]."""
    _check_query(h, s)
    kernel = self.param("kernel", self.kernel_init, (h.shape[-1], s.shape[-1]), self.param_dtype)
    h, s, kernel = nn.dtypes.promote_dtype(h, s, kernel, dtype=self.dtype)
    return jnp.einsum("bnd,de,be->bn", h, kernel, s)


class AdditiveScores(nn.Module):
  """Additive (Bahdanau) scores e_i = v^T tanh(W_h h_i + W_s s), a one-hidden-layer MLP of width `hidden_dim`.

  Parameters: w_h/kernel [D_h, A], w_s/kernel [D_s, A], v/kernel [A, 1]; no biases, as in Bahdanau et al. 2015.
  """

  hidden_dim: int  # A, the width of the score MLP.
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, h: jax.Array, s: jax.Array) -> jax.Array:
    """h [B,N,D_h], s [B,D_s] -> scores [B,N]."""
    _check_query(h, s)
    dense = lambda name, features: nn.Dense(
        features, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype, name=name)
    hidden = jnp.tanh(dense("w_h", self.hidden_dim)(h) + dense("w_s", self.hidden_dim)(s)[:, None, :])  # [B,N,A]
    return dense("v", 1)(hidden)[..., 0]  # [B,N,1] -> [B,N]


class AttentionPool(nn.Module):
  """Pools N items into one vector: c = sum_i a_i V h_i, a = softmax_i(e_i), e_i = score(h_i, s).

  `score` is one of "dot", "scaled_dot" (e_i = h_i^T s / sqrt(D)), "bilinear", "additive". With no query
  given, a learned query `query` [D] is used for every example; it starts at zero, so dot and bilinear
  pooling start as the mean of the unmasked items. The weights are sown as intermediates/"weights" [B,N].
  """

  score: str = "scaled_dot"
  hidden_dim: int = 64  # A, the additive score's MLP width; unused by the other scores.
  value_dim: int | None = None  # D_v; None: no value projection (V = I, D_v = D).
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, h: jax.Array, s: jax.Array | None = None, mask: jax.Array | None = None) -> jax.Array:
    """h [B,N,D], s [B,D_s] or None (learned query [D]), mask bool [B,N] or None -> context [B,D_v]."""
    if self.score not in SCORES:
      raise ValueError(f"score must be one of {SCORES}, got {self.score!r}")
    if h.ndim != 3:
      raise ValueError(f"expected h [B,N,D], got shape {h.shape}")
    if s is None:
      query = self.param("query", nn.initializers.zeros, (h.shape[-1],), self.param_dtype)
      s = jnp.broadcast_to(query, (h.shape[0], h.shape[-1]))  # [D] -> [B,D]
    h, s = nn.dtypes.promote_dtype(h, s, dtype=self.dtype)
    if self.score in ("dot", "scaled_dot"):
      e = dot_scores(h, s, scale=self.score == "scaled_dot")
    elif self.score == "bilinear":
      e = BilinearScores(dtype=self.dtype, param_dtype=self.param_dtype, name="bilinear")(h, s)
    else:
      e = AdditiveScores(self.hidden_dim, dtype=self.dtype, param_dtype=self.param_dtype, name="additive")(h, s)
    a = attention_weights(e, mask)
    self.sow("intermediates", "weights", a)
    value_proj = None
    if self.value_dim is not None:
      value_proj = self.param("value", nn.initializers.lecun_normal(), (h.shape[-1], self.value_dim),
                              self.param_dtype)
      value_proj = value_proj.astype(self.dtype)
    return weighted_sum(a, h, value_proj)

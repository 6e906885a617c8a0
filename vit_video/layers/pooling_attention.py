"""Pooling attention (MViT, Fan et al. 2021) and MViTv2's decomposed relative positions (Li et al. 2022).

Tokens are a class token followed by a T x H x W map flattened T-major, `[B,1+T*H*W,D]`. Multi-head attention
whose queries, keys and values are each pooled on the map after their projection:

    Attention(X) = softmax(P_q(Q) P_k(K)^T / sqrt(d) + R) P_v(V)  (+ P_q(Q) with MViTv2's residual pooling)

P_* is a depthwise Conv3d (one kernel per head channel, shared by the heads, padding k // 2, no bias) on each
head's map, then a LayerNorm over the head width on every token; the class token is not pooled (it passes
around the conv, then through the norm). A pooled query of stride s sees the k x k x k window around s * its
index through its own projection, and every token through the (pooled) keys and values: attention stays global,
pooling only makes it cheaper and the query map coarser. With `relative_positions`, R is MViTv2's
decomposed bias: for query q at (t, h, w) and key at (t', h', w'), q . (R_t[t, t'] + R_h[h, h'] + R_w[w, w']),
read from learned tables of offsets (zero in the class token's row and column).

Everything follows torchvision 0.28's `MultiscaleAttention` (torchvision/models/video/mvit.py), including its
table sizes and its reading of them (`relative_offsets`, `resize_rows`). Tests: what a pooled query sees
(tests/models/test_mvit.py) and equality with torchvision (tests/checkpoints/test_torchvision_mvit.py).
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_video.layers import conv_lowering
from vit_video.layers.attention import Implementation, dot_product_attention

LN_EPS = 1e-6  # torchvision's MViT norm_layer: LayerNorm(eps=1e-6), also in the pooling.


def pooled_size(thw: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...]) -> tuple[int, ...]:
  """The map size after a pooling of `kernel`, `stride` and padding k // 2 (torch's conv/pool arithmetic)."""
  return tuple((s + 2 * (k // 2) - k) // st + 1 for s, k, st in zip(thw, kernel, stride))


def pool_tokens(x: jax.Array, thw: tuple[int, int, int], pool) -> tuple[jax.Array, tuple[int, int, int]]:
  """Applies `pool` (`[B',T,H,W,d] -> [B',T',H',W',d]`) to the map behind the class token.

  x: `[B,1+T*H*W,*E,d]`, E extra axes (heads) pooled independently. Returns (`[B,1+T'*H'*W',*E,d]`, (T',H',W')).
  """
  b, n, *extra, d = x.shape
  if n != 1 + math.prod(thw):
    raise ValueError(f"{n} tokens are not a class token and a {tuple(thw)} map")
  e = math.prod(extra)
  grid = x[:, 1:].reshape(b, *thw, e, d)  # [B,T,H,W,E,d]
  grid = jnp.moveaxis(grid, 4, 1).reshape(b * e, *thw, d)  # [B*E,T,H,W,d]
  grid = pool(grid)  # [B*E,T',H',W',d]
  new_thw = tuple(grid.shape[1:4])
  grid = jnp.moveaxis(grid.reshape(b, e, -1, d), 1, 2).reshape(b, -1, *extra, d)  # [B,T'*H'*W',*E,d]
  return jnp.concatenate([x[:, :1], grid], axis=1), new_thw


def max_pool_tokens(x: jax.Array, thw: tuple[int, int, int], stride: tuple[int, int, int]):
  """The residual path of a block with query stride s: max pooling with kernel s + 1 (s where s == 1), padding
  k // 2, behind the class token: `[B,1+T*H*W,D] -> ([B,1+T'*H'*W',D], (T',H',W'))`."""
  kernel = tuple(s + 1 if s > 1 else s for s in stride)
  pad = tuple((k // 2, k // 2) for k in kernel)
  return pool_tokens(x, thw, lambda g: nn.max_pool(g, kernel, tuple(stride), pad))


def pools(kernel: tuple[int, ...], stride: tuple[int, ...]) -> bool:
  """Whether torchvision builds a pooling for this kernel and stride (not for 1 x 1 x 1 with stride 1)."""
  return math.prod(kernel) > 1 or math.prod(stride) > 1


class ConvPool(nn.Module):
  """A depthwise Conv3d (`conv`, kernel `[kt,kh,kw,1,d]`, no bias) on the map behind the class token, then a
  LayerNorm (`norm`) of every token: `[B,1+T*H*W,h,d] -> ([B,1+T'*H'*W',h,d], (T',H',W'))`."""
  kernel: tuple[int, int, int]
  stride: tuple[int, int, int]
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, thw: tuple[int, int, int]) -> tuple[jax.Array, tuple[int, int, int]]:
    d = x.shape[-1]
    conv = nn.Conv(d, tuple(self.kernel), tuple(self.stride), padding=[(k // 2, k // 2) for k in self.kernel],
                   feature_group_count=d, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
                   name="conv", conv_general_dilated=conv_lowering.conv_general_dilated)  # depthwise: fused taps
    x, thw = pool_tokens(x, thw, conv)
    return nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, param_dtype=self.param_dtype, name="norm")(x), thw


def relative_offsets(q: int, k: int) -> np.ndarray:
  """Table row of each (query, key) pair along one axis, `[q,k]` ints: torchvision's (SlowFast's) offset between
  positions on the finer of the two grids, `i * max(k/q, 1) - (j - (k - 1)) * max(q/k, 1)`, computed in float32
  and truncated as torch does. For q == k it is i - j + k - 1, in [0, 2k - 2]."""
  q_ratio, k_ratio = np.float32(max(k / q, 1.0)), np.float32(max(q / k, 1.0))
  dist = (np.arange(q, dtype=np.float32)[:, None] * q_ratio
          - (np.arange(k, dtype=np.float32)[None, :] + np.float32(1.0 - k)) * k_ratio)
  return dist.astype(np.int64)


def resize_rows(table: jax.Array, rows: int) -> jax.Array:
  """Linear resampling of a table `[R,d] -> [rows,d]` along its rows, as torch's `F.interpolate(mode="linear",
  align_corners=False)` (half-pixel centres, clamped at the ends, no antialiasing); unchanged when R == rows."""
  size = table.shape[0]
  if size == rows:
    return table
  src = np.maximum((np.arange(rows, dtype=np.float32) + 0.5) * np.float32(size / rows) - 0.5, 0.0)
  lo = src.astype(np.int64)
  hi = np.minimum(lo + 1, size - 1)
  frac = jnp.asarray(src - lo, table.dtype)[:, None]
  return table[lo] * (1 - frac) + table[hi] * frac


def relative_position_bias(q: jax.Array, q_thw: tuple[int, int, int], k_thw: tuple[int, int, int],
                           tables: tuple[jax.Array, jax.Array, jax.Array]) -> jax.Array:
  """MViTv2's decomposed relative-position logits: queries `[B,1+Nq,h,d]` on a q_thw map, keys on a k_thw map,
  tables (R_t, R_h, R_w) `[rows,d]` -> bias `[B,h,1+Nq,1+Nk]`, zero in the class token's row and column. Each
  table is first resampled (`resize_rows`) to 2 * max(q, k) - 1 rows along its axis."""
  b, _, h, d = q.shape
  rel = []
  for table, qs, ks in zip(tables, q_thw, k_thw):
    table = resize_rows(table, 2 * max(qs, ks) - 1)
    rel.append(table[relative_offsets(qs, ks)].astype(q.dtype))  # [q,k,d]
  r_q = q[:, 1:].reshape(b, *q_thw, h, d)  # [B,T,H,W,h,d]
  rel_t = jnp.einsum("bthwnc,tkc->bnthwk", r_q, rel[0])  # [B,h,T,H,W,T']
  rel_h = jnp.einsum("bthwnc,hkc->bnthwk", r_q, rel[1])  # [B,h,T,H,W,H']
  rel_w = jnp.einsum("bthwnc,wkc->bnthwk", r_q, rel[2])  # [B,h,T,H,W,W']
  bias = (rel_t[..., :, None, None] + rel_h[..., None, :, None]
          + rel_w[..., None, None, :])  # [B,h,T,H,W,T',H',W']
  bias = bias.reshape(b, h, math.prod(q_thw), math.prod(k_thw))  # [B,h,Nq,Nk]
  return jnp.pad(bias, ((0, 0), (0, 0), (1, 0), (1, 0)))  # [B,h,1+Nq,1+Nk]


class PoolingAttention(nn.Module):
  """Multi-head pooling attention: `[B,1+T*H*W,D]` on a (T,H,W) map -> (`[B,1+T'*H'*W',features]`, (T',H',W')),
  the query map's size.

  Parameters: `query`, `key`, `value` kernels `[D,h,d]` and `out` `[h,d,features]` with biases (as
  MultiHeadAttention); `pool_q`, `pool_k`, `pool_v` (ConvPool) where `pools`; `rel_pos_t`, `rel_pos_h`,
  `rel_pos_w` `[rows,d]` with relative positions.

  Attributes:
    num_heads: h; features: the attention width h * d and the output width (torchvision's output_dim).
    kernel_q, stride_q, kernel_kv, stride_kv: the query and the key/value pooling, (t, h, w) each.
    residual_pool: add the pooled queries to the attention output (MViTv2); `residual_with_cls`: also to the
      class token's.
    table_size: None (no relative positions), or the (T, H, W) map the tables are sized for, as torchvision sizes
      them: 2T - 1 rows in time, 2 max(q, kv) - 1 in space with q = max(H, W) // stride_q[1] and kv likewise.
    dropout_rate: dropout on the output projection (torchvision's `dropout`).
    sow_weights: store the weights `[B,h,1+Nq,1+Nk]` (pooled queries and keys, class token first) in the
      'intermediates' collection as `attention_weights` (computed on the einsum path whatever `implementation`).
  """
  num_heads: int
  features: int
  kernel_q: tuple[int, int, int]
  stride_q: tuple[int, int, int]
  kernel_kv: tuple[int, int, int]
  stride_kv: tuple[int, int, int]
  residual_pool: bool = False
  residual_with_cls: bool = False
  table_size: tuple[int, int, int] | None = None
  dropout_rate: float = 0.0
  implementation: Implementation = "auto"
  sow_weights: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, thw: tuple[int, int, int], *,
               deterministic: bool) -> tuple[jax.Array, tuple[int, int, int]]:
    if self.features % self.num_heads:
      raise ValueError(f"attention width {self.features} is not divisible by num_heads {self.num_heads}")
    d = self.features // self.num_heads
    dense = lambda name: nn.DenseGeneral(  # noqa: E731
        (self.num_heads, d), kernel_init=nn.initializers.truncated_normal(0.02), dtype=self.dtype,
        param_dtype=self.param_dtype, name=name)
    q, k, v = dense("query")(x), dense("key")(x), dense("value")(x)  # [B,1+N,h,d]
    k_thw = q_thw = tuple(thw)
    pool = lambda kernel, stride, name: ConvPool(  # noqa: E731
        tuple(kernel), tuple(stride), dtype=self.dtype, param_dtype=self.param_dtype, name=name)
    if pools(self.kernel_kv, self.stride_kv):
      k, k_thw = pool(self.kernel_kv, self.stride_kv, "pool_k")(k, thw)  # [B,1+Nk,h,d]
      v, _ = pool(self.kernel_kv, self.stride_kv, "pool_v")(v, thw)  # [B,1+Nk,h,d]
    if pools(self.kernel_q, self.stride_q):
      q, q_thw = pool(self.kernel_q, self.stride_q, "pool_q")(q, thw)  # [B,1+Nq,h,d]
    bias = None
    if self.table_size is not None:
      t, *hw = self.table_size
      q_size, kv_size = max(hw) // self.stride_q[1], max(hw) // self.stride_kv[1]
      rows = (2 * t - 1, *(2 * max(q_size, kv_size) - 1,) * 2)
      tables = tuple(self.param(f"rel_pos_{axis}", nn.initializers.truncated_normal(0.02), (n, d), self.param_dtype)
                     for axis, n in zip("thw", rows))
      bias = relative_position_bias(q, q_thw, k_thw, tables)  # [B,h,1+Nq,1+Nk]
    implementation = "einsum" if self.sow_weights else self.implementation
    y, weights = dot_product_attention(q, k, v, bias=bias, implementation=implementation,
                                       training=not deterministic)  # [B,1+Nq,h,d]
    if self.sow_weights:
      self.sow("intermediates", "attention_weights", weights)  # [B,h,1+Nq,1+Nk]
    if self.residual_pool:
      y = y + (q if self.residual_with_cls else q.at[:, 0].set(0))
    y = nn.DenseGeneral(self.features, axis=(-2, -1), kernel_init=nn.initializers.truncated_normal(0.02),
                        dtype=self.dtype, param_dtype=self.param_dtype, name="out")(y)  # [B,1+Nq,features]
    return nn.Dropout(self.dropout_rate)(y, deterministic=deterministic), q_thw

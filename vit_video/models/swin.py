"""Swin Transformer (Liu et al. 2021): hierarchical ViT with shifted windows.

An image `[B,H,W,C]` is cut into 4x4 patches, linearly embedded and layer-normed (the paper's "patch partition" and
"linear embedding"), then four stages run. Stage i > 0 first merges each 2x2 group of tokens (concatenate the four
C-vectors, LayerNorm, Linear 4C -> 2C without bias), halving the resolution and doubling the width. Every stage
is a stack of pre-norm blocks

    x = x + DropPath(W-MSA(LN(x)));  x = x + DropPath(MLP(LN(x)))

whose attention is restricted to non-overlapping M x M windows (W-MSA), with softmax(Q K^T / sqrt(d) + B) V where
B is read from a learned table of (2M-1)^2 relative-position biases per head. Every odd block shifts the windows
by floor(M/2) (SW-MSA), computed as in the paper: cyclic shift of the token map (`jnp.roll`), attention in the
regular windows with a mask that keeps tokens from different parts of the map apart, and the reverse shift.
A final LayerNorm, a global average pool and a linear head give `[B,K]`. Stochastic depth grows linearly
from 0 over all blocks.

Sizes that are not multiples of the window (both conventions of the reference code, selected by `window_padding`):
  - Each block zero-pads its normalised token map at the bottom/right to a multiple of the window, attends, and
    crops; 2x2 merging zero-pads an odd side by one (timm, and the official detection code).
  - A stage whose resolution along an axis is <= M uses a window of that resolution along that axis and no shift
    along it (timm decides per axis; the official classification code decides on min(H, W) for both axes, the same
    for square inputs). The relative-position table keeps its (2M-1)^2 rows and a smaller window reads the rows
    of its offsets; timm instead builds smaller tables at construction, so timm checkpoints of models whose
    stages are smaller than M have tables of other shapes (the importer resamples them).
  - window_padding="timm" reproduces timm 1.0.31 exactly (for outputs equal to timm's at padded sizes): shift the unpadded map, then pad, then mask
    the three regions per axis [0, Hp-M), [Hp-M, Hp-s), [Hp-s, Hp) of the padded map (Hp the padded size, s the
    shift). Non-shifted blocks attend to the zero padding (their keys and values are the projection biases).
    When a side needs padding the wrapped-around tokens share a region with the last rows/columns of the map, so
    a shifted window then mixes the two ends of the map (tested in tests/models/test_swin.py). Inputs whose stage
    resolutions are multiples of M (224 with M=7, 384 with M=12) never pad.
  - window_padding="masked" (default, the correct shifted partition): pad, then shift (the official detection code's order, which leaves the padding
    unmasked), and mask so that each real token attends exactly to the real tokens of its window in the partition
    displaced by s (the paper's shifted partition), never to padding, in shifted and regular blocks alike.
    Identical to "timm" when nothing is padded.

Parameter names (tests/checkpoints/test_timm_swin.py maps timm's onto them): `embedding`, `embedding_norm`,
`stage_{i}/downsample/{norm,reduction}` (i > 0), `stage_{i}/block_{j}/{norm1,rel_pos,attn,norm2,mlp}`, `norm`,
`head`. Counts at 224 x 224 (384 for the window-12 variants) and 1000 classes equal timm's exactly and round to
the published ones (Swin-T 28.3M, S 49.6M, B 87.8M, L 197M; tests/models/test_swin.py).

The window helpers take tuples of any length, so that they serve 3D (video) windows as well.
"""
import functools
import math
from collections.abc import Sequence
from typing import ClassVar, Literal

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_video.layers.attention import Implementation, MultiHeadAttention
from vit_video.layers.embed import PatchEmbedding
from vit_video.layers.mlp import DropPath, MlpBlock

WindowPadding = Literal["timm", "masked"]
_LN_EPS = 1e-5  # torch's LayerNorm default, used by the official code and timm.


def window_partition(x, window: Sequence[int]):
  """Cuts a token map into non-overlapping windows: `[B,*S,C] -> [B*nW,N,C]`, N = prod(window), nW = prod(S/window).

  Windows come in row-major order of the window grid, the tokens of each in row-major order. S must be a multiple
  of the window. Works on numpy and jax arrays.
  """
  b, *spatial, c = x.shape
  k = len(window)
  grid = [s // w for s, w in zip(spatial, window)]
  x = x.reshape(b, *[d for pair in zip(grid, window) for d in pair], c)  # [B,g_1,w_1,...,g_k,w_k,C]
  x = x.transpose(0, *range(1, 2 * k, 2), *range(2, 2 * k + 1, 2), 2 * k + 1)  # [B,g_1..g_k,w_1..w_k,C]
  return x.reshape(-1, math.prod(window), c)  # [B*nW,N,C]


def window_reverse(windows, window: Sequence[int], spatial: Sequence[int]):
  """Inverse of `window_partition`: `[B*nW,N,C] -> [B,*S,C]` for the token map size S."""
  k = len(window)
  grid = [s // w for s, w in zip(spatial, window)]
  c = windows.shape[-1]
  x = windows.reshape(-1, *grid, *window, c)  # [B,g_1..g_k,w_1..w_k,C]
  x = x.transpose(0, *[a for i in range(k) for a in (1 + i, 1 + k + i)], 2 * k + 1)  # [B,g_1,w_1,...,g_k,w_k,C]
  return x.reshape(-1, *spatial, c)  # [B,*S,C]


def cyclic_shift(x: jax.Array, shift: Sequence[int]) -> jax.Array:
  """Rolls the token map `[B,*S,C]` by -shift along each spatial axis (token at s moves to s - shift)."""
  return jnp.roll(x, [-s for s in shift], axis=tuple(range(1, 1 + len(shift))))


def reverse_cyclic_shift(x: jax.Array, shift: Sequence[int]) -> jax.Array:
  """Inverse of `cyclic_shift`."""
  return jnp.roll(x, tuple(shift), axis=tuple(range(1, 1 + len(shift))))


def window_and_shift(resolution: Sequence[int], window: Sequence[int], shifted: bool) -> tuple[tuple[int, ...], ...]:
  """A block's (window, shift) at a token-map resolution: per axis, the window is min(resolution, window) and the
  shift floor(window/2) for shifted blocks, 0 where resolution <= window (timm's rule)."""
  eff = tuple(min(r, w) for r, w in zip(resolution, window))
  shift = tuple(w // 2 if shifted and r > w else 0 for r, w in zip(resolution, window))
  return eff, shift


def padded_size(resolution: Sequence[int], window: Sequence[int]) -> tuple[int, ...]:
  """The resolution rounded up to a multiple of the window, per axis."""
  return tuple(-(-r // w) * w for r, w in zip(resolution, window))


def _grid_labels(per_axis: list[np.ndarray]) -> np.ndarray:
  """One int label per position of a grid from per-axis labels (>= 0): distinct tuples give distinct labels."""
  label = np.zeros([len(a) for a in per_axis], np.int64)
  for a, lab in enumerate(per_axis):
    label = label * (int(lab.max()) + 1) + lab.reshape([-1 if i == a else 1 for i in range(len(per_axis))])
  return label


def attention_mask(resolution: Sequence[int], window: Sequence[int], shift: Sequence[int],
                   padding: WindowPadding = "timm") -> np.ndarray | None:
  """Which keys each query of each window may attend to: bool `[nW,N,N]` (True = attend), or None for all.

  resolution: the unpadded token map size S; window, shift: the block's (from `window_and_shift`).
  Windows are numbered as `window_partition` numbers them on the shifted and padded map of the block's data
  path (see the module docstring for both conventions).
  """
  padded = padded_size(resolution, window)
  if padding == "timm":
    if not any(shift):
      return None
    # timm's regions on the padded map: [0, P-M), [P-M, P-s), [P-s, P) per axis (one region where s = 0).
    per_axis = [np.searchsorted([p - w, p - s], np.arange(p), side="right") for p, w, s in zip(padded, window, shift)]
    label = _grid_labels(per_axis)
  elif padding == "masked":
    # Map position i holds padded coordinate j = (i + s) mod P, a real token iff j < S, of window floor((j - s)/M)
    # in the partition displaced by s (-1 for the tokens before the first displaced window).
    coords = [(np.arange(p) + s) % p for p, s in zip(padded, shift)]
    valid = np.ones(padded, bool)
    for a, (j, r) in enumerate(zip(coords, resolution)):
      valid &= (j < r).reshape([-1 if i == a else 1 for i in range(len(padded))])
    label = _grid_labels([np.floor_divide(j - s, w) + 1 for j, w, s in zip(coords, window, shift)])
    label = np.where(valid, label, -1)  # Padding: its own label, so it attends to padding only.
  else:
    raise ValueError(f"window_padding must be 'timm' or 'masked'; got {padding!r}")
  windows = window_partition(label[None, ..., None], window)[..., 0]  # [nW,N]
  mask = windows[:, :, None] == windows[:, None, :]  # [nW,N,N]
  return None if mask.all() else mask


def relative_position_index(window: Sequence[int], table_window: Sequence[int] | None = None) -> np.ndarray:
  """Index into a relative-position table for every (query, key) pair of a window: int `[N,N]`.

  The table of `table_window` M (default: the window) has prod(2 M_a - 1) rows, row-major over the offsets
  q_a - k_a + M_a - 1 (Swin's layout). A window smaller than the table reads the rows of its offsets.
  """
  table_window = tuple(window) if table_window is None else tuple(table_window)
  if any(w > m for w, m in zip(window, table_window)) or len(window) != len(table_window):
    raise ValueError(f"window {tuple(window)} does not fit the relative-position table of window {table_window}")
  coords = np.stack(np.meshgrid(*[np.arange(w) for w in window], indexing="ij"), -1).reshape(-1, len(window))  # [N,k]
  offsets = coords[:, None, :] - coords[None, :, :] + np.asarray(table_window) - 1  # [N,N,k], each in [0, 2M-2]
  return np.ravel_multi_index(tuple(np.moveaxis(offsets, -1, 0)), [2 * m - 1 for m in table_window])


def _torch_bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
  """`[n_out, n_in]` weights of torch's bicubic resize (align_corners=False, A = -0.75, edges clamped)."""
  a = -0.75
  near = lambda t: ((a + 2) * t - (a + 3)) * t * t + 1  # |t| <= 1  # noqa: E731
  far = lambda t: ((a * t - 5 * a) * t + 8 * a) * t - 4 * a  # 1 < |t| < 2  # noqa: E731
  m = np.zeros((n_out, n_in))
  for i in range(n_out):
    x = (i + 0.5) * n_in / n_out - 0.5
    x0 = math.floor(x)
    t = x - x0
    for k, c in zip(range(-1, 3), (far(t + 1), near(t), near(1 - t), far(2 - t))):
      m[i, min(max(x0 + k, 0), n_in - 1)] += c
  return m


def resize_relative_position_bias_table(table, new_window: int | Sequence[int], *,
                                        old_window: int | Sequence[int] | None = None) -> np.ndarray:
  """Bicubically resamples a relative-position bias table to another window, for checkpoints of another window.

  `[(2m_h-1)(2m_w-1), h] -> [(2M_h-1)(2M_w-1), h]`, as the official code's `load_pretrained` (torch bicubic,
  align_corners=False) does. (timm's checkpoint filter instead resamples on a geometric grid, BEiT's recipe.)
  old_window: default the square window the row count implies. The same window returns the table unchanged.
  """
  table = np.asarray(table)
  new_window = (new_window,) * 2 if isinstance(new_window, int) else tuple(new_window)
  if table.ndim != 2:
    raise ValueError(f"a relative-position bias table is [positions, heads]; got shape {table.shape}")
  if old_window is None:
    side = math.isqrt(table.shape[0])
    if side * side != table.shape[0] or side % 2 == 0:
      raise ValueError(f"{table.shape[0]} rows are not a (2m-1)^2 table of a square window; pass old_window")
    old_window = ((side + 1) // 2,) * 2
  old_window = (old_window,) * 2 if isinstance(old_window, int) else tuple(old_window)
  old_side, new_side = [2 * w - 1 for w in old_window], [2 * w - 1 for w in new_window]
  if math.prod(old_side) != table.shape[0]:
    raise ValueError(f"a table of window {old_window} has {math.prod(old_side)} rows; got shape {table.shape}")
  if old_side == new_side:
    return table
  grid = table.reshape(*old_side, -1).astype(np.float64)  # [2m_h-1, 2m_w-1, h]
  wy, wx = _torch_bicubic_matrix(old_side[0], new_side[0]), _torch_bicubic_matrix(old_side[1], new_side[1])
  out = np.einsum("ya,abh,xb->yxh", wy, grid, wx)  # [2M_h-1, 2M_w-1, h]
  return out.reshape(-1, table.shape[1]).astype(table.dtype)


def merge_2x2(x: jax.Array) -> jax.Array:
  """Concatenates each 2x2 group of tokens: `[B,H,W,C] -> [B,H/2,W/2,4C]`, in the official/timm order
  (0,0), (1,0), (0,1), (1,1) as (row, column) offsets, i.e. x[0::2,0::2], x[1::2,0::2], x[0::2,1::2], x[1::2,1::2]."""
  return einops.rearrange(x, "b (h dh) (w dw) c -> b h w (dw dh c)", dh=2, dw=2)


class PatchMerging(nn.Module):
  """2x2 patch merging: `[B,H,W,C] -> [B,ceil(H/2),ceil(W/2),out_dim]`, odd sides zero-padded at the end.

  merge_2x2 -> LayerNorm(4C) (`norm`) -> Dense(out_dim, no bias) (`reduction`).
  """
  out_dim: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    _, h, w, _ = x.shape
    x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))  # [B,2*ceil(H/2),2*ceil(W/2),C]
    x = merge_2x2(x)  # [B,H',W',4C]
    x = nn.LayerNorm(epsilon=_LN_EPS, dtype=self.dtype, param_dtype=self.param_dtype, name="norm")(x)
    return nn.Dense(self.out_dim, use_bias=False, kernel_init=nn.initializers.truncated_normal(0.02),
                    dtype=self.dtype, param_dtype=self.param_dtype, name="reduction")(x)


class RelativePositionBias(nn.Module):
  """Learned relative-position bias of a window: parameter `relative_position_bias_table [prod(2M-1), h]`
  (truncated normal, std 0.02); the call gives the bias `[h,N,N]` of a window <= M (index computed in numpy)."""
  num_heads: int
  window_size: tuple[int, ...]
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, window: Sequence[int]) -> jax.Array:
    rows = math.prod(2 * m - 1 for m in self.window_size)
    table = self.param("relative_position_bias_table", nn.initializers.truncated_normal(0.02),
                       (rows, self.num_heads), self.param_dtype)
    index = relative_position_index(window, self.window_size)  # [N,N]
    bias = jnp.take(table, index.reshape(-1), axis=0).reshape(*index.shape, self.num_heads)  # [N,N,h]
    return bias.transpose(2, 0, 1).astype(self.dtype)  # [h,N,N]


class SwinBlock(nn.Module):
  """(Shifted-)window attention block on a token map: `[B,H,W,D] -> [B,H,W,D]`.

  x = x + DropPath(proj(W-MSA(LN(x)))); x = x + DropPath(MLP(LN(x))), W-MSA in windows of `window_size`
  (clipped per axis to the resolution), displaced by floor(M/2) when `shifted` (see the module docstring).
  """
  num_heads: int
  window_size: tuple[int, int]
  shifted: bool
  mlp_ratio: float = 4.0
  drop_path_rate: float = 0.0
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  window_padding: WindowPadding = "masked"
  attention_implementation: Implementation = "einsum"
  sow_attention_weights: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    b, *spatial, d = x.shape
    window, shift = window_and_shift(spatial, self.window_size, self.shifted)
    padded = padded_size(spatial, window)
    pad = [(0, 0)] + [(0, p - s) for p, s in zip(padded, spatial)] + [(0, 0)]
    crop = (slice(None), *[slice(0, s) for s in spatial])
    norm = lambda name: nn.LayerNorm(epsilon=_LN_EPS, dtype=self.dtype, param_dtype=self.param_dtype, name=name)  # noqa: E731

    y = norm("norm1")(x)
    if self.window_padding == "timm":
      y = jnp.pad(cyclic_shift(y, shift), pad)  # [B,*P,D]
    else:
      y = cyclic_shift(jnp.pad(y, pad), shift)  # [B,*P,D]
    windows = window_partition(y, window)  # [B*nW,N,D]
    bias = RelativePositionBias(self.num_heads, self.window_size, dtype=self.dtype, param_dtype=self.param_dtype,
                                name="rel_pos")(window)  # [h,N,N]
    mask = attention_mask(spatial, window, shift, self.window_padding)  # [nW,N,N] or None
    if mask is not None:
      n = mask.shape[-1]
      mask = jnp.broadcast_to(jnp.asarray(mask)[None], (b, *mask.shape)).reshape(-1, 1, n, n)  # [B*nW,1,N,N]
    windows = MultiHeadAttention(
        num_heads=self.num_heads, dropout_rate=self.attention_dropout_rate,
        implementation=self.attention_implementation, sow_weights=self.sow_attention_weights,
        kernel_init=nn.initializers.truncated_normal(0.02), dtype=self.dtype, param_dtype=self.param_dtype,
        name="attn")(windows, mask=mask, bias=bias[None], deterministic=deterministic)  # [B*nW,N,D]
    y = window_reverse(windows, window, padded)  # [B,*P,D]
    if self.window_padding == "timm":
      y = reverse_cyclic_shift(y[crop], shift)  # [B,*S,D]
    else:
      y = reverse_cyclic_shift(y, shift)[crop]  # [B,*S,D]
    y = nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
    x = x + DropPath()(y, self.drop_path_rate, deterministic=deterministic)
    y = MlpBlock(mlp_dim=int(d * self.mlp_ratio), dropout_rate=self.dropout_rate, dtype=self.dtype,
                 param_dtype=self.param_dtype, name="mlp")(norm("norm2")(x), deterministic=deterministic)
    return x + DropPath()(y, self.drop_path_rate, deterministic=deterministic)


class SwinStage(nn.Module):
  """Optional 2x2 patch merging (`downsample`), then `len(drop_path_rates)` blocks alternating regular and shifted
  windows: `[B,H,W,D_in] -> [B,H',W',D]` (H' = ceil(H/2) when downsampling)."""
  width: int
  num_heads: int
  window_size: tuple[int, int]
  drop_path_rates: tuple[float, ...]
  downsample: bool
  mlp_ratio: float = 4.0
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  window_padding: WindowPadding = "masked"
  attention_implementation: Implementation = "einsum"
  sow_attention_weights: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    if self.downsample:
      x = PatchMerging(self.width, dtype=self.dtype, param_dtype=self.param_dtype, name="downsample")(x)
    for j, rate in enumerate(self.drop_path_rates):
      x = SwinBlock(
          num_heads=self.num_heads, window_size=self.window_size, shifted=j % 2 == 1, mlp_ratio=self.mlp_ratio,
          drop_path_rate=float(rate), dropout_rate=self.dropout_rate,
          attention_dropout_rate=self.attention_dropout_rate, window_padding=self.window_padding,
          attention_implementation=self.attention_implementation, sow_attention_weights=self.sow_attention_weights,
          dtype=self.dtype, param_dtype=self.param_dtype, name=f"block_{j}")(x, deterministic=deterministic)
    return x


class Swin(nn.Module):
  """Swin Transformer classifier.

  Attributes:
    num_classes: K; 0 returns the pooled features `[B, width * 2**(S-1)]` instead of logits.
    patch_size: P; image sides must be divisible by it.
    width: C of the first stage; stage i has width * 2**i channels.
    depths, num_heads: blocks and attention heads per stage (as many stages as entries).
    window_size: M, an int or (M_h, M_w); the relative-position tables are (2M-1)^2 rows whatever the input size.
    mlp_ratio: MLP hidden width / block width.
    dropout_rate: dropout after the attention projection and in the MLP.
    stochastic_depth_rate: drop-path rate of the last block; block n of L (over all stages) uses rate * n / (L-1).
    window_padding: "timm" or "masked": how sizes that are not multiples of the window are handled (module doc).
    in_channels: C expected of the input.
    sow_attention_weights: store each block's weights `[B*nW,h,N,N]` in 'intermediates'.
  """
  inputs: ClassVar[tuple[str, ...]] = ("image",)
  head: ClassVar[str] = "head"
  batch_norm: ClassVar[bool] = False
  num_classes: int
  patch_size: int = 4
  width: int = 96
  depths: tuple[int, ...] = (2, 2, 6, 2)
  num_heads: tuple[int, ...] = (3, 6, 12, 24)
  window_size: int | tuple[int, int] = 7
  mlp_ratio: float = 4.0
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  stochastic_depth_rate: float = 0.0
  window_padding: WindowPadding = "masked"
  in_channels: int = 3
  attention_implementation: Implementation = "einsum"
  sow_attention_weights: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """`[B,H,W,C] -> [B,K]` float32 logits (or `[B,D']` features when num_classes == 0)."""
    if x.ndim != 4 or x.shape[-1] != self.in_channels:
      raise ValueError(f"Swin expects images [B,H,W,{self.in_channels}]; got shape {x.shape}")
    if x.shape[1] % self.patch_size or x.shape[2] % self.patch_size:
      raise ValueError(f"image size {x.shape[1:3]} is not divisible by patch size {self.patch_size}")
    if len(self.depths) != len(self.num_heads):
      raise ValueError(f"depths {self.depths} and num_heads {self.num_heads} must have one entry per stage")
    if self.window_padding not in ("timm", "masked"):
      raise ValueError(f"window_padding must be 'timm' or 'masked'; got {self.window_padding!r}")
    window = (self.window_size,) * 2 if isinstance(self.window_size, int) else tuple(self.window_size)
    if len(window) != 2 or min(window) < 1:
      raise ValueError(f"window_size must be a positive int or (M_h, M_w); got {self.window_size!r}")
    x = x.astype(self.dtype)
    x = PatchEmbedding((self.patch_size, self.patch_size), self.width, dtype=self.dtype,
                       param_dtype=self.param_dtype, name="embedding")(x)  # [B,H/P,W/P,D]
    x = nn.LayerNorm(epsilon=_LN_EPS, dtype=self.dtype, param_dtype=self.param_dtype, name="embedding_norm")(x)
    rates = np.linspace(0.0, self.stochastic_depth_rate, sum(self.depths))
    starts = np.cumsum((0,) + tuple(self.depths))
    for i, (depth, heads) in enumerate(zip(self.depths, self.num_heads)):
      x = SwinStage(
          width=self.width * 2**i, num_heads=heads, window_size=window,
          drop_path_rates=tuple(float(r) for r in rates[starts[i]:starts[i] + depth]), downsample=i > 0,
          mlp_ratio=self.mlp_ratio, dropout_rate=self.dropout_rate, attention_dropout_rate=self.attention_dropout_rate,
          window_padding=self.window_padding, attention_implementation=self.attention_implementation,
          sow_attention_weights=self.sow_attention_weights, dtype=self.dtype, param_dtype=self.param_dtype,
          name=f"stage_{i}")(x, deterministic=not train)  # [B,H_i,W_i,D_i]
    x = nn.LayerNorm(epsilon=_LN_EPS, dtype=self.dtype, param_dtype=self.param_dtype, name="norm")(x)
    x = x.mean(axis=(1, 2))  # [B,D']
    if not self.num_classes:
      return x.astype(jnp.float32)
    x = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, dtype=self.dtype,
                 param_dtype=self.param_dtype, name="head")(x)
    return x.astype(jnp.float32)


# Sizes from the paper's Section 3.3 / Table 1; the window-12 models are the 384 x 384 ones. Training drop-path
# rates in the paper's code (ImageNet-1k from scratch): T 0.2, S 0.3, B 0.5 (set `stochastic_depth_rate`).
VARIANTS = {
    "swin_t": dict(width=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7),
    "swin_s": dict(width=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), window_size=7),
    "swin_b": dict(width=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=7),
    "swin_l": dict(width=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), window_size=7),
    "swin_b_w12": dict(width=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=12),
    "swin_l_w12": dict(width=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), window_size=12),
}

MODELS = {name: functools.partial(Swin, **kwargs) for name, kwargs in VARIANTS.items()}

"""(Shifted) window attention's pieces, for token maps of any rank: 2D (Swin) and 3D (Video Swin) windows.

A token map `[B,*S,C]` (S = (H, W) or (T, H, W)) is cut into non-overlapping windows of M tokens per axis
(`window_partition`, undone by `window_reverse`); shifted blocks first roll the map by s = floor(M/2) per axis
(`cyclic_shift`), so that the regular windows of the rolled map are the windows displaced by s, and mask the pairs
that the roll brought together from the two ends of the map (`attention_mask`). A map no larger than M along an
axis uses a window of the map's size and no shift along it (`window_and_shift`); other sizes are padded to a
multiple of the window (`padded_size`). Attention inside a window adds a learned bias per head and relative
offset, read from a table of prod(2M-1) rows (`relative_position_index`, `RelativePositionBias`), which
`resize_relative_position_bias_table` resamples for a checkpoint of another window.
"""
import math
from collections.abc import Sequence
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


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
                   padding: Literal["timm", "masked"] = "timm") -> np.ndarray | None:
  """Which keys each query of each window may attend to: bool `[nW,N,N]` (True = attend), or None for all.

  resolution: the unpadded token map size S; window, shift: the block's (from `window_and_shift`).
  padding: "timm", the regions [0, P-M), [P-M, P-s), [P-s, P) per axis of the padded map (P padded size, s shift),
    which timm and torchvision (`_compute_attention_mask_3d`) both use; or "masked", each real token with exactly
    the real tokens of its window in the partition displaced by s, padding with padding only.
  Windows are numbered as `window_partition` numbers them on the shifted and padded map of the block's data
  path (see swin.SwinBlock for the conventions).
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


class RelativePositionBias(nn.Module):
  """Learned relative-position bias of a window: parameter `relative_position_bias_table [prod(2M-1), h]`
  (truncated normal, std 0.02), rows row-major over the offsets; the call gives the bias `[h,N,N]` of a window
  no larger than `window_size` M (index computed in numpy).

  leading_rows: read a smaller window's biases as torchvision's Video Swin does (the index of the full window cut to
    its first N rows and columns, which are not the smaller window's offsets where it is reduced along H or W)
    instead of at the window's own offsets.
  """
  num_heads: int
  window_size: tuple[int, ...]
  leading_rows: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, window: Sequence[int]) -> jax.Array:
    rows = math.prod(2 * m - 1 for m in self.window_size)
    table = self.param("relative_position_bias_table", nn.initializers.truncated_normal(0.02),
                       (rows, self.num_heads), self.param_dtype)
    n = math.prod(window)
    if self.leading_rows:
      index = relative_position_index(self.window_size)[:n, :n]  # [N,N]
    else:
      index = relative_position_index(window, self.window_size)  # [N,N]
    bias = jnp.take(table, index.reshape(-1), axis=0).reshape(n, n, self.num_heads)  # [N,N,h]
    return bias.transpose(2, 0, 1).astype(self.dtype)  # [h,N,N]

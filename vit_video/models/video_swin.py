"""Video Swin Transformer (Liu et al. 2022): Swin's shifted windows extended to space-time.

A clip `[B,T,H,W,C]` is cut into 2 x 4 x 4 patches (a Conv3d with stride = kernel) and layer-normed, then four
stages run. Stage i > 0 first merges each 2x2 spatial group of tokens of every temporal index (as in 2D Swin; time
is never merged), halving H and W and doubling the width. Every stage is a stack of pre-norm blocks

    x = x + DropPath(3D W-MSA(LN(x)));  x = x + DropPath(MLP(LN(x)))

whose attention is restricted to non-overlapping Wt x Wh x Ww windows (8 x 7 x 7 for the Kinetics models), with
softmax(Q K^T / sqrt(d) + B) V where B is read from a learned table of (2Wt-1)(2Wh-1)(2Ww-1) biases per head.
Every odd block displaces the windows by floor(W/2) along all three axes (3D SW-MSA: cyclic shift, attention in
the regular windows under a mask, reverse shift). A final LayerNorm, an average over T', H', W' and a linear head
give `[B,K]`.

Sizes that are not multiples of the window (torchvision 0.28's `swin3d_*`, which is the official code
SwinTransformer/Video-Swin-Transformer, checked equal in tests/checkpoints/test_torchvision_video_swin.py):
  - Per axis, a token map no larger than the window uses a window of the map's size and no shift along that axis
    (`swin.window_and_shift`, torchvision's `_get_window_and_shift_size`).
  - Each block zero-pads its normalised token map at the end of T, H and W to a multiple of the window, then
    shifts (pad, then roll), attends and crops; 2x2 merging zero-pads an odd H or W by one.
  - window_padding="torchvision" (outputs equal torchvision's and the official code's at any size) masks shifted
    blocks with the regions [0, P-M), [P-M, P-s), [P-s, P) per axis of the padded map (P padded size, s shift;
    `swin.attention_mask(..., "timm")` computes exactly these). Real tokens are then grouped as the paper's
    displaced windows, but a real token may attend to the zero padding (keys and values = projection biases):
    always in regular blocks, and in shifted ones for the last window along a padded axis. A window reduced to
    the map along H or W reads the relative-position biases of the first prod(window) tokens of the full window
    (torchvision's `relative_position_index[:N, :N]`), which are not its own offsets; reduced along T alone,
    they are. At 32 x 224 x 224 with window 8 x 7 x 7 none of this occurs: nothing is padded and only the last
    stage (7 x 7) fits one window exactly.
  - window_padding="masked" (default, as in swin.py; the paper's partition): each real token attends exactly to the real tokens of its
    displaced window, never to padding, with the biases of their true offsets. Identical to "torchvision" when
    nothing is padded and no window is reduced along H or W.
Unlike torchvision, a clip whose size the 3D patch does not tile raises a ValueError (torchvision zero-pads it).

Parameter names are 2D Swin's (vit_video.models.swin), so `checkpoints.inflate.video_swin_from_swin` maps them one
to one: `embedding` (kernel `[2,4,4,C,D]`), `embedding_norm`, `stage_{i}/downsample/{norm,reduction}` (i > 0),
`stage_{i}/block_{j}/{norm1,rel_pos,attn,norm2,mlp}`, `norm`, `head`. Counts with 400 classes equal torchvision's
`swin3d_t/s/b` exactly (tests/models/test_video_swin.py).
"""
import functools
import math
from collections.abc import Sequence
from typing import ClassVar, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_video.layers.attention import Implementation, MultiHeadAttention
from vit_video.layers.embed import PatchEmbedding
from vit_video.layers.mlp import DropPath, MlpBlock
from vit_video.models import swin

WindowPadding = Literal["torchvision", "masked"]
_LN_EPS = 1e-5  # torch's LayerNorm default, used by torchvision and the official code.


class RelativePositionBias3D(nn.Module):
  """Learned relative-position bias of a 3D window: parameter `relative_position_bias_table
  [(2Wt-1)(2Wh-1)(2Ww-1), h]` (truncated normal, std 0.02), rows row-major over the (t, h, w) offsets; the call
  gives the bias `[h,N,N]` of a window <= `window_size`.

  leading_rows: read a smaller window's biases as torchvision does (the index of the full window cut to its first
    N rows and columns) instead of at the window's own offsets.
  """
  num_heads: int
  window_size: tuple[int, int, int]
  leading_rows: bool
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, window: Sequence[int]) -> jax.Array:
    rows = math.prod(2 * m - 1 for m in self.window_size)
    table = self.param("relative_position_bias_table", nn.initializers.truncated_normal(0.02),
                       (rows, self.num_heads), self.param_dtype)
    n = math.prod(window)
    if self.leading_rows:
      index = swin.relative_position_index(self.window_size)[:n, :n]  # [N,N]
    else:
      index = swin.relative_position_index(window, self.window_size)  # [N,N]
    bias = jnp.take(table, index.reshape(-1), axis=0).reshape(n, n, self.num_heads)  # [N,N,h]
    return bias.transpose(2, 0, 1).astype(self.dtype)  # [h,N,N]


class VideoSwinBlock(nn.Module):
  """(Shifted-)3D-window attention block on a token map: `[B,T,H,W,D] -> [B,T,H,W,D]`.

  x = x + DropPath(proj(3D W-MSA(LN(x)))); x = x + DropPath(MLP(LN(x))), W-MSA in windows of `window_size`
  (clipped per axis to the map), displaced by floor(W/2) per axis when `shifted` (see the module docstring).
  """
  num_heads: int
  window_size: tuple[int, int, int]
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
    b, *spatial, d = x.shape  # spatial = (T, H, W)
    window, shift = swin.window_and_shift(spatial, self.window_size, self.shifted)
    padded = swin.padded_size(spatial, window)
    pad = [(0, 0)] + [(0, p - s) for p, s in zip(padded, spatial)] + [(0, 0)]
    norm = lambda name: nn.LayerNorm(  # noqa: E731
        epsilon=_LN_EPS, dtype=self.dtype, param_dtype=self.param_dtype, name=name)

    y = swin.cyclic_shift(jnp.pad(norm("norm1")(x), pad), shift)  # [B,Tp,Hp,Wp,D]: pad, then shift
    windows = swin.window_partition(y, window)  # [B*nW,N,D]
    torchvision = self.window_padding == "torchvision"
    bias = RelativePositionBias3D(self.num_heads, self.window_size, leading_rows=torchvision, dtype=self.dtype,
                                  param_dtype=self.param_dtype, name="rel_pos")(window)  # [h,N,N]
    # swin's "timm" regions on the padded map are torchvision's `_compute_attention_mask_3d`.
    mask = swin.attention_mask(spatial, window, shift, "timm" if torchvision else "masked")  # [nW,N,N] or None
    if mask is not None:
      n = mask.shape[-1]
      mask = jnp.broadcast_to(jnp.asarray(mask)[None], (b, *mask.shape)).reshape(-1, 1, n, n)  # [B*nW,1,N,N]
    windows = MultiHeadAttention(
        num_heads=self.num_heads, dropout_rate=self.attention_dropout_rate,
        implementation=self.attention_implementation, sow_weights=self.sow_attention_weights,
        kernel_init=nn.initializers.truncated_normal(0.02), dtype=self.dtype, param_dtype=self.param_dtype,
        name="attn")(windows, mask=mask, bias=bias[None], deterministic=deterministic)  # [B*nW,N,D]
    y = swin.window_reverse(windows, window, padded)  # [B,Tp,Hp,Wp,D]
    y = swin.reverse_cyclic_shift(y, shift)[:, :spatial[0], :spatial[1], :spatial[2]]  # [B,T,H,W,D]
    y = nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
    x = x + DropPath()(y, self.drop_path_rate, deterministic=deterministic)
    y = MlpBlock(mlp_dim=int(d * self.mlp_ratio), dropout_rate=self.dropout_rate, dtype=self.dtype,
                 param_dtype=self.param_dtype, name="mlp")(norm("norm2")(x), deterministic=deterministic)
    return x + DropPath()(y, self.drop_path_rate, deterministic=deterministic)


class VideoSwinStage(nn.Module):
  """Optional 2x2 spatial patch merging of every temporal index (`downsample`, swin.PatchMerging), then
  `len(drop_path_rates)` blocks alternating regular and shifted 3D windows:
  `[B,T,H,W,D_in] -> [B,T,H',W',D]` (H' = ceil(H/2), W' = ceil(W/2) when downsampling)."""
  width: int
  num_heads: int
  window_size: tuple[int, int, int]
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
      b, t, h, w, c = x.shape
      x = swin.PatchMerging(self.width, dtype=self.dtype, param_dtype=self.param_dtype, name="downsample")(
          x.reshape(b * t, h, w, c))  # [B*T,H',W',D]
      x = x.reshape(b, t, *x.shape[1:])  # [B,T,H',W',D]
    for j, rate in enumerate(self.drop_path_rates):
      x = VideoSwinBlock(
          num_heads=self.num_heads, window_size=self.window_size, shifted=j % 2 == 1, mlp_ratio=self.mlp_ratio,
          drop_path_rate=float(rate), dropout_rate=self.dropout_rate,
          attention_dropout_rate=self.attention_dropout_rate, window_padding=self.window_padding,
          attention_implementation=self.attention_implementation, sow_attention_weights=self.sow_attention_weights,
          dtype=self.dtype, param_dtype=self.param_dtype, name=f"block_{j}")(x, deterministic=deterministic)
    return x


class VideoSwin(nn.Module):
  """Video Swin Transformer classifier.

  Attributes:
    num_classes: K; 0 returns the pooled features `[B, width * 2**(S-1)]` instead of logits.
    patch_size: (p_t, p_h, p_w); T, H, W must be divisible by it.
    width: C of the first stage; stage i has width * 2**i channels.
    depths, num_heads: blocks and attention heads per stage (as many stages as entries).
    window_size: (Wt, Wh, Ww); the tables have (2Wt-1)(2Wh-1)(2Ww-1) rows whatever the input size.
    mlp_ratio: MLP hidden width / block width.
    dropout_rate: dropout after the patch embedding, after the attention projection and in the MLP.
    stochastic_depth_rate: drop-path rate of the last block; block n of L (over all stages) uses rate * n / (L-1).
    window_padding: "torchvision" or "masked": sizes that are not multiples of the window (module docstring).
    in_channels: C expected of the input.
    sow_attention_weights: store each block's weights `[B*nW,h,N,N]` in 'intermediates'.
  """
  inputs: ClassVar[tuple[str, ...]] = ("video",)
  head: ClassVar[str] = "head"
  batch_norm: ClassVar[bool] = False
  num_classes: int
  patch_size: tuple[int, int, int] = (2, 4, 4)
  width: int = 96
  depths: tuple[int, ...] = (2, 2, 6, 2)
  num_heads: tuple[int, ...] = (3, 6, 12, 24)
  window_size: tuple[int, int, int] = (8, 7, 7)
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

  def check_input(self, shape: Sequence[int]) -> None:
    """Raises ValueError naming the sizes if a `[B,T,H,W,C]` clip of `shape` does not fit this model."""
    if len(self.depths) != len(self.num_heads):
      raise ValueError(f"depths {self.depths} and num_heads {self.num_heads} must have one entry per stage")
    if self.window_padding not in ("torchvision", "masked"):
      raise ValueError(f"window_padding must be 'torchvision' or 'masked'; got {self.window_padding!r}")
    for name, size in (("patch_size", self.patch_size), ("window_size", self.window_size)):
      if len(tuple(size)) != 3 or min(size) < 1:
        raise ValueError(f"{name} must be three positive ints (T, H, W); got {size!r}")
    if len(shape) != 5 or shape[-1] != self.in_channels:
      raise ValueError(f"VideoSwin expects clips [B,T,H,W,{self.in_channels}]; got shape {tuple(shape)}")
    if any(s % p for s, p in zip(shape[1:4], self.patch_size)):
      raise ValueError(f"clip size {tuple(shape[1:4])} (T, H, W) is not divisible by patch size "
                       f"{tuple(self.patch_size)}")

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """`[B,T,H,W,C] -> [B,K]` float32 logits (or `[B,D']` features when num_classes == 0)."""
    self.check_input(x.shape)
    x = x.astype(self.dtype)
    x = PatchEmbedding(tuple(self.patch_size), self.width, dtype=self.dtype, param_dtype=self.param_dtype,
                       name="embedding")(x)  # [B,T/p_t,H/p_h,W/p_w,D]
    x = nn.LayerNorm(epsilon=_LN_EPS, dtype=self.dtype, param_dtype=self.param_dtype, name="embedding_norm")(x)
    x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    rates = np.linspace(0.0, self.stochastic_depth_rate, sum(self.depths))
    starts = np.cumsum((0,) + tuple(self.depths))
    for i, (depth, heads) in enumerate(zip(self.depths, self.num_heads)):
      x = VideoSwinStage(
          width=self.width * 2**i, num_heads=heads, window_size=tuple(self.window_size),
          drop_path_rates=tuple(float(r) for r in rates[starts[i]:starts[i] + depth]), downsample=i > 0,
          mlp_ratio=self.mlp_ratio, dropout_rate=self.dropout_rate, attention_dropout_rate=self.attention_dropout_rate,
          window_padding=self.window_padding, attention_implementation=self.attention_implementation,
          sow_attention_weights=self.sow_attention_weights, dtype=self.dtype, param_dtype=self.param_dtype,
          name=f"stage_{i}")(x, deterministic=not train)  # [B,T',H_i,W_i,D_i]
    x = nn.LayerNorm(epsilon=_LN_EPS, dtype=self.dtype, param_dtype=self.param_dtype, name="norm")(x)
    x = x.mean(axis=(1, 2, 3))  # [B,D']
    if not self.num_classes:
      return x.astype(jnp.float32)
    x = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, dtype=self.dtype,
                 param_dtype=self.param_dtype, name="head")(x)
    return x.astype(jnp.float32)


# torchvision's swin3d_t/s/b (the paper's Kinetics-400 models): patch 2 x 4 x 4 and window 8 x 7 x 7 (the module
# defaults), 400 classes for the published weights. torchvision builds them with stochastic depth 0.1; the official
# Kinetics-400 configs train T, S, B with drop-path 0.1, 0.2, 0.3 (set `stochastic_depth_rate`).
VARIANTS = {
    "video_swin_t": dict(width=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    "video_swin_s": dict(width=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    "video_swin_b": dict(width=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
}

MODELS = {name: functools.partial(VideoSwin, **kwargs) for name, kwargs in VARIANTS.items()}


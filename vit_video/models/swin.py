"""Swin Transformer (Liu et al. 2021): hierarchical ViT with shifted windows; its stage serves Video Swin too.

An image `[B,H,W,C]` is cut into 4x4 patches, linearly embedded and layer-normed (the paper's "patch partition" and
"linear embedding"), then four stages run. Stage i > 0 first merges each 2x2 group of tokens (concatenate the four
C-vectors, LayerNorm, Linear 4C -> 2C without bias), halving the resolution and doubling the width. Every stage
is a stack of pre-norm blocks

    x = x + DropPath(W-MSA(LN(x)));  x = x + DropPath(MLP(LN(x)))

whose attention is restricted to non-overlapping M x M windows (W-MSA), with softmax(Q K^T / sqrt(d) + B) V where
B is read from a learned table of (2M-1)^2 relative-position biases per head. Every odd block shifts the windows
by floor(M/2) (SW-MSA), computed as in the paper: cyclic shift of the token map (`jnp.roll`), attention in the
regular windows with a mask that keeps tokens from different parts of the map apart, and the reverse shift
(vit_video.layers.windows). A final LayerNorm, a global average pool and a linear head give `[B,K]`. Stochastic
depth grows linearly from 0 over all blocks. `SwinBlock` and `SwinStage` take token maps of any rank: Video Swin
(video_swin.py) runs them on `[B,T,H,W,D]` maps with 3D windows, and shares `SwinBase`'s attributes and its call from
the embedded tokens to the logits.

Sizes that are not multiples of the window, per `window_padding` (the reference codes' conventions):
  - Each block zero-pads its normalised token map at the end of every axis to a multiple of the window, attends,
    and crops; 2x2 merging zero-pads an odd side by one.
  - A map no larger than M along an axis uses a window of the map's size and no shift along it (timm's and
    torchvision's rule, per axis; the official classification code decides on min(H, W) for both axes, the same for
    square inputs). The relative-position table keeps its prod(2M-1) rows and a smaller window reads the rows of
    its offsets; timm instead builds smaller tables at construction, so timm checkpoints of models whose stages are
    smaller than M have tables of other shapes (the importer resamples them).
  - "timm" (Swin; timm 1.0.31 exactly): shift the unpadded map, then pad, then mask the three regions per axis
    [0, P-M), [P-M, P-s), [P-s, P) of the padded map (P the padded size, s the shift). Non-shifted blocks attend
    to the zero padding (its keys and values are the projection biases). When a side needs padding the
    wrapped-around tokens share a region with the last rows/columns of the map, so a shifted window then mixes the
    two ends of the map (tested in tests/models/test_swin.py).
  - "torchvision" (Video Swin; torchvision 0.28's swin3d_*, which is the official Video Swin code): pad, then
    shift, then mask the same regions. Real tokens are grouped as the paper's displaced windows, but they may
    attend to the padding (always in regular blocks; in shifted ones for the last window along a padded axis); a
    window reduced to the map along H or W reads the biases of the full window's first N offsets (torchvision's
    `relative_position_index[:N, :N]`), which are not its own.
  - "masked" (the default of both families; the paper's partition): pad, then shift, and mask so that each real
    token attends exactly to the real tokens of its displaced window, never to padding, with the biases of their
    true offsets, in shifted and regular blocks alike. Identical to "timm" and "torchvision" when nothing is padded
    (and, for "torchvision", no window is reduced along H or W). Inputs whose stage resolutions are multiples of
    M (224 with M=7, 384 with M=12; 32 x 224 x 224 with 8 x 7 x 7) never pad.

Parameter names (tests/checkpoints/test_timm_swin.py maps timm's onto them): `embedding`, `embedding_norm`,
`stage_{i}/downsample/{norm,reduction}` (i > 0), `stage_{i}/block_{j}/{norm1,rel_pos,attn,norm2,mlp}`, `norm`,
`head`. Counts at 224 x 224 (384 for the window-12 variants) and 1000 classes equal timm's exactly and round to
the published ones (Swin-T 28.3M, S 49.6M, B 87.8M, L 197M; tests/models/test_swin.py).
"""
import functools
from typing import ClassVar, Literal

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_video.layers.attention import Implementation, MultiHeadAttention
from vit_video.layers.embed import PatchEmbedding
from vit_video.layers.mlp import DropPath, MlpBlock
from vit_video.layers.windows import (RelativePositionBias, attention_mask, cyclic_shift, padded_size,
                                      reverse_cyclic_shift, window_and_shift, window_partition, window_reverse)

WindowPadding = Literal["timm", "torchvision", "masked"]
LN_EPS = 1e-5  # torch's LayerNorm default, used by the official codes, timm and torchvision.


def merge_2x2(x: jax.Array) -> jax.Array:
  """Concatenates each 2x2 group of tokens: `[...,H,W,C] -> [...,H/2,W/2,4C]`, in the official/timm order
  (0,0), (1,0), (0,1), (1,1) as (row, column) offsets, i.e. x[0::2,0::2], x[1::2,0::2], x[0::2,1::2], x[1::2,1::2]."""
  return einops.rearrange(x, "... (h dh) (w dw) c -> ... h w (dw dh c)", dh=2, dw=2)


class PatchMerging(nn.Module):
  """2x2 patch merging: `[...,H,W,C] -> [...,ceil(H/2),ceil(W/2),out_dim]`, odd sides zero-padded at the end (the
  leading axes, e.g. Video Swin's time, are kept).

  merge_2x2 -> LayerNorm(4C) (`norm`) -> Dense(out_dim, no bias) (`reduction`).
  """
  out_dim: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    *_, h, w, _ = x.shape
    x = jnp.pad(x, [(0, 0)] * (x.ndim - 3) + [(0, h % 2), (0, w % 2), (0, 0)])  # [...,2*ceil(H/2),2*ceil(W/2),C]
    x = merge_2x2(x)  # [...,H',W',4C]
    x = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, param_dtype=self.param_dtype, name="norm")(x)
    return nn.Dense(self.out_dim, use_bias=False, kernel_init=nn.initializers.truncated_normal(0.02),
                    dtype=self.dtype, param_dtype=self.param_dtype, name="reduction")(x)


class SwinBlock(nn.Module):
  """(Shifted-)window attention block on a token map of any rank: `[B,*S,D] -> [B,*S,D]` (S = (H, W) or (T, H, W)).

  x = x + DropPath(proj(W-MSA(LN(x)))); x = x + DropPath(MLP(LN(x))), W-MSA in windows of `window_size` (one entry
  per axis of S, clipped per axis to the map), displaced by floor(M/2) when `shifted`; `window_padding` (the module
  docstring) decides how sizes that are not multiples of the window are handled (Swin and VideoSwin check it).
  """
  num_heads: int
  window_size: tuple[int, ...]
  shifted: bool
  mlp_ratio: float = 4.0
  drop_path_rate: float = 0.0
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  window_padding: WindowPadding = "masked"
  attention_implementation: Implementation = "auto"
  sow_attention_weights: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    b, *spatial, d = x.shape
    if len(self.window_size) != len(spatial):
      raise ValueError(f"window_size {tuple(self.window_size)} needs one entry per axis of the token map {spatial}")
    window, shift = window_and_shift(spatial, self.window_size, self.shifted)
    padded = padded_size(spatial, window)
    pad = [(0, 0)] + [(0, p - s) for p, s in zip(padded, spatial)] + [(0, 0)]
    crop = (slice(None), *[slice(0, s) for s in spatial])
    timm = self.window_padding == "timm"
    norm = lambda name: nn.LayerNorm(  # noqa: E731
        epsilon=LN_EPS, dtype=self.dtype, param_dtype=self.param_dtype, name=name)

    y = norm("norm1")(x)
    y = jnp.pad(cyclic_shift(y, shift), pad) if timm else cyclic_shift(jnp.pad(y, pad), shift)  # [B,*P,D]
    windows = window_partition(y, window)  # [B*nW,N,D]
    bias = RelativePositionBias(self.num_heads, tuple(self.window_size),
                                leading_rows=self.window_padding == "torchvision", dtype=self.dtype,
                                param_dtype=self.param_dtype, name="rel_pos")(window)  # [h,N,N]
    mask = attention_mask(spatial, window, shift, "masked" if self.window_padding == "masked" else "timm")
    if mask is not None:  # [nW,N,N]
      n = mask.shape[-1]
      mask = jnp.broadcast_to(jnp.asarray(mask)[None], (b, *mask.shape)).reshape(-1, 1, n, n)  # [B*nW,1,N,N]
    windows = MultiHeadAttention(
        num_heads=self.num_heads, dropout_rate=self.attention_dropout_rate,
        implementation=self.attention_implementation, sow_weights=self.sow_attention_weights,
        kernel_init=nn.initializers.truncated_normal(0.02), dtype=self.dtype, param_dtype=self.param_dtype,
        name="attn")(windows, mask=mask, bias=bias[None], deterministic=deterministic)  # [B*nW,N,D]
    y = window_reverse(windows, window, padded)  # [B,*P,D]
    y = reverse_cyclic_shift(y[crop], shift) if timm else reverse_cyclic_shift(y, shift)[crop]  # [B,*S,D]
    y = nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
    x = x + DropPath()(y, self.drop_path_rate, deterministic=deterministic)
    y = MlpBlock(mlp_dim=int(d * self.mlp_ratio), dropout_rate=self.dropout_rate, dtype=self.dtype,
                 param_dtype=self.param_dtype, name="mlp")(norm("norm2")(x), deterministic=deterministic)
    return x + DropPath()(y, self.drop_path_rate, deterministic=deterministic)


class SwinStage(nn.Module):
  """Optional 2x2 patch merging of the last two axes (`downsample`), then `len(drop_path_rates)` blocks alternating
  regular and shifted windows: `[B,*S,D_in] -> [B,*S',D]` (H, W -> ceil(H/2), ceil(W/2) when downsampling; a
  leading T is kept)."""
  width: int
  num_heads: int
  window_size: tuple[int, ...]
  drop_path_rates: tuple[float, ...]
  downsample: bool
  mlp_ratio: float = 4.0
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  window_padding: WindowPadding = "masked"
  attention_implementation: Implementation = "auto"
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


class SwinBase(nn.Module, kw_only=True):
  """What Swin and Video Swin share: their attributes but the patch and window sizes (keyword-only), and their call
  after the patch embedding (`stages_to_logits`).

  Attributes:
    num_classes: K; 0 returns the pooled features `[B, width * 2**(S-1)]` instead of logits.
    return_grid: with num_classes 0, return the last stage's token map after the final LayerNorm (`[B,h,w,D']`;
      Video Swin `[B,t,h,w,D']`) instead of pooling it.
    width: C of the first stage; stage i has width * 2**i channels.
    depths, num_heads: blocks and attention heads per stage (as many stages as entries).
    mlp_ratio: MLP hidden width / block width.
    dropout_rate: dropout after the attention projection and in the MLP (Video Swin: also after the patch embedding).
    attention_dropout_rate: dropout on the attention weights.
    stochastic_depth_rate: drop-path rate of the last block; block n of L (over all stages) uses rate * n / (L-1).
    window_padding: one of the family's `window_paddings`: how sizes that are not multiples of the window are
      handled (the module docstring).
    in_channels: C expected of the input.
    attention_implementation: "auto" (einsum, fused or chunked by input), "einsum", "fused" or "chunked"
      (vit_video.layers.attention).
    sow_attention_weights: store each block's weights `[B*nW,h,N,N]` in 'intermediates'.
    dtype, param_dtype: compute and parameter dtypes.
  """
  window_paddings: ClassVar[tuple[str, ...]]  # The family's `window_padding` values: the references it matches.
  num_classes: int
  width: int = 96
  depths: tuple[int, ...] = (2, 2, 6, 2)
  num_heads: tuple[int, ...] = (3, 6, 12, 24)
  mlp_ratio: float = 4.0
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  stochastic_depth_rate: float = 0.0
  window_padding: WindowPadding = "masked"
  in_channels: int = 3
  attention_implementation: Implementation = "auto"
  sow_attention_weights: bool = False
  return_grid: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  def check_options(self) -> None:
    """ValueError unless there is one head count per stage, `window_padding` is one of the family's, and
    return_grid comes without a classifier."""
    if self.return_grid and self.num_classes:
      raise ValueError(f"return_grid needs num_classes=0 (no classifier); got num_classes={self.num_classes}")
    if len(self.depths) != len(self.num_heads):
      raise ValueError(f"depths {self.depths} and num_heads {self.num_heads} must have one entry per stage")
    if self.window_padding not in self.window_paddings:
      raise ValueError(f"window_padding must be {' or '.join(map(repr, self.window_paddings))}; "
                       f"got {self.window_padding!r}")

  def stages_to_logits(self, x: jax.Array, window: tuple[int, ...], *, train: bool) -> jax.Array:
    """The stages in windows of `window`, the final LayerNorm, the average over the token map and the head:
    `[B,*S,D] -> [B,K]` float32 logits (or `[B,D']` features when num_classes == 0). Call it from `__call__`."""
    rates = np.linspace(0.0, self.stochastic_depth_rate, sum(self.depths))
    starts = np.cumsum((0,) + tuple(self.depths))
    for i, (depth, heads) in enumerate(zip(self.depths, self.num_heads)):
      x = SwinStage(
          width=self.width * 2**i, num_heads=heads, window_size=window,
          drop_path_rates=tuple(float(r) for r in rates[starts[i]:starts[i] + depth]), downsample=i > 0,
          mlp_ratio=self.mlp_ratio, dropout_rate=self.dropout_rate, attention_dropout_rate=self.attention_dropout_rate,
          window_padding=self.window_padding, attention_implementation=self.attention_implementation,
          sow_attention_weights=self.sow_attention_weights, dtype=self.dtype, param_dtype=self.param_dtype,
          name=f"stage_{i}")(x, deterministic=not train)  # [B,*S_i,D_i]
    x = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, param_dtype=self.param_dtype, name="norm")(x)
    if self.return_grid:
      return x.astype(jnp.float32)  # [B,*S',D']
    x = x.mean(axis=tuple(range(1, x.ndim - 1)))  # [B,D']
    if not self.num_classes:
      return x.astype(jnp.float32)
    x = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, dtype=self.dtype,
                 param_dtype=self.param_dtype, name="head")(x)
    return x.astype(jnp.float32)


class Swin(SwinBase):
  """Swin Transformer classifier.

  Attributes (and SwinBase's; window_padding "timm" or "masked"):
    patch_size: P; image sides must be divisible by it.
    window_size: M, an int or (M_h, M_w); the relative-position tables are (2M-1)^2 rows whatever the input size.
  """
  inputs: ClassVar[tuple[str, ...]] = ("image",)
  head: ClassVar[str] = "head"
  batch_norm: ClassVar[bool] = False
  window_paddings: ClassVar[tuple[str, ...]] = ("timm", "masked")
  patch_size: int = 4
  window_size: int | tuple[int, int] = 7

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """`[B,H,W,C] -> [B,K]` float32 logits (or `[B,D']` features when num_classes == 0)."""
    if x.ndim != 4 or x.shape[-1] != self.in_channels:
      raise ValueError(f"Swin expects images [B,H,W,{self.in_channels}]; got shape {x.shape}")
    if x.shape[1] % self.patch_size or x.shape[2] % self.patch_size:
      raise ValueError(f"image size {x.shape[1:3]} is not divisible by patch size {self.patch_size}")
    self.check_options()
    window = (self.window_size,) * 2 if isinstance(self.window_size, int) else tuple(self.window_size)
    if len(window) != 2 or min(window) < 1:
      raise ValueError(f"window_size must be a positive int or (M_h, M_w); got {self.window_size!r}")
    x = x.astype(self.dtype)
    x = PatchEmbedding((self.patch_size, self.patch_size), self.width, dtype=self.dtype,
                       param_dtype=self.param_dtype, name="embedding")(x)  # [B,H/P,W/P,D]
    x = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, param_dtype=self.param_dtype, name="embedding_norm")(x)
    return self.stages_to_logits(x, window, train=train)


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

"""Video Swin Transformer (Liu et al. 2022): Swin's shifted windows extended to space-time.

A clip `[B,T,H,W,C]` is cut into 2 x 4 x 4 patches (a Conv3d with stride = kernel) and layer-normed, then four
stages run: swin.SwinStage on `[B,T',H',W',D]` token maps with 3D windows. Stage i > 0 first merges each 2x2 spatial
group of tokens of every temporal index (as in 2D Swin; time is never merged), halving H and W and doubling the
width. Every stage is a stack of pre-norm blocks

    x = x + DropPath(3D W-MSA(LN(x)));  x = x + DropPath(MLP(LN(x)))

whose attention is restricted to non-overlapping Wt x Wh x Ww windows (8 x 7 x 7 for the Kinetics models), with
softmax(Q K^T / sqrt(d) + B) V where B is read from a learned table of (2Wt-1)(2Wh-1)(2Ww-1) biases per head.
Every odd block displaces the windows by floor(W/2) along all three axes (3D SW-MSA: cyclic shift, attention in
the regular windows under a mask, reverse shift). A final LayerNorm, an average over T', H', W' and a linear head
give `[B,K]`.

Sizes that are not multiples of the window: `window_padding` "torchvision" (outputs equal torchvision 0.28's
`swin3d_*`, the official SwinTransformer/Video-Swin-Transformer code, at any size; checked in
tests/checkpoints/test_torchvision.py) or "masked" (default; the paper's partition), as swin.py's
module docstring describes. At 32 x 224 x 224 with window 8 x 7 x 7 nothing is padded and only the last stage
(7 x 7) fits one window exactly, so the two agree. Unlike torchvision, a clip whose size the 3D patch does not tile
raises a ValueError (torchvision zero-pads it).

Parameter names are 2D Swin's (vit_video.models.swin), so `checkpoints.inflate.video_swin_from_swin` maps them one
to one: `embedding` (kernel `[2,4,4,C,D]`), `embedding_norm`, `stage_{i}/downsample/{norm,reduction}` (i > 0),
`stage_{i}/block_{j}/{norm1,rel_pos,attn,norm2,mlp}`, `norm`, `head`. Counts with 400 classes equal torchvision's
`swin3d_t/s/b` exactly (tests/models/test_video_swin.py).
"""
import functools
from collections.abc import Sequence
from typing import ClassVar

import flax.linen as nn
import jax

from vit_video.layers.embed import PatchEmbedding
from vit_video.models.swin import LN_EPS, SwinBase


class VideoSwin(SwinBase):
  """Video Swin Transformer classifier.

  Attributes (and swin.SwinBase's; window_padding "torchvision" or "masked"):
    patch_size: (p_t, p_h, p_w); T, H, W must be divisible by it.
    window_size: (Wt, Wh, Ww); the tables have (2Wt-1)(2Wh-1)(2Ww-1) rows whatever the input size.
  """
  inputs: ClassVar[tuple[str, ...]] = ("video",)
  head: ClassVar[str] = "head"
  batch_norm: ClassVar[bool] = False
  window_paddings: ClassVar[tuple[str, ...]] = ("torchvision", "masked")
  patch_size: tuple[int, int, int] = (2, 4, 4)
  window_size: tuple[int, int, int] = (8, 7, 7)

  def check_input(self, shape: Sequence[int]) -> None:
    """Raises ValueError naming the sizes if a `[B,T,H,W,C]` clip of `shape` does not fit this model."""
    self.check_options()
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
    x = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, param_dtype=self.param_dtype, name="embedding_norm")(x)
    x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    return self.stages_to_logits(x, tuple(self.window_size), train=train)


# torchvision's swin3d_t/s/b (the paper's Kinetics-400 models): patch 2 x 4 x 4 and window 8 x 7 x 7 (the module
# defaults), 400 classes for the published weights. torchvision builds them with stochastic depth 0.1; the official
# Kinetics-400 configs train T, S, B with drop-path 0.1, 0.2, 0.3 (set `stochastic_depth_rate`).
VARIANTS = {
    "video_swin_t": dict(width=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    "video_swin_s": dict(width=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    "video_swin_b": dict(width=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
}

MODELS = {name: functools.partial(VideoSwin, **kwargs) for name, kwargs in VARIANTS.items()}

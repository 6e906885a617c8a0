"""VTN (Neimark et al. 2021, "Video Transformer Network"): an image model on every frame, then a temporal
transformer over the frame embeddings.

  x [B,T,H,W,C] -> backbone on every frame -> [B,T,D'] -> (Dense D if D' != D) -> [CLS] + frames [B,1+T,D]
    -> + position embedding, LayerNorm -> `temporal_depth` post-norm blocks, sliding-window attention -> [B,1+T,D]
    -> MLP head on [CLS]: LayerNorm, Dense(head_mlp_dim), GELU, dropout, Dense(K) -> [B,K]

Backbone: any image model of the package by name (`backbone`, a key of BACKBONES: ViT, ResNet, BiT, Swin), built
with `num_classes=0` and `backbone_overrides`, so the paper's ViT-B, DeiT and ResNet-50 variants are names. The
temporal encoder is the paper's Longformer (3 layers, 12 heads, D = 768) as BERT-style post-norm blocks
(x = LN(x + Attn(x)); x = LN(x + MLP(x)), LayerNorm eps 1e-12) whose attention is Longformer's: frame i attends
to the frames within `attention_window // 2` of it, and [CLS] attends to, and is attended by, every frame (global
attention). Clips no longer than the window attend fully, as in the paper's short-clip evaluation.

Parameter names: backbone/... (the image model's own), embedding (only when D' != D), cls/token,
pos_embedding [1,max_frames+1,D], embedding_norm, block_{i}/{attention,attention_norm,mlp,mlp_norm},
head_norm, head_hidden, head.
"""
import dataclasses
import functools
from collections.abc import Mapping
from typing import Any, ClassVar

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_video.layers.attention import MultiHeadAttention
from vit_video.layers.embed import ClassToken
from vit_video.layers.mlp import MlpBlock
from vit_video.models import bit, resnet, swin, vit

# The image models a VTN can run on every frame (name -> factory, the families' own MODELS entries).
BACKBONES = {**vit.MODELS, **resnet.MODELS, **bit.MODELS, **swin.MODELS}


def sliding_window_mask(n: int, window: int) -> jax.Array:
  """Longformer's attention pattern over [CLS] + N-1 frames: `[1,1,N,N]` bool, True where query i may attend key j.

  Frames (tokens 1..N-1) attend to frames within `window // 2` positions on either side; token 0 ([CLS]) attends
  to every token and every token attends to it (global attention).
  """
  i = jnp.arange(n)
  local = jnp.abs(i[:, None] - i[None, :]) <= window // 2  # [N,N]
  is_global = (i == 0)
  return (local | is_global[:, None] | is_global[None, :])[None, None]


class TemporalBlock(nn.Module):
  """Post-norm (BERT / Longformer) block: `[B,N,D] -> [B,N,D]`, attention restricted by `mask` `[1,1,N,N]`."""
  num_heads: int
  mlp_dim: int
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  sow_attention_weights: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, *, deterministic: bool) -> jax.Array:
    norm = functools.partial(nn.LayerNorm, epsilon=1e-12, dtype=self.dtype, param_dtype=self.param_dtype)
    y = MultiHeadAttention(num_heads=self.num_heads, dropout_rate=self.attention_dropout_rate,
                           sow_weights=self.sow_attention_weights, dtype=self.dtype, param_dtype=self.param_dtype,
                           name="attention")(x, mask=mask, deterministic=deterministic)
    y = nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
    x = norm(name="attention_norm")(x + y)
    y = MlpBlock(mlp_dim=self.mlp_dim, dropout_rate=self.dropout_rate, dtype=self.dtype,
                 param_dtype=self.param_dtype, name="mlp")(x, deterministic=deterministic)
    return norm(name="mlp_norm")(x + y)


class VTN(nn.Module):
  """Per-frame image-model features -> temporal transformer with a [CLS] token -> MLP head.

  Attributes:
    num_classes: K; 0 returns the [CLS] token's final state `[B,D]`.
    backbone: a BACKBONES name, run on every frame with `num_classes=0`; backbone_overrides: its attributes.
    width: D of the temporal encoder (the frame features are projected to it when their width differs).
    temporal_depth, num_heads, mlp_dim: the temporal encoder's blocks, heads and MLP width.
    attention_window: Longformer's window (frames within window // 2 of each other attend to each other).
    max_frames: T the position embedding covers (Longformer's max_position_embeddings less [CLS]).
    head_mlp_dim: the hidden width of the MLP head.
    dropout_rate, attention_dropout_rate: dropout in the temporal encoder and the head (0 by default; the
      paper trains with 0.1).
    axis_name: named batch axis for a BatchNorm backbone's statistics (ResNet); ignored by the others.
    sow_attention_weights: store the temporal blocks' weights `[B,h,1+T,1+T]` (`block_{i}/attention`) in
      'intermediates', and the backbone's `[B*T,...]` too when it has attention (ViT, Swin).
  """
  inputs: ClassVar[tuple[str, ...]] = ("video",)
  head: ClassVar[str] = "head"
  batch_norm: ClassVar[bool] = True  # Only with a BatchNorm backbone (ResNet); ViT, BiT and Swin keep no statistics.
  num_classes: int
  backbone: str = "vit_b16"
  backbone_overrides: Mapping[str, Any] | None = None
  width: int = 768
  temporal_depth: int = 3
  num_heads: int = 12
  mlp_dim: int = 3072
  attention_window: int = 32
  max_frames: int = 288
  head_mlp_dim: int = 768
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  in_channels: int = 3
  axis_name: str | None = None
  sow_attention_weights: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """`[B,T,H,W,C] -> [B,K]` float32 logits (`[B,D]` [CLS] features when num_classes == 0).

    `train`: dropout in the temporal encoder and head, and the backbone's own train mode (BatchNorm, dropout).
    """
    if self.backbone not in BACKBONES:
      raise ValueError(f"backbone {self.backbone!r} is not an image model of the package: {sorted(BACKBONES)}")
    if x.ndim != 5 or x.shape[-1] != self.in_channels:
      raise ValueError(f"input shape {x.shape} is not [B,T,H,W,C] with C = in_channels = {self.in_channels}")
    b, t = x.shape[:2]
    if t > self.max_frames:
      raise ValueError(f"{t} frames exceed max_frames {self.max_frames} (the position embedding's length)")
    overrides = dict(self.backbone_overrides or {})
    cls = BACKBONES[self.backbone].func
    if cls.batch_norm:
      overrides.setdefault("axis_name", self.axis_name)
    if self.sow_attention_weights and "sow_attention_weights" in {f.name for f in dataclasses.fields(cls)}:
      overrides["sow_attention_weights"] = True
    frames = BACKBONES[self.backbone](num_classes=0, in_channels=self.in_channels, dtype=self.dtype,
                                      param_dtype=self.param_dtype, name="backbone", **overrides)
    y = frames(einops.rearrange(x, "b t h w c -> (b t) h w c"), train=train)  # [BT,D']
    y = einops.rearrange(y, "(b t) d -> b t d", b=b, t=t).astype(self.dtype)  # [B,T,D']
    if y.shape[-1] != self.width:
      y = nn.Dense(self.width, dtype=self.dtype, param_dtype=self.param_dtype, name="embedding")(y)  # [B,T,D]
    y = ClassToken(param_dtype=self.param_dtype, name="cls")(y)  # [B,1+T,D]
    pos = self.param("pos_embedding", nn.initializers.normal(stddev=0.02), (1, self.max_frames + 1, self.width),
                     self.param_dtype)
    y = y + pos[:, :t + 1].astype(self.dtype)
    y = nn.LayerNorm(epsilon=1e-12, dtype=self.dtype, param_dtype=self.param_dtype, name="embedding_norm")(y)
    y = nn.Dropout(self.dropout_rate)(y, deterministic=not train)
    mask = sliding_window_mask(t + 1, self.attention_window)
    for i in range(self.temporal_depth):
      y = TemporalBlock(self.num_heads, self.mlp_dim, self.dropout_rate, self.attention_dropout_rate,
                        sow_attention_weights=self.sow_attention_weights, dtype=self.dtype,
                        param_dtype=self.param_dtype, name=f"block_{i}")(
                            y, mask, deterministic=not train)
    y = y[:, 0]  # [B,D]: the [CLS] token
    if not self.num_classes:
      return y.astype(jnp.float32)
    y = nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype, name="head_norm")(y)
    y = nn.gelu(nn.Dense(self.head_mlp_dim, dtype=self.dtype, param_dtype=self.param_dtype, name="head_hidden")(y),
                approximate=False)
    y = nn.Dropout(self.dropout_rate)(y, deterministic=not train)
    return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name="head")(y).astype(
        jnp.float32)


MODELS = {
    # The paper's VTN: ViT-B/16 on every frame, a 3-layer Longformer (Table 1's best, "ViT-B-VTN").
    "vtn_vit_b": functools.partial(VTN, backbone="vit_b16"),
    # Its ResNet-50 variant (D' = 2048 projected to 768).
    "vtn_r50": functools.partial(VTN, backbone="resnet50"),
}

"""Multiscale Vision Transformers: MViT (Fan et al. 2021) and MViTv2 (Li et al. 2022), as torchvision 0.28 builds
them (`torchvision.models.video.mvit_v1_b`, `mvit_v2_s`; outputs equal, tests/checkpoints/test_torchvision_mvit.py).

A clip `[B,T,H,W,C]` is embedded by a Conv3d (kernel 3 x 7 x 7, stride 2 x 4 x 4, padding 1 x 3 x 3) into a
T' x H' x W' map of D-wide tokens, flattened behind a class token. MViT adds a separable learned position
embedding (time + space, and one for the class token); MViTv2 has none and uses relative positions in every
attention instead. Then a stack of blocks, each

    x = skip(x) + DropPath(PoolingAttention(LN(x)));  x = proj(x) + DropPath(MLP(LN(x)))

where PoolingAttention (vit_video.layers.pooling_attention) pools its queries, keys and values on the token map.
A block with query stride s (1 x 2 x 2 at three blocks of the named models) halves the map, and `skip` max-pools
the residual to match; those blocks start the four scale stages, where the heads double and the width doubles
(MViT: in the MLP of the block before, whose `project` of the normed residual replaces it; MViTv2: in the attention,
and `project` of its normed input forms the residual). Keys and values are pooled by 8 / 2^stage in space, so every
attention of a 16 x 224 x 224 clip sees the same 8 x 7 x 7 keys (and the class token). MViTv2 also adds the pooled
queries back to the attention output (residual pooling). A final LayerNorm, the class token, dropout and a linear
head give `[B,K]`.

The architecture is per-block data, the columns of torchvision's `block_setting`: heads, output width, query and
key/value pooling kernels and strides ((1, 1, 1) with stride (1, 1, 1): no pooling). `input_size` fixes the
position tables' sizes as torchvision's `temporal_size` and `spatial_size` do (floor(size / stride), at least 1):
MViT's absolute embedding then takes only clips whose token map is the table's (torchvision fails on others).
MViTv2 also takes other sizes, resampling its tables by torchvision's rule (`pooling_attention.resize_rows`; the
rule torchvision itself applies where its floor-divided table sizes differ from the pooled maps, e.g. H != W);
torchvision's own MViT takes only the size it was built for.

Images: `MViTImage` (`*_image`) is the same network on a one-frame clip `[B,1,H,W,C]`, which is what torchvision's
MViT does with a `[B,C,H,W]` input (built with temporal_size 2 so that its tables have T' = 1 row; here input_size
(1, H, W)). The patch kernel keeps its three temporal taps, of which only the middle one sees pixels. These are not
the MViTv2 paper's ImageNet models (2D patches, other depths and poolings), and Kinetics weights do not load into
them as they are (their temporal tables have 8 or 15 rows, not 1).

Parameter names: `embedding` (Conv3d), `cls/token`, `pos_embedding_{spatial,temporal,cls}` (MViT),
`block_{i}/{norm1,attn,norm2,mlp,project}` with `attn/{query,key,value,out,pool_q,pool_k,pool_v,rel_pos_t,
rel_pos_h,rel_pos_w}`, `norm`, `head`. Counts with 400 classes equal torchvision's (tests/models/test_mvit.py).
"""
import functools
import math
from collections.abc import Sequence
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_video.layers import conv_lowering
from vit_video.layers.attention import Implementation
from vit_video.layers.embed import ClassToken
from vit_video.layers.mlp import DropPath, MlpBlock
from vit_video.layers.pooling_attention import LN_EPS, PoolingAttention, max_pool_tokens

Triple = tuple[int, int, int]


class MultiscaleBlock(nn.Module):
  """One MViT block: `[B,1+T*H*W,D_in]` on a (T,H,W) map -> (`[B,1+T'*H'*W',features]`, (T',H',W')).

  Attributes (as MViT's, for this block): table_size is the map the relative-position tables are sized for
  (None: none); the attention's width is `features` when project_after_attention, else D_in.
  """
  num_heads: int
  features: int
  kernel_q: Triple
  stride_q: Triple
  kernel_kv: Triple
  stride_kv: Triple
  table_size: Triple | None = None
  residual_pool: bool = False
  residual_with_cls: bool = False
  project_after_attention: bool = False
  drop_path_rate: float = 0.0
  dropout_rate: float = 0.0
  attention_implementation: Implementation = "auto"
  sow_attention_weights: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, thw: Triple, *, deterministic: bool) -> tuple[jax.Array, Triple]:
    d_in = x.shape[-1]
    width = self.features if self.project_after_attention else d_in
    norm = lambda name: nn.LayerNorm(  # noqa: E731
        epsilon=LN_EPS, dtype=self.dtype, param_dtype=self.param_dtype, name=name)
    project = None
    if d_in != self.features:
      project = nn.Dense(self.features, kernel_init=nn.initializers.truncated_normal(0.02), dtype=self.dtype,
                         param_dtype=self.param_dtype, name="project")
    y = norm("norm1")(x)
    attn, new_thw = PoolingAttention(
        self.num_heads, width, tuple(self.kernel_q), tuple(self.stride_q), tuple(self.kernel_kv),
        tuple(self.stride_kv), residual_pool=self.residual_pool, residual_with_cls=self.residual_with_cls,
        table_size=self.table_size, dropout_rate=self.dropout_rate, implementation=self.attention_implementation,
        sow_weights=self.sow_attention_weights, dtype=self.dtype, param_dtype=self.param_dtype,
        name="attn")(y, thw, deterministic=deterministic)
    if project is not None and self.project_after_attention:
      x = project(y)  # [B,1+N,features]
    if math.prod(self.stride_q) > 1:
      x, _ = max_pool_tokens(x, thw, tuple(self.stride_q))  # [B,1+N',width]
    x = x + DropPath()(attn, self.drop_path_rate, deterministic=deterministic)
    y = norm("norm2")(x)
    if project is not None and not self.project_after_attention:
      x = project(y)  # [B,1+N',features]
    y = MlpBlock(4 * width, self.features, dropout_rate=self.dropout_rate, dtype=self.dtype,
                 param_dtype=self.param_dtype, name="mlp")(y, deterministic=deterministic)
    return x + DropPath()(y, self.drop_path_rate, deterministic=deterministic), new_thw


class MViT(nn.Module, kw_only=True):
  """Multiscale Vision Transformer (v1 or v2) video classifier: `[B,T,H,W,C] -> [B,K]`.

  Attributes:
    num_classes: K; 0 returns the final-normed class token `[B,block_widths[-1]]` instead of logits.
    num_heads, block_widths: per block, its heads and output width.
    kernel_q, stride_q, kernel_kv, stride_kv: per block, its query and key/value pooling, (t, h, w) each.
    width: D of the patch embedding (block 0's input).
    input_size: the clip (T, H, W) the position tables are built for (module docstring).
    relative_positions: MViTv2's relative positions instead of MViT's absolute position embedding.
    residual_pool: MViTv2's residual pooling; residual_with_cls: it also adds to the class token.
    project_after_attention: widen in the attention (MViTv2), not after the MLP (MViT).
    patch_kernel, patch_stride, patch_padding: the patch embedding's Conv3d.
    dropout_rate: dropout after each attention projection and in the MLPs (torchvision's attention_dropout).
    head_dropout_rate: dropout before the head (torchvision's dropout, 0.5).
    stochastic_depth_rate: drop-path rate of the last block; block n of L uses rate * n / (L-1).
    in_channels: C expected of the input.
    attention_implementation: "auto" (einsum, fused or chunked by input), "einsum", "fused" or "chunked"
      (vit_video.layers.attention).
    sow_attention_weights: store every block's weights `[B,h,1+Nq,1+Nk]` in 'intermediates' (`block_{i}/attn`;
      queries on the block's output map, keys on its pooled key map, class token first).
    dtype, param_dtype: compute and parameter dtypes.
  """
  inputs: ClassVar[tuple[str, ...]] = ("video",)
  head: ClassVar[str] = "head"
  batch_norm: ClassVar[bool] = False
  num_classes: int
  num_heads: tuple[int, ...]
  block_widths: tuple[int, ...]
  kernel_q: tuple[Triple, ...]
  stride_q: tuple[Triple, ...]
  kernel_kv: tuple[Triple, ...]
  stride_kv: tuple[Triple, ...]
  width: int = 96
  input_size: Triple = (16, 224, 224)
  relative_positions: bool = False
  residual_pool: bool = False
  residual_with_cls: bool = False
  project_after_attention: bool = False
  patch_kernel: Triple = (3, 7, 7)
  patch_stride: Triple = (2, 4, 4)
  patch_padding: Triple = (1, 3, 3)
  dropout_rate: float = 0.0
  head_dropout_rate: float = 0.5
  stochastic_depth_rate: float = 0.0
  in_channels: int = 3
  attention_implementation: Implementation = "auto"
  sow_attention_weights: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  def table_grid(self) -> Triple:
    """The token map (T', H', W') the position tables are built for: floor(input_size / patch_stride), at least 1."""
    return tuple(max(s // st, 1) for s, st in zip(self.input_size, self.patch_stride))

  def check_input(self, shape: Sequence[int]) -> None:
    """Raises ValueError naming the sizes if a `[B,T,H,W,C]` clip of `shape` does not fit this model."""
    columns = (self.num_heads, self.block_widths, self.kernel_q, self.stride_q, self.kernel_kv, self.stride_kv)
    if len({len(c) for c in columns}) != 1 or not self.num_heads:
      raise ValueError(f"num_heads, block_widths, kernel_q, stride_q, kernel_kv and stride_kv need one entry per "
                       f"block; got lengths {[len(c) for c in columns]}")
    if len(shape) != 5 or shape[-1] != self.in_channels:
      raise ValueError(f"{type(self).__name__} expects clips [B,T,H,W,{self.in_channels}]; got shape {tuple(shape)}")
    grid = tuple((s + 2 * p - k) // st + 1  # the patch embedding's output map (T', H', W')
                 for s, k, st, p in zip(shape[1:4], self.patch_kernel, self.patch_stride, self.patch_padding))
    if not self.relative_positions and grid != self.table_grid():
      raise ValueError(f"clip size {tuple(shape[1:4])} (T, H, W) gives a {grid} token map, but the position "
                       f"embedding is for {self.table_grid()} (input_size {tuple(self.input_size)})")

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """`[B,T,H,W,C] -> [B,K]` float32 logits (or `[B,D]` features when num_classes == 0)."""
    self.check_input(x.shape)
    return self.clip_to_logits(x, train=train)

  @nn.compact
  def clip_to_logits(self, x: jax.Array, *, train: bool) -> jax.Array:
    """`__call__` after the checks."""
    x = nn.Conv(self.width, tuple(self.patch_kernel), tuple(self.patch_stride),
                padding=[(p, p) for p in self.patch_padding], dtype=self.dtype, param_dtype=self.param_dtype,
                name="embedding", conv_general_dilated=conv_lowering.conv_general_dilated)(
                    x.astype(self.dtype))  # [B,T',H',W',D]
    b, *thw, d = x.shape
    x = ClassToken(param_dtype=self.param_dtype, name="cls")(x.reshape(b, -1, d))  # [B,1+N,D]
    table = self.table_grid()
    if not self.relative_positions:
      init = nn.initializers.truncated_normal(0.02)
      spatial = self.param("pos_embedding_spatial", init, (table[1] * table[2], d), self.param_dtype)
      temporal = self.param("pos_embedding_temporal", init, (table[0], d), self.param_dtype)
      cls = self.param("pos_embedding_cls", init, (d,), self.param_dtype)
      pos = (temporal[:, None] + spatial[None]).reshape(-1, d)  # [T'*H'*W',D], T-major
      x = x + jnp.concatenate([cls[None], pos]).astype(self.dtype)
    depth = len(self.num_heads)
    for i in range(depth):
      x, thw = MultiscaleBlock(
          self.num_heads[i], self.block_widths[i], tuple(self.kernel_q[i]), tuple(self.stride_q[i]),
          tuple(self.kernel_kv[i]), tuple(self.stride_kv[i]), table_size=table if self.relative_positions else None,
          residual_pool=self.residual_pool, residual_with_cls=self.residual_with_cls,
          project_after_attention=self.project_after_attention,
          drop_path_rate=self.stochastic_depth_rate * i / max(depth - 1, 1), dropout_rate=self.dropout_rate,
          attention_implementation=self.attention_implementation, sow_attention_weights=self.sow_attention_weights,
          dtype=self.dtype, param_dtype=self.param_dtype,
          name=f"block_{i}")(x, tuple(thw), deterministic=not train)  # [B,1+N_i,D_i]
      table = tuple(max(s // st, 1) for s, st in zip(table, self.stride_q[i]))
    x = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, param_dtype=self.param_dtype, name="norm")(x)[:, 0]  # [B,D]
    if not self.num_classes:
      return x.astype(jnp.float32)
    x = nn.Dropout(self.head_dropout_rate)(x, deterministic=not train)
    x = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, dtype=self.dtype,
                 param_dtype=self.param_dtype, name="head")(x)
    return x.astype(jnp.float32)


class MViTImage(MViT):
  """MViT on images `[B,H,W,C] -> [B,K]`: the one-frame clip `[B,1,H,W,C]` (module docstring); input_size is
  (1, H, W)."""
  inputs: ClassVar[tuple[str, ...]] = ("image",)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """`[B,H,W,C] -> [B,K]` float32 logits (or `[B,D]` features when num_classes == 0)."""
    if self.input_size[0] != 1:
      raise ValueError(f"an image model's input_size is (1, H, W); got {tuple(self.input_size)}")
    if x.ndim != 4 or x.shape[-1] != self.in_channels:
      raise ValueError(f"MViTImage expects images [B,H,W,{self.in_channels}]; got shape {tuple(x.shape)}")
    return super().__call__(x[:, None], train=train)  # [B,1,H,W,C]


def torchvision_blocks(*, v2: bool) -> dict:
  """torchvision's `block_setting` of mvit_v1_b (v2=False) or mvit_v2_s as MViT's per-block attributes.

  16 blocks; queries pooled by (1, 2, 2) at blocks 1, 3 and 14, which start scale stages 1-3 and double the heads
  (1, 2, 4, 8); keys and values pooled by (1, 8 / 2^stage, 8 / 2^stage), at least 1; every pooling kernel
  3 x 3 x 3, except MViT's unpooled queries (none). Widths 96 * 2^stage: MViTv2 widens in the block that pools,
  MViT in the block before it (test_torchvision_mvit.py reads both back from torchvision's modules).
  """
  depth, pooled = 16, (1, 3, 14)
  stage = [sum(i >= p for p in pooled) for i in range(depth + 1)]  # block i's scale stage; [depth]: after the last
  return dict(
      num_heads=tuple(2**s for s in stage[:depth]),
      block_widths=tuple(96 * 2**stage[i if v2 else i + 1] for i in range(depth)),
      kernel_q=tuple((3, 3, 3) if v2 or i in pooled else (1, 1, 1) for i in range(depth)),
      stride_q=tuple((1, 2, 2) if i in pooled else (1, 1, 1) for i in range(depth)),
      kernel_kv=((3, 3, 3),) * depth,
      stride_kv=tuple((1, max(8 >> s, 1), max(8 >> s, 1)) for s in stage[:depth]))


# torchvision builds both with stochastic depth 0.2 and head dropout 0.5, for 16 x 224 x 224 clips (the module
# defaults: width 96, the 3 x 7 x 7 patch embedding, input_size); 400 classes for the Kinetics-400 weights.
VARIANTS = {
    "mvit_v1_b": dict(**torchvision_blocks(v2=False), stochastic_depth_rate=0.2),
    "mvit_v2_s": dict(**torchvision_blocks(v2=True), relative_positions=True, residual_pool=True,
                      project_after_attention=True, stochastic_depth_rate=0.2),
}

MODELS = {name: functools.partial(MViT, **kwargs) for name, kwargs in VARIANTS.items()}
MODELS |= {f"{name}_image": functools.partial(MViTImage, **kwargs, input_size=(1, 224, 224))
           for name, kwargs in VARIANTS.items()}

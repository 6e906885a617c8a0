"""ViViT: A Video Vision Transformer (Arnab et al. 2021), its four models and initialisation from a 2D ViT.

A clip `[B,T,H,W,C]` becomes a grid of T' x H' x W' tokens (S = H' W' per temporal index):
  embedding="tubelet": a 3D patch embedding, kernel = stride = (t, p, p) (paper: 2 x 16 x 16); T' = T / t.
  embedding="uniform": every frame cut into 2D p x p patches (the data pipeline samples the frames); T' = T.
Learned position embeddings are added, then one of (pre-norm blocks throughout, as in vit.py):
  "st"  Model 1, spatio-temporal attention: a class token and one ViT encoder over all T' S tokens.
  "fe"  Model 2, factorised encoder: a spatial ViT encoder (class token, position embedding [1,1+S,D] shared by
        all temporal indices) on each temporal index alone; its T' class-token outputs, with a temporal class
        token, go through a temporal encoder of `temporal_depth` (L_t) blocks.
  "fsa" Model 3, factorised self-attention: each block is
            y = x + MSA_space(LN(x));  z = y + MSA_time(LN(y));  out = z + MLP(LN(z)),
        MSA_space over the S tokens of one temporal index, MSA_time over the T' tokens of one spatial position
        (the paper's order; it reports that time-then-space does no differently, and the released code defaults
        to it).
  "fdp" Model 4, factorised dot-product attention: ViT blocks whose attention gives half of the heads the
        tokens of the same temporal index as keys, the other half the tokens of the same spatial position; the
        heads are concatenated and projected by W_o as usual.
Models 3 and 4 (their blocks: vivit_factorised.py) have no class token (it has no place in the space/time
reshapes; the released code, google-research/scenic, refuses a token classifier for them) and average all final
tokens; Models 1 and 2 classify their class token.

Parameter names follow vit.py (`embedding`, `cls`, `Transformer/{posembed_input,encoderblock_{i},encoder_norm}`,
`pre_logits`, `head`); Model 2 has `SpatialTransformer`, `temporal_cls`, `TemporalTransformer`; Model 3 blocks
add `LayerNorm_time` and `MultiHeadDotProductAttention_time` to the ViT block's names. So
`checkpoints.inflate_vit.vivit_from_vit` maps a ViT (or a converted published .npz) name by name.

Sizes and counts are checked against the paper's Table 2 (ViT-B, 16x2 tubelets, 32x224x224, 400 classes) in
tests/models/test_vivit.py; `forward_flops` is the analytic count.
"""
import functools
from collections.abc import Sequence
from typing import ClassVar, Literal, get_args

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_video.layers.embed import ClassToken, PatchEmbedding
from vit_video.models import vit
from vit_video.models.vit import Encoder, TransformerOptions
from vit_video.models.vivit_factorised import FactorisedEncoder

Variant = Literal["st", "fe", "fsa", "fdp"]
VARIANT_NAMES = get_args(Variant)


class ViViT(TransformerOptions):
  """Video Vision Transformer, Models 1-4 of Arnab et al. 2021 (see the module docstring).

  Attributes:
    num_classes: K; 0 returns the pooled (pre-logits) features `[B,D']` instead of logits.
    variant: "st" (Model 1), "fe" (Model 2), "fsa" (Model 3) or "fdp" (Model 4).
    embedding: "tubelet" (3D kernel (t, p, p)) or "uniform" (2D p x p patches of every frame; needs
      tubelet_depth 1).
    patch_size: p; frame sides must be divisible by it.
    tubelet_depth: t; the frame count must be divisible by it.
    width, depth: D and the blocks (Model 2: of the spatial encoder).
    temporal_depth: Model 2 only: L_t, blocks of the temporal encoder (same width, MLP and heads).
    representation_size: width of the tanh pre-logits layer; None for none.
    in_channels: C expected of the input.
  And vit.TransformerOptions' (mlp_dim, num_heads (Model 4: an even number, half spatial and half temporal),
  dropout rates, stochastic depth, attention_implementation, remat, dtypes); sow_attention_weights stores every
  attention's weights in 'intermediates' (`attention_weights` `[B',h,N,N]`; Model 3's temporal attention under
  `MultiHeadDotProductAttention_time`; Model 4 `spatial_attention_weights` and `temporal_attention_weights`).
  """
  inputs: ClassVar[tuple[str, ...]] = ("video",)
  head: ClassVar[str] = "head"
  batch_norm: ClassVar[bool] = False
  num_classes: int
  variant: Variant = "st"
  embedding: Literal["tubelet", "uniform"] = "tubelet"
  patch_size: int = 16
  tubelet_depth: int = 2
  width: int = 768
  depth: int = 12
  temporal_depth: int = 4
  representation_size: int | None = None
  in_channels: int = 3

  def check_input(self, shape: Sequence[int]) -> None:
    """Raises ValueError naming the sizes if a `[B,T,H,W,C]` clip of `shape` does not fit this model."""
    if self.variant not in VARIANT_NAMES:
      raise ValueError(f"variant must be one of {VARIANT_NAMES}; got {self.variant!r}")
    if self.embedding not in ("tubelet", "uniform"):
      raise ValueError(f"embedding must be 'tubelet' or 'uniform'; got {self.embedding!r}")
    if self.embedding == "uniform" and self.tubelet_depth != 1:
      raise ValueError(f"embedding='uniform' embeds every frame alone (tubelet depth 1); got tubelet_depth "
                       f"{self.tubelet_depth}")
    if self.variant == "fdp" and self.num_heads % 2:
      raise ValueError(f"Model 4 ('fdp') gives half of the heads to space and half to time; num_heads "
                       f"{self.num_heads} is odd")
    if len(shape) != 5:
      raise ValueError(f"ViViT expects videos [B,T,H,W,C]; got shape {tuple(shape)}")
    _, t, h, w, c = shape
    if c != self.in_channels:
      raise ValueError(f"ViViT expects {self.in_channels} input channels; got shape {tuple(shape)}")
    if t % self.tubelet_depth:
      raise ValueError(f"frame count {t} is not divisible by the tubelet depth {self.tubelet_depth}")
    if h % self.patch_size or w % self.patch_size:
      raise ValueError(f"frame size {(h, w)} is not divisible by patch size {self.patch_size}")

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """`[B,T,H,W,C] -> [B,K]` float32 logits (or `[B,D']` features when num_classes == 0)."""
    self.check_input(x.shape)
    det = not train
    b, t, h, w, c = x.shape
    x = x.astype(self.dtype)
    p, d = self.patch_size, self.width
    if self.embedding == "tubelet":
      x = PatchEmbedding((self.tubelet_depth, p, p), d, dtype=self.dtype, param_dtype=self.param_dtype,
                         name="embedding")(x)  # [B,T',H',W',D]
    else:
      x = PatchEmbedding((p, p), d, dtype=self.dtype, param_dtype=self.param_dtype,
                         name="embedding")(x.reshape(b * t, h, w, c))  # [B*T,H',W',D]
    nt, ns = t // self.tubelet_depth, (h // p) * (w // p)
    x = x.reshape(b, nt, ns, d)  # [B,T',S,D]
    common = self.transformer_options()
    cls = lambda name: ClassToken(param_dtype=self.param_dtype, name=name)  # noqa: E731
    if self.variant == "st":
      x = cls("cls")(x.reshape(b, nt * ns, d))  # [B,1+T'S,D]
      x = Encoder(depth=self.depth, name="Transformer", **common)(x, deterministic=det)[:, 0]  # [B,D]
    elif self.variant == "fe":
      x = cls("cls")(x.reshape(b * nt, ns, d))  # [B*T',1+S,D]
      x = Encoder(depth=self.depth, name="SpatialTransformer", **common)(x, deterministic=det)
      x = cls("temporal_cls")(x[:, 0].reshape(b, nt, d))  # [B*T',D] -> [B,T',D] -> [B,1+T',D]
      x = Encoder(depth=self.temporal_depth, name="TemporalTransformer", **common)(x, deterministic=det)[:, 0]
    else:
      x = FactorisedEncoder(variant=self.variant, depth=self.depth, name="Transformer", **common)(
          x, deterministic=det).mean(axis=(1, 2))  # [B,T',S,D] -> [B,D]
    if self.representation_size is not None:
      x = nn.tanh(nn.Dense(self.representation_size, dtype=self.dtype, param_dtype=self.param_dtype,
                           name="pre_logits")(x))
    if not self.num_classes:
      return x.astype(jnp.float32)
    x = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, dtype=self.dtype,
                 param_dtype=self.param_dtype, name="head")(x)
    return x.astype(jnp.float32)


def forward_flops(model: ViViT, clip_size: Sequence[int]) -> float:
  """Analytic FLOPs (2 * MACs, XLA's unit as in `vit_video.train.flops`) of one `[T,H,W]` clip through `model`.

  Matrix products only (elementwise work, LayerNorm, softmax, GELU, pooling are left out). With T' temporal
  indices, S tokens per index, N = T'S, D = width, M = mlp_dim, L = depth, K classes, C channels, tubelet t x p x p:
    embedding   N t p^2 C D
    block(n)    4 n D^2 + 2 n^2 D + 2 n D M            (projections, Q K^T and weights x V, MLP)
    "st"        L block(1 + N)
    "fe"        T' L block(1 + S) + L_t block(1 + T')
    "fsa"       L (8 N D^2 + 2 T' S^2 D + 2 S T'^2 D + 2 N D M)
    "fdp"       L (4 N D^2 + T' S^2 D + S T'^2 D + 2 N D M)   (each head group has D/2 channels)
    head        D K (+ D R for a pre-logits layer of width R)
  The paper's Table 2 "GFLOPs" are multiply-adds: compare `forward_flops / 2e9` with them.
  """
  model.check_input((1, *clip_size, model.in_channels))
  t, h, w = clip_size
  p, d, m, depth = model.patch_size, model.width, model.mlp_dim, model.depth
  nt, ns = t // model.tubelet_depth, (h // p) * (w // p)
  n = nt * ns
  block = lambda n: 4 * n * d * d + 2 * n * n * d + 2 * n * d * m  # noqa: E731
  macs = n * model.tubelet_depth * p * p * model.in_channels * d
  if model.variant == "st":
    macs += depth * block(1 + n)
  elif model.variant == "fe":
    macs += nt * depth * block(1 + ns) + model.temporal_depth * block(1 + nt)
  elif model.variant == "fsa":
    macs += depth * (8 * n * d * d + 2 * nt * ns * ns * d + 2 * ns * nt * nt * d + 2 * n * d * m)
  else:
    macs += depth * (4 * n * d * d + nt * ns * ns * d + ns * nt * nt * d + 2 * n * d * m)
  features = d
  if model.representation_size is not None:
    macs += d * model.representation_size
    features = model.representation_size
  return 2.0 * (macs + features * model.num_classes)


# Table 2 of the paper uses ViT-B, tubelets 16x2 and L_t = 4 temporal layers for Model 2; the released
# google-research/scenic configs use 4 for B (K400) and for L (Epic Kitchens; their K400 L config uses 24).
VARIANTS = {
    **{f"vivit_b16x2_{v}": dict(vit.SIZES["b"], patch_size=16, tubelet_depth=2, variant=v) for v in VARIANT_NAMES},
    **{f"vivit_l16x2_{v}": dict(vit.SIZES["l"], patch_size=16, tubelet_depth=2, variant=v) for v in ("st", "fe")},
}

MODELS = {name: functools.partial(ViViT, **kwargs) for name, kwargs in VARIANTS.items()}

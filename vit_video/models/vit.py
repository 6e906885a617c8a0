"""Vision Transformer (Dosovitskiy et al. 2020) and its ResNet hybrids.

An image is cut into P x P patches, each linearly embedded; a class token is prepended, learned position
embeddings are added, and a pre-norm Transformer encoder

    x = x + MSA(LN(x));  x = x + MLP(LN(x))

runs `depth` times. The class token's final state (or the mean of all tokens) goes through an optional
tanh pre-logits layer to the linear head. Hybrids run a BiT ResNet trunk first and embed its feature map
with 1x1 "patches".

Parameter names follow google-research/vision_transformer (`embedding`, `Transformer/posembed_input`,
`Transformer/encoderblock_{i}`, `Transformer/encoder_norm`, `pre_logits`, `head`), so published .npz
checkpoints load with few renames (see `vit_video.checkpoints`).
"""
import dataclasses
import functools
from typing import ClassVar, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_video.layers.attention import Implementation, MultiHeadAttention
from vit_video.layers.embed import AddPositionEmbedding, ClassToken, PatchEmbedding
from vit_video.layers.mlp import DropPath, MlpBlock
from vit_video.layers.remat import RematPolicy, maybe_remat
from vit_video.layers.stems import ResNetStem


STEM_NUMERICS = {
    "vit_jax": dict(std_eps=1e-5, eps_on_std=True, gn_epsilon=1e-6),
    "timm": dict(std_eps=1e-8, eps_on_std=False, gn_epsilon=1e-5),
}


class TransformerOptions(nn.Module, kw_only=True):
  """The encoder options that ViT, ViViT, TimeSformer and their encoders share (keyword-only attributes).

  Attributes:
    mlp_dim, num_heads: MLP hidden width and attention heads of every block.
    dropout_rate: dropout after the position embedding, the attention projection and in the MLP.
    attention_dropout_rate: dropout on the attention weights.
    stochastic_depth_rate: drop-path rate of the last block; block i of L uses rate * i / (L - 1).
    attention_implementation: "auto" (einsum, fused or chunked by input), "einsum", "fused" or "chunked"
      (O(N) memory for long inputs; vit_video.layers.attention).
    sow_attention_weights: store every attention's weights `[B',h,N,N]` in 'intermediates'.
    approximate_gelu: tanh GELU in the MLPs instead of the exact erf one.
    remat: recompute each block's activations in the backward pass (`nn.remat`), trading FLOPs for memory;
      remat_policy: what a rematerialised block keeps anyway (vit_video.layers.remat.REMAT_POLICIES).
    dtype, param_dtype: compute and parameter dtypes.
  """
  mlp_dim: int = 3072
  num_heads: int = 12
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  stochastic_depth_rate: float = 0.0
  attention_implementation: Implementation = "auto"
  sow_attention_weights: bool = False
  approximate_gelu: bool = False
  remat: bool = False
  remat_policy: RematPolicy = "nothing_saveable"
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  def transformer_options(self) -> dict:
    """These attributes, for an encoder: `Encoder(depth=L, **self.transformer_options())`."""
    return {name: getattr(self, name) for name in TRANSFORMER_OPTIONS}

  def block_options(self) -> dict:
    """The attributes a single block takes: all but those the encoder applies (ENCODER_ONLY_OPTIONS)."""
    return {name: getattr(self, name) for name in TRANSFORMER_OPTIONS if name not in ENCODER_ONLY_OPTIONS}


# Every TransformerOptions attribute goes to the encoders, and to each block except these, which the encoder applies
# (stochastic depth as each block's drop_path_rate; remat by wrapping the block): a new attribute reaches the blocks,
# whose constructors then take it or raise.
TRANSFORMER_OPTIONS = tuple(f.name for f in dataclasses.fields(TransformerOptions) if f.name not in ("parent", "name"))
ENCODER_ONLY_OPTIONS = ("stochastic_depth_rate", "remat", "remat_policy")


class EncoderBlock(nn.Module):
  """Pre-norm Transformer block: `[B,N,D] -> [B,N,D]`.

  `deterministic` is an attribute rather than a call argument so that the block can be wrapped by `nn.scan`
  and `nn.remat` without static-argument bookkeeping. The call takes and returns `(x, None)`, scan's carry
  convention; `drop_path_rate` is this block's stochastic-depth rate (a scanned array under `nn.scan`).
  """
  mlp_dim: int
  num_heads: int
  deterministic: bool
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  attention_implementation: Implementation = "auto"
  sow_attention_weights: bool = False
  approximate_gelu: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, drop_path_rate: float | jax.Array) -> tuple[jax.Array, None]:
    det = self.deterministic
    norm = lambda name: nn.LayerNorm(  # noqa: E731
        epsilon=1e-6, dtype=self.dtype, param_dtype=self.param_dtype, name=name)
    y = norm("LayerNorm_0")(x)
    y = MultiHeadAttention(
        num_heads=self.num_heads, dropout_rate=self.attention_dropout_rate,
        implementation=self.attention_implementation, sow_weights=self.sow_attention_weights,
        dtype=self.dtype, param_dtype=self.param_dtype, name="MultiHeadDotProductAttention_1")(y, deterministic=det)
    y = nn.Dropout(self.dropout_rate)(y, deterministic=det)
    x = x + DropPath()(y, drop_path_rate, deterministic=det)
    y = norm("LayerNorm_2")(x)
    y = MlpBlock(mlp_dim=self.mlp_dim, dropout_rate=self.dropout_rate, approximate_gelu=self.approximate_gelu,
                 dtype=self.dtype, param_dtype=self.param_dtype, name="MlpBlock_3")(y, deterministic=det)
    return x + DropPath()(y, drop_path_rate, deterministic=det), None


class Encoder(TransformerOptions):
  """Position embedding, `depth` encoder blocks and a final LayerNorm: `[B,N,D] -> [B,N,D]`.

  Attributes (and TransformerOptions'):
    scan: run the blocks with `nn.scan` over one stacked set of parameters (`encoderblock`, leading axis
      `depth`), so compile time stops growing with depth. `scan_to_unscanned` / `unscanned_to_scan` convert.
  """
  depth: int
  scan: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    x = AddPositionEmbedding(param_dtype=self.param_dtype, name="posembed_input")(x)
    x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
    rates = np.linspace(0.0, self.stochastic_depth_rate, self.depth) if self.depth > 1 else np.zeros(self.depth)
    # Unscanned, each block's drop-path rate is a Python float (static under remat); scanned, it is an array.
    block = maybe_remat(EncoderBlock, self.remat, self.remat_policy, static_argnums=() if self.scan else (2,),
                        prevent_cse=not self.scan)
    kwargs = dict(deterministic=deterministic, **self.block_options())
    if self.scan:
      scanned = nn.scan(block, variable_axes={"params": 0, "intermediates": 0},
                        split_rngs={"params": True, "dropout": True}, in_axes=0, length=self.depth)
      x, _ = scanned(name="encoderblock", **kwargs)(x, jnp.asarray(rates, jnp.float32))
    else:
      for i, rate in enumerate(rates):
        x, _ = block(name=f"encoderblock_{i}", **kwargs)(x, float(rate))
    return nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, param_dtype=self.param_dtype, name="encoder_norm")(x)


class ViT(TransformerOptions):
  """Vision Transformer, optionally with a BiT ResNet trunk in front (hybrid).

  Attributes (and TransformerOptions': mlp_dim, num_heads, dropout rates, stochastic depth, attention
  implementation, remat, dtypes):
    num_classes: K; 0 returns the pooled (pre-logits) features `[B,D']` instead of logits.
    return_grid: with num_classes 0, return the encoder's patch tokens as a grid `[B,H/P,W/P,D]` (after the
      final LayerNorm, class token dropped) instead of pooling them.
    patch_size: P; image (or trunk feature map) sides must be divisible by it.
    width, depth: D and the number of blocks.
    pool: "token" (class token) or "gap" (mean of all tokens, no class token).
    representation_size: width of the tanh pre-logits layer; None for none.
    stem_stage_sizes: hybrid only: the BiT trunk's units per stage; () is the root block alone.
      None means a plain ViT.
    stem_width_factor: hybrid only: the trunk's width multiplier.
    stem_numerics: hybrid only: the trunk's normalisation epsilons. "vit_jax" (the published .npz weights'
      own): weight standardisation (w - mean) / (std + 1e-5), GroupNorm eps 1e-6. "timm" (timm's port):
      (w - mean) / sqrt(var + 1e-8), GroupNorm eps 1e-5. Outputs differ by about 4e-4 relative.
    in_channels: C expected of the input.
    head_bias_init: initial head bias (the paper's fine-tuning uses zero kernel and -10 bias sometimes).
  """
  inputs: ClassVar[tuple[str, ...]] = ("image",)
  head: ClassVar[str] = "head"
  batch_norm: ClassVar[bool] = False
  num_classes: int
  patch_size: int = 16
  width: int = 768
  depth: int = 12
  pool: Literal["token", "gap"] = "token"
  representation_size: int | None = None
  stem_stage_sizes: tuple[int, ...] | None = None
  stem_width_factor: float = 1.0
  stem_numerics: Literal["vit_jax", "timm"] = "vit_jax"
  in_channels: int = 3
  head_bias_init: float = 0.0
  scan: bool = False
  return_grid: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """`[B,H,W,C] -> [B,K]` float32 logits (or `[B,D']` features when num_classes == 0, `[B,h,w,D]` with
    return_grid)."""
    if self.return_grid and self.num_classes:
      raise ValueError(f"return_grid needs num_classes=0 (no classifier); got num_classes={self.num_classes}")
    if x.ndim != 4:
      raise ValueError(f"ViT expects images [B,H,W,C]; got shape {x.shape}")
    if x.shape[-1] != self.in_channels:
      raise ValueError(f"ViT expects {self.in_channels} input channels; got shape {x.shape}")
    if self.pool not in ("token", "gap"):
      raise ValueError(f"pool must be 'token' or 'gap'; got {self.pool!r}")
    if self.stem_numerics not in STEM_NUMERICS:
      raise ValueError(f"stem_numerics must be one of {sorted(STEM_NUMERICS)}; got {self.stem_numerics!r}")
    x = x.astype(self.dtype)
    if self.stem_stage_sizes is not None:
      stride = 4 * 2 ** max(len(self.stem_stage_sizes) - 1, 0)
      if x.shape[1] % (stride * self.patch_size) or x.shape[2] % (stride * self.patch_size):
        raise ValueError(f"image size {x.shape[1:3]} is not divisible by the hybrid's total patch size "
                         f"{stride * self.patch_size} (trunk stride {stride} x patch {self.patch_size})")
      x = ResNetStem(stage_sizes=tuple(self.stem_stage_sizes), width_factor=self.stem_width_factor,
                     **STEM_NUMERICS[self.stem_numerics], dtype=self.dtype, param_dtype=self.param_dtype,
                     name="stem")(x)
    elif x.shape[1] % self.patch_size or x.shape[2] % self.patch_size:
      raise ValueError(f"image size {x.shape[1:3]} is not divisible by patch size {self.patch_size}")
    x = PatchEmbedding((self.patch_size, self.patch_size), self.width, dtype=self.dtype,
                       param_dtype=self.param_dtype, name="embedding")(x)  # [B,H/P,W/P,D]
    grid = x.shape[1:3]  # (h, w) = (H/P, W/P)
    x = x.reshape(x.shape[0], -1, x.shape[-1])  # [B,N,D]
    if self.pool == "token":
      x = ClassToken(param_dtype=self.param_dtype, name="cls")(x)  # [B,1+N,D]
    x = Encoder(depth=self.depth, scan=self.scan, name="Transformer", **self.transformer_options())(
        x, deterministic=not train)
    if self.return_grid:
      tokens = x[:, 1:] if self.pool == "token" else x  # [B,N,D]
      return tokens.reshape(tokens.shape[0], *grid, tokens.shape[-1]).astype(jnp.float32)  # [B,h,w,D]
    x = x[:, 0] if self.pool == "token" else x.mean(axis=1)  # [B,D]
    if self.representation_size is not None:
      x = nn.tanh(nn.Dense(self.representation_size, dtype=self.dtype, param_dtype=self.param_dtype,
                           name="pre_logits")(x))
    if not self.num_classes:
      return x.astype(jnp.float32)
    x = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros,
                 bias_init=nn.initializers.constant(self.head_bias_init), dtype=self.dtype,
                 param_dtype=self.param_dtype, name="head")(x)
    return x.astype(jnp.float32)


def scan_to_unscanned(params: dict) -> dict:
  """Converts ViT params from the scanned layout (`Transformer/encoderblock`, stacked on axis 0) to one
  `Transformer/encoderblock_{i}` per layer. Other entries are kept as they are."""
  params = dict(params)
  encoder = dict(params["Transformer"])
  stacked = encoder.pop("encoderblock")
  depth = jax.tree.leaves(stacked)[0].shape[0]
  for i in range(depth):
    encoder[f"encoderblock_{i}"] = jax.tree.map(lambda a, i=i: a[i], stacked)
  params["Transformer"] = encoder
  return params


def unscanned_to_scan(params: dict) -> dict:
  """Inverse of `scan_to_unscanned`: stacks `encoderblock_{0..L-1}` into `encoderblock`."""
  params = dict(params)
  encoder = dict(params["Transformer"])
  depth = sum(1 for k in encoder if k.startswith("encoderblock_"))
  blocks = [encoder.pop(f"encoderblock_{i}") for i in range(depth)]
  encoder["encoderblock"] = jax.tree.map(lambda *a: jnp.stack(a), *blocks)
  params["Transformer"] = encoder
  return params


# Sizes from the ViT paper, Table 1 (Ti and S from DeiT / "How to train your ViT").
SIZES = {
    "ti": dict(width=192, depth=12, mlp_dim=768, num_heads=3),
    "s": dict(width=384, depth=12, mlp_dim=1536, num_heads=6),
    "b": dict(width=768, depth=12, mlp_dim=3072, num_heads=12),
    "l": dict(width=1024, depth=24, mlp_dim=4096, num_heads=16),
    "h": dict(width=1280, depth=32, mlp_dim=5120, num_heads=16),
}

VARIANTS = {
    "vit_ti16": dict(SIZES["ti"], patch_size=16),
    "vit_s16": dict(SIZES["s"], patch_size=16),
    "vit_s32": dict(SIZES["s"], patch_size=32),
    "vit_b8": dict(SIZES["b"], patch_size=8),
    "vit_b16": dict(SIZES["b"], patch_size=16),
    "vit_b32": dict(SIZES["b"], patch_size=32),
    "vit_l16": dict(SIZES["l"], patch_size=16),
    "vit_l32": dict(SIZES["l"], patch_size=32),
    "vit_h14": dict(SIZES["h"], patch_size=14),
    # Hybrids: the BiT trunk's output stride times the patch gives the name's "/16" or "/32".
    "r_vit_ti16": dict(SIZES["ti"], patch_size=8, stem_stage_sizes=()),  # R+ViT-Ti/16: root block only
    "r26_vit_s32": dict(SIZES["s"], patch_size=1, stem_stage_sizes=(2, 2, 2, 2)),
    "r50_vit_b16": dict(SIZES["b"], patch_size=1, stem_stage_sizes=(3, 4, 9)),
    "r50_vit_l32": dict(SIZES["l"], patch_size=1, stem_stage_sizes=(3, 4, 6, 3)),
}

MODELS = {name: functools.partial(ViT, **kwargs) for name, kwargs in VARIANTS.items()}

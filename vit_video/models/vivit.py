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
add `LayerNorm_time` and `MultiHeadDotProductAttention_time` to the ViT block's names. So `init_from_vit` maps a
ViT (or a converted published .npz) name by name.

Sizes and counts are checked against the paper's Table 2 (ViT-B, 16x2 tubelets, 32x224x224, 400 classes) in
tests/models/test_vivit.py; `forward_flops` is the analytic count.
"""
import functools
from collections.abc import Sequence
from typing import ClassVar, Literal, get_args

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_video.layers.attention import Implementation
from vit_video.layers.embed import ClassToken, PatchEmbedding, resample_pos_embedding
from vit_video.layers.remat import RematPolicy
from vit_video.models import vit
from vit_video.models.vit import Encoder
from vit_video.models.vivit_factorised import FactorisedEncoder

Variant = Literal["st", "fe", "fsa", "fdp"]
VARIANT_NAMES = get_args(Variant)
TubeletInit = Literal["central_frame", "average", "repeat"]


class ViViT(nn.Module):
  """Video Vision Transformer, Models 1-4 of Arnab et al. 2021 (see the module docstring).

  Attributes:
    num_classes: K; 0 returns the pooled (pre-logits) features `[B,D']` instead of logits.
    variant: "st" (Model 1), "fe" (Model 2), "fsa" (Model 3) or "fdp" (Model 4).
    embedding: "tubelet" (3D kernel (t, p, p)) or "uniform" (2D p x p patches of every frame; needs
      tubelet_depth 1).
    patch_size: p; frame sides must be divisible by it.
    tubelet_depth: t; the frame count must be divisible by it.
    width, depth, mlp_dim, num_heads: D, blocks (Model 2: of the spatial encoder), MLP width, heads (Model 4:
      an even number, half spatial and half temporal).
    temporal_depth: Model 2 only: L_t, blocks of the temporal encoder (same width, MLP and heads).
    representation_size: width of the tanh pre-logits layer; None for none.
    in_channels: C expected of the input.
    attention_implementation: "einsum", "fused" or "chunked" (O(N) memory for long clips;
      vit_video.layers.attention).
    remat: recompute each block's activations in the backward pass; remat_policy: what it keeps anyway
      (vit_video.layers.remat).
    sow_attention_weights: store every attention's weights in 'intermediates' (`attention_weights`
      `[B',h,N,N]`; Model 3's temporal attention under `MultiHeadDotProductAttention_time`; Model 4
      `spatial_attention_weights` and `temporal_attention_weights`).
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
  mlp_dim: int = 3072
  num_heads: int = 12
  temporal_depth: int = 4
  representation_size: int | None = None
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  stochastic_depth_rate: float = 0.0
  in_channels: int = 3
  attention_implementation: Implementation = "einsum"
  sow_attention_weights: bool = False
  approximate_gelu: bool = False
  remat: bool = False
  remat_policy: RematPolicy = "nothing_saveable"
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

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
    common = dict(mlp_dim=self.mlp_dim, num_heads=self.num_heads, dropout_rate=self.dropout_rate,
                  attention_dropout_rate=self.attention_dropout_rate,
                  stochastic_depth_rate=self.stochastic_depth_rate,
                  attention_implementation=self.attention_implementation,
                  sow_attention_weights=self.sow_attention_weights, approximate_gelu=self.approximate_gelu,
                  remat=self.remat, remat_policy=self.remat_policy, dtype=self.dtype, param_dtype=self.param_dtype)
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


# ------------------------------------------------------------------------------------ initialisation from ViT

_VIT_KEYS = {"embedding", "cls", "Transformer", "pre_logits", "head"}


def _blocks(encoder: dict) -> int:
  return sum(1 for k in encoder if k.startswith("encoderblock_"))


def _inflate(kernel_2d: jax.Array, shape_3d: tuple[int, ...], mode: str) -> jax.Array:
  """A 2D patch kernel `[p,p,C,D]` as a tubelet kernel `[t,p,p,C,D]` (filter inflation)."""
  t = shape_3d[0]
  if mode == "central_frame":  # The 2D kernel at t // 2, zeros elsewhere: each tubelet sees its central frame.
    return jnp.zeros(shape_3d, kernel_2d.dtype).at[t // 2].set(kernel_2d)
  if mode == "average":  # Identical frames give the 2D response.
    return jnp.broadcast_to(kernel_2d / t, shape_3d)
  if mode == "repeat":  # Identical frames give t times the 2D response (before the bias).
    return jnp.broadcast_to(kernel_2d, shape_3d)
  raise ValueError(f"tubelet_init must be one of 'central_frame', 'average', 'repeat'; got {mode!r}")


def _copy(path: str, value, template) -> jax.Array:
  if np.shape(value) != np.shape(template):
    raise ValueError(f"ViT parameter {path!r} has shape {np.shape(value)} but the ViViT's has shape "
                     f"{np.shape(template)} (different mlp_dim, heads or width?)")
  return jnp.asarray(value, dtype=template.dtype)


def _map_block(name: str, vit_block: dict, template: dict) -> dict:
  """A ViT encoder block onto a ViViT block: same names copied; Model 3's temporal attention zeroed (the paper's
  Sec. 3.4: the temporal step is then a plain residual, the block the ViT's per frame; scenic's loader copies the
  spatial weights instead by default), its temporal LayerNorm left from the template."""
  out = {}
  for key, sub in template.items():
    if key == "MultiHeadDotProductAttention_time":
      out[key] = jax.tree.map(jnp.zeros_like, sub)
    elif key == "LayerNorm_time":
      out[key] = sub
    elif key not in vit_block:
      raise ValueError(f"ViT block {name!r} has no {key!r}; its entries are {sorted(vit_block)}")
    else:
      out[key] = jax.tree_util.tree_map_with_path(
          lambda p, t, key=key: _copy(f"{name}/{key}/" + "/".join(k.key for k in p),
                                      _get(vit_block[key], p, f"{name}/{key}"), t), sub)
  return out


def _get(tree: dict, path, where: str):
  for k in path:
    if not isinstance(tree, dict) or k.key not in tree:
      raise ValueError(f"ViT parameters have no {where}/{'/'.join(k.key for k in path)}")
    tree = tree[k.key]
  return tree


def init_from_vit(vit_params: dict, vivit_params_template: dict, *, tubelet_init: TubeletInit = "central_frame",
                  frame_grid: tuple[int, int] | None = None, vit_grid: tuple[int, int] | None = None) -> dict:
  """ViViT parameters initialised from a 2D ViT's (vit.ViT's names, or a converted published .npz).

  Args:
    vit_params: a ViT's 'params' collection (scanned or not; no hybrid stem).
    vivit_params_template: the ViViT's 'params' (e.g. from `init` or `random_variables`): it fixes the variant
      and every shape, and provides what has no ViT counterpart. Either may be wrapped as {"params": ...}.
    tubelet_init: how a 2D patch kernel `[p,p,C,D]` becomes a tubelet kernel `[t,p,p,C,D]`: "central_frame" (at
      t // 2, zeros elsewhere; the paper's best), "average" (repeated over t and divided by t), "repeat"
      (repeated). A "uniform" ViViT takes the 2D kernel as it is.
    frame_grid: the ViViT's tokens per frame (H/p, W/p); None: the ViT's own grid (its embeddings are taken as
      they are). Given, the ViT's grid is resampled to it bilinearly (`resample_pos_embedding`; unchanged when
      the grids agree).
    vit_grid: the ViT's token grid, used only with frame_grid; None: the square grid its token count implies.

  What is copied: the patch embedding (inflated), the class token (Models 1 and 2), the position embedding (its
  grid, resampled if needed, repeated over the T' temporal indices; Model 2's spatial encoder takes it per frame;
  the class-token row kept where the ViViT has a class token), every encoder block, the final norm, pre_logits
  and the head where their shapes agree. Left from the template: Model 2's temporal encoder and temporal class
  token, Model 3's temporal LayerNorms; Model 3's temporal attentions are zeroed; a head (or pre_logits) of
  another size is dropped.

  Raises:
    ValueError: for parameters that are not a ViT's (another family, e.g. a ResNet's; a hybrid), a different
      width, depth, patch size, channel count or MLP/head shape, or a grid that does not fit.
  """
  wrapped = set(vivit_params_template) == {"params"}
  template = vivit_params_template["params"] if wrapped else vivit_params_template
  if set(vit_params) == {"params"}:
    vit_params = vit_params["params"]
  vit_params = dict(vit_params)
  if "stem" in vit_params:
    raise ValueError("a hybrid ViT (ResNet 'stem' + ViT) cannot initialise a ViViT, which embeds pixels directly")
  unknown = sorted(set(vit_params) - _VIT_KEYS)
  if unknown or not {"embedding", "Transformer"} <= set(vit_params):
    raise ValueError(f"vit_params are not a vit_video ViT's parameters (expected top-level {sorted(_VIT_KEYS)}, "
                     f"with 'embedding' and 'Transformer'); got {sorted(vit_params)}")
  encoder = dict(vit_params["Transformer"])
  if "encoderblock" in encoder:  # Scanned layout: one stacked block.
    encoder = vit.scan_to_unscanned(vit_params)["Transformer"]
  vit_kernel = vit_params["embedding"]["kernel"]
  if np.ndim(vit_kernel) != 4:
    raise ValueError(f"the ViT's patch embedding kernel should be [p,p,C,D]; got shape {np.shape(vit_kernel)}")

  out = dict(template)
  fe = "SpatialTransformer" in template
  name = "SpatialTransformer" if fe else "Transformer"
  if name not in template or "embedding" not in template:
    raise ValueError(f"vivit_params_template is not a ViViT's parameters; got {sorted(template)}")
  target = template[name]
  width = template["embedding"]["kernel"].shape[-1]
  if np.shape(vit_kernel)[-1] != width:
    raise ValueError(f"ViT width {np.shape(vit_kernel)[-1]} differs from the ViViT's width {width}")
  if _blocks(encoder) != _blocks(target):
    raise ValueError(f"ViT depth {_blocks(encoder)} differs from the ViViT's depth {_blocks(target)} ({name})")

  # Patch / tubelet embedding.
  kernel = template["embedding"]["kernel"]
  if kernel.shape[-4:] != np.shape(vit_kernel):
    raise ValueError(f"the ViT's patch kernel {np.shape(vit_kernel)} [p,p,C,D] does not match the ViViT's "
                     f"{kernel.shape} (patch size or channels differ)")
  vit_kernel = jnp.asarray(vit_kernel, kernel.dtype)
  out["embedding"] = {"kernel": _inflate(vit_kernel, kernel.shape, tubelet_init) if kernel.ndim == 5 else vit_kernel,
                      "bias": _copy("embedding/bias", vit_params["embedding"]["bias"], template["embedding"]["bias"])}
  if "cls" in template and "cls" in vit_params:
    out["cls"] = {"token": _copy("cls/token", vit_params["cls"]["token"], template["cls"]["token"])}

  # Position embedding: ViT [1, P + g, D] (P = 1 with a class token) -> grid resampled, repeated over time.
  posemb = jnp.asarray(encoder["posembed_input"]["pos_embedding"])
  vit_prefix = 1 if "cls" in vit_params else 0
  g = posemb.shape[1] - vit_prefix
  per_frame = g
  if frame_grid is not None:
    if vit_grid is None and int(round(np.sqrt(g))) ** 2 != g:
      raise ValueError(f"the ViT's {g} grid position embeddings are not a square grid; pass vit_grid")
    posemb = resample_pos_embedding(posemb, frame_grid, num_prefix_tokens=vit_prefix, old_grid=vit_grid)
    per_frame = frame_grid[0] * frame_grid[1]
  grid = posemb[:, vit_prefix:]  # [1, S, D]
  wanted = target["posembed_input"]["pos_embedding"]
  prefix = 1 if "cls" in template else 0
  frames, rest = divmod(wanted.shape[1] - prefix, per_frame)
  if rest or (fe and frames != 1):
    source = "the ViT's grid" if frame_grid is None else f"frame_grid {tuple(frame_grid)}"
    raise ValueError(f"the ViViT's {wanted.shape[1] - prefix} grid position embeddings are not whole frames of the "
                     f"{per_frame} tokens of {source}; pass frame_grid=(H/p, W/p) of the ViViT's frames")
  cls_row = posemb[:, :1] if vit_prefix else jnp.asarray(wanted[:, :1])
  rows = [cls_row] * prefix + [jnp.tile(grid, (1, frames, 1))]  # [1, prefix + T'S, D]
  new_target = {"posembed_input": {"pos_embedding": _copy("Transformer/posembed_input/pos_embedding",
                                                          jnp.concatenate(rows, axis=1), wanted)},
                "encoder_norm": jax.tree.map(lambda v, t: _copy("Transformer/encoder_norm", v, t),
                                             dict(encoder["encoder_norm"]), target["encoder_norm"])}
  for i in range(_blocks(target)):
    new_target[f"encoderblock_{i}"] = _map_block(f"Transformer/encoderblock_{i}", encoder[f"encoderblock_{i}"],
                                                 target[f"encoderblock_{i}"])
  out[name] = new_target

  # Optional pre-logits and the head: copied where the shapes agree, else left from the template.
  for key in ("pre_logits", "head"):
    if key in template and key in vit_params and all(
        np.shape(vit_params[key][k]) == template[key][k].shape for k in template[key]):
      out[key] = {k: jnp.asarray(vit_params[key][k], template[key][k].dtype) for k in template[key]}
  return {"params": out} if wrapped else out


# Table 2 of the paper uses ViT-B, tubelets 16x2 and L_t = 4 temporal layers for Model 2; the released
# google-research/scenic configs use 4 for B (K400) and for L (Epic Kitchens; their K400 L config uses 24).
VARIANTS = {
    **{f"vivit_b16x2_{v}": dict(vit.SIZES["b"], patch_size=16, tubelet_depth=2, variant=v) for v in VARIANT_NAMES},
    **{f"vivit_l16x2_{v}": dict(vit.SIZES["l"], patch_size=16, tubelet_depth=2, variant=v) for v in ("st", "fe")},
}

MODELS = {name: functools.partial(ViViT, **kwargs) for name, kwargs in VARIANTS.items()}

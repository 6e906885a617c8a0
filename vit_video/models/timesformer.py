"""TimeSformer (Bertasius, Wang, Torresani 2021): a ViT over frame patches with one of four space-time attentions.

Each of the T frames is cut into p x p patches (S = H' W' tokens per frame, H' = H/p, W' = W/p) and embedded by
the same 2D patch embedding; every frame gets the class token, and the spatial position embedding `[1,1+S,D]` is
added per frame. Except for "space", a learned time embedding `[1,F,D]` (F = num_frames) is then added to every
patch of frame t, and the clip keeps one class token. Pre-norm blocks (as in vit.py) then run one of:

  "space"    x = x + MSA(LN(x)) within each frame (its patches and its own class token), then the MLP. Frames never
             meet: the T class tokens are averaged after the last block (the paper's space-only baseline).
  "joint"    a ViT block over the class token and all T S patches.
  "divided"  time, then space (the paper's T+S, the official default):
               x = x + FC_time(MSA_time(LN_time(x)))     over the T patches at one spatial position (no class token)
               x = x + MSA(LN(x))                       over one frame's S patches plus a copy of the class token;
                                                        the T copies' updates are averaged into the class token
               x = x + MLP(LN(x))
             FC_time (`Dense_time`) is the official `temporal_fc`, a D x D linear layer after the temporal attention,
             zero-initialised in every block (the official `i > 0` test in its init loop skips the ModuleList, not
             block 0): a fresh model's temporal step is the identity. The paper's Eq. 13 lists the class token among
             the temporal keys; the official code leaves it out, and so do we.
  "axial"    time, then width, then height (the paper's T+W+H): the divided block with a width step (`*_width`, over
             the W' patches of one row of one frame) after the time step, and the height step (over the H' patches
             of one column of one frame) in place of the spatial one. The official code has no axial model; ours
             follows its divided block: each new step has its own attention, LayerNorm and zero-initialised output FC,
             and the class token joins only the last step (a copy in each of the T W' columns, updates averaged).
Then a final LayerNorm of the class token and the linear head. (The paper's fifth scheme, sparse local-global,
is not here; the official code has neither it nor axial.)

The paper's Table 1 (ViT-B/16, 8x224x224) gives 85.9M / 85.9M / 121.4M / 156.8M parameters for space / joint /
divided / axial; ours match to its rounding with a 174-class (SSv2) head; with 400 classes each is 0.17M more
(tests/models/test_timesformer.py holds the exact counts).

Parameter names follow vit.py (`embedding`, `cls`, `Transformer/{posembed_input,encoderblock_{i},encoder_norm}`,
`head`; each block's `LayerNorm_0`, `MultiHeadDotProductAttention_1`, `LayerNorm_2`, `MlpBlock_3`), plus
`Transformer/posembed_time` and the blocks' `{LayerNorm,MultiHeadDotProductAttention,Dense}_{time,width}`, so
`checkpoints.inflate_vit.timesformer_from_vit` maps a ViT name by name.

Deviations from the official code (facebookresearch/TimeSformer, timesformer/models/vit.py), none of which changes
an eval-mode output: stochastic depth drops a whole example's branch (the official drops per attention group, i.e.
per spatial position or per frame, and before `temporal_fc`, so that a dropped temporal branch still adds its bias).
"""
import functools
from collections.abc import Sequence
from typing import ClassVar, Literal

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_video.layers.attention import Implementation, MultiHeadAttention
from vit_video.layers.embed import AddPositionEmbedding, ClassToken, PatchEmbedding
from vit_video.layers.mlp import DropPath, MlpBlock
from vit_video.layers.remat import maybe_remat
from vit_video.models import vit
from vit_video.models.vit import TransformerOptions

Attention = Literal["space", "joint", "divided", "axial"]
ATTENTIONS = ("space", "joint", "divided", "axial")

# einops patterns from the patch grid [B,T,H',W',D] to the attention groups of one step, [groups, tokens, D].
_GROUPS = {
    "time": "b t h w d -> (b h w) t d",  # the T patches at one spatial position
    "width": "b t h w d -> (b t h) w d",  # the W' patches of one row of one frame
    "height": "b t h w d -> (b t w) h d",  # the H' patches of one column of one frame
    "space": "b t h w d -> (b t) (h w) d",  # the S patches of one frame
}


def _ungroup(y: jax.Array, axis: str, grid: Sequence[int]) -> jax.Array:
  """Inverse of `_GROUPS[axis]`: `[groups, tokens, D] -> [B,T,H',W',D]` for grid (B, T, H', W')."""
  left, right = _GROUPS[axis].split(" -> ")
  return einops.rearrange(y, f"{right} -> {left}", **dict(zip("bthw", grid)))


class TimeEmbedding(nn.Module):
  """Adds a learned per-frame embedding `pos_embedding [1,F,D]` (zero-initialised, as the official `time_embed`) to
  every patch of its frame: `[B,T,H',W',D] -> [B,T,H',W',D]`.

  A clip of T != F frames uses the embedding resampled by nearest neighbour, frame t taking row floor(t F / T):
  the rule of the official `F.interpolate(mode='nearest')` (T = F is the identity).
  """
  num_frames: int
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    emb = self.param("pos_embedding", nn.initializers.zeros, (1, self.num_frames, x.shape[-1]), self.param_dtype)
    t = x.shape[1]
    if t != self.num_frames:
      emb = emb[:, (np.arange(t) * self.num_frames) // t]  # [1,F,D] -> [1,T,D]
    return x + emb.astype(x.dtype)[:, :, None, None, :]


class TimeSformerBlock(nn.Module):
  """One pre-norm block of the given attention (see the module docstring): `(cls, patches) -> (cls, patches)`.

  cls is `[B,T,D]` for "space" (a class token per frame), else `[B,1,D]`; patches are `[B,T,H',W',D]`.
  `drop_path_rate` is this block's stochastic-depth rate, as in `vit.EncoderBlock`.
  """
  attention: Attention
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
  def __call__(self, cls: jax.Array, x: jax.Array, drop_path_rate: float | jax.Array) -> tuple[jax.Array, jax.Array]:
    b, t, h, w, d = x.shape
    s, det = h * w, self.deterministic
    norm = lambda name: nn.LayerNorm(  # noqa: E731
        epsilon=1e-6, dtype=self.dtype, param_dtype=self.param_dtype, name=name)

    def attend(name: str, y: jax.Array) -> jax.Array:  # [G,N,D] -> [G,N,D], with the projection's dropout
      y = MultiHeadAttention(num_heads=self.num_heads, dropout_rate=self.attention_dropout_rate,
                             implementation=self.attention_implementation, sow_weights=self.sow_attention_weights,
                             dtype=self.dtype, param_dtype=self.param_dtype, name=name)(y, deterministic=det)
      return nn.Dropout(self.dropout_rate)(y, deterministic=det)

    def drop_path(y: jax.Array) -> jax.Array:  # per example: y is [B,...]
      return DropPath()(y, drop_path_rate, deterministic=det)

    if self.attention == "space":
      tokens = jnp.concatenate([cls[:, :, None], x.reshape(b, t, s, d)], axis=2)  # [B,T,1+S,D]
      y = attend("MultiHeadDotProductAttention_1", norm("LayerNorm_0")(tokens).reshape(b * t, 1 + s, d))
      tokens = tokens + drop_path(y.reshape(b, t, 1 + s, d))  # [B*T,1+S,D] -> [B,T,1+S,D]
      cls, x = tokens[:, :, 0], tokens[:, :, 1:].reshape(b, t, h, w, d)
    elif self.attention == "joint":
      tokens = jnp.concatenate([cls, x.reshape(b, t * s, d)], axis=1)  # [B,1+TS,D]
      tokens = tokens + drop_path(attend("MultiHeadDotProductAttention_1", norm("LayerNorm_0")(tokens)))
      cls, x = tokens[:, :1], tokens[:, 1:].reshape(b, t, h, w, d)
    elif self.attention in ("divided", "axial"):
      for axis in ("time",) if self.attention == "divided" else ("time", "width"):
        y = attend(f"MultiHeadDotProductAttention_{axis}",
                   einops.rearrange(norm(f"LayerNorm_{axis}")(x), _GROUPS[axis]))  # [G,N,D]
        y = nn.Dense(d, kernel_init=nn.initializers.zeros, dtype=self.dtype, param_dtype=self.param_dtype,
                     name=f"Dense_{axis}")(y)
        x = x + drop_path(_ungroup(y, axis, (b, t, h, w)))
      # The last step: every group also sees a copy of the class token; the copies' updates are averaged.
      axis = "space" if self.attention == "divided" else "height"
      groups = einops.rearrange(x, _GROUPS[axis])  # [B*k,n,D]: k groups per example
      k = groups.shape[0] // b
      copies = jnp.broadcast_to(cls[:, None], (b, k, 1, d)).reshape(b * k, 1, d)  # [B*k,1,D]
      y = attend("MultiHeadDotProductAttention_1", norm("LayerNorm_0")(jnp.concatenate([copies, groups], axis=1)))
      cls_update = y[:, 0].reshape(b, k, d).mean(axis=1, keepdims=True)  # [B*k,D] -> [B,1,D]
      update = jnp.concatenate([cls_update, _ungroup(y[:, 1:], axis, (b, t, h, w)).reshape(b, t * s, d)], axis=1)
      update = drop_path(update)  # [B,1+TS,D]
      cls, x = cls + update[:, :1], x + update[:, 1:].reshape(b, t, h, w, d)
    else:
      raise ValueError(f"attention must be one of {ATTENTIONS}; got {self.attention!r}")

    c = cls.shape[1]
    tokens = jnp.concatenate([cls, x.reshape(b, t * s, d)], axis=1)  # [B,c+TS,D]
    y = MlpBlock(mlp_dim=self.mlp_dim, dropout_rate=self.dropout_rate, approximate_gelu=self.approximate_gelu,
                 dtype=self.dtype, param_dtype=self.param_dtype, name="MlpBlock_3")(norm("LayerNorm_2")(tokens),
                                                                                    deterministic=det)
    tokens = tokens + drop_path(y)
    return tokens[:, :c], tokens[:, c:].reshape(b, t, h, w, d)


class TimeSformerEncoder(TransformerOptions):
  """Position and time embeddings, `depth` blocks, the class-token readout and the final LayerNorm:
  `[B,T,1+S,D]` (each frame's class token and patches; `grid` = (H', W')) -> `[B,D]`.

  Stochastic depth grows linearly from 0 to `stochastic_depth_rate` over the blocks.
  """
  attention: Attention
  num_frames: int
  depth: int

  @nn.compact
  def __call__(self, x: jax.Array, grid: tuple[int, int], *, deterministic: bool) -> jax.Array:
    b, t, n, d = x.shape
    h, w = grid
    x = AddPositionEmbedding(param_dtype=self.param_dtype, name="posembed_input")(x.reshape(b * t, n, d))
    x = nn.Dropout(self.dropout_rate)(x.reshape(b, t, n, d), deterministic=deterministic)  # [B,T,1+S,D]
    cls, x = x[:, :, 0], x[:, :, 1:].reshape(b, t, h, w, d)  # [B,T,D], [B,T,H',W',D]
    if self.attention != "space":
      cls = cls[:, :1]  # the same in every frame: the clip's class token [B,1,D]
      x = TimeEmbedding(self.num_frames, param_dtype=self.param_dtype, name="posembed_time")(x)
      x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
    rates = np.linspace(0.0, self.stochastic_depth_rate, self.depth) if self.depth > 1 else np.zeros(self.depth)
    block = maybe_remat(TimeSformerBlock, self.remat, self.remat_policy, static_argnums=(3,))  # drop_path_rate
    for i, rate in enumerate(rates):
      cls, x = block(attention=self.attention, deterministic=deterministic, name=f"encoderblock_{i}",
                     **self.block_options())(cls, x, float(rate))
    # "space": the frames' class tokens averaged (the official averages all tokens over frames, then reads the
    # class token: the same thing); otherwise the one class token.
    return nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, param_dtype=self.param_dtype,
                        name="encoder_norm")(cls.mean(axis=1))


class TimeSformer(TransformerOptions):
  """TimeSformer with space-only, joint, divided (T+S) or axial (T+W+H) attention (see the module docstring).

  Attributes:
    num_classes: K; 0 returns the class token's features `[B,D]` instead of logits.
    attention: "space", "joint", "divided" or "axial".
    patch_size: p; frame sides must be divisible by it.
    width, depth: D and the blocks.
    num_frames: F, rows of the time embedding (not used by "space"); clips of another length use it resampled
      (nearest neighbour, the official rule), so any T >= 1 runs.
    in_channels: C expected of the input.
  And vit.TransformerOptions' (mlp_dim, num_heads, dropout rates, stochastic depth, attention_implementation,
  remat, dtypes); sow_attention_weights stores every attention's weights `[B',h,N,N]` in 'intermediates' (the
  temporal ones under `MultiHeadDotProductAttention_time`).
  """
  inputs: ClassVar[tuple[str, ...]] = ("video",)
  head: ClassVar[str] = "head"
  batch_norm: ClassVar[bool] = False
  num_classes: int
  attention: Attention = "divided"
  patch_size: int = 16
  width: int = 768
  depth: int = 12
  num_frames: int = 8
  in_channels: int = 3

  def check_input(self, shape: Sequence[int]) -> None:
    """Raises ValueError naming the sizes if a `[B,T,H,W,C]` clip of `shape` does not fit this model."""
    if self.attention not in ATTENTIONS:
      raise ValueError(f"attention must be one of {ATTENTIONS}; got {self.attention!r}")
    if len(shape) != 5:
      raise ValueError(f"TimeSformer expects videos [B,T,H,W,C]; got shape {tuple(shape)}")
    _, t, h, w, c = shape
    if c != self.in_channels:
      raise ValueError(f"TimeSformer expects {self.in_channels} input channels; got shape {tuple(shape)}")
    if t < 1:
      raise ValueError(f"a clip needs at least one frame; got shape {tuple(shape)}")
    if h % self.patch_size or w % self.patch_size:
      raise ValueError(f"frame size {(h, w)} is not divisible by patch size {self.patch_size}")
    if self.width % self.num_heads:
      raise ValueError(f"width {self.width} is not divisible by num_heads {self.num_heads}")

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """`[B,T,H,W,C] -> [B,K]` float32 logits (or `[B,D]` features when num_classes == 0)."""
    self.check_input(x.shape)
    b, t, h, w, c = x.shape
    p, d = self.patch_size, self.width
    x = PatchEmbedding((p, p), d, dtype=self.dtype, param_dtype=self.param_dtype,
                       name="embedding")(x.astype(self.dtype).reshape(b * t, h, w, c))  # [B*T,H',W',D]
    x = ClassToken(param_dtype=self.param_dtype, name="cls")(x.reshape(b * t, -1, d))  # [B*T,1+S,D]
    x = TimeSformerEncoder(attention=self.attention, num_frames=self.num_frames, depth=self.depth, name="Transformer",
                           **self.transformer_options())(x.reshape(b, t, -1, d), (h // p, w // p),
                                                         deterministic=not train)  # [B,D]
    if not self.num_classes:
      return x.astype(jnp.float32)
    x = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, dtype=self.dtype,
                 param_dtype=self.param_dtype, name="head")(x)
    return x.astype(jnp.float32)


# The paper's Table 1 models: ViT-B/16 on 8 frames of 224 x 224.
VARIANTS = {f"timesformer_b16_{a}": dict(vit.SIZES["b"], patch_size=16, num_frames=8, attention=a)
            for a in ATTENTIONS}

MODELS = {name: functools.partial(TimeSformer, **kwargs) for name, kwargs in VARIANTS.items()}

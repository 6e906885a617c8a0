"""ViViT's factorised encoders, Models 3 ("fsa") and 4 ("fdp"), on a token grid `[B,T',S,D]` (the models: vivit.py).

Parameter names are the ViT block's (`LayerNorm_0`, `MultiHeadDotProductAttention_1`, `LayerNorm_2`, `MlpBlock_3`)
plus Model 3's `LayerNorm_time` and `MultiHeadDotProductAttention_time`, so `checkpoints.inflate_vit.vivit_from_vit`
maps them.
"""
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_video.layers.attention import Implementation, MultiHeadAttention, dot_product_attention
from vit_video.layers.embed import AddPositionEmbedding
from vit_video.layers.mlp import DropPath, MlpBlock
from vit_video.layers.remat import maybe_remat
from vit_video.models.vit import TransformerOptions


class FactorisedDotProductAttention(nn.Module):
  """Model 4's attention on a token grid: `[B,T',S,D] -> [B,T',S,D]`.

  Queries, keys and values as in `MultiHeadAttention` (same parameters `query`, `key`, `value` `[D,h,d]` and
  `out` `[h,d,D]`, so ViT weights load unchanged). Heads 0..h/2-1 attend over the S tokens of their temporal
  index, heads h/2..h-1 over the T' tokens of their spatial position; out = concat(heads) W_o. With `sow_weights`,
  the two groups' weights go to 'intermediates' as `spatial_attention_weights` `[B*T',h/2,S,S]` and
  `temporal_attention_weights` `[B*S,h/2,T',T']`.
  """
  num_heads: int
  dropout_rate: float = 0.0
  implementation: Implementation = "auto"
  sow_weights: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    b, nt, ns, d = x.shape
    h = self.num_heads
    if h % 2 or d % h:
      raise ValueError(f"factorised dot-product attention needs an even head count dividing the width; "
                       f"got num_heads {h}, width {d}")
    hd, half = d // h, h // 2
    dense = lambda name: nn.DenseGeneral(  # noqa: E731
        (h, hd), kernel_init=nn.initializers.xavier_uniform(), dtype=self.dtype, param_dtype=self.param_dtype,
        name=name)
    q, k, v = dense("query")(x), dense("key")(x), dense("value")(x)  # [B,T',S,h,d] each
    use_dropout = not deterministic and self.dropout_rate > 0
    rngs = jax.random.split(self.make_rng("dropout")) if use_dropout else (None, None)

    def attend(q, k, v, rng, axis):  # [B',N,h/2,d] -> [B',N,h/2,d]
      implementation = self.implementation  # the fallbacks of MultiHeadAttention
      if self.sow_weights or (use_dropout and implementation == "fused"):
        implementation = "einsum"
      out, weights = dot_product_attention(q, k, v, dropout_rate=self.dropout_rate, dropout_rng=rng,
                                           implementation=implementation, training=not deterministic)
      if self.sow_weights:
        self.sow("intermediates", f"{axis}_attention_weights", weights)
      return out

    space = lambda a: a[..., :half, :].reshape(b * nt, ns, half, hd)  # [B*T',S,h/2,d]  # noqa: E731
    spatial = attend(space(q), space(k), space(v), rngs[0], "spatial").reshape(b, nt, ns, half, hd)  # [B,T',S,h/2,d]
    # [B,T',S,h/2,d] -> [B,S,T',h/2,d] -> [B*S,T',h/2,d]
    time = lambda a: a[..., half:, :].transpose(0, 2, 1, 3, 4).reshape(b * ns, nt, half, hd)  # noqa: E731
    temporal = attend(time(q), time(k), time(v), rngs[1], "temporal")
    temporal = temporal.reshape(b, ns, nt, half, hd).transpose(0, 2, 1, 3, 4)  # [B,T',S,h/2,d]
    out = jnp.concatenate([spatial, temporal], axis=-2)  # [B,T',S,h,d]
    return nn.DenseGeneral(d, axis=(-2, -1), kernel_init=nn.initializers.xavier_uniform(), dtype=self.dtype,
                           param_dtype=self.param_dtype, name="out")(out)  # [B,T',S,D]


class FactorisedBlock(nn.Module):
  """Model 3 ("fsa") or Model 4 ("fdp") pre-norm block on a token grid: `[B,T',S,D] -> [B,T',S,D]`.

  fsa: y = x + MSA_space(LN(x)); z = y + MSA_time(LN(y)); out = z + MLP(LN(z)).
  fdp: y = x + FDPA(LN(x)); out = y + MLP(LN(y)).
  `drop_path_rate` is this block's stochastic-depth rate, as in `vit.EncoderBlock`.
  """
  variant: Literal["fsa", "fdp"]
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
  def __call__(self, x: jax.Array, drop_path_rate: float | jax.Array) -> jax.Array:
    b, nt, ns, d = x.shape
    det = self.deterministic
    norm = lambda name: nn.LayerNorm(  # noqa: E731
        epsilon=1e-6, dtype=self.dtype, param_dtype=self.param_dtype, name=name)
    mha = lambda name: MultiHeadAttention(  # noqa: E731
        num_heads=self.num_heads, dropout_rate=self.attention_dropout_rate,
        implementation=self.attention_implementation, sow_weights=self.sow_attention_weights, dtype=self.dtype,
        param_dtype=self.param_dtype, name=name)

    def residual(x, y):
      y = nn.Dropout(self.dropout_rate)(y, deterministic=det)
      return x + DropPath()(y, drop_path_rate, deterministic=det)

    if self.variant == "fsa":
      y = norm("LayerNorm_0")(x).reshape(b * nt, ns, d)  # [B*T',S,D]: one temporal index per row
      y = mha("MultiHeadDotProductAttention_1")(y, deterministic=det)
      x = residual(x, y.reshape(b, nt, ns, d))
      y = norm("LayerNorm_time")(x).transpose(0, 2, 1, 3).reshape(b * ns, nt, d)  # [B*S,T',D]: one position
      y = mha("MultiHeadDotProductAttention_time")(y, deterministic=det)
      x = residual(x, y.reshape(b, ns, nt, d).transpose(0, 2, 1, 3))  # [B,T',S,D]
    elif self.variant == "fdp":
      attention = FactorisedDotProductAttention(
          num_heads=self.num_heads, dropout_rate=self.attention_dropout_rate,
          implementation=self.attention_implementation, sow_weights=self.sow_attention_weights, dtype=self.dtype,
          param_dtype=self.param_dtype, name="MultiHeadDotProductAttention_1")
      y = attention(norm("LayerNorm_0")(x), deterministic=det)
      x = residual(x, y)
    else:
      raise ValueError(f"FactorisedBlock variant must be 'fsa' or 'fdp'; got {self.variant!r}")
    y = MlpBlock(mlp_dim=self.mlp_dim, dropout_rate=self.dropout_rate, approximate_gelu=self.approximate_gelu,
                 dtype=self.dtype, param_dtype=self.param_dtype, name="MlpBlock_3")(norm("LayerNorm_2")(x),
                                                                                    deterministic=det)
    return x + DropPath()(y, drop_path_rate, deterministic=det)


class FactorisedEncoder(TransformerOptions):
  """`vit.Encoder` with factorised blocks: position embedding `[1,T'S,D]`, `depth` `FactorisedBlock`s and a final
  LayerNorm, `[B,T',S,D] -> [B,T',S,D]`. Stochastic depth rate grows linearly to `stochastic_depth_rate`."""
  variant: Literal["fsa", "fdp"]
  depth: int

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    b, nt, ns, d = x.shape
    x = AddPositionEmbedding(param_dtype=self.param_dtype, name="posembed_input")(x.reshape(b, nt * ns, d))
    x = x.reshape(b, nt, ns, d)  # [B,T'S,D] -> [B,T',S,D]
    x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
    rates = np.linspace(0.0, self.stochastic_depth_rate, self.depth) if self.depth > 1 else np.zeros(self.depth)
    block = maybe_remat(FactorisedBlock, self.remat, self.remat_policy, static_argnums=(2,))  # drop_path_rate
    for i, rate in enumerate(rates):
      x = block(variant=self.variant, deterministic=deterministic, name=f"encoderblock_{i}", **self.block_options())(
          x, float(rate))
    return nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, param_dtype=self.param_dtype, name="encoder_norm")(x)

"""The transformer MLP block and stochastic depth (DropPath)."""
import flax.linen as nn
import jax
import jax.numpy as jnp


class MlpBlock(nn.Module):
  """Two-layer MLP: `Dense(mlp_dim) -> GELU -> dropout -> Dense(D_out) -> dropout`, `[..., D] -> [..., D_out]`.

  Attributes:
    mlp_dim: hidden width.
    out_dim: output width (default: input width).
    approximate_gelu: tanh approximation of GELU (vit_jax, big_vision) instead of the exact erf form (timm,
      the paper). Published weights work with either to within about 1e-3.
  """
  mlp_dim: int
  out_dim: int | None = None
  dropout_rate: float = 0.0
  approximate_gelu: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    dense = lambda n, name: nn.Dense(  # noqa: E731
        n, dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=nn.initializers.xavier_uniform(),
        bias_init=nn.initializers.normal(stddev=1e-6), name=name)
    y = dense(self.mlp_dim, "Dense_0")(x)
    y = nn.gelu(y, approximate=self.approximate_gelu)
    y = nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
    y = dense(self.out_dim or x.shape[-1], "Dense_1")(y)
    return nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)


def drop_path(x: jax.Array, rate: float | jax.Array, rng: jax.Array) -> jax.Array:
  """Stochastic depth (Huang et al. 2016): zeroes whole examples of a residual branch with probability `rate`
  and scales the others by 1/(1-rate), so the expectation is unchanged. `[B,...] -> [B,...]`.

  `rate` may be a traced scalar (a per-layer rate fed through `nn.scan`).
  """
  keep = jax.random.bernoulli(rng, 1.0 - rate, (x.shape[0],) + (1,) * (x.ndim - 1))
  scale = (1.0 / (1.0 - jnp.asarray(rate, jnp.float32))).astype(x.dtype)
  return jnp.where(keep, x * scale, jnp.zeros((), x.dtype))


class DropPath(nn.Module):
  """`drop_path` as a module drawing from the 'dropout' rng stream: `[B,...] -> [B,...]`.

  The rate is given per call, so a stack of blocks can grow it linearly with depth.
  """

  @nn.compact
  def __call__(self, x: jax.Array, rate: float | jax.Array, *, deterministic: bool) -> jax.Array:
    if deterministic or (isinstance(rate, float) and rate == 0.0):
      return x
    return drop_path(x, jnp.asarray(rate, jnp.float32), self.make_rng("dropout"))

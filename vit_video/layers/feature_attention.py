"""Self-attention over all positions of a CNN feature map: SAGAN (Zhang et al. 2019), non-local (Wang et al. 2018).

For x [B,...,C] with N = prod(...) positions (H*W for images, T*H*W for videos), 1x1 convolutions give

  q_i = W_q x_i + b_q  [C_qk],   k_j = W_k x_j + b_k  [C_qk],   v_j = W_v x_j + b_v  [C_v]

with C_qk = C // qk_reduction and C_v = C // value_reduction, then

  embedded_gaussian:  f_ij = softmax_j(q_i^T k_j)        (SAGAN; the non-local paper's embedded Gaussian)
  dot_product:        f_ij = q_i^T k_j / N               (the non-local paper's dot-product version)

  y_i   = sum_j f_ij v_j                                  [C_v]
  out_i = x_i + gamma * (W_o y_i + b_o)                   [C]

`gamma` is a learnable scalar initialised to 0 (SAGAN), so the block is the identity at initialisation and
can be dropped into a pretrained network (the non-local paper zero-initialises a BatchNorm scale instead).
A 1x1 convolution is a Dense layer on the channel axis; the kernels are stored as [C_in, C_out]
(reshape to [1,...,1,C_in,C_out] to exchange with a convolution checkpoint).
"""
from typing import Any

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
MODES = ("embedded_gaussian", "dot_product")


class FeatureSelfAttention(nn.Module):
  """Residual self-attention over all positions of a [B,...,C] feature map (any rank >= 4)."""

  qk_reduction: int = 8  # C_qk = C // qk_reduction channels for queries and keys (SAGAN: 8).
  value_reduction: int = 2  # C_v = C // value_reduction channels for values (non-local: 2; SAGAN v1: 1).
  mode: str = "embedded_gaussian"  # or "dot_product"; see the module docstring.
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[B,H,W,C] -> [B,H,W,C], or [B,T,H,W,C] -> [B,T,H,W,C]; out_i = x_i + gamma * W_o sum_j f_ij v_j."""
    if self.mode not in MODES:
      raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
    if x.ndim < 4:
      raise ValueError(f"expected a feature map [B,...,C] of rank >= 4, got shape {x.shape}")
    c = x.shape[-1]
    c_qk, c_v = c // self.qk_reduction, c // self.value_reduction
    if c_qk < 1 or c_v < 1:
      raise ValueError(f"channels {c} too few for qk_reduction {self.qk_reduction} "
                       f"and value_reduction {self.value_reduction}")
    conv1x1 = lambda features, name: nn.Dense(
        features, dtype=self.dtype, param_dtype=self.param_dtype, name=name)

    tokens = einops.rearrange(x, "b ... c -> b (...) c")  # [B,...,C] -> [B,N,C]
    n = tokens.shape[1]
    q = conv1x1(c_qk, "query")(tokens)  # [B,N,C_qk]
    k = conv1x1(c_qk, "key")(tokens)  # [B,N,C_qk]
    v = conv1x1(c_v, "value")(tokens)  # [B,N,C_v]
    logits = jnp.einsum("bic,bjc->bij", q, k)  # [B,N,N]
    if self.mode == "embedded_gaussian":
      f = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
    else:
      f = logits / n
    y = jnp.einsum("bij,bjc->bic", f, v)  # [B,N,C_v]
    o = conv1x1(c, "out")(y).reshape(x.shape)  # [B,N,C] -> [B,...,C]
    gamma = self.param("gamma", nn.initializers.zeros, (), self.param_dtype)
    return x.astype(self.dtype) + gamma.astype(self.dtype) * o

"""Multi-head scaled dot-product attention (Vaswani et al. 2017).

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d) + bias, where mask) V

with Q = X_q W_q, K = X_kv W_k, V = X_kv W_v split into `h` heads of width `d = D / h`, and the heads
concatenated and projected back by W_o.

Masks are boolean and broadcast to [B,h,Nq,Nk]; True means "may attend". A masked key gets exactly zero
weight. A query whose keys are all masked attends to nothing: its weights are all zero and its output is 0
(einsum and chunked paths); the fused path leaves such rows undefined, so give every query at least one key there.

Three implementations give the same outputs (to float rounding):
  "einsum"  the weight matrix `[B,h,Nq,Nk]` is computed (and can be returned, sown, or dropped out): O(N^2) memory.
  "fused"   `jax.nn.dot_product_attention` (cuDNN flash attention on GPU where it applies).
  "chunked" queries and keys in chunks with an online softmax (layers/chunked_attention.py): O(N) memory on any
            backend, for long clips; no attention dropout.
and "auto", every model's default, picks one: "einsum" under attention dropout; else "chunked" from
AUTO_CHUNKED_KEYS keys on; else, for inference, "fused" without a mask, and "einsum" with one or when training.
Measured on the 2-core CPU
(benchmarks/vs_pytorch.py, README "Speed against PyTorch"): ViViT-B Model 1 on a 16-frame clip (1,569 tokens)
trains in 11.6 s at a 3.8 GiB peak on the chunked path against 13.2-16.5 s and 7.4 GiB on the einsum one (at 785
tokens both take the same time, benchmarks/long_clips.py); ViT-B/16's forward pass (batch 8) takes 1.84 s on the
fused path against 2.22 s on the einsum one, where XLA fuses the softmax into the logits' product and runs it at a
fraction of its matmul rate; ViT-B/16's train step took 6.5 s on the fused path against 6.2 s on the einsum one
(two runs of the benchmark).
"""
from typing import Literal, get_args

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_video.layers.chunked_attention import chunked_dot_product_attention

Implementation = Literal["auto", "einsum", "fused", "chunked"]
IMPLEMENTATIONS = get_args(Implementation)
AUTO_CHUNKED_KEYS = 1024  # "auto": the chunked path from this many keys on (without attention dropout).


def make_padding_mask(q_valid: jax.Array, kv_valid: jax.Array | None = None) -> jax.Array:
  """Mask from per-token validity: `[B,Nq]`, `[B,Nk]` bool -> `[B,1,Nq,Nk]` (True where both are valid)."""
  kv_valid = q_valid if kv_valid is None else kv_valid
  return q_valid[:, None, :, None] & kv_valid[:, None, None, :]


def make_causal_mask(n: int) -> jax.Array:
  """Causal mask `[1,1,N,N]`: query i may attend to keys j <= i."""
  return jnp.tril(jnp.ones((n, n), bool))[None, None]


def attention_weights_from_logits(logits: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """Softmax over the last axis in float32; masked entries get exactly zero weight.

  logits: `[..., Nq, Nk]`; mask: bool, broadcastable to logits. Returns float32 weights of logits' shape.
  """
  logits = logits.astype(jnp.float32)
  if mask is None:
    return jax.nn.softmax(logits, axis=-1)
  logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  return jnp.where(mask, jax.nn.softmax(logits, axis=-1), 0.0)


def dot_product_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    mask: jax.Array | None = None,
    bias: jax.Array | None = None,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
    implementation: Implementation = "auto",
    training: bool = False,
) -> tuple[jax.Array, jax.Array | None]:
  """Scaled dot-product attention over heads.

  softmax(q k^T / sqrt(d) + bias, where mask) v, per head.

  Args:
    q: `[B,Nq,h,d]`; k: `[B,Nk,h,d]`; v: `[B,Nk,h,dv]`.
    mask: bool, broadcastable to `[B,h,Nq,Nk]`; True = attend.
    bias: additive logits bias, broadcastable to `[B,h,Nq,Nk]` (e.g. relative position bias).
    dropout_rate, dropout_rng: dropout on the attention weights (einsum path only), applied when a rng is given.
    implementation: "einsum" computes and returns the weights `[B,h,Nq,Nk]`; "fused" calls
      `jax.nn.dot_product_attention` (cuDNN flash attention on GPU where it applies) and "chunked"
      `chunked_dot_product_attention` (default chunks); both return None weights. "auto": see the module
      docstring; `training` tells it a train step is being traced (short inputs then take the einsum path).

  Returns:
    (`[B,Nq,h,dv]` in v's dtype, weights or None).
  """
  if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
    raise ValueError(f"q, k, v must be [B,N,h,d]; got shapes {q.shape}, {k.shape}, {v.shape}")
  if q.shape[-1] != k.shape[-1] or k.shape[1] != v.shape[1]:
    raise ValueError(f"q/k head widths or k/v lengths differ: q {q.shape}, k {k.shape}, v {v.shape}")
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"unknown attention implementation {implementation!r}; expected one of {IMPLEMENTATIONS}")
  if implementation == "auto":
    dropout = dropout_rng is not None and dropout_rate > 0
    if dropout:
      implementation = "einsum"
    elif k.shape[1] >= AUTO_CHUNKED_KEYS:
      implementation = "chunked"
    else:  # fused for inference where its semantics are einsum's: no mask (it leaves empty rows undefined)
      implementation = "fused" if not training and mask is None and v.shape[-1] == q.shape[-1] else "einsum"
  if implementation != "einsum" and dropout_rng is not None and dropout_rate > 0:
    raise ValueError(f"the {implementation} attention path has no attention dropout; set the attention dropout "
                     f"rate to 0 or use implementation='einsum'")
  if implementation == "chunked":
    return chunked_dot_product_attention(q, k, v, mask=mask, bias=bias), None
  if implementation == "fused":
    if v.shape[-1] != q.shape[-1]:
      raise ValueError(f"the fused attention path needs equal q and v head widths; got {q.shape}, {v.shape}")
    out = jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask)
    return out, None
  q = q / jnp.sqrt(q.shape[-1]).astype(q.dtype)
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k)  # [B,h,Nq,Nk]
  if bias is not None:
    logits = logits + bias
  weights = attention_weights_from_logits(logits, mask)
  if dropout_rng is not None and dropout_rate > 0:
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
    weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0)
  out = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(v.dtype), v)  # [B,Nq,h,dv]
  return out, weights


class MultiHeadAttention(nn.Module):
  """Multi-head attention with query/key/value/out projections (flax / vit_jax parameter layout).

  Parameters: `query`, `key`, `value` kernels `[D, h, d]` and `out` kernel `[h, d, D_out]`, each with a bias,
  so published ViT checkpoints map one to one.

  Attributes:
    num_heads: number of heads h.
    qkv_features: total projection width h*d (default: input width D).
    out_features: output width (default: input width D).
    dropout_rate: dropout on the attention weights during training.
    implementation: "auto" (by input and mode, see the module docstring), "einsum" (exposes weights), "fused"
      (`jax.nn.dot_product_attention`) or "chunked" (O(N) memory, see `chunked_dot_product_attention`). The einsum
      path is used whenever weights are sown, and by "fused" when attention dropout is active ("chunked" then
      raises: it exists to avoid the weight matrix).
    sow_weights: store weights `[B,h,Nq,Nk]` in the 'intermediates' collection as `attention_weights`.
  """
  num_heads: int
  qkv_features: int | None = None
  out_features: int | None = None
  dropout_rate: float = 0.0
  use_bias: bool = True
  implementation: Implementation = "auto"
  sow_weights: bool = False
  kernel_init: nn.initializers.Initializer = nn.initializers.xavier_uniform()
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs_q: jax.Array, inputs_kv: jax.Array | None = None, *, mask: jax.Array | None = None,
               bias: jax.Array | None = None, deterministic: bool) -> jax.Array:
    """`[B,Nq,D]`, optional `[B,Nk,D_kv]` (self-attention when None) -> `[B,Nq,D_out]`."""
    inputs_kv = inputs_q if inputs_kv is None else inputs_kv
    features = self.qkv_features or inputs_q.shape[-1]
    if features % self.num_heads:
      raise ValueError(f"attention width {features} is not divisible by num_heads {self.num_heads}")
    head_dim = features // self.num_heads
    dense = lambda name: nn.DenseGeneral(  # noqa: E731
        (self.num_heads, head_dim), use_bias=self.use_bias, kernel_init=self.kernel_init,
        dtype=self.dtype, param_dtype=self.param_dtype, name=name)
    q = dense("query")(inputs_q)  # [B,Nq,h,d]
    k = dense("key")(inputs_kv)  # [B,Nk,h,d]
    v = dense("value")(inputs_kv)  # [B,Nk,h,d]
    use_dropout = not deterministic and self.dropout_rate > 0
    implementation = self.implementation
    if self.sow_weights or (use_dropout and implementation == "fused"):
      implementation = "einsum"
    out, weights = dot_product_attention(
        q, k, v, mask=mask, bias=bias, dropout_rate=self.dropout_rate,
        dropout_rng=self.make_rng("dropout") if use_dropout else None, implementation=implementation,
        training=not deterministic)
    if self.sow_weights:
      self.sow("intermediates", "attention_weights", weights)
    return nn.DenseGeneral(  # [B,Nq,h,d] -> [B,Nq,D_out]
        self.out_features or inputs_q.shape[-1], axis=(-2, -1), use_bias=self.use_bias,
        kernel_init=self.kernel_init, dtype=self.dtype, param_dtype=self.param_dtype, name="out")(out)

"""Memory-efficient attention: queries in chunks, keys in chunks with an online softmax (Rabe & Staats 2021,
"Self-attention does not need O(n^2) memory"; the same recurrence as FlashAttention, Dao et al. 2022).

For one chunk of queries, the keys are visited a chunk at a time while three running quantities are kept per
query and head: the largest logit so far m, the softmax denominator l = sum exp(s - m), and the unnormalised
output a = sum exp(s - m) v. A new key chunk with logits s' updates them as

    m' = max(m, max s');  l' = l exp(m - m') + sum exp(s' - m');  a' = a exp(m - m') + exp(s' - m') v',

and the output is a / l: the same numbers as softmax(s) v up to float rounding. Each key step runs under
`jax.checkpoint`, so the backward pass recomputes its `[B,h,Cq,Ck]` logits instead of storing them: memory is
O(N) in the sequence length instead of the O(N^2) of the full weight matrix, for the cost of recomputing the
logits once more in the backward pass.
"""
import jax
import jax.numpy as jnp
from jax import lax

_NEG = jnp.finfo(jnp.float32).min


def _as_4d(a: jax.Array | None, name: str, nq: int, nk: int) -> jax.Array | None:
  """A mask or bias broadcastable to `[B,h,Nq,Nk]`, given exactly 4 axes (size-1 axes kept)."""
  if a is None:
    return None
  if not 2 <= a.ndim <= 4 or a.shape[-2] not in (1, nq) or a.shape[-1] not in (1, nk):
    raise ValueError(f"{name} of shape {a.shape} does not broadcast to [B,h,Nq,Nk] with Nq {nq}, Nk {nk}")
  return a.reshape((1,) * (4 - a.ndim) + a.shape)


def _pad_axis(a: jax.Array, axis: int, pad: int, value) -> jax.Array:
  """Pads a full-length (not size-1) axis of a mask or bias at its end."""
  if pad == 0 or a.shape[axis] == 1:
    return a
  widths = [(0, 0)] * a.ndim
  widths[axis] = (0, pad)
  return jnp.pad(a, widths, constant_values=value)


def _block(a: jax.Array, q_start, q_size: int, k_start, k_size: int) -> jax.Array:
  """The `[B|1, h|1, Cq|1, Ck|1]` block of a 4-axis mask or bias at (q_start, k_start)."""
  if a.shape[2] != 1:
    a = lax.dynamic_slice_in_dim(a, q_start, q_size, axis=2)
  if a.shape[3] != 1:
    a = lax.dynamic_slice_in_dim(a, k_start, k_size, axis=3)
  return a


def chunked_dot_product_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    mask: jax.Array | None = None,
    bias: jax.Array | None = None,
    query_chunk_size: int = 1024,
    key_chunk_size: int = 4096,
) -> jax.Array:
  """softmax(q k^T / sqrt(d) + bias, where mask) v per head, never holding more than `[B,h,Cq,Ck]` logits.

  Args:
    q: `[B,Nq,h,d]`; k: `[B,Nk,h,d]`; v: `[B,Nk,h,dv]`.
    mask: bool, broadcastable to `[B,h,Nq,Nk]`; True = attend. A query with no key gets output 0.
    bias: additive logits bias, broadcastable to `[B,h,Nq,Nk]`.
    query_chunk_size, key_chunk_size: the largest Cq, Ck (the defaults are Rabe & Staats's). A length N is cut
      into ceil(N / C) chunks of equal size ceil(N / chunks), the last padded (padded keys are masked, padded
      queries dropped), so padding stays below one token per chunk.

  Returns:
    `[B,Nq,h,dv]` in v's dtype (accumulated in float32).
  """
  if min(query_chunk_size, key_chunk_size) < 1:
    raise ValueError(f"chunk sizes must be positive; got query {query_chunk_size}, key {key_chunk_size}")
  b, nq, h, d = q.shape
  nk, dv = k.shape[1], v.shape[-1]
  cq, ck = (-(-n // -(-n // c)) for n, c in ((nq, query_chunk_size), (nk, key_chunk_size)))  # balanced chunks
  pad_q, pad_k = -nq % cq, -nk % ck
  mask = _as_4d(mask, "mask", nq, nk)
  bias = _as_4d(bias, "bias", nq, nk)
  q = jnp.pad(q / jnp.sqrt(d).astype(q.dtype), ((0, 0), (0, pad_q), (0, 0), (0, 0)))  # [B,Nq',h,d]
  k = jnp.pad(k, ((0, 0), (0, pad_k), (0, 0), (0, 0)))  # [B,Nk',h,d]
  v = jnp.pad(v, ((0, 0), (0, pad_k), (0, 0), (0, 0)))  # [B,Nk',h,dv]
  key_valid = jnp.arange(nk + pad_k) < nk  # [Nk']
  if mask is not None:
    mask = _pad_axis(_pad_axis(mask, 2, pad_q, True), 3, pad_k, False)
  if bias is not None:
    bias = _pad_axis(_pad_axis(bias, 2, pad_q, 0), 3, pad_k, 0)

  def query_chunk(q_start: jax.Array) -> jax.Array:  # -> [B,Cq,h,dv]
    q_chunk = lax.dynamic_slice_in_dim(q, q_start, cq, axis=1)  # [B,Cq,h,d]

    @jax.checkpoint
    def key_step(carry, k_start):
      m, l, acc = carry  # [B,h,Cq], [B,h,Cq], [B,Cq,h,dv] float32
      k_chunk = lax.dynamic_slice_in_dim(k, k_start, ck, axis=1)  # [B,Ck,h,d]
      v_chunk = lax.dynamic_slice_in_dim(v, k_start, ck, axis=1)  # [B,Ck,h,dv]
      s = jnp.einsum("bqhd,bkhd->bhqk", q_chunk, k_chunk, preferred_element_type=jnp.float32)  # [B,h,Cq,Ck]
      if bias is not None:
        s = s + _block(bias, q_start, cq, k_start, ck).astype(jnp.float32)
      valid = lax.dynamic_slice_in_dim(key_valid, k_start, ck)[None, None, None, :]  # [1,1,1,Ck]
      if mask is not None:
        valid = valid & _block(mask, q_start, cq, k_start, ck)
      s = jnp.where(valid, s, _NEG)
      m_new = lax.stop_gradient(jnp.maximum(m, s.max(axis=-1)))  # the result does not depend on m
      p = jnp.where(valid, jnp.exp(s - m_new[..., None]), 0.0)  # [B,h,Cq,Ck]; masked keys exactly 0
      correction = jnp.exp(m - m_new)  # [B,h,Cq]
      l = l * correction + p.sum(axis=-1)
      pv = jnp.einsum("bhqk,bkhd->bqhd", p.astype(v.dtype), v_chunk,
                      preferred_element_type=jnp.float32)  # [B,Cq,h,dv]
      acc = acc * correction.transpose(0, 2, 1)[..., None] + pv
      return (m_new, l, acc), None

    init = (jnp.full((b, h, cq), _NEG, jnp.float32), jnp.zeros((b, h, cq), jnp.float32),
            jnp.zeros((b, cq, h, dv), jnp.float32))
    (_, l, acc), _ = lax.scan(key_step, init, jnp.arange(0, nk + pad_k, ck))
    l = l.transpose(0, 2, 1)[..., None]  # [B,h,Cq] -> [B,Cq,h,1]
    return jnp.where(l > 0, acc / jnp.where(l > 0, l, 1.0), 0.0)

  out = lax.map(query_chunk, jnp.arange(0, nq + pad_q, cq))  # [Nq'/Cq,B,Cq,h,dv]
  out = out.transpose(1, 0, 2, 3, 4).reshape(b, nq + pad_q, h, dv)  # [B,Nq',h,dv]
  return out[:, :nq].astype(v.dtype)

"""Chunked (online-softmax) attention equals the einsum path, in values and gradients, and holds less memory."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_video.layers import attention
from vit_video.layers.chunked_attention import chunked_dot_product_attention

B, NQ, NK, H, D, DV = 2, 13, 11, 3, 4, 5


def _qkv(seed: int = 0, nq: int = NQ, nk: int = NK):
  k = jax.random.split(jax.random.key(seed), 3)
  return (jax.random.normal(k[0], (B, nq, H, D)), 2 * jax.random.normal(k[1], (B, nk, H, D)),
          jax.random.normal(k[2], (B, nk, H, DV)))


def _einsum(q, k, v, **kw):
  return attention.dot_product_attention(q, k, v, **kw)[0]


@pytest.mark.parametrize("chunks", [(4, 3), (1, 1), (13, 11), (5, 100), (1024, 4096), (12, 10)])
def test_equals_einsum_for_chunks_that_do_not_divide(chunks):
  q, k, v = _qkv()
  out = chunked_dot_product_attention(q, k, v, query_chunk_size=chunks[0], key_chunk_size=chunks[1])
  assert out.shape == (B, NQ, H, DV)
  np.testing.assert_allclose(out, _einsum(q, k, v), rtol=1e-5, atol=1e-6)


def test_masks_and_bias_of_every_broadcast_shape():
  q, k, v = _qkv(1)
  kr = jax.random.split(jax.random.key(2), 4)
  cases = {
      "padding": attention.make_padding_mask(jnp.arange(NQ)[None] < jnp.array([[NQ], [7]]),
                                             jnp.arange(NK)[None] < jnp.array([[NK], [4]])),  # [B,1,Nq,Nk]
      "per_key": jax.random.bernoulli(kr[0], 0.7, (B, 1, 1, NK)),
      "full": jax.random.bernoulli(kr[1], 0.6, (B, H, NQ, NK)),
      "2d": jax.random.bernoulli(kr[2], 0.6, (NQ, NK)),
  }
  bias = 3 * jax.random.normal(kr[3], (H, NQ, NK))  # broadcasts over B
  for name, mask in cases.items():
    for b in (None, bias):
      want = _einsum(q, k, v, mask=mask, bias=b)
      got = chunked_dot_product_attention(q, k, v, mask=mask, bias=b, query_chunk_size=4, key_chunk_size=3)
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=name)


def test_a_query_with_no_key_outputs_zero_and_masked_keys_have_no_effect():
  q, k, v = _qkv(3)
  mask = jnp.ones((1, 1, NQ, NK), bool).at[:, :, 5].set(False).at[:, :, :, 8:].set(False)
  out = chunked_dot_product_attention(q, k, v, mask=mask, query_chunk_size=4, key_chunk_size=3)
  np.testing.assert_array_equal(out[:, 5], 0.0)
  changed = v.at[:, 8:].set(1e3)  # values of masked keys
  np.testing.assert_array_equal(
      chunked_dot_product_attention(q, k, changed, mask=mask, query_chunk_size=4, key_chunk_size=3), out)
  np.testing.assert_allclose(out, _einsum(q, k, v, mask=mask), rtol=1e-5, atol=1e-6)


def test_gradients_equal_einsum():
  q, k, v = _qkv(4)
  bias = jax.random.normal(jax.random.key(5), (1, H, NQ, NK))
  mask = jax.random.bernoulli(jax.random.key(6), 0.8, (B, 1, NQ, NK)).at[..., 0].set(True)
  mask = mask.at[1, :, 3].set(False)  # a query with no key: output 0, gradients 0
  weights = jax.random.normal(jax.random.key(7), (B, NQ, H, DV))

  def loss(fn):
    return lambda q, k, v, bias: jnp.sum(weights * fn(q, k, v, mask=mask, bias=bias))

  chunked = lambda *a, **kw: chunked_dot_product_attention(*a, **kw, query_chunk_size=4, key_chunk_size=3)  # noqa: E731
  got = jax.grad(loss(chunked), argnums=(0, 1, 2, 3))(q, k, v, bias)
  want = jax.grad(loss(_einsum), argnums=(0, 1, 2, 3))(q, k, v, bias)
  for name, g, w in zip("qkvb", got, want):
    assert np.all(np.isfinite(g)), name
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=name)
  np.testing.assert_array_equal(got[0][1, 3], 0.0)


def test_bfloat16_inputs_accumulate_in_float32():
  """Logits near 250 whose differences are below bfloat16's spacing there (2): rounded logits would change the
  weights completely; accumulated in float32 they match the float32 computation on the same inputs."""
  rng = np.random.default_rng(8)
  base = np.ones((1, 1, 1, 4))
  k = jnp.asarray(base + 0.01 * rng.normal(size=(B, 41, H, 4)), jnp.bfloat16)
  q = jnp.asarray(125 * base + rng.normal(size=(B, 37, H, 4)), jnp.bfloat16)
  v = jnp.asarray(rng.normal(size=(B, 41, H, DV)), jnp.bfloat16)
  out = chunked_dot_product_attention(q, k, v, query_chunk_size=8, key_chunk_size=8)
  assert out.dtype == jnp.bfloat16
  want = _einsum(*(a.astype(jnp.float32) for a in (q, k, v)))
  np.testing.assert_allclose(out.astype(jnp.float32), want, atol=3e-2)


def test_backward_memory_is_below_one_weight_matrix():
  """XLA's buffer plan (not a timing): the einsum gradient holds [B,h,N,N] weights per call; chunked does not."""
  n, h, d = 2048, 2, 16
  q = jax.ShapeDtypeStruct((1, n, h, d), jnp.float32)

  def temp_bytes(fn):
    grad = jax.jit(jax.grad(lambda q, k, v: fn(q, k, v).sum(), argnums=(0, 1, 2)))
    return grad.lower(q, q, q).compile().memory_analysis().temp_size_in_bytes

  weight_matrix = h * n * n * 4
  dense = temp_bytes(_einsum)
  chunked = temp_bytes(lambda q, k, v: chunked_dot_product_attention(q, k, v, query_chunk_size=256,
                                                                     key_chunk_size=512))
  assert dense >= weight_matrix
  assert chunked < weight_matrix / 4, (chunked, dense)


def test_module_chunked_equals_einsum_and_rejects_attention_dropout():
  x = jax.random.normal(jax.random.key(9), (B, 7, 12))
  chunked = attention.MultiHeadAttention(num_heads=3, implementation="chunked")
  variables = chunked.init(jax.random.key(0), x, deterministic=True)
  want = attention.MultiHeadAttention(num_heads=3).apply(variables, x, deterministic=True)
  np.testing.assert_allclose(chunked.apply(variables, x, deterministic=True), want, rtol=1e-5, atol=1e-6)
  sown = attention.MultiHeadAttention(num_heads=3, implementation="chunked", sow_weights=True)
  out, state = sown.apply(variables, x, deterministic=True, mutable=["intermediates"])
  assert state["intermediates"]["attention_weights"][0].shape == (B, 3, 7, 7)  # sowing uses the einsum path
  with pytest.raises(ValueError, match="chunked attention path has no attention dropout"):
    attention.MultiHeadAttention(num_heads=3, implementation="chunked", dropout_rate=0.1).apply(
        variables, x, deterministic=False, rngs={"dropout": jax.random.key(1)})


def test_bad_input():
  q, k, v = _qkv()
  with pytest.raises(ValueError, match=r"mask of shape \(2, 1, 12, 11\) does not broadcast.*Nq 13"):
    chunked_dot_product_attention(q, k, v, mask=jnp.ones((B, 1, 12, NK), bool))
  with pytest.raises(ValueError, match=r"bias of shape \(11,\) does not broadcast"):
    chunked_dot_product_attention(q, k, v, bias=jnp.zeros((NK,)))
  with pytest.raises(ValueError, match="chunk sizes must be positive; got query 0"):
    chunked_dot_product_attention(q, k, v, query_chunk_size=0)
  with pytest.raises(ValueError, match="unknown attention implementation 'flash'"):
    attention.dot_product_attention(q, k, v, implementation="flash")

"""Multi-head attention: masks, both implementations, sown weights, dropout."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_video.layers import attention

B, NQ, NK, H, D = 2, 5, 7, 3, 4


def _qkv(seed=0):
  ks = jax.random.split(jax.random.key(seed), 3)
  return (jax.random.normal(ks[0], (B, NQ, H, D)), jax.random.normal(ks[1], (B, NK, H, D)),
          jax.random.normal(ks[2], (B, NK, H, D + 2)))


def _reference(q, k, v, mask=None):
  """Per-example, per-head loop in numpy: softmax(q k^T / sqrt(d)) v."""
  q, k, v = map(np.asarray, (q, k, v))
  out = np.zeros(q.shape[:3] + (v.shape[-1],))
  for b in range(q.shape[0]):
    for h in range(q.shape[2]):
      logits = q[b, :, h] @ k[b, :, h].T / np.sqrt(q.shape[-1])
      if mask is not None:
        logits = np.where(np.broadcast_to(mask, (B, H, NQ, NK))[b, h], logits, -np.inf)
      w = np.exp(logits - logits.max(-1, keepdims=True))
      out[b, :, h] = (w / w.sum(-1, keepdims=True)) @ v[b, :, h]
  return out


def test_einsum_matches_reference_and_fused():
  q, k, v = _qkv()
  out, w = attention.dot_product_attention(q, k, v)
  np.testing.assert_allclose(out, _reference(q, k, v), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-6)
  with pytest.raises(ValueError, match="equal q and v head widths"):
    attention.dot_product_attention(q, k, v, implementation="fused")
  v = v[..., :D]
  fused, none = attention.dot_product_attention(q, k, v, implementation="fused")
  assert none is None
  np.testing.assert_allclose(fused, attention.dot_product_attention(q, k, v)[0], rtol=1e-5, atol=1e-5)


def test_all_true_mask_equals_no_mask():
  q, k, v = _qkv(1)
  full = jnp.ones((B, 1, NQ, NK), bool)
  v = v[..., :D]
  for impl in ("einsum", "fused"):
    a, _ = attention.dot_product_attention(q, k, v, implementation=impl)
    b, _ = attention.dot_product_attention(q, k, v, mask=full, implementation=impl)
    np.testing.assert_array_equal(a, b)


def test_masked_positions_get_zero_weight_and_match_reference():
  q, k, v = _qkv(2)
  kv_valid = jnp.array([[True] * 4 + [False] * 3, [True] * 6 + [False]])
  mask = attention.make_padding_mask(jnp.ones((B, NQ), bool), kv_valid)
  out, w = attention.dot_product_attention(q, k, v, mask=mask)
  assert w.shape == (B, H, NQ, NK)
  assert np.all(np.asarray(w)[0, :, :, 4:] == 0) and np.all(np.asarray(w)[1, :, :, 6:] == 0)
  np.testing.assert_allclose(out, _reference(q, k, v, mask), rtol=1e-5, atol=1e-5)
  fused, _ = attention.dot_product_attention(q, k, v[..., :D], mask=mask, implementation="fused")
  np.testing.assert_allclose(fused, attention.dot_product_attention(q, k, v[..., :D], mask=mask)[0], rtol=1e-5, atol=1e-5)
  # Changing a masked value changes nothing.
  v2 = v.at[0, 5].set(100.0)
  np.testing.assert_array_equal(attention.dot_product_attention(q, k, v2, mask=mask)[0], out)


def test_causal_mask_information_flow():
  n = 6
  x = jax.random.normal(jax.random.key(3), (1, n, 1, D))
  mask = attention.make_causal_mask(n)
  out, w = attention.dot_product_attention(x, x, x, mask=mask)
  assert np.all(np.triu(np.asarray(w)[0, 0], k=1) == 0)
  # Perturbing token 3 moves outputs 3.. only.
  moved = attention.dot_product_attention(x, x, x.at[0, 3].add(1.0), mask=mask)[0] - out
  assert np.all(np.abs(np.asarray(moved)[0, :3]) == 0) and np.all(np.abs(np.asarray(moved)[0, 3:]).sum(-1) > 0)


def test_fully_masked_query_attends_nothing():
  q, k, v = _qkv(4)
  mask = jnp.ones((B, 1, NQ, NK), bool).at[:, :, 2].set(False)
  out, w = attention.dot_product_attention(q, k, v, mask=mask)
  assert np.all(np.asarray(w)[:, :, 2] == 0) and np.all(np.asarray(out)[:, 2] == 0)


def test_module_sows_weights_and_dropout_only_in_training():
  mha = attention.MultiHeadAttention(num_heads=3, qkv_features=12, out_features=10, dropout_rate=0.5, sow_weights=True)
  x = jax.random.normal(jax.random.key(5), (B, NQ, 8))
  y = jax.random.normal(jax.random.key(6), (B, NK, 9))
  variables = mha.init(jax.random.key(0), x, y, deterministic=True)
  assert variables["params"]["query"]["kernel"].shape == (8, 3, 4)
  assert variables["params"]["key"]["kernel"].shape == (9, 3, 4)
  assert variables["params"]["out"]["kernel"].shape == (3, 4, 10)
  out, state = mha.apply(variables, x, y, deterministic=True, mutable=["intermediates"])
  (w,) = state["intermediates"]["attention_weights"]
  assert out.shape == (B, NQ, 10) and w.shape == (B, 3, NQ, NK)
  np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-6)
  # Deterministic calls agree; training calls with different dropout keys differ.
  np.testing.assert_array_equal(out, mha.apply(variables, x, y, deterministic=True, mutable=["intermediates"])[0])
  t1, _ = mha.apply(variables, x, y, deterministic=False, rngs={"dropout": jax.random.key(1)}, mutable=["intermediates"])
  t2, _ = mha.apply(variables, x, y, deterministic=False, rngs={"dropout": jax.random.key(2)}, mutable=["intermediates"])
  assert not np.allclose(t1, t2)


def test_module_fused_equals_einsum():
  x = jax.random.normal(jax.random.key(7), (B, NQ, 12))
  einsum = attention.MultiHeadAttention(num_heads=3)
  fused = attention.MultiHeadAttention(num_heads=3, implementation="fused")
  variables = einsum.init(jax.random.key(0), x, deterministic=True)
  np.testing.assert_allclose(fused.apply(variables, x, deterministic=True),
                             einsum.apply(variables, x, deterministic=True), rtol=1e-5, atol=1e-5)


def test_bf16_compute():
  mha = attention.MultiHeadAttention(num_heads=2, dtype=jnp.bfloat16)
  x = jnp.ones((B, NQ, 8))
  variables = mha.init(jax.random.key(0), x, deterministic=True)
  assert variables["params"]["query"]["kernel"].dtype == jnp.float32
  assert mha.apply(variables, x, deterministic=True).dtype == jnp.bfloat16


def test_bad_shapes_raise():
  with pytest.raises(ValueError, match="not divisible by num_heads 3"):
    attention.MultiHeadAttention(num_heads=3).init(jax.random.key(0), jnp.ones((1, 4, 8)), deterministic=True)
  q, k, v = _qkv()
  with pytest.raises(ValueError, match=r"\[B,N,h,d\]"):
    attention.dot_product_attention(q[0], k, v)
  with pytest.raises(ValueError, match="unknown attention implementation"):
    attention.dot_product_attention(q, k, v, implementation="flash")


@pytest.mark.parametrize("keys", [attention.AUTO_CHUNKED_KEYS - 1, attention.AUTO_CHUNKED_KEYS + 37])
def test_auto_is_fused_or_einsum_for_short_inputs_and_chunked_for_long(keys):
  """Below AUTO_CHUNKED_KEYS "auto" is the fused path for inference (einsum with a mask or in training: weights
  returned); from there on the chunked one; all with einsum's output; attention dropout keeps it on the einsum path
  at any length."""
  kq, kk, kv, kd = jax.random.split(jax.random.key(0), 4)
  q = jax.random.normal(kq, (1, 9, 2, 4))
  k, v = jax.random.normal(kk, (1, keys, 2, 4)), jax.random.normal(kv, (1, keys, 2, 4))
  out, weights = attention.dot_product_attention(q, k, v)
  expected, _ = attention.dot_product_attention(q, k, v, implementation="einsum")
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
  assert weights is None  # fused or chunked
  _, weights = attention.dot_product_attention(q, k, v, training=True)  # a train step: einsum unless long
  assert (weights is None) == (keys >= attention.AUTO_CHUNKED_KEYS)
  # A mask keeps short inputs on the einsum path (fused leaves fully masked rows undefined).
  mask = (jnp.arange(keys) < keys - 3)[None, None, None]
  out, weights = attention.dot_product_attention(q, k, v, mask=mask)
  np.testing.assert_allclose(out, attention.dot_product_attention(q, k, v, mask=mask, implementation="einsum")[0],
                             rtol=1e-5, atol=1e-6)
  assert (weights is None) == (keys >= attention.AUTO_CHUNKED_KEYS)
  _, dropped = attention.dot_product_attention(q, k, v, dropout_rate=0.5, dropout_rng=kd)
  assert dropped is not None and dropped.shape == (1, 2, 9, keys)

"""Tests for vit_video/layers/scores.py: each score against a reference computed another way."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_video.layers import scores

B, N, D, D_S, A, D_V = 2, 7, 5, 3, 6, 4  # all different, so a swapped axis cannot pass


def _rand(seed, *shape):
  return jax.random.normal(jax.random.key(seed), shape)


def test_dot_scores_equal_explicit_loop():
  h, s = _rand(0, B, N, D), _rand(1, B, D)
  e = np.asarray(scores.dot_scores(h, s))
  hn, sn = np.asarray(h, np.float64), np.asarray(s, np.float64)
  ref = np.zeros((B, N))
  for b in range(B):
    for i in range(N):
      ref[b, i] = sum(hn[b, i, k] * sn[b, k] for k in range(D))
  assert e.shape == (B, N)
  np.testing.assert_allclose(e, ref, rtol=1e-5, atol=1e-5)


def test_scaled_dot_scores_divide_by_sqrt_d():
  h, s = _rand(0, B, N, D), _rand(1, B, D)
  plain = scores.dot_scores(h, s)
  scaled = scores.dot_scores(h, s, scale=True)
  np.testing.assert_allclose(scaled, plain / math.sqrt(D), rtol=1e-6)
  assert not np.allclose(scaled, plain)


def test_scaled_dot_scores_have_unit_variance_for_wide_inputs():
  # The point of the scaling: with unit-variance entries, Var(h^T s) = D, Var(h^T s / sqrt(D)) = 1.
  wide = 512
  h, s = _rand(0, 4, 256, wide), _rand(1, 4, wide)
  assert abs(float(jnp.var(scores.dot_scores(h, s, scale=True))) - 1.0) < 0.15
  assert float(jnp.var(scores.dot_scores(h, s))) > wide / 2


def test_bilinear_with_identity_kernel_equals_dot():
  h, s = _rand(0, B, N, D), _rand(1, B, D)
  module = scores.BilinearScores()
  params = module.init(jax.random.key(2), h, s)["params"]
  assert params["kernel"].shape == (D, D)
  e = module.apply({"params": {"kernel": jnp.eye(D)}}, h, s)
  np.testing.assert_allclose(e, scores.dot_scores(h, s), rtol=1e-6, atol=1e-6)


def test_bilinear_matches_numpy_with_different_widths():
  h, s = _rand(0, B, N, D), _rand(1, B, D_S)
  module = scores.BilinearScores()
  params = module.init(jax.random.key(2), h, s)["params"]
  k = np.asarray(params["kernel"])
  assert k.shape == (D, D_S)
  ref = np.stack([[np.asarray(h)[b, i] @ k @ np.asarray(s)[b] for i in range(N)] for b in range(B)])
  np.testing.assert_allclose(module.apply({"params": params}, h, s), ref, rtol=1e-5, atol=1e-5)


def test_additive_scores_match_numpy():
  h, s = _rand(0, B, N, D), _rand(1, B, D_S)
  module = scores.AdditiveScores(hidden_dim=A)
  params = module.init(jax.random.key(2), h, s)["params"]
  w_h, w_s, v = (np.asarray(params[n]["kernel"], np.float64) for n in ("w_h", "w_s", "v"))
  assert (w_h.shape, w_s.shape, v.shape) == ((D, A), (D_S, A), (A, 1))
  hn, sn = np.asarray(h, np.float64), np.asarray(s, np.float64)
  ref = np.zeros((B, N))
  for b in range(B):
    for i in range(N):
      ref[b, i] = v[:, 0] @ np.tanh(w_h.T @ hn[b, i] + w_s.T @ sn[b])
  np.testing.assert_allclose(module.apply({"params": params}, h, s), ref, rtol=1e-5, atol=1e-5)


def test_attention_weights_sum_to_one_and_masked_entries_are_zero():
  e = 5.0 * _rand(0, B, N)
  mask = jnp.array([[True, False, True, True, False, True, True],
                    [False, False, False, True, False, False, False]])
  a = np.asarray(scores.attention_weights(e, mask))
  np.testing.assert_allclose(a.sum(-1), 1.0, rtol=1e-6)
  assert np.all(a[~np.asarray(mask)] == 0.0)
  assert np.all(a[np.asarray(mask)] > 0.0)
  np.testing.assert_allclose(a[1, 3], 1.0)  # a single unmasked entry takes all the weight
  # Unmasked entries equal a softmax over the unmasked scores alone.
  keep = np.asarray(mask[0])
  ref = np.exp(np.asarray(e[0])[keep]) / np.exp(np.asarray(e[0])[keep]).sum()
  np.testing.assert_allclose(a[0, keep], ref, rtol=1e-5)


def test_attention_weights_unmasked_is_softmax_and_masked_scores_are_ignored():
  e = _rand(0, B, N)
  a = np.asarray(scores.attention_weights(e))
  ref = np.exp(np.asarray(e)) / np.exp(np.asarray(e)).sum(-1, keepdims=True)
  np.testing.assert_allclose(a, ref, rtol=1e-5)
  mask = jnp.arange(N) % 3 != 1  # broadcasts over the batch
  moved = e.at[:, 1].set(1e4)  # a huge score at a masked position changes nothing
  np.testing.assert_array_equal(scores.attention_weights(e, mask), scores.attention_weights(moved, mask))


def test_attention_weights_all_masked_row_is_zero_not_nan():
  a = scores.attention_weights(_rand(0, B, N), jnp.zeros((B, N), bool).at[0, 2].set(True))
  assert np.all(np.isfinite(a))
  np.testing.assert_array_equal(a[1], 0.0)
  np.testing.assert_allclose(a[0, 2], 1.0)


def test_weighted_sum_equals_explicit_loop():
  a = scores.attention_weights(_rand(0, B, N))
  h, v = _rand(1, B, N, D), _rand(2, D, D_V)
  an, hn, vn = (np.asarray(x, np.float64) for x in (a, h, v))
  ref = np.zeros((B, D_V))
  for b in range(B):
    for i in range(N):
      ref[b] += an[b, i] * (hn[b, i] @ vn)
  np.testing.assert_allclose(scores.weighted_sum(a, h, v), ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(scores.weighted_sum(a, h), np.einsum("bn,bnd->bd", an, hn), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("score", scores.SCORES)
def test_attention_pool_is_the_composition(score):
  h, s = _rand(0, B, N, D), _rand(1, B, D)
  mask = jnp.ones((B, N), bool).at[0, :3].set(False)
  module = scores.AttentionPool(score=score, hidden_dim=A, value_dim=D_V)
  variables = module.init(jax.random.key(2), h, s, mask)
  params = variables["params"]
  c, state = module.apply(variables, h, s, mask, mutable=["intermediates"])
  (weights,) = state["intermediates"]["weights"]
  if score == "bilinear":
    e = scores.BilinearScores().apply({"params": params["bilinear"]}, h, s)
  elif score == "additive":
    e = scores.AdditiveScores(A).apply({"params": params["additive"]}, h, s)
  else:
    e = scores.dot_scores(h, s, scale=score == "scaled_dot")
  a = scores.attention_weights(e, mask)
  np.testing.assert_allclose(weights, a, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(c, scores.weighted_sum(a, h, params["value"]), rtol=1e-5, atol=1e-6)
  assert c.shape == (B, D_V)


def test_attention_pool_information_flow():
  # The context of example b moves when an unmasked item of b moves, and not for masked items or other examples.
  h = _rand(0, B, N, D)
  mask = jnp.ones((B, N), bool).at[0, 4].set(False)
  module = scores.AttentionPool(score="additive", hidden_dim=A)  # learned query
  variables = module.init(jax.random.key(1), h, mask=mask)
  assert variables["params"]["query"].shape == (D,)
  c = module.apply(variables, h, mask=mask)
  moved_masked = module.apply(variables, h.at[0, 4].add(3.0), mask=mask)
  np.testing.assert_array_equal(moved_masked, c)
  moved = module.apply(variables, h.at[0, 2].add(3.0), mask=mask)
  assert np.all(np.abs(moved[0] - c[0]) > 1e-4)
  np.testing.assert_array_equal(moved[1], c[1])


def test_attention_pool_learned_query_starts_as_masked_mean():
  h = _rand(0, B, N, D)
  mask = jnp.arange(N) < 5
  module = scores.AttentionPool(score="dot")
  variables = module.init(jax.random.key(1), h, mask=mask)
  np.testing.assert_allclose(module.apply(variables, h, mask=mask), h[:, :5].mean(1), rtol=1e-5, atol=1e-6)


def test_bfloat16_activations():
  h, s = _rand(0, B, N, D), _rand(1, B, D)
  module = scores.AttentionPool(score="additive", hidden_dim=A, value_dim=D_V, dtype=jnp.bfloat16)
  variables = module.init(jax.random.key(2), h, s)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables["params"]))
  c, state = module.apply(variables, h, s, capture_intermediates=True, mutable=["intermediates"])
  assert c.dtype == jnp.bfloat16
  assert state["intermediates"]["additive"]["w_h"]["__call__"][0].dtype == jnp.bfloat16
  assert scores.BilinearScores(dtype=jnp.bfloat16).init_with_output(jax.random.key(0), h, s)[0].dtype == jnp.bfloat16


def test_bad_shapes_raise():
  h = _rand(0, B, N, D)
  with pytest.raises(ValueError, match=r"\(2, 7, 5\).*\(2, 3\)"):
    scores.dot_scores(h, _rand(1, B, 3))
  with pytest.raises(ValueError, match="batch"):
    scores.dot_scores(h, _rand(1, 3, D))
  with pytest.raises(ValueError, match=r"\(2, 4\)"):
    scores.attention_weights(_rand(0, B, N), jnp.ones((B, 4), bool))
  with pytest.raises(ValueError, match=r"\[D,D_v\] with D=5"):
    scores.weighted_sum(jnp.ones((B, N)) / N, h, jnp.ones((4, 3)))
  with pytest.raises(ValueError, match="score must be one of"):
    scores.AttentionPool(score="cosine").init(jax.random.key(0), h)

"""Tests for vit_video/layers/feature_attention.py: identity at init, numpy reference, information flow."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_video.layers.feature_attention import MODES, FeatureSelfAttention

B, T, H, W, C = 2, 3, 4, 5, 24
QK_RED, V_RED = 4, 3  # C_qk = 6, C_v = 8: every size differs


def _x(seed, *shape):
  return jax.random.normal(jax.random.key(seed), shape)


def _with_gamma(variables, gamma):
  params = dict(variables["params"], gamma=jnp.asarray(gamma, jnp.float32))
  return {"params": params}


def _numpy_reference(params, x, mode):
  """out_i = x_i + gamma * W_o sum_j f_ij v_j, written with numpy loops over the batch."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  xn = np.asarray(x, np.float64)
  out = np.empty_like(xn)
  for b in range(xn.shape[0]):
    t = xn[b].reshape(-1, xn.shape[-1])  # [N,C]
    q = t @ p["query"]["kernel"] + p["query"]["bias"]
    k = t @ p["key"]["kernel"] + p["key"]["bias"]
    v = t @ p["value"]["kernel"] + p["value"]["bias"]
    logits = q @ k.T  # [N,N]
    if mode == "embedded_gaussian":
      f = np.exp(logits - logits.max(1, keepdims=True))
      f = f / f.sum(1, keepdims=True)
    else:
      f = logits / t.shape[0]
    o = (f @ v) @ p["out"]["kernel"] + p["out"]["bias"]
    out[b] = (t + p["gamma"] * o).reshape(xn.shape[1:])
  return out


@pytest.mark.parametrize("shape", [(B, H, W, C), (B, T, H, W, C)], ids=["2d", "3d"])
@pytest.mark.parametrize("mode", MODES)
def test_identity_at_initialisation(shape, mode):
  x = _x(0, *shape)
  module = FeatureSelfAttention(qk_reduction=QK_RED, value_reduction=V_RED, mode=mode)
  y, variables = module.init_with_output(jax.random.key(1), x)
  params = variables["params"]
  assert params["gamma"].shape == () and float(params["gamma"]) == 0.0
  assert params["query"]["kernel"].shape == (C, C // QK_RED)
  assert params["key"]["kernel"].shape == (C, C // QK_RED)
  assert params["value"]["kernel"].shape == (C, C // V_RED)
  assert params["out"]["kernel"].shape == (C // V_RED, C)
  np.testing.assert_array_equal(y, x)
  # The branch itself is not zero: only gamma hides it.
  assert not np.allclose(module.apply(_with_gamma(variables, 1.0), x), x)


@pytest.mark.parametrize("shape", [(B, H, W, C), (B, T, H, W, C)], ids=["2d", "3d"])
@pytest.mark.parametrize("mode", MODES)
def test_matches_numpy_with_nonzero_gamma(shape, mode):
  x = _x(0, *shape)
  module = FeatureSelfAttention(qk_reduction=QK_RED, value_reduction=V_RED, mode=mode)
  variables = _with_gamma(module.init(jax.random.key(1), x), 0.7)
  # Non-zero biases, so that a dropped bias would show.
  variables = jax.tree.map(lambda a: a + 0.1 if a.ndim == 1 else a, variables)
  y = module.apply(variables, x)
  assert y.shape == x.shape
  np.testing.assert_allclose(y, _numpy_reference(variables["params"], x, mode), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", MODES)
def test_every_output_position_depends_on_every_input_position_3d(mode):
  x = _x(0, B, T, H, W, C)
  module = FeatureSelfAttention(qk_reduction=QK_RED, value_reduction=V_RED, mode=mode)
  variables = _with_gamma(module.init(jax.random.key(1), x), 0.5)
  y = module.apply(variables, x)
  for pos in [(0, 0, 0), (2, 3, 4), (1, 2, 0)]:
    moved = module.apply(variables, x.at[(0, *pos)].add(1.0)) - y  # [B,T,H,W,C]
    change = np.abs(np.asarray(moved[0])).max(-1)  # [T,H,W]
    assert np.all(change > 1e-6), f"{mode}: output positions untouched by moving input {pos}"
    np.testing.assert_array_equal(moved[1], 0.0)  # examples never mix


def test_gradient_at_init_reaches_gamma_only():
  # At gamma = 0 the attention branch gets no gradient, but gamma does, so training can switch the branch on.
  x = _x(0, B, H, W, C)
  module = FeatureSelfAttention(qk_reduction=QK_RED, value_reduction=V_RED)
  params = module.init(jax.random.key(1), x)["params"]
  grads = jax.grad(lambda p: jnp.sum(module.apply({"params": p}, x) * x[..., ::-1]))(params)
  assert abs(float(grads["gamma"])) > 1e-3
  for name in ("query", "key", "value", "out"):
    for leaf in jax.tree.leaves(grads[name]):
      np.testing.assert_array_equal(leaf, 0.0)


def test_bfloat16_activations():
  x = _x(0, B, T, H, W, C)
  module = FeatureSelfAttention(qk_reduction=QK_RED, value_reduction=V_RED, dtype=jnp.bfloat16)
  variables = module.init(jax.random.key(1), x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables["params"]))
  y, state = module.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
  assert y.dtype == jnp.bfloat16
  for name in ("query", "key", "value", "out"):
    assert state["intermediates"][name]["__call__"][0].dtype == jnp.bfloat16


def test_bad_inputs_raise():
  with pytest.raises(ValueError, match=r"rank >= 4.*\(2, 20, 24\)"):
    FeatureSelfAttention().init(jax.random.key(0), jnp.zeros((B, H * W, C)))
  with pytest.raises(ValueError, match="channels 5 too few for qk_reduction 8"):
    FeatureSelfAttention().init(jax.random.key(0), jnp.zeros((B, H, W, 5)))
  with pytest.raises(ValueError, match="mode must be one of"):
    FeatureSelfAttention(mode="gaussian").init(jax.random.key(0), jnp.zeros((B, H, W, C)))

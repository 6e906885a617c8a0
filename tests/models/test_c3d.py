"""Tests for vit_video.models.c3d: parameter count formula, temporal receptive fields, dropout, shape errors."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_video.models.c3d import C3D, pooled_sizes
from tests.models.helpers import random_variables

B, T, H, W, C, K = 2, 16, 24, 40, 3, 5
# Widths 2, 4, 8, 8, 16, 16, 16, 16 and fc 128, 128; (16, 24, 40) pools to (1, 1, 2): fc6 takes 32 inputs.
TINY = dict(width_multiplier=1 / 32, input_size=(T, H, W), in_channels=C)


def clip(seed=0, b=B):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(b, T, H, W, C)), jnp.float32)


@functools.partial(jax.jit, static_argnums=0)
def intermediates(model, variables, x):
  """(logits, intermediates) of an eval-mode forward pass, jitted: one compile beats one per op here."""
  out, state = model.apply(variables, x, train=False, capture_intermediates=True, mutable=["intermediates"])
  return out, state["intermediates"]


@functools.partial(jax.jit, static_argnums=0)
def forward(model, variables, x, rng=None):
  return model.apply(variables, x, train=rng is not None, rngs=None if rng is None else {"dropout": rng})


def param_count(num_classes, **kw):
  model = C3D(num_classes=num_classes, **kw)
  shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                          jnp.zeros((1,) + tuple(model.input_size) + (model.in_channels,)))
  return sum(x.size for x in jax.tree.leaves(shapes["params"])), shapes["params"]


def test_published_size_and_parameter_count():
  """16x112x112 pools to 1x4x4 (8192 inputs to fc6); 77,995,776 + 4097 K parameters (module docstring)."""
  assert pooled_sizes((16, 112, 112)) == [(16, 56, 56), (8, 28, 28), (4, 14, 14), (2, 7, 7), (1, 4, 4)]
  count, params = param_count(487)
  assert params["fc6"]["kernel"].shape == (8192, 4096) and params["conv3a"]["kernel"].shape == (3, 3, 3, 128, 256)
  assert count == 79_991_015 == 77_995_776 + 4097 * 487  # Sports-1M
  assert param_count(101)[0] == 78_409_573  # UCF101
  assert param_count(0)[0] == 77_995_776  # fc7 features


def test_temporal_receptive_field_grows_as_documented():
  """Perturbing frame f moves conv1 at times f-1..f+1, conv2 at f-2..f+2, and conv3a (time stride 2) at the
  u with 2u-4 <= f <= 2u+5 (10 frames), conv3b 2u-6 <= f <= 2u+7 (14 frames); the logits move for every f."""
  noise = clip(seed=1, b=1)[0]
  x = clip(b=1)
  x = jnp.concatenate([x] + [x.at[0, f].set(noise[f]) for f in range(T)])  # [T+1,T,H,W,C]: row f+1 perturbs f
  model = C3D(num_classes=K, dropout_rate=0.0, **TINY)
  v = random_variables(model, x)
  logits, state = intermediates(model, v, x)
  fields = {"conv1": (1, 3, 1), "conv2": (1, 5, 2), "conv3a": (2, 10, 4), "conv3b": (2, 14, 6)}  # (J, R, pad)
  for name, (j, r, pad) in fields.items():
    out = state[name]["__call__"][0]  # [T+1,T',H',W',D]
    changed = np.asarray(jnp.abs(out[1:] - out[:1]).max(axis=(2, 3, 4)) > 0)  # [T,T']
    expected = [[u * j - pad <= f < u * j - pad + r for u in range(out.shape[1])] for f in range(T)]
    np.testing.assert_array_equal(changed, expected, err_msg=name)
  assert all(not np.allclose(logits[f + 1], logits[0]) for f in range(T))


def test_dropout_only_in_training():
  x = clip()
  model = C3D(num_classes=K, **TINY)
  v = random_variables(model, x)
  eval_out = forward(model, v, x)
  assert eval_out.shape == (B, K) and eval_out.dtype == jnp.float32
  train_out = forward(model, v, x, jax.random.key(0))
  assert not np.allclose(train_out, eval_out)
  features = forward(C3D(num_classes=0, **TINY), {"params": {k: p for k, p in v["params"].items() if k != "fc8"}}, x)
  assert features.shape == (B, 128)
  np.testing.assert_allclose(eval_out, features @ v["params"]["fc8"]["kernel"] + v["params"]["fc8"]["bias"],
                             rtol=1e-5, atol=1e-5)


def test_bfloat16_activations_float32_logits():
  x = clip()
  model = C3D(num_classes=K, dtype=jnp.bfloat16, **TINY)
  v = random_variables(model, x)
  y, state = intermediates(model, v, x)
  assert y.dtype == jnp.float32
  dtypes = {k: a["__call__"][0].dtype for k, a in state.items() if k != "__call__"}
  assert len(dtypes) == 13 and set(dtypes.values()) == {jnp.dtype(jnp.bfloat16)}  # 8 convs, fc6-8, 2 dropouts


@pytest.mark.parametrize("input_size, shape, match", [
    ((8, 112, 112), (B, 8, 112, 112, C), r"C3D needs T >= 16 and H, W >= 16 .* input_size \(T, H, W\) = \(8, 112"),
    ((16, 112, 15), (B, 16, 112, 15, C), r"C3D needs T >= 16 and H, W >= 16"),
    ((T, H, W), (B, 15, H, W, C), r"clip \(T, H, W\) = \(15, 24, 40\) is not the input_size \(16, 24, 40\)"),
    ((T, H, W), (B, T, W, H, C), r"clip \(T, H, W\) = \(16, 40, 24\) is not the input_size \(16, 24, 40\)"),
    ((T, H, W), (B, H, W, C), r"input shape \(2, 24, 40, 3\) is not \[B,T,H,W,C\] with C = in_channels = 3"),
    ((T, H, W), (B, T, H, W, 2), r"input shape \(2, 16, 24, 40, 2\) is not \[B,T,H,W,C\]"),
])
def test_bad_input_raises(input_size, shape, match):
  model = C3D(num_classes=K, width_multiplier=1 / 32, input_size=input_size, in_channels=C)
  with pytest.raises(ValueError, match=match):
    model.init(jax.random.key(0), jnp.zeros(shape), train=False)

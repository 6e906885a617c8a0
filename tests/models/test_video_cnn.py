"""Tests for vit_video.models.video_cnn: Karpathy et al.'s single-frame, late, early and slow fusion models."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from vit_video.models.video_cnn import EarlyFusion, LateFusion, SingleFrame, SlowFusion, tower_sizes
from tests.models.helpers import random_variables

B, T, H, W, C, K = 2, 5, 12, 20, 3, 4
# H: 12 -> 6 (pool) -> 3 (stride 2) -> 1 (pool); W: 20 -> 10 -> 5 -> 2: fc0 takes 1 * 2 * 5 = 10 features.
TINY = dict(widths=(4, 6, 5), kernel_sizes=(3, 3, 3), strides=(1, 2, 1), pools=(True, False, True),
            fc_widths=(7,), image_size=(H, W), in_channels=C)


def clip(seed=0, t=T, b=B):
  """[b,t,H,W,C] noise (numpy: jax.random compiles anew for every shape, seconds each on this machine)."""
  return jnp.asarray(np.random.default_rng(seed).normal(size=(b, t, H, W, C)), jnp.float32)


def perturbed_batch(x, seed=1):
  """[T+1,T,H,W,C]: row 0 is the clip x[0], row f+1 the clip with frame f replaced by noise."""
  noise = clip(seed, t=x.shape[1], b=1)[0]
  return jnp.stack([x[0]] + [x[0].at[f].set(noise[f]) for f in range(x.shape[1])])


@functools.partial(jax.jit, static_argnums=0)
def forward(model, variables, x):
  """model.apply(..., train=False), jitted: one compile beats one per op here."""
  return model.apply(variables, x, train=False)


@functools.partial(jax.jit, static_argnums=0)
def intermediates(model, variables, x):
  out, state = model.apply(variables, x, train=False, capture_intermediates=True, mutable=["intermediates"])
  return out, state["intermediates"]


def conv_outputs(model, variables, x):
  """Every tower/conv{l}'s output (before ReLU) for input x."""
  tower = intermediates(model, variables, x)[1]["tower"]
  return [tower[f"conv{l}"]["__call__"][0] for l in range(len(model.widths))]


def moved(outputs, axis):
  """For a perturbed_batch output: moved[f] = the indices along `axis` (of one clip) where row f+1 differs."""
  diff = jnp.abs(outputs[1:] - outputs[:1])
  other = tuple(a for a in range(diff.ndim) if a not in (0, axis + 1))
  changed = np.asarray(diff.max(axis=other) > 0)
  return [set(np.flatnonzero(row).tolist()) for row in changed]


def test_tower_sizes_follow_the_paper():
  """Karpathy et al.: 170x170 -> conv0 57 -> 28 -> 14 -> 7; slow fusion's 10 frames -> 4 -> 2 -> 1 -> 1 -> 1."""
  paper = dict(kernel_sizes=(11, 5, 3, 3, 3), strides=(3, 1, 1, 1, 1), pools=(True, True, False, False, True))
  assert tower_sizes((170, 170), **paper) == [(28, 28), (14, 14), (14, 14), (14, 14), (7, 7)]
  sizes = tower_sizes((10, 170, 170), **paper, temporal_kernels=(4, 2, 2, 1, 1), temporal_strides=(2, 2, 2, 1, 1))
  assert [s[0] for s in sizes] == [4, 2, 1, 1, 1]
  assert SlowFusion(num_classes=K).min_frames() == 10


def test_single_frame_is_the_mean_of_per_frame_scores():
  x = clip()
  model = SingleFrame(num_classes=K, **TINY)
  v = random_variables(model, x)
  per_frame = jnp.stack([forward(model, v, x[:, t:t + 1]) for t in range(T)], axis=1)  # [B,T,K]
  assert not np.allclose(per_frame[:, 0], per_frame[:, 1])
  out = forward(model, v, x)
  assert out.shape == (B, K) and out.dtype == jnp.float32
  np.testing.assert_allclose(out, per_frame.mean(axis=1), rtol=1e-5, atol=1e-6)


def test_per_frame_tower_never_mixes_frames():
  """SingleFrame's tower is 2D: perturbing frame f moves conv{l}'s output at frame f only."""
  x = perturbed_batch(clip())
  model = SingleFrame(num_classes=K, **TINY)
  v = random_variables(model, x)
  for out in conv_outputs(model, v, x):
    assert moved(out, axis=0) == [{f} for f in range(T)]


def test_late_fusion_pool_ignores_frame_order_and_fc_does_not():
  x = clip()
  order = jnp.array([3, 0, 4, 2, 1])
  pool = LateFusion(num_classes=K, fusion="pool", **TINY)
  v = random_variables(pool, x)
  np.testing.assert_allclose(forward(pool, v, x[:, order]), forward(pool, v, x),
                             rtol=1e-5, atol=1e-6)
  fc = LateFusion(num_classes=K, fusion="fc", num_frames=T, **TINY)
  v = random_variables(fc, x)
  assert v["params"]["fc0"]["kernel"].shape == (T * 10, 7)  # T frames x 1 * 2 * 5 features, concatenated.
  assert not np.allclose(forward(fc, v, x[:, order]), forward(fc, v, x), atol=1e-4)


def test_late_fusion_pool_has_the_single_frame_parameters():
  """A trained single-frame model initialises late fusion (pool); on a 1-frame clip they are the same model."""
  x = clip(t=1)
  single = SingleFrame(num_classes=K, **TINY)
  v = random_variables(single, x)
  pool = LateFusion(num_classes=K, fusion="pool", **TINY)
  assert jax.tree.structure(jax.eval_shape(functools.partial(pool.init, train=False), jax.random.key(0), x)) == \
      jax.tree.structure(v)
  np.testing.assert_allclose(forward(pool, v, x), forward(single, v, x), rtol=1e-6)


def test_pooled_features_then_head_give_the_logits():
  x = clip()
  model = LateFusion(num_classes=K, fusion="pool", **TINY)
  v = random_variables(model, x)
  head = v["params"]["head"]
  feats = LateFusion(num_classes=0, fusion="pool", **TINY).apply(
      {"params": {k: p for k, p in v["params"].items() if k != "head"}}, x, train=False)
  assert feats.shape == (B, 7)
  np.testing.assert_allclose(forward(model, v, x), feats @ head["kernel"] + head["bias"],
                             rtol=1e-5, atol=1e-6)


def test_early_fusion_first_layer_sees_every_frame():
  x = perturbed_batch(clip())
  model = EarlyFusion(num_classes=K, num_frames=T, **TINY)
  v = random_variables(model, x)
  assert v["params"]["tower"]["conv0"]["kernel"].shape == (T, 3, 3, C, 4)
  conv0 = conv_outputs(model, v, x)[0]
  assert conv0.shape == (T + 1, 1, H, W, 4)  # Time merged into one step by the first conv.
  assert moved(conv0, axis=0) == [{0}] * T
  logits = forward(model, v, x)
  assert all(not np.allclose(logits[f + 1], logits[0]) for f in range(T))


def test_slow_fusion_receptive_field_grows_as_documented():
  """The paper's temporal kernels (4, 2, 2) / strides (2, 2, 2) on 10 frames: conv{l}'s output at time t sees
  frames [t J, t J + R) with (R, J) = (4, 2), (6, 4), (10, 8); the logits depend on every frame."""
  t = 10
  x = perturbed_batch(clip(t=t, b=1))
  model = SlowFusion(num_classes=K, num_frames=t, temporal_kernels=(4, 2, 2), temporal_strides=(2, 2, 2), **TINY)
  v = random_variables(model, x)
  for out, (r, j) in zip(conv_outputs(model, v, x), [(4, 2), (6, 4), (10, 8)]):
    expected = [{u for u in range(out.shape[1]) if u * j <= f < u * j + r} for f in range(t)]
    assert moved(out, axis=0) == expected
  logits = forward(model, v, x)
  assert all(not np.allclose(logits[f + 1], logits[0]) for f in range(t))


def test_bfloat16_activations_float32_logits():
  x = clip(t=10)
  model = SlowFusion(num_classes=K, temporal_kernels=(4, 2, 2), temporal_strides=(2, 2, 2), dtype=jnp.bfloat16,
                     **TINY)
  v = random_variables(model, x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(v["params"]))
  y, state = intermediates(model, v, x)
  assert y.dtype == jnp.float32
  inner = {k: a[0].dtype for k, a in traverse_util.flatten_dict(state).items()
           if k != ("__call__",)}
  assert len(inner) == 6 and set(inner.values()) == {jnp.dtype(jnp.bfloat16)}  # 3 convs, the tower, fc0, head.


@pytest.mark.parametrize("model, shape, match", [
    (SingleFrame(K, **TINY), (B, H, W, C), r"input shape \(2, 12, 20, 3\) is not \[B,T,H,W,C\] with C = in_chan"),
    (SingleFrame(K, **TINY), (B, T, H, W, 4), r"input shape \(2, 5, 12, 20, 4\) is not .* in_channels = 3"),
    (SingleFrame(K, **TINY), (B, T, W, H, C), r"frame size \(H, W\) = \(20, 12\) is not image_size \(12, 20\)"),
    (SingleFrame(K, **{**TINY, "image_size": (3, 20)}), (B, T, 3, W, C),
     r"input \(T, H, W\) = \(5, 3, 20\) is too small for the conv tower: conv2 leaves \(H, W\) = \(0, 2\)"),
    (LateFusion(K, fusion="fc", num_frames=2, **TINY), (B, T, H, W, C),
     r"built for num_frames = 2 frames .*, got T = 5"),
    (LateFusion(K, fusion="mean", **TINY), (B, T, H, W, C), r"fusion 'mean' is not one of \['fc', 'pool'\]"),
    (EarlyFusion(K, num_frames=10, **TINY), (B, T, H, W, C), r"built for num_frames = 10 frames .*, got T = 5"),
    (SlowFusion(K, **TINY, temporal_kernels=(4, 2, 2), temporal_strides=(2, 2, 2)), (B, 9, H, W, C),
     r"temporal_kernels \(4, 2, 2\) and temporal_strides \(2, 2, 2\) needs T >= 10 frames, got T = 9"),
    (SlowFusion(K, **TINY, temporal_kernels=(4, 2, 2), temporal_strides=(2, 2, 2)), (B, 12, H, W, C),
     r"slow fusion was built for num_frames = 10 frames .*, got T = 12"),
    (SlowFusion(K, **TINY, num_frames=6, temporal_kernels=(4, 2), temporal_strides=(2, 2)), (B, 6, H, W, C),
     r"one entry per layer, got lengths \[3, 3, 3, 3, 2, 2\]"),
])
def test_bad_input_raises(model, shape, match):
  with pytest.raises(ValueError, match=match):
    model.init(jax.random.key(0), jnp.zeros(shape), train=False)

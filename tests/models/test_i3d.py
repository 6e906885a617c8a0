"""Tests for vit_video.models.i3d: non-local blocks, sizes, parameter counts, dtypes, bad input.

(Inflation from a 2D ResNet: tests/checkpoints/test_inflate.py.)
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from vit_video.models.i3d import I3DResNet
from vit_video.models.resnet import VARIANTS, ResNet
from tests.models.helpers import random_variables

B, H, W, C, K = 2, 12, 20, 3, 5
TINY_2D = dict(stage_sizes=(1, 1), block="bottleneck", width=4, in_channels=C)
TINY_3D = dict(stage_sizes=(1, 1), inflate=((1,), (1,)), nonlocal_after=((), ()), width=4, in_channels=C)


def noise(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


@functools.partial(jax.jit, static_argnums=0)
def intermediates(model, variables, x):
  """(logits, intermediates) of an eval-mode forward pass, jitted: one compile beats one per op here."""
  out, state = model.apply(variables, x, train=False, capture_intermediates=True, mutable=["intermediates"])
  return out, state["intermediates"]


@functools.partial(jax.jit, static_argnums=0)
def logits(model, variables, x):
  return model.apply(variables, x, train=False)


def test_non_local_blocks_are_the_identity_at_initialisation():
  """Real init (the zero gain): nl_i3d equals i3d with the shared weights; with the gain set, the non-local block
  mixes all times (perturbing frame 0 moves all 7), unlike the block before it (conv1's 5 and the block's 3 taps:
  times 0 to 3). One stage keeps the real init (one PRNG compile per parameter shape) cheap."""
  x = noise((B, 7, H, W, C))
  tiny = dict(stage_sizes=(1,), inflate=((1,),), width=4, in_channels=C, temporal_strides=(1, 1, 1))
  nl = I3DResNet(num_classes=K, nonlocal_after=((0,),), **tiny)
  v = jax.jit(lambda key: nl.init(key, x, train=False))(jax.random.key(0, impl="rbg"))  # jit + rbg: fast compile
  assert v["params"]["layer1"]["nonlocal0"]["query"]["kernel"].shape == (16, 8)  # C / 2 (the paper's)
  plain = {"params": {k: p for k, p in v["params"].items() if k != "layer1"}, "batch_stats": v["batch_stats"]}
  plain["params"]["layer1"] = {"block0": v["params"]["layer1"]["block0"]}
  model = I3DResNet(num_classes=K, nonlocal_after=((),), **tiny)
  np.testing.assert_allclose(intermediates(nl, v, x)[0], logits(model, plain, x), rtol=1e-6)

  v["params"]["layer1"]["nonlocal0"]["gamma"] = jnp.ones(())
  x2 = jnp.concatenate([x[:1], x[:1].at[:, 0].set(x[1, 0])])  # [2,7,H,W,C]: the second clip perturbs frame 0
  out_nl, state = intermediates(nl, v, x2)
  for name, times in (("block0", {0, 1, 2, 3}), ("nonlocal0", set(range(7)))):
    out = state["layer1"][name]["__call__"][0]
    assert set(np.flatnonzero(np.abs(out[1] - out[0]).max(axis=(1, 2, 3)) > 0).tolist()) == times, name
  assert not np.allclose(out_nl, logits(model, plain, x2), atol=1e-4)
  dot = I3DResNet(num_classes=K, nonlocal_after=((0,),), nonlocal_mode="dot_product", **tiny)
  assert not np.allclose(logits(dot, v, x2), out_nl, atol=1e-4)


def _count(model, shape):
  shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), jnp.zeros(shape))
  return shapes, sum(a.size for a in jax.tree.leaves(shapes["params"]))


def test_parameter_counts_against_resnet50():
  """i3d_r50 = resnet50 + 4 x the stem kernel + 2 x conv1 of every inflated block; each non-local block on C
  channels adds 4 (C x C/2) kernels, 3 C/2 + C biases and the gain: 2 C^2 + 2.5 C + 1."""
  r50, n2d = _count(ResNet(num_classes=1000, **VARIANTS["resnet50"]), (1, 32, 32, 3))
  _, n3d = _count(I3DResNet(num_classes=1000), (1, 4, 32, 32, 3))
  p = r50["params"]
  inflated = [p[f"layer{i + 1}"][f"block{j}"]["conv1"]["kernel"].size
              for i, pattern in enumerate(I3DResNet.inflate) for j, bit in enumerate(pattern) if bit]
  assert n3d - n2d == 4 * p["conv1"]["kernel"].size + 2 * sum(inflated) == 3_715_840
  _, nl = _count(I3DResNet(num_classes=1000, nonlocal_after=((), (1, 3), (1, 3, 5), ())), (1, 4, 32, 32, 3))
  assert nl - n3d == sum(2 * c**2 + 5 * c // 2 + 1 for c in (512, 512, 1024, 1024, 1024)) == 7_350_277


def test_default_temporal_sizes_follow_the_non_local_paper():
  """32x224x224 -> conv1 16x112x112 -> pool1 8x56x56 -> pool2 4x56x56 -> layer4 4x7x7x2048 (Table 1)."""
  model = I3DResNet(num_classes=0)
  x = jnp.zeros((1, 32, 224, 224, 3))
  def run():
    return model.apply(model.init(jax.random.key(0), x, train=False), x, train=False, capture_intermediates=True,
                       mutable=["intermediates"])
  out, state = jax.eval_shape(run)
  state = state["intermediates"]
  assert state["conv1"]["__call__"][0].shape == (1, 16, 112, 112, 64)
  assert state["layer1"]["__call__"][0].shape == (1, 8, 56, 56, 256)
  assert state["layer2"]["__call__"][0].shape == (1, 4, 28, 28, 512)
  assert state["layer4"]["__call__"][0].shape == (1, 4, 7, 7, 2048) and out.shape == (1, 2048)


def test_bfloat16_training_step_shapes_and_dtypes():
  x = noise((B, 4, H, W, C))
  model = I3DResNet(num_classes=K, **TINY_3D, dtype=jnp.bfloat16)
  v = random_variables(model, x)
  y, state = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats", "intermediates"],
                                               capture_intermediates=True))(v, x)
  assert y.shape == (B, K) and y.dtype == jnp.float32
  assert not np.allclose(state["batch_stats"]["bn1"]["mean"], v["batch_stats"]["bn1"]["mean"])
  dtypes = {a[0].dtype for k, a in traverse_util.flatten_dict(state["intermediates"]).items() if k != ("__call__",)}
  assert dtypes == {jnp.dtype(jnp.bfloat16)}


@pytest.mark.parametrize("overrides, shape, match", [
    ({}, (B, H, W, C), r"input shape \(2, 12, 20, 3\) is not \[B,T,H,W,C\] with C = in_channels = 3"),
    ({}, (B, 4, H, W, 4), r"input shape \(2, 4, 12, 20, 4\) is not \[B,T,H,W,C\]"),
    ({"inflate": ((1,),)}, (B, 4, H, W, C), r"need one entry per stage, got 2, 1, 2"),
    ({"inflate": ((1,), (1, 0))}, (B, 4, H, W, C), r"stage 1 has 1 blocks but inflate \(1, 0\)"),
    ({"nonlocal_after": ((), (1,))}, (B, 4, H, W, C), r"stage 1 has 1 blocks .* nonlocal_after \(1,\)"),
    ({"nonlocal_after": ((0,), ()), "nonlocal_mode": "gaussian"}, (B, 4, H, W, C), r"mode must be one of"),
])
def test_bad_input_raises(overrides, shape, match):
  model = I3DResNet(num_classes=K, **{**TINY_3D, **overrides})
  with pytest.raises(ValueError, match=match):
    jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), jnp.zeros(shape))

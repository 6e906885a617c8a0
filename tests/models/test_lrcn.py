"""Tests for vit_video.models.lrcn: a per-frame CNN then an LSTM; order and frame dependence, readouts, ResNet."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_video.models.lrcn import LRCN
from vit_video.models.resnet import ResNet
from tests.models.helpers import random_variables

B, T, H, W, C, K = 2, 4, 8, 12, 3, 7
# Tower: H 8 -> 4 (pool) -> 2 (stride 2), W 12 -> 6 -> 3: fc0 takes 2 * 3 * 4 = 24; D = 6, L = 5.
TINY = dict(widths=(3, 4), kernel_sizes=(3, 3), strides=(1, 2), pools=(True, False), fc_widths=(6,),
            image_size=(H, W), lstm_features=5, in_channels=C)


def clip(seed=0, b=B, t=T):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(b, t, H, W, C)), jnp.float32)


@functools.partial(jax.jit, static_argnums=0)
def forward(model, variables, x):
  return model.apply(variables, x, train=False)


@pytest.mark.parametrize("readout", ["mean", "last"])
def test_output_depends_on_every_frame_and_on_their_order(readout):
  noise = clip(seed=1, b=1)[0]
  x = clip(b=1)
  x = jnp.concatenate([x] + [x.at[0, f].set(noise[f]) for f in range(T)] + [x[:, ::-1]])  # [T+2,T,H,W,C]
  model = LRCN(num_classes=K, readout=readout, **TINY)
  out = forward(model, random_variables(model, x), x)
  assert out.shape == (T + 2, K) and out.dtype == jnp.float32
  for row in range(1, T + 2):  # Frame f perturbed (rows 1..T), frames reversed (row T + 1).
    assert not np.allclose(out[row], out[0], atol=1e-5), row


def test_mean_readout_averages_the_last_readouts_of_every_prefix():
  """The LSTM is causal: h_t is the "last" readout of the clip cut after frame t; "mean" is their average,
  and the logits are the head applied to it."""
  x = clip()
  model = LRCN(num_classes=K, **TINY)
  v = random_variables(model, x)
  no_head = {"params": {k: p for k, p in v["params"].items() if k != "head"}}
  last = LRCN(num_classes=0, readout="last", **TINY)
  h = jnp.stack([forward(last, no_head, x[:, :t + 1]) for t in range(T)], axis=1)  # [B,T,L]
  mean = forward(LRCN(num_classes=0, **TINY), no_head, x)
  np.testing.assert_allclose(mean, h.mean(axis=1), rtol=1e-5, atol=1e-6)
  head = v["params"]["head"]
  np.testing.assert_allclose(forward(model, v, x), mean @ head["kernel"] + head["bias"], rtol=1e-5, atol=1e-6)


def test_resnet_backbone_features_feed_the_lstm():
  """backbone="resnet18": the LSTM's inputs are the ResNet's pooled features of every frame; train=True updates
  the ResNet's BatchNorm statistics."""
  x = clip()
  model = LRCN(num_classes=K, backbone="resnet18", resnet_width=4, lstm_features=5, in_channels=C)
  v = random_variables(model, x)
  _, state = jax.jit(lambda v, x: model.apply(v, x, train=False, capture_intermediates=True,
                                              mutable=["intermediates"]))(v, x)
  features = state["intermediates"]["cnn"]["__call__"][0]  # [B*T,D]
  resnet = ResNet(num_classes=0, stage_sizes=(2, 2, 2, 2), block="basic", width=4, in_channels=C)
  expected = jax.jit(lambda v, x: resnet.apply(v, x, train=False))(
      {"params": v["params"]["cnn"], "batch_stats": v["batch_stats"]["cnn"]}, x.reshape(B * T, H, W, C))
  assert features.shape == (B * T, 32)
  np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)
  _, new = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(v, x)
  assert not np.allclose(new["batch_stats"]["cnn"]["bn1"]["mean"], v["batch_stats"]["cnn"]["bn1"]["mean"])


def test_bfloat16_activations_float32_logits():
  x = clip()
  model = LRCN(num_classes=K, dtype=jnp.bfloat16, **TINY)
  v = random_variables(model, x)
  y, state = jax.jit(lambda v, x: model.apply(v, x, train=False, capture_intermediates=True,
                                              mutable=["intermediates"]))(v, x)
  assert y.dtype == jnp.float32 and all(p.dtype == jnp.float32 for p in jax.tree.leaves(v["params"]))
  inner = state["intermediates"]
  assert {inner["cnn"]["__call__"][0].dtype, inner["fc0"]["__call__"][0].dtype} == {jnp.dtype(jnp.bfloat16)}
  assert inner["lstm"]["__call__"][0].dtype == jnp.float32  # The LSTM state stays float32 (module docstring).


@pytest.mark.parametrize("overrides, shape, match", [
    ({}, (B, H, W, C), r"input shape \(2, 8, 12, 3\) is not \[B,T,H,W,C\] with C = in_channels = 3"),
    ({}, (B, T, H, W, 1), r"input shape \(2, 4, 8, 12, 1\) is not \[B,T,H,W,C\]"),
    ({}, (B, T, W, H, C), r"frame size \(H, W\) = \(12, 8\) is not image_size \(8, 12\)"),
    ({"image_size": (1, W)}, (B, T, 1, W, C), r"frame size \(H, W\) = \(1, 12\) is too small for the conv tower"),
    ({"backbone": "vgg16"}, (B, T, H, W, C), r"backbone 'vgg16' is not 'convnet' or one of \['resnet101'"),
    ({"readout": "max"}, (B, T, H, W, C), r"readout 'max' is not one of \['mean', 'last'\]"),
])
def test_bad_input_raises(overrides, shape, match):
  model = LRCN(num_classes=K, **{**TINY, **overrides})
  with pytest.raises(ValueError, match=match):
    model.init(jax.random.key(0), jnp.zeros(shape), train=False)

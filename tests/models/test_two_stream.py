"""Tests for vit_video.models.two_stream: score averaging, learned fusion, one stream alone, flow shape checks."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_video.models.two_stream import TwoStream
from tests.models.helpers import random_variables

B, T, H, W, K = 2, 4, 8, 12, 5  # Flow: 2(T-1) = 6 channels.
# Tower: H 8 -> 4 (pool) -> 2 (stride 2), W 12 -> 6 -> 3: fc0 takes 2 * 3 * 4 = 24 features; D = 6 per stream.
TINY = dict(widths=(3, 4), kernel_sizes=(3, 3), strides=(1, 2), pools=(True, False), fc_widths=(6,),
            image_size=(H, W), num_frames=T)


def noise(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


RGB, FLOW = noise((B, T, H, W, 3)), noise((B, H, W, 2 * (T - 1)), seed=1)


@functools.partial(jax.jit, static_argnums=0)
def forward(model, variables, rgb, flow):
  return model.apply(variables, rgb, flow, train=False)


def subset(variables, *names):
  """The params at the given '/'-paths, e.g. ("rgb_stream", "head/rgb")."""
  params = {}
  for name in names:
    *parents, leaf = name.split("/")
    source, target = variables["params"], params
    for p in parents:
      source, target = source[p], target.setdefault(p, {})
    target[leaf] = source[leaf]
  return {"params": params}


def test_average_fusion_is_the_mean_of_the_stream_softmaxes():
  model = TwoStream(num_classes=K, **TINY)
  v = random_variables(model, RGB, FLOW)
  out = forward(model, v, RGB, FLOW)
  assert out.shape == (B, K) and out.dtype == jnp.float32
  rgb = forward(TwoStream(num_classes=K, streams="rgb", **TINY), subset(v, "rgb_stream", "head/rgb"), RGB, None)
  flow = forward(TwoStream(num_classes=K, streams="flow", **TINY), subset(v, "flow_stream", "head/flow"), None, FLOW)
  assert not np.allclose(jax.nn.softmax(rgb), jax.nn.softmax(flow), atol=1e-3)
  np.testing.assert_allclose(jnp.exp(out), (jax.nn.softmax(rgb) + jax.nn.softmax(flow)) / 2, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(jax.nn.softmax(out), jnp.exp(out), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("streams", ["rgb", "flow"])
def test_one_stream_ignores_the_other_input(streams):
  model = TwoStream(num_classes=K, streams=streams, **TINY)
  v = random_variables(model, RGB, FLOW)
  assert set(v["params"]) == {f"{streams}_stream", "head"} and set(v["params"]["head"]) == {streams}
  out = forward(model, v, RGB, FLOW)
  other = (RGB, 3 * FLOW + 1) if streams == "rgb" else (3 * RGB + 1, FLOW)
  np.testing.assert_array_equal(forward(model, v, *other), out)
  alone = (RGB, None) if streams == "rgb" else (None, FLOW)
  np.testing.assert_array_equal(forward(model, v, *alone), out)
  moved = (RGB, FLOW.at[:, 3, 5, 2].add(5.0)) if streams == "flow" else (RGB.at[:, T // 2, 3, 5].add(5.0), FLOW)
  assert not np.allclose(forward(model, v, *moved), out)


def test_rgb_stream_sees_the_middle_frame_or_the_mean_frame():
  model = TwoStream(num_classes=K, streams="rgb", **TINY)
  v = random_variables(model, RGB, None)
  out = forward(model, v, RGB, None)
  others = RGB.at[:, jnp.array([0, 1, 3])].set(noise((B, 3, H, W, 3), seed=2))  # Every frame but T // 2 = 2.
  np.testing.assert_array_equal(forward(model, v, others, None), out)
  mean = TwoStream(num_classes=K, streams="rgb", rgb_input="mean", **TINY)
  constant = jnp.broadcast_to(RGB.mean(axis=1, keepdims=True), RGB.shape)  # Every frame is the mean frame.
  np.testing.assert_allclose(forward(mean, v, RGB, None), forward(model, v, constant, None), rtol=1e-5, atol=1e-6)


def test_learned_fusion_is_a_layer_over_the_concatenated_features():
  model = TwoStream(num_classes=K, fusion="learned", **TINY)
  v = random_variables(model, RGB, FLOW)
  assert set(v["params"]["head"]) == {"kernel", "bias"} and v["params"]["head"]["kernel"].shape == (12, K)
  features = forward(TwoStream(num_classes=0, **TINY), subset(v, "rgb_stream", "flow_stream"), RGB, FLOW)
  rgb = forward(TwoStream(num_classes=0, streams="rgb", **TINY), subset(v, "rgb_stream"), RGB, None)
  np.testing.assert_array_equal(features[:, :6], rgb)
  head = v["params"]["head"]
  np.testing.assert_allclose(forward(model, v, RGB, FLOW), features @ head["kernel"] + head["bias"],
                             rtol=1e-5, atol=1e-6)


def test_bfloat16_activations_float32_logits():
  model = TwoStream(num_classes=K, dtype=jnp.bfloat16, **TINY)
  v = random_variables(model, RGB, FLOW)
  y, state = jax.jit(lambda v: model.apply(v, RGB, FLOW, train=False, capture_intermediates=True,
                                           mutable=["intermediates"]))(v)
  assert y.dtype == jnp.float32
  inner = state["intermediates"]
  outputs = [inner["rgb_stream"], inner["flow_stream"], inner["head"]["rgb"], inner["head"]["flow"]]
  assert {out["__call__"][0].dtype for out in outputs} == {jnp.dtype(jnp.bfloat16)}


@pytest.mark.parametrize("overrides, rgb, flow, match", [
    ({}, (B, T, H, W, 3), (B, H, W, 5), r"flow has 5 channels, but 2\(T-1\) = 6 for T = num_frames = 4"),
    ({}, (B, T, H, W, 3), (B, H, W, 2 * T), r"flow has 8 channels, but 2\(T-1\) = 6"),
    ({}, (B, T + 1, H, W, 3), (B, H, W, 6), r"rgb shape \(2, 5, 8, 12, 3\) is not \[B,T,H,W,C\] with T = num_fr"),
    ({}, (B, T, H, W, 1), (B, H, W, 6), r"rgb shape \(2, 4, 8, 12, 1\) is not \[B,T,H,W,C\]"),
    ({}, (B, H, W, 3), (B, H, W, 6), r"rgb shape \(2, 8, 12, 3\) is not \[B,T,H,W,C\] with \(H, W\) = image_size"),
    ({}, (B, T, H, W, 3), (B, W, H, 6), r"flow shape \(2, 12, 8, 6\) is not \[B,H,W,2\(T-1\)\] with \(H, W\) ="),
    ({}, (B, T, H, W, 3), None, r"streams='both' needs flow \[B,H,W,2\(T-1\)\], got None"),
    ({}, (B, T, H, W, 3), (B + 1, H, W, 6), r"rgb batch 2 != flow batch 3"),
    ({"num_frames": 1}, (B, 1, H, W, 3), (B, H, W, 0), r"num_frames = 1: the temporal stream needs T >= 2"),
    ({"fusion": "max"}, (B, T, H, W, 3), (B, H, W, 6), r"fusion 'max' is not one of \['average', 'learned'\]"),
    ({"streams": "depth"}, (B, T, H, W, 3), (B, H, W, 6), r"streams 'depth' is not one of"),
    ({"rgb_input": "first"}, (B, T, H, W, 3), (B, H, W, 6), r"rgb_input 'first' is not one of"),
])
def test_bad_input_raises(overrides, rgb, flow, match):
  model = TwoStream(num_classes=K, **{**TINY, **overrides})
  with pytest.raises(ValueError, match=match):
    model.init(jax.random.key(0), jnp.zeros(rgb), None if flow is None else jnp.zeros(flow), train=False)

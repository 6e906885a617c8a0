"""Tests for vit_video.models.bit: BiT (timm layout, semantics and counts), dtypes, bad input.

(StdConv: tests/layers/test_conv.py; BiT's root and the hybrids' ResNetStem: tests/layers/test_stems.py.)
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from vit_video.models.bit import BiT, VARIANTS

# timm.create_model(f"resnetv2_{depth}x{factor}_bit") with 1000 classes: sum(p.numel() for p in parameters()),
# equal to the closed form. (The task brief had 236,337,576 for r152x2; timm and the formula give 236,335,208.)
TIMM_PARAMS = {
    "bit_r50x1": 25_549_352,
    "bit_r50x3": 217_319_080,
    "bit_r101x1": 44_541_480,
    "bit_r101x3": 387_934_888,
    "bit_r152x2": 236_335_208,
    "bit_r152x4": 936_533_224,
}
B, H, W, C, K = 2, 36, 44, 5, 7


def tiny_bit(**kw):
  return BiT(num_classes=kw.pop("num_classes", K), stage_sizes=(1, 2), width=4, num_groups=2, in_channels=C, **kw)


def images(seed=0, h=H, w=W):
  return jax.random.normal(jax.random.key(seed), (B, h, w, C))


def randomize(params, seed=1):
  """Random GroupNorm scales/biases (and head) so that every parameter changes the output."""
  rng = np.random.default_rng(seed)
  flat = traverse_util.flatten_dict(params)
  draw = lambda k, v: (rng.uniform(0.5, 1.5, v.shape) if k[-1] == "scale" else  # noqa: E731
                       rng.uniform(-0.3, 0.3, v.shape) if k[-1] == "bias" or k[0] == "head" else v)
  return traverse_util.unflatten_dict({k: jnp.asarray(draw(k, v), v.dtype) for k, v in flat.items()})


@pytest.fixture(scope="module")
def bit_params():
  """Initial parameters of `tiny_bit()`, shared so that each test does not pay for its own init."""
  return tiny_bit().init(jax.random.key(0), images(), train=False)["params"]


def count(model, shape, **kw):
  variables = jax.eval_shape(functools.partial(model.init, **kw), jax.random.key(0), jnp.zeros(shape))
  return sum(x.size for x in jax.tree.leaves(variables["params"]))


def test_every_variant_has_a_pinned_count():
  assert set(TIMM_PARAMS) == set(VARIANTS)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_param_count_matches_timm(name):
  assert count(BiT(num_classes=1000, **VARIANTS[name]), (1, 224, 224, 3), train=False) == TIMM_PARAMS[name]


def _reference_bit(p, x, pool_pad=0.0, num_groups=2):
  """timm's ResNetV2 BiT forward (stage_sizes (1, 2)) with explicit torch paddings, from the parameter dict.

  `pool_pad`: the value the stem's output is padded with before the max pool (timm: ConstantPad2d(1, 0.)).
  """
  def conv(x, k, stride, pad):
    k = jnp.asarray(k)
    k = (k - k.mean(axis=(0, 1, 2))) / jnp.sqrt(k.var(axis=(0, 1, 2)) + 1e-8)
    x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    return jax.lax.conv_general_dilated(x, k, (stride, stride), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))

  def gn_relu(x, p):
    g = x.reshape(*x.shape[:3], num_groups, -1)  # [B,H,W,G,C/G]
    g = (g - g.mean(axis=(1, 2, 4), keepdims=True)) / jnp.sqrt(g.var(axis=(1, 2, 4), keepdims=True) + 1e-5)
    return jax.nn.relu(g.reshape(x.shape) * p["scale"] + p["bias"])

  def unit(x, p, stride):
    pre = gn_relu(x, p["norm1"])
    shortcut = conv(pre, p["downsample_conv"]["kernel"], stride, 0) if "downsample_conv" in p else x
    y = conv(pre, p["conv1"]["kernel"], 1, 0)
    y = conv(gn_relu(y, p["norm2"]), p["conv2"]["kernel"], stride, 1)
    return conv(gn_relu(y, p["norm3"]), p["conv3"]["kernel"], 1, 0) + shortcut

  x = conv(x, p["stem_conv"]["kernel"], 2, 3)
  x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=pool_pad)
  x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "VALID")
  x = unit(x, p["stage0"]["block0"], 1)
  x = unit(x, p["stage1"]["block0"], 2)
  x = unit(x, p["stage1"]["block1"], 1)
  return gn_relu(x, p["norm"]).mean(axis=(1, 2)) @ p["head"]["kernel"] + p["head"]["bias"]


def test_forward_matches_timm_semantics_reference(bit_params):
  """32x40 puts even sizes under every strided layer, where the symmetric paddings differ from TF "SAME". The
  stem pads with zeros before the max pool (BiT's 'fixed'
  padding), which matters because nothing clips the stem's negative outputs: -inf padding gives other logits.
  (Full R50x1 was also checked against timm's resnetv2_50x1_bit with copied weights: max |diff| 3e-5.)"""
  x = images(h=32, w=40)
  model = tiny_bit()
  params = randomize(bit_params)
  y = jax.jit(functools.partial(model.apply, train=False))({"params": params}, x)
  reference = jax.jit(_reference_bit, static_argnames="pool_pad")
  np.testing.assert_allclose(y, reference(params, x), rtol=1e-4, atol=1e-5)
  assert not np.allclose(y, reference(params, x, pool_pad=-np.inf), rtol=1e-4, atol=1e-5)


def test_names_follow_timm(bit_params):
  names = {"/".join(k) for k in traverse_util.flatten_dict(bit_params)}
  assert names == {"stem_conv/kernel", "norm/scale", "norm/bias", "head/kernel", "head/bias",
                   "stage0/block0/downsample_conv/kernel", "stage1/block0/downsample_conv/kernel"} | {
                       f"stage{i}/block{j}/{layer}{k}/{leaf}"
                       for i, j in [(0, 0), (1, 0), (1, 1)] for k in (1, 2, 3)
                       for layer, leaf in [("conv", "kernel"), ("norm", "scale"), ("norm", "bias")]}


def test_zero_init_head_and_features(bit_params):
  """The head starts at zero (logits 0), the features do not; num_classes=0 returns the features [B,D], and
  the logits are the head applied to them."""
  x = images()
  model = tiny_bit()
  params = bit_params
  assert not np.any(params["head"]["kernel"]) and not np.any(model.apply({"params": params}, x, train=False))
  params = randomize(params)
  trunk = {k: v for k, v in params.items() if k != "head"}
  feats = tiny_bit(num_classes=0).apply({"params": trunk}, x, train=False)
  assert feats.shape == (B, 4 * 4 * 2) and feats.dtype == jnp.float32
  assert np.all(np.std(np.asarray(feats), axis=0) > 0)
  np.testing.assert_allclose(model.apply({"params": params}, x, train=False),
                             feats @ params["head"]["kernel"] + params["head"]["bias"], rtol=1e-5, atol=1e-5)


def _assert_bf16_intermediates(state, norm_prefix):
  flat = traverse_util.flatten_dict(state["intermediates"])
  inner = {k: a[0].dtype for k, a in flat.items() if k != ("__call__",)}
  assert len(inner) > 10 and any(k[-2].startswith(norm_prefix) for k in inner)
  assert {k: d for k, d in inner.items() if d != jnp.bfloat16} == {}


def test_bit_bfloat16_activations_float32_logits(bit_params):
  """GroupNorm, StdConv and the head compute in bf16; params stay float32; logits come back float32."""
  x = images()
  model = tiny_bit(dtype=jnp.bfloat16)
  shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)["params"]
  assert jax.tree.map(lambda a: a.dtype, shapes) == jax.tree.map(lambda a: jnp.dtype(jnp.float32), bit_params)
  y, state = model.apply({"params": randomize(bit_params)}, x, train=False, capture_intermediates=True,
                         mutable=["intermediates"])
  assert y.dtype == jnp.float32
  _assert_bf16_intermediates(state, "norm")


@pytest.mark.parametrize("shape", [(B, H, W), (B, H, W, 3), (B, 1, H, W, C)])
def test_bit_bad_input_shape_raises(shape):
  with pytest.raises(ValueError, match=r"input shape \(.*\) is not \[B,H,W,C\] with C = in_channels = 5"):
    tiny_bit().init(jax.random.key(0), jnp.zeros(shape), train=False)


def test_bit_empty_stages_raise():
  with pytest.raises(ValueError, match="stage_sizes is empty"):
    BiT(num_classes=K, stage_sizes=(), in_channels=C).init(jax.random.key(0), images(), train=False)

"""layers/stems.py: the ViT hybrids' ResNetStem (vit_jax names, semantics, counts, strides, dtypes) and BiT's root.

(BiT's root is also checked through the whole BiT against a timm-semantics reference in tests/models/test_bit.py.)
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from vit_video.layers.stems import BiTRoot, ResNetStem

B, H, W, C = 2, 36, 44, 5


def tiny_stem(stage_sizes, **kw):
  return ResNetStem(stage_sizes=stage_sizes, width=4, num_groups=2, **kw)


def images(seed=0, h=H, w=W):
  return jax.random.normal(jax.random.key(seed), (B, h, w, C))


def randomize(params, seed=1):
  """Random GroupNorm scales/biases so that every parameter changes the output."""
  rng = np.random.default_rng(seed)
  flat = traverse_util.flatten_dict(params)
  draw = lambda k, v: (rng.uniform(0.5, 1.5, v.shape) if k[-1] == "scale" else  # noqa: E731
                       rng.uniform(-0.3, 0.3, v.shape) if k[-1] == "bias" else v)
  return traverse_util.unflatten_dict({k: jnp.asarray(draw(k, v), v.dtype) for k, v in flat.items()})


def count(model, shape, **kw):
  variables = jax.eval_shape(functools.partial(model.init, **kw), jax.random.key(0), jnp.zeros(shape))
  return sum(x.size for x in jax.tree.leaves(variables["params"]))


@pytest.fixture(scope="module")
def stem_params():
  """Initial parameters of `tiny_stem((2, 1))`."""
  return tiny_stem((2, 1)).init(jax.random.key(0), images())["params"]


@pytest.mark.parametrize("stage_sizes, expected", [((), 9_536), ((3, 4, 9), 11_894_848)])
def test_stem_param_count(stage_sizes, expected):
  """R50+ViT-B/16's trunk has as many parameters as timm's hybrid backbone ResNetV2((3, 4, 9), preact=False)."""
  assert count(ResNetStem(stage_sizes=stage_sizes), (1, 224, 224, 3)) == expected


def test_stem_bfloat16_activations(stem_params):
  x = images()
  model = tiny_stem((2, 1), dtype=jnp.bfloat16)
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
  assert jax.tree.map(lambda a: a.dtype, shapes) == jax.tree.map(lambda a: jnp.dtype(jnp.float32), stem_params)
  y, state = model.apply({"params": stem_params}, x, capture_intermediates=True, mutable=["intermediates"])
  assert y.dtype == jnp.bfloat16
  flat = traverse_util.flatten_dict(state["intermediates"])
  inner = {k: a[0].dtype for k, a in flat.items() if k != ("__call__",)}
  assert len(inner) > 10 and any(k[-2].startswith("gn") for k in inner)
  assert {k: d for k, d in inner.items() if d != jnp.bfloat16} == {}


@pytest.mark.parametrize("stage_sizes, stride, channels", [((), 4, 4), ((3,), 4, 16), ((3, 4, 9), 16, 64)])
def test_stem_output_stride_and_channels(stage_sizes, stride, channels):
  """[B,36,44,C] -> [B,ceil(36/R),ceil(44/R),D], R = 4 * 2**(S-1); D = width, else 4 * width * 2**(S-1)."""
  y = jax.eval_shape(tiny_stem(stage_sizes).init_with_output, jax.random.key(0), images())[0]
  assert y.shape == (B, -(-H // stride), -(-W // stride), channels)


def test_stem_names_are_vit_jax(stem_params):
  def gn(p):
    return {f"{p}/scale", f"{p}/bias"}

  def unit(p, proj):
    names = {f"{p}/conv1/kernel", f"{p}/conv2/kernel", f"{p}/conv3/kernel"} | gn(f"{p}/gn1") | gn(f"{p}/gn2")
    return names | gn(f"{p}/gn3") | ({f"{p}/conv_proj/kernel"} | gn(f"{p}/gn_proj") if proj else set())

  names = {"/".join(k) for k in traverse_util.flatten_dict(stem_params)}
  assert names == ({"conv_root/kernel"} | gn("gn_root") | unit("block1/unit1", True) | unit("block1/unit2", False)
                   | unit("block2/unit1", True))


def _tf_same_pad(x, k, s, value=0.0):
  """TF "SAME": pad max((ceil(n/s)-1)*s + k - n, 0) in total, the odd one at the end."""
  pads = []
  for n in x.shape[1:3]:
    total = max((-(-n // s) - 1) * s + k - n, 0)
    pads.append((total // 2, total - total // 2))
  return jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=value)


def _reference_stem(p, x, num_groups=2):
  """vit_jax's hybrid trunk (stage_sizes (2, 1)): post-activation units, (w - mean) / (std + 1e-5), GN eps 1e-6."""
  def conv(x, k, stride):
    k = (k - k.mean(axis=(0, 1, 2))) / (k.std(axis=(0, 1, 2)) + 1e-5)
    return jax.lax.conv_general_dilated(_tf_same_pad(x, k.shape[0], stride), k, (stride, stride), "VALID",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

  def gn(x, p):
    g = x.reshape(*x.shape[:3], num_groups, -1)  # [B,H,W,G,C/G]
    g = (g - g.mean(axis=(1, 2, 4), keepdims=True)) / jnp.sqrt(g.var(axis=(1, 2, 4), keepdims=True) + 1e-6)
    return g.reshape(x.shape) * p["scale"] + p["bias"]

  def unit(x, p, stride):
    residual = gn(conv(x, p["conv_proj"]["kernel"], stride), p["gn_proj"]) if "conv_proj" in p else x
    y = jax.nn.relu(gn(conv(x, p["conv1"]["kernel"], 1), p["gn1"]))
    y = jax.nn.relu(gn(conv(y, p["conv2"]["kernel"], stride), p["gn2"]))
    return jax.nn.relu(residual + gn(conv(y, p["conv3"]["kernel"], 1), p["gn3"]))

  x = jax.nn.relu(gn(conv(x, p["conv_root"]["kernel"], 2), p["gn_root"]))
  x = jax.lax.reduce_window(_tf_same_pad(x, 3, 2, -jnp.inf), -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1),
                            "VALID")
  x = unit(unit(x, p["block1"]["unit1"], 1), p["block1"]["unit2"], 1)
  return unit(x, p["block2"]["unit1"], 2)


def test_stem_matches_vit_jax_semantics_reference(stem_params):
  """TF "SAME" paddings (asymmetric at stride 2 on even sizes, as 32x40 gives every strided layer) and vit_jax's
  unit structure.
  (R50's (3, 4, 9) trunk was also checked against vit_jax's own modules with the same parameters: identical
  parameter tree, max |diff| 2e-5 relative.)"""
  model = tiny_stem((2, 1))
  params = randomize(stem_params)
  x = images(h=32, w=40)
  np.testing.assert_allclose(jax.jit(model.apply)({"params": params}, x), jax.jit(_reference_stem)(params, x),
                             rtol=1e-4, atol=1e-5)


def test_stem_units_start_as_identity(stem_params):
  """gn3's zero-init scale: a unit without projection maps its (post-relu) input to itself at init."""
  x = images()
  model = tiny_stem((2, 1))
  assert not np.any(stem_params["block1"]["unit2"]["gn3"]["scale"])
  _, state = model.apply({"params": stem_params}, x, capture_intermediates=True, mutable=["intermediates"])
  units = state["intermediates"]["block1"]
  np.testing.assert_array_equal(units["unit2"]["__call__"][0], units["unit1"]["__call__"][0])
  _, state = model.apply({"params": randomize(stem_params)}, x, capture_intermediates=True,
                         mutable=["intermediates"])
  units = state["intermediates"]["block1"]
  assert not np.allclose(units["unit2"]["__call__"][0], units["unit1"]["__call__"][0])


def test_stem_bad_rank_raises():
  with pytest.raises(ValueError, match=r"input shape \(2, 36, 44\) is not \[B,H,W,C\]"):
    tiny_stem(()).init(jax.random.key(0), jnp.zeros((B, H, W)))


def test_bit_root_has_one_kernel_and_quarters_the_size():
  """BiTRoot keeps its conv's `kernel` as its own parameter (BiT's `stem_conv/kernel`); odd sides round up."""
  root = BiTRoot(6)
  x = images(h=H + 1)  # 37 x 44
  variables = root.init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, variables) == {"params": {"kernel": (7, 7, C, 6)}}
  assert root.apply(variables, x).shape == (B, 10, 11, 6)  # ceil(37/4), ceil(44/4)

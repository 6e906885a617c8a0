"""Tests for vit_video.models.resnet: torchvision parameter counts, BatchNorm modes, padding, dtype."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from vit_video.models.resnet import ResNet, VARIANTS

# torchvision.models.<name>(num_classes=1000): sum(p.numel() for p in model.parameters()).
TORCHVISION_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
}
B, H, W, C, K = 2, 36, 44, 5, 7


def tiny(block="bottleneck", **kw):
  return ResNet(num_classes=kw.pop("num_classes", K), stage_sizes=(1, 2), block=block, width=4, in_channels=C,
                **kw)


def images(seed=0, b=B):
  return jax.random.normal(jax.random.key(seed), (b, H, W, C))


def randomize(variables, seed=1):
  """Random BN scales/biases/running stats so that every parameter changes the output."""
  rng = np.random.default_rng(seed)
  draw = {"scale": (0.5, 1.5), "bias": (-0.3, 0.3), "mean": (-0.3, 0.3), "var": (0.5, 2.0)}
  flat = traverse_util.flatten_dict(variables)
  return traverse_util.unflatten_dict({
      k: jnp.asarray(rng.uniform(*draw[k[-1]], v.shape), v.dtype) if k[-1] in draw and k[-2] != "fc" else v
      for k, v in flat.items()})


def init(model, x):
  """model.init jitted: one compile per model and input instead of one per op (and per parameter shape)."""
  return jax.jit(functools.partial(model.init, train=False))(jax.random.key(0), x)


@functools.partial(jax.jit, static_argnums=0)
def logits_of(model, variables, x):
  return model.apply(variables, x, train=False)


def test_every_variant_has_a_pinned_count():
  assert set(TORCHVISION_PARAMS) == set(VARIANTS)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_param_count_matches_torchvision(name):
  model = ResNet(num_classes=1000, **VARIANTS[name])
  variables = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                             jnp.zeros((1, 224, 224, 3)))
  assert sum(x.size for x in jax.tree.leaves(variables["params"])) == TORCHVISION_PARAMS[name]


@pytest.mark.parametrize("block, dim", [("basic", 8), ("bottleneck", 32)])
def test_features_and_logits(block, dim):
  """num_classes=0 gives the pooled features [B,D]; the logits are the fc layer applied to them."""
  x = images()
  model = tiny(block)
  variables = randomize(init(model, x))
  logits = logits_of(model, variables, x)
  assert logits.shape == (B, K) and logits.dtype == jnp.float32
  no_fc = {"params": {k: v for k, v in variables["params"].items() if k != "fc"},
           "batch_stats": variables["batch_stats"]}
  feats = logits_of(tiny(block, num_classes=0), no_fc, x)
  assert feats.shape == (B, dim)
  fc = variables["params"]["fc"]
  np.testing.assert_allclose(logits, feats @ fc["kernel"] + fc["bias"], rtol=1e-5, atol=1e-5)


def test_names_follow_torchvision():
  variables = jax.eval_shape(functools.partial(tiny().init, train=False), jax.random.key(0), images())
  names = {"/".join(k) for k in traverse_util.flatten_dict(variables["params"])}
  assert {"conv1/kernel", "bn1/scale", "bn1/bias", "layer1/block0/conv3/kernel",
          "layer1/block0/downsample_conv/kernel", "layer1/block0/downsample_bn/scale",
          "layer2/block1/bn3/bias", "fc/kernel", "fc/bias"} <= names
  assert not any(n.startswith("layer2/block1/downsample") for n in names)
  stats = {"/".join(k) for k in traverse_util.flatten_dict(variables["batch_stats"])}
  assert {"bn1/mean", "bn1/var", "layer2/block0/downsample_bn/var"} <= stats


def _reference_forward(v, x):
  """Eval-mode torchvision ResNet (basic blocks, stage_sizes (1, 2)) written with explicit torch paddings."""
  p, s = v["params"], v["batch_stats"]

  def conv(x, k, stride):
    pad = k.shape[0] // 2  # torch Conv2d(padding=k // 2)
    x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    return jax.lax.conv_general_dilated(x, k, (stride, stride), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))

  def bn(x, p, s):
    return (x - s["mean"]) / jnp.sqrt(s["var"] + 1e-5) * p["scale"] + p["bias"]

  def block(x, p, s, stride):
    y = jax.nn.relu(bn(conv(x, p["conv1"]["kernel"], stride), p["bn1"], s["bn1"]))
    y = bn(conv(y, p["conv2"]["kernel"], 1), p["bn2"], s["bn2"])
    if "downsample_conv" in p:
      x = bn(conv(x, p["downsample_conv"]["kernel"], stride), p["downsample_bn"], s["downsample_bn"])
    return jax.nn.relu(x + y)

  x = jax.nn.relu(bn(conv(x, p["conv1"]["kernel"], 2), p["bn1"], s["bn1"]))
  x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)  # torch MaxPool2d(3, 2, padding=1)
  x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "VALID")
  x = block(x, p["layer1"]["block0"], s["layer1"]["block0"], 1)
  x = block(x, p["layer2"]["block0"], s["layer2"]["block0"], 2)
  x = block(x, p["layer2"]["block1"], s["layer2"]["block1"], 1)
  return x.mean(axis=(1, 2)) @ p["fc"]["kernel"] + p["fc"]["bias"]


def test_eval_forward_matches_torch_semantics_reference():
  """32x40 puts even sizes under every strided layer, where torch's symmetric padding differs from TF "SAME".
  (Full resnet18/50 were also checked against torchvision with copied weights: max |diff| 2e-5.)"""
  x = jax.random.normal(jax.random.key(0), (B, 32, 40, C))
  model = tiny("basic")
  v = randomize(init(model, x))
  np.testing.assert_allclose(logits_of(model, v, x), jax.jit(_reference_forward)(v, x), rtol=1e-4, atol=1e-5)


def test_train_updates_batch_stats_with_momentum_0_9():
  """bn1's running mean/var move 10% of the way to conv1's batch mean/(biased) variance; all stats move."""
  x = images()
  model = tiny()
  variables = model.init(jax.random.key(0), x, train=False)
  _, state = model.apply(variables, x, train=True, mutable=["batch_stats", "intermediates"],
                         capture_intermediates=True)
  h = state["intermediates"]["conv1"]["__call__"][0]  # [B,H/2,W/2,width]
  new = state["batch_stats"]["bn1"]
  np.testing.assert_allclose(new["mean"], 0.1 * h.mean(axis=(0, 1, 2)), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(new["var"], 0.9 + 0.1 * h.var(axis=(0, 1, 2)), rtol=1e-5, atol=1e-6)
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), variables["batch_stats"], state["batch_stats"])
  assert all(jax.tree.leaves(changed))


def test_eval_uses_running_averages():
  """In eval an example's logits do not depend on the rest of the batch; in train they do (batch stats)."""
  x = images()
  x2 = x.at[1].set(3.0 * x[1] + 1.0)
  model = tiny()
  v = randomize(model.init(jax.random.key(0), x, train=False))
  np.testing.assert_array_equal(model.apply(v, x, train=False)[0], model.apply(v, x2, train=False)[0])
  y, _ = model.apply(v, x, train=True, mutable=["batch_stats"])
  y2, _ = model.apply(v, x2, train=True, mutable=["batch_stats"])
  assert not np.allclose(y[0], y2[0])


@pytest.mark.parametrize("block, last_bn", [("basic", "bn2"), ("bottleneck", "bn3")])
def test_zero_init_residual(block, last_bn):
  """With zero_init_residual a block without projection starts as the identity (on post-relu input)."""
  x = images()
  outputs = {}
  for zero in (True, False):
    model = tiny(block, zero_init_residual=zero)
    v = model.init(jax.random.key(0), x, train=False)
    assert bool(jnp.all(v["params"]["layer2"]["block1"][last_bn]["scale"] == 0)) == zero
    _, state = model.apply(v, x, train=False, capture_intermediates=True, mutable=["intermediates"])
    layer2 = state["intermediates"]["layer2"]
    outputs[zero] = (layer2["block0"]["__call__"][0], layer2["block1"]["__call__"][0])
  np.testing.assert_array_equal(*outputs[True])
  assert not np.allclose(*outputs[False])


@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_bfloat16_activations_float32_logits(block):
  x = images()
  model = tiny(block, dtype=jnp.bfloat16)
  v = jax.eval_shape(lambda x: init(model, x), x)  # dtypes only: traced, nothing computed
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(v["params"]))
  y, state = jax.eval_shape(lambda v, x: model.apply(v, x, train=True, capture_intermediates=True,
                                                     mutable=["intermediates", "batch_stats"]), v, x)
  assert y.dtype == jnp.float32
  inner = {k: a for k, a in traverse_util.flatten_dict(state["intermediates"]).items() if k != ("__call__",)}
  assert len(inner) > 10
  assert {k: a[0].dtype for k, a in inner.items() if a[0].dtype != jnp.bfloat16} == {}


@pytest.mark.parametrize("shape", [(B, H, W), (B, H, W, 3), (B, 1, H, W, C)])
def test_bad_input_shape_raises(shape):
  with pytest.raises(ValueError, match=r"input shape \(.*\) is not \[B,H,W,C\] with C = in_channels = 5"):
    tiny().init(jax.random.key(0), jnp.zeros(shape), train=False)


def test_bad_block_and_stages_raise():
  with pytest.raises(ValueError, match="block 'wide' is not one of"):
    tiny("wide").init(jax.random.key(0), images(), train=False)
  with pytest.raises(ValueError, match="stage_sizes is empty"):
    ResNet(num_classes=K, stage_sizes=(), block="basic", in_channels=C).init(
        jax.random.key(0), images(), train=False)

"""ConvNeXt: parameter counts, the depthwise conv's information flow, layer scale, stochastic depth, dtypes, bad input.

Equality with timm itself is in tests/checkpoints/test_timm_convnext.py; the roadmap in test_convnext_roadmap.py.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_video.models import convnext

# name -> parameter count at 1000 classes: timm 1.0.31's convnext_{tiny,small,base,large}
# (tests/checkpoints/test_timm_convnext.py rebuilds them).
PARAM_COUNTS = {
    "convnext_t": 28_589_128,
    "convnext_s": 50_223_688,
    "convnext_b": 88_591_464,
    "convnext_l": 197_767_336,
}
# The paper's Table 1 (ImageNet-1k at 224), in millions.
PAPER_MILLIONS = {"convnext_t": 29, "convnext_s": 50, "convnext_b": 89, "convnext_l": 198}

TINY = dict(num_classes=5, depths=(1, 2), dims=(8, 12))
B, H, W, C = 2, 20, 28, 3  # 20 x 28 -> stage maps 5 x 7 and 2 x 3 (floored, as timm).
KERNEL, D = 3, 6  # Block tests: a block of width 6 with a 3 x 3 depthwise conv, on a 5 x 7 map.


def _random_variables(module, *args, seed=0, **kwargs):
  """Random variables without `init`'s PRNG compiles: LayerNorm scales and gamma U(0.5, 1.5), kernels
  N(0, 1/fan_in), biases N(0, 0.3^2)."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(functools.partial(module.init, **kwargs), jax.random.key(0), *args)

  def draw(path, leaf):
    name = path[-1].key
    if name in ("scale", "gamma"):
      return jnp.asarray(rng.uniform(0.5, 1.5, leaf.shape), leaf.dtype)
    std = np.prod(leaf.shape[:-1]) ** -0.5 if name == "kernel" else 0.3
    return jnp.asarray(rng.normal(0, std, leaf.shape), leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, shapes)


@functools.partial(jax.jit, static_argnums=0, static_argnames="deterministic")
def _block_apply(block, variables, x, *, deterministic=True, rng=None):
  """(output, intermediates) of a block, jitted: one compile per block and shape instead of one per op."""
  out, state = block.apply(variables, x, deterministic=deterministic, rngs=None if rng is None else {"dropout": rng},
                           capture_intermediates=True, mutable=["intermediates"])
  return out, state["intermediates"]


def _init(model, shape, **kwargs):
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), **kwargs))


@pytest.mark.parametrize("name", sorted(convnext.MODELS))
def test_parameter_counts_are_pinned_and_match_the_paper(name):
  shapes = _init(convnext.MODELS[name](num_classes=1000), (1, 224, 224, 3), train=False)
  count = int(sum(np.prod(a.shape) for a in jax.tree.leaves(shapes["params"])))
  assert count == PARAM_COUNTS[name]
  assert round(count / 1e6) == PAPER_MILLIONS[name]


def test_every_named_variant_has_a_pinned_count():
  assert set(PARAM_COUNTS) == set(convnext.MODELS) == set(PAPER_MILLIONS)


def test_parameter_layout_and_output_shapes():
  model = convnext.ConvNeXt(**TINY)
  params = _init(model, (B, H, W, C), train=False)["params"]
  assert set(params) == {"stem_conv", "stem_norm", "stage_0", "stage_1", "norm", "head"}
  assert set(params["stage_0"]) == {"block_0"}
  assert set(params["stage_1"]) == {"downsample_norm", "downsample_conv", "block_0", "block_1"}
  assert params["stem_conv"]["kernel"].shape == (4, 4, C, 8)
  assert params["stage_1"]["downsample_conv"]["kernel"].shape == (2, 2, 8, 12)
  block = params["stage_1"]["block_1"]
  assert set(block) == {"conv_dw", "norm", "fc1", "fc2", "gamma"}
  assert block["conv_dw"]["kernel"].shape == (7, 7, 1, 12)  # depthwise: one input channel per output channel
  assert block["fc1"]["kernel"].shape == (12, 48) and block["fc2"]["kernel"].shape == (48, 12)
  assert params["head"]["kernel"].shape == (12, 5)
  x = jax.ShapeDtypeStruct((B, H, W, C), jnp.float32)
  logits = jax.eval_shape(lambda p, x: model.apply({"params": p}, x, train=False), params, x)
  assert logits.shape == (B, 5) and logits.dtype == jnp.float32
  headless = convnext.ConvNeXt(**dict(TINY, num_classes=0))
  features = jax.eval_shape(lambda p, x: headless.apply({"params": p}, x, train=False),
                            {k: v for k, v in params.items() if k != "head"}, x)
  assert features.shape == (B, 12) and features.dtype == jnp.float32


def test_depthwise_conv_never_mixes_channels():
  """Perturb one channel of one pixel of a block's input: the depthwise conv's output moves in that channel alone,
  and only within the k x k neighbourhood; the block's output (after the MLP) moves in every channel there."""
  block = convnext.ConvNeXtBlock(kernel_size=KERNEL)
  x = jnp.asarray(np.random.default_rng(1).normal(size=(1, 5, 7, D)), jnp.float32)
  x = jnp.concatenate([x, x.at[0, 2, 3, 4].add(3.0)])  # [2,H,W,D]: as it is, and bumped at (2, 3), channel 4
  out, inter = _block_apply(block, _random_variables(block, x, deterministic=True), x)
  conv = np.asarray(inter["conv_dw"]["__call__"][0])
  conv_moved = np.abs(conv[1] - conv[0]) > 1e-6  # [H,W,D]
  near = np.zeros((5, 7), bool)
  near[1:4, 2:5] = True  # the 3 x 3 neighbourhood of (2, 3)
  expected = np.zeros((5, 7, D), bool)
  expected[near, 4] = True
  np.testing.assert_array_equal(conv_moved, expected)
  out_moved = np.abs(np.asarray(out[1] - out[0])) > 1e-6  # [H,W,D]
  np.testing.assert_array_equal(out_moved, np.broadcast_to(near[..., None], (5, 7, D)))


def test_layer_scale_starts_at_its_value_so_each_block_starts_near_the_identity():
  block = convnext.ConvNeXtBlock(kernel_size=KERNEL, layer_scale_init=1e-6)
  x = jnp.asarray(np.random.default_rng(2).normal(size=(B, 5, 7, D)), jnp.float32)
  # The unsafe_rbg PRNG compiles in a third of threefry's time; the kernels' values do not matter here.
  variables = jax.jit(functools.partial(block.init, deterministic=True))(jax.random.key(0, impl="unsafe_rbg"), x)
  np.testing.assert_array_equal(variables["params"]["gamma"], np.full((D,), 1e-6, np.float32))
  out, _ = _block_apply(block, variables, x)
  assert 0 < float(jnp.max(jnp.abs(out - x))) < 1e-5
  no_scale = _init(convnext.ConvNeXtBlock(kernel_size=KERNEL, layer_scale_init=None), x.shape, deterministic=True)
  assert "gamma" not in no_scale["params"]


def test_stochastic_depth_drops_whole_residual_branches_per_example_in_training_only():
  block = convnext.ConvNeXtBlock(kernel_size=KERNEL, drop_path_rate=0.5)
  x = jnp.asarray(np.random.default_rng(3).normal(size=(16, 5, 7, D)), jnp.float32)
  variables = _random_variables(block, x, deterministic=True)
  branch = _block_apply(block, variables, x)[0] - x  # eval: the whole branch, unscaled
  out, _ = _block_apply(block, variables, x, deterministic=False, rng=jax.random.key(4))
  out, x, branch = np.asarray(out), np.asarray(x), np.asarray(branch)
  dropped = [bool(np.allclose(out[b], x[b], atol=1e-6)) for b in range(16)]
  for b in range(16):
    expected = x[b] if dropped[b] else x[b] + 2 * branch[b]  # kept branches are scaled by 1 / (1 - rate)
    np.testing.assert_allclose(out[b], expected, rtol=1e-5, atol=1e-5)
  assert 0 < sum(dropped) < 16


def test_stochastic_depth_grows_linearly_over_all_blocks():
  seen = []

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, convnext.ConvNeXtBlock) and context.method_name == "__call__":
      seen.append(context.module.drop_path_rate)
    return next_fun(*args, **kwargs)

  model = convnext.ConvNeXt(**dict(TINY, depths=(2, 3)), drop_path_rate=0.4)
  with nn.intercept_methods(record):
    _init(model, (1, H, W, C), train=False)
  np.testing.assert_allclose(seen, [0.0, 0.1, 0.2, 0.3, 0.4])


def test_bf16_compute_runs_in_bf16_and_logits_are_float32():
  model = convnext.ConvNeXt(**TINY, dtype=jnp.bfloat16)
  x = jnp.zeros((B, H, W, C))
  variables = _init(model, x.shape, train=False)
  logits, state = jax.eval_shape(lambda v: model.apply(v, x, train=False, capture_intermediates=True,
                                                       mutable=["intermediates"]), variables)
  assert logits.dtype == jnp.float32
  inter = state["intermediates"]
  assert inter["stem_conv"]["__call__"][0].dtype == jnp.bfloat16
  assert inter["stage_1"]["downsample_conv"]["__call__"][0].dtype == jnp.bfloat16
  assert inter["stage_1"]["block_1"]["conv_dw"]["__call__"][0].dtype == jnp.bfloat16
  assert inter["stage_1"]["block_1"]["fc2"]["__call__"][0].dtype == jnp.bfloat16
  assert inter["stage_1"]["block_1"]["__call__"][0].dtype == jnp.bfloat16
  assert {leaf.dtype for leaf in jax.tree.leaves(variables["params"])} == {jnp.dtype(jnp.float32)}


def test_bad_input_raises_naming_the_sizes():
  model = convnext.ConvNeXt(**TINY)
  with pytest.raises(ValueError, match=r"ConvNeXt expects images \[B,H,W,3\]; got shape \(1, 20, 28, 4\)"):
    _init(model, (1, 20, 28, 4), train=False)
  with pytest.raises(ValueError, match=r"image size \(20, 7\) is too small for 2 stages .* at least 8"):
    _init(model, (1, 20, 7, 3), train=False)
  with pytest.raises(ValueError, match=r"depths \(1, 2\) and dims \(8, 12, 16\) must have one entry per stage"):
    _init(convnext.ConvNeXt(**dict(TINY, dims=(8, 12, 16))), (1, 20, 28, 3), train=False)

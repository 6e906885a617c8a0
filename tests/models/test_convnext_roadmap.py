"""The roadmap from ResNet-50 to ConvNeXt-T: each step's FLOPs are the paper's Figure 2's (to 2%) and move as they
do, its ends are ResNet-50 and ConvNeXt-T exactly, and each step's blocks have the layers it names. Full size, through
one `jax.eval_shape` of `init` per step (its intermediates give every layer's output shape)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from tests.models.test_convnext import PARAM_COUNTS as CONVNEXT_PARAM_COUNTS
from tests.models.test_convnext import _random_variables
from tests.models.test_resnet import TORCHVISION_PARAMS
from vit_video.models import convnext
from vit_video.models.convnext_roadmap import ROADMAP, ConvNeXtRoadmap

# step -> parameter count at 224 x 224 and 1000 classes.
PARAM_COUNTS = {
    "resnet50": 25_557_032,
    "stage_ratio": 28_628_520,
    "patchify": 28_622_184,
    "depthwise": 33_761_032,
    "inverted_bottleneck": 25_851_496,
    "large_kernel": 25_863_592,
    "micro": 28_589_128,
}
# Figure 2's "GFLOPs": multiply-accumulates (MACs) of the convs and linear layers, fvcore's count. The paper's
# intermediate step, depthwise conv moved up but still 3x3, has 4.1.
PAPER_GMACS = {"resnet50": 4.1, "stage_ratio": 4.5, "patchify": 4.4, "depthwise": 5.3, "inverted_bottleneck": 4.6,
               "large_kernel": 4.2, "micro": 4.5}
IMAGE = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)


@functools.cache
def _step(step: str) -> tuple[dict, float]:
  """(variable shapes, GMACs at 224 x 224) of the step's network. A layer with a kernel costs
  prod(its output's spatial shape) * prod(kernel shape) MACs: H'W' k k C/g O for a conv of g groups, H W C O for a
  Dense on `[1,H,W,C]`, C K for the head."""
  model = ConvNeXtRoadmap(num_classes=1000, **ROADMAP[step])
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False, capture_intermediates=True), IMAGE)
  outputs = traverse_util.flatten_dict(shapes.pop("intermediates"))
  macs = sum(np.prod(outputs[path[:-1] + ("__call__",)][0].shape[1:-1]) * np.prod(kernel.shape)
             for path, kernel in traverse_util.flatten_dict(shapes["params"]).items() if path[-1] == "kernel")
  return shapes, macs / 1e9


def test_every_step_has_a_pinned_count_and_the_papers_flops():
  assert list(PARAM_COUNTS) == list(ROADMAP) == list(PAPER_GMACS)


@pytest.mark.parametrize("step", list(ROADMAP))
def test_parameter_counts_are_pinned(step):
  shapes, _ = _step(step)
  assert int(sum(np.prod(a.shape) for a in jax.tree.leaves(shapes["params"]))) == PARAM_COUNTS[step]


def test_each_step_has_the_papers_flops_and_moves_them_as_it_says():
  ours = {step: _step(step)[1] for step in ROADMAP}
  print({step: round(float(g), 3) for step, g in ours.items()})
  for step, gmacs in ours.items():
    assert abs(gmacs / PAPER_GMACS[step] - 1) < 0.02, (step, gmacs)
  steps = list(ROADMAP)
  for before, after in zip(steps, steps[1:]):
    assert np.sign(ours[after] - ours[before]) == np.sign(PAPER_GMACS[after] - PAPER_GMACS[before]), (before, after)
  assert round(ours["resnet50"], 2) == 4.09  # torchvision's published "GFLOPS" of resnet50


def test_the_walk_starts_at_resnet50_with_batch_norm():
  shapes, _ = _step("resnet50")
  assert PARAM_COUNTS["resnet50"] == TORCHVISION_PARAMS["resnet50"]
  assert "batch_stats" in shapes
  block = shapes["params"]["stage_1"]["block_0"]  # the first block of a stage: stride 2, a projection shortcut
  assert set(block) == {"fc1", "norm1", "conv", "norm", "fc2", "norm2", "shortcut_conv", "shortcut_norm"}
  assert block["conv"]["kernel"].shape == (3, 3, 128, 128) and block["fc2"]["kernel"].shape == (128, 512)
  assert shapes["params"]["stem_conv"]["kernel"].shape == (7, 7, 3, 64)


def test_the_steps_change_the_blocks_they_name():
  block = lambda step: _step(step)[0]["params"]["stage_1"]["block_1"]  # noqa: E731
  assert len(_step("stage_ratio")[0]["params"]["stage_2"]) == 9
  assert _step("patchify")[0]["params"]["stem_conv"]["kernel"].shape == (4, 4, 3, 64)
  assert block("depthwise")["conv_dw"]["kernel"].shape == (3, 3, 1, 192)  # width 96 * 2, one channel per group
  assert block("inverted_bottleneck")["fc1"]["kernel"].shape == (192, 768)  # inverted: 4x the block's width
  assert block("large_kernel")["conv_dw"]["kernel"].shape == (7, 7, 1, 192)  # moved up: on the block's width
  assert set(block("micro")) == {"conv_dw", "norm", "fc1", "fc2", "gamma"}
  assert "batch_stats" not in _step("micro")[0]


def test_the_walk_ends_at_convnext_t():
  shapes, _ = _step("micro")
  ours = jax.eval_shape(lambda x: convnext.MODELS["convnext_t"](num_classes=1000).init(
      jax.random.key(0), x, train=False), IMAGE)
  assert jax.tree.map(lambda a: a.shape, shapes) == jax.tree.map(lambda a: a.shape, ours)
  assert PARAM_COUNTS["micro"] == CONVNEXT_PARAM_COUNTS["convnext_t"]


def test_the_last_step_runs_convnext_variables_to_the_same_outputs():
  tiny = dict(depths=(1, 1), dims=(8, 12))
  model = convnext.ConvNeXt(num_classes=5, **tiny)
  roadmap = ConvNeXtRoadmap(num_classes=5, **dict(ROADMAP["micro"], stem_width=8, **tiny))
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 20, 28, 3)), jnp.float32)
  variables = _random_variables(model, x, train=False)
  forward = jax.jit(lambda m, v, x: m.apply(v, x, train=False), static_argnums=0)
  np.testing.assert_allclose(forward(roadmap, variables, x), forward(model, variables, x), rtol=1e-6, atol=1e-6)


def test_unknown_choices_raise():
  for attribute, value in (("stem", "conv"), ("activation", "silu"), ("normalization", "group")):
    model = ConvNeXtRoadmap(num_classes=5, depths=(1, 1), dims=(8, 12), **{attribute: value})
    with pytest.raises(ValueError, match=f"{attribute} must be one of .*; got '{value}'"):
      jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 20, 28, 3)), train=False))

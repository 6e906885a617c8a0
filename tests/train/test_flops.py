"""Tests for vit_video.train.flops: XLA cost analysis against the analytic ViT and ResNet counts.

Measured ratios XLA / analytic (the analytic count ignores elementwise ops, see the module docstring):
  tiny ViTs (width 24-32), compiled:                 1.25-1.29  -> asserted in [1.0, 1.35]
  tiny ResNets (width 4-8), exact-padding count:     1.02-1.06  -> asserted in [1.0, 1.08]
  ViT-B/16 at 224, unoptimized HLO:                  1.016      -> asserted in [1.0, 1.03]
  ResNet-50 at 224, exact-padding count, HLO:        1.006      -> asserted in [1.0, 1.02]
  single convolutions and matmuls:                   1 exactly
and train step (value_and_grad) / forward: 2.65-2.67 tiny ViT compiled, 2.97 ViT-B/16 HLO.
"""
import jax
import jax.numpy as jnp
import optax
import pytest

from vit_video.models import create_model, resnet, vit
from vit_video.train.flops import (_conv_macs, compiled_flops, cost_analysis_flops, resnet_forward_flops,
                                   vit_forward_flops)

B, C, K = 2, 5, 3


def forward_and_train_step(model, image_shape):
  """Jitted `(variables, images) -> logits` and `(variables, images) -> (loss, grads wrt params)`, and abstract
  variables and images (`jax.ShapeDtypeStruct`s: nothing is initialised or run, only compiled)."""
  images = jax.ShapeDtypeStruct(image_shape, jnp.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(image_shape), train=False))

  def forward(variables, images):
    return model.apply(variables, images, train=False)

  def loss(params, variables, images):
    logits = forward({**variables, "params": params}, images)
    labels = jnp.zeros(images.shape[:1], jnp.int32)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  train_step = jax.jit(lambda v, x: jax.value_and_grad(loss)(v["params"], v, x))
  return jax.jit(forward), train_step, variables, images


def vit_kwargs(model):
  return dict(patch_size=model.patch_size, width=model.width, depth=model.depth, mlp_dim=model.mlp_dim,
              num_classes=model.num_classes, in_channels=model.in_channels, pool=model.pool)


def resnet_kwargs(model, count_padding):
  return dict(stage_sizes=model.stage_sizes, block=model.block, width=model.width, num_classes=model.num_classes,
              in_channels=model.in_channels, count_padding=count_padding)


# ------------------------------------------------------------------------------------------- cost analysis


def test_compiled_flops_of_a_matmul_is_two_macs():
  f = jax.jit(lambda a, b: a @ b)
  assert compiled_flops(f, jnp.zeros((3, 5)), jnp.zeros((5, 4))) == 2 * 3 * 5 * 4
  abstract = jax.ShapeDtypeStruct((7, 5), jnp.float32), jax.ShapeDtypeStruct((5, 4), jnp.float32)
  assert compiled_flops(f, *abstract) == 2 * 7 * 5 * 4
  assert cost_analysis_flops(f.lower(*abstract)) == 2 * 7 * 5 * 4


class _FakeStage:
  def __init__(self, cost):
    self.cost = cost

  def cost_analysis(self):
    return self.cost


def test_cost_analysis_flops_takes_a_dict_or_a_list_of_dicts():
  assert cost_analysis_flops(_FakeStage({"flops": 6.0, "bytes accessed": 1.0})) == 6.0
  assert cost_analysis_flops(_FakeStage([{"flops": 6.0}, {"flops": 4.0}])) == 10.0
  for bad in (None, [], [{"bytes accessed": 1.0}], [{"flops": 1.0}, None]):
    with pytest.raises(ValueError, match="flops"):
      cost_analysis_flops(_FakeStage(bad))


@pytest.mark.parametrize("hw, kernel, stride, padding", [
    ((9, 14), 7, 2, 3), ((5, 6), 3, 2, 1), ((3, 4), 3, 1, 1), ((7, 6), 1, 2, 0)])
def test_conv_count_matches_xla_exactly(hw, kernel, stride, padding):
  x, w = jnp.zeros((1, *hw, 3)), jnp.zeros((kernel, kernel, 3, 4))
  f = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
      x, w, (stride, stride), [(padding, padding)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC")))
  exact, out_hw = _conv_macs(hw, kernel, stride, padding, 3, 4, count_padding=False)
  assert out_hw == f(x, w).shape[1:3]
  assert compiled_flops(f, x, w) == 2 * exact
  full, _ = _conv_macs(hw, kernel, stride, padding, 3, 4, count_padding=True)
  assert full == out_hw[0] * out_hw[1] * kernel**2 * 3 * 4
  assert (full > exact) == (padding > 0)


# ----------------------------------------------------------------------------- analytic vs XLA, toy sizes


@pytest.mark.parametrize("hw, overrides", [
    ((8, 12), dict(depth=2, width=24, mlp_dim=32, num_heads=2, patch_size=4, pool="token")),
    ((12, 8), dict(depth=1, width=32, mlp_dim=48, num_heads=4, patch_size=2, pool="gap", num_classes=7)),
])
def test_vit_count_against_xla_tiny(hw, overrides):
  model = create_model("vit_ti16", **{"num_classes": K, "in_channels": C, **overrides})
  forward, train_step, variables, images = forward_and_train_step(model, (B, *hw, C))
  xla = compiled_flops(forward, variables, images)
  analytic = B * vit_forward_flops(hw, **vit_kwargs(model))
  assert 1.0 <= xla / analytic <= 1.35, (xla, analytic)
  assert 2.5 <= compiled_flops(train_step, variables, images) / xla <= 3.5


@pytest.mark.parametrize("name, hw, overrides", [
    ("resnet18", (24, 40), dict(width=8, stage_sizes=(1, 1))),
    ("resnet50", (20, 28), dict(width=4, stage_sizes=(1, 2))),
])
def test_resnet_count_against_xla_tiny(name, hw, overrides):
  model = create_model(name, num_classes=K, in_channels=C, **overrides)
  forward, _, variables, images = forward_and_train_step(model, (B, *hw, C))
  xla = compiled_flops(forward, variables, images)
  exact = B * resnet_forward_flops(hw, **resnet_kwargs(model, count_padding=False))
  assert 1.0 <= xla / exact <= 1.08, (xla, exact)
  assert B * resnet_forward_flops(hw, **resnet_kwargs(model, count_padding=True)) > exact


# --------------------------------------------------------------- full size: abstract lowering, no compile


def abstract_lowering(model, fn):
  """`jax.jit(fn).lower` on abstract params and one 224x224 image: XLA's HLO, no memory, no compile."""
  image = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(image.shape), train=False))
  return jax.jit(fn).lower(variables, image)


def test_vit_b16_count_against_xla_full_size():
  model = create_model("vit_b16", num_classes=1000)
  forward = cost_analysis_flops(abstract_lowering(model, lambda v, x: model.apply(v, x, train=False)))
  analytic = vit_forward_flops((224, 224), **vit_kwargs(model))
  assert 1.0 <= forward / analytic <= 1.03, (forward, analytic)
  train = cost_analysis_flops(abstract_lowering(
      model, jax.grad(lambda v, x: model.apply(v, x, train=False).sum())))
  assert 2.8 <= train / forward <= 3.2


def test_resnet50_count_against_xla_full_size():
  model = create_model("resnet50", num_classes=1000)
  forward = cost_analysis_flops(abstract_lowering(model, lambda v, x: model.apply(v, x, train=False)))
  analytic = resnet_forward_flops((224, 224), **resnet_kwargs(model, count_padding=False))
  assert 1.0 <= forward / analytic <= 1.02, (forward, analytic)


# ---------------------------------------------------------------------------------- published numbers

# GMACs at 224x224, 1000 classes; we return FLOPs = 2 * MACs. ViT: DeiT (Touvron et al. 2021) Table 1
# (Ti, S, B /16: 1.3, 4.6, 17.6 "GFLOPs", i.e. GMACs) and the usual 4.4 (B/32) and 61.6 (L/16).
# ResNet: torchvision's model table ("GFLOPS", i.e. GMACs, counting the padding taps).
PUBLISHED_VIT_GMACS = {"vit_ti16": 1.3, "vit_s16": 4.6, "vit_b16": 17.6, "vit_b32": 4.4, "vit_l16": 61.6}
PUBLISHED_RESNET_GMACS = {"resnet18": 1.81, "resnet34": 3.66, "resnet50": 4.09, "resnet101": 7.80,
                          "resnet152": 11.51}


@pytest.mark.parametrize("name", sorted(PUBLISHED_VIT_GMACS))
def test_vit_count_matches_published(name):
  kw = vit.VARIANTS[name]
  flops = vit_forward_flops((224, 224), patch_size=kw["patch_size"], width=kw["width"], depth=kw["depth"],
                            mlp_dim=kw["mlp_dim"], num_classes=1000, in_channels=3, pool="token")
  assert abs(flops / 2e9 - PUBLISHED_VIT_GMACS[name]) <= 0.05 + 0.005 * PUBLISHED_VIT_GMACS[name]  # 1 decimal


@pytest.mark.parametrize("name", sorted(PUBLISHED_RESNET_GMACS))
def test_resnet_count_matches_published(name):
  flops = resnet_forward_flops((224, 224), **resnet.VARIANTS[name], width=64, num_classes=1000, in_channels=3,
                               count_padding=True)
  assert abs(flops / 2e9 - PUBLISHED_RESNET_GMACS[name]) <= 0.006  # published to 2 decimals


def test_vit_b16_and_resnet50_in_flops():
  """The headline numbers in our unit: ViT-B/16 35.1 GFLOPs (17.6 GMACs), ResNet-50 8.2 GFLOPs (4.09 GMACs)."""
  b16 = vit_forward_flops((224, 224), patch_size=16, width=768, depth=12, mlp_dim=3072, num_classes=1000,
                          in_channels=3, pool="token")
  r50 = resnet_forward_flops((224, 224), stage_sizes=(3, 4, 6, 3), block="bottleneck", width=64, num_classes=1000,
                             in_channels=3, count_padding=True)
  assert b16 == pytest.approx(35.13e9, rel=1e-3)
  assert r50 == pytest.approx(8.18e9, rel=1e-3)


def test_analytic_counts_reject_bad_arguments():
  with pytest.raises(ValueError, match=r"image size \(30, 32\) is not divisible by patch size 16"):
    vit_forward_flops((30, 32), patch_size=16, width=8, depth=1, mlp_dim=8, num_classes=2, in_channels=3,
                      pool="token")
  with pytest.raises(ValueError, match="pool"):
    vit_forward_flops((32, 32), patch_size=16, width=8, depth=1, mlp_dim=8, num_classes=2, in_channels=3,
                      pool="max")
  with pytest.raises(ValueError, match="block"):
    resnet_forward_flops((32, 32), stage_sizes=(1,), block="wide", width=4, num_classes=2, in_channels=3,
                         count_padding=True)

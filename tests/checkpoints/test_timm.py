"""import_timm and import_torchvision (ResNet): tiny timm/torchvision models with random weights give the same
outputs in our models.

Every family (ViT, both hybrid trunks, ResNet basic/bottleneck from timm and torchvision, BiT) on 32x48 images,
float32, compared with the reference's eval-mode outputs to 1e-4 of the logit scale; plus head replacement,
scan layout and the errors for a wrong family, a wrong shape and a missing key.
"""
import logging

import jax
import numpy as np
import pytest

from tests.checkpoints.timm_reference import import_timm as import_timm_reference
from tests.checkpoints.timm_reference import (randomize_, require_torch, run, state_dict, tiny_bit, tiny_hybrid,
                                              tiny_vit, use_vit_jax_numerics_)
from vit_video.checkpoints import import_timm, import_torchvision
from vit_video.models import create_model

B, H, W, C, K = 2, 32, 48, 3, 5
TINY_VIT = dict(patch_size=4, width=24, depth=2, num_heads=2, mlp_dim=48)
TINY_HYBRID = dict(TINY_VIT, patch_size=1, stem_stage_sizes=(1, 1), stem_width_factor=0.5)
TINY_ROOT_HYBRID = dict(TINY_VIT, patch_size=2, stem_stage_sizes=(), stem_width_factor=0.5)
TINY_BIT = dict(stage_sizes=(1, 1), width=32)


@pytest.fixture(scope="module")
def timm():
  require_torch("timm (the reference implementation) needs torch")
  return import_timm_reference()


@pytest.fixture(scope="module")
def images():
  return np.random.default_rng(0).normal(size=(B, H, W, C)).astype(np.float32)


def max_rel_err(ours, ref) -> float:
  """max |ours - ref| / max |ref|: the error relative to the logit scale."""
  return float(np.max(np.abs(np.asarray(ours) - ref)) / np.max(np.abs(ref)))


def ours(name, variables, images, num_classes=K, **overrides):
  return np.asarray(create_model(name, num_classes=num_classes, **overrides).apply(variables, images, train=False))


def test_vit_matches_timm(timm, images):
  ref_model = tiny_vit(timm)
  variables = import_timm("vit_ti16", state_dict(ref_model), **TINY_VIT)
  ref = run(ref_model, images)
  err = max_rel_err(ours("vit_ti16", variables, images, **TINY_VIT), ref)
  print(f"vit: max rel err {err:.2e}")
  assert ref.shape == (B, K) and np.std(ref) > 0.1
  assert err < 1e-4


def test_vit_scan_layout_gives_the_same_outputs(timm, images):
  ref_model = tiny_vit(timm)
  variables = import_timm("vit_ti16", state_dict(ref_model), scan=True, **TINY_VIT)
  assert variables["params"]["Transformer"]["encoderblock"]["LayerNorm_0"]["scale"].shape == (2, 24)
  assert max_rel_err(ours("vit_ti16", variables, images, scan=True, **TINY_VIT), run(ref_model, images)) < 1e-4


@pytest.mark.parametrize("name, overrides, stages", [("r50_vit_b16", TINY_HYBRID, (1, 1)),
                                                     ("r_vit_ti16", TINY_ROOT_HYBRID, ())])
def test_hybrid_matches_timm_with_vit_jax_trunk_numerics(timm, images, name, overrides, stages):
  """The weight mapping, exactly: timm's trunk switched to the numerics of our ResNetStem."""
  ref_model = use_vit_jax_numerics_(tiny_hybrid(timm, stages=stages))
  variables = import_timm(name, state_dict(ref_model), **overrides)
  err = max_rel_err(ours(name, variables, images, **overrides), run(ref_model, images))
  print(f"{name} (stages {stages}), timm trunk at vit_jax numerics: max rel err {err:.2e}")
  assert err < 1e-4


def test_hybrid_matches_timm_with_timm_trunk_numerics(timm, images):
  """timm's own trunk numerics (eps 1e-8 on the variance, GroupNorm eps 1e-5), selected with
  `stem_numerics="timm"`. Kernels get a realistic per-channel std around 0.01, where the two numerics differ
  most (3.9e-4 with the vit_jax ones)."""
  import torch
  from timm.layers import StdConv2dSame
  ref_model = tiny_hybrid(timm)
  g = torch.Generator().manual_seed(1)
  with torch.no_grad():
    for module in ref_model.modules():
      if isinstance(module, StdConv2dSame):
        w = module.weight
        std = 0.01 * torch.exp(0.5 * torch.randn(w.shape[0], 1, 1, 1, generator=g))
        w.copy_(w / w.std(dim=(1, 2, 3), keepdim=True) * std)
  overrides = dict(TINY_HYBRID, stem_numerics="timm")
  variables = import_timm("r50_vit_b16", state_dict(ref_model), **overrides)
  err = max_rel_err(ours("r50_vit_b16", variables, images, **overrides), run(ref_model, images))
  print(f"r50_vit_b16, stem_numerics='timm', kernel std ~0.01: max rel err {err:.2e}")
  assert err < 1e-4
  vit_jax_numerics = max_rel_err(ours("r50_vit_b16", variables, images, **TINY_HYBRID), run(ref_model, images))
  assert vit_jax_numerics > 10 * err  # the attribute is what closes the gap


def test_bit_matches_timm(timm, images):
  ref_model = tiny_bit(timm)
  variables = import_timm("bit_r50x1", state_dict(ref_model), **TINY_BIT)
  ref = run(ref_model, images)
  err = max_rel_err(ours("bit_r50x1", variables, images, **TINY_BIT), ref)
  print(f"bit: max rel err {err:.2e}")
  assert err < 1e-4


@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_resnet_matches_timm_with_running_statistics(timm, images, block):
  from timm.models.resnet import BasicBlock, Bottleneck, ResNet
  # timm's 7x7 stem has 64 channels whatever `stem_width` says and its forward needs 4 stages: widths as published.
  ref_model = randomize_(ResNet(BasicBlock if block == "basic" else Bottleneck, layers=(1, 1, 1, 1), num_classes=K))
  name = "resnet18" if block == "basic" else "resnet50"
  overrides = dict(stage_sizes=(1, 1, 1, 1))
  variables = import_timm(name, state_dict(ref_model), **overrides)
  assert set(variables) == {"params", "batch_stats"}
  ref = run(ref_model, images)
  err = max_rel_err(ours(name, variables, images, **overrides), ref)
  print(f"timm resnet ({block}): max rel err {err:.2e}")
  assert err < 1e-4


def test_resnet_matches_torchvision(timm, images):
  import torchvision
  ref_model = randomize_(torchvision.models.resnet.ResNet(torchvision.models.resnet.Bottleneck, [1, 1, 1, 1],
                                                          num_classes=K))
  overrides = dict(stage_sizes=(1, 1, 1, 1))
  variables = import_torchvision("resnet50", state_dict(ref_model), **overrides)
  err = max_rel_err(ours("resnet50", variables, images, **overrides), run(ref_model, images))
  print(f"torchvision resnet (bottleneck): max rel err {err:.2e}")
  assert err < 1e-4


def test_other_num_classes_drops_the_head_and_keeps_the_features(timm, images, caplog):
  ref_model = tiny_vit(timm)
  with caplog.at_level(logging.INFO, logger="vit_video.checkpoints"):
    variables = import_timm("vit_ti16", state_dict(ref_model), num_classes=7, **TINY_VIT)
  assert "head" not in variables["params"]
  assert "head.weight" in caplog.text and "head.bias" in caplog.text
  # Merged with a fresh head, the model runs; without a head it returns timm's pre-logits features.
  model = create_model("vit_ti16", num_classes=7, **TINY_VIT)
  fresh = model.init(jax.random.key(0), images, train=False)
  merged = {"params": {**fresh["params"], **variables["params"]}}
  assert model.apply(merged, images, train=False).shape == (B, 7)
  features = import_timm("vit_ti16", state_dict(ref_model), num_classes=0, **TINY_VIT)
  import torch
  with torch.no_grad():
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    ref = ref_model.forward_head(ref_model.forward_features(x), pre_logits=True).numpy()
  assert max_rel_err(ours("vit_ti16", features, images, num_classes=0, **TINY_VIT), ref) < 1e-4


def test_same_num_classes_keeps_the_head(timm):
  variables = import_timm("bit_r50x1", state_dict(tiny_bit(timm)), num_classes=K, **TINY_BIT)
  assert variables["params"]["head"]["kernel"].shape == (256, K)


def test_wrong_family_names_the_keys(timm):
  with pytest.raises(ValueError, match=r"vit_ti16: 23 checkpoint array\(s\) have no place in the model: "
                                       r"'head\.fc\.bias', 'head\.fc\.weight', 'stages\.0\.blocks\.0\.conv1\.weight'"):
    import_timm("vit_ti16", state_dict(tiny_bit(timm)), **TINY_VIT)


def test_wrong_shape_names_the_key_and_both_shapes(timm):
  sd = state_dict(tiny_vit(timm))
  with pytest.raises(ValueError, match=r"vit_ti16: .*'blocks\.0\.mlp\.fc1\.weight' has shape \(48, 24\) "
                                       r"\(converted to \(24, 48\)\) .* has shape \(24, 40\)"):
    import_timm("vit_ti16", sd, **dict(TINY_VIT, mlp_dim=40))
  with pytest.raises(ValueError, match=r"'blocks\.0\.attn\.qkv\.weight' has shape \(72, 24\) .* expects \(96, 32\)"):
    import_timm("vit_ti16", sd, **dict(TINY_VIT, width=32, mlp_dim=48))


def test_missing_key_is_listed(timm):
  sd = state_dict(tiny_bit(timm))
  del sd["stages.1.blocks.0.norm2.bias"]
  with pytest.raises(ValueError, match=r"missing from the checkpoint: params/stage1/block0/norm2/bias"):
    import_timm("bit_r50x1", sd, **TINY_BIT)


def test_an_unsupported_name_lists_the_supported_ones():
  with pytest.raises(ValueError, match=r"no timm importer for 'vivit_b16x2_st' \(ViViT\); supported: bit_r101x1, .*"
                                       r"resnet50, swin_b, swin_b_w12, .*, swin_t, vit_b16, .*vit_ti16$"):
    import_timm("vivit_b16x2_st", {})
  with pytest.raises(ValueError, match=r"no timm importer for unknown model 'vit_q16'; supported: bit_r101x1"):
    import_timm("vit_q16", {})
  with pytest.raises(ValueError, match=r"swin_t: scan=True applies to ViT models only"):
    import_timm("swin_t", {}, scan=True)

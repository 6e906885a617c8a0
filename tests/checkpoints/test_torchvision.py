"""import_torchvision (import_torchvision_video_swin): a tiny torchvision SwinTransformer3d with random weights gives
the same outputs in our VideoSwin (eval mode, float32).

torchvision's model is configured as `swin3d_*` (patch 2 x 4 x 4) at width 16, depths (2, 2), heads (1, 2), window
2 x 3 x 3, K=5. Clips (T, H, W), tokens per stage:
  8 x 24 x 48: 4 x 6 x 12, then 4 x 3 x 6 (H fits one window: no shift along it); nothing padded, no window reduced:
    both `window_padding` modes equal torchvision.
  6 x 20 x 28: 3 x 5 x 7, then 3 x 3 x 4: T, H and W padded (pad, then shift; torchvision's region mask).
  4 x 8 x 24: 2 x 2 x 6, then 2 x 1 x 3: windows reduced along T and H and nothing padded, so only torchvision's
    reading of a reduced window's biases (`relative_position_index[:N, :N]`) separates the two modes.
Also torchvision's window rule, mask and bias reading against ours directly, parameter counts of the full-size
models (built on the meta device) and of the published weights' metadata, and the errors.
"""
import logging

import jax
import numpy as np
import pytest

from tests.models.test_video_swin import PARAM_COUNTS
from tests.checkpoints.timm_reference import import_timm, randomize_, require_torch, state_dict
from vit_video.checkpoints import import_torchvision
from vit_video.checkpoints.torchvision import TORCHVISION_NAMES, import_torchvision_video_swin
from vit_video.layers import windows
from vit_video.models import video_swin

B, C, K = 2, 3, 5
OVERRIDES = dict(width=16, depths=(2, 2), num_heads=(1, 2), window_size=(2, 3, 3), mlp_ratio=2.0)


@pytest.fixture(scope="module")
def torchvision():
  require_torch("torchvision (the reference implementation) needs torch")
  import_timm()  # installs the shim that makes torchvision importable on CPU torch
  import torchvision
  return torchvision


@pytest.fixture(scope="module")
def reference(torchvision):
  """(torchvision model, its state dict as numpy)."""
  from torchvision.models.video.swin_transformer import SwinTransformer3d
  model = randomize_(SwinTransformer3d(patch_size=[2, 4, 4], embed_dim=16, depths=[2, 2], num_heads=[1, 2],
                                       window_size=[2, 3, 3], mlp_ratio=2.0, num_classes=K))
  return model, state_dict(model)


def clips(t, h, w):
  return np.random.default_rng(0).normal(size=(B, t, h, w, C)).astype(np.float32)


def run(model, x):
  import torch
  with torch.no_grad():
    return model.eval()(torch.from_numpy(x).permute(0, 4, 1, 2, 3)).numpy()  # [B,T,H,W,C] -> [B,C,T,H,W]


def max_rel_err(ours, ref) -> float:
  return float(np.max(np.abs(np.asarray(ours) - ref)) / np.max(np.abs(ref)))


def test_state_dict_names(reference):
  _, sd = reference
  assert "features.1.reduction.weight" in sd and "features.2.1.mlp.3.weight" in sd and "head.weight" in sd
  assert sd["patch_embed.proj.weight"].shape == (16, 3, 2, 4, 4)
  assert sd["features.2.0.attn.relative_position_bias_table"].shape == (3 * 5 * 5, 2)
  assert "features.0.0.attn.relative_position_index" in sd  # a persistent buffer, ignored by the importer


@pytest.mark.parametrize("size, masked_equal", [((8, 24, 48), True), ((6, 20, 28), False), ((4, 8, 24), False)])
def test_matches_torchvision(reference, size, masked_equal):
  model, sd = reference
  variables = import_torchvision("video_swin_t", sd, **OVERRIDES)  # the entry point of every torchvision family
  ref = run(model, clips(*size))
  assert ref.shape == (B, K) and np.std(ref) > 0.1
  errors = {}
  for mode in ("torchvision", "masked"):
    ours = video_swin.MODELS["video_swin_t"](num_classes=K, window_padding=mode, **OVERRIDES)
    forward = jax.jit(lambda v, x: ours.apply(v, x, train=False))  # one compile, not one per op
    errors[mode] = max_rel_err(forward(variables, clips(*size)), ref)
  print(f"video swin {size}: max rel err {errors}")
  assert errors["torchvision"] < 1e-4
  assert (errors["masked"] < 1e-4) if masked_equal else (errors["masked"] > 1e-3)


def test_window_rule_mask_and_bias_reading_equal_torchvisions(torchvision):
  import torch
  from torchvision.models.video import swin_transformer as tv
  window = [2, 3, 3]
  for size in [(1, 2, 5), (2, 3, 3), (3, 4, 7), (8, 2, 3)]:
    for shifted in (False, True):
      ref = tv._get_window_and_shift_size([w // 2 if shifted else 0 for w in window], list(size), list(window))
      assert windows.window_and_shift(size, window, shifted) == tuple(tuple(a) for a in ref), size
      eff, shift = windows.window_and_shift(size, window, True)
      if not any(shift):
        continue
      padded = windows.padded_size(size, eff)
      ref_mask = tv._compute_attention_mask_3d(torch.zeros(1), padded, eff, shift).numpy()  # [nW,N,N], 0 or -100
      ours = windows.attention_mask(size, eff, shift, "timm")
      np.testing.assert_array_equal(np.ones_like(ref_mask, bool) if ours is None else ours, ref_mask == 0)
  attn = tv.ShiftedWindowAttention3d(8, window, [0, 0, 0], num_heads=2)
  table = attn.relative_position_bias_table.detach().numpy()
  for eff in ([2, 3, 3], [1, 3, 3], [2, 2, 3], [2, 3, 1]):
    ref = attn.get_relative_position_bias(eff).detach().numpy()[0]  # [h,N,N]
    ours = windows.RelativePositionBias(2, tuple(window), leading_rows=True).apply(
        {"params": {"relative_position_bias_table": table}}, eff)
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("name", sorted(TORCHVISION_NAMES))
def test_parameter_counts_equal_torchvision_built_on_the_meta_device(torchvision, name):
  import torch
  with torch.device("meta"):
    model = getattr(torchvision.models.video, TORCHVISION_NAMES[name])()
  assert sum(p.numel() for p in model.parameters()) == PARAM_COUNTS[name]
  weights = {"swin3d_t": "Swin3D_T_Weights", "swin3d_s": "Swin3D_S_Weights", "swin3d_b": "Swin3D_B_Weights"}
  enum = getattr(torchvision.models.video, weights[TORCHVISION_NAMES[name]])
  assert enum.KINETICS400_V1.meta["num_params"] == PARAM_COUNTS[name]
  assert len(enum.KINETICS400_V1.meta["categories"]) == 400


def test_every_named_variant_has_a_torchvision_name():
  assert set(TORCHVISION_NAMES) == set(video_swin.MODELS)


def test_other_num_classes_drops_the_head(reference, caplog):
  _, sd = reference
  with caplog.at_level(logging.INFO, logger="vit_video.checkpoints"):
    variables = import_torchvision_video_swin("video_swin_t", sd, num_classes=7, **OVERRIDES)
  assert "head" not in variables["params"] and "head.weight" in caplog.text
  assert "head" not in import_torchvision_video_swin("video_swin_t", sd, num_classes=0, **OVERRIDES)["params"]


def test_wrong_family_names_the_keys(torchvision):
  """torchvision's own 2D Swin (`features.{i}` too, but a 2D patch embedding and blocks at odd indices)."""
  from torchvision.models.swin_transformer import SwinTransformer
  sd = state_dict(SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[1, 2],
                                  window_size=[3, 3], mlp_ratio=2.0, num_classes=K))
  with pytest.raises(ValueError, match=r"video_swin_t: \d+ checkpoint array\(s\) have no place in the model: "
                                       r"'features\.0\.0\.bias'"):
    import_torchvision_video_swin("video_swin_t", sd, **OVERRIDES)


def test_wrong_shape_names_the_key_and_both_shapes(reference):
  _, sd = reference
  with pytest.raises(ValueError, match=r"video_swin_t: checkpoint array 'features\.0\.0\.mlp\.0\.weight' has shape "
                                       r"\(32, 16\) \(converted to \(16, 32\)\) but the model's .* has shape "
                                       r"\(16, 48\)"):
    import_torchvision_video_swin("video_swin_t", sd, **dict(OVERRIDES, mlp_ratio=3.0))
  with pytest.raises(ValueError, match=r"'features\.0\.0\.attn\.relative_position_bias_table' has shape \(75, 1\) "
                                       r"but the model's .* has shape \(27, 1\)"):
    import_torchvision_video_swin("video_swin_t", sd, **dict(OVERRIDES, window_size=(2, 2, 2)))
  with pytest.raises(ValueError, match=r"'features\.0\.0\.attn\.qkv\.weight' has shape \(48, 16\) .* "
                                       r"expects \(72, 24\)"):
    import_torchvision_video_swin("video_swin_t", sd, **dict(OVERRIDES, width=24))


def test_missing_key_unknown_name_and_attribute(reference):
  _, sd = reference
  sd = dict(sd)
  del sd["features.1.norm.bias"]
  with pytest.raises(ValueError, match=r"missing from the checkpoint: params/stage_1/downsample/norm/bias"):
    import_torchvision_video_swin("video_swin_t", sd, **OVERRIDES)
  with pytest.raises(ValueError, match=r"no torchvision importer for unknown model 'video_swin_l'; supported: .*"
                                       r"video_swin_b, video_swin_s, video_swin_t"):
    import_torchvision("video_swin_l", sd)
  with pytest.raises(ValueError, match=r"unknown attribute\(s\) \['embed_dim'\]"):
    import_torchvision_video_swin("video_swin_t", sd, embed_dim=16)


def test_an_unsupported_name_lists_the_supported_ones():
  with pytest.raises(ValueError, match=r"no torchvision importer for 'swin_t' \(Swin\); supported: mvit_v1_b, "
                                       r"mvit_v1_b_image, mvit_v2_s, mvit_v2_s_image, resnet101, resnet152, resnet18, "
                                       r"resnet34, resnet50, video_swin_b, video_swin_s, video_swin_t$"):
    import_torchvision("swin_t", {})
  with pytest.raises(ValueError, match=r"no torchvision importer for unknown model 'resnet9'; supported: "
                                       r"mvit_v1_b, .*resnet101"):
    import_torchvision("resnet9", {})

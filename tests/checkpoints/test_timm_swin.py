"""import_timm (import_timm_swin): a tiny timm SwinTransformer with random weights gives the same outputs in our Swin.

timm's model at 24 x 40 (patch 4, window 3: token maps 6 x 10 and 3 x 5) pads both stages' maps to multiples of the
window and, in stage 2, shifts along the width only (the height fits one window), so padding, the per-axis shift
rule and the 2x2 merging order are all compared; at 24 x 48 nothing is padded and both `window_padding` modes equal
timm. Also: the official checkpoint layout, window resampling, parameter counts against timm's full-size models
(built on the meta device: no memory, no weights), and the errors.
"""
import functools
import logging

import jax
import numpy as np
import pytest

from tests.models.test_swin import PARAM_COUNTS, TINY
from tests.checkpoints.timm_reference import import_timm as import_timm_reference
from tests.checkpoints.timm_reference import randomize_, require_torch, run, state_dict, tiny_vit
from vit_video.checkpoints import import_timm
from vit_video.checkpoints.timm_swin import TIMM_NAMES, import_timm_swin, official_to_timm_names
from vit_video.layers import windows
from vit_video.models import swin

B, C, K = 2, 3, 5
OVERRIDES = {k: v for k, v in TINY.items() if k != "num_classes"}


@pytest.fixture(scope="module")
def timm():
  require_torch("timm (the reference implementation) needs torch")
  return import_timm_reference()


def tiny_swin(timm, img_size, window_size=3):
  """timm's SwinTransformer as `swin_*_patch4_window*` configures it, at D 16, depths (2, 2), heads (1, 2)."""
  return randomize_(timm.models.swin_transformer.SwinTransformer(
      img_size=img_size, patch_size=4, embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=window_size,
      mlp_ratio=2.0, num_classes=K))


def images(h, w):
  return np.random.default_rng(0).normal(size=(B, h, w, C)).astype(np.float32)


def max_rel_err(ours, ref) -> float:
  return float(np.max(np.abs(np.asarray(ours) - ref)) / np.max(np.abs(ref)))


def ours(variables, x, **overrides):
  model = swin.MODELS["swin_t"](**dict(TINY, **overrides))
  return np.asarray(_forward(model, variables, x))


@functools.partial(jax.jit, static_argnums=0)
def _forward(model, variables, x):
  """An eval-mode forward pass, jitted: one compile per model and size instead of one per op."""
  return model.apply(variables, x, train=False)


@pytest.fixture(scope="module")
def padded_reference(timm):
  ref_model = tiny_swin(timm, (24, 40))
  return ref_model, state_dict(ref_model), run(ref_model, images(24, 40))


def test_timm_state_dict_names(padded_reference):
  _, sd, _ = padded_reference
  assert "layers.1.downsample.reduction.weight" in sd and "layers.0.downsample.reduction.weight" not in sd
  assert "layers.1.blocks.1.attn.relative_position_bias_table" in sd and "head.fc.weight" in sd
  assert not any(k.endswith(("relative_position_index", "attn_mask")) for k in sd)  # non-persistent buffers


def test_matches_timm_at_a_size_that_needs_padding(padded_reference):
  _, sd, ref = padded_reference
  variables = import_timm("swin_t", sd, **OVERRIDES)  # the entry point of every timm family
  err = max_rel_err(ours(variables, images(24, 40), window_padding="timm"), ref)
  print(f"swin 24x40 (padded), window_padding='timm': max rel err {err:.2e}")
  assert ref.shape == (B, K) and np.std(ref) > 0.1
  assert err < 1e-4
  # The "masked" convention really does differ where maps are padded.
  assert max_rel_err(ours(variables, images(24, 40), window_padding="masked"), ref) > 1e-3


def test_both_padding_modes_match_timm_without_padding(timm):
  ref_model = tiny_swin(timm, (24, 48))
  variables = import_timm("swin_t", state_dict(ref_model), **OVERRIDES)
  ref = run(ref_model, images(24, 48))
  for mode in ("timm", "masked"):
    err = max_rel_err(ours(variables, images(24, 48), window_padding=mode), ref)
    print(f"swin 24x48, window_padding={mode!r}: max rel err {err:.2e}")
    assert err < 1e-4


def test_official_layout_and_stale_buffers_import_the_same(padded_reference):
  _, sd, _ = padded_reference
  official = {}
  for k, v in sd.items():
    k = k.replace("head.fc.", "head.")
    if k.startswith("layers.1.downsample"):
      k = k.replace("layers.1.", "layers.0.")
    official[k] = v
  official["layers.0.blocks.1.attn_mask"] = np.zeros((8, 9, 9), np.float32)
  official["layers.0.blocks.0.attn.relative_position_index"] = np.zeros((9, 9), np.int64)
  assert set(official_to_timm_names(official)) - set(sd) == {"layers.0.blocks.1.attn_mask",
                                                             "layers.0.blocks.0.attn.relative_position_index"}
  a = import_timm_swin("swin_t", sd, **OVERRIDES)
  b = import_timm_swin("swin_t", official, **OVERRIDES)
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_resize_equals_the_official_bicubic_interpolation(timm):
  import torch
  table = np.random.default_rng(0).normal(size=(13 * 13, 4)).astype(np.float32)  # window 7, 4 heads
  for new in (12, 4):
    side = 2 * new - 1
    ref = torch.nn.functional.interpolate(torch.from_numpy(table).permute(1, 0).view(1, 4, 13, 13),
                                          size=(side, side), mode="bicubic").view(4, -1).permute(1, 0).numpy()
    np.testing.assert_allclose(windows.resize_relative_position_bias_table(table, new), ref, rtol=1e-5, atol=1e-5)


def test_another_window_resamples_the_tables(padded_reference, caplog):
  _, sd, _ = padded_reference
  with caplog.at_level(logging.INFO, logger="vit_video.checkpoints"):
    variables = import_timm_swin("swin_t", sd, **dict(OVERRIDES, window_size=4))
  assert "resampling 'layers.0.blocks.0.attn.relative_position_bias_table' from window 3" in caplog.text
  table = variables["params"]["stage_1"]["block_1"]["rel_pos"]["relative_position_bias_table"]
  np.testing.assert_allclose(table, windows.resize_relative_position_bias_table(
      sd["layers.1.blocks.1.attn.relative_position_bias_table"], 4), rtol=1e-6)
  assert table.shape == (49, 2)


def test_other_num_classes_drops_the_head(padded_reference, caplog):
  _, sd, _ = padded_reference
  with caplog.at_level(logging.INFO, logger="vit_video.checkpoints"):
    variables = import_timm_swin("swin_t", sd, num_classes=7, **OVERRIDES)
  assert "head" not in variables["params"] and "head.fc.weight" in caplog.text
  assert "head" not in import_timm_swin("swin_t", sd, num_classes=0, **OVERRIDES)["params"]


@pytest.mark.parametrize("name", sorted(swin.MODELS))
def test_parameter_counts_equal_timm_built_on_the_meta_device(timm, name):
  import torch
  with torch.device("meta"):
    model = timm.create_model(TIMM_NAMES[name], pretrained=False)
  assert sum(p.numel() for p in model.parameters()) == PARAM_COUNTS[name]


def test_wrong_family_names_the_keys(timm):
  with pytest.raises(ValueError, match=r"swin_t: \d+ checkpoint array\(s\) have no place in the model: "
                                       r"'blocks\.0\.attn\.proj\.bias'"):
    import_timm_swin("swin_t", state_dict(tiny_vit(timm)), **OVERRIDES)


def test_wrong_shape_names_the_key_and_both_shapes(padded_reference):
  _, sd, _ = padded_reference
  with pytest.raises(ValueError, match=r"swin_t: checkpoint array 'layers\.0\.blocks\.0\.mlp\.fc1\.weight' has "
                                       r"shape \(32, 16\) \(converted to \(16, 32\)\) but the model's .* has shape "
                                       r"\(16, 48\)"):
    import_timm_swin("swin_t", sd, **dict(OVERRIDES, mlp_ratio=3.0))
  with pytest.raises(ValueError, match=r"'layers\.0\.blocks\.0\.attn\.qkv\.weight' has shape \(48, 16\) .* "
                                       r"expects \(72, 24\)"):
    import_timm_swin("swin_t", sd, **dict(OVERRIDES, width=24))


def test_missing_key_unknown_name_and_attribute(padded_reference):
  _, sd, _ = padded_reference
  sd = dict(sd)
  del sd["layers.1.downsample.norm.bias"]
  with pytest.raises(ValueError, match=r"missing from the checkpoint: params/stage_1/downsample/norm/bias"):
    import_timm_swin("swin_t", sd, **OVERRIDES)
  with pytest.raises(ValueError, match=r"no timm importer for unknown model 'swin_xl'; supported: .*swin_b, "
                                       r"swin_b_w12"):
    import_timm("swin_xl", sd)
  with pytest.raises(ValueError, match=r"unknown attribute\(s\) \['embed_dim'\]"):
    import_timm_swin("swin_t", sd, embed_dim=16)

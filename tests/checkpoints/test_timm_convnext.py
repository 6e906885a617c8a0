"""import_timm_convnext: a tiny timm ConvNeXt with random weights gives the same outputs in our ConvNeXt.

timm's ConvNeXt always has four stages; the tiny one has depths (1, 1, 2, 1) and widths (8, 12, 16, 20). At 44 x 60
its stage maps are 11 x 15, 5 x 7, 2 x 3 and 1 x 1: the stem and every downsampling floor an odd side, and the 7x7
depthwise convs are wider than the maps, so padding and flooring are compared too. Also: parameter counts against
timm's full-size models (built on the meta device: no memory, no weights), the head, and the errors.
"""
import functools
import logging

import jax
import numpy as np
import pytest

from tests.checkpoints.timm_reference import import_timm as import_timm_reference
from tests.checkpoints.timm_reference import randomize_, require_torch, run, state_dict, tiny_vit
from tests.models.test_convnext import PARAM_COUNTS
from vit_video.checkpoints import import_timm
from vit_video.checkpoints.timm_convnext import TIMM_NAMES, import_timm_convnext
from vit_video.models import convnext

B, H, W, C, K = 2, 44, 60, 3, 5
TINY = dict(depths=(1, 1, 2, 1), dims=(8, 12, 16, 20))


@pytest.fixture(scope="module")
def timm():
  require_torch("timm (the reference implementation) needs torch")
  return import_timm_reference()


@pytest.fixture(scope="module")
def reference(timm):
  model = randomize_(timm.models.convnext.ConvNeXt(num_classes=K, **TINY))
  x = np.random.default_rng(0).normal(size=(B, H, W, C)).astype(np.float32)
  return state_dict(model), x, run(model, x)


@functools.partial(jax.jit, static_argnums=0)
def _forward(model, variables, x):
  """An eval-mode forward pass, jitted: one compile instead of one per op."""
  return model.apply(variables, x, train=False)


def test_timm_state_dict_names(reference):
  sd, _, _ = reference
  assert {"stem.0.weight", "stem.1.weight", "stages.1.downsample.0.weight", "stages.1.downsample.1.weight",
          "stages.2.blocks.1.conv_dw.weight", "stages.2.blocks.1.mlp.fc2.weight", "stages.2.blocks.1.gamma",
          "head.norm.weight", "head.fc.weight"} <= set(sd)
  assert "stages.0.downsample.0.weight" not in sd and sd["stages.2.blocks.1.conv_dw.weight"].shape == (16, 1, 7, 7)


def test_matches_timm(reference):
  sd, x, ref = reference
  variables = import_timm_convnext("convnext_t", sd, **TINY)
  assert jax.tree.all(jax.tree.map(np.array_equal, variables, import_timm("convnext_t", sd, **TINY)))
  ours = np.asarray(_forward(convnext.MODELS["convnext_t"](num_classes=K, **TINY), variables, x))
  err = float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref)))
  print(f"convnext {H}x{W}: max rel err {err:.2e}")
  assert ref.shape == (B, K) and np.std(ref) > 0.1
  assert err < 1e-5


def test_other_num_classes_drops_the_head(reference, caplog):
  sd, _, _ = reference
  with caplog.at_level(logging.INFO, logger="vit_video.checkpoints"):
    variables = import_timm_convnext("convnext_t", sd, num_classes=7, **TINY)
  assert "head" not in variables["params"] and "head.fc.weight" in caplog.text
  assert variables["params"]["norm"]["scale"].shape == (20,)  # the final LayerNorm (timm's head.norm) is kept
  assert "head" not in import_timm_convnext("convnext_t", sd, num_classes=0, **TINY)["params"]


@pytest.mark.parametrize("name", sorted(convnext.MODELS))
def test_parameter_counts_equal_timm_built_on_the_meta_device(timm, name):
  import torch
  with torch.device("meta"):
    model = timm.create_model(TIMM_NAMES[name], pretrained=False)
  assert sum(p.numel() for p in model.parameters()) == PARAM_COUNTS[name]


def test_wrong_family_names_the_keys(timm):
  with pytest.raises(ValueError, match=r"convnext_t: \d+ checkpoint array\(s\) have no place in the model: .*"
                                       r"'blocks\.0\.attn\.proj\.bias'"):
    import_timm_convnext("convnext_t", state_dict(tiny_vit(timm)), **TINY)


def test_wrong_shape_names_the_key_and_both_shapes(reference):
  sd, _, _ = reference
  with pytest.raises(ValueError, match=r"convnext_t: checkpoint array 'stages\.0\.blocks\.0\.mlp\.fc1\.weight' has "
                                       r"shape \(32, 8\) \(converted to \(8, 32\)\) but the model's .* has shape "
                                       r"\(8, 24\)"):
    import_timm_convnext("convnext_t", sd, **TINY, mlp_ratio=3.0)
  with pytest.raises(ValueError, match=r"'stages\.0\.blocks\.0\.conv_dw\.weight' has shape \(8, 1, 7, 7\) "
                                       r"\(converted to \(7, 7, 1, 8\)\) but the model's .* has shape \(5, 5, 1, 8\)"):
    import_timm_convnext("convnext_t", sd, **TINY, kernel_size=5)


def test_missing_key_and_unknown_attribute(reference):
  sd = dict(reference[0])
  del sd["stages.3.downsample.0.bias"]
  with pytest.raises(ValueError, match=r"missing from the checkpoint: params/stage_3/downsample_norm/bias"):
    import_timm_convnext("convnext_t", sd, **TINY)
  with pytest.raises(ValueError, match=r"unknown attribute\(s\) \['embed_dim'\]"):
    import_timm_convnext("convnext_t", reference[0], embed_dim=16)

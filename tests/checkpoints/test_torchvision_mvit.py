"""import_torchvision_mvit: tiny torchvision MViTs with random weights give the same outputs in our MViT (eval mode,
float32), MViT-style and MViTv2-style, on clips and (through torchvision's own 4D path) on images; the named
variants' block settings and parameter counts are torchvision's; the importer's errors.

torchvision's `MViT` is built directly with a 2-block `block_setting` (the columns below) at width 8 for 6 x 24 x 40
clips: a 3 x 6 x 10 token map, all sizes different. MViT-style: widening in block 0's MLP, queries pooled only in
block 1, by 2 x 2 x 2 (3 x 6 x 10 -> 2 x 3 x 5). MViTv2-style (relative positions, residual pooling, projection
after the attention): every query pooled (kernel 3), stride 1 x 2 x 2 in block 1; keys and values pooled by
2 x 2 x 2 in block 0, so that its query and key maps differ (ratio 3/2: torchvision's fractional offsets), then by
1 x 2 x 2; the tables are sized for max(H, W) = 10 and resampled to the height's size.
"""
import logging

import numpy as np
import pytest

from tests.checkpoints.timm_reference import import_timm, randomize_, require_torch, state_dict
from tests.models.test_mvit import PARAM_COUNTS, compiled
from vit_video import models
from vit_video.checkpoints.torchvision_mvit import TORCHVISION_NAMES, import_torchvision_mvit
from vit_video.layers import pooling_attention as pa
from vit_video.models import mvit

B, C, K = 2, 3, 5
CLIP = (6, 24, 40)
V1 = dict(num_heads=(1, 2), block_widths=(16, 16), kernel_q=((1, 1, 1), (3, 3, 3)), stride_q=((1, 1, 1), (2, 2, 2)),
          kernel_kv=((3, 3, 3),) * 2, stride_kv=((1, 2, 2), (1, 1, 1)))
V2 = dict(num_heads=(1, 2), block_widths=(8, 16), kernel_q=((3, 3, 3),) * 2, stride_q=((1, 1, 1), (1, 2, 2)),
          kernel_kv=((3, 3, 3),) * 2, stride_kv=((2, 2, 2), (1, 2, 2)),
          relative_positions=True, residual_pool=True, project_after_attention=True)


@pytest.fixture(scope="module")
def torchvision():
  require_torch("torchvision (the reference implementation) needs torch")
  import_timm()  # installs the shim that makes torchvision importable on CPU torch
  import torchvision
  return torchvision


def block_setting(columns: dict, width: int) -> list:
  """MViT's per-block attributes (and the embedding width) as torchvision's `block_setting`."""
  from torchvision.models.video.mvit import MSBlockConfig
  widths = (width, *columns["block_widths"])
  return [MSBlockConfig(num_heads=columns["num_heads"][i], input_channels=widths[i], output_channels=widths[i + 1],
                        **{k: list(columns[k][i]) for k in ("kernel_q", "kernel_kv", "stride_q", "stride_kv")})
          for i in range(len(columns["num_heads"]))]


def reference(torchvision, columns, *, temporal_size=CLIP[0], residual_with_cls=False):
  """A random torchvision MViT of our per-block `columns` at width 8, K classes, and its state dict as numpy."""
  from torchvision.models.video.mvit import MViT
  model = MViT(spatial_size=CLIP[1:], temporal_size=temporal_size, block_setting=block_setting(columns, 8),
               residual_pool=columns.get("residual_pool", False), residual_with_cls_embed=residual_with_cls,
               rel_pos_embed=columns.get("relative_positions", False),
               proj_after_attn=columns.get("project_after_attention", False), num_classes=K)
  model = randomize_(model)
  return model, state_dict(model)


def run(model, x):
  import torch
  with torch.no_grad():
    x = torch.from_numpy(x)
    return model.eval()(x.permute(0, 4, 1, 2, 3) if x.ndim == 5 else x.permute(0, 3, 1, 2)).numpy()


def _forward(model, variables, x):
  return compiled(lambda v, x: model.apply(v, x, train=False), variables, x)


def max_rel_err(ours, ref) -> float:
  return float(np.max(np.abs(np.asarray(ours) - ref)) / np.max(np.abs(ref)))


@pytest.mark.parametrize("columns, name", [(V1, "mvit_v1_b"), (V2, "mvit_v2_s")])
def test_matches_torchvision_on_clips(torchvision, columns, name):
  model, sd = reference(torchvision, columns)
  overrides = dict(columns, width=8, input_size=CLIP)
  variables = import_torchvision_mvit(name, sd, **overrides)
  x = np.random.default_rng(0).normal(size=(B, *CLIP, C)).astype(np.float32)
  ref = run(model, x)
  assert ref.shape == (B, K) and np.std(ref) > 0.1
  ours = _forward(mvit.MODELS[name](num_classes=K, **overrides), variables, x)
  err = max_rel_err(ours, ref)
  print(f"{name}-style tiny MViT, clip {CLIP}: max rel err {err:.2e}")
  assert err < 1e-5


def test_image_model_matches_torchvisions_4d_path(torchvision):
  """torchvision's MViT adds T = 1 to a [B,C,H,W] input; built with temporal_size 2 its tables have T' = 1."""
  model, sd = reference(torchvision, V2, temporal_size=2, residual_with_cls=True)
  overrides = dict(V2, width=8, input_size=(1, *CLIP[1:]), residual_with_cls=True)
  variables = import_torchvision_mvit("mvit_v2_s_image", sd, **overrides)
  x = np.random.default_rng(1).normal(size=(B, *CLIP[1:], C)).astype(np.float32)
  ref = run(model, x)
  ours = _forward(mvit.MODELS["mvit_v2_s_image"](num_classes=K, **overrides), variables, x)
  err = max_rel_err(ours, ref)
  print(f"mvit_v2_s-style tiny image MViT, {CLIP[1:]}: max rel err {err:.2e}")
  assert err < 1e-5


def test_table_resampling_and_offsets_equal_torchvisions(torchvision):
  import torch
  from torchvision.models.video import mvit as tv
  table = np.random.default_rng(2).normal(size=(9, 4)).astype(np.float32)
  for rows in (5, 9, 13):
    np.testing.assert_allclose(pa.resize_rows(table, rows), tv._interpolate(torch.from_numpy(table), rows).numpy(),
                               atol=1e-5)
  for q, k in ((3, 5), (5, 3), (2, 7), (4, 4)):  # _add_rel_pos's dist_h, as it computes it
    dist = (torch.arange(q)[:, None] * max(k / q, 1.0)
            - (torch.arange(k)[None, :] + (1.0 - k)) * max(q / k, 1.0)).long().numpy()
    np.testing.assert_array_equal(pa.relative_offsets(q, k), dist)


def _columns(module) -> dict:
  """A torchvision MViT's block setting read back from its modules, as MViT's per-block attributes."""
  cols = {k: [] for k in ("num_heads", "block_widths", "kernel_q", "stride_q", "kernel_kv", "stride_kv")}
  for block in module.blocks:
    cols["num_heads"].append(block.attn.num_heads)
    cols["block_widths"].append(block.mlp[3].out_features)
    for which, pool in (("q", block.attn.pool_q), ("kv", block.attn.pool_k)):
      cols[f"kernel_{which}"].append(tuple(pool.pool.kernel_size) if pool else (1, 1, 1))
      cols[f"stride_{which}"].append(tuple(pool.pool.stride) if pool else (1, 1, 1))
  return {k: tuple(v) for k, v in cols.items()}


@pytest.mark.parametrize("name", sorted(TORCHVISION_NAMES))
def test_block_settings_and_counts_equal_torchvision_built_on_the_meta_device(torchvision, name):
  import torch
  with torch.device("meta"):
    model = getattr(torchvision.models.video, TORCHVISION_NAMES[name])()
  ours = mvit.VARIANTS[name]
  assert _columns(model) == {k: ours[k] for k in _columns(model)}
  assert model.conv_proj.out_channels == mvit.MViT.width
  assert (model.conv_proj.kernel_size, model.conv_proj.stride, model.conv_proj.padding) == (
      mvit.MViT.patch_kernel, mvit.MViT.patch_stride, mvit.MViT.patch_padding)
  assert (model.pos_encoding.spatial_pos is None) == ours.get("relative_positions", False)
  assert sum(p.numel() for p in model.parameters()) == PARAM_COUNTS[name]
  enum = {"mvit_v1_b": "MViT_V1_B_Weights", "mvit_v2_s": "MViT_V2_S_Weights"}[name]
  meta = getattr(torchvision.models.video, enum).KINETICS400_V1.meta
  assert meta["num_params"] == PARAM_COUNTS[name] and len(meta["categories"]) == 400
  assert (meta["min_temporal_size"], *meta["min_size"]) == mvit.MViT.input_size
  # The image form: torchvision's MViT of the same blocks built for images (temporal_size 2).
  with torch.device("meta"):
    image = torchvision.models.video.MViT((224, 224), 2, block_setting(_columns(model), mvit.MViT.width),
                                          residual_pool=ours.get("residual_pool", False), residual_with_cls_embed=False,
                                          rel_pos_embed=ours.get("relative_positions", False),
                                          proj_after_attn=ours.get("project_after_attention", False))
  assert sum(p.numel() for p in image.parameters()) == PARAM_COUNTS[f"{name}_image"]


def test_every_video_variant_has_a_torchvision_name():
  assert set(TORCHVISION_NAMES) == {n for n in mvit.MODELS if not n.endswith("_image")}


def test_other_num_classes_drops_the_head(torchvision, caplog):
  _, sd = reference(torchvision, V1)
  with caplog.at_level(logging.INFO, logger="vit_video.checkpoints"):
    variables = import_torchvision_mvit("mvit_v1_b", sd, num_classes=7, **V1, width=8, input_size=CLIP)
  assert "head" not in variables["params"] and "head.1.weight" in caplog.text
  assert "head" not in import_torchvision_mvit("mvit_v1_b", sd, num_classes=0, **V1, width=8,
                                               input_size=CLIP)["params"]


def test_errors_name_the_keys_and_shapes(torchvision):
  _, sd = reference(torchvision, V2)
  kw = dict(V2, width=8, input_size=CLIP)
  with pytest.raises(ValueError, match=r"mvit_v1_b: \d+ checkpoint array\(s\) have no place in the model: "
                                       r"'blocks\.0\.attn\.pool_q\.pool\.weight' "
                                       r"\(as 'params/block_0/attn/pool_q/conv/kernel'\)"):
    import_torchvision_mvit("mvit_v1_b", sd, **dict(kw, relative_positions=False, kernel_q=V1["kernel_q"]))
  with pytest.raises(ValueError, match=r"mvit_v2_s: checkpoint array 'blocks\.0\.attn\.rel_pos_h' has shape "
                                       r"\(19, 8\) but the model's .* has shape \(39, 8\)"):
    import_torchvision_mvit("mvit_v2_s", sd, **dict(kw, input_size=(6, 24, 80)))
  with pytest.raises(ValueError, match=r"mvit_v2_s: checkpoint array 'blocks\.1\.attn\.qkv\.weight' has shape "
                                       r"\(48, 8\) but the model expects \(72, 8\)"):
    import_torchvision_mvit("mvit_v2_s", sd, **dict(kw, block_widths=(8, 24), num_heads=(1, 3)))
  partial = {k: v for k, v in sd.items() if k != "blocks.1.attn.pool_k.pool.weight"}
  with pytest.raises(ValueError, match=r"missing from the checkpoint: params/block_1/attn/pool_k/conv/kernel"):
    import_torchvision_mvit("mvit_v2_s", partial, **kw)
  with pytest.raises(ValueError, match=r"unknown attribute\(s\) \['embed_dim'\]"):
    import_torchvision_mvit("mvit_v2_s", sd, embed_dim=8)

"""Imports timm PyTorch state dicts, given as numpy arrays, without needing torch: `import_timm`, every timm family.

    import torch, timm
    sd = {k: v.numpy() for k, v in timm.create_model("vit_base_patch16_224", pretrained=True).state_dict().items()}
    variables = import_timm("vit_b16", sd)

Families and their timm models (i, j 0-based as in timm; conv weights OIHW -> HWIO, Linear weights transposed):
  ViT `vit_*` (timm `vit_*_patch*`): cls_token -> cls/token; pos_embed -> Transformer/posembed_input/pos_embedding;
    patch_embed.proj -> embedding; blocks.{i}.norm1/norm2 -> encoderblock_{i}/LayerNorm_0/LayerNorm_2;
    blocks.{i}.attn.qkv [3hd,D] -> MultiHeadDotProductAttention_1/{query,key,value} kernels [D,h,d], biases [h,d];
    blocks.{i}.attn.proj [D,hd] -> .../out kernel [h,d,D]; blocks.{i}.mlp.fc{1,2} -> MlpBlock_3/Dense_{0,1};
    norm -> Transformer/encoder_norm; head -> head.
  Hybrids `r*_vit_*` (timm `vit_*_r50_s16_*`, `vit_small_r26_s32_*`, `vit_tiny_r_s16_p8_*`), trunk under stem/:
    patch_embed.backbone[.stem].conv/norm -> conv_root/gn_root;
    patch_embed.backbone.stages.{i}.blocks.{j}.{conv,norm}{k} -> block{i+1}/unit{j+1}/{conv,gn}{k};
    ....downsample.{conv,norm} -> conv_proj/gn_proj. timm runs this trunk with its own numerics (weight
    standardisation eps 1e-8 on the variance, GroupNorm eps 1e-5); `ResNetStem` defaults to vit_jax's.
  ResNet `resnet*` (timm or torchvision `resnet*`): the names in `vit_video.models.resnet`; BatchNorm running
    statistics go to the `batch_stats` collection; `num_batches_tracked` is ignored.
  BiT `bit_*` (timm `resnetv2_*_bit`): the names in `vit_video.models.bit`; head.fc [K,D,1,1] -> head [D,K].
  Swin `swin_*` (timm `swin_*_patch4_window*`): see timm_swin.py.
  ConvNeXt `convnext_*` (timm `convnext_{tiny,small,base,large}`): see timm_convnext.py.
"""
import re

import numpy as np

from vit_video.checkpoints import convert, timm_convnext, timm_swin
from vit_video.checkpoints.torch_keys import (Rule, batch_norm, conv_kernel, dense_kernel, head_conv, import_state_dict,
                                              norm, same)
from vit_video.models import bit, convnext, resnet, swin, vit

_BLOCK = r"blocks\.(\d+)\."
_ENC = "Transformer/encoderblock_{}"
_TRUNK = r"patch_embed\.backbone\.stages\.(\d+)\.blocks\.(\d+)\."
VIT_RULES: list[Rule] = [
    (r"cls_token", lambda m: "params/cls/token", same),
    (r"pos_embed", lambda m: "params/Transformer/posembed_input/pos_embedding", same),
    (r"patch_embed\.proj\.weight", lambda m: "params/embedding/kernel", conv_kernel),
    (r"patch_embed\.proj\.bias", lambda m: "params/embedding/bias", same),
    (_BLOCK + r"norm1\.(weight|bias)", lambda m: norm(f"{_ENC.format(m[1])}/LayerNorm_0", m[2]), same),
    (_BLOCK + r"norm2\.(weight|bias)", lambda m: norm(f"{_ENC.format(m[1])}/LayerNorm_2", m[2]), same),
    (_BLOCK + r"mlp\.fc(1|2)\.weight",
     lambda m: f"params/{_ENC.format(m[1])}/MlpBlock_3/Dense_{int(m[2]) - 1}/kernel", dense_kernel),
    (_BLOCK + r"mlp\.fc(1|2)\.bias", lambda m: f"params/{_ENC.format(m[1])}/MlpBlock_3/Dense_{int(m[2]) - 1}/bias",
     same),
    (_BLOCK + r"attn\.proj\.bias", lambda m: f"params/{_ENC.format(m[1])}/MultiHeadDotProductAttention_1/out/bias",
     same),
    (r"norm\.(weight|bias)", lambda m: norm("Transformer/encoder_norm", m[1]), same),
    (r"head\.weight", lambda m: "params/head/kernel", dense_kernel),
    (r"head\.bias", lambda m: "params/head/bias", same),
    # Hybrid trunk; timm's root-only trunk (R+ViT-Ti) is the stem itself, without the `.stem`.
    (r"patch_embed\.backbone\.(?:stem\.)?conv\.weight", lambda m: "params/stem/conv_root/kernel", conv_kernel),
    (r"patch_embed\.backbone\.(?:stem\.)?norm\.(weight|bias)", lambda m: norm("stem/gn_root", m[1]), same),
    (_TRUNK + r"conv(\d)\.weight", lambda m: f"params/stem/block{int(m[1]) + 1}/unit{int(m[2]) + 1}/conv{m[3]}/kernel",
     conv_kernel),
    (_TRUNK + r"norm(\d)\.(weight|bias)",
     lambda m: norm(f"stem/block{int(m[1]) + 1}/unit{int(m[2]) + 1}/gn{m[3]}", m[4]), same),
    (_TRUNK + r"downsample\.conv\.weight",
     lambda m: f"params/stem/block{int(m[1]) + 1}/unit{int(m[2]) + 1}/conv_proj/kernel", conv_kernel),
    (_TRUNK + r"downsample\.norm\.(weight|bias)",
     lambda m: norm(f"stem/block{int(m[1]) + 1}/unit{int(m[2]) + 1}/gn_proj", m[3]), same),
]

_LAYER = r"layer(\d+)\.(\d+)\."
RESNET_RULES: list[Rule] = [
    (r"conv1\.weight", lambda m: "params/conv1/kernel", conv_kernel),
    (r"bn1\.(weight|bias|running_mean|running_var)", lambda m: batch_norm("bn1", m[1]), same),
    (_LAYER + r"conv(\d)\.weight", lambda m: f"params/layer{m[1]}/block{m[2]}/conv{m[3]}/kernel", conv_kernel),
    (_LAYER + r"bn(\d)\.(weight|bias|running_mean|running_var)",
     lambda m: batch_norm(f"layer{m[1]}/block{m[2]}/bn{m[3]}", m[4]), same),
    (_LAYER + r"downsample\.0\.weight", lambda m: f"params/layer{m[1]}/block{m[2]}/downsample_conv/kernel",
     conv_kernel),
    (_LAYER + r"downsample\.1\.(weight|bias|running_mean|running_var)",
     lambda m: batch_norm(f"layer{m[1]}/block{m[2]}/downsample_bn", m[3]), same),
    (r"fc\.weight", lambda m: "params/fc/kernel", dense_kernel),
    (r"fc\.bias", lambda m: "params/fc/bias", same),
]

_STAGE = r"stages\.(\d+)\.blocks\.(\d+)\."
BIT_RULES: list[Rule] = [
    (r"stem\.conv\.weight", lambda m: "params/stem_conv/kernel", conv_kernel),
    (_STAGE + r"conv(\d)\.weight", lambda m: f"params/stage{m[1]}/block{m[2]}/conv{m[3]}/kernel", conv_kernel),
    (_STAGE + r"norm(\d)\.(weight|bias)", lambda m: norm(f"stage{m[1]}/block{m[2]}/norm{m[3]}", m[4]), same),
    (_STAGE + r"downsample\.conv\.weight", lambda m: f"params/stage{m[1]}/block{m[2]}/downsample_conv/kernel",
     conv_kernel),
    (r"norm\.(weight|bias)", lambda m: norm("norm", m[1]), same),
    (r"head\.fc\.weight", lambda m: "params/head/kernel", head_conv),
    (r"head\.fc\.bias", lambda m: "params/head/bias", same),
]

# Per family: the rules and the checkpoint key holding the head's bias [K]. ResNet's keys are torchvision's too.
FAMILIES = {
    vit.ViT: (VIT_RULES, "head.bias"),
    resnet.ResNet: (RESNET_RULES, "fc.bias"),
    bit.BiT: (BIT_RULES, "head.fc.bias"),
}


def import_timm(name: str, state_dict: dict[str, np.ndarray], *, num_classes: int | None = None,
                scan: bool = False, **overrides) -> dict:
  """Converts a timm state dict (`{key: tensor.numpy()}`) into variables for `create_model(name)`.

  Args:
    name: a name from `vit_video.models.MODELS` of a family timm has: `vit_*`, `r*_vit_*`, `resnet*`, `bit_*`,
      `swin_*` or `convnext_*` (another name raises ValueError listing these).
    state_dict: timm's parameter (and buffer) names -> numpy arrays, e.g. `{k: v.numpy() for k, v in
      model.state_dict().items()}`.
    num_classes: K of the model to build. None keeps the checkpoint's (0 when it has no head). A different K
      drops the head (logged at INFO by `vit_video.checkpoints.convert`), to be initialised afresh and merged as
      `{"params": {**fresh["params"], **imported["params"]}, ...}` (the head is a top-level entry).
    scan: ViT only: return the `nn.scan` layout, for models built with `scan=True`.
    **overrides: module attributes for `create_model` (e.g. width/depth for a custom size, dtypes; for Swin,
      `window_size` to resample the relative-position tables).

  Returns:
    `{'params': ...}`, plus `'batch_stats'` for ResNets, for `create_model(name, num_classes=K, scan=scan,
    **overrides).apply`. A ViT's position embedding fixes its token count; non-square grids are fine.

  Raises:
    ValueError: a name of another family, a checkpoint key that is not this family's (e.g. another family's
      checkpoint), a missing model variable, or a shape that differs (naming the model, the checkpoint key and
      both shapes).
  """
  family = convert.supported_family(name, (*FAMILIES, swin.Swin, convnext.ConvNeXt), "timm")
  if scan and family is not vit.ViT:
    raise ValueError(f"{name}: scan=True applies to ViT models only")
  if family is swin.Swin:
    return timm_swin.import_timm_swin(name, state_dict, num_classes=num_classes, **overrides)
  if family is convnext.ConvNeXt:
    return timm_convnext.import_timm_convnext(name, state_dict, num_classes=num_classes, **overrides)
  rules, head_bias = FAMILIES[family]
  if family is vit.ViT:
    pos = state_dict.get("pos_embed")  # [1, prefix + grid tokens, D]
    input_size = lambda m: convert.vit_image_shape(  # noqa: E731
        m, pos.shape[1] - int(m.pool == "token") if pos is not None and pos.ndim == 3 else 1)
    attention = (_BLOCK, lambda m: f"params/{_ENC.format(m[1])}/MultiHeadDotProductAttention_1")
  else:
    input_size, attention = lambda m: (64, 64), None  # CNN parameter shapes do not depend on H, W.
  variables = import_state_dict(name, state_dict, num_classes=num_classes, overrides=overrides, head_bias=head_bias,
                                input_size=input_size, rules=rules, attention=attention,
                                ignored=re.compile(r".*num_batches_tracked"))
  if scan:
    variables["params"] = vit.unscanned_to_scan(variables["params"])
  return variables

"""Imports timm (and torchvision) PyTorch state dicts, given as numpy arrays, without needing torch.

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
"""
import re
from typing import Callable

import numpy as np

from vit_video.checkpoints import convert
from vit_video.models import bit, create_model, resnet, vit

Rule = tuple[str, Callable[[re.Match], str], Callable[[np.ndarray], np.ndarray]]


def _same(a: np.ndarray) -> np.ndarray:
  return a


def _norm(path: str, m: str) -> str:
  """A torch norm's `weight`/`bias` -> Flax `scale`/`bias` under `path`."""
  return f"params/{path}/{'scale' if m == 'weight' else 'bias'}"


def _batch_norm(path: str, m: str) -> str:
  """A torch BatchNorm's weight, bias, running_mean, running_var -> params or batch_stats under `path`."""
  return {"weight": f"params/{path}/scale", "bias": f"params/{path}/bias",
          "running_mean": f"batch_stats/{path}/mean", "running_var": f"batch_stats/{path}/var"}[m]


def _head_conv(a: np.ndarray) -> np.ndarray:
  """A 1x1 conv head [K,D,1,1] -> Dense kernel [D,K]."""
  return a[:, :, 0, 0].T if a.ndim == 4 and a.shape[2:] == (1, 1) else a


_BLOCK = r"blocks\.(\d+)\."
_ENC = "Transformer/encoderblock_{}"
_TRUNK = r"patch_embed\.backbone\.stages\.(\d+)\.blocks\.(\d+)\."
VIT_RULES: list[Rule] = [
    (r"cls_token", lambda m: "params/cls/token", _same),
    (r"pos_embed", lambda m: "params/Transformer/posembed_input/pos_embedding", _same),
    (r"patch_embed\.proj\.weight", lambda m: "params/embedding/kernel", convert.conv_kernel),
    (r"patch_embed\.proj\.bias", lambda m: "params/embedding/bias", _same),
    (_BLOCK + r"norm1\.(weight|bias)", lambda m: _norm(f"{_ENC.format(m[1])}/LayerNorm_0", m[2]), _same),
    (_BLOCK + r"norm2\.(weight|bias)", lambda m: _norm(f"{_ENC.format(m[1])}/LayerNorm_2", m[2]), _same),
    (_BLOCK + r"mlp\.fc(1|2)\.weight",
     lambda m: f"params/{_ENC.format(m[1])}/MlpBlock_3/Dense_{int(m[2]) - 1}/kernel", convert.dense_kernel),
    (_BLOCK + r"mlp\.fc(1|2)\.bias", lambda m: f"params/{_ENC.format(m[1])}/MlpBlock_3/Dense_{int(m[2]) - 1}/bias",
     _same),
    (_BLOCK + r"attn\.proj\.bias", lambda m: f"params/{_ENC.format(m[1])}/MultiHeadDotProductAttention_1/out/bias",
     _same),
    (r"norm\.(weight|bias)", lambda m: _norm("Transformer/encoder_norm", m[1]), _same),
    (r"head\.weight", lambda m: "params/head/kernel", convert.dense_kernel),
    (r"head\.bias", lambda m: "params/head/bias", _same),
    # Hybrid trunk; timm's root-only trunk (R+ViT-Ti) is the stem itself, without the `.stem`.
    (r"patch_embed\.backbone\.(?:stem\.)?conv\.weight", lambda m: "params/stem/conv_root/kernel", convert.conv_kernel),
    (r"patch_embed\.backbone\.(?:stem\.)?norm\.(weight|bias)", lambda m: _norm("stem/gn_root", m[1]), _same),
    (_TRUNK + r"conv(\d)\.weight", lambda m: f"params/stem/block{int(m[1]) + 1}/unit{int(m[2]) + 1}/conv{m[3]}/kernel",
     convert.conv_kernel),
    (_TRUNK + r"norm(\d)\.(weight|bias)",
     lambda m: _norm(f"stem/block{int(m[1]) + 1}/unit{int(m[2]) + 1}/gn{m[3]}", m[4]), _same),
    (_TRUNK + r"downsample\.conv\.weight",
     lambda m: f"params/stem/block{int(m[1]) + 1}/unit{int(m[2]) + 1}/conv_proj/kernel", convert.conv_kernel),
    (_TRUNK + r"downsample\.norm\.(weight|bias)",
     lambda m: _norm(f"stem/block{int(m[1]) + 1}/unit{int(m[2]) + 1}/gn_proj", m[3]), _same),
]

_LAYER = r"layer(\d+)\.(\d+)\."
RESNET_RULES: list[Rule] = [
    (r"conv1\.weight", lambda m: "params/conv1/kernel", convert.conv_kernel),
    (r"bn1\.(weight|bias|running_mean|running_var)", lambda m: _batch_norm("bn1", m[1]), _same),
    (_LAYER + r"conv(\d)\.weight", lambda m: f"params/layer{m[1]}/block{m[2]}/conv{m[3]}/kernel", convert.conv_kernel),
    (_LAYER + r"bn(\d)\.(weight|bias|running_mean|running_var)",
     lambda m: _batch_norm(f"layer{m[1]}/block{m[2]}/bn{m[3]}", m[4]), _same),
    (_LAYER + r"downsample\.0\.weight", lambda m: f"params/layer{m[1]}/block{m[2]}/downsample_conv/kernel",
     convert.conv_kernel),
    (_LAYER + r"downsample\.1\.(weight|bias|running_mean|running_var)",
     lambda m: _batch_norm(f"layer{m[1]}/block{m[2]}/downsample_bn", m[3]), _same),
    (r"fc\.weight", lambda m: "params/fc/kernel", convert.dense_kernel),
    (r"fc\.bias", lambda m: "params/fc/bias", _same),
]

_STAGE = r"stages\.(\d+)\.blocks\.(\d+)\."
BIT_RULES: list[Rule] = [
    (r"stem\.conv\.weight", lambda m: "params/stem_conv/kernel", convert.conv_kernel),
    (_STAGE + r"conv(\d)\.weight", lambda m: f"params/stage{m[1]}/block{m[2]}/conv{m[3]}/kernel", convert.conv_kernel),
    (_STAGE + r"norm(\d)\.(weight|bias)", lambda m: _norm(f"stage{m[1]}/block{m[2]}/norm{m[3]}", m[4]), _same),
    (_STAGE + r"downsample\.conv\.weight", lambda m: f"params/stage{m[1]}/block{m[2]}/downsample_conv/kernel",
     convert.conv_kernel),
    (r"norm\.(weight|bias)", lambda m: _norm("norm", m[1]), _same),
    (r"head\.fc\.weight", lambda m: "params/head/kernel", _head_conv),
    (r"head\.fc\.bias", lambda m: "params/head/bias", _same),
]

# Per family: the rules, the checkpoint key holding the head's bias [K], our head's prefix.
FAMILIES = {
    vit.ViT: (VIT_RULES, "head.bias", "params/head/"),
    resnet.ResNet: (RESNET_RULES, "fc.bias", "params/fc/"),
    bit.BiT: (BIT_RULES, "head.fc.bias", "params/head/"),
}


def import_timm(name: str, state_dict: dict[str, np.ndarray], *, num_classes: int | None = None,
                scan: bool = False, **overrides) -> dict:
  """Converts a timm / torchvision state dict (`{key: tensor.numpy()}`) into variables for `create_model(name)`.

  Args:
    name: a name from `vit_video.models.MODELS`: `vit_*`, `r*_vit_*`, `resnet*` or `bit_*`.
    state_dict: timm's parameter (and buffer) names -> numpy arrays, e.g. `{k: v.numpy() for k, v in
      model.state_dict().items()}`.
    num_classes: K of the model to build. None keeps the checkpoint's (0 when it has no head). A different K
      drops the head (logged at INFO by `vit_video.checkpoints.convert`), to be initialised afresh and merged as
      `{"params": {**fresh["params"], **imported["params"]}, ...}` (the head is a top-level entry).
    scan: ViT only: return the `nn.scan` layout, for models built with `scan=True`.
    **overrides: module attributes for `create_model` (e.g. width/depth for a custom size, dtypes).

  Returns:
    `{'params': ...}`, plus `'batch_stats'` for ResNets, for `create_model(name, num_classes=K, scan=scan,
    **overrides).apply`. A ViT's position embedding fixes its token count; non-square grids are fine.

  Raises:
    ValueError: a checkpoint key that is not this family's (e.g. another family's checkpoint), a missing model
      variable, or a shape that differs (naming the model, the checkpoint key and both shapes).
  """
  model = create_model(name, num_classes=0, **overrides)  # Validates name and overrides; K comes later.
  family = type(model)
  if family not in FAMILIES:
    raise ValueError(f"{name}: no timm importer for {family.__name__} models")
  if scan and family is not vit.ViT:
    raise ValueError(f"{name}: scan=True applies to ViT models only")
  rules, head_key, head_prefix = FAMILIES[family]
  head_bias = state_dict.get(head_key)
  num_classes, replace = convert.head_classes(name, num_classes, head_bias.shape[-1] if head_bias is not None else 0)
  model = create_model(name, num_classes=num_classes, **overrides)
  if family is vit.ViT:
    pos = state_dict.get("pos_embed")
    n = pos.shape[1] - int(model.pool == "token") if pos is not None and pos.ndim == 3 else 1
    expected = convert.expected_variables(model, convert.vit_image_shape(model, n))
  else:
    expected = convert.expected_variables(model, (64, 64))  # CNN parameter shapes do not depend on H, W.

  converted = {}
  for key, value in state_dict.items():
    if key.endswith("num_batches_tracked"):
      continue
    a = np.asarray(value)
    if family is vit.ViT and (m := re.fullmatch(_BLOCK + r"attn\.qkv\.(weight|bias)", key)):
      converted.update(_split_qkv(name, key, a, f"params/{_ENC.format(m[1])}/MultiHeadDotProductAttention_1",
                                  expected))
    elif family is vit.ViT and (m := re.fullmatch(_BLOCK + r"attn\.proj\.weight", key)):
      ours = f"params/{_ENC.format(m[1])}/MultiHeadDotProductAttention_1/out/kernel"
      converted[ours] = convert.Converted(key, a.shape, _proj_to_out(name, key, a, expected.get(ours)))
    else:
      ours, transform = _rename(key, rules)
      converted[ours] = convert.Converted(key, a.shape, transform(a))
  left_to_init = ()
  if replace:
    convert.drop_head(name, converted, (head_prefix,), f"the model has {num_classes} classes")
    left_to_init = (head_prefix,)
  variables = convert.assemble(name, converted, expected, left_to_init=left_to_init)
  if scan:
    variables["params"] = vit.unscanned_to_scan(variables["params"])
  return variables


def _rename(key: str, rules: list[Rule]) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
  """The first matching rule's (path, transform); an unknown key keeps its name (`assemble` reports it)."""
  for pattern, target, transform in rules:
    if m := re.fullmatch(pattern, key):
      return target(m), transform
  return f"{convert.UNKNOWN}{key}", _same


def _proj_to_out(name: str, key: str, a: np.ndarray, want) -> np.ndarray:
  """timm's attention output projection weight [D, hd] -> our out kernel [h, d, D]."""
  if want is None:
    return a  # Not a place in this model: `assemble` reports it.
  h, d, dim = want.shape
  if a.shape != (dim, h * d):
    raise ValueError(f"{name}: checkpoint array {key!r} has shape {a.shape} but the model expects {(dim, h * d)} "
                     f"(out kernel of shape {want.shape})")
  return a.T.reshape(h, d, dim)


def _split_qkv(name: str, key: str, a: np.ndarray, path: str, expected: dict) -> dict[str, convert.Converted]:
  """timm's fused qkv, weight [3hd, D] or bias [3hd] -> query/key/value kernels [D,h,d] or biases [h,d]."""
  leaf = "kernel" if key.endswith("weight") else "bias"
  want = expected.get(f"{path}/query/{leaf}")
  if want is None:
    return {f"{convert.UNKNOWN}{key}": convert.Converted(key, a.shape, a)}
  hd = int(np.prod(want.shape[-2:]))
  expect = (3 * hd, want.shape[0]) if leaf == "kernel" else (3 * hd,)
  if a.shape != expect:
    raise ValueError(f"{name}: checkpoint array {key!r} has shape {a.shape} but the model expects {expect} "
                     f"(query/key/value {leaf}s of shape {want.shape})")
  out = {}
  for i, part in enumerate(("query", "key", "value")):
    chunk = a[i * hd:(i + 1) * hd]  # [hd, D] or [hd]
    value = chunk.T.reshape(want.shape) if leaf == "kernel" else chunk.reshape(want.shape)
    out[f"{path}/{part}/{leaf}"] = convert.Converted(f"{key}[{part}]", a.shape, value)
  return out

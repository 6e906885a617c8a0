"""Imports Hugging Face `DetrForObjectDetection` state dicts (timm backbone, the published checkpoints' layout), given
as numpy arrays, into vit_video.models.detr.DETR, without needing torch:

    import transformers
    hf = transformers.DetrForObjectDetection.from_pretrained("facebook/detr-resnet-50")
    variables = import_hf_detr({k: v.numpy() for k, v in hf.state_dict().items()})

Keys (i, j 0-based; `B.` = `model.backbone.conv_encoder.model.`; conv weights OIHW -> HWIO, Linear weights transposed;
the frozen BatchNorms' weight, bias, running_mean, running_var -> constants .../{scale,bias,mean,var}):
  B.conv1, B.bn1                                  backbone/conv1, backbone/bn1
  B.layer{s}.{j}.{conv,bn}{k}                     backbone/layer{s}/block{j}/{conv,bn}{k}
  B.layer{s}.{j}.downsample.{0,1}                 backbone/layer{s}/block{j}/downsample_{conv,bn}
  model.input_projection                          input_proj (a 1x1 conv)
  model.query_position_embeddings.weight          query_embed
  model.{encoder,decoder}.layers.{i}.             {encoder,decoder}{i}/
    self_attn.{q,k,v,out}_proj                      self_attn/{query,key,value,out} ([D,h,d] kernels, out [h,d,D])
    encoder_attn.{q,k,v,out}_proj                   cross_attn/... (decoder)
    self_attn_layer_norm, fc1, fc2                  norm1, linear1, linear2
    encoder_attn_layer_norm, final_layer_norm       decoder: norm2, norm3; encoder: final_layer_norm -> norm2
  model.decoder.layernorm                         decoder_norm
  class_labels_classifier                         class_embed
  bbox_predictor.layers.{k}                       bbox_embed{k}
"""
import dataclasses
import re

import numpy as np

from vit_video.checkpoints import convert
from vit_video.checkpoints.torch_keys import Rule, conv_kernel, convert_keys, dense_kernel, norm, same
from vit_video.models import detr

NAME = "detr"  # The model's name in messages (DETR has no entry in vit_video.models.MODELS).
_BACKBONE = r"model\.backbone\.conv_encoder\.model\."
_BLOCK = _BACKBONE + r"layer(\d+)\.(\d+)\."
_LAYER = r"model\.(encoder|decoder)\.layers\.(\d+)\."
_ATTENTION = {"self_attn": "self_attn", "encoder_attn": "cross_attn"}
_PROJ = {"q": "query", "k": "key", "v": "value", "out": "out"}
_NORMS = {("encoder", "self_attn_layer_norm"): "norm1", ("encoder", "final_layer_norm"): "norm2",
          ("decoder", "self_attn_layer_norm"): "norm1", ("decoder", "encoder_attn_layer_norm"): "norm2",
          ("decoder", "final_layer_norm"): "norm3"}
_BN = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}
_BN_FIELDS = r"(weight|bias|running_mean|running_var)"


def frozen_bn(path: str, m: str) -> str:
  """A frozen BatchNorm buffer -> constants under `path`."""
  return f"constants/backbone/{path}/{_BN[m]}"


def _layer_norm(m: re.Match) -> str:
  return norm(f"{m[1]}{m[2]}/{_NORMS.get((m[1], m[3]), m[3])}", m[4])


RULES: list[Rule] = [
    (_BACKBONE + r"conv1\.weight", lambda m: "params/backbone/conv1/kernel", conv_kernel),
    (_BACKBONE + r"bn1\." + _BN_FIELDS, lambda m: frozen_bn("bn1", m[1]), same),
    (_BLOCK + r"conv(\d)\.weight", lambda m: f"params/backbone/layer{m[1]}/block{m[2]}/conv{m[3]}/kernel",
     conv_kernel),
    (_BLOCK + r"bn(\d)\." + _BN_FIELDS, lambda m: frozen_bn(f"layer{m[1]}/block{m[2]}/bn{m[3]}", m[4]), same),
    (_BLOCK + r"downsample\.0\.weight", lambda m: f"params/backbone/layer{m[1]}/block{m[2]}/downsample_conv/kernel",
     conv_kernel),
    (_BLOCK + r"downsample\.1\." + _BN_FIELDS, lambda m: frozen_bn(f"layer{m[1]}/block{m[2]}/downsample_bn", m[3]),
     same),
    (r"model\.input_projection\.weight", lambda m: "params/input_proj/kernel", conv_kernel),
    (r"model\.input_projection\.bias", lambda m: "params/input_proj/bias", same),
    (r"model\.query_position_embeddings\.weight", lambda m: "params/query_embed", same),
    # Attention projections: [D_out, D_in] -> [D_in, h*d] here, reshaped to the model's [D,h,d] / [h,d,D] in _adapt.
    (_LAYER + r"(self_attn|encoder_attn)\.(q|k|v|out)_proj\.weight",
     lambda m: f"params/{m[1]}{m[2]}/{_ATTENTION[m[3]]}/{_PROJ[m[4]]}/kernel", dense_kernel),
    (_LAYER + r"(self_attn|encoder_attn)\.(q|k|v|out)_proj\.bias",
     lambda m: f"params/{m[1]}{m[2]}/{_ATTENTION[m[3]]}/{_PROJ[m[4]]}/bias", same),
    (_LAYER + r"(self_attn_layer_norm|encoder_attn_layer_norm|final_layer_norm)\.(weight|bias)", _layer_norm, same),
    (_LAYER + r"fc(1|2)\.weight", lambda m: f"params/{m[1]}{m[2]}/linear{m[3]}/kernel", dense_kernel),
    (_LAYER + r"fc(1|2)\.bias", lambda m: f"params/{m[1]}{m[2]}/linear{m[3]}/bias", same),
    (r"model\.decoder\.layernorm\.(weight|bias)", lambda m: norm("decoder_norm", m[1]), same),
    (r"class_labels_classifier\.weight", lambda m: "params/class_embed/kernel", dense_kernel),
    (r"class_labels_classifier\.bias", lambda m: "params/class_embed/bias", same),
    (r"bbox_predictor\.layers\.(\d+)\.weight", lambda m: f"params/bbox_embed{m[1]}/kernel", dense_kernel),
    (r"bbox_predictor\.layers\.(\d+)\.bias", lambda m: f"params/bbox_embed{m[1]}/bias", same),
]
_HEADS = re.compile(r"params/.*_attn/(query|key|value|out)/(kernel|bias)")


def _adapt(expected: dict, ours: str, key: str, value: np.ndarray) -> np.ndarray:
  """Splits an attention projection's h*d axis into the model's (h, d); other arrays (and sizes that differ, which
  `convert.assemble` reports) pass unchanged."""
  want = expected.get(ours)
  if want is not None and _HEADS.fullmatch(ours) and value.size == np.prod(want.shape):
    return value.reshape(want.shape)
  return value


def import_hf_detr(state_dict: dict[str, np.ndarray], *, num_classes: int | None = None, **overrides) -> dict:
  """Converts a Hugging Face DetrForObjectDetection state dict into variables for `detr.DETR`.

  Args:
    state_dict: HF's parameter and buffer names -> numpy arrays, `{k: v.numpy() for k, v in
      model.state_dict().items()}`, with a timm ResNet backbone (`use_timm_backbone=True`, HF's default).
    num_classes: K of the model to build. None keeps the checkpoint's (its classifier has K+1 outputs). Another K
      drops `class_embed` (logged), to be initialised afresh and merged as `{**fresh["params"], **imported["params"]}`.
    **overrides: DETR attributes other than num_classes (hidden_dim, num_heads, layer counts, num_queries, ffn_dim,
      stage_sizes, dtypes) for a checkpoint other than DETR-R50's.

  Returns:
    `{"params": ..., "constants": ...}` for `detr.DETR(num_classes=K, **overrides).apply`.

  Raises:
    ValueError: an unknown attribute, a checkpoint key with no place in the model (a transformers-ResNet backbone,
      another model's checkpoint), a missing model variable, or a shape that differs (naming the checkpoint key,
      our path and both shapes).
  """
  fields = {f.name for f in dataclasses.fields(detr.DETR)} - {"parent", "name", "num_classes"}
  if unknown := sorted(set(overrides) - fields):
    raise ValueError(f"{NAME}: unknown attribute(s) {unknown}; valid: {', '.join(sorted(fields))}")
  bias = state_dict.get("class_labels_classifier.bias")
  in_checkpoint = bias.shape[-1] - 1 if bias is not None else 0
  num_classes, replace_head = convert.head_classes(NAME, num_classes, in_checkpoint)
  model = detr.DETR(num_classes=num_classes, **overrides)
  expected = convert.expected_variables(model, (64, 64))  # Parameter shapes do not depend on H, W.
  converted = convert_keys(NAME, state_dict, expected, rules=RULES, ignored=re.compile(r".*num_batches_tracked"),
                           adapt=lambda ours, key, value: _adapt(expected, ours, key, value))
  left_to_init = ()
  if replace_head:
    left_to_init = (f"params/{detr.DETR.head}/",)
    convert.drop_head(NAME, converted, left_to_init, f"the model has {num_classes} classes")
  return convert.assemble(NAME, converted, expected, left_to_init=left_to_init)

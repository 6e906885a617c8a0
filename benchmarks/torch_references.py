"""PyTorch eager ports of three of our video models that neither timm nor torchvision has, for the vs-PyTorch
benchmark: the same layers, shapes and FLOPs, so that the two frameworks time the same work.

  i3d_r50   models/i3d.py `I3DResNet` ("i3d_r50"): torch.nn Conv3d / BatchNorm3d / MaxPool3d, laid out as
            torchvision's ResNet (`layer{i}.{j}.conv1`, `downsample.0/1`, `fc`), so `to_flax` maps it with
            checkpoints/timm.py's ResNet rules and 5D kernels.
  vivit_fe  models/vivit.py Model 2 ("vivit_b16x2_fe") and
  vivit_st  Model 1 ("vivit_b16x2_st"): timm's ViT `Block` (fused qkv Linear, F.scaled_dot_product_attention,
            timm's LayerNorm at our eps 1e-6, exact-erf nn.GELU), the kernels timm's VisionTransformer runs, under
            timm's names (`patch_embed.proj`, `cls_token`, `pos_embed`, `blocks.{i}`, `norm`, `head`; Model 2's
            temporal encoder the same with a `temporal_` prefix), so `to_flax` maps them with timm.py's ViT rules.

Model 1 is a timm-Block port rather than Hugging Face's `VivitForVideoClassification`. Both are exact (HF's is the
same function: pre-norm blocks, class token first, final LayerNorm, no pooler before its classifier, once its config
sets hidden_act="gelu", not its default tanh "gelu_fast"), and both do the same FLOPs; HF's runs q, k and v as three
Linear layers (as our model does) where timm runs one fused qkv Linear. The timm port was chosen so that Model 1 runs
the kernels of Model 2's port and of timm's ViT, the benchmark's other transformer references; it also takes
`[B,C,T,H,W]` like the I3D port (HF's takes `[B,T,C,H,W]` and permutes it) and non-square frames (HF's: square only).

Every constructor's keyword arguments are our model's attribute names (defaults: the full-size model), plus the
clip size `frames` and `image_size` (H, W) that fix the position embeddings; a port keeps our model's name, the
overrides and the clip as `model_name`, `ours` and `clip` (T, H, W), so `to_flax(port)` gives the variables of
`create_model(port.model_name, num_classes=K, **port.ours)`. Dropout and stochastic depth are left out (inference
timing). timm is imported through tests/checkpoints/timm_reference.py's shim for the CPU torch + CUDA torchvision
environment, so run from the repository root (`python -m benchmarks.<script>`).
"""
import functools
import re
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from vit_video.checkpoints.timm import RESNET_RULES, VIT_RULES
from vit_video.checkpoints.torch_keys import conv3d_kernel, conv_kernel, import_state_dict

I3D_INFLATE = ((1, 1, 1), (1, 0, 1, 0), (1, 0, 1, 0, 1, 0), (0, 1, 0))  # models/i3d.py's default.


def _timm():
  from tests.checkpoints.timm_reference import import_timm  # the torchvision::nms work-around
  return import_timm()


class Bottleneck3D(nn.Module):
  """kt x1x1 -> 1x3x3 (spatial stride s) -> 1x1x1 (4F) plus shortcut: `[B,C,T,H,W] -> [B,4F,T,ceil(H/s),ceil(W/s)]`."""

  def __init__(self, in_channels: int, features: int, stride: int, temporal_kernel: int):
    super().__init__()
    out, kt = 4 * features, temporal_kernel
    self.conv1 = nn.Conv3d(in_channels, features, (kt, 1, 1), padding=(kt // 2, 0, 0), bias=False)
    self.bn1 = nn.BatchNorm3d(features)
    self.conv2 = nn.Conv3d(features, features, (1, 3, 3), (1, stride, stride), padding=(0, 1, 1), bias=False)
    self.bn2 = nn.BatchNorm3d(features)
    self.conv3 = nn.Conv3d(features, out, 1, bias=False)
    self.bn3 = nn.BatchNorm3d(out)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = None
    if stride != 1 or in_channels != out:
      self.downsample = nn.Sequential(nn.Conv3d(in_channels, out, 1, (1, stride, stride), bias=False),
                                      nn.BatchNorm3d(out))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    shortcut = x if self.downsample is None else self.downsample(x)
    y = self.relu(self.bn1(self.conv1(x)))
    y = self.relu(self.bn2(self.conv2(y)))
    return self.relu(self.bn3(self.conv3(y)) + shortcut)


class I3DResNet(nn.Module):
  """models/i3d.py's I3DResNet without non-local blocks: `[B,C,T,H,W] -> [B,K]` (see its docstring for the pools)."""

  def __init__(self, *, num_classes: int, stage_sizes: Sequence[int] = (3, 4, 6, 3),
               inflate: Sequence[Sequence[int]] = I3D_INFLATE, temporal_strides: Sequence[int] = (2, 2, 2),
               width: int = 64, in_channels: int = 3, frames: int = 32, image_size: Sequence[int] = (224, 224)):
    super().__init__()
    self.ours = dict(stage_sizes=tuple(stage_sizes), inflate=tuple(map(tuple, inflate)),
                     temporal_strides=tuple(temporal_strides), width=width, in_channels=in_channels)
    self.clip, self.model_name = (frames, *image_size), "i3d_r50"
    s0, s1, s2 = temporal_strides
    self.conv1 = nn.Conv3d(in_channels, width, (5, 7, 7), (s0, 2, 2), padding=(2, 3, 3), bias=False)
    self.bn1 = nn.BatchNorm3d(width)
    self.relu = nn.ReLU(inplace=True)
    kt = 3 if s1 > 1 else 1
    self.pool1 = nn.MaxPool3d((kt, 3, 3), (s1, 2, 2), padding=(kt // 2, 1, 1))
    self.pool2 = nn.MaxPool3d((3, 1, 1), (s2, 1, 1), padding=(1, 0, 0)) if s2 > 1 else nn.Identity()
    channels = width
    for i, (blocks, kts) in enumerate(zip(stage_sizes, inflate, strict=True)):
      layer = []
      for j in range(blocks):
        layer.append(Bottleneck3D(channels, width * 2**i, 2 if i and not j else 1, 3 if kts[j] else 1))
        channels = 4 * width * 2**i
      self.add_module(f"layer{i + 1}", nn.Sequential(*layer))
    self.num_stages = len(stage_sizes)
    self.fc = nn.Linear(channels, num_classes)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    """`[B,C,T,H,W] -> [B,K]`."""
    x = self.pool1(self.relu(self.bn1(self.conv1(x))))  # [B,width,T1,H/4,W/4]
    for i in range(self.num_stages):
      if i == 1:
        x = self.pool2(x)  # [B,4 width,ceil(T1/s2),H/4,W/4]
      x = getattr(self, f"layer{i + 1}")(x)
    return self.fc(x.mean(dim=(2, 3, 4)))  # [B,D] -> [B,K]


def i3d_r50(num_classes: int, **kw) -> I3DResNet:
  """"i3d_r50" in PyTorch; `kw`: I3DResNet's sizes (stage_sizes, inflate, temporal_strides, width, ...)."""
  return I3DResNet(num_classes=num_classes, **kw)


class ViViT(nn.Module):
  """models/vivit.py's ViViT, variants "st" (Model 1) and "fe" (Model 2), tubelet embedding, class-token head.

  `[B,C,T,H,W] -> [B,K]`; T, H, W must be the `frames` and `image_size` it was built for.
  """

  def __init__(self, *, variant: str, num_classes: int, width: int = 768, depth: int = 12, temporal_depth: int = 4,
               num_heads: int = 12, mlp_dim: int = 3072, patch_size: int = 16, tubelet_depth: int = 2,
               in_channels: int = 3, frames: int = 32, image_size: Sequence[int] = (224, 224)):
    super().__init__()
    if variant not in ("st", "fe") or int(width * (mlp_dim / width)) != mlp_dim:
      raise ValueError(f"variant must be 'st' or 'fe' (got {variant!r}), and timm's Mlp must get width "
                       f"int(width * mlp_ratio) = mlp_dim {mlp_dim} back")
    timm = _timm()
    self.variant, self.model_name = variant, f"vivit_b16x2_{variant}"
    self.ours = dict(variant=variant, width=width, depth=depth, num_heads=num_heads, mlp_dim=mlp_dim,
                     patch_size=patch_size, tubelet_depth=tubelet_depth, in_channels=in_channels)
    if variant == "fe":
      self.ours["temporal_depth"] = temporal_depth
    self.clip = (frames, *image_size)
    nt, ns = frames // tubelet_depth, (image_size[0] // patch_size) * (image_size[1] // patch_size)
    norm = functools.partial(timm.layers.LayerNorm, eps=1e-6)  # ours; timm's ViT's too
    block = functools.partial(timm.models.vision_transformer.Block, width, num_heads, mlp_ratio=mlp_dim / width,
                              qkv_bias=True, act_layer=nn.GELU, norm_layer=norm)
    kernel = (tubelet_depth, patch_size, patch_size)
    self.patch_embed = nn.Module()
    self.patch_embed.proj = nn.Conv3d(in_channels, width, kernel, kernel)
    self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
    self.pos_embed = nn.Parameter(torch.zeros(1, 1 + (ns if variant == "fe" else nt * ns), width))
    self.blocks = nn.Sequential(*[block() for _ in range(depth)])
    self.norm = norm(width)
    if variant == "fe":
      self.temporal_cls_token = nn.Parameter(torch.zeros(1, 1, width))
      self.temporal_pos_embed = nn.Parameter(torch.zeros(1, 1 + nt, width))
      self.temporal_blocks = nn.Sequential(*[block() for _ in range(temporal_depth)])
      self.temporal_norm = norm(width)
    self.head = nn.Linear(width, num_classes)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    """`[B,C,T,H,W] -> [B,K]`."""
    x = self.patch_embed.proj(x)  # [B,D,T',H',W']
    b, d, nt = x.shape[:3]
    if self.variant == "st":
      x = x.flatten(2).transpose(1, 2)  # [B,T'S,D]
    else:
      x = x.flatten(3).permute(0, 2, 3, 1).reshape(b * nt, -1, d)  # [B,D,T',S] -> [B,T',S,D] -> [B*T',S,D]
    x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed  # [B',1+N,D]
    x = self.norm(self.blocks(x))[:, 0]  # [B',D]
    if self.variant == "fe":
      x = x.reshape(b, nt, d)  # [B,T',D]
      x = torch.cat([self.temporal_cls_token.expand(b, -1, -1), x], dim=1) + self.temporal_pos_embed  # [B,1+T',D]
      x = self.temporal_norm(self.temporal_blocks(x))[:, 0]  # [B,D]
    return self.head(x)


def vivit_st(num_classes: int, **kw) -> ViViT:
  """"vivit_b16x2_st" (Model 1) in PyTorch; `kw`: ViViT's sizes."""
  return ViViT(variant="st", num_classes=num_classes, **kw)


def vivit_fe(num_classes: int, **kw) -> ViViT:
  """"vivit_b16x2_fe" (Model 2) in PyTorch; `kw`: ViViT's sizes (temporal_depth: the temporal encoder's L_t)."""
  return ViViT(variant="fe", num_classes=num_classes, **kw)


def _3d(rules):
  """timm.py's rules with 5D (Conv3d) kernels in place of 4D ones."""
  return [(p, target, conv3d_kernel if f is conv_kernel else f) for p, target, f in rules]


def _renamed(rules, prefix: str, renames: dict[str, str]):
  """`rules` for the keys `prefix + key`, the first part of their paths (after "params/") renamed by `renames`."""
  def move(path: str) -> str:
    collection, first, *rest = path.split("/")
    return "/".join([collection, renames.get(first, first), *rest])
  return [(prefix + p, lambda m, t=t: move(t(m)), f) for p, t, f in rules]


# Model 2: the spatial encoder under timm's ViT names, the temporal one with a `temporal_` prefix.
_FE_RULES = (_renamed(_3d(VIT_RULES), "", {"Transformer": "SpatialTransformer"})
             + _renamed(VIT_RULES, "temporal_", {"Transformer": "TemporalTransformer", "cls": "temporal_cls"}))


def _state_dict(module: nn.Module) -> dict[str, np.ndarray]:
  return {k: v.detach().cpu().float().numpy() for k, v in module.state_dict().items()}


def to_flax(module: nn.Module) -> dict:
  """Our variables for `create_model(module.model_name, num_classes=K, **module.ours)` from a port's state dict,
  every name and shape checked (`convert.assemble`)."""
  name, sd = module.model_name, _state_dict(module)
  common = dict(num_classes=None, overrides=module.ours, input_size=lambda model: module.clip)
  if isinstance(module, I3DResNet):
    return import_state_dict(name, sd, head_bias="fc.bias", rules=_3d(RESNET_RULES),
                             ignored=re.compile(r".*num_batches_tracked"), **common)
  encoder = "Transformer" if module.variant == "st" else "SpatialTransformer"
  attention = (r"(temporal_)?blocks\.(\d+)\.", lambda m: f"params/{'TemporalTransformer' if m[1] else encoder}/"
               f"encoderblock_{m[2]}/MultiHeadDotProductAttention_1")
  return import_state_dict(name, sd, head_bias="head.bias", attention=attention,
                           rules=_3d(VIT_RULES) if module.variant == "st" else _FE_RULES, **common)

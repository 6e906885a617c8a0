"""timm as the reference implementation for the checkpoint tests: importing it, tiny models, running them.

Why `import_timm` is a shim: the only torchvision in the environment is the CUDA PyPI wheel. Its `_C.so` links
libtorch_cuda/libc10_cuda, which CPU torch lacks; `torchvision/extension.py` tolerates that load failure, but
`torchvision/_meta_registrations.py` unconditionally calls `torch.library.register_fake("torchvision::nms")`
(and "qnms"), which raises `RuntimeError: operator torchvision::nms does not exist`. We define those two schemas
(no kernels; nothing here uses them) and import again. Always import timm through `import_timm()`.

The tiny builders use timm's own classes at toy widths, configured as timm configures its named models
(`vit_*_patch*`, the `vit_*_r*_s*` hybrids, `resnetv2_*_bit`, `resnet*`); each returns the model in eval mode
with every parameter and BatchNorm statistic random (`randomize_`), so that every weight moves the output.
"""
import functools
import importlib
import os
import sys

import numpy as np
import pytest

# Set by `make test` (and so by CI), which installs the reference stack: a missing reference is then a failure.
REQUIRE_ENV = "VIT_VIDEO_REQUIRE_REFERENCE"

_TV_LIB = None  # Keeps the Library alive: torch drops its definitions when it is garbage collected.


def require_torch(reason: str):
  """`torch`; a skip naming `reason` when it is not installed, but an ImportError (a failure) when the
  environment variable VIT_VIDEO_REQUIRE_REFERENCE is 1, so that these tests cannot be skipped silently in CI."""
  if os.environ.get(REQUIRE_ENV) == "1":
    try:
      return importlib.import_module("torch")
    except ImportError as e:
      raise ImportError(f"{reason}, and {REQUIRE_ENV}=1 requires the reference stack: install it with "
                        "`make .venv/.installed-reference` (or pip install torch==2.13.0 and "
                        "requirements-reference.lock)") from e
  return pytest.importorskip("torch", reason=reason)


def import_timm():
  """Returns the `timm` module, importing torchvision first with the nms schemas defined if it needs them."""
  global _TV_LIB
  import torch
  try:
    import torchvision  # noqa: F401
  except RuntimeError as e:
    if "torchvision::nms" not in str(e):
      raise
    for k in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
      del sys.modules[k]
    _TV_LIB = torch.library.Library("torchvision", "DEF")
    _TV_LIB.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _TV_LIB.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import torchvision  # noqa: F401
  import timm
  return timm


def randomize_(model, seed: int = 0):
  """Random values in place: norm scales U(0.5, 1.5), shifts U(-0.3, 0.3), BatchNorm means U(-0.3, 0.3) and
  variances U(0.5, 2); Linear/conv weights N(0, 1/fan_in), their biases N(0, 0.3^2); other parameters (class
  token, position embedding) N(0, 0.5^2). Returns the model in eval mode."""
  import torch
  g = torch.Generator().manual_seed(seed)
  norms = (torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.BatchNorm2d)
  with torch.no_grad():
    for module in model.modules():
      params = dict(module.named_parameters(recurse=False))
      if isinstance(module, norms):
        params["weight"].copy_(0.5 + torch.rand(params["weight"].shape, generator=g))
        params["bias"].copy_(0.6 * torch.rand(params["bias"].shape, generator=g) - 0.3)
        if isinstance(module, torch.nn.BatchNorm2d):
          module.running_mean.copy_(0.6 * torch.rand(module.running_mean.shape, generator=g) - 0.3)
          module.running_var.copy_(0.5 + 1.5 * torch.rand(module.running_var.shape, generator=g))
        continue
      for name, p in params.items():
        linear = isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and name == "weight"
        std = p[0].numel() ** -0.5 if linear else (0.3 if name == "bias" else 0.5)
        p.copy_(std * torch.randn(p.shape, generator=g))
  return model.eval()


def state_dict(model) -> dict[str, np.ndarray]:
  """`{key: numpy array}`, parameters and buffers, as a checkpoint would hold them."""
  return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def run(model, images: np.ndarray) -> np.ndarray:
  """Eval-mode forward of `[B,H,W,C]` float32 images (NCHW inside) -> numpy outputs."""
  import torch
  with torch.no_grad():
    return model.eval()(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()


def tiny_vit(timm, *, img_size=(32, 48), num_classes=5, **kw):
  """timm's VisionTransformer (patch 4, D 24, depth 2, 2 heads, MLP 48), configured as `vit_*_patch*`."""
  args = dict(img_size=img_size, patch_size=4, embed_dim=24, depth=2, num_heads=2, mlp_ratio=2.0,
              num_classes=num_classes, **kw)
  return randomize_(timm.models.vision_transformer.VisionTransformer(**args))


def tiny_hybrid(timm, *, stages=(1, 1), img_size=(32, 48), num_classes=5):
  """A ViT hybrid as timm's `vit_*_r*_s*` builds it (`_resnetv2`: ResNetV2 with preact=False, stem 'same',
  StdConv2dSame eps 1e-8; GroupNorm eps 1e-5), trunk width 32 (stages of 128, 256 channels; `stages=()` is
  the root block alone, as `vit_tiny_r_s16_p8`), then patch 1 (2 for the root-only trunk), D 24, depth 2."""
  from timm.layers import HybridEmbed, StdConv2dSame
  from timm.models.resnetv2 import ResNetV2, create_resnetv2_stem
  conv = functools.partial(StdConv2dSame, eps=1e-8)
  if stages:
    backbone = ResNetV2(layers=stages, channels=(128, 256, 512, 1024)[:len(stages)], stem_chs=32, num_classes=0,
                        global_pool="", preact=False, stem_type="same", conv_layer=conv)
  else:
    backbone = create_resnetv2_stem(3, 32, stem_type="same", preact=False, conv_layer=conv)
  model = timm.models.vision_transformer.VisionTransformer(
      img_size=img_size, patch_size=1 if stages else 2, embed_dim=24, depth=2, num_heads=2, mlp_ratio=2.0,
      num_classes=num_classes, embed_layer=functools.partial(HybridEmbed, backbone=backbone))
  return randomize_(model)


def use_vit_jax_numerics_(model):
  """Switches a timm hybrid trunk to vit_jax's numerics, those of our `ResNetStem`: weight standardisation
  (w - mean) / (std + 1e-5) instead of (w - mean) / sqrt(var + 1e-8), GroupNorm eps 1e-6 instead of 1e-5."""
  import torch
  import torch.nn.functional as F
  from timm.layers import StdConv2dSame
  from timm.layers.padding import pad_same

  def forward(conv, x):
    if conv.same_pad:
      x = pad_same(x, conv.kernel_size, conv.stride, conv.dilation)
    w = conv.weight - conv.weight.mean(dim=(1, 2, 3), keepdim=True)
    w = w / (w.std(dim=(1, 2, 3), keepdim=True, unbiased=False) + 1e-5)
    return F.conv2d(x, w, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)

  for module in model.modules():
    if isinstance(module, StdConv2dSame):
      module.forward = functools.partial(forward, module)
    elif isinstance(module, torch.nn.GroupNorm):
      module.eps = 1e-6
  return model


def tiny_bit(timm, *, num_classes=5):
  """timm's BiT (`_create_resnetv2_bit`: stem 'fixed', StdConv2d eps 1e-8, pre-activation), stem width 32,
  stages (1, 1) of 128 and 256 channels."""
  from timm.layers import StdConv2d
  from timm.models.resnetv2 import ResNetV2
  return randomize_(ResNetV2(layers=(1, 1), channels=(128, 256), stem_chs=32, num_classes=num_classes,
                             stem_type="fixed", conv_layer=functools.partial(StdConv2d, eps=1e-8)))

"""Hugging Face transformers as the DETR reference (model and loss): importing it, a tiny DETR with random weights.

transformers imports torchvision, so it comes after `timm_reference.import_timm()` (which works around the CUDA
torchvision wheel). It is skipped when not installed, and fails instead when VIT_VIDEO_REQUIRE_REFERENCE=1, as torch.
"""
import importlib
import os

import numpy as np
import pytest

from tests.checkpoints.timm_reference import REQUIRE_ENV, import_timm, randomize_, require_torch

# DETR at toy size: D 16, 2 heads, FFN 32, 1 encoder and 2 decoder layers (one aux output), 5 queries, K 7;
# the backbone is ResNet-50's stem and first two stages (widths as published), one block each: 512 channels at
# stride 8, the second stage strided, with its downsample.
TINY = dict(hidden_dim=16, num_heads=2, ffn_dim=32, num_encoder_layers=1, num_decoder_layers=2, num_queries=5,
            stage_sizes=(1, 1))
K = 7


def import_transformers():
  """The `transformers` module; a skip without it, a failure when VIT_VIDEO_REQUIRE_REFERENCE=1."""
  require_torch("transformers (the DETR reference implementation) needs torch")
  import_timm()
  # transformers would otherwise import TensorFlow (installed for the data pipelines) for nothing: ~3 s.
  os.environ.setdefault("USE_TF", "0")
  if os.environ.get(REQUIRE_ENV) == "1":
    try:
      return importlib.import_module("transformers")
    except ImportError as e:
      raise ImportError(f"transformers (the DETR reference), and {REQUIRE_ENV}=1 requires the reference stack: "
                        "install requirements-reference.lock") from e
  return pytest.importorskip("transformers", reason="transformers (the DETR reference) is not installed")


def detr_config(transformers, *, num_classes: int = K, auxiliary_loss: bool = False, **overrides):
  """HF's DetrConfig for our DETR attributes (TINY by default): timm backbone, random weights (no download).

  timm's ResNet takes four stages; `out_indices` makes it stop after len(stage_sizes) of them (features_only)."""
  a = {**TINY, **overrides}
  stages = tuple(a["stage_sizes"])
  return transformers.DetrConfig(
      use_timm_backbone=True, use_pretrained_backbone=False, backbone="resnet50",
      backbone_kwargs={"layers": stages + (1,) * (4 - len(stages)), "out_indices": (len(stages),)},
      d_model=a["hidden_dim"],
      encoder_attention_heads=a["num_heads"], decoder_attention_heads=a["num_heads"], encoder_ffn_dim=a["ffn_dim"],
      decoder_ffn_dim=a["ffn_dim"], encoder_layers=a["num_encoder_layers"], decoder_layers=a["num_decoder_layers"],
      num_queries=a["num_queries"], num_labels=num_classes, auxiliary_loss=auxiliary_loss)


def tiny_detr(transformers, seed: int = 0, **overrides):
  """A tiny DetrForObjectDetection in eval mode, every parameter and frozen BatchNorm buffer random (randomize_)."""
  import torch
  model = randomize_(transformers.DetrForObjectDetection(detr_config(transformers, **overrides)), seed)
  g = torch.Generator().manual_seed(seed + 1)
  frozen = transformers.models.detr.modeling_detr.DetrFrozenBatchNorm2d
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, frozen):  # Buffers, which randomize_ leaves alone.
        n = module.weight.shape
        module.weight.copy_(0.5 + torch.rand(n, generator=g))
        module.bias.copy_(0.6 * torch.rand(n, generator=g) - 0.3)
        module.running_mean.copy_(0.6 * torch.rand(n, generator=g) - 0.3)
        module.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=g))
  return model.eval()


def state_dict(model) -> dict[str, np.ndarray]:
  return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}

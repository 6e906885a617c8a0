"""benchmarks/vs_pytorch.py: every case pits the package's model against a PyTorch model with the same parameters.

The benchmark's ratios mean something only if both sides are the same network: each case's PyTorch model (timm,
torchvision, the ports of benchmarks/torch_references.py, timm ViTs sized as the Fashion-MNIST models), built on
the meta device (no memory), has exactly the parameter count of the package's model from `jax.eval_shape`. The
ports' outputs are checked against ours in test_torch_references.py; timm's and torchvision's in tests/checkpoints.
"""
import pytest

from tests.checkpoints.timm_reference import import_timm, require_torch
from vit_video.models import count_params, create_model


@pytest.fixture(scope="module")
def bench():
  require_torch("the benchmark's PyTorch side needs torch")
  import_timm()
  from benchmarks import vs_pytorch
  return vs_pytorch


CASES = ["vit_b16", "vit_s16", "resnet50", "swin_t", "vivit_b16x2_st", "vivit_b16x2_fe", "i3d_r50", "video_swin_t",
         "mvit_v1_b", "fmnist_vit_m4", "fmnist_r_vit_m"]


def test_the_case_list_is_the_benchmarks(bench):
  assert sorted(CASES) == sorted(bench.CASES)


@pytest.mark.parametrize("name", CASES)
def test_pytorch_model_has_our_parameter_count(bench, name):
  import torch
  case = bench.CASES[name]
  with torch.device("meta"):
    theirs = sum(p.numel() for p in bench.torch_model(case).parameters())
  ours = count_params(create_model(case.ours, num_classes=case.num_classes, **case.overrides), (1, *case.shape))
  assert theirs == ours


def test_unknown_pytorch_kind_is_named(bench):
  with pytest.raises(ValueError, match="unknown PyTorch model kind 'keras'"):
    bench.torch_model(bench.Case("vit_s16", "keras:vit", (224, 224, 3), 1))

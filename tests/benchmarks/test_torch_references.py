"""benchmarks/torch_references.py: each PyTorch port, random weights, gives our model's logits once `to_flax` maps
its weights (float32, 1e-4 of the logit scale), and at full size has our parameter count.

Tiny sizes that all differ: clips of T x 32 x 48, 3 channels, K = 5; I3D width 8 with one block per stage (its
inflation pattern mixed); ViViT D 32, 2 heads, MLP 64, depth 2 (Model 2: 1 temporal block), 2 x 8 x 8 tubelets.
torch is required as in tests/checkpoints: a skip without it, a failure when VIT_VIDEO_REQUIRE_REFERENCE=1.
"""
import numpy as np
import pytest

from tests.checkpoints.timm_reference import import_timm, require_torch
from vit_video.models import count_params, create_model

B, H, W, C, K = 2, 32, 48, 3, 5
TINY_I3D = dict(width=8, stage_sizes=(1, 1, 1, 1), inflate=((1,), (0,), (1,), (1,)))
TINY_VIVIT = dict(width=32, num_heads=2, mlp_dim=64, depth=2, patch_size=8, tubelet_depth=2)


@pytest.fixture(scope="module")
def refs():
  require_torch("the PyTorch ports need torch")
  import_timm()
  from benchmarks import torch_references
  return torch_references


def randomize_(model, seed: int = 0):
  """Every parameter and BatchNorm statistic random: norm scales U(0.5, 1.5), shifts U(-0.3, 0.3), BatchNorm means
  U(-0.3, 0.3), variances U(0.5, 2); Linear/Conv3d weights N(0, 1/fan_in), biases N(0, 0.3^2); class tokens and
  position embeddings N(0, 0.5^2). Returns the model in eval mode."""
  import torch
  g = torch.Generator().manual_seed(seed)
  uniform = lambda p, lo, hi: p.copy_(lo + (hi - lo) * torch.rand(p.shape, generator=g))  # noqa: E731
  with torch.no_grad():
    for module in model.modules():
      params = dict(module.named_parameters(recurse=False))
      if isinstance(module, (torch.nn.LayerNorm, torch.nn.BatchNorm3d)):
        uniform(params["weight"], 0.5, 1.5)
        uniform(params["bias"], -0.3, 0.3)
        if isinstance(module, torch.nn.BatchNorm3d):
          uniform(module.running_mean, -0.3, 0.3)
          uniform(module.running_var, 0.5, 2.0)
        continue
      for name, p in params.items():
        fan_in = p[0].numel() if isinstance(module, (torch.nn.Linear, torch.nn.Conv3d)) and name == "weight" else 0
        p.copy_((fan_in ** -0.5 if fan_in else 0.3 if name == "bias" else 0.5) * torch.randn(p.shape, generator=g))
  return model.eval()


def compare(refs, port, frames: int) -> float:
  """max |ours - port| / max |port| on one random clip; checks the port's logits are not degenerate."""
  import torch
  clip = np.random.default_rng(1).normal(size=(B, frames, H, W, C)).astype(np.float32)  # [B,T,H,W,C]
  with torch.no_grad():
    ref = port(torch.from_numpy(clip).permute(0, 4, 1, 2, 3).contiguous()).numpy()  # [B,C,T,H,W] -> [B,K]
  ours = create_model(port.model_name, num_classes=K, **port.ours).apply(refs.to_flax(port), clip, train=False)
  assert ref.shape == (B, K) and np.std(ref) > 0.1
  return float(np.max(np.abs(np.asarray(ours) - ref)) / np.max(np.abs(ref)))


@pytest.mark.parametrize("temporal_strides", [(2, 2, 2), (1, 1, 1)])
def test_i3d_port_matches_ours(refs, temporal_strides):
  """T 16 -> 8 (conv1) -> 4 (pool1) -> 2 (pool2) with the default strides; (1, 1, 1): 1x3x3 pool1, no pool2."""
  port = randomize_(refs.i3d_r50(K, frames=16, image_size=(H, W), temporal_strides=temporal_strides, **TINY_I3D))
  assert compare(refs, port, 16) < 1e-4


@pytest.mark.parametrize("variant", ["st", "fe"])
def test_vivit_port_matches_ours(refs, variant):
  build = refs.vivit_st if variant == "st" else refs.vivit_fe
  extra = dict(temporal_depth=1) if variant == "fe" else {}
  port = randomize_(build(K, frames=4, image_size=(H, W), **TINY_VIVIT, **extra))
  assert compare(refs, port, 4) < 1e-4


@pytest.mark.parametrize("name", ["i3d_r50", "vivit_b16x2_st", "vivit_b16x2_fe"])
def test_full_size_port_has_our_parameter_count(refs, name):
  """Built on the meta device (no memory); ours from jax.eval_shape at the ports' default clip 32 x 224 x 224."""
  import torch
  build = {"i3d_r50": refs.i3d_r50, "vivit_b16x2_st": refs.vivit_st, "vivit_b16x2_fe": refs.vivit_fe}[name]
  with torch.device("meta"):
    port = build(400)
  assert port.model_name == name and port.clip == (32, 224, 224)
  ours = count_params(create_model(name, num_classes=400), (1, 32, 224, 224, 3))
  assert sum(p.numel() for p in port.parameters()) == ours



def test_vivit_port_has_our_epsilon_and_exact_gelu(refs):
  """What the logits cannot show at 1e-4: every LayerNorm's eps is ours (1e-6; 1e-5 moves them 5e-6) and every
  GELU is the exact erf one (our approximate_gelu=False)."""
  import torch
  with torch.device("meta"):
    port = refs.vivit_fe(K, frames=4, image_size=(H, W), temporal_depth=1, **TINY_VIVIT)
  norms = [m for m in port.modules() if isinstance(m, torch.nn.LayerNorm)]
  gelus = [m for m in port.modules() if isinstance(m, torch.nn.GELU)]
  assert len(norms) == 2 * 3 + 2 and {m.eps for m in norms} == {1e-6}
  assert len(gelus) == 3 and {m.approximate for m in gelus} == {"none"}

"""Compute accounting: FLOPs from XLA's cost analysis, and analytic forward counts for ViT and ResNet.

Unit: FLOPs = 2 * multiply-accumulates (MACs), XLA's own convention. Published "FLOPs" tables often give MACs
under that name: timm's ViT-B/16 at 224 is 17.6 GMACs = 35.1 GFLOPs here; torchvision's ResNet-50 "4.09 GFLOPS"
is 4.09 GMACs = 8.2 GFLOPs here.

The analytic counts are per example (batch 1) and count matrix products and convolutions only; they ignore
elementwise work (LayerNorm, BatchNorm, softmax, GELU/ReLU, residual adds, max and mean pooling, position
embedding, class token). Against XLA's count of the whole forward pass that is 1.6% low for ViT-B/16 and 0.6%
low for ResNet-50 at 224 (exact-padding count), but 20-30% low for toy widths (<= 32), where the elementwise
ops are a large share. A training step (forward + backward) costs about 3x the forward.

    step_flops = compiled_flops(jax.jit(train_step), state, batch)     # whole batch, per call
    per_example = vit_forward_flops((224, 224), patch_size=16, width=768, depth=12, mlp_dim=3072,
                                    num_classes=1000, in_channels=3, pool="token")  # 3.51e10
"""
from collections.abc import Callable, Sequence
from typing import Any, Literal


def cost_analysis_flops(lowered_or_compiled: Any) -> float:
  """The 'flops' of XLA's cost analysis of a `jax.stages.Lowered` or `Compiled` object, per call.

  `cost_analysis()` returns a dict, or (some jax versions) a list of dicts, one per HLO module: summed.
  A `Lowered` object counts the unoptimized HLO and needs no compilation, so abstract arguments
  (`jax.ShapeDtypeStruct`) give full-size counts without memory; a `Compiled` one counts what will run.
  """
  cost = lowered_or_compiled.cost_analysis()
  costs = cost if isinstance(cost, (list, tuple)) else [cost]
  if not costs or any(c is None or "flops" not in c for c in costs):
    raise ValueError(f"XLA's cost analysis has no 'flops' entry: {cost!r}")
  return float(sum(c["flops"] for c in costs))


def compiled_flops(jitted_fn: Callable, *args, **kwargs) -> float:
  """FLOPs per call of `jitted_fn(*args, **kwargs)` (the whole batch), from XLA's analysis of the compiled
  program: `jitted_fn.lower(*args, **kwargs).compile().cost_analysis()["flops"]`. Arguments may be arrays or
  `jax.ShapeDtypeStruct`s."""
  return cost_analysis_flops(jitted_fn.lower(*args, **kwargs).compile())


def vit_forward_flops(image_hw: Sequence[int], patch_size: int, width: int, depth: int, mlp_dim: int,
                      num_classes: int, in_channels: int, pool: Literal["token", "gap"]) -> float:
  """Analytic FLOPs (2 * MACs) of one example through `vit_video.models.vit.ViT` (no hybrid stem).

  With N_p = H W / P^2 patches, N = N_p + 1 tokens for pool="token" (N_p for "gap"), D = width, M = mlp_dim,
  L = depth, K = num_classes (0: no head), C = in_channels:
    MACs = N_p P^2 C D                        patch embedding
         + L (4 N D^2                         q, k, v and output projections
              + 2 N^2 D                       Q K^T and attention-weighted values, all heads together
              + 2 N D M)                      MLP
         + D K                                head
  The number of heads does not enter. The optional pre-logits layer (D * representation_size) is not counted.
  """
  h, w = image_hw
  if h % patch_size or w % patch_size:
    raise ValueError(f"image size {(h, w)} is not divisible by patch size {patch_size}")
  if pool not in ("token", "gap"):
    raise ValueError(f"pool must be 'token' or 'gap'; got {pool!r}")
  patches = (h // patch_size) * (w // patch_size)
  n, d = patches + (pool == "token"), width
  macs = patches * patch_size**2 * in_channels * d
  macs += depth * (4 * n * d * d + 2 * n * n * d + 2 * n * d * mlp_dim)
  macs += d * num_classes
  return 2.0 * macs


def _conv_macs(in_hw: tuple[int, int], kernel: int, stride: int, padding: int, c_in: int, c_out: int,
               count_padding: bool) -> tuple[int, tuple[int, int]]:
  """MACs of a square conv on an `in_hw` map with symmetric padding, and its output size.

  count_padding=True counts kernel * kernel taps per output position (the published convention); False counts
  only the taps that land inside the input (XLA's convention: products with the zero padding are skipped).
  """
  out_hw, taps = [], 1
  for n in in_hw:
    out = (n + 2 * padding - kernel) // stride + 1
    if count_padding:
      valid = out * kernel
    else:
      valid = sum(max(0, min(n, o * stride - padding + kernel) - max(0, o * stride - padding)) for o in range(out))
    out_hw.append(out)
    taps *= valid
  return taps * c_in * c_out, (out_hw[0], out_hw[1])


def resnet_forward_flops(image_hw: Sequence[int], *, stage_sizes: Sequence[int], block: Literal["basic", "bottleneck"],
                         width: int, num_classes: int, in_channels: int, count_padding: bool) -> float:
  """Analytic FLOPs (2 * MACs) of one example through `vit_video.models.resnet.ResNet` (v1.5, torchvision).

  Sums over every convolution `H_out W_out k^2 C_in C_out` MACs: the 7x7/2 stem (padding 3); per block the
  1x1/3x3/1x1 (bottleneck, stride on the 3x3) or 3x3/3x3 (basic) convs and the 1x1 strided downsample where
  the shape changes; plus the classifier `D K`. Map sizes follow the model: ceil(n / 2) per stride 2, with the
  3x3/2 max pool after the stem (not counted). `count_padding`: count all k^2 taps per output (True; what
  torchvision/fvcore/timm publish, 4.09 GMACs for ResNet-50) or only those inside the image (False; what XLA
  counts, 3.95 GMACs for ResNet-50).
  """
  if block not in ("basic", "bottleneck"):
    raise ValueError(f"block {block!r} is not one of 'basic', 'bottleneck'")
  if not stage_sizes:
    raise ValueError("stage_sizes is empty; a ResNet needs at least one stage")
  expansion = 4 if block == "bottleneck" else 1
  macs, hw = _conv_macs(tuple(image_hw), 7, 2, 3, in_channels, width, count_padding)
  hw = ((hw[0] - 1) // 2 + 1, (hw[1] - 1) // 2 + 1)  # 3x3/2 max pool, padding 1
  c = width
  for i, num_blocks in enumerate(stage_sizes):
    features = width * 2**i
    out = features * expansion
    for j in range(num_blocks):
      stride = 2 if i > 0 and j == 0 else 1
      if stride != 1 or c != out:
        macs += _conv_macs(hw, 1, stride, 0, c, out, count_padding)[0]
      if block == "bottleneck":
        macs += _conv_macs(hw, 1, 1, 0, c, features, count_padding)[0]
        m, out_hw = _conv_macs(hw, 3, stride, 1, features, features, count_padding)
        macs += m + _conv_macs(out_hw, 1, 1, 0, features, out, count_padding)[0]
      else:
        m, out_hw = _conv_macs(hw, 3, stride, 1, c, features, count_padding)
        macs += m + _conv_macs(out_hw, 3, 1, 1, features, features, count_padding)[0]
      hw, c = out_hw, out
  macs += c * num_classes
  return 2.0 * macs

"""The model registry: every name builds, parameter counts equal the published reference implementations.

Reference counts are timm 1.0.31 / torchvision 0.28 at 224x224 with 1000 classes (parameters only, not
buffers or BatchNorm statistics), measured by building each reference model; tests/test_checkpoints.py
additionally compares outputs against timm itself.
"""
import time

import jax.numpy as jnp
import pytest

from vit_video import models

# name -> (reference implementation, parameter count).
REFERENCE_COUNTS = {
    "vit_ti16": ("timm vit_tiny_patch16_224", 5_717_416),
    "vit_s16": ("timm vit_small_patch16_224", 22_050_664),
    "vit_s32": ("timm vit_small_patch32_224", 22_878_952),
    "vit_b8": ("timm vit_base_patch8_224", 86_576_872),
    "vit_b16": ("timm vit_base_patch16_224", 86_567_656),
    "vit_b32": ("timm vit_base_patch32_224", 88_224_232),
    "vit_l16": ("timm vit_large_patch16_224", 304_326_632),
    "vit_l32": ("timm vit_large_patch32_224", 306_535_400),
    "vit_h14": ("timm vit_huge_patch14_224", 632_045_800),
    "r_vit_ti16": ("timm vit_tiny_r_s16_p8_224", 6_337_704),
    "r26_vit_s32": ("timm vit_small_r26_s32_224", 36_431_912),
    "r50_vit_b16": ("timm vit_base_r50_s16_224", 98_659_112),
    "r50_vit_l32": ("timm vit_large_r50_s32_224", 328_994_856),
    "resnet18": ("torchvision resnet18", 11_689_512),
    "resnet34": ("torchvision resnet34", 21_797_672),
    "resnet50": ("torchvision resnet50", 25_557_032),
    "resnet101": ("torchvision resnet101", 44_549_160),
    "resnet152": ("torchvision resnet152", 60_192_808),
    "bit_r50x1": ("timm resnetv2_50x1_bit", 25_549_352),
    "bit_r50x3": ("timm resnetv2_50x3_bit", 217_319_080),
    "bit_r101x1": ("timm resnetv2_101x1_bit", 44_541_480),
    "bit_r101x3": ("timm resnetv2_101x3_bit", 387_934_888),
    "bit_r152x2": ("timm resnetv2_152x2_bit", 236_335_208),
    "bit_r152x4": ("timm resnetv2_152x4_bit", 936_533_224),
}


def test_every_model_is_covered():
  assert set(models.MODELS) == set(REFERENCE_COUNTS)


@pytest.mark.parametrize("name", sorted(REFERENCE_COUNTS))
def test_parameter_count_equals_reference(name):
  start = time.perf_counter()
  count = models.count_params(models.create_model(name, num_classes=1000))
  assert count == REFERENCE_COUNTS[name][1], f"{name}: {count:,} != {REFERENCE_COUNTS[name]}"
  print(f"{name}: eval_shape count in {time.perf_counter() - start:.2f} s")


def test_vit_b16_at_384_resizes_position_embedding():
  # timm vit_base_patch16_384: 86,859,496 (577 position embeddings).
  assert models.count_params(models.create_model("vit_b16", num_classes=1000), (1, 384, 384, 3)) == 86_859_496


def test_overrides_reach_the_module():
  model = models.create_model("vit_s16", num_classes=7, depth=2, dtype=jnp.bfloat16)
  assert (model.num_classes, model.depth, model.width, model.dtype) == (7, 2, 384, jnp.bfloat16)


def test_unknown_name_lists_valid_names():
  with pytest.raises(ValueError, match=r"unknown model 'vit_q16'; valid names: .*vit_b16"):
    models.create_model("vit_q16", num_classes=10)


def test_unknown_attribute_lists_valid_attributes():
  with pytest.raises(ValueError, match=r"unknown attribute\(s\) \['widht'\] for model 'vit_b16'.*valid: .*width"):
    models.create_model("vit_b16", num_classes=10, widht=3)
  with pytest.raises(ValueError, match=r"unknown attribute\(s\) \['patch_size'\] for model 'resnet50'"):
    models.create_model("resnet50", num_classes=10, patch_size=3)

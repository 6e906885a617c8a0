"""The model registry: every name builds, parameter counts equal the published reference implementations.

Reference counts are timm 1.0.31 / torchvision 0.28 at 224x224 with 1000 classes (parameters only, not
buffers or BatchNorm statistics), measured by building each reference model; tests/checkpoints/
additionally compares outputs against timm itself. The video models have no reference implementation here:
their counts (also at 1000 classes, on the clip size in INPUT_SHAPES) are worked out by hand from the
architecture in the comments, and the eval_shape count must agree.
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
    # Karpathy et al. 2014 on 170x170 (video_cnn.py): convs 11x11x3x96, 5x5x96x256, 3x3x256x384, 3x3x384x384,
    # 3x3x384x256 + biases = 3,747,200; 170 -> 57 -> 28 -> 28 -> 14 -> 14 -> 7, so fc0 takes 7*7*256 = 12,544:
    # fc0 12544*4096+4096 = 51,384,320, fc1 4096*4096+4096 = 16,781,312, head 4096*1000+1000 = 4,097,000.
    "single_frame": ("formula: 3,747,200 + 51,384,320 + 16,781,312 + 4,097,000", 76_009_832),
    "late_fusion_pool": ("formula: the single_frame parameters", 76_009_832),
    "late_fusion_fc": ("formula: single_frame + 12544*4096 more fc0 inputs (T = 2 frames)", 127_390_056),
    "early_fusion": ("formula: single_frame + (10 - 1)*11*11*3*96 (conv0 spans T = 10 frames)", 76_323_464),
    # Slow fusion: temporal kernels (4, 2, 2, 1, 1) multiply the first three conv kernels: 4*34,848 + 96,
    # 2*614,400 + 256, 2*884,736 + 384, then 1,327,488 + 884,992 = 5,350,880 in all; time 10 -> 4 -> 2 -> 1.
    "slow_fusion": ("formula: 5,350,880 + 51,384,320 + 16,781,312 + 4,097,000", 77_613_512),
    # C3D (Tran et al. 2015): sum over the 8 convs of 27*C_in*C_out + C_out = 27,655,936; fc6 8192*4096+4096,
    # fc7 4096*4096+4096, fc8 4096*K+K: 77,995,776 + 4097 K (78.4M at K=101, 80.0M at the released K=487).
    "c3d": ("formula: 77,995,776 + 4097 * 1000", 82_092_776),
    # I3D ResNet-50: resnet50's 25,557,032 + 4 * the 7x7x3x64 stem (kernel 5x7x7: 37,632) + 2 * the 1x1 conv1
    # of every inflated block (3x1x1: 2 * 1,839,104); non-local: 2C^2 + 2.5C + 1 per block (4 C x C/2 kernels,
    # their biases and the gain), C = 512 twice and 1024 three times: 7,350,277 more.
    "i3d_r50": ("formula: 25,557,032 + 37,632 + 3,678,208", 29_272_872),
    "nl_i3d_r50": ("formula: i3d_r50 + 2 * 525,569 + 3 * 2,099,713", 36_623_149),
    # LRCN on 227x227: convs 7x7x3x96 (stride 2) then as single_frame = 3,726,464; 227 -> 114 -> 57 -> 29 -> 14
    # -> 7: fc0 12544*4096+4096 = 51,384,320; LSTM 4*(4096*256 + 256*256 + 256) = 4,457,472; head 257,000.
    "lrcn": ("formula: 3,726,464 + 51,384,320 + 4,457,472 + 257,000", 59_825_256),
    # Two-stream, CNN-M-2048-shaped streams on 224x224: convs 7x7x3x96, 5x5x96x256, 3x3x256x512, 2x 3x3x512x512
    # + biases = 6,528,640; 224 -> 112 -> 56 -> 28 -> 14 -> 7: fc0 25088*4096+4096 = 102,764,544, fc1
    # 4096*2048+2048 = 8,390,656, head 2,049,000: 119,732,840 per RGB stream; the flow stream's conv0 takes
    # 2(T-1) = 20 channels: + 7*7*17*96 = 79,968.
    "two_stream": ("formula: 2 * 119,732,840 + 79,968", 239_545_648),
    # ViViT at 32x224x224, tubelets 2x16x16 (16 x 14 x 14 = 3,136 tokens): from timm's ViT-B/16 86,567,656 and
    # ViT-L/16 304,326,632 (197 position embeddings): the tubelet kernel doubles the patch kernel (+16*16*3*D);
    # Model 1 has 3,137 position embeddings; Model 2 keeps the per-frame 197 and adds L_t = 4 temporal layers
    # (12 D^2 + 13 D each), a temporal class token, 17 temporal position embeddings and a final LayerNorm; Model 3
    # drops the class token (and its position) and adds a temporal attention + LayerNorm (4 D^2 + 6 D) per block;
    # Model 4 drops the class token and its position.
    "vivit_b16x2_st": ("formula: 86,567,656 - 197*768 + 3,137*768 + 589,824", 89_415_400),
    "vivit_b16x2_fe": ("formula: 86,567,656 + 589,824 + 4*7,087,872 + 768 + 17*768 + 1,536", 115_524_328),
    "vivit_b16x2_fsa": ("formula: vivit_b16x2_st - 2*768 + 12*(4*768^2 + 6*768)", 117_780_712),
    "vivit_b16x2_fdp": ("formula: vivit_b16x2_st - 2*768", 89_413_864),
    "vivit_l16x2_st": ("formula: 304,326,632 - 197*1,024 + 3,137*1,024 + 786,432", 308_123_624),
    "vivit_l16x2_fe": ("formula: 304,326,632 + 786,432 + 4*12,596,224 + 1,024 + 17*1,024 + 2,048", 355_518_440),
    # TimeSformer on 8x224x224: ViT-B/16's 197 positions shared by every frame, plus (all but space-only) a time
    # embedding of 8 x 768; divided adds per block a temporal attention, LayerNorm and temporal_fc (4 D^2 + 4 D +
    # 2 D + D^2 + D = 2,954,496), axial a time and a width step of that size.
    "timesformer_b16_space": ("formula: timm vit_base_patch16_224 (no time embedding)", 86_567_656),
    "timesformer_b16_joint": ("formula: 86,567,656 + 8*768", 86_573_800),
    "timesformer_b16_divided": ("formula: timesformer_b16_joint + 12*2,954,496", 122_027_752),
    "timesformer_b16_axial": ("formula: timesformer_b16_joint + 24*2,954,496", 157_481_704),
    # Swin: timm's models of the same names, built on the meta device (tests/checkpoints/test_timm_swin.py).
    "swin_t": ("timm swin_tiny_patch4_window7_224", 28_288_354),
    "swin_s": ("timm swin_small_patch4_window7_224", 49_606_258),
    "swin_b": ("timm swin_base_patch4_window7_224", 87_768_224),
    "swin_l": ("timm swin_large_patch4_window7_224", 196_532_476),
    "swin_b_w12": ("timm swin_base_patch4_window12_384", 87_903_584),
    "swin_l_w12": ("timm swin_large_patch4_window12_384", 196_735_516),
    # Video Swin: torchvision's swin3d_t/s/b (28,158,070 / 49,816,678 / 88,048,984 at 400 classes,
    # tests/checkpoints/test_torchvision.py) with a 1000-class head: + 600 * (D + 1).
    "video_swin_t": ("formula: torchvision swin3d_t + 600 * 769", 28_619_470),
    "video_swin_s": ("formula: torchvision swin3d_s + 600 * 769", 50_278_078),
    "video_swin_b": ("formula: torchvision swin3d_b + 600 * 1,025", 88_663_984),
    # ConvNeXt: timm's models of the same names (tests/checkpoints/test_timm_convnext.py).
    "convnext_t": ("timm convnext_tiny", 28_589_128),
    "convnext_s": ("timm convnext_small", 50_223_688),
    "convnext_b": ("timm convnext_base", 88_591_464),
    "convnext_l": ("timm convnext_large", 197_767_336),
    # MViT: torchvision's mvit_v1_b / mvit_v2_s (36,610,672 / 34,537,744 at 400 classes; the image forms, its MViT of
    # the same blocks at temporal_size 2: 36,610,000 / 34,516,240; tests/models/test_mvit.py) + 600 * 769 for K=1000.
    "mvit_v1_b": ("formula: torchvision mvit_v1_b + 600 * 769", 37_072_072),
    "mvit_v2_s": ("formula: torchvision mvit_v2_s + 600 * 769", 34_999_144),
    "mvit_v1_b_image": ("formula: torchvision MViT(mvit_v1_b blocks, temporal_size=2) + 600 * 769", 37_071_400),
    "mvit_v2_s_image": ("formula: torchvision MViT(mvit_v2_s blocks, temporal_size=2) + 600 * 769", 34_977_640),
    # VTN: the backbone without its head (timm vit_base_patch16_224 less its 769,000-parameter head; torchvision
    # resnet50 less 2,049,000), [CLS] + 289 positions + LayerNorm (224,256), 3 BERT-base layers (3 * 7,087,872),
    # the MLP head LayerNorm, 768 x 768, 768 x 1000 (1,361,128); ResNet-50's 2048 features projected to 768.
    "vtn_vit_b": ("formula: 85,798,656 + 224,256 + 21,263,616 + 1,361,128", 108_647_656),
    "vtn_r50": ("formula: 23,508,032 + 1,573,632 + 224,256 + 21,263,616 + 1,361,128", 47_930_664),
}
# Inputs for count_params where the default (1, 224, 224, 3) image batch does not fit.
INPUT_SHAPES = {
    "single_frame": ((1, 3, 170, 170, 3),),
    "late_fusion_pool": ((1, 3, 170, 170, 3),),
    "late_fusion_fc": ((1, 2, 170, 170, 3),),
    "early_fusion": ((1, 10, 170, 170, 3),),
    "slow_fusion": ((1, 10, 170, 170, 3),),
    "c3d": ((1, 16, 112, 112, 3),),
    "i3d_r50": ((1, 32, 224, 224, 3),),
    "nl_i3d_r50": ((1, 32, 224, 224, 3),),
    "lrcn": ((1, 4, 227, 227, 3),),
    "two_stream": ((1, 11, 224, 224, 3), (1, 224, 224, 20)),
    **{name: ((1, 32, 224, 224, 3),) for name in ("vivit_b16x2_st", "vivit_b16x2_fe", "vivit_b16x2_fsa",
                                                  "vivit_b16x2_fdp", "vivit_l16x2_st", "vivit_l16x2_fe")},
    **{name: ((1, 8, 224, 224, 3),) for name in ("timesformer_b16_space", "timesformer_b16_joint",
                                                 "timesformer_b16_divided", "timesformer_b16_axial")},
    "swin_b_w12": ((1, 384, 384, 3),),
    "swin_l_w12": ((1, 384, 384, 3),),
    **{name: ((1, 32, 224, 224, 3),) for name in ("video_swin_t", "video_swin_s", "video_swin_b")},
    **{name: ((1, 16, 224, 224, 3),) for name in ("mvit_v1_b", "mvit_v2_s")},
    **{name: ((1, 2, 224, 224, 3),) for name in ("vtn_vit_b", "vtn_r50")},
}


def test_every_model_is_covered():
  assert set(models.MODELS) == set(REFERENCE_COUNTS)


@pytest.mark.parametrize("name", sorted(REFERENCE_COUNTS))
def test_parameter_count_equals_reference(name):
  start = time.perf_counter()
  shapes = INPUT_SHAPES[name] if name in INPUT_SHAPES else ((1, 224, 224, 3),)
  count = models.count_params(models.create_model(name, num_classes=1000), *shapes)
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

"""checkpoints.inflate: the kernel modes, I3D from a ResNet and Video Swin from a Swin (identical frames give the 2D
model's features or logits), what is copied and what is left from the template, and the errors.

Tiny sizes, all different: B=2 clips of T=6 frames (I3D: per test), 20 x 28 pixels, C=5 channels, K=7 classes;
Video Swin patch 2 x 4 x 4 (tokens 3 x 5 x 7, padded to 4 x 6 x 9 by the 2 x 3 x 3 windows), width 16, heads (1, 2).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from flax.traverse_util import flatten_dict

from tests.models.helpers import noise, random_variables
from vit_video.checkpoints.inflate import i3d_from_resnet, inflate_kernel, video_swin_from_swin
from vit_video.layers import windows
from vit_video.layers.embed import PatchEmbedding
from vit_video.models import swin, video_swin, vit
from vit_video.models.i3d import I3DResNet
from vit_video.models.resnet import ResNet

B, T, H, W, C, K = 2, 6, 20, 28, 5, 7
WINDOW = (2, 3, 3)
TINY_VIDEO_SWIN = dict(num_classes=K, width=16, depths=(2, 2), num_heads=(1, 2), window_size=WINDOW, mlp_ratio=2.0,
                       in_channels=C)
TINY_SWIN = dict(num_classes=K, width=16, depths=(2, 2), num_heads=(1, 2), window_size=3, mlp_ratio=2.0,
                 in_channels=C)
TINY_RESNET = dict(stage_sizes=(1, 1), block="bottleneck", width=4, in_channels=C)
TINY_I3D = dict(stage_sizes=(1, 1), inflate=((1,), (1,)), nonlocal_after=((), ()), width=4, in_channels=C)
X = noise((B, T, H, W, C))


# --- Kernel modes ----------------------------------------------------------------------------------------------------


def test_kernel_modes_place_the_2d_kernel_in_time():
  kernel = np.asarray(noise((3, 5, C, 4)))  # [kh,kw,C,O]
  central = np.asarray(inflate_kernel(kernel, (3, 3, 5, C, 4), "central_frame"))
  np.testing.assert_array_equal(central[1], kernel)
  np.testing.assert_array_equal(central[[0, 2]], 0.0)
  np.testing.assert_array_equal(np.asarray(inflate_kernel(kernel, (2, 3, 5, C, 4), "central_frame"))[1], kernel)
  np.testing.assert_allclose(inflate_kernel(kernel, (4, 3, 5, C, 4), "average"), np.broadcast_to(kernel / 4, (4,) +
                                                                                                 kernel.shape))
  np.testing.assert_array_equal(inflate_kernel(kernel, (2, 3, 5, C, 4), "repeat"), np.stack([kernel, kernel]))
  with pytest.raises(ValueError, match=r"inflation mode 'center' is not one of \['central_frame', 'average', "):
    inflate_kernel(kernel, (3, 3, 5, C, 4), "center")


# --- I3D from ResNet -------------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=0)
def intermediates(model, variables, x):
  """(logits, intermediates) of an eval-mode forward pass, jitted: one compile beats one per op here."""
  out, state = model.apply(variables, x, train=False, capture_intermediates=True, mutable=["intermediates"])
  return out, state["intermediates"]


@functools.partial(jax.jit, static_argnums=0)
def logits(model, variables, x):
  return model.apply(variables, x, train=False)


def test_i3d_average_inflation_of_identical_frames_gives_the_2d_features():
  """A clip of 15 copies of one image through the "average"-inflated I3D equals the 2D ResNet on the image at
  every time whose temporal receptive field lies inside the clip. With temporal_strides (1, 1, 2): conv1
  (kt 5, pad 2) is clean at t in [2, 12]; layer1's 3x1x1 conv at [3, 11]; pool2 (3, stride 2, pad 1) at
  u in [2, 5]; layer2's 3x1x1 conv at u in [3, 4] of 8. The border times differ (temporal zero padding)."""
  image = noise((B, H, W, C))
  model_2d = ResNet(num_classes=K, **TINY_RESNET)
  v2 = random_variables(model_2d, image)
  model_3d = I3DResNet(num_classes=K, temporal_strides=(1, 1, 2), **TINY_I3D)
  x = jnp.repeat(image[:, None], 15, axis=1)  # [B,15,H,W,C]
  v3 = i3d_from_resnet(v2, random_variables(model_3d, x, seed=1), mode="average")
  _, s2 = intermediates(model_2d, v2, image)
  _, s3 = intermediates(model_3d, v3, x)
  f2, f3 = s2["layer2"]["__call__"][0], s3["layer2"]["__call__"][0]  # [B,3,4,32], [B,8,3,4,32]
  assert f3.shape == (B, 8) + f2.shape[1:]
  np.testing.assert_allclose(f3[:, 3:5], jnp.broadcast_to(f2[:, None], f3[:, 3:5].shape), rtol=1e-4, atol=1e-5)
  assert not np.allclose(f3[:, 0], f2, atol=1e-3) and not np.allclose(f3[:, 7], f2, atol=1e-3)


def test_i3d_central_frame_inflation_of_identical_frames_gives_the_2d_logits():
  """"central_frame" leaves one tap per kernel, so every frame is processed alone: identical frames give the 2D logits
  exactly, temporal strides and all (and "average" does not, because of the temporal zero padding)."""
  image = noise((B, H, W, C))
  model_2d = ResNet(num_classes=K, **TINY_RESNET)
  v2 = random_variables(model_2d, image)
  model_3d = I3DResNet(num_classes=K, **TINY_I3D)
  x = jnp.repeat(image[:, None], 5, axis=1)  # [B,5,H,W,C]
  template = random_variables(model_3d, x, seed=1)
  logits_2d = logits(model_2d, v2, image)
  center = logits(model_3d, i3d_from_resnet(v2, template, mode="central_frame"), x)
  np.testing.assert_allclose(center, logits_2d, rtol=1e-4, atol=1e-5)
  average = logits(model_3d, i3d_from_resnet(v2, template, mode="average"), x)
  assert not np.allclose(average, logits_2d, atol=1e-3)


def test_i3d_first_conv_on_a_single_frame_clip():
  """A clip whose only non-zero frame is the central one: "central_frame"'s conv1 gives the 2D conv1 of that frame at
  the central time and zero elsewhere; "average"'s gives the 2D response / 5 at all 5 times (kernel 5, pad 2)."""
  image = noise((B, H, W, C))
  model_2d = ResNet(num_classes=K, **TINY_RESNET)
  v2 = random_variables(model_2d, image)
  model_3d = I3DResNet(num_classes=K, temporal_strides=(1, 1, 1), **TINY_I3D)
  x = jnp.zeros((B, 5, H, W, C)).at[:, 2].set(image)
  template = random_variables(model_3d, x, seed=1)
  conv_2d = intermediates(model_2d, v2, image)[1]["conv1"]["__call__"][0]  # [B,10,14,4]
  conv_center = intermediates(model_3d, i3d_from_resnet(v2, template, mode="central_frame"), x)[1]["conv1"]
  conv_center = conv_center["__call__"][0]  # [B,5,10,14,4]
  np.testing.assert_allclose(conv_center[:, 2], conv_2d, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(conv_center[:, jnp.array([0, 1, 3, 4])], 0.0)
  conv_average = intermediates(model_3d, i3d_from_resnet(v2, template, mode="average"), x)[1]["conv1"]
  np.testing.assert_allclose(conv_average["__call__"][0], jnp.broadcast_to(conv_2d[:, None] / 5, conv_center.shape),
                             rtol=1e-5, atol=1e-6)


def test_i3d_inflation_copies_batch_norm_and_head_or_keeps_a_fresh_head():
  image, x = noise((B, H, W, C)), noise((B, 4, H, W, C))
  v2 = random_variables(ResNet(num_classes=K, **TINY_RESNET), image)
  for k, same in ((K, True), (K + 2, False)):
    template = random_variables(I3DResNet(num_classes=k, **TINY_I3D), x, seed=1)
    v3 = i3d_from_resnet(v2, template, mode="central_frame")
    jax.tree.map(np.testing.assert_array_equal, v3["batch_stats"], v2["batch_stats"])
    np.testing.assert_array_equal(v3["params"]["layer2"]["block0"]["bn3"]["scale"],
                                  v2["params"]["layer2"]["block0"]["bn3"]["scale"])
    np.testing.assert_array_equal(v3["params"]["fc"]["kernel"], (v2 if same else template)["params"]["fc"]["kernel"])
    assert v3["params"]["layer1"]["block0"]["conv2"]["kernel"].shape == (1, 3, 3, 4, 4)


def test_i3d_inflation_raises_naming_the_key():
  image, x = noise((B, H, W, C)), noise((B, 4, H, W, C))
  v2 = random_variables(ResNet(num_classes=K, **TINY_RESNET), image)
  template = random_variables(I3DResNet(num_classes=K, **TINY_I3D), x, seed=1)
  flat = traverse_util.flatten_dict(v2)
  flat[("params", "layer2", "block0", "conv2", "kernel")] = jnp.zeros((3, 3, 8, 9))
  with pytest.raises(ValueError, match=r"cannot inflate params/layer2/block0/conv2/kernel: 2D shape \(3, 3, 8, 9\) "
                                       r"does not map to 3D shape \(1, 3, 3, 8, 8\)"):
    i3d_from_resnet(traverse_util.unflatten_dict(flat), template)
  deeper = random_variables(I3DResNet(num_classes=K, **{**TINY_I3D, "stage_sizes": (1, 2), "inflate": ((1,), (1, 0)),
                                                        "nonlocal_after": ((), (1,))}), x, seed=1)
  with pytest.raises(ValueError, match=r"cannot inflate \w+/layer2/block1/\w+/\w+: the 2D variables have no"):
    i3d_from_resnet(v2, deeper)
  with pytest.raises(ValueError, match=r"mode 'middle' is not one of \['central_frame', 'average', 'repeat'\]"):
    i3d_from_resnet(v2, template, mode="middle")


# --- Video Swin from Swin ------------------------------------------------------------------------------------------


@functools.cache
def _swin_2d(mode="masked", num_classes=K, window=3):
  model = swin.Swin(**dict(TINY_SWIN, num_classes=num_classes, window_size=window), window_padding=mode)
  return model, random_variables(model, X[:, 0])["params"]


def _template(**overrides):
  return random_variables(video_swin.VideoSwin(**dict(TINY_VIDEO_SWIN, **overrides)), X, seed=1)["params"]


def test_video_swin_inflation_averages_the_patch_kernel_repeats_tables_over_time_and_copies_the_rest():
  _, params_2d = _swin_2d()
  template = _template()
  params = video_swin_from_swin(params_2d, template)
  assert jax.tree.structure(params) == jax.tree.structure(template)
  kernel = np.asarray(params["embedding"]["kernel"])  # [2,4,4,C,D]
  np.testing.assert_allclose(kernel, np.broadcast_to(params_2d["embedding"]["kernel"] / 2, kernel.shape), rtol=1e-6)
  for i, j in [(0, 0), (1, 1)]:
    table = np.asarray(params[f"stage_{i}"][f"block_{j}"]["rel_pos"]["relative_position_bias_table"])
    table_2d = params_2d[f"stage_{i}"][f"block_{j}"]["rel_pos"]["relative_position_bias_table"]
    assert table.shape == (3 * 25, i + 1)
    # Row t * 25 + hw holds offset (t - 1, hw): every temporal offset reads the 2D table.
    np.testing.assert_array_equal(table.reshape(3, 25, -1), np.broadcast_to(table_2d, (3, 25, i + 1)))
  flat, flat_2d = flatten_dict(params, sep="/"), flatten_dict(params_2d, sep="/")
  assert set(flat) == set(flat_2d)
  for path, value in flat.items():  # everything else (the head too: same K) as it is
    if path != "embedding/kernel" and not path.endswith("relative_position_bias_table"):
      np.testing.assert_array_equal(value, flat_2d[path], err_msg=path)


@functools.partial(jax.jit, static_argnums=0)
def _logits(model, params, x):
  return model.apply({"params": params}, x, train=False)


def test_from_swin_2d_a_clip_of_identical_frames_gives_the_2d_swin_on_the_frame():
  """What the construction implies, exactly (to float rounding): with the kernel averaged over p_t, every tubelet of
  identical frames embeds as the frame's 2D patch; attention over the copies of a spatial key along time, all with
  the same bias (the table ignores the temporal offset), splits that key's 2D weight between them; merging, MLPs
  and norms act per token; so every temporal index carries the 2D Swin's token map and the pooled logits are the
  2D Swin's. This needs the same spatial windows as the 2D Swin and no attended padding: it holds with
  window_padding="masked" on both at any size (here T'=3 is padded to 4 and every spatial axis is padded), and
  with "torchvision" where nothing is padded, but not where T' is padded (the zero frames are attended)."""
  model_2d, params_2d = _swin_2d()
  frame = X[:, 0]  # [B,H,W,C]
  same = jnp.repeat(frame[:, None], T, axis=1)  # [B,T,H,W,C], identical frames
  params = video_swin_from_swin(params_2d, _template())
  # The patch embeddings equal the 2D ones at every temporal index.
  embedded = PatchEmbedding((2, 4, 4), 16).apply({"params": params["embedding"]}, same)  # [B,T',H',W',D]
  embedded_2d = PatchEmbedding((4, 4), 16).apply({"params": params_2d["embedding"]}, frame)  # [B,H',W',D]
  np.testing.assert_allclose(embedded, jnp.broadcast_to(embedded_2d[:, None], embedded.shape), rtol=1e-5, atol=1e-5)

  expected = np.asarray(_logits(model_2d, params_2d, frame))
  assert np.abs(expected).max() > 0.1  # a random head: not 0 == 0
  masked = video_swin.VideoSwin(**TINY_VIDEO_SWIN, window_padding="masked")
  np.testing.assert_allclose(_logits(masked, params, same), expected, rtol=1e-4, atol=1e-4)
  assert np.abs(_logits(masked, params, X) - expected).max() > 1e-2  # other frames, other logits: not vacuous

  tv = video_swin.VideoSwin(**TINY_VIDEO_SWIN, window_padding="torchvision")
  frame = noise((B, 24, 48, C), seed=8)  # token maps 6 x 12 and 3 x 6: nothing padded in space
  expected = np.asarray(_logits(model_2d, params_2d, frame))
  same_8 = jnp.repeat(frame[:, None], 8, axis=1)  # T' = 4, a multiple of Wt = 2
  np.testing.assert_allclose(_logits(tv, params, same_8), expected, rtol=1e-4, atol=1e-4)
  same_6 = jnp.repeat(frame[:, None], 6, axis=1)  # T' = 3, padded to 4
  assert np.abs(_logits(tv, params, same_6) - expected).max() > 1e-3


def test_video_swin_another_window_is_resampled_then_repeated_and_another_head_left_from_the_template():
  _, params_2d = _swin_2d(num_classes=3, window=4)  # 7 x 7 = 49-row tables, 3 classes
  template = _template()
  with pytest.raises(ValueError, match=r"75 rows\) is not 2Wt-1 copies of the 2D table \(49 rows\).*pass window_size"):
    video_swin_from_swin(params_2d, template)
  params = video_swin_from_swin({"params": params_2d}, {"params": template}, window_size=WINDOW)["params"]
  table_2d = params_2d["stage_1"]["block_0"]["rel_pos"]["relative_position_bias_table"]
  np.testing.assert_allclose(params["stage_1"]["block_0"]["rel_pos"]["relative_position_bias_table"],
                             np.tile(windows.resize_relative_position_bias_table(table_2d, (3, 3)), (3, 1)), rtol=1e-6)
  jax.tree.map(np.testing.assert_array_equal, params["head"], template["head"])  # K 3 != 7: the template's
  with pytest.raises(ValueError, match=r"window_size \(3, 3, 3\) does not give"):
    video_swin_from_swin(params_2d, template, window_size=(3, 3, 3))


def test_video_swin_from_swin_rejects_other_families_and_other_shapes():
  _, params_2d = _swin_2d()
  template = _template()
  vit_params = random_variables(vit.ViT(num_classes=K, patch_size=4, width=16, depth=1, mlp_dim=32, num_heads=2,
                                        in_channels=C), X[:, 0])["params"]
  with pytest.raises(ValueError, match=r"swin_params are not a vit_video Swin's parameters .* got \['Transformer'"):
    video_swin_from_swin(vit_params, template)
  with pytest.raises(ValueError, match=r"a 2D Swin's patch kernel is \[p,p,C,D\]; got shape \(2, 4, 4, 5, 16\)"):
    video_swin_from_swin(template, template)  # a VideoSwin's parameters as the source
  with pytest.raises(ValueError, match="template is not a VideoSwin's parameters"):
    video_swin_from_swin(params_2d, params_2d)
  with pytest.raises(ValueError, match=r"differ in parameters .* not in the VideoSwin \['stage_1/block_2/"):
    deeper = random_variables(swin.Swin(**dict(TINY_SWIN, depths=(2, 3))), X[:, 0])["params"]
    video_swin_from_swin(deeper, template)
  with pytest.raises(ValueError, match=r"'stage_0/block_0/mlp/Dense_0/bias' has shape \(32,\) but the "
                                       r"VideoSwin's has shape \(48,\) \(another width"):
    video_swin_from_swin(params_2d, _template(mlp_ratio=3.0))

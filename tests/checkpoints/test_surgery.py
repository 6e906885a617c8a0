"""checkpoints.surgery: another run's parameters fitted to a model of the same family (the head kept fresh for other
classes or with reset_head, a position embedding resampled, anything else refused), and the image -> video dispatch.

Tiny ViT parameters drawn with numpy: width 6, a 3x4 grid of 12 tokens plus a class token, K=5 classes.
"""
import numpy as np
import pytest

from tests.models.helpers import random_variables
from vit_video.checkpoints import surgery
from vit_video.layers.embed import resample_pos_embedding
from vit_video.models import resnet, timesformer, vit

D, K = 6, 5


def vit_params(seed=0, grid=(3, 4), k=K):
  """A tiny token ViT's params (one block) for images of `grid` patches of 2 pixels."""
  model = vit.ViT(num_classes=k, patch_size=2, width=D, depth=1, mlp_dim=7, num_heads=2, in_channels=3)
  return random_variables(model, np.zeros((1, 2 * grid[0], 2 * grid[1], 3), np.float32), seed=seed)["params"]


def test_same_shapes_copy_everything_and_a_head_of_another_shape_stays_fresh():
  fresh, loaded = vit_params(0), vit_params(1)
  merged = surgery.merge_params(fresh, loaded, source="run")
  np.testing.assert_array_equal(merged["head"]["kernel"], loaded["head"]["kernel"])  # same K: loaded
  np.testing.assert_array_equal(merged["cls"]["token"], loaded["cls"]["token"])
  reset = surgery.merge_params(fresh, loaded, source="run", reset_head=True)
  for leaf in ("kernel", "bias"):  # reset_head: the fresh head, the rest loaded
    np.testing.assert_array_equal(reset["head"][leaf], fresh["head"][leaf])
  np.testing.assert_array_equal(reset["embedding"]["kernel"], loaded["embedding"]["kernel"])
  other_k = surgery.merge_params(vit_params(0, k=3), loaded, source="run")  # 3 classes: a new head
  np.testing.assert_array_equal(other_k["head"]["kernel"], vit_params(0, k=3)["head"]["kernel"])
  np.testing.assert_array_equal(other_k["embedding"]["kernel"], loaded["embedding"]["kernel"])


def test_a_resnet_head_is_its_fc():
  model = resnet.ResNet(num_classes=K, stage_sizes=(1,), block="basic", width=4, in_channels=3)
  fresh = random_variables(model, np.zeros((1, 8, 10, 3), np.float32))["params"]
  loaded = random_variables(resnet.ResNet(num_classes=3, stage_sizes=(1,), block="basic", width=4, in_channels=3),
                            np.zeros((1, 8, 10, 3), np.float32), seed=1)["params"]
  merged = surgery.merge_params(fresh, loaded, source="resnet", head=resnet.ResNet.head)
  np.testing.assert_array_equal(merged["fc"]["kernel"], fresh["fc"]["kernel"])
  np.testing.assert_array_equal(merged["conv1"]["kernel"], loaded["conv1"]["kernel"])
  with pytest.raises(ValueError, match=r"fc/bias has shape \(3,\), the model expects \(5,\)"):
    surgery.merge_params(fresh, loaded, source="resnet", head="head")  # the wrong head name: fc is a body key


def test_position_embedding_resampled_to_the_new_grid_and_to_its_own_size_unchanged():
  loaded, fresh = vit_params(1, grid=(3, 3)), vit_params(0, grid=(4, 4))
  merged = surgery.merge_params(fresh, loaded, source="run")
  pos, src = (p["Transformer"]["posembed_input"]["pos_embedding"] for p in (merged, loaded))
  assert pos.shape == (1, 17, D)
  np.testing.assert_array_equal(pos[:, 0], src[:, 0])  # the class token's row is kept
  np.testing.assert_allclose(pos, resample_pos_embedding(src, (4, 4), num_prefix_tokens=1), rtol=1e-6)
  same = surgery.merge_params(vit_params(2, grid=(3, 3)), loaded, source="run")
  np.testing.assert_array_equal(same["Transformer"]["posembed_input"]["pos_embedding"], src)
  with pytest.raises(ValueError, match=r"cannot resample .*pos_embedding from \(1, 10, 6\) to the non-square"):
    surgery.merge_params(vit_params(0, grid=(3, 4)), loaded, source="run")


def test_another_model_is_refused_naming_the_keys():
  fresh = vit_params(0)
  extra = {**fresh, "pre_logits": {"kernel": np.ones((D, D)), "bias": np.ones(D)}}
  with pytest.raises(ValueError, match=r"run is not a checkpoint of this model: it lacks \[\] and has extra "
                                       r"\['pre_logits/bias', 'pre_logits/kernel'\]"):
    surgery.merge_params(fresh, extra, source="run")
  wider = vit.ViT(num_classes=K, patch_size=2, width=8, depth=1, mlp_dim=7, num_heads=2, in_channels=3)
  with pytest.raises(ValueError, match=r"run is not a checkpoint of this model: .* has shape \(8,\), the model "
                                       r"expects \(6,\)"):
    surgery.merge_params(fresh, random_variables(wider, np.zeros((1, 6, 8, 3), np.float32))["params"], source="run")


def test_from_image_model_refuses_models_without_an_image_family_and_modes_timesformer_has_not():
  with pytest.raises(ValueError, match=r"ViT is not initialised from an image model; those that are: ViViT, "
                                       r"TimeSformer, VideoSwin, I3DResNet"):
    surgery.from_image_model(vit.ViT(num_classes=K), {"params": {}}, {"params": {}})
  with pytest.raises(ValueError, match=r"TimeSformer embeds every frame with the ViT's 2D patch kernel: no "
                                       r"inflation mode applies \(got 'average'\)"):
    surgery.from_image_model(timesformer.TimeSformer(num_classes=K), {"params": {}}, {"params": {}}, mode="average")

"""checkpoints.inflate_vit: ViViT and TimeSformer initialised from a ViT (tubelet inflation, position embeddings
repeated over time or shared by the frames, temporal steps starting as identities: identical frames give the ViT's
logits or features), scanned and wrapped inputs, and the errors for other checkpoints.

Tiny sizes, all different where it matters: B=2 clips of T=6 frames, 16x20 pixels, C=7 channels, patch 4 (a 4 x 5
grid, S=20 tokens per frame), ViViT tubelet depth 2 (T'=3), width 24, 4 heads, MLP 40, K=5.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.models.helpers import forward_with_intermediates, noise, random_variables
from vit_video.checkpoints.inflate_vit import timesformer_from_vit, vivit_from_vit
from vit_video.layers.embed import PatchEmbedding, resample_pos_embedding
from vit_video.models import resnet, timesformer, vit, vivit

B, T, H, W, C, K = 2, 6, 16, 20, 7, 5
P, TUBE, D = 4, 2, 24
NT, NH, NW = T // TUBE, H // P, W // P
S = NH * NW
TINY_VIT = dict(num_classes=K, patch_size=P, width=D, depth=2, mlp_dim=40, num_heads=4, in_channels=C)
TINY_VIVIT = dict(TINY_VIT, tubelet_depth=TUBE, temporal_depth=2)
TINY_TIMESFORMER = dict(TINY_VIT, num_frames=T)

X = noise((B, T, H, W, C))


def timesformer_and_variables(attention, **overrides):
  model = timesformer.TimeSformer(**{**TINY_TIMESFORMER, **overrides}, attention=attention)
  return model, random_variables(model, X)


def _ln(x, p):
  x = np.asarray(x, np.float64)
  mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + 1e-6) * np.asarray(p["scale"]) + np.asarray(p["bias"])


def _dense(x, p):
  return x @ np.asarray(p["kernel"]) + np.asarray(p["bias"])


# --- ViViT ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["central_frame", "average", "repeat"])
def test_tubelet_inflation_against_the_2d_patch_embedding(mode):
  """Per tubelet of t=2 frames f0, f1 with 2D embedding e(f) = W f + b: central_frame gives e(f1) (frame t // 2),
  average (e(f0) + e(f1)) / 2, repeat e(f0) + e(f1) - b; so a clip of identical frames gives e(f) for both
  central_frame and average."""
  vit_params = random_variables(vit.ViT(**TINY_VIT), X[:, 0])["params"]
  template = random_variables(vivit.ViViT(**TINY_VIVIT, variant="st"), X, seed=1)["params"]
  params = vivit_from_vit(vit_params, template, mode=mode)
  embed3d = lambda x: PatchEmbedding((TUBE, P, P), D).apply({"params": params["embedding"]}, x)  # noqa: E731
  frames = PatchEmbedding((P, P), D).apply({"params": vit_params["embedding"]}, X.reshape(B * T, H, W, C))
  frames = frames.reshape(B, NT, TUBE, NH, NW, D)  # [B,T',t,H',W',D]
  bias = vit_params["embedding"]["bias"]
  expected = {"central_frame": frames[:, :, TUBE // 2], "average": frames.mean(2),
              "repeat": frames.sum(2) - (TUBE - 1) * bias}[mode]
  np.testing.assert_allclose(embed3d(X), expected, rtol=1e-5, atol=1e-5)
  same = jnp.repeat(X[:, :1], T, axis=1)  # identical frames
  single = frames[:, 0, 0]  # e(frame 0), [B,H',W',D]
  factor = {"central_frame": 1.0, "average": 1.0, "repeat": TUBE}[mode]
  np.testing.assert_allclose(embed3d(same), jnp.broadcast_to(factor * single[:, None] - (factor - 1) * bias,
                                                             (B, NT, NH, NW, D)), rtol=1e-5, atol=1e-5)


def test_model2_from_vit_gives_the_vit_features_per_temporal_index_on_identical_frames():
  """Inflated tubelets see e(frame) on a clip of identical frames, the spatial encoder is the ViT's, so every
  temporal index's class token is the ViT's feature vector (the temporal encoder is left from scratch)."""
  vit_model = vit.ViT(**TINY_VIT)
  vit_params = random_variables(vit_model, X[:, 0])["params"]
  same = jnp.repeat(X[:, :1], T, axis=1)  # [B,T,H,W,C], identical frames
  _, vit_inter = forward_with_intermediates(vit_model, {"params": vit_params}, same.reshape(B * T, H, W, C))
  features = vit_inter["Transformer"]["__call__"][0][:, 0].reshape(B, T, D)[:, 0]  # [B,D]
  model = vivit.ViViT(**TINY_VIVIT, variant="fe")
  template = random_variables(model, X, seed=1)["params"]
  for mode in ("central_frame", "average"):
    params = vivit_from_vit(vit_params, template, mode=mode)
    assert jax.tree.structure(params) == jax.tree.structure(template)
    for key in ("TemporalTransformer", "temporal_cls"):  # from scratch: the template's
      jax.tree.map(np.testing.assert_array_equal, params[key], template[key])
    np.testing.assert_array_equal(params["head"]["kernel"], vit_params["head"]["kernel"])  # same K: kept
    _, inter = forward_with_intermediates(model, {"params": params}, same)
    spatial = inter["SpatialTransformer"]["__call__"][0][:, 0].reshape(B, NT, D)
    np.testing.assert_allclose(spatial, jnp.broadcast_to(features[:, None], spatial.shape), rtol=1e-5, atol=1e-5)


def test_model3_from_a_gap_vit_is_the_vit_on_identical_frames():
  """Model 3 from a ViT: spatial attention and MLP copied, temporal attention zeroed (the paper), positions
  repeated over time, global average pooling and the ViT's head: on identical frames the logits are the ViT's."""
  vit_model = vit.ViT(**TINY_VIT, pool="gap")
  vit_params = random_variables(vit_model, X[:, 0])["params"]
  model = vivit.ViViT(**TINY_VIVIT, variant="fsa")
  params = vivit_from_vit(vit_params, random_variables(model, X, seed=1)["params"])
  assert not np.any(params["Transformer"]["encoderblock_1"]["MultiHeadDotProductAttention_time"]["out"]["kernel"])
  same = jnp.repeat(X[:, :1], T, axis=1)
  logits, _ = forward_with_intermediates(model, {"params": params}, same)
  vit_logits, _ = forward_with_intermediates(vit_model, {"params": vit_params}, X[:, 0])
  np.testing.assert_allclose(logits, vit_logits, rtol=1e-4, atol=1e-5)
  assert np.abs(vit_logits).max() > 0.1  # a random head: the comparison is not 0 == 0


@pytest.mark.parametrize("variant", ["st", "fdp"])
def test_vivit_position_embedding_repeated_over_time_and_resampled(variant):
  """The ViT's grid rows repeated for each temporal index (class row first for Model 1); from a ViT at another
  (square) grid, resampled first; a head of another size is dropped (left from the template)."""
  vit_params = random_variables(vit.ViT(**{**TINY_VIT, "num_classes": 3}), jnp.zeros((1, 12, 12, C)))["params"]
  vit_pos = vit_params["Transformer"]["posembed_input"]["pos_embedding"]  # [1, 1 + 3*3, D]
  template = random_variables(vivit.ViViT(**TINY_VIVIT, variant=variant), X, seed=1)["params"]
  params = vivit_from_vit(vit_params, template, frame_grid=(NH, NW))
  pos = params["Transformer"]["posembed_input"]["pos_embedding"]
  grid = resample_pos_embedding(vit_pos, (NH, NW))[:, 1:]  # [1,S,D]
  prefix = 1 if variant == "st" else 0
  np.testing.assert_allclose(pos[:, prefix:].reshape(NT, S, D), jnp.broadcast_to(grid, (NT, S, D)), rtol=1e-6)
  if prefix:
    np.testing.assert_array_equal(pos[:, 0], vit_pos[:, 0])
  np.testing.assert_array_equal(params["head"]["kernel"], template["head"]["kernel"])  # K 3 != 5: dropped
  with pytest.raises(ValueError, match="not whole frames"):
    vivit_from_vit(vit_params, template)  # 9 ViT positions per frame do not tile 3 x 20


def test_vivit_from_vit_takes_a_scanned_vit_and_variables_dicts():
  vit_params = random_variables(vit.ViT(**TINY_VIT), X[:, 0])["params"]
  template = random_variables(vivit.ViViT(**TINY_VIVIT, variant="fsa"), X, seed=1)
  plain = vivit_from_vit(vit_params, template["params"])
  wrapped = vivit_from_vit({"params": vit.unscanned_to_scan(vit_params)}, template)
  jax.tree.map(np.testing.assert_array_equal, wrapped, {"params": plain})


def test_vivit_from_vit_rejects_other_checkpoints():
  template = random_variables(vivit.ViViT(**TINY_VIVIT, variant="fe"), X)["params"]
  image = X[:, 0]
  resnet_params = random_variables(resnet.ResNet(num_classes=K, stage_sizes=(1,), block="basic", width=4,
                                                 in_channels=C), image)["params"]
  with pytest.raises(ValueError, match=r"not a vit_video ViT's parameters.*'conv1'"):
    vivit_from_vit(resnet_params, template)
  wider = random_variables(vit.ViT(**{**TINY_VIT, "width": 16}), image)["params"]
  with pytest.raises(ValueError, match="ViT width 16 differs from the ViViT's width 24"):
    vivit_from_vit(wider, template)
  deeper = random_variables(vit.ViT(**{**TINY_VIT, "depth": 3}), image)["params"]
  with pytest.raises(ValueError, match=r"ViT depth 3 differs from the ViViT's depth 2 \(SpatialTransformer\)"):
    vivit_from_vit(deeper, template)
  other_mlp = random_variables(vit.ViT(**{**TINY_VIT, "mlp_dim": 8}), image)["params"]
  with pytest.raises(ValueError, match="MlpBlock_3/Dense_0/bias' has shape"):
    vivit_from_vit(other_mlp, template)
  patch2 = random_variables(vit.ViT(**{**TINY_VIT, "patch_size": 2}), image)["params"]
  with pytest.raises(ValueError, match="patch size or channels differ"):
    vivit_from_vit(patch2, template)
  hybrid = {**random_variables(vit.ViT(**TINY_VIT), image)["params"], "stem": {}}
  with pytest.raises(ValueError, match="hybrid"):
    vivit_from_vit(hybrid, template)
  with pytest.raises(ValueError, match=r"inflation mode 'zeros' is not one of \['central_frame', 'average', "
                                       r"'repeat'\]"):
    vivit_from_vit(random_variables(vit.ViT(**TINY_VIT), image)["params"], template, mode="zeros")


# --- TimeSformer ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vit_model_and_params():
  model = vit.ViT(**TINY_VIT)
  return model, random_variables(model, X[:, 0])["params"]


@pytest.mark.parametrize("attention", ["space", "divided"])
def test_timesformer_from_vit_identical_frames_give_the_vit_logits(vit_model_and_params, attention):
  """The temporal step starts as the identity (zero `temporal_fc`, zero time embedding) and the class token's update
  is the average over identical frames: the logits are the ViT's."""
  vit_model, vit_params = vit_model_and_params
  model, template = timesformer_and_variables(attention)
  params = timesformer_from_vit(vit_params, template["params"])
  assert jax.tree.structure(params) == jax.tree.structure(template["params"])
  if attention == "divided":
    block = params["Transformer"]["encoderblock_1"]
    vit_block = vit_params["Transformer"]["encoderblock_1"]
    jax.tree.map(np.testing.assert_array_equal, block["MultiHeadDotProductAttention_time"],  # the official copy
                 vit_block["MultiHeadDotProductAttention_1"])
    jax.tree.map(np.testing.assert_array_equal, block["LayerNorm_time"], vit_block["LayerNorm_0"])
    assert not any(np.any(a) for a in jax.tree.leaves((block["Dense_time"], params["Transformer"]["posembed_time"])))
  same = jnp.repeat(X[:, :1], T, axis=1)
  logits, _ = forward_with_intermediates(model, {"params": params}, same)
  vit_logits, _ = forward_with_intermediates(vit_model, {"params": vit_params}, X[:, 0])
  np.testing.assert_allclose(logits, vit_logits, rtol=1e-4, atol=1e-5)
  assert np.abs(vit_logits).max() > 0.1  # a random head: the comparison is not 0 == 0


def test_timesformer_from_vit_space_averages_the_frames_class_tokens_before_the_norm(vit_model_and_params):
  """On distinct frames the space-only model is LN(mean over frames of the ViT's last-block class token) -> head."""
  vit_model, vit_params = vit_model_and_params
  model, template = timesformer_and_variables("space")
  logits, _ = forward_with_intermediates(model, {"params": timesformer_from_vit(vit_params, template["params"])}, X)
  _, inter = forward_with_intermediates(vit_model, {"params": vit_params}, X.reshape(B * T, H, W, C))
  cls = inter["Transformer"]["encoderblock_1"]["__call__"][0][0][:, 0].reshape(B, T, D)  # before the final norm
  expected = _dense(_ln(np.asarray(cls).mean(1), vit_params["Transformer"]["encoder_norm"]), vit_params["head"])
  np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)


def test_timesformer_from_vit_joint_on_one_frame_is_the_vit(vit_model_and_params):
  """A one-frame clip (the time embedding of T=3 resampled to 1 row, zero) through joint attention is the ViT."""
  vit_model, vit_params = vit_model_and_params
  model, template = timesformer_and_variables("joint")
  params = timesformer_from_vit(vit_params, template["params"])
  logits, _ = forward_with_intermediates(model, {"params": params}, X[:, :1])
  expected, _ = forward_with_intermediates(vit_model, {"params": vit_params}, X[:, 0])
  np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)


def test_timesformer_from_vit_errors_and_head_of_another_size():
  image = jnp.zeros((1, H, W, C))
  template = timesformer_and_variables("axial")[1]["params"]
  ok = random_variables(vit.ViT(**{**TINY_VIT, "num_classes": 3}), image)["params"]
  params = timesformer_from_vit({"params": ok}, {"params": template})["params"]
  np.testing.assert_array_equal(params["head"]["kernel"], template["head"]["kernel"])  # 3 != 7 classes: kept
  np.testing.assert_array_equal(params["cls"]["token"], ok["cls"]["token"])
  for overrides, message in [(dict(depth=1), "ViT depth 1 differs"), (dict(pool="gap"), "no class token"),
                             (dict(mlp_dim=8), "MlpBlock_3/Dense_0/bias' has shape"),
                             (dict(patch_size=2), "embedding/kernel' has shape")]:
    other = random_variables(vit.ViT(**{**TINY_VIT, **overrides}), image)["params"]
    with pytest.raises(ValueError, match=message):
      timesformer_from_vit(other, template)
  bigger = random_variables(vit.ViT(**TINY_VIT), jnp.zeros((1, 12, 12, C)))["params"]  # a 3x3 grid
  with pytest.raises(ValueError, match=r"position embedding has shape \(1, 10, 24\).*pass frame_grid"):
    timesformer_from_vit(bigger, template)
  params = timesformer_from_vit(bigger, template, frame_grid=(NH, NW))  # resampled to 2x4
  assert params["Transformer"]["posembed_input"]["pos_embedding"].shape == (1, 1 + S, D)
  with pytest.raises(ValueError, match="hybrid"):
    timesformer_from_vit({**ok, "stem": {}}, template)

"""VTN: the frame features are the image model's own, Longformer's sliding-window attention pattern (what a frame
sees), the paper's parameter count, backbones with and without BatchNorm, bad input."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_video import models
from vit_video.models import vtn

B, T, H, W, C, K = 2, 5, 8, 12, 3, 7
TINY_VIT = dict(backbone="vit_ti16", backbone_overrides=dict(patch_size=4, width=12, depth=1, num_heads=2, mlp_dim=16),
                width=16, temporal_depth=2, num_heads=2, mlp_dim=24, head_mlp_dim=20, max_frames=9)
BERT_BASE_LAYER = 7_087_872  # one BERT-base / Longformer-base layer (D 768, MLP 3072): the paper's temporal blocks.


def clip(seed=0, t=T):
  return jax.random.normal(jax.random.key(seed), (B, t, H, W, C))


def test_sliding_window_mask_is_longformers_pattern():
  mask = np.asarray(vtn.sliding_window_mask(7, window=4))[0, 0]  # [CLS] + 6 frames, 2 frames either side
  assert mask[0].all() and mask[:, 0].all()  # global [CLS]
  for i in range(1, 7):
    for j in range(1, 7):
      assert mask[i, j] == (abs(i - j) <= 2), (i, j)


def test_a_frame_reaches_only_the_frames_in_its_window_and_cls():
  block = vtn.TemporalBlock(num_heads=2, mlp_dim=12)
  x = jax.random.normal(jax.random.key(1), (B, 8, 10))
  mask = vtn.sliding_window_mask(8, window=2)  # frames see their neighbours only
  params = block.init(jax.random.key(0), x, mask, deterministic=True)
  apply = jax.jit(lambda x: block.apply(params, x, mask, deterministic=True))
  base, moved = apply(x), apply(x.at[:, 4].add(1.0))  # perturb frame token 4
  changed = np.abs(np.asarray(moved - base)).max(axis=(0, 2)) > 1e-6
  assert changed.tolist() == [True, False, False, True, True, True, False, False]


def test_frame_features_are_the_image_models_own():
  """The temporal encoder reads exactly what the backbone computes on each frame alone."""
  model = vtn.VTN(num_classes=K, **TINY_VIT)
  x = clip()
  variables = model.init(jax.random.key(0), x, train=False)
  image_model = models.create_model("vit_ti16", num_classes=0, **TINY_VIT["backbone_overrides"])

  @jax.jit
  def run(x):
    logits, state = model.apply(variables, x, train=False, mutable=["intermediates"],
                                capture_intermediates=lambda m, _: m.name == "backbone")
    return logits, state["intermediates"]["backbone"]["__call__"][0].reshape(B, T, -1)

  logits, features = run(x)
  alone = jax.jit(image_model.apply, static_argnames="train")(
      {"params": variables["params"]["backbone"]}, x[:, -2], train=False)  # frame T-2 by itself
  np.testing.assert_allclose(features[:, -2], alone, rtol=1e-5, atol=1e-6)
  assert "embedding" in variables["params"]  # backbone width 12 != temporal width 16: a projection
  assert logits.shape == (B, K) and logits.dtype == jnp.float32
  assert not np.allclose(logits, run(x[:, ::-1])[0])  # frame order matters


def test_the_papers_vtn_counts():
  def count(name, **kw):
    shapes = jax.eval_shape(lambda: models.create_model(name, **kw).init(
        jax.random.key(0), jnp.zeros((1, 2, 224, 224, 3)), train=False))
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes["params"]))

  d, k = 768, 400
  vit_b16 = models.count_params(models.create_model("vit_b16", num_classes=0))
  head = 2 * d + (d * d + d) + (d * k + k)  # LayerNorm, Dense(768), Dense(K)
  embeddings = d + 289 * d + 2 * d  # [CLS], 288 + 1 positions, LayerNorm
  assert count("vtn_vit_b", num_classes=k) == vit_b16 + embeddings + 3 * BERT_BASE_LAYER + head
  # ResNet-50's 2048 features are projected to 768.
  r50 = models.count_params(models.create_model("resnet50", num_classes=0))
  assert count("vtn_r50", num_classes=k) == r50 + (2048 * d + d) + embeddings + 3 * BERT_BASE_LAYER + head


def test_a_batchnorm_backbone_keeps_statistics_and_the_others_none():
  x = clip(t=3)
  r = models.create_model("vtn_r50", num_classes=K, backbone_overrides=dict(stage_sizes=(1, 1), width=4), width=8,
                          temporal_depth=1, num_heads=2, mlp_dim=8, head_mlp_dim=8)
  variables = jax.eval_shape(lambda: r.init(jax.random.key(0), x, train=False))
  assert "batch_stats" in variables and "backbone" in variables["batch_stats"]
  v = vtn.VTN(num_classes=K, **TINY_VIT)
  assert "batch_stats" not in jax.eval_shape(lambda: v.init(jax.random.key(0), x, train=False))


def test_bad_input_is_refused_by_name():
  model = vtn.VTN(num_classes=K, **TINY_VIT)
  with pytest.raises(ValueError, match="exceed max_frames 9"):
    jax.eval_shape(lambda: model.init(jax.random.key(0), clip(t=10), train=False))
  with pytest.raises(ValueError, match=r"in_channels = 3"):
    jax.eval_shape(lambda: model.init(jax.random.key(0), clip()[..., :2], train=False))
  with pytest.raises(ValueError, match="backbone 'vivit_b' is not an image model"):
    jax.eval_shape(lambda: vtn.VTN(num_classes=K, backbone="vivit_b").init(jax.random.key(0), clip(), train=False))

"""figure7: the ViT paper's Figure 7 panels and attention maps drawn for tiny models (random weights)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.visualize import tiny
from vit_video.models import mvit, swin, timesformer, vit, vivit
from vit_video.visualize import figure7

PNG = b"\x89PNG\r\n\x1a\n"


def _random_variables(model, *inputs):
  rng = np.random.default_rng(0)
  abstract = tiny.abstract_variables(model, inputs)
  return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape) * 0.3, s.dtype), abstract)


@pytest.fixture(scope="module")
def tiny_vit():
  model = vit.ViT(num_classes=5, patch_size=4, width=12, depth=2, num_heads=3, mlp_dim=8, in_channels=1)
  images = jax.random.uniform(jax.random.key(1), (3, 12, 20, 1), minval=-1, maxval=1)  # a 3 x 5 patch grid
  return model, _random_variables(model, images), images


def test_figure7_numbers_have_the_papers_shapes(tiny_vit):
  model, variables, images = tiny_vit
  numbers = figure7.figure7_numbers(model, variables, images, components=28)
  assert numbers["grid"] == (3, 5) and numbers["pixels_per_token"] == 4
  assert numbers["distance"].shape == (2, 3)  # [L,h]
  assert (numbers["distance"] > 0).all() and (numbers["distance"] < 4 * np.hypot(3, 5)).all()
  assert numbers["similarity"].shape == (3, 5, 3, 5)
  assert numbers["filters"].shape == (12, 4, 4, 1)  # k = min(28, 4*4*1, D=12)
  assert -1 <= numbers["other"] <= 1 and -1 <= numbers["same_row"] <= 1


def test_draw_figure7_and_attention_write_pngs(tiny_vit, tmp_path):
  model, variables, images = tiny_vit
  paths = figure7.draw_figure7((model, variables), images, tmp_path / "out", components=5, prefix="tiny")
  assert [p.name for p in paths] == ["tiny_filters.png", "tiny_position.png", "tiny_distance.png"]
  paths += figure7.draw_attention(model, variables, images[:2], tmp_path / "out" / "attention.png")
  assert [p.name for p in paths[3:]] == ["attention_0.png", "attention_1.png"]
  for p in paths:
    assert p.read_bytes().startswith(PNG)


def test_figure7_refuses_what_is_not_a_vit():
  model = swin.Swin(num_classes=5)
  with pytest.raises(ValueError, match="drawn for ViTs"):
    figure7.vit_grid(model, (1, 16, 16, 3))
  with pytest.raises(ValueError, match="whole number"):
    figure7.vit_grid(vit.ViT(num_classes=5, patch_size=4), (1, 14, 16, 3))


@pytest.mark.parametrize("model", [
    vivit.ViViT(num_classes=5, variant="st", patch_size=4, tubelet_depth=2, width=8, depth=2, num_heads=2, mlp_dim=8),
    vivit.ViViT(num_classes=5, variant="fe", patch_size=4, tubelet_depth=2, width=8, depth=2, temporal_depth=1,
                num_heads=2, mlp_dim=8),
    timesformer.TimeSformer(num_classes=5, attention="space", num_frames=4, patch_size=4, width=8, depth=2,
                            num_heads=2, mlp_dim=8),
], ids=["vivit_st", "vivit_fe", "timesformer_space"])
def test_clip_attention_maps_cover_every_frame(model, tmp_path):
  clip = jax.random.uniform(jax.random.key(2), (1, 4, 8, 12, 3), minval=-1, maxval=1)
  variables = _random_variables(model, clip)
  maps = figure7.clip_attention_maps(model, variables, clip)
  t = 2 if isinstance(model, vivit.ViViT) else 4  # tubelets of 2 frames; TimeSformer one token per frame
  assert "rollout" in maps and len(maps) == 3  # two layers' maps and the rollout
  for name, m in maps.items():
    assert m.shape == (t, 2, 3), name
    assert (m >= 0).all()
  path = figure7.draw_clip_attention(model, variables, clip, tmp_path / "clip.png")
  assert path.read_bytes().startswith(PNG)


def test_clip_attention_refuses_models_without_space_attention():
  model = timesformer.TimeSformer(num_classes=5, attention="axial", num_frames=3, patch_size=4, width=8, depth=1,
                                  num_heads=2, mlp_dim=8)
  clip = jnp.zeros((1, 3, 8, 12, 3))
  with pytest.raises(ValueError, match="no space-time or per-frame"):
    figure7.clip_attention_maps(model, _random_variables(model, clip), clip)


def test_swin_distance_per_block_against_uniform_attention_in_each_window():
  model = swin.Swin(num_classes=5, width=6, depths=(2, 1), num_heads=(3, 2), window_size=3, patch_size=2,
                    in_channels=1)
  images = jax.random.uniform(jax.random.key(3), (2, 12, 18, 1), minval=-1, maxval=1)  # a 6 x 9 map
  numbers = figure7.swin_distance(model, _random_variables(model, images), images)
  assert numbers["blocks"] == ["stage_0/block_0/attn", "stage_0/block_1/attn", "stage_1/block_0/attn"]
  assert numbers["maps"] == [(6, 9), (6, 9), (3, 5)]
  assert [len(d) for d in numbers["distance"]] == [3, 3, 2]
  # Block 0's windows tile the map: every query sees a whole 3 x 3 window of 2-pixel tokens, uniformly on average
  # over all ordered pairs of its cells.
  cells = [(i, j) for i in range(3) for j in range(3)]
  in_window = 2 * np.mean([np.hypot(a - c, b - d) for a, b in cells for c, d in cells])
  np.testing.assert_allclose(numbers["uniform"][0], in_window, rtol=1e-5)
  for d, u in zip(numbers["distance"], numbers["uniform"]):
    assert 0 < u and (d > 0).all()
  assert max(numbers["distance"][0]) < 2 * 2 * np.sqrt(2)  # the farthest pair in a 3 x 3 window
  fig = figure7.distance_figure(numbers["distance"], uniform=numbers["uniform"])
  assert len(fig.axes) == 1


def test_mvit_clip_maps_are_the_class_tokens_attention_per_block(tmp_path):
  blocks = {k: v[:2] for k, v in mvit.torchvision_blocks(v2=True).items()}
  model = mvit.MViT(num_classes=5, width=8, **{**blocks, "num_heads": (1, 2), "block_widths": (8, 16)},
                    relative_positions=True, residual_pool=True, project_after_attention=True, input_size=(4, 32, 48))
  clip = jax.random.uniform(jax.random.key(4), (1, 4, 32, 48, 3), minval=-1, maxval=1)
  maps = figure7.clip_attention_maps(model, _random_variables(model, clip), clip)
  assert list(maps) == ["block_0", "block_1"]
  for m in maps.values():
    assert m.ndim == 3 and m.shape[0] <= 2  # T' = 2 after the 2-frame patch stride
    assert 0 < m.sum() <= 1 + 1e-6 and (m >= 0).all()  # the class token's row without its own key
  path = figure7.draw_clip_attention(model, _random_variables(model, clip), clip, tmp_path / "mvit.png")
  assert path.read_bytes().startswith(PNG)

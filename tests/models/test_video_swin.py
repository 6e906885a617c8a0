"""VideoSwin (vit_video.models.video_swin): 3D windows (partition/reverse, shifted windows that never attend across
their boundary, a planted token that moves exactly its displaced 3D window), torchvision's relative positions of a
reduced window, parameter counts pinned, layout, dtypes, stochastic depth, bad input. (Initialisation from a 2D
Swin, where a clip of identical frames gives the 2D Swin's logits: tests/checkpoints/test_inflate.py.)

Equality with torchvision itself (and its parameter counts) is in tests/checkpoints/test_torchvision.py.
Tiny sizes, all different: B=2 clips of T=6 frames, 20 x 28 pixels, C=5 channels, patch 2 x 4 x 4 (tokens 3 x 5 x 7,
padded to 4 x 6 x 9 by the 2 x 3 x 3 windows), width 16, heads (1, 2), K=7.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.models.helpers import noise
from vit_video.models import swin, video_swin

B, T, H, W, C, K = 2, 6, 20, 28, 5, 7
WINDOW = (2, 3, 3)
TINY = dict(num_classes=K, width=16, depths=(2, 2), num_heads=(1, 2), window_size=WINDOW, mlp_ratio=2.0,
            in_channels=C)
X = noise((B, T, H, W, C))

# name -> parameter count with 400 classes: torchvision 0.28's swin3d_t/s/b exactly (built on the meta device and
# its weights' meta["num_params"], tests/checkpoints/test_torchvision.py).
PARAM_COUNTS = {
    "video_swin_t": 28_158_070,
    "video_swin_s": 49_816_678,
    "video_swin_b": 88_048_984,
}
# The paper's Table 1 (Kinetics-400), in millions as the brief for this model quotes it: T 28.2, S 49.8, B 88.1. B is
# 88.05M to two decimals, which gives 88.1 rounded half up (88.0 from the exact count); T and S round either way.
PAPER_MILLIONS = {"video_swin_t": 28.2, "video_swin_s": 49.8, "video_swin_b": 88.1}
# The official repository's README (SwinTransformer/Video-Swin-Transformer, Kinetics-400 table): 28M, 50M, 88M.
README_MILLIONS = {"video_swin_t": 28, "video_swin_s": 50, "video_swin_b": 88}


# --- Windows --------------------------------------------------------------------------------------------------------


def _displaced(c, shift):
  """The paper's displaced 3D window of token coordinate c: per axis floor((c - s) / W)."""
  return tuple((ca - s) // w for ca, s, w in zip(c, shift, WINDOW))


def _window_coordinates(resolution, shift):
  """For each window (row-major over the padded grid) and token in it: its (t, h, w) in the unshifted, unpadded
  map, or None for padding: position i of the padded-then-rolled map holds coordinate (i + s) mod P."""
  padded = [-(-r // w) * w for r, w in zip(resolution, WINDOW)]
  out = []
  for grid in np.ndindex(*[p // w for p, w in zip(padded, WINDOW)]):
    tokens = []
    for offset in np.ndindex(*WINDOW):
      c = tuple((g * w + o + s) % p for g, w, o, s, p in zip(grid, WINDOW, offset, shift, padded))
      tokens.append(c if all(ca < r for ca, r in zip(c, resolution)) else None)
    out.append(tokens)
  return out


RESOLUTION = (3, 4, 5)  # a token map that every window axis pads: 4 x 6 x 6
D, HEADS = 8, 2


def _block(mode, shifted=True, sow=False):
  return swin.SwinBlock(num_heads=HEADS, window_size=WINDOW, shifted=shifted, window_padding=mode,
                        sow_attention_weights=sow)


def _draw(block, x):
  """Random block variables (model_helpers.random_variables initialises with `train`, which blocks do not take)."""
  rng = np.random.default_rng(3)
  shapes = jax.eval_shape(functools.partial(block.init, deterministic=True), jax.random.key(0), x)

  def draw(path, leaf):
    if path[-1].key == "scale":
      return jnp.asarray(rng.uniform(0.5, 1.5, leaf.shape), leaf.dtype)
    std = leaf.shape[0] ** -0.5 if path[-1].key == "kernel" else 0.5
    return jnp.asarray(rng.normal(0, std, leaf.shape), leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.mark.parametrize("mode", ["masked", "torchvision"])
def test_shifted_3d_windows_never_attend_across_their_boundary(mode):
  """Sown weights of a shifted block at a padded size: between real tokens of different displaced windows exactly
  0, within one > 0; to padding exactly 0 ("masked") or, for some windows, > 0 ("torchvision", as torchvision)."""
  block = _block(mode, sow=True)
  x = noise((B, *RESOLUTION, D), seed=4)
  _, state = block.apply(_draw(block, x), x, deterministic=True, mutable=["intermediates"])
  weights = np.asarray(state["intermediates"]["attn"]["attention_weights"][0])  # [B*nW,h,N,N]
  shift = (1, 1, 1)
  frames = _window_coordinates(RESOLUTION, shift)
  weights = weights.reshape(B, len(frames), HEADS, 18, 18)
  to_padding = 0.0
  for w, tokens in enumerate(frames):
    for q, cq in enumerate(tokens):
      if cq is None:
        continue  # padding queries are cropped
      for k, ck in enumerate(tokens):
        if ck is None:
          to_padding = max(to_padding, float(weights[:, w, :, q, k].max()))
        elif _displaced(cq, shift) == _displaced(ck, shift):
          assert np.all(weights[:, w, :, q, k] > 0), (w, cq, ck)
        else:
          assert np.all(weights[:, w, :, q, k] == 0.0), (w, cq, ck)
  assert (to_padding > 1e-3) if mode == "torchvision" else (to_padding == 0.0)


@pytest.mark.parametrize("mode, shifted", [("masked", True), ("torchvision", True), ("torchvision", False)])
def test_a_planted_token_moves_exactly_its_displaced_3d_window(mode, shifted):
  """Perturb one token at a time (a random vector: a constant one would vanish in the LayerNorm): exactly the
  outputs of its (displaced) 3D window move, at a size where all three axes are padded."""
  block = _block(mode, shifted)
  base = noise((1, *RESOLUTION, D), seed=5)
  n = int(np.prod(RESOLUTION))
  bump = 3.0 * np.eye(n).reshape(n, *RESOLUTION, 1) * np.random.default_rng(6).normal(size=D)  # [N,T,H,W,D]
  out = np.asarray(block.apply(_draw(block, base), jnp.concatenate([base, base + bump]), deterministic=True))
  moved = np.abs(out[1:] - out[:1]).max(-1)  # [N,T,H,W]
  shift = (1, 1, 1) if shifted else (0, 0, 0)
  coords = list(np.ndindex(*RESOLUTION))
  for p, cp in enumerate(coords):
    for cq in coords:
      if _displaced(cp, shift) == _displaced(cq, shift):
        assert moved[p][cq] > 1e-3, (cp, cq)
      else:
        assert moved[p][cq] < 1e-6, (cp, cq)


# --- The model ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(video_swin.MODELS))
def test_parameter_counts_are_pinned_and_match_the_paper_and_the_official_readme(name):
  model = video_swin.MODELS[name](num_classes=400)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 2, 32, 32, 3)), train=False))
  count = int(sum(np.prod(a.shape) for a in jax.tree.leaves(shapes["params"])))
  assert count == PARAM_COUNTS[name]
  assert round(count / 1e6) == README_MILLIONS[name]
  hundredths = round(count / 1e4)  # 2816, 4982, 8805
  assert (hundredths + 5) // 10 == round(PAPER_MILLIONS[name] * 10)


def test_every_named_variant_has_a_pinned_count():
  assert set(PARAM_COUNTS) == set(video_swin.MODELS) == set(PAPER_MILLIONS) == set(README_MILLIONS)


def test_parameter_layout_and_output_shapes():
  model = video_swin.VideoSwin(**TINY)
  x = jax.ShapeDtypeStruct((B, T, H, W, C), jnp.float32)
  params = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)["params"]
  assert set(params) == {"embedding", "embedding_norm", "stage_0", "stage_1", "norm", "head"}
  assert params["embedding"]["kernel"].shape == (2, 4, 4, C, 16)
  assert set(params["stage_1"]) == {"downsample", "block_0", "block_1"}
  assert params["stage_1"]["downsample"]["reduction"]["kernel"].shape == (64, 32)
  assert set(params["stage_1"]["block_1"]) == {"norm1", "rel_pos", "attn", "norm2", "mlp"}
  assert params["stage_1"]["block_1"]["rel_pos"]["relative_position_bias_table"].shape == (3 * 5 * 5, 2)
  logits = jax.eval_shape(lambda p, x: model.apply({"params": p}, x, train=False), params, x)
  assert logits.shape == (B, K) and logits.dtype == jnp.float32
  headless = {k: v for k, v in params.items() if k != "head"}
  features = jax.eval_shape(
      lambda p, x: video_swin.VideoSwin(**dict(TINY, num_classes=0)).apply({"params": p}, x, train=False), headless, x)
  assert features.shape == (B, 32)


def test_bf16_compute_runs_in_bf16_and_logits_are_float32():
  model = video_swin.VideoSwin(**TINY, dtype=jnp.bfloat16)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), X, train=False))
  logits, state = jax.eval_shape(lambda v: model.apply(v, X, train=False, capture_intermediates=True,
                                                       mutable=["intermediates"]), variables)
  assert logits.dtype == jnp.float32
  inter = state["intermediates"]
  assert inter["embedding"]["__call__"][0].dtype == jnp.bfloat16
  assert inter["stage_0"]["block_1"]["__call__"][0].dtype == jnp.bfloat16
  assert inter["stage_1"]["downsample"]["__call__"][0].dtype == jnp.bfloat16
  assert inter["stage_1"]["block_0"]["attn"]["__call__"][0].dtype == jnp.bfloat16
  assert jax.tree.leaves(variables["params"])[0].dtype == jnp.float32


def test_stochastic_depth_grows_linearly_over_all_blocks():
  seen = []

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, swin.SwinBlock) and context.method_name == "__call__":
      seen.append(context.module.drop_path_rate)
    return next_fun(*args, **kwargs)

  model = video_swin.VideoSwin(**dict(TINY, depths=(2, 3)), stochastic_depth_rate=0.4)
  with nn.intercept_methods(record):
    jax.eval_shape(lambda: model.init(jax.random.key(0), X, train=False))
  np.testing.assert_allclose(seen, [0.0, 0.1, 0.2, 0.3, 0.4])


def test_bad_input_raises_naming_the_sizes():
  init = lambda model, shape: jax.eval_shape(  # noqa: E731
      lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))
  model = video_swin.VideoSwin(**TINY)
  with pytest.raises(ValueError, match=r"clip size \(5, 20, 28\) \(T, H, W\) is not divisible by patch size "
                                       r"\(2, 4, 4\)"):
    init(model, (1, 5, 20, 28, C))
  with pytest.raises(ValueError, match=r"clip size \(6, 18, 28\) .* not divisible"):
    init(model, (1, 6, 18, 28, C))
  with pytest.raises(ValueError, match=r"clip size \(6, 20, 30\) .* not divisible"):
    init(model, (1, 6, 20, 30, C))
  with pytest.raises(ValueError, match=r"VideoSwin expects clips \[B,T,H,W,5\]; got shape \(1, 6, 20, 28, 3\)"):
    init(model, (1, 6, 20, 28, 3))
  with pytest.raises(ValueError, match=r"VideoSwin expects clips \[B,T,H,W,5\]; got shape \(1, 20, 28, 5\)"):
    init(model, (1, 20, 28, C))
  with pytest.raises(ValueError, match=r"depths \(2, 2\) and num_heads \(1, 2, 4\)"):
    init(video_swin.VideoSwin(**dict(TINY, num_heads=(1, 2, 4))), (1, 6, 20, 28, C))
  with pytest.raises(ValueError, match=r"window_size must be three positive ints \(T, H, W\); got \(3, 3\)"):
    init(video_swin.VideoSwin(**dict(TINY, window_size=(3, 3))), (1, 6, 20, 28, C))
  with pytest.raises(ValueError, match=r"patch_size must be three positive ints"):
    init(video_swin.VideoSwin(**dict(TINY, patch_size=(4, 4))), (1, 6, 20, 28, C))
  with pytest.raises(ValueError, match="window_padding must be 'torchvision' or 'masked'; got 'timm'"):
    init(video_swin.VideoSwin(**TINY, window_padding="timm"), (1, 6, 20, 28, C))

"""Swin: window and shift helpers, the shifted-window mask (information flow and a brute-force reference block),
relative positions, patch-merging order, parameter counts, dtypes, stochastic depth, bad input.

Equality with timm itself is in tests/checkpoints/test_timm_swin.py.
"""
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_video.models import swin

# name -> parameter count at 224 x 224 (384 for *_w12), 1000 classes: timm 1.0.31's counts for its
# swin_{tiny,small,base,large}_patch4_window{7_224,12_384} (tests/checkpoints/test_timm_swin.py rebuilds them).
PARAM_COUNTS = {
    "swin_t": 28_288_354,
    "swin_s": 49_606_258,
    "swin_b": 87_768_224,
    "swin_l": 196_532_476,
    "swin_b_w12": 87_903_584,
    "swin_l_w12": 196_735_516,
}
# Published figures in millions: the official model zoo (microsoft/Swin-Transformer README, the paper's Table 1
# sizes; as mirrored in PaddleClas's SwinTransformer docs): T 28, S 50, B 88, B-384 88, L 197, L-384 197.
PAPER_MILLIONS = {"swin_t": 28, "swin_s": 50, "swin_b": 88, "swin_l": 197, "swin_b_w12": 88, "swin_l_w12": 197}
# With one decimal, as timm's model cards give them ("Params (M)"): T 28.3, S 49.6, B 87.8.
ZOO_MILLIONS = {"swin_t": 28.3, "swin_s": 49.6, "swin_b": 87.8}

TINY = dict(num_classes=5, width=16, depths=(2, 2), num_heads=(1, 2), window_size=3, mlp_ratio=2.0)
D, HEADS, M = 8, 2, 3  # Block tests: width, heads, window.


def _random_variables(module, *args, seed=0, **kwargs):
  """Random variables without `init`'s PRNG compiles: LayerNorm scales U(0.5, 1.5), everything else N(0, 0.5^2)
  (kernels N(0, 1/fan_in))."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(functools.partial(module.init, **kwargs), jax.random.key(0), *args)

  def draw(path, leaf):
    name = path[-1].key
    if name == "scale":
      return jnp.asarray(rng.uniform(0.5, 1.5, leaf.shape), leaf.dtype)
    std = np.prod(leaf.shape[:-1]) ** -0.5 if name == "kernel" and leaf.ndim == 2 else 0.5
    if name == "kernel" and leaf.ndim == 3:  # attention kernels [D,h,d] / [h,d,D]
      std = (leaf.shape[0] if path[-2].key != "out" else leaf.shape[0] * leaf.shape[1]) ** -0.5
    return jnp.asarray(rng.normal(0, std, leaf.shape), leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def _block(mode, shifted=True, sow=False):
  return swin.SwinBlock(num_heads=HEADS, window_size=(M, M), shifted=shifted, window_padding=mode,
                        sow_attention_weights=sow)


# --- Windows, shifts, merging ------------------------------------------------------------------------------------


def test_merge_2x2_order_is_the_official_slicing():
  x = np.random.default_rng(2).normal(size=(2, 4, 6, 3))
  official = np.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
  np.testing.assert_array_equal(swin.merge_2x2(x), official)


# --- The shifted-window mask --------------------------------------------------------------------------------------


def _displaced_window(y, x, shift=(M // 2, M // 2)):
  """The paper's shifted partition: windows of M x M displaced by `shift` from the top left."""
  return (y - shift[0]) // M, (x - shift[1]) // M


def _frame_coordinates(resolution, mode, shift):
  """For each window (row-major over the padded grid) and token in it: its (y, x) in the unshifted, unpadded map,
  or None for padding, written out from the definitions of the two data paths (not via the module's helpers)."""
  padded = [-(-r // M) * M for r in resolution]
  out = []
  for gy in range(padded[0] // M):
    for gx in range(padded[1] // M):
      tokens = []
      for n in range(M * M):
        iy, ix = gy * M + n // M, gx * M + n % M
        if mode == "masked":  # pad, then roll: position i holds padded coordinate (i + s) mod P
          y, x = (iy + shift[0]) % padded[0], (ix + shift[1]) % padded[1]
          tokens.append((y, x) if y < resolution[0] and x < resolution[1] else None)
        else:  # roll, then pad: position i < S holds coordinate (i + s) mod S
          real = iy < resolution[0] and ix < resolution[1]
          tokens.append(((iy + shift[0]) % resolution[0], (ix + shift[1]) % resolution[1]) if real else None)
      out.append(tokens)
  return out


@functools.cache
def _sown_block(mode, resolution, shifted=True):
  block = _block(mode, shifted, sow=True)
  x = jax.random.normal(jax.random.key(3), (2, *resolution, D))
  variables = _random_variables(block, x, deterministic=True)
  out, state = block.apply(variables, x, deterministic=True, mutable=["intermediates"])
  weights = np.asarray(state["intermediates"]["attn"]["attention_weights"][0])  # [B*nW,h,N,N]
  return variables, np.asarray(x), np.asarray(out), weights


@pytest.mark.parametrize("mode, resolution", [("masked", (5, 7)), ("timm", (6, 9)), ("masked", (6, 9))])
def test_attention_weights_across_shifted_window_parts_are_exactly_zero(mode, resolution):
  _, _, _, weights = _sown_block(mode, resolution)
  frames = _frame_coordinates(resolution, mode, (1, 1))
  weights = weights.reshape(2, len(frames), HEADS, M * M, M * M)
  for w, tokens in enumerate(frames):
    for q, cq in enumerate(tokens):
      for k, ck in enumerate(tokens):
        if cq is None:
          continue  # padding queries are cropped
        allowed = ck is not None and _displaced_window(*cq) == _displaced_window(*ck)
        if allowed:
          assert np.all(weights[:, w, :, q, k] > 0), (w, cq, ck)
        else:
          assert np.all(weights[:, w, :, q, k] == 0.0), (w, cq, ck)


def test_timm_padding_mixes_the_wrapped_tokens_with_the_far_end_of_the_map():
  """The documented quirk of timm 1.0.31 (roll, then pad, then mask on the padded map): at a padded size some
  attention between different displaced windows is nonzero, and every such pair has a wrapped-around token."""
  resolution = (5, 7)
  _, _, _, weights = _sown_block("timm", resolution)
  frames = _frame_coordinates(resolution, "timm", (1, 1))
  weights = weights.reshape(2, len(frames), HEADS, M * M, M * M)
  leaks = []
  for w, tokens in enumerate(frames):
    for q, cq in enumerate(tokens):
      for k, ck in enumerate(tokens):
        if cq and ck and _displaced_window(*cq) != _displaced_window(*ck) and np.any(weights[:, w, :, q, k] > 0):
          leaks.append((cq, ck))
  assert leaks
  assert all(min(cq) < 1 or min(ck) < 1 for cq, ck in leaks)  # a token of row 0 or column 0 (shift 1)


def test_shifted_block_information_flow_stays_inside_the_displaced_windows():
  """Perturb one token at a time (a random vector: a constant one would vanish in the LayerNorm): exactly the
  outputs of its displaced window move (padded size, masked mode)."""
  resolution = (5, 7)
  block = _block("masked")
  base = jax.random.normal(jax.random.key(4), (1, *resolution, D))
  n = np.prod(resolution)
  bump = 3.0 * np.eye(n).reshape(n, *resolution, 1) * np.random.default_rng(5).normal(size=D)  # [N,H,W,D]
  x = jnp.concatenate([base, base + bump], axis=0)  # [1+N,H,W,D]
  variables = _random_variables(block, base, deterministic=True)
  out = np.asarray(block.apply(variables, x, deterministic=True))
  moved = np.abs(out[1:] - out[:1]).max(-1)  # [N,H,W]
  coords = list(np.ndindex(*resolution))
  for p, cp in enumerate(coords):
    for cq in coords:
      if _displaced_window(*cp) == _displaced_window(*cq):
        assert moved[p][cq] > 1e-3, (cp, cq)
      else:
        assert moved[p][cq] < 1e-6, (cp, cq)


def _gelu(x):
  return 0.5 * x * (1 + np.vectorize(math.erf)(x / np.sqrt(2)))  # exact GELU, as timm and MlpBlock


def _layer_norm(x, p):
  mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + 1e-5) * p["scale"] + p["bias"]


def _reference_block(params, x, shift):
  """One block written token by token: each token attends to the tokens of its displaced window, with the bias of
  their offset from the (M x M) table; then the MLP. `[H,W,D] -> [H,W,D]`, numpy float64."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  a = p["attn"]
  y = _layer_norm(x, p["norm1"])
  q = np.einsum("yxd,dhe->yxhe", y, a["query"]["kernel"]) + a["query"]["bias"]
  k = np.einsum("yxd,dhe->yxhe", y, a["key"]["kernel"]) + a["key"]["bias"]
  v = np.einsum("yxd,dhe->yxhe", y, a["value"]["kernel"]) + a["value"]["bias"]
  table = p["rel_pos"]["relative_position_bias_table"]
  h, w = x.shape[:2]
  out = np.zeros_like(q)
  for cq in np.ndindex(h, w):
    keys = [ck for ck in np.ndindex(h, w) if _displaced_window(*cq, shift) == _displaced_window(*ck, shift)]
    bias = np.stack([table[(cq[0] - ck[0] + M - 1) * (2 * M - 1) + (cq[1] - ck[1] + M - 1)] for ck in keys])
    logits = np.einsum("he,khe->kh", q[cq], np.stack([k[ck] for ck in keys])) / np.sqrt(q.shape[-1]) + bias
    weights = np.exp(logits - logits.max(0)) / np.exp(logits - logits.max(0)).sum(0)  # [keys,h]
    out[cq] = np.einsum("kh,khe->he", weights, np.stack([v[ck] for ck in keys]))
  x = x + np.einsum("yxhe,hed->yxd", out, a["out"]["kernel"]) + a["out"]["bias"]
  mlp = p["mlp"]
  y = _gelu(_layer_norm(x, p["norm2"]) @ mlp["Dense_0"]["kernel"] + mlp["Dense_0"]["bias"])
  return x + y @ mlp["Dense_1"]["kernel"] + mlp["Dense_1"]["bias"]


@pytest.mark.parametrize("shifted", [True, False])
def test_masked_padding_block_equals_a_token_by_token_reference(shifted):
  """At a padded size (5 x 7, window 3), "masked" is the paper's (shifted) windowing on the real tokens alone."""
  variables, x, out, _ = _sown_block("masked", (5, 7), shifted)
  shift = (1, 1) if shifted else (0, 0)
  for b in range(2):
    ref = _reference_block(variables["params"], x[b].astype(np.float64), shift)
    np.testing.assert_allclose(out[b], ref, rtol=1e-4, atol=1e-4)


# --- The model ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(swin.MODELS))
def test_parameter_counts_are_pinned_and_match_the_paper(name):
  size = 384 if name.endswith("_w12") else 224
  model = swin.MODELS[name](num_classes=1000)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False))
  count = int(sum(np.prod(a.shape) for a in jax.tree.leaves(shapes["params"])))
  assert count == PARAM_COUNTS[name]
  assert round(count / 1e6) == PAPER_MILLIONS[name]
  if name in ZOO_MILLIONS:
    assert round(count / 1e6, 1) == ZOO_MILLIONS[name]


def test_every_named_variant_has_a_pinned_count():
  assert set(PARAM_COUNTS) == set(swin.MODELS) == set(PAPER_MILLIONS)


def test_parameter_layout_and_non_square_output_shapes():
  model = swin.Swin(**TINY)
  x = jax.ShapeDtypeStruct((2, 20, 28, 3), jnp.float32)
  params = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)["params"]
  assert set(params) == {"embedding", "embedding_norm", "stage_0", "stage_1", "norm", "head"}
  assert set(params["stage_0"]) == {"block_0", "block_1"}
  assert set(params["stage_1"]) == {"downsample", "block_0", "block_1"}
  assert params["stage_1"]["downsample"]["reduction"]["kernel"].shape == (64, 32)
  assert set(params["stage_1"]["block_1"]) == {"norm1", "rel_pos", "attn", "norm2", "mlp"}
  assert params["stage_1"]["block_1"]["rel_pos"]["relative_position_bias_table"].shape == (25, 2)
  assert params["head"]["kernel"].shape == (32, 5)
  logits = jax.eval_shape(lambda p, x: model.apply({"params": p}, x, train=False), params, x)
  assert logits.shape == (2, 5) and logits.dtype == jnp.float32
  headless = {k: v for k, v in params.items() if k != "head"}
  features = jax.eval_shape(lambda p, x: swin.Swin(**dict(TINY, num_classes=0)).apply({"params": p}, x, train=False),
                            headless, x)
  assert features.shape == (2, 32)


def test_bf16_compute_runs_in_bf16_and_logits_are_float32():
  model = swin.Swin(**TINY, dtype=jnp.bfloat16)
  x = jnp.zeros((2, 20, 28, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  logits, state = jax.eval_shape(lambda v: model.apply(v, x, train=False, capture_intermediates=True,
                                                       mutable=["intermediates"]), variables)
  assert logits.dtype == jnp.float32
  inter = state["intermediates"]
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

  model = swin.Swin(**dict(TINY, depths=(2, 3)), stochastic_depth_rate=0.4)
  with nn.intercept_methods(record):
    jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 20, 28, 3)), train=False))
  np.testing.assert_allclose(seen, [0.0, 0.1, 0.2, 0.3, 0.4])


def test_bad_input_raises_naming_the_sizes():
  model = swin.Swin(**TINY)
  init = lambda m, shape: jax.eval_shape(  # noqa: E731
      lambda: m.init(jax.random.key(0), jnp.zeros(shape), train=False))
  with pytest.raises(ValueError, match=r"image size \(30, 32\) is not divisible by patch size 4"):
    init(model, (1, 30, 32, 3))
  with pytest.raises(ValueError, match=r"image size \(32, 34\) is not divisible by patch size 4"):
    init(model, (1, 32, 34, 3))
  with pytest.raises(ValueError, match=r"Swin expects images \[B,H,W,3\]; got shape \(1, 32, 32, 4\)"):
    init(model, (1, 32, 32, 4))
  with pytest.raises(ValueError, match=r"depths \(2, 2\) and num_heads \(1, 2, 4\)"):
    init(swin.Swin(**dict(TINY, num_heads=(1, 2, 4))), (1, 32, 32, 3))
  with pytest.raises(ValueError, match=r"window_size must be a positive int or \(M_h, M_w\); got \(2, 3, 3\)"):
    init(swin.Swin(**dict(TINY, window_size=(2, 3, 3))), (1, 32, 32, 3))
  with pytest.raises(ValueError, match="window_padding must be 'timm' or 'masked'; got 'zeros'"):
    init(swin.Swin(**TINY, window_padding="zeros"), (1, 32, 32, 3))

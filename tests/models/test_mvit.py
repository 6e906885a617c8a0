"""MViT and MViTv2 (vit_video.models.mvit, vit_video.layers.pooling_attention): what a pooled query sees (the pooling
windows, the attention and the block, perturbing one token at a time), parameter counts pinned, layout, dtypes,
stochastic depth, bad input.

Equality with torchvision itself (and its counts and block settings) is in tests/checkpoints/test_torchvision_mvit.py.
Tiny sizes, all different: a T=3 x H=4 x W=6 token map behind a class token, width D=8, 2 heads, B=2 clips of
6 x 24 x 40 pixels with C=5 channels.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.models.helpers import noise
from vit_video.layers import pooling_attention as pa
from vit_video.models import mvit

# name -> parameter count with 400 classes: torchvision 0.28's mvit_v1_b and mvit_v2_s exactly (its weights'
# meta["num_params"] and the models built on the meta device), and torchvision's MViT of the same blocks built for
# images (temporal_size 2: one temporal table row), tests/checkpoints/test_torchvision_mvit.py.
PARAM_COUNTS = {
    "mvit_v1_b": 36_610_672,
    "mvit_v2_s": 34_537_744,
    "mvit_v1_b_image": 36_610_000,
    "mvit_v2_s_image": 34_516_240,
}

THW, D, HEADS = (3, 4, 6), 8, 2
N = int(np.prod(THW))
B, C, K = 2, 5, 7
CLIP = (6, 24, 40)  # a 3 x 6 x 10 token map
TINY = dict(num_classes=K, width=8, input_size=CLIP, in_channels=C, num_heads=(1, 2), block_widths=(8, 16),
            kernel_q=((3, 3, 3),) * 2, stride_q=((1, 1, 1), (1, 2, 2)), kernel_kv=((3, 3, 3),) * 2,
            stride_kv=((1, 2, 2), (1, 1, 1)), relative_positions=True, residual_pool=True,
            project_after_attention=True)


def _draw(module, x, *static, seed=3, **kwargs):
  """Random variables for `module.init(key, x, *static, **kwargs)`: LayerNorm scales U(0.5, 1.5), kernels
  N(0, 1/fan_in), everything else N(0, 0.5^2)."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(lambda x: module.init(jax.random.key(0), x, *static, **kwargs), x)

  def draw(path, leaf):
    if path[-1].key == "scale":
      return jnp.asarray(rng.uniform(0.5, 1.5, leaf.shape), leaf.dtype)
    std = np.prod(leaf.shape[:-1]) ** -0.5 if path[-1].key == "kernel" else 0.5
    return jnp.asarray(rng.normal(0, std, leaf.shape), leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def compiled(f, *args):
  """`f(*args)`, jitted (op by op is slower) with XLA's cheap CPU pipeline: compiling, not running, is what these
  tiny models cost (about 2.5x less)."""
  options = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
  return jax.jit(f).lower(*args).compile(options)(*args)


def _apply(module, variables, x, **kwargs):
  """`module.apply(variables, x, THW, **kwargs)` -> (output, (T', H', W'))."""
  out, thw = compiled(lambda v, x: module.apply(v, x, THW, **kwargs), variables, x)
  return out, tuple(int(s) for s in thw)


def _covers(i, o, kernel, stride) -> bool:
  """Whether the pooling window of output position o (kernel k, stride s, padding k // 2) holds input position i."""
  return all(abs(ia - oa * s) <= k // 2 for ia, oa, k, s in zip(i, o, kernel, stride))


def _planted(base: jax.Array, scale: float = 3.0) -> jax.Array:
  """`[1,1+N,*E,d]` -> `[2+N,1+N,*E,d]`: the base, then one copy per token (the class token first) with a random
  vector added to that token alone (a constant one would vanish in a LayerNorm)."""
  n = base.shape[1]
  bump = np.random.default_rng(5).normal(size=base.shape[2:])
  planted = base + scale * np.eye(n).reshape(n, n, *([1] * (base.ndim - 2))) * bump  # [1+N,1+N,*E,d]
  return jnp.concatenate([base, planted])


def _moved(out: jax.Array) -> np.ndarray:
  """`[2+N,1+N',...]` -> `[1+N,1+N']` bool: which output tokens moved when each token was planted."""
  out = np.asarray(out, np.float64)
  diff = np.abs(out[1:] - out[:1])  # [1+N,1+N',...]
  return diff.reshape(*diff.shape[:2], -1).max(-1) > 1e-5


def _expected(out_thw, kernel, stride, every_output=None) -> np.ndarray:
  """`[1+N,1+N']`: planted token i moves output o iff o's window covers i, and the class token only its own output;
  with attention, the class token and the tokens in `every_output` (seen through the keys and values) move every
  output."""
  expect = np.zeros((1 + N, 1 + int(np.prod(out_thw))), bool)
  expect[0] = every_output is not None
  expect[0, 0] = True
  every_output = every_output or ()
  for p, i in enumerate(np.ndindex(*THW)):
    expect[1 + p, 0] = i in every_output
    for q, o in enumerate(np.ndindex(*out_thw)):
      expect[1 + p, 1 + q] = i in every_output or _covers(i, o, kernel, stride)
  return expect


# --- Pooling -------------------------------------------------------------------------------------------------------


def test_conv_pooling_moves_exactly_the_outputs_whose_window_covers_a_token():
  pool = pa.ConvPool((3, 3, 3), (2, 2, 2))
  base = noise((1, 1 + N, HEADS, D // HEADS), seed=1)
  out, thw = _apply(pool, _draw(pool, base, THW), _planted(base))
  assert thw == pa.pooled_size(THW, (3, 3, 3), (2, 2, 2)) == (2, 2, 3)
  np.testing.assert_array_equal(_moved(out), _expected(thw, (3, 3, 3), (2, 2, 2)))


def test_max_pooling_skip_moves_exactly_the_outputs_whose_window_covers_a_token():
  """Kernel s + 1 = 3 where the stride is 2, 1 where it is 1: a token raised by 10 in every channel becomes the
  max of each window that covers it."""
  base = noise((1, 1 + N, D), seed=2)
  planted = jnp.concatenate([base, base + 10.0 * np.eye(1 + N).reshape(1 + N, 1 + N, 1)])  # [2+N,1+N,D]
  out, thw = pa.max_pool_tokens(planted, THW, (1, 2, 2))
  assert thw == (3, 2, 3)
  np.testing.assert_array_equal(_moved(out), _expected(thw, (1, 3, 3), (1, 2, 2)))


# --- Attention and block: what a pooled query sees -----------------------------------------------------------------


KV_SEEN = tuple(i for i in np.ndindex(*THW) if i[1] % 2 == 0 and i[2] % 2 == 0)  # keys and values: every 2nd h, w


def test_pooled_query_sees_its_window_and_every_token_through_the_keys():
  """Queries pooled by 3 x 3 x 3 with stride 1 x 2 x 2; keys and values by 1 x 1 x 1 with stride 1 x 2 x 2, so a
  token at odd h or w is in no key or value: planting it moves exactly the pooled queries whose window covers it
  (and not the class token); a token that a key sees, and the class token, move every output: attention is global.
  MViTv2's attention (relative positions, residual pooling); MViT's is inside the MViT-style block below."""
  attn = pa.PoolingAttention(HEADS, D, (3, 3, 3), (1, 2, 2), (1, 1, 1), (1, 2, 2), residual_pool=True,
                             table_size=THW)
  base = noise((1, 1 + N, D), seed=3)
  variables = _draw(attn, base, THW, deterministic=True)
  assert variables["params"]["rel_pos_t"].shape == (5, D // HEADS)  # 2T - 1
  assert variables["params"]["rel_pos_h"].shape == variables["params"]["rel_pos_w"].shape == (5, D // HEADS)
  out, thw = _apply(attn, variables, _planted(base), deterministic=True)
  assert thw == (3, 2, 3) and out.shape == (2 + N, 1 + 18, D)
  np.testing.assert_array_equal(_moved(out), _expected(thw, (3, 3, 3), (1, 2, 2), KV_SEEN))


@pytest.mark.parametrize("v2", [False, True])
def test_block_with_query_stride_keeps_the_same_information_flow(v2):
  """The whole block (its max-pooled residual, 1 x 3 x 3, lies inside the query window; the MLP is per token),
  MViT-style (widening by `project` after the MLP) and MViTv2-style (before the attention's residual)."""
  block = mvit.MultiscaleBlock(HEADS, 12, (3, 3, 3), (1, 2, 2), (1, 1, 1), (1, 2, 2),
                               table_size=THW if v2 else None, residual_pool=v2, project_after_attention=v2)
  base = noise((1, 1 + N, D), seed=4)
  variables = _draw(block, base, THW, deterministic=True)
  assert variables["params"]["project"]["kernel"].shape == (D, 12)
  assert variables["params"]["mlp"]["Dense_0"]["kernel"].shape == ((12 if v2 else D), 4 * (12 if v2 else D))
  out, thw = _apply(block, variables, _planted(base), deterministic=True)
  assert thw == (3, 2, 3) and out.shape == (2 + N, 1 + 18, 12)
  np.testing.assert_array_equal(_moved(out), _expected(thw, (3, 3, 3), (1, 2, 2), KV_SEEN))


def test_relative_offsets_on_equal_grids_are_plain_offsets():
  """(torchvision's reading of other sizes, and its table resampling: tests/checkpoints/test_torchvision_mvit.py.)"""
  np.testing.assert_array_equal(pa.relative_offsets(4, 4), np.arange(4)[:, None] - np.arange(4)[None, :] + 3)
  assert pa.relative_offsets(3, 5).max() < 2 * 5 - 1 and pa.relative_offsets(5, 3).min() >= 0


# --- The model -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(mvit.MODELS))
def test_parameter_counts_are_pinned(name):
  model = mvit.MODELS[name](num_classes=400)
  size = model.input_size[1:] if name.endswith("_image") else model.input_size
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *size, 3)), train=False))
  assert sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes["params"])) == PARAM_COUNTS[name]


def test_every_named_variant_has_a_pinned_count():
  assert set(PARAM_COUNTS) == set(mvit.MODELS)


@pytest.mark.parametrize("v2", [False, True])
def test_parameter_layout_and_output_shapes(v2):
  model = mvit.MViT(**dict(TINY, relative_positions=v2))
  x = jax.ShapeDtypeStruct((B, *CLIP, C), jnp.float32)
  params = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)["params"]
  absolute = {"pos_embedding_spatial", "pos_embedding_temporal", "pos_embedding_cls"}
  assert set(params) == {"embedding", "cls", "block_0", "block_1", "norm", "head"} | (set() if v2 else absolute)
  assert params["embedding"]["kernel"].shape == (3, 7, 7, C, 8)
  if not v2:
    assert params["pos_embedding_spatial"].shape == (6 * 10, 8) and params["pos_embedding_temporal"].shape == (3, 8)
  attn = params["block_1"]["attn"]
  assert set(attn) == {"query", "key", "value", "out", "pool_q", "pool_k", "pool_v"} | (
      {"rel_pos_t", "rel_pos_h", "rel_pos_w"} if v2 else set())
  assert attn["pool_q"]["conv"]["kernel"].shape == (3, 3, 3, 1, 8)
  if v2:  # block 1: map 3 x 6 x 10 -> queries 3 x 3 x 5, keys 3 x 6 x 10 (torchvision: max(H, W) = 10)
    assert attn["rel_pos_t"].shape == (5, 8) and attn["rel_pos_h"].shape == attn["rel_pos_w"].shape == (19, 8)
  logits = jax.eval_shape(lambda p, x: model.apply({"params": p}, x, train=False), params, x)
  assert logits.shape == (B, K) and logits.dtype == jnp.float32
  headless = {k: v for k, v in params.items() if k != "head"}
  features = jax.eval_shape(
      lambda p, x: mvit.MViT(**dict(TINY, num_classes=0, relative_positions=v2)).apply({"params": p}, x, train=False),
      headless, x)
  assert features.shape == (B, 16) and features.dtype == jnp.float32


def test_bf16_compute_runs_in_bf16_and_logits_are_float32():
  model = mvit.MViT(**TINY, dtype=jnp.bfloat16)
  x = jax.ShapeDtypeStruct((B, *CLIP, C), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  logits, state = jax.eval_shape(lambda v, x: model.apply(v, x, train=False, capture_intermediates=True,
                                                          mutable=["intermediates"]), variables, x)
  assert logits.dtype == jnp.float32
  inter = state["intermediates"]
  assert inter["embedding"]["__call__"][0].dtype == jnp.bfloat16
  block = inter["block_1"]
  for out in (block["attn"]["pool_q"]["norm"], block["attn"]["query"], block["attn"]["out"], block["mlp"]):
    assert out["__call__"][0].dtype == jnp.bfloat16
  assert jax.tree.leaves(variables["params"])[0].dtype == jnp.float32


def test_stochastic_depth_grows_linearly_over_all_blocks():
  seen = []

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, mvit.MultiscaleBlock) and context.method_name == "__call__":
      seen.append(context.module.drop_path_rate)
    return next_fun(*args, **kwargs)

  model = mvit.MViT(**dict(TINY, stochastic_depth_rate=0.4))
  with nn.intercept_methods(record):
    jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *CLIP, C)), train=False))
  np.testing.assert_allclose(seen, [0.0, 0.4])


def test_bad_input_raises_naming_the_sizes():
  init = lambda model, shape: jax.eval_shape(  # noqa: E731
      lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))
  with pytest.raises(ValueError, match=r"MViT expects clips \[B,T,H,W,5\]; got shape \(1, 6, 24, 40, 3\)"):
    init(mvit.MViT(**TINY), (1, *CLIP, 3))
  with pytest.raises(ValueError, match=r"MViT expects clips \[B,T,H,W,5\]; got shape \(1, 24, 40, 5\)"):
    init(mvit.MViT(**TINY), (1, 24, 40, C))
  with pytest.raises(ValueError, match=r"clip size \(4, 24, 40\) \(T, H, W\) gives a \(2, 6, 10\) token map, but "
                                       r"the position embedding is for \(3, 6, 10\) \(input_size \(6, 24, 40\)\)"):
    init(mvit.MViT(**dict(TINY, relative_positions=False)), (1, 4, 24, 40, C))
  init(mvit.MViT(**TINY), (1, 4, 24, 40, C))  # MViTv2 takes other sizes (its tables resampled)
  with pytest.raises(ValueError, match=r"one entry per block; got lengths \[2, 2, 2, 1, 2, 2\]"):
    init(mvit.MViT(**dict(TINY, stride_q=((1, 1, 1),))), (1, *CLIP, C))
  image = mvit.MODELS["mvit_v2_s_image"]
  with pytest.raises(ValueError, match=r"MViTImage expects images \[B,H,W,3\]; got shape \(1, 1, 32, 32, 3\)"):
    init(image(num_classes=K), (1, 1, 32, 32, 3))
  with pytest.raises(ValueError, match=r"MViTImage expects images \[B,H,W,3\]; got shape \(1, 32, 32, 4\)"):
    init(image(num_classes=K), (1, 32, 32, 4))
  with pytest.raises(ValueError, match=r"an image model's input_size is \(1, H, W\); got \(16, 224, 224\)"):
    init(image(num_classes=K, input_size=(16, 224, 224)), (1, 32, 32, 3))

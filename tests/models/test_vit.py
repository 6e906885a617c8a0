"""ViT: scan equivalence, dtypes, pooling, stochastic depth, bad input, every TransformerOptions attribute reaching the
blocks (of ViT, ViViT and TimeSformer). Tiny sizes, all different."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_video.models import timesformer, vit, vivit, vivit_factorised

TINY = dict(num_classes=5, patch_size=4, width=12, depth=3, mlp_dim=20, num_heads=2)
X = jax.random.normal(jax.random.key(0), (2, 8, 12, 3))  # 2 x 3 patches


def _init(model, x=X):
  return model.init({"params": jax.random.key(1), "dropout": jax.random.key(2)}, x, train=False)


def _shapes(model, x=X):
  """What `_init` returns, as ShapeDtypeStructs (traced, nothing computed)."""
  return jax.eval_shape(lambda x: _init(model, x), x)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _apply(model, variables, x, train, dropout_rng=None):
  """model.apply jitted: one compile per model and input instead of one per op."""
  return model.apply(variables, x, train=train, rngs=None if dropout_rng is None else {"dropout": dropout_rng})


def _randomise(variables, seed=3):
  leaves, treedef = jax.tree.flatten(variables)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(treedef, [0.3 * jax.random.normal(k, a.shape, a.dtype) for k, a in zip(keys, leaves)])


def test_parameter_layout_matches_vit_jax_names():
  params = _shapes(vit.ViT(**TINY, representation_size=7))["params"]
  assert set(params) == {"embedding", "cls", "Transformer", "pre_logits", "head"}
  assert params["embedding"]["kernel"].shape == (4, 4, 3, 12)
  assert params["Transformer"]["posembed_input"]["pos_embedding"].shape == (1, 1 + 6, 12)
  assert set(params["Transformer"]) == {"posembed_input", "encoder_norm", "encoderblock_0", "encoderblock_1",
                                        "encoderblock_2"}
  assert set(params["Transformer"]["encoderblock_0"]) == {"LayerNorm_0", "MultiHeadDotProductAttention_1",
                                                          "LayerNorm_2", "MlpBlock_3"}
  assert params["head"]["kernel"].shape == (7, 5)


def test_scanned_and_unscanned_give_identical_outputs_on_converted_params():
  plain, scanned = vit.ViT(**TINY), vit.ViT(**TINY, scan=True)
  variables = _randomise(_init(plain))
  converted = {"params": vit.unscanned_to_scan(variables["params"])}
  assert converted["params"]["Transformer"]["encoderblock"]["LayerNorm_0"]["scale"].shape == (3, 12)
  assert jax.tree.structure(converted) == jax.tree.structure(_shapes(scanned))
  out = _apply(plain, variables, X, False)
  np.testing.assert_allclose(_apply(scanned, converted, X, False), out, rtol=1e-5, atol=1e-5)
  back = vit.scan_to_unscanned(converted["params"])
  jax.tree.map(np.testing.assert_array_equal, back, variables["params"])


def test_scanned_and_unscanned_agree_in_training_with_stochastic_depth_off():
  kw = dict(TINY, dropout_rate=0.0, stochastic_depth_rate=0.0)
  plain, scanned = vit.ViT(**kw), vit.ViT(**kw, scan=True, remat=True)
  variables = _randomise(_init(plain))
  converted = {"params": vit.unscanned_to_scan(variables["params"])}
  loss = lambda m, v: m.apply(v, X, train=True, rngs={"dropout": jax.random.key(0)}).sum()  # noqa: E731
  g_plain = jax.jit(jax.grad(lambda v: loss(plain, v)))(variables)  # jitted: one compile, not one per op
  g_scan = jax.jit(jax.grad(lambda v: loss(scanned, v)))(converted)
  np.testing.assert_allclose(vit.unscanned_to_scan(g_plain["params"])["Transformer"]["encoderblock"]["MlpBlock_3"]
                             ["Dense_0"]["kernel"], g_scan["params"]["Transformer"]["encoderblock"]["MlpBlock_3"]
                             ["Dense_0"]["kernel"], rtol=1e-4, atol=1e-6)


def test_bf16_compute_runs_in_bf16_and_logits_are_float32():
  model = vit.ViT(**TINY, dtype=jnp.bfloat16)
  variables = _randomise(_init(model))
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(variables))
  logits, state = model.apply(variables, X, train=False, capture_intermediates=True, mutable=["intermediates"])
  assert logits.dtype == jnp.float32
  inter = state["intermediates"]
  assert inter["embedding"]["__call__"][0].dtype == jnp.bfloat16
  block = inter["Transformer"]["encoderblock_1"]
  assert block["MultiHeadDotProductAttention_1"]["__call__"][0].dtype == jnp.bfloat16
  assert block["MlpBlock_3"]["Dense_0"]["__call__"][0].dtype == jnp.bfloat16


def test_gap_pooling_has_no_class_token_and_features_mode():
  model = vit.ViT(**dict(TINY, num_classes=0), pool="gap")
  variables = _init(model)
  assert "cls" not in variables["params"] and "head" not in variables["params"]
  feats = model.apply(variables, X, train=False)
  assert feats.shape == (2, 12) and feats.dtype == jnp.float32


def test_token_pool_output_depends_on_every_patch():
  model = vit.ViT(**TINY)
  variables = _randomise(_init(model))
  base = model.apply(variables, X, train=False)
  for (i, j) in [(0, 0), (5, 11), (4, 2)]:
    moved = model.apply(variables, X.at[0, i, j].add(1.0), train=False) - base
    assert np.abs(moved[0]).sum() > 0 and np.all(moved[1] == 0)  # examples never mix


def test_dropout_and_stochastic_depth_act_only_in_training():
  model = vit.ViT(**TINY, dropout_rate=0.1, stochastic_depth_rate=0.5)
  variables = _randomise(_init(model))
  a = model.apply(variables, X, train=False)
  np.testing.assert_array_equal(a, model.apply(variables, X, train=False))
  t = [model.apply(variables, X, train=True, rngs={"dropout": jax.random.key(s)}) for s in (1, 2)]
  assert not np.allclose(t[0], t[1])


def test_sown_attention_weights_with_scan():
  model = vit.ViT(**TINY, scan=True, sow_attention_weights=True)
  variables = _init(model)
  _, state = model.apply(variables, X, train=False, mutable=["intermediates"])
  (w,) = state["intermediates"]["Transformer"]["encoderblock"]["MultiHeadDotProductAttention_1"]["attention_weights"]
  assert w.shape == (3, 2, 2, 7, 7)  # [depth, B, h, N, N]
  np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("shape, message", [
    ((2, 8, 10, 3), r"image size \(8, 10\) is not divisible by patch size 4"),
    ((2, 8, 12), r"images \[B,H,W,C\]"),
    ((2, 8, 12, 4), "expects 3 input channels"),
])
def test_bad_input_raises_value_error(shape, message):
  with pytest.raises(ValueError, match=message):
    _init(vit.ViT(**TINY), jnp.ones(shape))


def test_any_image_size_divisible_by_patch():
  model = vit.ViT(**TINY)
  for hw in [(4, 20), (16, 8)]:
    v = _shapes(model, jnp.ones((1, *hw, 3)))
    assert v["params"]["Transformer"]["posembed_input"]["pos_embedding"].shape[1] == 1 + hw[0] * hw[1] // 16


@pytest.mark.parametrize("scan", [False, True])
def test_stochastic_depth_alone_changes_training_outputs(scan):
  model = vit.ViT(**TINY, dropout_rate=0.0, stochastic_depth_rate=0.9, scan=scan)
  variables = _randomise(_init(model))
  outs = [_apply(model, variables, X, True, jax.random.key(s)) for s in range(4)]
  assert any(not np.allclose(outs[0], o) for o in outs[1:])  # some block was dropped for some example
  off = vit.ViT(**TINY, dropout_rate=0.0, stochastic_depth_rate=0.0, scan=scan,
                attention_implementation="einsum")  # "auto" would run fused at inference, einsum in training
  np.testing.assert_array_equal(_apply(off, variables, X, True, jax.random.key(0)), _apply(off, variables, X, False))


# A value other than the default for every TransformerOptions attribute; a new attribute fails the test until listed.
OPTIONS = dict(mlp_dim=20, num_heads=2, dropout_rate=0.1, attention_dropout_rate=0.2, stochastic_depth_rate=0.3,
               attention_implementation="chunked", sow_attention_weights=True, approximate_gelu=True, remat=True,
               remat_policy="dots_saveable", dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
BLOCKS = (vit.EncoderBlock, timesformer.TimeSformerBlock, vivit_factorised.FactorisedBlock)


@pytest.mark.parametrize("model, shape", [
    (vit.ViT(num_classes=5, patch_size=4, width=12, depth=2, **OPTIONS), (1, 8, 12, 3)),
    *[(vivit.ViViT(num_classes=5, patch_size=4, width=12, depth=2, temporal_depth=1, tubelet_depth=2, variant=v,
                   **OPTIONS), (1, 4, 8, 12, 3)) for v in vivit.VARIANT_NAMES],
    (timesformer.TimeSformer(num_classes=5, patch_size=4, width=12, depth=2, num_frames=3, **OPTIONS),
     (1, 3, 8, 12, 3)),
])
def test_every_transformer_option_reaches_the_encoders_and_blocks(model, shape):
  assert set(OPTIONS) == set(vit.TRANSFORMER_OPTIONS), "give every TransformerOptions attribute a value in OPTIONS"
  built = []

  def record(next_fun, args, kwargs, context):
    built.append(context.module)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), jax.ShapeDtypeStruct(shape, jnp.float32))
  encoders = [m for m in built if isinstance(m, vit.TransformerOptions) and type(m) is not type(model)]
  blocks = [m for m in built if isinstance(m, BLOCKS)]
  assert encoders and blocks, (encoders, blocks)
  for encoder in encoders:
    assert {k: getattr(encoder, k) for k in OPTIONS} == OPTIONS, type(encoder).__name__
  block_options = {k: v for k, v in OPTIONS.items() if k not in vit.ENCODER_ONLY_OPTIONS}
  for block in blocks:
    assert {k: getattr(block, k) for k in block_options} == block_options, type(block).__name__

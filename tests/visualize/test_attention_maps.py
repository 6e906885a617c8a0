"""attention_maps: sown weights for every transformer family, rollout, attention distance, Figure 7's embeddings."""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.visualize import tiny
from vit_video.layers import windows
from vit_video.models import mvit, swin, vit, vtn
from vit_video.visualize import attention_maps as am


def _softmax_rows(key, shape):
  return jax.nn.softmax(jax.random.normal(key, shape) * 2.0, axis=-1)


def _random_variables(model, *inputs, scale: float = 0.5):
  """Random normal variables of the model's shapes, without running (or compiling) its init."""
  rng = np.random.default_rng(0)
  abstract = tiny.abstract_variables(model, inputs)
  return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape) * scale, s.dtype), abstract)


def _weights_and_outputs(model, variables, x):
  """(attention_weights, the model's logits, the sowing model's logits), compiled as one program."""
  sowing = model.clone(sow_attention_weights=True)
  return jax.jit(lambda v, x: (am.attention_weights(model, v, x), model.apply(v, x, train=False),
                               sowing.apply(v, x, train=False, mutable=["intermediates"])[0]))(variables, x)


def _has_attention(model) -> bool:
  return "sow_attention_weights" in {f.name for f in dataclasses.fields(model)}


@pytest.mark.parametrize("name", sorted(tiny.FAMILIES))
def test_every_family_sows_its_attention_or_refuses(name):
  """Through jax.eval_shape: every transformer family gives [B',h,Nq,Nk] weights, the CNNs a ValueError."""
  model, inputs = tiny.tiny(name)
  variables = tiny.abstract_variables(model, inputs)
  fn = lambda v, *x: am.attention_weights(model, v, *x)  # noqa: E731
  if not _has_attention(model):
    with pytest.raises(ValueError, match="no attention weights"):
      jax.eval_shape(fn, variables, *inputs)
    return
  weights = jax.eval_shape(fn, variables, *inputs)
  assert weights, name
  for path, w in weights.items():
    assert w.ndim == 4 and w.dtype == jnp.float32, (name, path, w.shape)
    assert w.shape[0] % tiny.B == 0, (name, path, w.shape)


@pytest.mark.parametrize("name,overrides,expected", [
    ("vivit_b16x2_fe", dict(variant="st"),
     {"Transformer/encoderblock_0/MultiHeadDotProductAttention_1": (2, 12, 13, 13)}),
    ("vivit_b16x2_fe", dict(variant="fsa"),
     {"Transformer/encoderblock_0/MultiHeadDotProductAttention_1": (4, 12, 6, 6),
      "Transformer/encoderblock_0/MultiHeadDotProductAttention_time": (12, 12, 2, 2)}),
    ("vivit_b16x2_fe", dict(variant="fdp"), {
        "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/spatial_attention_weights": (4, 6, 6, 6),
        "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/temporal_attention_weights": (12, 6, 2, 2)}),
    ("timesformer_b16_axial", dict(attention="space"),
     {"Transformer/encoderblock_0/MultiHeadDotProductAttention_1": (6, 12, 7, 7)}),
    ("timesformer_b16_axial", dict(attention="joint"),
     {"Transformer/encoderblock_0/MultiHeadDotProductAttention_1": (2, 12, 19, 19)}),
    ("timesformer_b16_axial", dict(attention="divided"),
     {"Transformer/encoderblock_0/MultiHeadDotProductAttention_time": (12, 12, 3, 3),
      "Transformer/encoderblock_0/MultiHeadDotProductAttention_1": (6, 12, 7, 7)}),
], ids=["vivit_st", "vivit_fsa", "vivit_fdp", "timesformer_space", "timesformer_joint", "timesformer_divided"])
def test_every_vivit_and_timesformer_attention_is_sown_with_its_layout(name, overrides, expected):
  """B' and N per variant (the module docstring's table): clips of B=2, T=4 (ViViT: T'=2 tubelets) or 3, 2 x 3
  patches (S=6)."""
  model, inputs = tiny.tiny(name, **overrides)
  weights = jax.eval_shape(lambda v, *x: am.attention_weights(model, v, *x), tiny.abstract_variables(model, inputs),
                           *inputs)
  assert {k: tuple(w.shape) for k, w in weights.items()} == expected


def test_vit_weights_are_softmax_rows_in_layer_order_and_sowing_changes_nothing():
  model, inputs = tiny.tiny("vit_b8", depth=3, width=24, num_heads=3, mlp_dim=16, patch_size=4)
  x = jax.random.normal(jax.random.key(1), inputs[0].shape)
  variables = _random_variables(model, x)
  weights = am.attention_weights(model, variables, x)  # eager: the dict in run order
  assert list(weights) == [f"Transformer/encoderblock_{i}/MultiHeadDotProductAttention_1" for i in range(3)]
  n = 1 + (x.shape[1] // 4) * (x.shape[2] // 4)
  for w in weights.values():
    assert w.shape == (tiny.B, 3, n, n)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
  sowing = model.clone(sow_attention_weights=True)  # eager again: the same operations, already compiled
  einsum = model.clone(attention_implementation="einsum")  # the path sowing takes ("auto" runs fused here)
  out = sowing.apply(variables, x, train=False)
  np.testing.assert_array_equal(einsum.apply(variables, x, train=False), out)
  np.testing.assert_allclose(model.apply(variables, x, train=False), out, rtol=1e-5, atol=1e-5)


def test_a_scanned_vit_gives_the_unscanned_models_weights_per_layer():
  model, inputs = tiny.tiny("vit_b8", depth=3, width=24, num_heads=3, mlp_dim=16, patch_size=4, pool="gap")
  x = jax.random.normal(jax.random.key(1), inputs[0].shape)
  variables = _random_variables(model, x, scale=0.2)
  scanned = model.clone(scan=True)
  scanned_vars = {"params": vit.unscanned_to_scan(variables["params"])}
  a = jax.jit(lambda v, x: am.attention_weights(model, v, x))(variables, x)
  b = jax.jit(lambda v, x: am.attention_weights(scanned, v, x))(scanned_vars, x)
  assert sorted(a) == sorted(b) == sorted(f"Transformer/encoderblock_{i}/MultiHeadDotProductAttention_1"
                                          for i in range(3))
  for key in a:
    np.testing.assert_allclose(a[key], b[key], atol=1e-6)


def _tiny_mvit():
  blocks = {k: v[:3] for k, v in mvit.torchvision_blocks(v2=True).items()}
  blocks["stride_q"] = ((1, 1, 1), (1, 2, 2), (1, 1, 1))
  return mvit.MViT(num_classes=5, width=8, block_widths=(8, 16, 16), num_heads=(1, 2, 2),
                   **{k: v for k, v in blocks.items() if k not in ("num_heads", "block_widths")},
                   relative_positions=True, residual_pool=True, project_after_attention=True, input_size=(2, 24, 40))


def test_mvit_sows_softmax_rows_on_its_pooled_maps_without_changing_outputs():
  model = _tiny_mvit()
  x = jax.random.normal(jax.random.key(1), (2, 2, 24, 40, 3))
  variables = _random_variables(model, x, scale=0.2)
  weights, plain, sown = _weights_and_outputs(model, variables, x)
  assert sorted(weights) == ["block_0/attn", "block_1/attn", "block_2/attn"]
  # Token map 1 x 6 x 10 (stride 2 x 4 x 4). Block 0: keys pooled by 8 in space to 1 x 1 x 2; block 1 halves the
  # queries to 1 x 3 x 5 and pools its keys by 4 (1 x 2 x 3); block 2 pools the 3 x 5 map by 4 (1 x 1 x 2).
  assert [w.shape for w in weights.values()] == [(2, 1, 61, 3), (2, 2, 16, 7), (2, 2, 16, 3)]
  for w in weights.values():
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
    assert (w >= 0).all()
  np.testing.assert_allclose(plain, sown, atol=1e-5)
  with pytest.raises(ValueError, match="one N"):
    am.rollout(weights)
  maps = am.mvit_key_maps(model, weights, x.shape)
  assert [m.shape for m in maps.values()] == [(2, 1, 1, 1, 2), (2, 2, 1, 2, 3), (2, 2, 1, 1, 2)]
  np.testing.assert_allclose(maps["block_1/attn"].reshape(2, 2, -1), np.asarray(weights["block_1/attn"])[:, :, 0, 1:])


def test_vtn_sows_its_temporal_attention_within_longformers_window():
  model = vtn.VTN(num_classes=5, backbone="vit_ti16", backbone_overrides=dict(depth=1, width=12, num_heads=2,
                                                                               mlp_dim=8, patch_size=4),
                  width=8, temporal_depth=2, num_heads=2, mlp_dim=8, head_mlp_dim=8, attention_window=2)
  x = jax.random.normal(jax.random.key(1), (2, 5, 8, 12, 3))
  variables = _random_variables(model, x, scale=0.2)
  weights, plain, sown = _weights_and_outputs(model, variables, x)
  assert sorted(weights) == ["backbone/Transformer/encoderblock_0/MultiHeadDotProductAttention_1",
                           "block_0/attention", "block_1/attention"]
  assert weights["backbone/Transformer/encoderblock_0/MultiHeadDotProductAttention_1"].shape == (10, 2, 7, 7)
  allowed = np.asarray(vtn.sliding_window_mask(6, 2))[0, 0]
  for key in ("block_0/attention", "block_1/attention"):
    w = np.asarray(weights[key])
    assert w.shape == (2, 2, 6, 6)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
    assert (w[..., ~allowed] == 0).all()
  np.testing.assert_allclose(plain, sown, atol=1e-5)


def _displaced_window(spatial, window, shift):
  """Each token's window in the partition displaced by `shift` (the paper's), as one label per token."""
  coords = np.stack(np.meshgrid(*[np.arange(s) for s in spatial], indexing="ij"), -1).reshape(-1, len(spatial))
  return [tuple(v) for v in np.floor_divide(coords - np.asarray(shift), np.asarray(window))]


@pytest.mark.parametrize("spatial", [(4, 6), (5, 7)])  # a multiple of the window, and one the block pads
def test_swin_window_weights_on_the_map_stay_in_each_tokens_displaced_window(spatial):
  model = swin.Swin(num_classes=5, width=6, depths=(2, 1), num_heads=(3, 2), window_size=2, patch_size=2)
  x = jax.random.normal(jax.random.key(1), (2, 2 * spatial[0], 2 * spatial[1], 3))
  weights = jax.jit(lambda v, x: am.attention_weights(model, v, x))(_random_variables(model, x, scale=0.2), x)
  assert sorted(weights) == ["stage_0/block_0/attn", "stage_0/block_1/attn", "stage_1/block_0/attn"]
  on_maps = am.swin_dense_weights(model, weights, x.shape)
  half = tuple(-(-s // 2) for s in spatial)
  assert [(m, p) for _, m, p in on_maps.values()] == [(spatial, (2, 2))] * 2 + [(half, (4, 4))]
  dense, _, _ = on_maps["stage_1/block_0/attn"]
  assert dense.shape == (2, 2, math.prod(half), math.prod(half))
  np.testing.assert_allclose(dense.sum(-1), 1.0, atol=1e-5)
  n = math.prod(spatial)
  for shifted, key in zip((False, True), ("stage_0/block_0/attn", "stage_0/block_1/attn")):
    dense = am.window_weights_to_dense(weights[key], spatial, (2, 2), shifted)
    np.testing.assert_array_equal(dense, on_maps[key][0])
    assert dense.shape == (2, 3, n, n)
    np.testing.assert_allclose(dense.sum(-1), 1.0, atol=1e-5)  # "masked": real queries give padding nothing
    _, shift = windows.window_and_shift(spatial, (2, 2), shifted)
    label = _displaced_window(spatial, (2, 2), shift)
    same = np.array([[a == b for b in label] for a in label])
    assert (dense[..., ~same] == 0).all() and (dense[..., same] > 0).all()
  with pytest.raises(ValueError, match="are not"):
    am.window_weights_to_dense(weights["stage_0/block_0/attn"], (6, 6), (2, 2), False)


def test_rollout_rows_sum_to_one_and_identity_attention_rolls_out_to_the_identity():
  keys = jax.random.split(jax.random.key(0), 4)
  weights = [_softmax_rows(k, (2, 3, 5, 5)) for k in keys]
  for residual in (True, False):
    np.testing.assert_allclose(am.rollout(weights, residual=residual).sum(-1), 1.0, atol=1e-5)
  eye = jnp.broadcast_to(jnp.eye(5), (2, 3, 5, 5))
  np.testing.assert_allclose(am.rollout([eye] * 4), np.broadcast_to(np.eye(5), (2, 5, 5)), atol=1e-6)
  with pytest.raises(ValueError, match="one N"):
    am.rollout([weights[0], weights[1][..., :4, :4]])


def test_rollout_of_two_layers_by_hand():
  # Layer 1: two heads averaging to [[.5,.5],[0,1]]; layer 2: one head [[1,0],[.5,.5]].
  w1 = jnp.array([[[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [0.0, 1.0]]]])  # [1,2,2,2]
  w2 = jnp.array([[[[1.0, 0.0], [0.5, 0.5]]] * 2])  # [1,2,2,2], both heads equal
  a1 = (np.array([[0.5, 0.5], [0.0, 1.0]]) + np.eye(2)) / 2  # [[.75,.25],[0,1]]
  a2 = (np.array([[1.0, 0.0], [0.5, 0.5]]) + np.eye(2)) / 2  # [[1,0],[.25,.75]]
  expected = np.array([[0.75, 0.25], [0.1875, 0.8125]])
  np.testing.assert_allclose(a2 @ a1, expected)
  np.testing.assert_allclose(am.rollout([w1, w2])[0], expected, atol=1e-6)
  # A dict is taken in its layers' order even when its keys come back sorted as strings (encoderblock_10 < _2).
  named = {f"Transformer/encoderblock_{i}/att": w for i, w in ((10, w2), (2, w1))}
  np.testing.assert_allclose(am.rollout(named)[0], expected, atol=1e-6)


@pytest.mark.parametrize("n,pixels", [(5, 3.0), (6, 16.0)])
def test_uniform_attention_has_the_analytic_mean_distance_and_self_attention_none(n, pixels):
  uniform = jnp.full((2, 3, n, n), 1.0 / n)
  # Uniform over n cells of a line: E|i - j| = (n^2 - 1) / (3 n) cells.
  expected = pixels * (n * n - 1) / (3 * n)
  np.testing.assert_allclose(am.mean_attention_distance([uniform] * 2, (1, n), pixels), expected, rtol=1e-5)
  np.testing.assert_allclose(am.mean_attention_distance([uniform], (n,), pixels), expected, rtol=1e-5)
  eye = jnp.broadcast_to(jnp.eye(n), (2, 3, n, n))
  np.testing.assert_allclose(am.mean_attention_distance([eye], (n, 1), pixels), 0.0, atol=1e-6)


def test_mean_distance_drops_the_class_token_and_knows_a_2x2_grid():
  # On a 2 x 2 grid uniform attention sees itself (0), two neighbours (1) and the diagonal (sqrt 2).
  w = np.full((1, 2, 5, 5), 0.2)
  w[:, 1, 1:, 0] = 0.6  # head 1 gives most to the class token: renormalised away, the same distance
  w[:, 1, 1:, 1:] = 0.1
  d = am.mean_attention_distance([w], (2, 2), (3.0, 3.0))
  np.testing.assert_allclose(d, np.full((1, 2), 3.0 * (2 + math.sqrt(2)) / 4), rtol=1e-6)
  with pytest.raises(ValueError, match="do not fit the grid"):
    am.mean_attention_distance([w], (2, 3), 3.0)


def _params_with_pos(table, cls: bool):
  params = {"Transformer": {"posembed_input": {"pos_embedding": table[None]}}}
  return {"params": params | ({"cls": {"token": np.zeros((1, 1, table.shape[-1]))}} if cls else {})}


def test_position_similarity_of_a_row_plus_column_embedding():
  """e(i, j) = r_i + c_j with orthonormal r's and c's: cos = 1 on the diagonal, 1/2 in the same row or column,
  0 elsewhere; the class token's row is dropped."""
  gh, gw = 3, 4
  basis = np.linalg.qr(np.random.default_rng(0).normal(size=(10, gh + gw)))[0].T  # [gh+gw,10] orthonormal
  table = np.stack([basis[i] + basis[gh + j] for i in range(gh) for j in range(gw)])  # [12,10]
  table = np.concatenate([np.full((1, 10), 5.0), table])  # a class token first
  sim = am.position_embedding_similarity(_params_with_pos(table, cls=True), grid=(gh, gw))
  assert sim.shape == (gh, gw, gh, gw)
  i, j, k, l = np.meshgrid(*[np.arange(s) for s in (gh, gw, gh, gw)], indexing="ij")
  expected = np.where((i == k) & (j == l), 1.0, np.where((i == k) | (j == l), 0.5, 0.0))
  np.testing.assert_allclose(sim, expected, atol=1e-6)
  with pytest.raises(ValueError, match="not a square grid"):
    am.position_embedding_similarity(_params_with_pos(table, cls=True))


def test_position_similarity_of_a_sinusoidal_embedding_falls_with_distance():
  n = 4
  pos = np.arange(n * n)[:, None] / 3.0
  table = np.concatenate([np.sin(pos / 10.0 ** (np.arange(8) / 4)), np.cos(pos / 10.0 ** (np.arange(8) / 4))], -1)
  sim = am.position_embedding_similarity(_params_with_pos(table, cls=False))
  flat = sim.reshape(n * n, n * n)
  np.testing.assert_allclose(np.diag(flat), 1.0, atol=1e-6)
  np.testing.assert_allclose(flat, flat.T, atol=1e-6)
  # 1D sinusoidal over the row-major index: similarity falls monotonically with |index difference| near it.
  assert np.all(np.diff(flat[0, :4]) < 0)


def test_embedding_filters_are_orthonormal_components_of_the_kernel():
  kernel = np.random.default_rng(1).normal(size=(3, 2, 4, 10))  # [P,P',C,D]: 24 values, 10 filters
  params = {"embedding": {"kernel": kernel}}
  filters, explained = am.embedding_filters(params, components=28, return_variance=True)
  assert filters.shape == (10, 3, 2, 4)  # k = min(28, 24, 10)
  flat = filters.reshape(10, -1)
  np.testing.assert_allclose(flat[:9] @ flat[:9].T, np.eye(9), atol=1e-5)  # centring leaves rank D - 1 = 9
  assert np.all(np.diff(explained) <= 1e-7) and abs(explained.sum() - 1) < 1e-5
  # Filters in a plane (plus their mean): two components carry all the variance and span the plane.
  plane = np.linalg.qr(np.random.default_rng(2).normal(size=(24, 2)))[0]  # [24,2]
  kernel = (plane @ np.random.default_rng(3).normal(size=(2, 7)) + 0.3).reshape(3, 2, 4, 7)
  filters, explained = am.embedding_filters({"embedding": {"kernel": kernel}}, 2, return_variance=True)
  np.testing.assert_allclose(explained.sum(), 1.0, atol=1e-6)
  span = filters.reshape(2, -1).T
  np.testing.assert_allclose(span @ (span.T @ plane), plane, atol=1e-6)
  with pytest.raises(ValueError, match="components"):
    am.embedding_filters(params, 0)


def test_query_map_reads_the_class_row_or_the_mean_received():
  w = _softmax_rows(jax.random.key(3), (2, 3, 7, 7))
  np.testing.assert_allclose(am.query_map(w, (2, 3)), np.asarray(w)[:, :, 0, 1:].reshape(2, 3, 2, 3))
  np.testing.assert_allclose(am.query_map(w[..., 1:, 1:], (2, 3)),
                             np.asarray(w)[:, :, 1:, 1:].mean(2).reshape(2, 3, 2, 3), rtol=1e-6)

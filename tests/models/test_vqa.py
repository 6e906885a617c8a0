"""Tests for vit_video.models.vqa: properties of the SAN, its question encoders and the baselines on tiny sizes.

Sizes all differ: batch 3, question length 7 (lengths 2..7), vocabulary 11, width 12, images 20x28x5 (a 3x4 grid of
a two-stage ResNet: 12 regions), 13 answers.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_video.models import vqa

B, L, V, D, K = 3, 7, 11, 12, 13
H, W, C = 20, 28, 5
GRID = (3, 4)
TINY = dict(num_answers=K, vocab_size=V, width=D, embed_dim=6, transformer_depth=2, transformer_heads=2,
            transformer_mlp_dim=10, attention_dim=9, image_model="resnet18",
            image_options=dict(stage_sizes=(1, 1), width=4), in_channels=C)


def _inputs(seed=0):
  keys = jax.random.split(jax.random.key(seed), 3)
  image = jax.random.normal(keys[0], (B, H, W, C))
  lengths = jnp.array([2, 7, 4], jnp.int32)
  question = jax.random.randint(keys[1], (B, L), 2, V)
  question = jnp.where(jnp.arange(L)[None] < lengths[:, None], question, 0)  # PAD after the words
  return image, question, lengths


@functools.lru_cache(maxsize=None)
def _model(kind, question_encoder="lstm", **overrides):
  """(model, variables, jitted apply) of a tiny model, built once per test session."""
  model = vqa.MODELS[kind](question_encoder=question_encoder, **{**TINY, **overrides})
  variables = jax.jit(functools.partial(model.init, train=False))(jax.random.key(1), *_inputs())
  return model, variables, jax.jit(functools.partial(model.apply, train=False))


def _apply(kind, question_encoder, image, question, lengths, **overrides):
  _, variables, apply = _model(kind, question_encoder, **overrides)
  return apply(variables, image, question, lengths)


@pytest.mark.parametrize("kind,encoder,head_hidden", [("san", "lstm", 0), ("pooled", "lstm", 5),
                                                      ("question_only", "transformer", 0), ("image_only", "lstm", 0)])
def test_logits_shape_and_dtype(kind, encoder, head_hidden):
  overrides = {"head_hidden": head_hidden} if head_hidden else {}  # the same cache key as the other tests' models
  logits = _apply(kind, encoder, *_inputs(), **overrides)
  assert ("head_hidden" in _model(kind, encoder, **overrides)[1]["params"]) == bool(head_hidden)
  assert logits.shape == (B, K) and logits.dtype == jnp.float32 and np.all(np.isfinite(logits))


def test_attention_weights_sum_to_one_over_the_regions_per_layer():
  model, variables, _ = _model("san", "lstm")
  _, state = jax.jit(lambda v, *x: model.apply(v, *x, train=False, mutable=["intermediates"]))(variables, *_inputs())
  for k in range(2):
    (p,) = state["intermediates"][f"attention_{k}"][f"attention_{k}"]
    assert p.shape == (B, GRID[0] * GRID[1])
    assert np.all(p >= 0)
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-6)
  assert len(state["intermediates"]) == 2  # K = attention_layers


@pytest.mark.parametrize("fusion", vqa.FUSIONS)
def test_stacked_attention_layer_matches_the_papers_equations(fusion):
  v = jax.random.normal(jax.random.key(2), (B, 5, D))
  u = jax.random.normal(jax.random.key(3), (B, D))
  layer = vqa.StackedAttentionLayer(hidden_dim=9, fusion=fusion)
  params = layer.init(jax.random.key(4), v, u)["params"]
  out = layer.apply({"params": params}, v, u)
  h = np.tanh(np.asarray(v) @ params["w_i"]["kernel"] + (np.asarray(u) @ params["w_q"]["kernel"]
                                                         + params["w_q"]["bias"])[:, None])  # eq. 15
  e = (h @ params["w_p"]["kernel"])[..., 0] + params["w_p"]["bias"]  # eq. 16 before the softmax
  p = np.exp(e - e.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  attended = np.einsum("bn,bnd->bd", p, v)  # eq. 17
  expected = {"sum": attended + u,  # eq. 18
              "product": u + attended * u, "sum_product": u + attended + attended * u}[fusion]
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("encoder", ["lstm", "transformer"])
def test_padding_does_not_change_the_question_encoding(encoder):
  image, question, lengths = _inputs()
  base = _apply("question_only", encoder, image, question, lengths)
  junk = jax.random.randint(jax.random.key(5), question.shape, 0, V)  # other ids in the padded positions
  changed = jnp.where(jnp.arange(L)[None] < lengths[:, None], question, junk)
  np.testing.assert_allclose(_apply("question_only", encoder, image, changed, lengths), base, rtol=1e-5, atol=1e-5)
  longer = jnp.pad(question, ((0, 0), (0, 4)))  # more padding
  np.testing.assert_allclose(_apply("question_only", encoder, image, longer, lengths), base, rtol=1e-5, atol=1e-5)
  # ... while the words themselves matter: change the last real word of example 0.
  moved = question.at[0, lengths[0] - 1].set(1)  # UNK; the words drawn are >= 2
  assert not np.allclose(_apply("question_only", encoder, image, moved, lengths)[0], base[0], atol=1e-6)


def test_transformer_cls_pooling_ignores_padding_too():
  image, question, lengths = _inputs()
  base = _apply("question_only", "transformer", image, question, lengths, transformer_pool="cls")
  longer = jnp.pad(question, ((0, 0), (0, 3)), constant_values=4)
  np.testing.assert_allclose(_apply("question_only", "transformer", image, longer, lengths, transformer_pool="cls"),
                             base, rtol=1e-5, atol=1e-5)


def test_question_only_ignores_the_image_and_image_only_ignores_the_question():
  image, question, lengths = _inputs()
  other_image = _inputs(seed=7)[0]
  other_question, other_lengths = _inputs(seed=8)[1], jnp.array([5, 3, 6], jnp.int32)
  q_only = functools.partial(_apply, "question_only", "lstm")
  np.testing.assert_array_equal(q_only(other_image, question, lengths), q_only(image, question, lengths))
  assert not np.allclose(q_only(image, other_question, other_lengths), q_only(image, question, lengths))
  i_only = functools.partial(_apply, "image_only", "lstm")
  np.testing.assert_array_equal(i_only(image, other_question, other_lengths), i_only(image, question, lengths))
  assert not np.allclose(i_only(other_image, question, lengths), i_only(image, question, lengths))
  san = functools.partial(_apply, "san", "lstm")  # the SAN reads both
  assert not np.allclose(san(other_image, question, lengths), san(image, question, lengths))
  assert not np.allclose(san(image, other_question, other_lengths), san(image, question, lengths))


def test_examples_do_not_mix():
  image, question, lengths = _inputs()
  base = _apply("san", "lstm", image, question, lengths)
  out = _apply("san", "lstm", image.at[1].set(0.0), question.at[1, 0].set(1), lengths)
  np.testing.assert_allclose(out[::2], base[::2], rtol=1e-5, atol=1e-5)
  assert not np.allclose(out[1], base[1])


def test_bfloat16_compute_float32_logits_and_params():
  model, variables, _ = _model("san", "transformer", dtype=jnp.bfloat16)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables["params"]))
  logits, state = jax.jit(lambda v, *x: model.apply(v, *x, train=False, mutable=["intermediates"]))(
      variables, *_inputs())
  assert logits.dtype == jnp.float32
  assert state["intermediates"]["attention_0"]["attention_0"][0].dtype == jnp.bfloat16


def test_bad_inputs_raise():
  image, question, lengths = _inputs()
  with pytest.raises(ValueError, match="kind 'joint'"):
    vqa.VQA(kind="joint", **TINY).init(jax.random.key(0), image, question, lengths, train=False)
  with pytest.raises(ValueError, match="fusion 'concat'"):
    vqa.VQA(fusion="concat", **TINY).init(jax.random.key(0), image, question, lengths, train=False)
  with pytest.raises(ValueError, match="question_encoder 'gru'"):
    vqa.VQA(question_encoder="gru", **TINY).init(jax.random.key(0), image, question, lengths, train=False)
  with pytest.raises(ValueError, match="integer ids"):
    vqa.VQA(**TINY).init(jax.random.key(0), image, question.astype(jnp.float32), lengths, train=False)
  with pytest.raises(ValueError, match="batch sizes differ"):
    vqa.VQA(**TINY).init(jax.random.key(0), image, question, lengths[:2], train=False)
  with pytest.raises(ValueError, match="channels"):
    vqa.VQA(**TINY).init(jax.random.key(0), image[..., :3], question, lengths, train=False)

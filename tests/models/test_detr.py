"""Tests for vit_video.models.detr: DETR-R50's pinned counts, the query embeddings' permutation equivariance,
positions entering every attention, masks, the frozen collection under a train step, and bf16 compute. (Outputs
equal Hugging Face's: tests/checkpoints/test_hf_detr.py; its 2D sine encoding: tests/layers/test_encodings.py.)"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.models.helpers import noise, random_variables
from vit_video.models.detr import DETR, FROZEN_STAGES, trainable_mask
from vit_video.train.detr_loss import detr_loss

B, H, W, C, K = 2, 20, 28, 5, 4  # stride 4 (stem and one stage): a 5 x 7 token grid
TINY = dict(hidden_dim=16, num_heads=2, ffn_dim=24, num_encoder_layers=2, num_decoder_layers=2, num_queries=6,
            stage_sizes=(1,), in_channels=C)


def count(tree) -> int:
  return int(sum(np.prod(a.shape) for a in jax.tree.leaves(tree)))


# Each layer's position inputs, as (module, positional argument): the encoder's token positions, the decoder's
# query embeddings (1) and encoder positions (3). `forward` scales each by an input, so that one compiled program
# serves every test here (XLA takes seconds per program on this machine).
POSITION_INPUTS = (("encoder0", 1), ("encoder1", 1), ("decoder0", 1), ("decoder0", 3), ("decoder1", 1),
                   ("decoder1", 3))
ONES = np.ones(len(POSITION_INPUTS), np.float32)


@pytest.fixture(scope="module")
def setup():
  """(model, random variables, images, all-True mask, forward(variables, images, mask, position scales))."""
  model = DETR(num_classes=K, **TINY)
  x = noise((B, H, W, C))

  @jax.jit
  def forward(variables, x, mask, scales):
    def interceptor(next_fun, args, kwargs, context):
      args = list(args)
      for k, (name, arg) in enumerate(POSITION_INPUTS):
        if context.module.name == name and context.method_name == "__call__":
          args[arg] = args[arg] * scales[k]
      return next_fun(*args, **kwargs)
    with nn.intercept_methods(interceptor):
      return model.apply(variables, x, train=False, mask=mask)

  return model, random_variables(model, x), x, np.ones((B, H, W), bool), forward


def test_detr_r50_parameter_counts():
  """The official DETR-R50 at COCO's 91 classes: 41,524,768 parameters, 41,302,368 trained (its log's n_parameters:
  the frozen stem and layer1 excluded); the frozen BatchNorms' 4 x 26,560 values are constants."""
  variables = jax.eval_shape(functools.partial(DETR(num_classes=91).init, train=False), jax.random.key(0),
                             jnp.zeros((1, 64, 64, 3)))
  assert set(variables) == {"params", "constants"}
  params, mask = variables["params"], trainable_mask(variables["params"])
  assert count(params) == 41_524_768
  assert sum(np.prod(p.shape) for p, t in zip(jax.tree.leaves(params), jax.tree.leaves(mask)) if t) == 41_302_368
  assert count(variables["constants"]) == 4 * 26_560
  assert count({s: params["backbone"][s] for s in FROZEN_STAGES}) == 41_524_768 - 41_302_368


def test_outputs_and_query_permutation_equivariance(setup):
  """Permuting the query embeddings permutes every output (the decoder has no other order); mask None is all-True."""
  model, variables, x, mask, forward = setup
  out = forward(variables, x, mask, ONES)
  q = TINY["num_queries"]
  assert out["logits"].shape == (B, q, K + 1) and out["boxes"].shape == (B, q, 4) and len(out["aux"]) == 1
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(out))
  assert np.all((np.asarray(out["boxes"]) > 0) & (np.asarray(out["boxes"]) < 1))
  perm = np.random.default_rng(0).permutation(q)
  permuted = jax.tree.map(lambda a: a, variables)
  permuted["params"]["query_embed"] = variables["params"]["query_embed"][perm]
  out_p = forward(permuted, x, mask, ONES)
  assert not np.allclose(out_p["logits"], out["logits"], atol=1e-3)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b[:, perm], rtol=1e-5, atol=1e-5), out_p, out)


def test_positions_enter_every_encoder_and_decoder_layer(setup):
  """Scaling one layer's position input to zero changes the outputs, for each position input of each layer."""
  model, variables, x, mask, forward = setup
  base = forward(variables, x, mask, ONES)["logits"]
  for k, which in enumerate(POSITION_INPUTS):
    changed = np.max(np.abs(forward(variables, x, mask, np.where(np.arange(len(ONES)) == k, 0, ONES))["logits"]
                            - base))
    assert changed > 1e-3, (which, changed)


def test_padding_changes_the_padded_image_only(setup):
  model, variables, x, mask, forward = setup
  full = forward(variables, x, mask, ONES)
  padded_mask = mask.copy()
  padded_mask[1, 12:, 16:] = False  # image 1: 12 x 16 real pixels, 3 x 4 of the 5 x 7 tokens
  padded = forward(variables, x, padded_mask, ONES)
  np.testing.assert_allclose(padded["logits"][0], full["logits"][0], rtol=1e-5, atol=1e-6)
  assert not np.allclose(padded["logits"][1], full["logits"][1], atol=1e-3)


@pytest.fixture(scope="module")
def small():
  """(attributes, random variables, images) of a DETR without encoder layers (as in the paper's ablation) and one
  decoder layer, for the tests that compile their own programs (a train step, bf16)."""
  attributes = dict(TINY, num_encoder_layers=0, num_decoder_layers=1)
  x = noise((B, H, W, C))
  return attributes, random_variables(DETR(num_classes=K, **attributes), x), x


def test_train_step_leaves_the_frozen_backbone_alone(small):
  """A train step (dropout on, DETR's loss, multi_transform over trainable_mask): the gradient is over params only
  and reaches the stem and layer1, yet they do not move while every other parameter with a gradient does; the
  constants come back unchanged from an apply that may mutate them. (Some gradients are exactly zero: attention key
  biases, and the first decoder layer's self-attention, whose inputs are all zero.)"""
  attributes, variables, x = small
  model = DETR(num_classes=K, **attributes)
  params, constants = variables["params"], variables["constants"]
  labels, valid = jnp.array([[1, 3], [2, 0]]), jnp.array([[True, True], [True, False]])
  boxes = jnp.array([[[0.3, 0.4, 0.2, 0.3], [0.7, 0.6, 0.3, 0.2]], [[0.5, 0.5, 0.4, 0.4], [0.0, 0.0, 0.0, 0.0]]])
  trainable = trainable_mask(params)
  tx = optax.multi_transform({True: optax.sgd(0.1), False: optax.set_to_zero()}, trainable)

  @jax.jit
  def step(params, opt_state):
    def loss_fn(params):
      out, state = model.apply({"params": params, "constants": constants}, x, train=True,
                               rngs={"dropout": jax.random.key(1, impl="rbg")}, mutable=["constants"])
      return detr_loss(out, labels, boxes, valid)[0], state["constants"]
    (loss, after), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), grads, loss, after

  new, grads, loss, after = step(params, tx.init(params))
  assert np.isfinite(loss) and jax.tree.structure(grads) == jax.tree.structure(params)
  jax.tree.map(np.testing.assert_array_equal, after, constants)
  has_grad = jax.tree.map(lambda g: bool(np.max(np.abs(g)) > 1e-6), grads)  # beyond rounding noise
  moved = jax.tree.map(lambda a, b: bool(np.any(a != b)), new, params)
  for t, g, m in zip(*map(jax.tree.leaves, (trainable, has_grad, moved))):
    assert (not m and g) if not t else (m or not g)  # frozen: a gradient, no move; trainable: moves if it has one
  assert sum(jax.tree.leaves(moved)) > 0.8 * sum(jax.tree.leaves(trainable))
  assert not any(jax.tree.leaves(trainable["backbone"]["layer1"])) and all(jax.tree.leaves(moved["class_embed"]))


def test_bfloat16_compute_gives_float32_outputs(small):
  attributes, variables, x = small
  model = DETR(num_classes=K, dtype=jnp.bfloat16, **attributes)
  out, state = jax.jit(lambda v, x: model.apply(v, x, train=False, capture_intermediates=True,
                                                mutable=["intermediates"]))(variables, x)
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(out))
  inter = state["intermediates"]
  assert inter["backbone"]["__call__"][0].dtype == jnp.bfloat16
  assert inter["decoder0"]["self_attn"]["__call__"][0].dtype == jnp.bfloat16
  assert inter["decoder0"]["cross_attn"]["__call__"][0].dtype == jnp.bfloat16
  assert inter["decoder0"]["__call__"][0].dtype == jnp.bfloat16
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))

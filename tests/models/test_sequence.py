"""Tests for vit_video.models.sequence: shapes and float32 logits; information from every position reaches the
output, in order, and examples do not mix; the LSTM equals its cell stepped by hand; perturbations act as added
embeddings; the study's variants have matched parameter counts (pinned); bf16 activations when asked."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.models.helpers import random_variables
from vit_video.models import sequence

B, N, V, K = 3, 7, 6, 4  # batch, tokens, input ids, classes: all different
TOY = {"lstm": dict(features=5, embed_dim=3), "gru": dict(features=9, embed_dim=3),
       "transformer": dict(width=8, depth=2, num_heads=2, mlp_dim=10)}


def toy(name, **kw):
  return sequence.VARIANTS[name](vocab_size=V, num_classes=K, **{**TOY[name], **kw})


def tokens(seed=0, b=B, n=N):
  return jnp.asarray(np.random.default_rng(seed).integers(0, V, (b, n)), jnp.int32)


@functools.partial(jax.jit, static_argnums=0)
def forward(model, variables, x):
  return model.apply(variables, x, train=False)


def params(model, x):
  return {"params": random_variables(model, x)["params"]}


@pytest.mark.parametrize("name", sorted(TOY))
def test_every_position_reaches_the_output_in_order_and_examples_do_not_mix(name):
  model, x = toy(name), tokens(b=1)
  variables = params(model, x)
  changed = [x.at[0, t].set((x[0, t] + 1) % V) for t in (0, N // 2, N - 1)]  # the first token crosses N - 1 steps
  batch = jnp.concatenate([x, *changed, x[:, ::-1]])  # [5,N]: one forward pass
  y = forward(model, variables, batch)
  assert y.shape == (5, K) and y.dtype == jnp.float32
  assert (jnp.abs(y[1:] - y[:1]).max(axis=1) > 1e-6).all()  # every change moves the logits; reversing too
  # Examples do not mix: example 0 alone gives the logits it had in the batch.
  np.testing.assert_allclose(forward(model, variables, jnp.concatenate([x, x[:, ::-1], x, x, x]))[0], y[0],
                             rtol=1e-6, atol=1e-6)


def test_lstm_equals_its_cell_stepped_by_hand():
  model, x = toy("lstm"), tokens(1)
  variables = params(model, x)
  p = variables["params"]
  cell = nn.OptimizedLSTMCell(5)
  emb = p["embedding"]["embedding"][x]  # [B,N,E]
  carry = (jnp.zeros((B, 5)), jnp.zeros((B, 5)))  # (c, h): the zero initial state
  for t in range(N):
    carry, h = cell.apply({"params": p["rnn"]["cell"]}, carry, emb[:, t])
  expected = h @ p["head"]["kernel"] + p["head"]["bias"]
  np.testing.assert_allclose(forward(model, variables, x), expected, rtol=1e-5, atol=1e-5)


def test_a_perturbation_is_an_added_embedding():
  """perturb("embeddings") adds its value to x_t: perturbing the one position holding token 4 equals moving token
  4's embedding row (so the perturbation's gradient is d loss / d x_t)."""
  model = toy("transformer")
  x = jnp.asarray([[0, 1, 2, 3, 4, 5, 1]], jnp.int32)  # token 4 only at t = 4
  variables = params(model, x)
  delta = jnp.asarray(np.random.default_rng(2).normal(size=8), jnp.float32)
  perturbed = forward(model, {**variables, "perturbations": {"embeddings": jnp.zeros((1, N, 8)).at[0, 4].set(delta)}},
                      x)
  table = variables["params"]["embedding"]["embedding"].at[4].add(delta)
  moved = forward(model, {"params": {**variables["params"], "embedding": {"embedding": table}}}, x)
  np.testing.assert_allclose(perturbed, moved, rtol=1e-5, atol=1e-6)
  assert jnp.abs(perturbed - forward(model, variables, x)).max() > 1e-5


def count(model, n=9):
  shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                          jax.ShapeDtypeStruct((2, n), jnp.int32))
  return sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes["params"]))


def test_the_study_variants_have_matched_parameter_counts():
  counts = {name: count(f(vocab_size=32, num_classes=16)) for name, f in sequence.VARIANTS.items()}
  assert counts == {"lstm": 26_896, "gru": 26_052, "transformer": 27_248}
  assert max(counts.values()) / min(counts.values()) < 1.05  # matched within 5%
  # Sinusoidal positions hold no parameters, so the count does not grow with the sequence.
  assert count(sequence.VARIANTS["transformer"](vocab_size=32, num_classes=16), n=1024) == counts["transformer"]


def test_learned_positions_cover_max_length_only():
  model = toy("transformer", positions="learned", max_length=N)
  shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), tokens(n=N - 2))
  assert shapes["params"]["pos_embedding"].shape == (N, 8)  # shorter sequences use the table's start
  with pytest.raises(ValueError, match="max_length"):
    jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), tokens(n=N + 1))


@pytest.mark.parametrize("name", ["lstm", "transformer"])
def test_bf16_activations_float32_logits(name):
  model, x = toy(name, dtype=jnp.bfloat16), tokens()
  variables = params(model, x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
  y, state = jax.eval_shape(functools.partial(model.apply, train=False, capture_intermediates=True,
                                              mutable=["intermediates"]), variables, x)
  inter = state["intermediates"]
  assert y.dtype == jnp.float32
  assert inter["embedding"]["__call__"][0].dtype == jnp.bfloat16
  assert inter["head"]["__call__"][0].dtype == jnp.bfloat16
  if name == "transformer":
    assert inter["encoderblock_1"]["__call__"][0][0].dtype == jnp.bfloat16
  else:  # the carry (c, h) stays float32, as flax creates it in param_dtype
    assert inter["rnn"]["__call__"][0].dtype == jnp.float32


def test_bad_inputs_raise():
  init = lambda model, x: jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)  # noqa
  with pytest.raises(ValueError, match="integer ids"):
    init(toy("lstm"), jnp.zeros((B, N), jnp.float32))
  with pytest.raises(ValueError, match="cell"):
    init(sequence.RecurrentClassifier(cell="rnn", vocab_size=V, num_classes=K), tokens())
  with pytest.raises(ValueError, match="positions"):
    init(toy("transformer", positions="rotary"), tokens())

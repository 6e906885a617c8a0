"""Tests for vit_video.train.optim: schedules, decay mask, optimizers, accumulation, EMA, loss and accuracy."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vit_video.models import create_model
from vit_video.models.vit import unscanned_to_scan
from vit_video.train.optim import (cross_entropy, ema_update, has_updated, make_optimizer, make_schedule,
                                   topk_correct, weight_decay_mask)

B, D_IN, K = 6, 5, 3


def optimizer(params, **kw):
  """make_optimizer with every argument explicit; `kw` overrides."""
  args = dict(name="sgd", schedule=optax.constant_schedule(0.1), weight_decay=0.0, b1=0.9, b2=0.999,
              momentum=0.0, nesterov=False, grad_clip_norm=None, grad_accum_steps=1, params=params)
  return make_optimizer(**{**args, **kw})


def linear_params(seed=0):
  """A linear classifier with a norm-like scale: {'dense': {'kernel' [5,3], 'bias' [3]}, 'norm': {'scale' [3]}}."""
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  return {"dense": {"kernel": jax.random.normal(k1, (D_IN, K)), "bias": jax.random.normal(k2, (K,))},
          "norm": {"scale": 1.0 + 0.1 * jax.random.normal(k3, (K,))}}


def linear_loss(params, x, y):
  logits = (x @ params["dense"]["kernel"] + params["dense"]["bias"]) * params["norm"]["scale"]
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


linear_grad = jax.jit(jax.grad(linear_loss))


def batch(seed=1, b=B):
  kx, ky = jax.random.split(jax.random.key(seed))
  return jax.random.normal(kx, (b, D_IN)), jax.random.randint(ky, (b,), 0, K)


def assert_trees_close(a, b, **tol):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, **tol)


# ---------------------------------------------------------------------------------------------- schedules


@pytest.mark.parametrize("warmup", [0, 10])
def test_cosine_schedule_at_key_steps(warmup):
  base, total, factor = 0.5, 110, 0.1
  s = make_schedule("cosine", base_lr=base, total_steps=total, warmup_steps=warmup, end_lr_factor=factor)
  end = base * factor

  def cosine(t):
    return end + (base - end) * 0.5 * (1 + math.cos(math.pi * (t - warmup) / (total - warmup)))

  if warmup:
    assert float(s(0)) == 0.0
    np.testing.assert_allclose(s(warmup // 2), base * (warmup // 2) / warmup, rtol=1e-6)
  np.testing.assert_allclose(s(warmup), base, rtol=1e-6)
  for t in (warmup + 1, (warmup + total) // 2, total - 1):
    np.testing.assert_allclose(s(t), cosine(t), rtol=1e-5)
  np.testing.assert_allclose(s(total), end, rtol=1e-5)
  np.testing.assert_allclose(s(total + 50), end, rtol=1e-5)
  np.testing.assert_allclose(jax.jit(s)(jnp.int32(warmup + 7)), cosine(warmup + 7), rtol=1e-5)


def test_linear_and_constant_schedules_at_key_steps():
  base, total, warmup = 2.0, 50, 8
  lin = make_schedule("linear", base_lr=base, total_steps=total, warmup_steps=warmup, end_lr_factor=0.25)
  const = make_schedule("constant", base_lr=base, total_steps=total, warmup_steps=warmup, end_lr_factor=0.25)
  for s in (lin, const):
    assert float(s(0)) == 0.0
    np.testing.assert_allclose(s(3), base * 3 / 8, rtol=1e-6)
    np.testing.assert_allclose(s(warmup), base, rtol=1e-6)
  for t in (9, 29, 49):
    np.testing.assert_allclose(lin(t), base + (0.5 - base) * (t - warmup) / (total - warmup), rtol=1e-6)
    np.testing.assert_allclose(const(t), base, rtol=1e-6)
  np.testing.assert_allclose(lin(total), 0.5, rtol=1e-6)
  np.testing.assert_allclose(lin(total + 10), 0.5, rtol=1e-6)
  np.testing.assert_allclose(const(total + 10), base, rtol=1e-6)


def test_step_schedule_divides_at_its_boundaries():
  """The non-local paper's schedule in small: 0.01 divided by 10 at 37.5% and 75% of 80 steps, 4 warm-up."""
  s = make_schedule("step", base_lr=0.01, total_steps=80, warmup_steps=4, step_boundaries=(0.375, 0.75))
  expected = {0: 0.0, 2: 0.005, 4: 0.01, 29: 0.01, 30: 0.001, 59: 0.001, 60: 0.0001, 79: 0.0001, 90: 0.0001}
  for step, lr in expected.items():
    assert float(s(step)) == pytest.approx(lr, rel=1e-6, abs=1e-12), step
  for boundaries in ((0.75, 0.375), (0.0, 0.5), (0.5, 1.0), (0.04,)):  # unsorted, outside (0, 1), in warm-up
    with pytest.raises(ValueError, match="step_boundaries"):
      make_schedule("step", base_lr=0.01, total_steps=80, warmup_steps=4, step_boundaries=boundaries)


@pytest.mark.parametrize("kind, kw, match", [
    ("exponential", dict(total_steps=10, warmup_steps=1), "kind"),
    ("cosine", dict(total_steps=10, warmup_steps=11), "warmup_steps 11"),
    ("cosine", dict(total_steps=10, warmup_steps=10), "warmup_steps 10"),
    ("linear", dict(total_steps=10, warmup_steps=-1), "warmup_steps -1"),
    ("linear", dict(total_steps=0, warmup_steps=0), "total_steps"),
])
def test_schedule_rejects_bad_arguments(kind, kw, match):
  with pytest.raises(ValueError, match=match):
    make_schedule(kind, base_lr=1.0, **kw)


# ------------------------------------------------------------------------------------------ decay mask


def tiny_vit_params():
  model = create_model("vit_ti16", num_classes=3, depth=2, width=24, mlp_dim=32, num_heads=2, patch_size=4)
  return model.init(jax.random.key(0), jnp.zeros((1, 8, 12, 3)), train=False)["params"]


def test_weight_decay_mask_on_vit_params():
  params = tiny_vit_params()
  flat = {jax.tree_util.keystr(p, simple=True, separator="/"): m
          for p, m in jax.tree_util.tree_flatten_with_path(weight_decay_mask(params))[0]}
  assert all(isinstance(m, bool) for m in flat.values())
  block = "Transformer/encoderblock_1/"
  decayed = {"embedding/kernel", "head/kernel", *(f"{block}MultiHeadDotProductAttention_1/{n}/kernel"
                                                  for n in ("query", "key", "value", "out")),
             f"{block}MlpBlock_3/Dense_0/kernel", f"{block}MlpBlock_3/Dense_1/kernel"}
  kept = {"Transformer/posembed_input/pos_embedding", "cls/token", "embedding/bias", "head/bias",
          "Transformer/encoder_norm/scale", "Transformer/encoder_norm/bias", f"{block}LayerNorm_0/scale",
          f"{block}LayerNorm_2/bias", f"{block}MultiHeadDotProductAttention_1/query/bias",  # a [h,d] bias
          f"{block}MlpBlock_3/Dense_0/bias"}
  assert all(flat[k] for k in decayed) and not any(flat[k] for k in kept)
  assert {k for k, m in flat.items() if m} == {k for k in flat if k.endswith("/kernel")}
  assert sum(flat.values()) == 2 + 6 * 2  # embedding, head, and 6 kernels per block
  # The same from abstract shapes, and in the scanned layout (LayerNorm scales become [depth, D]).
  assert weight_decay_mask(jax.eval_shape(tiny_vit_params)) == weight_decay_mask(params)
  scanned = weight_decay_mask(unscanned_to_scan(params))["Transformer"]["encoderblock"]
  assert scanned["LayerNorm_0"]["scale"] is False and scanned["MlpBlock_3"]["Dense_0"]["kernel"] is True


def test_weight_decay_mask_on_resnet_params():
  model = create_model("resnet18", num_classes=3, width=4, stage_sizes=(1, 1), in_channels=5)
  mask = weight_decay_mask(jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8, 12, 5)),
                                                             train=False))["params"])
  assert mask["conv1"]["kernel"] and mask["fc"]["kernel"] and mask["layer2"]["block0"]["downsample_conv"]["kernel"]
  assert not (mask["bn1"]["scale"] or mask["bn1"]["bias"] or mask["fc"]["bias"])


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_weight_decay_applies_to_masked_leaves_only(name):
  params, lr, wd = linear_params(), 0.1, 0.3
  tx = optimizer(params, name=name, schedule=optax.constant_schedule(lr), weight_decay=wd, momentum=0.9)
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)  # no gradient: only the decay moves parameters
  np.testing.assert_allclose(updates["dense"]["kernel"], -lr * wd * params["dense"]["kernel"], rtol=1e-6)
  assert not jnp.any(updates["dense"]["bias"]) and not jnp.any(updates["norm"]["scale"])


# ---------------------------------------------------------------------------------------------- optimizers


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_is_optax_sgd_plus_decoupled_decay(nesterov):
  """SGDW: the momentum buffer sees gradients only; the kernel also shrinks by lr * wd * w each step (coupled L2
  would put wd * w through the momentum buffer and differ from the second step on)."""
  params, lr, wd = linear_params(), 0.05, 0.5
  tx = optimizer(params, schedule=optax.constant_schedule(lr), weight_decay=wd, momentum=0.9, nesterov=nesterov)
  ref = optax.sgd(lr, momentum=0.9, nesterov=nesterov)
  state, ref_state, p, q = tx.init(params), ref.init(params), params, params
  update = jax.jit(tx.update)
  for seed in range(3):
    u, state = update(linear_grad(p, *batch(seed)), state, p)
    v, ref_state = ref.update(linear_grad(q, *batch(seed)), ref_state, q)
    v["dense"]["kernel"] = v["dense"]["kernel"] - lr * wd * q["dense"]["kernel"]
    p, q = optax.apply_updates(p, u), optax.apply_updates(q, v)
  assert_trees_close(p, q, rtol=1e-6, atol=1e-7)


def test_adamw_first_step_is_signed_learning_rate_plus_decay():
  params, lr, wd = linear_params(), 0.01, 0.1
  tx = optimizer(params, name="adamw", schedule=optax.constant_schedule(lr), weight_decay=wd)
  grads = linear_grad(params, *batch())
  updates, _ = tx.update(grads, tx.init(params), params)
  # Bias-corrected first Adam step: m / sqrt(v) = g / |g|.
  np.testing.assert_allclose(updates["dense"]["kernel"],
                             -lr * jnp.sign(grads["dense"]["kernel"]) - lr * wd * params["dense"]["kernel"],
                             rtol=1e-4)
  np.testing.assert_allclose(updates["dense"]["bias"], -lr * jnp.sign(grads["dense"]["bias"]), rtol=1e-4)


def test_schedule_drives_the_learning_rate():
  params = linear_params()
  schedule = make_schedule("linear", base_lr=1.0, total_steps=4, warmup_steps=2)  # 0, 0.5, 1, 0.5, 0
  tx = optimizer(params, schedule=schedule)
  state, grads = tx.init(params), jax.tree.map(jnp.ones_like, params)
  for lr in (0.0, 0.5, 1.0, 0.5, 0.0):
    updates, state = tx.update(grads, state, params)
    np.testing.assert_allclose(updates["dense"]["bias"], -lr, atol=1e-7)


def test_clipping_bounds_the_update_norm():
  params, lr, clip = linear_params(), 0.5, 0.01
  tx = optimizer(params, schedule=optax.constant_schedule(lr), grad_clip_norm=clip)
  grads = linear_grad(params, *batch())
  assert optax.tree.norm(grads) > 10 * clip
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(optax.tree.norm(updates), lr * clip, rtol=1e-5)
  # Direction is kept; a gradient below the threshold passes unchanged.
  np.testing.assert_allclose(updates["dense"]["kernel"],
                             -lr * clip * grads["dense"]["kernel"] / optax.tree.norm(grads), rtol=1e-5)
  small = jax.tree.map(lambda g: g * 0.1 * clip / optax.tree.norm(grads), grads)
  updates, _ = tx.update(small, tx.init(params), params)
  assert_trees_close(updates, jax.tree.map(lambda g: -lr * g, small), rtol=1e-6)


@pytest.mark.parametrize("name, tol", [("sgd", 1e-6), ("adamw", 1e-4)])
def test_gradient_accumulation_equals_one_big_batch(name, tol):
  params, k = linear_params(), 3
  x, y = batch(b=k * B)
  kw = dict(name=name, schedule=make_schedule("cosine", base_lr=0.1, total_steps=10, warmup_steps=1),
            weight_decay=0.01, momentum=0.9, grad_clip_norm=0.5)
  accum, big = optimizer(params, grad_accum_steps=k, **kw), optimizer(params, **kw)
  p, q, accum_state, big_state = params, params, accum.init(params), big.init(params)
  accum_update, big_update = jax.jit(accum.update), jax.jit(big.update)
  for step in range(2):  # two optimizer steps: exercises momentum/Adam state and the schedule count
    for i in range(k):
      updates, accum_state = accum_update(
          linear_grad(p, x[i * B:(i + 1) * B], y[i * B:(i + 1) * B]), accum_state, p)
      p = optax.apply_updates(p, updates)
      assert bool(has_updated(accum_state)) == (i == k - 1)
      if i < k - 1:
        assert not any(jnp.any(u) for u in jax.tree.leaves(updates))
    updates, big_state = big_update(linear_grad(q, x, y), big_state, q)
    q = optax.apply_updates(q, updates)
    assert bool(has_updated(big_state))
    assert_trees_close(p, q, rtol=tol, atol=tol)
  assert not np.allclose(p["dense"]["kernel"], params["dense"]["kernel"])


@pytest.mark.parametrize("name, accum", [("adamw", 1), ("sgd", 2)])
def test_optimizer_state_round_trips_through_orbax(tmp_path, name, accum):
  import orbax.checkpoint as ocp  # noqa: PLC0415  (only this test needs orbax)
  params = linear_params()
  tx = optimizer(params, name=name, weight_decay=0.1, momentum=0.9, grad_accum_steps=accum)
  state = tx.init(params)
  for seed in range(3):
    _, state = tx.update(linear_grad(params, *batch(seed)), state, params)
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(tmp_path / "state", state)
    ckpt.wait_until_finished()
    restored = ckpt.restore(tmp_path / "state", jax.eval_shape(tx.init, params))
  assert_trees_close(restored, state, rtol=0, atol=0)
  assert jax.tree.structure(restored) == jax.tree.structure(state)


@pytest.mark.parametrize("kw, match", [
    (dict(name="lamb"), "lamb"), (dict(grad_accum_steps=0), "grad_accum_steps"),
    (dict(grad_clip_norm=0.0), "grad_clip_norm"), (dict(weight_decay=-1.0), "weight_decay"),
    (dict(nesterov=True, momentum=0.0), "nesterov"), (dict(momentum=1.0), "momentum"),
])
def test_make_optimizer_rejects_bad_arguments(kw, match):
  with pytest.raises(ValueError, match=match):
    optimizer(linear_params(), **kw)


# ------------------------------------------------------------------------------------------------- EMA


def test_ema_update_formula_and_warmup():
  ema, params = linear_params(0), linear_params(1)
  out = ema_update(ema, params, 0.9, None)
  assert_trees_close(out, jax.tree.map(lambda e, p: 0.9 * e + 0.1 * p, ema, params), rtol=1e-6)
  assert_trees_close(ema_update(ema, params, 1.0, None), ema, rtol=0, atol=0)
  # Warm-up: d = min(decay, (1 + step) / (10 + step)): 0.1 at step 0, 0.5 at step 8, `decay` late.
  for step, d in ((0, 0.1), (8, 0.5), (10_000, 0.999)):
    want = jax.tree.map(lambda e, p, d=d: d * e + (1 - d) * p, ema, params)
    assert_trees_close(ema_update(ema, params, 0.999, step), want, rtol=1e-5)
    assert_trees_close(jax.jit(ema_update)(ema, params, 0.999, jnp.int32(step)), want, rtol=1e-5)


def test_ema_converges_to_fixed_params_and_keeps_dtype():
  ema = jax.tree.map(lambda a: a.astype(jnp.bfloat16), linear_params(0))
  params = linear_params(1)
  for step in range(200):
    ema = ema_update(ema, params, 0.9, step)
  assert all(a.dtype == jnp.bfloat16 for a in jax.tree.leaves(ema))
  assert_trees_close(jax.tree.map(lambda a: a.astype(jnp.float32), ema), params, atol=2e-2)


# ------------------------------------------------------------------------------------- loss and accuracy


def logits_and_labels(b=4, k=7, seed=0):
  kl, ky = jax.random.split(jax.random.key(seed))
  return 3.0 * jax.random.normal(kl, (b, k)), jax.random.randint(ky, (b,), 0, k)


def test_cross_entropy_matches_negative_log_softmax():
  logits, labels = logits_and_labels()
  loss = cross_entropy(logits, labels, num_classes=7)
  assert loss.shape == (4,) and loss.dtype == jnp.float32
  want = -jax.nn.log_softmax(logits)[jnp.arange(4), labels]
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  np.testing.assert_allclose(loss, optax.softmax_cross_entropy_with_integer_labels(logits, labels), rtol=1e-6)
  np.testing.assert_allclose(cross_entropy(logits.astype(jnp.bfloat16), labels, num_classes=7), want, rtol=2e-2)


def test_label_smoothing_formula():
  logits, labels = logits_and_labels()
  s, k = 0.2, 7
  logp = jax.nn.log_softmax(logits)
  target = (1 - s) * jax.nn.one_hot(labels, k) + s / k
  want = -(target * logp).sum(-1)
  np.testing.assert_allclose(cross_entropy(logits, labels, label_smoothing=s, num_classes=k), want, rtol=1e-6)
  # = (1 - s) * CE + s * mean over classes of -log p.
  np.testing.assert_allclose(want, (1 - s) * -logp[jnp.arange(4), labels] - s * logp.mean(-1), rtol=1e-5)
  # Out-of-range (padding) labels give a zero one-hot.
  np.testing.assert_allclose(cross_entropy(logits, jnp.full((4,), -1), num_classes=k), 0.0)


def test_soft_labels():
  logits, labels = logits_and_labels()
  hard = cross_entropy(logits, labels, label_smoothing=0.1, num_classes=7)
  soft = cross_entropy(logits, jax.nn.one_hot(labels, 7), label_smoothing=0.1, num_classes=7)
  np.testing.assert_allclose(soft, hard, rtol=1e-6)
  # Linear in the target: a mixup of two label sets gives the mix of their losses.
  other = jnp.roll(labels, 1)
  mixed = cross_entropy(logits, 0.3 * jax.nn.one_hot(labels, 7) + 0.7 * jax.nn.one_hot(other, 7), num_classes=7)
  np.testing.assert_allclose(mixed, 0.3 * cross_entropy(logits, labels, num_classes=7)
                             + 0.7 * cross_entropy(logits, other, num_classes=7), rtol=1e-5)


@pytest.mark.parametrize("logits_shape, labels, match", [
    ((4, 6), jnp.zeros((4,), jnp.int32), "num_classes = 7"),
    ((4, 7), jnp.zeros((3,), jnp.int32), r"\[B\] = \(4,\)"),
    ((4, 7), jnp.zeros((4, 6)), r"\[B,K\] = \(4, 7\)"),
])
def test_cross_entropy_rejects_bad_shapes(logits_shape, labels, match):
  with pytest.raises(ValueError, match=match):
    cross_entropy(jnp.zeros(logits_shape), labels, num_classes=7)


def test_topk_correct():
  # Rows rank the classes differently; the label's rank (0 = largest) decides top-k.
  logits = jnp.array([[5.0, 4.0, 3.0, 2.0, 1.0, 0.0, -1.0],
                      [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
                      [1.0, 0.0, 3.0, 2.0, 5.0, 4.0, 6.0]])
  labels = jnp.array([0, 1, 3])  # ranks 0, 5, 4
  assert topk_correct(logits, labels, 1).tolist() == [True, False, False]
  assert topk_correct(logits, labels, 4).tolist() == [True, False, False]
  assert topk_correct(logits, labels, 5).tolist() == [True, False, True]
  assert topk_correct(logits, labels, 6).tolist() == [True, True, True]
  assert topk_correct(logits, labels, 1).dtype == jnp.bool_
  soft = 0.6 * jax.nn.one_hot(labels, 7) + 0.4 * jax.nn.one_hot(jnp.array([2, 6, 6]), 7)  # argmax = labels
  assert topk_correct(logits, soft, 1).tolist() == [True, False, False]
  # Agrees with a rank count on random logits, for every k.
  logits, labels = logits_and_labels(b=16, k=9, seed=3)
  rank = (logits > logits[jnp.arange(16), labels][:, None]).sum(-1)
  for k in (1, 2, 5, 9):
    assert topk_correct(logits, labels, k).tolist() == (rank < k).tolist()
  with pytest.raises(ValueError, match="k = 10"):
    topk_correct(logits, labels, 10)

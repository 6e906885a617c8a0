"""Rematerialisation policies (vit_video.layers.remat): the same values and gradients, less memory held.

A ViT encoder of 3 blocks on B=2 sequences of N=37 tokens, width 12, 3 heads, MLP 20.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.models.helpers import noise
from vit_video.layers.remat import REMAT_POLICIES, maybe_remat
from vit_video.models import vit

X = noise((2, 37, 12))
ENCODER = dict(depth=3, mlp_dim=20, num_heads=3)


def _loss_and_grads(encoder, variables, x):
  weights = noise(x.shape, seed=1)
  fn = lambda p, x: jnp.sum(weights * encoder.apply({"params": p}, x, deterministic=True))  # noqa: E731
  return jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))(variables["params"], x)


@pytest.mark.parametrize("policy", sorted(REMAT_POLICIES))
def test_every_policy_gives_the_same_loss_and_gradients(policy):
  plain = vit.Encoder(**ENCODER)
  variables = plain.init(jax.random.key(0), X, deterministic=True)
  (loss, (g_params, g_x)) = _loss_and_grads(plain, variables, X)
  (loss_r, (g_params_r, g_x_r)) = _loss_and_grads(vit.Encoder(**ENCODER, remat=True, remat_policy=policy),
                                                  variables, X)
  np.testing.assert_allclose(loss_r, loss, rtol=1e-5)  # float rounding of differently fused programs
  flat = lambda tree: np.concatenate([np.ravel(a) for a in jax.tree.leaves(tree)])  # noqa: E731
  got, want = flat((g_x_r, g_params_r)), flat((g_x, g_params))
  assert np.linalg.norm(got - want) < 1e-5 * np.linalg.norm(want)  # float rounding of a recomputation


def test_policies_recompute_what_they_do_not_keep():
  """XLA's FLOP count of the gradient (not a timing): full remat recomputes the whole forward pass, the
  no-batch-dims policy only the attention products, and without remat nothing is recomputed.

  (Peak memory is measured by benchmarks/long_clips.py: XLA:CPU's buffer plan does not shrink under remat, so
  memory is not asserted here.)"""
  x = jax.ShapeDtypeStruct((4, 256, 32), jnp.float32)
  plain = vit.Encoder(depth=4, mlp_dim=64, num_heads=4)
  params = jax.eval_shape(lambda: plain.init(jax.random.key(0), jnp.zeros(x.shape), deterministic=True))["params"]

  def gradient_flops(policy):
    encoder = vit.Encoder(depth=4, mlp_dim=64, num_heads=4, remat=policy is not None,
                          remat_policy=policy or "nothing_saveable")
    grad = jax.grad(lambda p, x: encoder.apply({"params": p}, x, deterministic=True).sum())
    return jax.jit(grad).lower(params, x).compile().cost_analysis()["flops"]

  forward = jax.jit(lambda p, x: plain.apply({"params": p}, x, deterministic=True)).lower(params, x).compile()
  none, everything = gradient_flops(None), gradient_flops("nothing_saveable")
  assert everything > gradient_flops("dots_with_no_batch_dims_saveable") > none
  np.testing.assert_allclose(everything - none, forward.cost_analysis()["flops"], rtol=0.05)


def test_unknown_policy_names_the_valid_ones():
  with pytest.raises(ValueError, match="unknown remat policy 'everything'; expected one of .*nothing_saveable"):
    maybe_remat(vit.EncoderBlock, True, "everything")

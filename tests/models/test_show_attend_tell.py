"""Tests for vit_video.models.show_attend_tell and caption_decoding: attention weights are a distribution over the
regions at every word, a masked region gets none and cannot move the output, teacher forcing is causal, one decoding
step is one teacher-forced step, beam search of width 1 is greedy, the doubly stochastic penalty's zero. Sizes all
differ: B=2, N=6 regions (a 2x3 grid) of D=5, L=7 words, V=11, E=4, H=9, A=3."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_video.models import caption_decoding as cd
from vit_video.models import show_attend_tell as sat

B, N, D, L, V = 2, 6, 5, 7, 11
MODEL = sat.ShowAttendTell(vocab_size=V, embed_dim=4, hidden_dim=9, attention_dim=3, dropout_rate=0.5)
ALL = np.ones((B, N), bool)
# Jitted once each (eager flax compiles every operation apart, which costs far more on a small CPU).
forward = jax.jit(lambda v, a, t, mask=ALL: MODEL.apply(v, a, t, train=False, mask=mask))
init_state = jax.jit(lambda v, a: MODEL.apply(v, a, method=MODEL.init_state))
decode_step = jax.jit(lambda v, s, t: MODEL.apply(v, s, t, method=MODEL.decode_step))
penalty = jax.jit(sat.attention_penalty)
loss = jax.jit(sat.caption_loss, static_argnames="penalty")


@pytest.fixture(scope="module")
def setup():
  annotations = jax.random.normal(jax.random.key(0), (B, N, D))
  tokens = jax.random.randint(jax.random.key(1), (B, L), 3, V).at[:, 0].set(1)
  variables = jax.jit(lambda: MODEL.init(jax.random.key(2), annotations, tokens, train=False))()
  return annotations, tokens, variables


def test_attention_is_a_distribution_over_regions_at_every_word(setup):
  annotations, tokens, variables = setup
  out = forward(variables, annotations, tokens)
  assert out["logits"].shape == (B, L, V) and out["logits"].dtype == jnp.float32
  assert out["alphas"].shape == (B, L, N)
  np.testing.assert_allclose(out["alphas"].sum(-1), np.ones((B, L)), rtol=1e-6)
  assert (out["alphas"] >= 0).all() and ((out["betas"] > 0) & (out["betas"] < 1)).all()


def test_a_masked_region_gets_no_weight_and_cannot_move_the_output(setup):
  annotations, tokens, variables = setup
  mask = jnp.ones((B, N), bool).at[0, 1].set(False).at[1, 4].set(False)
  out = forward(variables, annotations, tokens, mask)
  assert (out["alphas"][0, :, 1] == 0).all() and (out["alphas"][1, :, 4] == 0).all()
  np.testing.assert_allclose(out["alphas"].sum(-1), np.ones((B, L)), rtol=1e-6)
  moved = annotations.at[0, 1].add(7.0).at[1, 4].add(-5.0)  # what a masked region holds does not matter
  again = forward(variables, moved, tokens, mask)
  np.testing.assert_allclose(again["logits"], out["logits"], rtol=1e-5, atol=1e-6)


def test_teacher_forced_logits_at_step_t_see_only_words_up_to_t(setup):
  annotations, tokens, variables = setup
  t = 3
  out = forward(variables, annotations, tokens)
  changed = tokens.at[:, t + 1:].set((tokens[:, t + 1:] + 1) % V)
  again = forward(variables, annotations, changed)
  np.testing.assert_array_equal(again["logits"][:, :t + 1], out["logits"][:, :t + 1])
  assert not np.allclose(again["logits"][:, t + 1], out["logits"][:, t + 1])


def test_decode_steps_equal_teacher_forcing_and_dropout_acts_only_in_training(setup):
  annotations, tokens, variables = setup
  out = forward(variables, annotations, tokens)
  state = init_state(variables, annotations)
  for t in range(L):
    log_probs, alpha, state = decode_step(variables, state, tokens[:, t])
    np.testing.assert_allclose(log_probs, jax.nn.log_softmax(out["logits"][:, t]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(alpha, out["alphas"][:, t], rtol=1e-5, atol=1e-6)
  trained = jax.jit(lambda v: MODEL.apply(v, annotations, tokens, train=True, rngs={"dropout": jax.random.key(3)}))(
      variables)
  assert not np.allclose(trained["logits"], out["logits"])
  np.testing.assert_allclose(trained["alphas"], out["alphas"], rtol=1e-6)  # dropout is after the LSTM only


def test_bfloat16_compute_gives_float32_logits(setup):
  annotations, tokens, variables = setup
  model = sat.ShowAttendTell(vocab_size=V, embed_dim=4, hidden_dim=9, attention_dim=3, dtype=jnp.bfloat16)
  out, inter = jax.jit(lambda v: model.apply(v, annotations, tokens, train=False, capture_intermediates=True))(
      variables)
  assert out["logits"].dtype == jnp.float32
  assert inter["intermediates"]["out_h"]["__call__"][0].dtype == jnp.bfloat16


def test_the_penalty_is_zero_when_every_region_sums_to_one_over_the_caption():
  """N=6 regions, L=7 steps of which 6 are words: uniform weights 1/6 sum to one per region over the words (the
  padded step does not count); masked-out regions (weight 0 throughout) are not counted either."""
  words = jnp.array([[True] * 6 + [False]] * B)
  uniform = jnp.full((B, L, N), 1.0 / N)
  np.testing.assert_allclose(penalty(uniform, words), np.zeros(B), atol=1e-6)
  focused = jnp.zeros((B, L, N)).at[:, :, 0].set(1.0)  # always region 0: it sums to 6, the others to 0
  np.testing.assert_allclose(penalty(focused, words), np.full(B, (1 - 6) ** 2.0))
  five = jnp.zeros((B, L, N)).at[:, :5, :5].set(jnp.eye(5)).at[:, 5, :5].set(0.2)  # region 5 masked out
  np.testing.assert_allclose(penalty(five, words), np.full(B, 5 * 0.2 ** 2), rtol=1e-5)


def test_caption_loss_ignores_padding_and_adds_the_penalty(setup):
  annotations, tokens, variables = setup
  out = forward(variables, annotations, tokens)
  targets = jnp.concatenate([tokens[:, 1:], jnp.zeros((B, 1), jnp.int32)], 1).at[1, 4:].set(0)
  plain, aux = loss(out, targets, penalty=0.0)
  altered = dict(out, logits=out["logits"].at[1, 4:].add(9.0))  # logits at padded targets do not count
  np.testing.assert_allclose(loss(altered, targets, penalty=0.0)[0], plain, rtol=1e-6)
  with_penalty, _ = loss(out, targets, penalty=0.5)
  np.testing.assert_allclose(with_penalty, plain + 0.5 * aux["penalty"], rtol=1e-5)


def _decoder(variables, annotations):
  return (lambda s, t: MODEL.apply(variables, s, t, method=MODEL.decode_step)), init_state(variables, annotations)


def test_beam_search_of_width_one_is_greedy_and_scores_its_caption(setup):
  annotations, _, variables = setup
  step, state = _decoder(variables, annotations)
  kwargs = dict(batch_size=B, bos=1, eos=2, max_len=L)
  greedy = jax.jit(lambda s: cd.greedy(step, s, **kwargs))(state)
  beam1 = jax.jit(lambda s: cd.beam_search(step, s, beam_size=1, **kwargs))(state)
  np.testing.assert_array_equal(beam1["tokens"], greedy["tokens"])
  np.testing.assert_allclose(beam1["alphas"], greedy["alphas"], rtol=1e-6)
  np.testing.assert_allclose(beam1["log_prob"], greedy["log_prob"], rtol=1e-5)
  beam4 = jax.jit(lambda s: cd.beam_search(step, s, beam_size=4, **kwargs))(state)
  assert beam4["tokens"].shape == (B, L) and beam4["alphas"].shape == (B, L, N)
  for out in (greedy, beam4):  # the returned log-probability is the teacher-forced one of the caption written
    words = np.asarray(out["tokens"])
    inputs = jnp.concatenate([jnp.ones((B, 1), jnp.int32), out["tokens"][:, :-1]], 1)
    forced = forward(variables, annotations, inputs)
    log_probs = np.take_along_axis(np.asarray(jax.nn.log_softmax(forced["logits"])), words[..., None], -1)[..., 0]
    np.testing.assert_allclose(out["log_prob"], (log_probs * (words > 0)).sum(-1), rtol=1e-4)


def test_decoding_stops_at_eos_and_pads_after_it():
  """A toy decoder that writes 5, 6, <eos> then anything: every caption is [5, 6, 2, 0, ...] with zero attention
  after <eos>, whatever max_len."""
  def step(state, token):
    t = state["t"]
    word = jnp.array([5, 6, 2, 7, 7, 7, 7, 7])[jnp.minimum(t, 7)]  # [B]
    log_probs = jnp.where(jnp.arange(V) == word[:, None], 0.0, -5.0)
    return jax.nn.log_softmax(log_probs), jnp.full((token.shape[0], 3), 1 / 3), {"t": t + 1}
  state = {"t": jnp.zeros((3,), jnp.int32)}
  for search in (lambda: cd.greedy(step, state, batch_size=3, bos=1, eos=2, max_len=6),
                 lambda: cd.beam_search(step, state, batch_size=3, beam_size=2, bos=1, eos=2, max_len=6)):
    out = search()
    np.testing.assert_array_equal(out["tokens"], np.tile([5, 6, 2, 0, 0, 0], (3, 1)))
    assert (out["alphas"][:, 3:] == 0).all() and np.allclose(out["alphas"][:, :3].sum(-1), 1)
  with pytest.raises(ValueError, match="beam_size must be at least 1, got 0"):
    cd.beam_search(step, state, batch_size=3, beam_size=0, bos=1, eos=2, max_len=6)


def test_bad_inputs_raise(setup):
  annotations, tokens, variables = setup
  with pytest.raises(ValueError, match=r"expected annotations \[B,N,D\]"):
    MODEL.apply(variables, annotations.reshape(B, 2, 3, D), tokens, train=False)
  with pytest.raises(ValueError, match=r"mask must be \[B,N\]"):
    MODEL.apply(variables, annotations, tokens, train=False, mask=jnp.ones((B, N + 1), bool))
  with pytest.raises(ValueError, match=r"targets must be \[B,L\]"):
    sat.caption_loss(forward(variables, annotations, tokens), tokens[:, 1:], penalty=1.0)

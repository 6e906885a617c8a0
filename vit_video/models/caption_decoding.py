"""Greedy and beam-search decoding of any word-by-word decoder, with the attention map of every word.

A decoder is given as `step_fn(state, token [B]) -> (log_probs [B,V], alpha [B,N], new_state)` and its initial
`state`, a pytree whose every leaf has the batch first (e.g. `ShowAttendTell.decode_step` and `init_state` bound
to their variables). Both searches start from <bos>, stop a caption at its <eos> (kept in the output, then <pad> = 0)
and at `max_len` words, and run whole under jit (fixed shapes: a lax.scan over max_len steps). <pad> and <bos> are
never written (their log-probabilities are set to NEG before the choice).
"""
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

PAD = 0
NEG = -1e9  # the log-probability of what may not happen (finite: NEG + NEG stays finite)
StepFn = Callable[[Any, jax.Array], tuple[jax.Array, jax.Array, Any]]


def _check(max_len: int, beam_size: int = 1) -> None:
  if max_len < 1:
    raise ValueError(f"max_len must be at least 1, got {max_len}")
  if beam_size < 1:
    raise ValueError(f"beam_size must be at least 1, got {beam_size}")


def _allowed(log_probs: jax.Array, bos: int) -> jax.Array:
  """[...,V] log-probabilities with <pad> and <bos> ruled out."""
  return log_probs.at[..., PAD].set(NEG).at[..., bos].set(NEG)


def greedy(step_fn: StepFn, state: Any, *, batch_size: int, bos: int, eos: int,
           max_len: int) -> dict[str, jax.Array]:
  """The most likely word at every step -> {"tokens": [B,max_len] int32 (words, <eos>, then <pad>), "alphas":
  [B,max_len,N] (zero after <eos>), "log_prob": [B] the caption's log-probability (<eos> included)}."""
  _check(max_len)

  def body(carry, _):
    state, token, done, log_prob = carry
    log_probs, alpha, state = step_fn(state, token)  # [B,V], [B,N]
    log_probs = _allowed(log_probs, bos)
    word = jnp.argmax(log_probs, -1).astype(jnp.int32)  # [B]
    word = jnp.where(done, PAD, word)
    log_prob = log_prob + jnp.where(done, 0.0, jnp.take_along_axis(log_probs, word[:, None], -1)[:, 0])
    alpha = jnp.where(done[:, None], 0.0, alpha)
    return (state, word, done | (word == eos), log_prob), (word, alpha)

  start = (state, jnp.full((batch_size,), bos, jnp.int32), jnp.zeros((batch_size,), bool),
           jnp.zeros((batch_size,), jnp.float32))
  (_, _, _, log_prob), (words, alphas) = jax.lax.scan(body, start, None, length=max_len)
  return {"tokens": words.T, "alphas": alphas.transpose(1, 0, 2), "log_prob": log_prob}  # [L,B] -> [B,L]


def beam_search(step_fn: StepFn, state: Any, *, batch_size: int, beam_size: int, bos: int, eos: int,
                max_len: int) -> dict[str, jax.Array]:
  """Keeps the `beam_size` most likely partial captions per example (sum of word log-probabilities, no length
  normalisation); a beam that wrote <eos> is finished and keeps its score. Returns the best beam's
  {"tokens": [B,max_len], "alphas": [B,max_len,N], "log_prob": [B]}, as `greedy` (which beam_size 1 equals)."""
  _check(max_len, beam_size)
  b, k = batch_size, beam_size
  tile = lambda x: jnp.repeat(x, k, axis=0)  # [B,...] -> [B*K,...], beam-major within each example
  state = jax.tree.map(tile, state)
  flat = lambda x: x.reshape((b * k,) + x.shape[2:])  # [B,K,...] -> [B*K,...]

  def body(carry, t):
    state, tokens, alphas, scores, done = carry  # tokens [B,K,L], alphas [B,K,L,N], scores, done [B,K]
    last = jnp.where(t == 0, bos, tokens[:, :, jnp.maximum(t - 1, 0)])  # [B,K]
    log_probs, alpha, state = step_fn(state, flat(last))  # [B*K,V], [B*K,N]
    v = log_probs.shape[-1]
    log_probs = _allowed(log_probs.reshape(b, k, v), bos)
    finished = jnp.full((v,), NEG).at[PAD].set(0.0)  # a finished beam only continues with <pad>, at no cost
    log_probs = jnp.where(done[..., None], finished, log_probs)
    candidates = (scores[..., None] + log_probs).reshape(b, k * v)  # [B,K*V]
    scores, index = jax.lax.top_k(candidates, k)  # [B,K]
    parent, word = index // v, (index % v).astype(jnp.int32)  # [B,K]
    gather = lambda x: jnp.take_along_axis(x, parent.reshape(parent.shape + (1,) * (x.ndim - 2)), axis=1)
    rows = (jnp.arange(b)[:, None] * k + parent).reshape(-1)  # [B*K]: each new beam's parent in the flat batch
    state = jax.tree.map(lambda x: x[rows], state)
    alpha = jnp.where(gather(done)[..., None], 0.0, gather(alpha.reshape(b, k, -1)))  # [B,K,N]
    tokens = gather(tokens).at[:, :, t].set(word)
    alphas = gather(alphas).at[:, :, t].set(alpha)
    done = gather(done) | (word == eos)
    return (state, tokens, alphas, scores, done), None

  n = jax.eval_shape(lambda s: step_fn(s, jnp.zeros((b * k,), jnp.int32))[1], state).shape[-1]
  scores = jnp.tile(jnp.array([0.0] + [NEG] * (k - 1), jnp.float32), (b, 1))  # at first only beam 0 is live
  start = (state, jnp.zeros((b, k, max_len), jnp.int32), jnp.zeros((b, k, max_len, n), jnp.float32), scores,
           jnp.zeros((b, k), bool))
  (_, tokens, alphas, scores, _), _ = jax.lax.scan(body, start, jnp.arange(max_len))
  best = jnp.argmax(scores, -1)  # [B]
  pick = lambda x: jnp.take_along_axis(x, best.reshape((b, 1) + (1,) * (x.ndim - 2)), axis=1)[:, 0]
  return {"tokens": pick(tokens), "alphas": pick(alphas), "log_prob": pick(scores)}

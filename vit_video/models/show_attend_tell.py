"""Show, Attend and Tell (Xu et al. 2015): an LSTM that writes a caption word by word, attending over image regions.

The encoder is any image model's feature grid (`models.create_model(name, num_classes=0, return_grid=True)`),
flattened to N annotation vectors a_i [B,N,D]. At step t, with the previous word y_{t-1} and state h_{t-1}:

  e_ti  = v^T tanh(W_a a_i + W_h h_{t-1})      additive scores (layers/scores.py AdditiveScores)      [B,N]
  alpha = softmax_i(e_ti)                      soft attention; masked regions get exactly 0             [B,N]
  beta  = sigmoid(f_beta(h_{t-1}))             the gating scalar (the paper's section 4.2.1)             [B,1]
  z_t   = beta * sum_i alpha_ti a_i            the context                                             [B,D]
  h_t, c_t = LSTM([E y_{t-1}; z_t], (h_{t-1}, c_{t-1}))
  p(y_t) = softmax(L_o dropout(E y_{t-1} + L_h h_t + L_z z_t))   the deep output layer (its eq. 7)

h_0 and c_0 come from the mean annotation through one tanh layer each (init_h, init_c). Trained with teacher forcing
(`__call__`: the steps run in one `nn.scan`), the loss is the words' negative log-likelihood plus the doubly
stochastic regulariser `attention_penalty` (eq. 14): lambda * sum_i (1 - sum_t alpha_ti)^2, which pushes the model to
look at every region over the caption. Decoding one word at a time (`init_state`, `decode_step`) shares every
parameter with `__call__`; vit_video/models/caption_decoding.py has greedy and beam search over it.

This is no image classifier: it takes annotations and words, so it is not in models.MODELS.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_video.layers import scores

Dtype = Any


class AttendStep(nn.Module):
  """One decoder step: attend over the annotations with h_{t-1}, gate the context, advance the LSTM."""

  hidden_dim: int  # H, the LSTM's width
  attention_dim: int  # A, the additive score's MLP width
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, carry: tuple[jax.Array, jax.Array], embedded: jax.Array, annotations: jax.Array,
               mask: jax.Array) -> tuple[tuple[jax.Array, jax.Array], tuple[jax.Array, ...]]:
    """carry (c, h) [B,H] each, embedded E y_{t-1} [B,E], annotations [B,N,D], mask bool [B,N]
    -> new carry, (h_t [B,H], z_t [B,D], alpha_t [B,N] float32, beta_t [B])."""
    c, h = carry
    e = scores.AdditiveScores(self.attention_dim, dtype=self.dtype, param_dtype=self.param_dtype,
                              name="attention")(annotations, h)  # [B,N]
    alpha = scores.attention_weights(e.astype(jnp.float32), mask)  # [B,N], float32 softmax
    beta = nn.sigmoid(nn.Dense(1, dtype=self.dtype, param_dtype=self.param_dtype, name="f_beta")(h))  # [B,1]
    z = beta * scores.weighted_sum(alpha.astype(annotations.dtype), annotations)  # [B,D]
    lstm = nn.OptimizedLSTMCell(self.hidden_dim, dtype=self.dtype, param_dtype=self.param_dtype, name="lstm")
    (c, h), _ = lstm((c, h), jnp.concatenate([embedded, z.astype(embedded.dtype)], axis=-1))  # [B,E+D] in
    return (c, h), (h, z, alpha, beta[:, 0])


def _scan_steps(step: AttendStep, carry, embedded, annotations, mask):
  return step(carry, embedded, annotations, mask)


class ShowAttendTell(nn.Module):
  """The attention decoder: annotations [B,N,D] and words [B,L] -> next-word logits [B,L,V] and attention maps."""

  vocab_size: int  # V, including <pad>, <bos>, <eos>, <unk>
  embed_dim: int = 64  # E, word embeddings and the deep output's width
  hidden_dim: int = 128  # H, the LSTM's width
  attention_dim: int = 64  # A, the additive score's MLP width
  dropout_rate: float = 0.5  # before the output layer L_o, as the paper's dropout
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    dense = lambda features, name: nn.Dense(features, dtype=self.dtype, param_dtype=self.param_dtype, name=name)
    self.embed = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype, param_dtype=self.param_dtype)
    self.init_h, self.init_c = dense(self.hidden_dim, "init_h"), dense(self.hidden_dim, "init_c")
    self.step = AttendStep(self.hidden_dim, self.attention_dim, dtype=self.dtype, param_dtype=self.param_dtype)
    self.out_h, self.out_z = dense(self.embed_dim, "out_h"), dense(self.embed_dim, "out_z")
    self.out = dense(self.vocab_size, "out")
    self.dropout = nn.Dropout(self.dropout_rate)

  def _check(self, annotations: jax.Array, mask: jax.Array | None) -> jax.Array:
    if annotations.ndim != 3:
      raise ValueError(f"expected annotations [B,N,D] (a flattened feature grid), got shape {annotations.shape}")
    if mask is None:
      return jnp.ones(annotations.shape[:2], bool)
    if mask.shape != annotations.shape[:2]:
      raise ValueError(f"mask must be [B,N] = {annotations.shape[:2]}, got {mask.shape}")
    return mask.astype(bool)

  def _initial_carry(self, annotations: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(c_0, h_0) [B,H] each, from the mean of the unmasked annotations."""
    weights = mask.astype(annotations.dtype)[..., None]  # [B,N,1]
    mean = (annotations * weights).sum(1) / jnp.maximum(weights.sum(1), 1)  # [B,D]
    return jnp.tanh(self.init_c(mean)), jnp.tanh(self.init_h(mean))

  def _logits(self, embedded: jax.Array, h: jax.Array, z: jax.Array, *, deterministic: bool) -> jax.Array:
    """The deep output: [...,E], [...,H], [...,D] -> float32 [...,V]."""
    x = self.dropout(embedded + self.out_h(h) + self.out_z(z.astype(self.dtype)), deterministic=deterministic)
    return self.out(x).astype(jnp.float32)

  def __call__(self, annotations: jax.Array, tokens: jax.Array, *, train: bool,
               mask: jax.Array | None = None) -> dict[str, jax.Array]:
    """Teacher forcing: annotations [B,N,D], input words [B,L] (<bos> then the caption's words), mask bool [B,N]
    (True: a region to attend; None: all) -> {"logits": [B,L,V] float32 (logits[:, t] predicts word t + 1 from
    words 0..t), "alphas": [B,L,N] float32, "betas": [B,L]}."""
    mask = self._check(annotations, mask)
    if tokens.ndim != 2 or tokens.shape[0] != annotations.shape[0]:
      raise ValueError(f"expected tokens [B,L] with B={annotations.shape[0]}, got shape {tokens.shape}")
    embedded = self.embed(tokens)  # [B,L,E]
    scan = nn.scan(_scan_steps, variable_broadcast="params", split_rngs={"params": False},
                   in_axes=(1, nn.broadcast, nn.broadcast), out_axes=1)
    _, (h, z, alphas, betas) = scan(self.step, self._initial_carry(annotations, mask), embedded, annotations, mask)
    return {"logits": self._logits(embedded, h, z, deterministic=not train), "alphas": alphas, "betas": betas}

  def init_state(self, annotations: jax.Array, mask: jax.Array | None = None) -> dict[str, jax.Array]:
    """The decoding state before the first word: {"c", "h" [B,H], "annotations" [B,N,D], "mask" [B,N]}; every
    leaf has the batch first, so beam search can tile and gather it."""
    mask = self._check(annotations, mask)
    c, h = self._initial_carry(annotations, mask)
    return {"c": c, "h": h, "annotations": annotations, "mask": mask}

  def decode_step(self, state: dict[str, jax.Array], token: jax.Array
                  ) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
    """One word, eval mode: state, previous word [B] -> (log-probabilities of the next [B,V] float32, the
    attention alpha_t [B,N], the new state)."""
    embedded = self.embed(token)  # [B,E]
    (c, h), (h, z, alpha, _) = self.step((state["c"], state["h"]), embedded, state["annotations"], state["mask"])
    log_probs = jax.nn.log_softmax(self._logits(embedded, h, z, deterministic=True))
    return log_probs, alpha, dict(state, c=c, h=h)


def attention_penalty(alphas: jax.Array, word_mask: jax.Array) -> jax.Array:
  """The doubly stochastic regulariser sum_i (1 - sum_t alpha_ti)^2 per example (lambda is the caller's).

  alphas [B,L,N], word_mask [B,L] (True at the steps that predict a word or <eos>) -> [B] float32. Regions that a
  mask kept from the attention (alpha_ti = 0 at every t) are not counted.
  """
  if alphas.ndim != 3 or word_mask.shape != alphas.shape[:2]:
    raise ValueError(f"expected alphas [B,L,N] and word_mask [B,L], got {alphas.shape} and {word_mask.shape}")
  alphas = alphas.astype(jnp.float32)
  total = (alphas * word_mask[..., None]).sum(1)  # [B,N]: sum over the caption's steps
  attended = (alphas > 0).any(1)  # [B,N]
  return jnp.where(attended, (1.0 - total) ** 2, 0.0).sum(-1)


def caption_loss(outputs: dict[str, jax.Array], targets: jax.Array, *, penalty: float) -> tuple[jax.Array, dict]:
  """The paper's loss, averaged over the batch: -sum_t log p(y_t) + penalty * attention_penalty.

  outputs: `ShowAttendTell.__call__`'s; targets [B,L] (the input words shifted by one: word t + 1 at t; 0 is
  <pad>, not scored) -> (loss, {"nll": per-word NLL, "penalty": the regulariser, both batch means}).
  """
  logits = outputs["logits"]
  if targets.shape != logits.shape[:2]:
    raise ValueError(f"targets must be [B,L] = {logits.shape[:2]}, got {targets.shape}")
  word_mask = targets > 0  # [B,L]
  nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], axis=-1)[..., 0]  # [B,L]
  nll_sum = (nll * word_mask).sum(-1)  # [B]
  reg = attention_penalty(outputs["alphas"], word_mask)  # [B]
  loss = (nll_sum + penalty * reg).mean()
  return loss, {"nll": nll_sum.sum() / jnp.maximum(word_mask.sum(), 1), "penalty": reg.mean()}

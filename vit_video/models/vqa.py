"""Visual question answering: stacked attention networks (Yang et al. 2016, "Stacked Attention Networks for Image
Question Answering") and the two baselines that expose a dataset's priors.

    model = MODELS["san"](num_answers=13, vocab_size=30, question_encoder="lstm")
    logits = model.apply(variables, image, question, question_lengths, train=False)
    # image [B,H,W,C], question int [B,L] (padded ids), question_lengths int [B] -> [B,K] float32

Every model here takes the same three inputs (and ignores the one it does not use), so that a study trains them
alike:

  san            image regions v_I [B,N,D] (an image family's feature grid, `models.create_model(image_model,
                 num_classes=0, return_grid=True)`, each region through tanh(W v + b) to the width D, the paper's
                 eq. 2) and a question vector u_0 [B,D] ("lstm" or "transformer", below); then `attention_layers` (K)
                 attention layers, the paper's eq. 15-18:
                   h_A = tanh(W_I v_I + (W_Q u_{k-1} + b_A))        [B,N,A]
                   p_I = softmax_N(W_P h_A + b_P)                    [B,N]    (sown: intermediates/attention_{k})
                   u_k = sum_i p_i v_i + u_{k-1}                     [B,D]
                 and the answer distribution softmax(W_u u_K + b_u) (eq. 19); with `head_hidden` > 0 an MLP
                 instead (not the paper's: a linear read-out of u_K = v~ + u_{k-1} is additive in the image and the
                 question except through p_I, so an MLP may compare them more easily). `fusion` (not the
                 paper's either) sets eq. 18: "sum" u_k = v~ + u_{k-1} (the paper's), "product" u_{k-1} + v~ * u_{k-1}
                 or "sum_product" u_{k-1} + v~ + v~ * u_{k-1}: with an elementwise product a linear read-out can
                 compare what the question names with what the image shows (a bilinear form, as the easy-VQA
                 baseline's and MCB/MLB's multiplicative fusion).
  pooled         the same without attention: u = mean_i v_i + u_0 (every region weighted 1/N; `fusion` as above).
  question_only  softmax(W u_0 + b): the language prior (the image is never read).
  image_only     softmax(W mean_i v_i + b): what the image alone tells (the question is never read).

Question encoders, [B,L] ids -> [B,D]:
  lstm         word embeddings -> LSTM (flax `nn.RNN` over `OptimizedLSTMCell(D)`), the hidden state after the
               last real word (`seq_lengths`), as SAN's LSTM encoder.
  transformer  word embeddings + sinusoidal positions -> `depth` pre-norm blocks of masked self-attention
               (padding keys get zero weight) and MLP -> LayerNorm -> mean over the real words ("mean") or the
               state of a prepended class token ("cls").
Padding never changes the encoding (tests/models/test_vqa.py). These are not image classifiers, so they are not in
`vit_video.models.MODELS`.
"""
import functools
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_video import models
from vit_video.layers import encodings
from vit_video.layers.attention import MultiHeadAttention
from vit_video.layers.mlp import MlpBlock
from vit_video.layers.scores import attention_weights

Dtype = Any
QUESTION_ENCODERS = ("lstm", "transformer")


def _check_inputs(image: jax.Array, question: jax.Array, question_lengths: jax.Array) -> None:
  if image.ndim != 4:
    raise ValueError(f"image must be [B,H,W,C], got shape {image.shape}")
  if question.ndim != 2 or not jnp.issubdtype(question.dtype, jnp.integer):
    raise ValueError(f"question must be integer ids [B,L], got {question.dtype} of shape {question.shape}")
  if question_lengths.shape != question.shape[:1] or image.shape[0] != question.shape[0]:
    raise ValueError(f"batch sizes differ: image {image.shape}, question {question.shape}, question_lengths "
                     f"{question_lengths.shape} (expected [B])")


class LstmQuestionEncoder(nn.Module):
  """Embedding -> LSTM; the hidden state after the last real word: ids [B,L], lengths [B] -> [B,D]."""
  vocab_size: int
  embed_dim: int = 32  # E, word embedding width.
  width: int = 64  # D, the LSTM's hidden width.
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, question: jax.Array, question_lengths: jax.Array, *, deterministic: bool) -> jax.Array:
    del deterministic  # no dropout
    x = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype, param_dtype=self.param_dtype,
                 name="embedding")(question)  # [B,L,E]
    # parent=None: the cell is adopted by the RNN (lstm/cell/...), not registered on this module.
    cell = nn.OptimizedLSTMCell(self.width, dtype=self.dtype, param_dtype=self.param_dtype, parent=None)
    # With seq_lengths the RNN returns the carry of each sequence's last real step, so padding is never read.
    (_, h), _ = nn.RNN(cell, return_carry=True, name="lstm")(x, seq_lengths=question_lengths)  # h [B,D]
    return h


class TransformerBlock(nn.Module):
  """Pre-norm block: LayerNorm -> masked self-attention -> residual; LayerNorm -> MLP -> residual. [B,N,D] ->
  [B,N,D]; `mask` [B,1,1,N] bool (True = a real token, the only keys attended to)."""
  num_heads: int
  mlp_dim: int
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, *, deterministic: bool) -> jax.Array:
    norm = lambda name: nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, param_dtype=self.param_dtype, name=name)
    y = MultiHeadAttention(num_heads=self.num_heads, dtype=self.dtype, param_dtype=self.param_dtype,
                           name="attention")(norm("norm_0")(x), mask=mask, deterministic=deterministic)
    x = x + nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
    return x + MlpBlock(mlp_dim=self.mlp_dim, dropout_rate=self.dropout_rate, dtype=self.dtype,
                        param_dtype=self.param_dtype, name="mlp")(norm("norm_1")(x), deterministic=deterministic)


class TransformerQuestionEncoder(nn.Module):
  """Embedding + sinusoidal positions -> `depth` masked blocks -> LayerNorm -> pooled: ids [B,L], lengths [B] ->
  [B,D]. `pool`: "mean" over the real words, or "cls" (a learned class token, position 0, prepended)."""
  vocab_size: int
  width: int = 64  # D, the token width (embeddings too).
  depth: int = 2
  num_heads: int = 4
  mlp_dim: int = 128
  pool: str = "mean"
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, question: jax.Array, question_lengths: jax.Array, *, deterministic: bool) -> jax.Array:
    if self.pool not in ("mean", "cls"):
      raise ValueError(f"pool {self.pool!r} is not one of ('mean', 'cls')")
    valid = jnp.arange(question.shape[1])[None, :] < question_lengths[:, None]  # [B,L]
    x = nn.Embed(self.vocab_size, self.width, dtype=self.dtype, param_dtype=self.param_dtype,
                 name="embedding")(question)  # [B,L,D]
    if self.pool == "cls":
      cls = self.param("cls", nn.initializers.zeros, (1, 1, self.width), self.param_dtype)
      x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, self.width)).astype(x.dtype), x], axis=1)  # [B,1+L,D]
      valid = jnp.pad(valid, ((0, 0), (1, 0)), constant_values=True)  # [B,1+L]
    x = x + encodings.sinusoidal_1d(x.shape[1], self.width).astype(x.dtype)[None]  # [B,N,D]
    x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
    mask = valid[:, None, None, :]  # [B,1,1,N]: every query attends to the real tokens only
    for i in range(self.depth):
      x = TransformerBlock(self.num_heads, self.mlp_dim, self.dropout_rate, dtype=self.dtype,
                           param_dtype=self.param_dtype, name=f"block_{i}")(x, mask, deterministic=deterministic)
    x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, param_dtype=self.param_dtype, name="norm")(x)
    if self.pool == "cls":
      return x[:, 0]
    weights = valid.astype(x.dtype) / question_lengths[:, None].astype(x.dtype)  # [B,L], 1/length on real words
    return jnp.einsum("bn,bnd->bd", weights, x)


FUSIONS = ("sum", "product", "sum_product")


def fuse(u: jax.Array, attended: jax.Array, fusion: str) -> jax.Array:
  """The next query from the question u [B,D] and what was read of the image v~ [B,D] -> [B,D]: u + v~ ("sum", the
  paper's eq. 18), u + v~ * u ("product") or u + v~ + v~ * u ("sum_product")."""
  if fusion == "sum":
    return u + attended
  if fusion == "product":
    return u + attended * u
  if fusion == "sum_product":
    return u + attended + attended * u
  raise ValueError(f"fusion {fusion!r} is not one of {FUSIONS}")


class StackedAttentionLayer(nn.Module):
  """One SAN attention layer (eq. 15-18): regions v [B,N,D], query u [B,D] -> u + v~ [B,D] ("sum", the paper's) or
  u + v~ * u ("product"), v~ = sum_i p_i v_i [B,D]; p [B,N] is sown as intermediates/`weights_name`."""
  hidden_dim: int  # A, the width of h_A (k in the paper).
  weights_name: str = "attention"
  fusion: str = "sum"  # one of FUSIONS
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, v: jax.Array, u: jax.Array) -> jax.Array:
    dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype)
    h = jnp.tanh(dense(self.hidden_dim, use_bias=False, name="w_i")(v)
                 + dense(self.hidden_dim, name="w_q")(u)[:, None, :])  # [B,N,A]; w_q's bias is b_A
    p = attention_weights(dense(1, name="w_p")(h)[..., 0])  # [B,N,1] -> [B,N]; b_P cancels in the softmax
    self.sow("intermediates", self.weights_name, p)
    return fuse(u, jnp.einsum("bn,bnd->bd", p.astype(v.dtype), v), self.fusion)


class VQA(nn.Module):
  """A VQA model: `kind` in KINDS picks what it reads and how it fuses (see the module docstring).

  (image [B,H,W,C], question int [B,L], question_lengths int [B], *, train) -> logits [B,K] float32.
  """
  KINDS: ClassVar[tuple[str, ...]] = ("san", "pooled", "question_only", "image_only")

  num_answers: int  # K
  vocab_size: int
  kind: str = "san"
  question_encoder: str = "lstm"  # one of QUESTION_ENCODERS
  width: int = 64  # D, of the question vector and the projected regions
  embed_dim: int = 32  # the LSTM's word embedding width (the transformer embeds at `width`)
  transformer_depth: int = 2
  transformer_heads: int = 4
  transformer_mlp_dim: int = 128
  transformer_pool: str = "mean"
  attention_layers: int = 2  # K in the paper (2 is its best)
  attention_dim: int = 64  # A
  image_model: str = "resnet18"  # an image family that takes return_grid (vit_video.models)
  image_options: Any = None  # its attributes, e.g. {"stage_sizes": (1, 1), "width": 16}
  head_hidden: int = 0  # > 0: the answer from an MLP, Dense(head_hidden) -> ReLU -> Dense(K), instead of Dense(K)
  fusion: str = "sum"  # how a SAN layer adds what it attended to: "sum" (the paper's) or "product" (FUSIONS)
  in_channels: int = 3
  axis_name: str | None = None  # BatchNorm's named batch axis, for image families that have BatchNorm
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def _question(self, question: jax.Array, question_lengths: jax.Array, train: bool) -> jax.Array:
    """[B,L], [B] -> u_0 [B,D]."""
    options = dict(vocab_size=self.vocab_size, width=self.width, dtype=self.dtype, param_dtype=self.param_dtype,
                   name="question_encoder")
    if self.question_encoder == "lstm":
      encoder = LstmQuestionEncoder(embed_dim=self.embed_dim, **options)
    else:
      encoder = TransformerQuestionEncoder(depth=self.transformer_depth, num_heads=self.transformer_heads,
                                           mlp_dim=self.transformer_mlp_dim, pool=self.transformer_pool, **options)
    return encoder(question, question_lengths, deterministic=not train)

  def _regions(self, image: jax.Array, train: bool) -> jax.Array:
    """[B,H,W,C] -> v_I [B,N,D], N = h*w regions of the image family's grid, row-major."""
    options = dict(self.image_options or {})
    if models.model_class(self.image_model).batch_norm:  # ValueError listing the names on an unknown one
      options["axis_name"] = self.axis_name
    # MODELS[name](...) rather than create_model, whose first argument is also called `name`.
    grid = models.MODELS[self.image_model](
        num_classes=0, return_grid=True, in_channels=self.in_channels, dtype=self.dtype,
        param_dtype=self.param_dtype, name="image_encoder", **options)(image, train=train)  # [B,h,w,D']
    regions = grid.reshape(grid.shape[0], -1, grid.shape[-1])  # [B,h,w,D'] -> [B,N,D']
    return jnp.tanh(nn.Dense(self.width, dtype=self.dtype, param_dtype=self.param_dtype, name="regions")(regions))

  @nn.compact
  def __call__(self, image: jax.Array, question: jax.Array, question_lengths: jax.Array, *,
               train: bool) -> jax.Array:
    """[B,H,W,C], [B,L], [B] -> [B,K] float32 logits."""
    if self.kind not in self.KINDS:
      raise ValueError(f"kind {self.kind!r} is not one of {self.KINDS}")
    if self.fusion not in FUSIONS:
      raise ValueError(f"fusion {self.fusion!r} is not one of {FUSIONS}")
    if self.question_encoder not in QUESTION_ENCODERS:
      raise ValueError(f"question_encoder {self.question_encoder!r} is not one of {QUESTION_ENCODERS}")
    _check_inputs(image, question, question_lengths)
    if image.shape[-1] != self.in_channels:
      raise ValueError(f"image has {image.shape[-1]} channels, in_channels is {self.in_channels}")
    if self.kind == "question_only":
      u = self._question(question, question_lengths, train)
    elif self.kind == "image_only":
      u = self._regions(image, train).mean(axis=1)  # [B,N,D] -> [B,D]
    else:
      u = self._question(question, question_lengths, train)  # u_0 [B,D]
      v = self._regions(image, train)
      if self.kind == "pooled":
        u = fuse(u, v.mean(axis=1), self.fusion)
      for k in range(self.attention_layers if self.kind == "san" else 0):
        u = StackedAttentionLayer(self.attention_dim, weights_name=f"attention_{k}", fusion=self.fusion,
                                  dtype=self.dtype, param_dtype=self.param_dtype, name=f"attention_{k}")(v, u)
    if self.head_hidden:
      u = nn.relu(nn.Dense(self.head_hidden, dtype=self.dtype, param_dtype=self.param_dtype, name="head_hidden")(u))
    return nn.Dense(self.num_answers, dtype=self.dtype, param_dtype=self.param_dtype, name="head")(u).astype(
        jnp.float32)


MODELS = {kind: functools.partial(VQA, kind=kind) for kind in VQA.KINDS}

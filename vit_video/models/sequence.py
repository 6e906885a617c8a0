"""Sequence classifiers of token ids: an LSTM, a GRU and a small Transformer, `[B,N] int -> [B,K] float32`.

For the long-range study (vit_video/studies/long_range.py, experiments/long_range.py): each reads the whole
sequence and classifies from its last position, so information from token t reaches the output across the N - t
later steps (the recurrent models) or through attention (the Transformer, in a constant number of layers).

  RecurrentClassifier  Embed -> `flax.linen.RNN` over `OptimizedLSTMCell` or `GRUCell` (zero initial state) ->
                       h_N -> Dense head. Gates in `dtype`; the carry is created in `param_dtype` (float32).
  TransformerClassifier  Embed + positions (fixed sinusoidal, or learned for up to `max_length` tokens) -> `depth`
                       pre-norm blocks of vit.EncoderBlock (vit_video.layers' attention and MLP; bidirectional, no
                       mask) -> LayerNorm -> the last token -> Dense head.

Both mark their token embeddings with `self.perturb("embeddings", x)` ([B,N,E]): pass a zero `perturbations`
collection of that shape to `apply` and the gradient with respect to it is d loss / d x_t for every position
(the study's vanishing-gradient measurement); without it, `perturb` does nothing.

The VARIANTS are the study's matched sizes (about 26-27k parameters each, within 5%, for K = 16 classes and 32
input ids; tests/models/test_sequence.py pins them). These models are not image classifiers and so are not in
`vit_video.models.MODELS`: the image/video training loop cannot train them; the study has its own small loop.

Parameter names: embedding, rnn/cell/{ii,if,ig,io,hi,hf,hg,ho} (LSTM) or rnn/cell/{ir,iz,in,hr,hz,hn} (GRU),
pos_embedding (learned positions), encoderblock_{i}, encoder_norm, head.
"""
import functools
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_video.layers.attention import Implementation
from vit_video.layers.encodings import sinusoidal_1d
from vit_video.models.vit import EncoderBlock

CELLS = {"lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell}


def _check_tokens(tokens: jax.Array, vocab_size: int) -> None:
  if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
    raise ValueError(f"tokens must be integer ids [B,N]; got shape {tokens.shape} and dtype {tokens.dtype}")
  if vocab_size < 1:
    raise ValueError(f"vocab_size={vocab_size} must be >= 1")


class RecurrentClassifier(nn.Module):
  """Embedding -> LSTM or GRU over the N steps -> the last hidden state -> linear head.

  Attributes:
    cell: "lstm" (`nn.OptimizedLSTMCell`) or "gru" (`nn.GRUCell`).
    vocab_size: input ids, tokens in [0, vocab_size).
    num_classes: K.
    features: hidden width L of the cell.
    embed_dim: E, the token embedding width.
  """
  cell: Literal["lstm", "gru"]
  vocab_size: int
  num_classes: int
  features: int = 64
  embed_dim: int = 32
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens: jax.Array, *, train: bool) -> jax.Array:
    """[B,N] int -> [B,K] float32 logits = head(h_N), h = RNN(embed(tokens)). `train` changes nothing (no
    dropout); it is there for the house's call signature."""
    del train
    _check_tokens(tokens, self.vocab_size)
    if self.cell not in CELLS:
      raise ValueError(f"cell {self.cell!r} is not one of {sorted(CELLS)}")
    x = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype, param_dtype=self.param_dtype,
                 name="embedding")(tokens)  # [B,N,E]
    x = self.perturb("embeddings", x)
    # parent=None: the cell is adopted by the RNN (rnn/cell/...), not registered on this module.
    cell = CELLS[self.cell](self.features, dtype=self.dtype, param_dtype=self.param_dtype, parent=None)
    h = nn.RNN(cell, name="rnn")(x)  # [B,N,E] -> [B,N,L]
    return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name="head")(
        h[:, -1]).astype(jnp.float32)  # [B,L] -> [B,K]


class TransformerClassifier(nn.Module):
  """Embedding + positions -> pre-norm Transformer blocks -> LayerNorm -> the last token -> linear head.

  Attributes:
    vocab_size: input ids; num_classes: K.
    width: D; depth: blocks; num_heads: heads (D / num_heads each); mlp_dim: the MLP's hidden width.
    positions: "sinusoidal" (fixed, any length; vit_video.layers.encodings.sinusoidal_1d) or "learned" (a
      `pos_embedding [max_length, D]` table, normal std 0.02; N <= max_length).
    max_length: the learned table's length.
    attention_implementation: "auto" (einsum, fused or chunked by input), "einsum", "fused" or "chunked"
      (O(N) memory), vit_video.layers.attention.
  Token embeddings are drawn N(0, 1), the scale of the sinusoids, so neither drowns the other.
  """
  vocab_size: int
  num_classes: int
  width: int = 32
  depth: int = 3
  num_heads: int = 2
  mlp_dim: int = 64
  positions: Literal["sinusoidal", "learned"] = "sinusoidal"
  max_length: int = 1024
  attention_implementation: Implementation = "auto"
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens: jax.Array, *, train: bool) -> jax.Array:
    """[B,N] int -> [B,K] float32 logits from the last token's final state. `train` selects dropout (none by
    default)."""
    _check_tokens(tokens, self.vocab_size)
    n = tokens.shape[1]
    x = nn.Embed(self.vocab_size, self.width, embedding_init=nn.initializers.normal(1.0), dtype=self.dtype,
                 param_dtype=self.param_dtype, name="embedding")(tokens)  # [B,N,D]
    x = self.perturb("embeddings", x)
    if self.positions == "sinusoidal":
      x = x + sinusoidal_1d(n, self.width).astype(self.dtype)[None]  # [1,N,D]
    elif self.positions == "learned":
      if n > self.max_length:
        raise ValueError(f"{n} tokens exceed the learned position table's max_length={self.max_length}")
      table = self.param("pos_embedding", nn.initializers.normal(0.02), (self.max_length, self.width),
                         self.param_dtype)
      x = x + table[None, :n].astype(self.dtype)  # [1,N,D]
    else:
      raise ValueError(f"positions {self.positions!r} is not 'sinusoidal' or 'learned'")
    for i in range(self.depth):
      x, _ = EncoderBlock(mlp_dim=self.mlp_dim, num_heads=self.num_heads, deterministic=not train,
                          attention_implementation=self.attention_implementation, dtype=self.dtype,
                          param_dtype=self.param_dtype, name=f"encoderblock_{i}")(x, 0.0)  # [B,N,D]
    x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, param_dtype=self.param_dtype, name="encoder_norm")(x)
    return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name="head")(
        x[:, -1]).astype(jnp.float32)  # [B,D] -> [B,K]


# The study's matched sizes (call with vocab_size and num_classes): LSTM 64 units, GRU 74, Transformer D = 32,
# 3 blocks, 2 heads, MLP 64.
VARIANTS = {
    "lstm": functools.partial(RecurrentClassifier, cell="lstm", features=64, embed_dim=32),
    "gru": functools.partial(RecurrentClassifier, cell="gru", features=74, embed_dim=32),
    "transformer": functools.partial(TransformerClassifier, width=32, depth=3, num_heads=2, mlp_dim=64,
                                     positions="sinusoidal"),
}

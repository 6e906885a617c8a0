"""DETR: end-to-end object detection with a transformer (Carion et al. 2020), as in Hugging Face's
`DetrForObjectDetection` and the official code.

    model = DETR(num_classes=91)
    out = model.apply(variables, images, train=False)  # [B,H,W,C] -> logits [B,Q,K+1], boxes [B,Q,4], aux

A ResNet-50 (torchvision layout, frozen BatchNorm) maps the image to [B,H/32,W/32,2048]; a 1x1 conv projects it to
D; a post-norm transformer encoder runs over its N = H/32 * W/32 tokens, with the 2D sine encoding
(layers.encodings.normalized_sine_2d) added to the queries and keys of every attention; the decoder turns Q learned
query embeddings (added to its queries and keys; its inputs start at zero) into Q detections, each a class
distribution over K classes plus "no object" (the last logit) and a box (cx, cy, w, h) in [0, 1] relative to the
image. The same heads read every decoder layer through the final LayerNorm: the earlier layers' outputs, `aux`,
get the auxiliary losses (vit_video.train.detr_loss). Every attention's weights [B,h,Nq,Nk] are sown into
"intermediates" (`apply(..., mutable=["intermediates"])`): `decoder{i}/cross_attn` holds where each query looks.

Frozen BatchNorm: DETR fine-tunes an ImageNet ResNet with its BatchNorm statistics and affine terms fixed (torch
buffers, not parameters), so they live in the "constants" collection: pass `{"params": ..., "constants": ...}`
to `apply`; an optimizer built on "params" never sees them. The stem and first stage are frozen too
(`trainable_mask`). Training-time dropout follows the official code (0.1 on attention weights, after the FFN's
ReLU and on every residual branch); HF's defaults drop only the residual branches, so only eval outputs agree.

Parameters (HF keys in vit_video.checkpoints.hf_detr): backbone/{conv1, layer{i}/block{j}/{conv{k},
downsample_conv}} kernels (constants: the same paths' bn1, bn{k}, downsample_bn/{scale,bias,mean,var});
input_proj; query_embed [Q,D]; encoder{i}/{self_attn, norm1, linear1, linear2, norm2}; decoder{i}/{self_attn,
norm1, cross_attn, norm2, linear1, linear2, norm3}; decoder_norm; class_embed (the head); bbox_embed{0,1,2}.
Attention projections have MultiHeadAttention's layout: query/key/value kernels [D,h,d], out [h,d,D].
"""
import functools
from typing import ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_video.layers import conv_lowering
from vit_video.layers.attention import dot_product_attention
from vit_video.layers.conv import FC_INIT, torch_conv
from vit_video.layers.encodings import normalized_sine_2d

FROZEN_STAGES = ("conv1", "layer1")  # Backbone parameters DETR never trains (the stem and the first stage).


class FrozenBatchNorm(nn.Module):
  """BatchNorm with fixed statistics and affine terms, all in "constants": `[..., C] -> [..., C]`.

  y = x * s + (bias - mean * s) with s = scale / sqrt(var + 1e-5), in HF's (and torchvision's) order of operations.
  """
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    const = lambda name, fill: self.variable(  # noqa: E731
        "constants", name, lambda: jnp.full((c,), fill, self.param_dtype)).value
    scale, bias, mean, var = const("scale", 1.0), const("bias", 0.0), const("mean", 0.0), const("var", 1.0)
    s = scale * jax.lax.rsqrt(var + 1e-5)
    return x * s.astype(self.dtype) + (bias - mean * s).astype(self.dtype)


class FrozenBottleneck(nn.Module):
  """resnet.BottleneckBlock with FrozenBatchNorm: 1x1 -> 3x3 (stride) -> 1x1 (4F), plus a shortcut."""
  features: int
  strides: int = 1
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[B,H,W,C] -> [B,ceil(H/s),ceil(W/s),4F]."""
    conv = functools.partial(torch_conv, dtype=self.dtype, param_dtype=self.param_dtype)
    norm = functools.partial(FrozenBatchNorm, dtype=self.dtype, param_dtype=self.param_dtype)
    out, s = 4 * self.features, (self.strides,) * 2
    shortcut = x
    if self.strides != 1 or x.shape[-1] != out:
      shortcut = norm(name="downsample_bn")(conv(out, (1, 1), s, name="downsample_conv")(x))
    y = nn.relu(norm(name="bn1")(conv(self.features, (1, 1), (1, 1), name="conv1")(x)))
    y = nn.relu(norm(name="bn2")(conv(self.features, (3, 3), s, name="conv2")(y)))
    y = norm(name="bn3")(conv(out, (1, 1), (1, 1), name="conv3")(y))
    return nn.relu(shortcut + y)


class FrozenStage(nn.Module):
  """One stage (torchvision's `layer{i}`): `num_blocks` FrozenBottlenecks `block{j}`, the first one strided."""
  num_blocks: int
  features: int
  strides: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[B,H,W,C] -> [B,ceil(H/s),ceil(W/s),4F]."""
    for j in range(self.num_blocks):
      x = FrozenBottleneck(self.features, self.strides if j == 0 else 1, self.dtype, self.param_dtype,
                           name=f"block{j}")(x)
    return x


class FrozenResNet(nn.Module):
  """ResNet v1.5 trunk (torchvision layout and names, as vit_video.models.resnet) with FrozenBatchNorm, no head."""
  stage_sizes: Sequence[int]
  width: int = 64  # F: stem channels; stage i has bottleneck width F * 2**i and 4 F * 2**i outputs.
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[B,H,W,C] -> [B,H',W',4F * 2**(S-1)], H' = H/2**(S+1) rounded up at every stride."""
    x = torch_conv(self.width, (7, 7), (2, 2), dtype=self.dtype, param_dtype=self.param_dtype, name="conv1")(x)
    x = nn.relu(FrozenBatchNorm(self.dtype, self.param_dtype, name="bn1")(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))  # [B,ceil(H/4),ceil(W/4),F]
    for i, num_blocks in enumerate(self.stage_sizes):
      x = FrozenStage(num_blocks, self.width * 2**i, 1 if i == 0 else 2, self.dtype, self.param_dtype,
                      name=f"layer{i + 1}")(x)
    return x


class Attention(nn.Module):
  """Multi-head attention with separate query, key and value inputs (DETR adds positions to the first two only)."""
  num_heads: int
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, q: jax.Array, k: jax.Array, v: jax.Array, *, mask: jax.Array | None = None,
               deterministic: bool) -> jax.Array:
    """[B,Nq,D], [B,Nk,D], [B,Nk,D] -> [B,Nq,D]; mask: [B,1,1,Nk] bool, True = may attend."""
    d = q.shape[-1]
    dense = lambda name: nn.DenseGeneral(  # noqa: E731
        (self.num_heads, d // self.num_heads), kernel_init=nn.initializers.xavier_uniform(), dtype=self.dtype,
        param_dtype=self.param_dtype, name=name)
    use_dropout = not deterministic and self.dropout_rate > 0
    out, weights = dot_product_attention(  # [B,Nq,h,d], [B,h,Nq,Nk]
        dense("query")(q), dense("key")(k), dense("value")(v), mask=mask, dropout_rate=self.dropout_rate,
        dropout_rng=self.make_rng("dropout") if use_dropout else None, implementation="einsum")  # weights
    self.sow("intermediates", "attention_weights", weights)  # kept only with mutable=["intermediates"]
    return nn.DenseGeneral(d, axis=(-2, -1), kernel_init=nn.initializers.xavier_uniform(), dtype=self.dtype,
                           param_dtype=self.param_dtype, name="out")(out)  # [B,Nq,D]


class TransformerLayer(nn.Module):
  """A post-norm DETR encoder layer, or with `memory` a decoder layer (self-, cross-attention, FFN)."""
  num_heads: int
  ffn_dim: int
  dropout_rate: float
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, pos: jax.Array, memory: jax.Array | None = None,
               memory_pos: jax.Array | None = None, *, mask: jax.Array | None = None,
               deterministic: bool) -> jax.Array:
    """x, pos [B,N,D] (encoder: tokens; decoder: queries and query embeddings); memory, memory_pos [B,Nk,D]
    (decoder: encoder output and its positions); mask [B,1,1,N or Nk] over the tokens -> [B,N,D]."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    drop = lambda y: nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)  # noqa: E731
    attention = functools.partial(Attention, self.num_heads, self.dropout_rate, **kw)
    norm = lambda i: nn.LayerNorm(epsilon=1e-5, name=f"norm{i}", **kw)  # noqa: E731
    self_mask = mask if memory is None else None
    x = norm(1)(x + drop(attention(name="self_attn")(x + pos, x + pos, x, mask=self_mask,
                                                     deterministic=deterministic)))
    if memory is not None:
      y = attention(name="cross_attn")(x + pos, memory + memory_pos, memory, mask=mask, deterministic=deterministic)
      x = norm(2)(x + drop(y))
    dense = lambda n, name: nn.Dense(n, kernel_init=nn.initializers.xavier_uniform(), name=name, **kw)  # noqa: E731
    y = dense(x.shape[-1], "linear2")(drop(nn.relu(dense(self.ffn_dim, "linear1")(x))))
    return norm(2 if memory is None else 3)(x + drop(y))


def downsample_mask(valid: jax.Array, h: int, w: int) -> jax.Array:
  """[B,H,W] -> [B,h,w] by nearest neighbour, as torch's `interpolate(size=(h, w))` (source index floor(i * H/h))."""
  rows = np.minimum(np.floor(np.arange(h, dtype=np.float32) * np.float32(valid.shape[1] / h)), valid.shape[1] - 1)
  cols = np.minimum(np.floor(np.arange(w, dtype=np.float32) * np.float32(valid.shape[2] / w)), valid.shape[2] - 1)
  return valid[:, rows.astype(int)][:, :, cols.astype(int)]


class DETR(nn.Module):
  """DETR with a frozen-BatchNorm ResNet backbone; defaults are DETR-R50's (41,524,768 parameters at K = 91)."""
  inputs: ClassVar[tuple[str, ...]] = ("image",)
  head: ClassVar[str] = "class_embed"
  batch_norm: ClassVar[bool] = False  # Its BatchNorm is frozen: statistics and affine terms in "constants".
  num_classes: int  # K object classes (91 for COCO's category ids 0..90); the classifier adds "no object".
  num_queries: int = 100  # Q, the most objects one image can have.
  hidden_dim: int = 256  # D, the transformer width.
  num_heads: int = 8
  num_encoder_layers: int = 6
  num_decoder_layers: int = 6
  ffn_dim: int = 2048
  dropout_rate: float = 0.1  # On attention weights, after the FFN's ReLU and on every residual branch.
  stage_sizes: Sequence[int] = (3, 4, 6, 3)  # Backbone bottleneck blocks per stage (ResNet-50).
  backbone_width: int = 64  # The backbone's stem channels F (FrozenResNet.width; ResNet-50: 64).
  in_channels: int = 3  # Input channels C, checked on every call.
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool, mask: jax.Array | None = None) -> dict:
    """[B,H,W,C] images (mask: [B,H,W] bool, True on real pixels, False on padding; None: all real) ->
    {"logits": [B,Q,K+1], "boxes": [B,Q,4] (cx, cy, w, h) in [0, 1], "aux": [{"logits", "boxes"}] for decoder
    layers 0..L-2}, all float32. `train`: dropout (the backbone's BatchNorm is frozen either way)."""
    if images.ndim != 4 or images.shape[-1] != self.in_channels:
      raise ValueError(f"input shape {images.shape} is not [B,H,W,C] with C = in_channels = {self.in_channels}")
    if mask is not None and mask.shape != images.shape[:3]:
      raise ValueError(f"mask shape {mask.shape} is not the images' [B,H,W] = {images.shape[:3]}")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    features = FrozenResNet(self.stage_sizes, self.backbone_width, name="backbone", **kw)(images)  # [B,h,w,2048]
    b, h, w, _ = features.shape
    valid = jnp.ones((b, h, w), bool) if mask is None else downsample_mask(mask.astype(bool), h, w)  # [B,h,w]
    pos = normalized_sine_2d(valid, self.hidden_dim).reshape(b, h * w, -1).astype(self.dtype)  # [B,N,D]
    token_mask = valid.reshape(b, 1, 1, h * w)  # [B,1,1,N]; None is an all-True mask, as in HF
    x = nn.Conv(self.hidden_dim, (1, 1), kernel_init=FC_INIT, name="input_proj",
                conv_general_dilated=conv_lowering.conv_general_dilated, **kw)(features)
    x = x.reshape(b, h * w, -1)  # [B,h,w,D] -> [B,N,D]
    layer = functools.partial(TransformerLayer, self.num_heads, self.ffn_dim, self.dropout_rate, **kw)
    for i in range(self.num_encoder_layers):
      x = layer(name=f"encoder{i}")(x, pos, mask=token_mask, deterministic=not train)
    query_embed = self.param("query_embed", nn.initializers.normal(1.0), (self.num_queries, self.hidden_dim),
                             self.param_dtype)
    query_pos = jnp.broadcast_to(query_embed.astype(self.dtype), (b, *query_embed.shape))  # [B,Q,D]
    y = jnp.zeros_like(query_pos)
    outputs = []
    for i in range(self.num_decoder_layers):
      y = layer(name=f"decoder{i}")(y, query_pos, x, pos, mask=token_mask, deterministic=not train)
      outputs.append(y)
    y = nn.LayerNorm(epsilon=1e-5, name="decoder_norm", **kw)(jnp.stack(outputs))  # [L,B,Q,D]
    logits = nn.Dense(self.num_classes + 1, kernel_init=FC_INIT, name="class_embed", **kw)(y)  # [L,B,Q,K+1]
    for i in range(2):
      y = nn.relu(nn.Dense(self.hidden_dim, kernel_init=FC_INIT, name=f"bbox_embed{i}", **kw)(y))
    boxes = nn.Dense(4, kernel_init=FC_INIT, name="bbox_embed2", **kw)(y)  # [L,B,Q,4]
    logits, boxes = logits.astype(jnp.float32), jax.nn.sigmoid(boxes.astype(jnp.float32))
    aux = [{"logits": logits[i], "boxes": boxes[i]} for i in range(self.num_decoder_layers - 1)]
    return {"logits": logits[-1], "boxes": boxes[-1], "aux": aux}


def trainable_mask(params: dict) -> dict:
  """A tree like `params` of bools, False on the stem and first stage (FROZEN_STAGES), which DETR never trains:

      tx = optax.multi_transform({True: optax.adamw(1e-4), False: optax.set_to_zero()}, trainable_mask(params))

  (`optax.masked(tx, mask)` would apply the raw gradient to the masked-out leaves: use multi_transform.)
  """
  return jax.tree_util.tree_map_with_path(
      lambda path, _: not (path[0].key == "backbone" and path[1].key in FROZEN_STAGES), params)


# Name -> DETR attributes; build with DETR(num_classes=K, **VARIANTS[name]).
VARIANTS = {"detr_r50": {}}

MODELS = {name: functools.partial(DETR, **kwargs) for name, kwargs in VARIANTS.items()}

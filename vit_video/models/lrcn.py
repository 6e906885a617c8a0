"""LRCN (Donahue et al. 2015, "Long-term recurrent convolutional networks"): a per-frame CNN, then an LSTM.

  x [B,T,H,W,C] -> CNN on every frame -> [B,T,D] -> LSTM -> h [B,T,L] -> readout [B,L] -> head [B,K]

CNN (`backbone`): "convnet", the AlexNet/CaffeNet-shaped tower of video_cnn.ConvTower followed by FC layers
(the paper feeds fc6 to the LSTM, "LRCN-fc6"), whose flattening fixes the frame size (`image_size`); or a
name of resnet.VARIANTS ("resnet18", ...), a ResNet with `num_classes=0` (BatchNorm, any frame size) of
stem width `resnet_width`. LSTM: `flax.linen.RNN` over `OptimizedLSTMCell(lstm_features)` (the paper: 256
hidden units), zero initial state; its gates are computed in `dtype`, its state (c, h) stays in float32 (Flax
creates the carry in `param_dtype`). Readout: "mean" averages h over the T steps (the paper averages the
per-step predictions; with a linear head the two are equal), "last" takes h_T.

Parameter names: cnn/... (video_cnn.ConvTower's conv{l}, or resnet.ResNet's names), fc{i} (convnet only),
lstm/cell/{ii,if,ig,io,hi,hf,hg,ho}/..., head.
"""
import functools
from typing import ClassVar, Sequence

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_video.layers.conv import RELU_INIT
from vit_video.models import resnet
from vit_video.models.video_cnn import ConvTower, tower_sizes


class LRCN(nn.Module):
  """Per-frame CNN features -> LSTM -> classifier over the last or the mean hidden state."""
  inputs: ClassVar[tuple[str, ...]] = ("video",)
  head: ClassVar[str] = "head"
  batch_norm: ClassVar[bool] = True
  num_classes: int  # 0: no classifier, __call__ returns the read-out hidden state [B,L].
  backbone: str = "convnet"  # "convnet" or a resnet.VARIANTS name.
  widths: Sequence[int] = (96, 256, 384, 384, 256)  # convnet: the conv tower (CaffeNet's widths).
  kernel_sizes: Sequence[int] = (7, 5, 3, 3, 3)
  strides: Sequence[int] = (2, 2, 1, 1, 1)
  pools: Sequence[bool] = (True, True, False, False, True)
  fc_widths: Sequence[int] = (4096,)  # convnet: FC layers after the tower (fc6 -> LSTM).
  image_size: tuple[int, int] = (227, 227)  # convnet: (H, W), fixed by the flattening into fc0.
  resnet_width: int = 64  # ResNet backbone: stem width (64 as published).
  lstm_features: int = 256  # L.
  readout: str = "mean"  # "mean" over the T steps, or "last".
  in_channels: int = 3
  axis_name: str | None = None  # ResNet backbone: named batch axis for BatchNorm statistics.
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """[B,T,H,W,C] -> [B,K] float32 logits = head(mean_t h_t or h_T), h = LSTM(CNN(x_1), ..., CNN(x_T)).

    `train`: BatchNorm of a ResNet backbone uses batch statistics (the convnet has no train-time layers).
    """
    if self.backbone != "convnet" and self.backbone not in resnet.VARIANTS:
      raise ValueError(f"backbone {self.backbone!r} is not 'convnet' or one of {sorted(resnet.VARIANTS)}")
    if self.readout not in ("mean", "last"):
      raise ValueError(f"readout {self.readout!r} is not one of ['mean', 'last']")
    if x.ndim != 5 or x.shape[-1] != self.in_channels:
      raise ValueError(f"input shape {x.shape} is not [B,T,H,W,C] with C = in_channels = {self.in_channels}")
    b, t = x.shape[:2]
    if self.backbone == "convnet":
      if tuple(x.shape[2:4]) != tuple(self.image_size):
        raise ValueError(f"frame size (H, W) = {tuple(x.shape[2:4])} is not image_size {tuple(self.image_size)} "
                         f"(fc0 takes the flattened conv tower output, which fixes the size)")
      sizes = tower_sizes(x.shape[2:4], self.kernel_sizes, self.strides, self.pools)
      if min(min(s) for s in sizes) < 1:
        raise ValueError(f"frame size (H, W) = {tuple(x.shape[2:4])} is too small for the conv tower: {sizes}")
      y = ConvTower(self.widths, self.kernel_sizes, self.strides, self.pools, dtype=self.dtype,
                    param_dtype=self.param_dtype, name="cnn")(x)  # [B,T,H',W',D']
      y = einops.rearrange(y, "b t h w d -> b t (h w d)")  # [B,T,H'W'D']
      for i, width in enumerate(self.fc_widths):
        y = nn.relu(nn.Dense(width, kernel_init=RELU_INIT, dtype=self.dtype, param_dtype=self.param_dtype,
                             name=f"fc{i}")(y))  # [B,T,D]
    else:
      cnn = resnet.ResNet(0, **resnet.VARIANTS[self.backbone], width=self.resnet_width,
                          in_channels=self.in_channels, axis_name=self.axis_name, dtype=self.dtype,
                          param_dtype=self.param_dtype, name="cnn")
      y = cnn(einops.rearrange(x, "b t h w c -> (b t) h w c"), train=train)  # [BT,D]
      y = einops.rearrange(y, "(b t) d -> b t d", b=b, t=t)  # [B,T,D]
    # parent=None: the cell is adopted by the RNN (lstm/cell/...), not registered on this module.
    cell = nn.OptimizedLSTMCell(self.lstm_features, dtype=self.dtype, param_dtype=self.param_dtype, parent=None)
    h = nn.RNN(cell, name="lstm")(y.astype(self.dtype))  # [B,T,D] -> [B,T,L]
    h = h.mean(axis=1) if self.readout == "mean" else h[:, -1]  # [B,L]
    if self.num_classes == 0:
      return h.astype(jnp.float32)
    return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name="head")(h).astype(
        jnp.float32)


MODELS = {"lrcn": functools.partial(LRCN)}

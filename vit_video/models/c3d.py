"""C3D (Tran et al. 2015, "Learning spatiotemporal features with 3D convolutional networks").

Eight 3x3x3 convs (stride 1, padding 1, ReLU) and five max pools on 16x112x112 clips, then fc6 and fc7
(4096, ReLU, dropout) and the classifier fc8:

  conv1 64 - pool1 1x2x2 - conv2 128 - pool2 2x2x2 - conv3a,b 256 - pool3 2x2x2 - conv4a,b 512 - pool4 2x2x2
  - conv5a,b 512 - pool5 2x2x2 (spatial padding 1, as Caffe's ceil-mode pooling: 7 -> 4) - fc6 - fc7 - fc8

so a [16,112,112,3] clip ends as a [1,4,4,512] map, 8192 inputs to fc6; the flattening fixes the clip size
(`input_size`), and the four temporal poolings need T >= 16 (pools floor: T -> T // 2), the five spatial ones
H, W >= 16. Names follow the released Sports-1M weights' PyTorch port (DavideA/c3d-pytorch): conv1, conv2,
conv3a, conv3b, conv4a, conv4b, conv5a, conv5b, fc6, fc7, fc8 (3D kernels [3,3,3,C,D]; Dense kernels [in,out],
fc6's input flattened in (T, H, W, C) order, not torch's (C, T, H, W)).

Temporal receptive field (frames seen by one output time index; stride J in frames): conv1 3 (J=1), conv2 5,
pool2 6 (J=2), conv3a 10, conv3b 14, pool3 16 (J=4), conv4a 24, conv4b 32, pool4 36 (J=8), conv5a 52,
conv5b 68, pool5 76 (J=16): a conv of kernel 3 adds 2J, a pool of kernel 2 adds J and doubles J.

Parameters: sum of 27 C_in C_out + C_out over the convs = 27,655,936; fc6 8192*4096+4096, fc7 4096*4096+4096,
fc8 4096 K + K: 77,995,776 + 4097 K (78,409,573 at K=101, 79,991,015 at K=487 (Sports-1M), 82,092,776 at 1000).
"""
import functools
from typing import ClassVar, Sequence

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_video.layers import conv_lowering
from vit_video.layers.conv import RELU_INIT

# (name, published width, the max pool after it as (window = stride, spatial padding) or None).
LAYERS = (
    ("conv1", 64, ((1, 2, 2), 0)),
    ("conv2", 128, ((2, 2, 2), 0)),
    ("conv3a", 256, None), ("conv3b", 256, ((2, 2, 2), 0)),
    ("conv4a", 512, None), ("conv4b", 512, ((2, 2, 2), 0)),
    ("conv5a", 512, None), ("conv5b", 512, ((2, 2, 2), 1)),
)
FC_WIDTHS = (4096, 4096)  # fc6, fc7.


def pooled_sizes(size: Sequence[int]) -> list[tuple[int, int, int]]:
  """(T, H, W) after each of the five pools: n -> (n + 2 pad - window) // window + 1 (convs keep the size)."""
  sizes, current = [], tuple(size)
  for _, _, pool in LAYERS:
    if pool is not None:
      window, pad = pool
      current = tuple((n + (2 * pad if i else 0) - w) // w + 1 for i, (n, w) in enumerate(zip(current, window)))
      sizes.append(current)
  return sizes


class C3D(nn.Module):
  """C3D classifier on fixed-size clips; `num_classes=0` returns fc7's features."""
  inputs: ClassVar[tuple[str, ...]] = ("video",)
  head: ClassVar[str] = "fc8"
  batch_norm: ClassVar[bool] = False
  num_classes: int  # 0: no fc8, __call__ returns fc7's features [B,D].
  width_multiplier: float = 1.0  # Every conv and FC width is max(1, round(width * width_multiplier)).
  input_size: tuple[int, int, int] = (16, 112, 112)  # (T, H, W): fixed, pool5's map is flattened into fc6.
  dropout_rate: float = 0.5  # After fc6 and fc7 (the released model's 0.5), active when train=True.
  in_channels: int = 3
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  def _width(self, width: int) -> int:
    return max(1, round(width * self.width_multiplier))

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """[B,T,H,W,C] -> [B,K] float32 logits ([B,D] fc7 features if num_classes == 0); (T,H,W) = input_size.

    `train`: dropout on (needs a 'dropout' rng).
    """
    sizes = pooled_sizes(self.input_size)
    if min(min(s) for s in sizes) < 1:
      raise ValueError(f"C3D needs T >= 16 and H, W >= 16 (four temporal and five spatial poolings), got "
                       f"input_size (T, H, W) = {tuple(self.input_size)}: pooled sizes {sizes}")
    if x.ndim != 5 or x.shape[-1] != self.in_channels:
      raise ValueError(f"input shape {x.shape} is not [B,T,H,W,C] with C = in_channels = {self.in_channels}")
    if tuple(x.shape[1:4]) != tuple(self.input_size):
      raise ValueError(f"clip (T, H, W) = {tuple(x.shape[1:4])} is not the input_size {tuple(self.input_size)} "
                       f"this C3D was built for (fc6 takes the flattened {sizes[-1]} pool5 map)")
    for name, width, pool in LAYERS:
      x = nn.Conv(self._width(width), (3, 3, 3), padding=((1, 1),) * 3, kernel_init=RELU_INIT, dtype=self.dtype,
                  param_dtype=self.param_dtype, name=name, conv_general_dilated=conv_lowering.conv_general_dilated)(x)
      x = nn.relu(x)
      if pool is not None:
        window, pad = pool
        x = nn.max_pool(x, window, strides=window, padding=((0, 0), (pad, pad), (pad, pad)))
    x = einops.rearrange(x, "b t h w d -> b (t h w d)")  # [B,1,4,4,512] -> [B,8192] at the published size
    for name, width in zip(("fc6", "fc7"), FC_WIDTHS):
      x = nn.relu(nn.Dense(self._width(width), kernel_init=RELU_INIT, dtype=self.dtype,
                           param_dtype=self.param_dtype, name=name)(x))
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    if self.num_classes == 0:
      return x.astype(jnp.float32)
    return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name="fc8")(x).astype(
        jnp.float32)


MODELS = {"c3d": functools.partial(C3D)}

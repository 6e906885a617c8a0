"""Two-stream ConvNet (Simonyan & Zisserman 2014, "Two-stream convolutional networks for action recognition").

A spatial stream classifies appearance from RGB; a temporal stream classifies motion from a stack of optical
flow fields; the two are fused.

  rgb  [B,T,H,W,C] (C = in_channels, 3): the spatial stream sees one frame, the middle one x[:, T // 2]
       (`rgb_input="middle"`), or the mean of the T frames (`rgb_input="mean"`).
  flow [B,H,W,2(T-1)]: the T-1 flow fields between consecutive frames, x and y components interleaved:
       channel 2t is the horizontal (x) and channel 2t+1 the vertical (y) displacement from frame t to t+1,
       t = 0..T-2 (the paper's stack of L = T-1 = 10 fields, 20 channels).

Each stream is a 2D CNN (video_cnn.ConvTower, flattened, FC layers), by default the paper's CNN-M-2048 shape
(conv 96 7x7/2, 256 5x5/2, 512, 512, 512 3x3; 2x2 max pools after conv 1, 2, 5; fc 4096, 2048; no local
response normalisation) on 224x224, so `image_size` is fixed by the flattening, and `num_frames` T by the
temporal stream's first conv (2(T-1) input channels).

Fusion: "average": the streams' softmax scores are averaged (the paper's simple fusion), returned as logits
log((softmax(a) + softmax(b)) / 2), whose softmax is that average; "learned": one Dense layer `head` over the
concatenated features of the two streams (the paper trains an SVM on the stacked scores instead). `streams`
"rgb" or "flow" builds and runs one stream alone (its own head), to train the streams separately; the other
input is ignored and may be None. Parameter names: rgb_stream/..., flow_stream/... (conv{l}, fc{i}); the classifier
is the top-level `head`: head/{rgb,flow} (a Dense per stream: "average", or one stream alone) or head/{kernel,bias}
("learned").
"""
import functools
from typing import ClassVar, Sequence

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_video.layers.conv import RELU_INIT
from vit_video.models.video_cnn import ConvTower, tower_sizes


class Stream(nn.Module):
  """One stream: 2D conv tower, flattened, FC + ReLU layers: [B,H,W,C] -> [B,D]."""
  widths: Sequence[int]
  kernel_sizes: Sequence[int]
  strides: Sequence[int]
  pools: Sequence[bool]
  fc_widths: Sequence[int]
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[B,H,W,C] -> [B,D], D = fc_widths[-1]."""
    x = ConvTower(self.widths, self.kernel_sizes, self.strides, self.pools, dtype=self.dtype,
                  param_dtype=self.param_dtype, name="tower")(x)  # [B,H',W',D']
    x = einops.rearrange(x, "b h w d -> b (h w d)")  # [B,H'W'D']
    for i, width in enumerate(self.fc_widths):
      x = nn.relu(nn.Dense(width, kernel_init=RELU_INIT, dtype=self.dtype, param_dtype=self.param_dtype,
                           name=f"fc{i}")(x))
    return x


class StreamHeads(nn.Module):
  """A linear classifier per stream, named after it: `{stream: [B,D]} -> {stream: [B,K]}` float32."""
  num_classes: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, features: dict[str, jax.Array]) -> dict[str, jax.Array]:
    return {stream: nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name=stream)(x).astype(
        jnp.float32) for stream, x in features.items()}


class TwoStream(nn.Module):
  """Spatial (RGB) and temporal (optical flow) 2D CNN streams, fused by averaging scores or a learned layer."""
  inputs: ClassVar[tuple[str, ...]] = ("video", "flow")
  head: ClassVar[str] = "head"
  batch_norm: ClassVar[bool] = False

  num_classes: int  # 0: no classifier, __call__ returns the (concatenated) stream features.
  fusion: str = "average"  # "average" (softmax scores) or "learned" (Dense over concatenated features).
  streams: str = "both"  # "both", "rgb" or "flow".
  rgb_input: str = "middle"  # The spatial stream's frame: "middle" (x[:, T // 2]) or "mean" over T.
  num_frames: int = 11  # T: the temporal stream takes 2(T-1) = 20 flow channels (the paper's L = 10).
  widths: Sequence[int] = (96, 256, 512, 512, 512)  # Both streams (CNN-M-2048).
  kernel_sizes: Sequence[int] = (7, 5, 3, 3, 3)
  strides: Sequence[int] = (2, 2, 1, 1, 1)
  pools: Sequence[bool] = (True, True, False, False, True)
  fc_widths: Sequence[int] = (4096, 2048)
  image_size: tuple[int, int] = (224, 224)  # (H, W), fixed by the flattening into fc0.
  in_channels: int = 3  # C of the RGB frames (1 for grey video).
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  def _check(self, rgb: jax.Array | None, flow: jax.Array | None):
    """Raises ValueError naming the sizes unless the inputs the chosen streams use have the documented shapes."""
    t, c = self.num_frames, 2 * (self.num_frames - 1)
    if t < 2:
      raise ValueError(f"num_frames = {t}: the temporal stream needs T >= 2 frames (2(T-1) >= 2 flow channels)")
    for what, x, rank, size in (("rgb", rgb, 5, "[B,T,H,W,C]"), ("flow", flow, 4, "[B,H,W,2(T-1)]")):
      if self.streams in ("both", what):
        if x is None:
          raise ValueError(f"streams={self.streams!r} needs {what} {size}, got None")
        if x.ndim != rank or tuple(x.shape[-3:-1]) != tuple(self.image_size):
          raise ValueError(f"{what} shape {x.shape} is not {size} with (H, W) = image_size {tuple(self.image_size)}")
    if self.streams in ("both", "rgb") and rgb.shape[1:] != (t,) + tuple(self.image_size) + (self.in_channels,):
      raise ValueError(f"rgb shape {rgb.shape} is not [B,T,H,W,C] with T = num_frames = {t}, "
                       f"C = in_channels = {self.in_channels}")
    if self.streams in ("both", "flow") and flow.shape[-1] != c:
      raise ValueError(f"flow has {flow.shape[-1]} channels, but 2(T-1) = {c} for T = num_frames = {t} "
                       f"(flow shape {flow.shape})")
    if self.streams == "both" and rgb.shape[0] != flow.shape[0]:
      raise ValueError(f"rgb batch {rgb.shape[0]} != flow batch {flow.shape[0]}")
    sizes = tower_sizes(self.image_size, self.kernel_sizes, self.strides, self.pools)
    if min(min(s) for s in sizes) < 1:
      raise ValueError(f"image_size {tuple(self.image_size)} is too small for the conv tower: {sizes}")

  @nn.compact
  def __call__(self, rgb: jax.Array | None, flow: jax.Array | None, *, train: bool) -> jax.Array:
    """rgb [B,T,H,W,C], flow [B,H,W,2(T-1)] -> [B,K] float32 logits (fusion: module docstring).

    num_classes == 0: the features [B,D_rgb + D_flow] (or one stream's). `train` is unused (no dropout or
    normalisation layers).
    """
    if self.fusion not in ("average", "learned"):
      raise ValueError(f"fusion {self.fusion!r} is not one of ['average', 'learned']")
    if self.streams not in ("both", "rgb", "flow"):
      raise ValueError(f"streams {self.streams!r} is not one of ['both', 'rgb', 'flow']")
    if self.rgb_input not in ("middle", "mean"):
      raise ValueError(f"rgb_input {self.rgb_input!r} is not one of ['middle', 'mean']")
    self._check(rgb, flow)
    stream = lambda name: Stream(self.widths, self.kernel_sizes, self.strides, self.pools, self.fc_widths,
                                 self.dtype, self.param_dtype, name=name)
    features = {}
    if self.streams in ("both", "rgb"):
      frame = rgb[:, rgb.shape[1] // 2] if self.rgb_input == "middle" else rgb.mean(axis=1)  # [B,H,W,C]
      features["rgb"] = stream("rgb_stream")(frame)  # [B,D]
    if self.streams in ("both", "flow"):
      features["flow"] = stream("flow_stream")(flow)  # [B,D]
    if self.num_classes == 0:
      return jnp.concatenate(list(features.values()), axis=-1).astype(jnp.float32)  # [B,D_rgb+D_flow]
    if self.streams == "both" and self.fusion == "learned":
      x = jnp.concatenate([features["rgb"], features["flow"]], axis=-1)  # [B,D_rgb+D_flow]
      return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name="head")(x).astype(
          jnp.float32)
    logits = StreamHeads(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name="head")(features)
    if self.streams != "both":
      return logits[self.streams]
    log_p = [jax.nn.log_softmax(logits[s]) for s in ("rgb", "flow")]
    return jax.nn.logsumexp(jnp.stack(log_p), axis=0) - jnp.log(2.0)  # log((p_rgb + p_flow) / 2)


MODELS = {"two_stream": functools.partial(TwoStream)}

"""Karpathy et al. 2014 ("Large-scale video classification with CNNs"): four ways to fuse time into a 2D CNN.

All four share one conv tower, Karpathy et al.'s AlexNet-like `C(96,11,3)-P-C(256,5,1)-P-C(384,3,1)-C(384,3,1)-
C(256,3,1)-P-FC(4096)-FC(4096)` on 170x170 crops (C(d,f,s): d filters f x f at stride s, padded f // 2 so
that the sizes below are simple; P: non-overlapping 2x2 max pool; ReLU after every conv and FC). The paper's
local response normalisation layers are left out. The tower's output is flattened into fc0, so the input
size is fixed (`image_size`), as in the paper.

  SingleFrame   the 2D CNN on every frame; the per-frame class scores (logits) are averaged over T.
  LateFusion    the conv tower on every frame (shared weights); fusion="fc": the T flattened feature maps
                are concatenated into fc0 (the paper: T=2 frames 15 apart), so T is fixed (`num_frames`);
                fusion="pool": they are averaged over T first (any T; invariant to frame order).
  EarlyFusion   the first conv spans all T frames: a 3D conv [T,11,11,C,96] without temporal padding (the
                paper: T=10), equivalent to a 2D conv on the T*C stacked channels; the rest is 2D.
  SlowFusion    3D convs with small temporal extent and stride merge time progressively: conv{l} (0-based
                l) has temporal kernel k_l and stride s_l (no temporal padding); its output at time t sees
                frames [t * J_l, t * J_l + R_l) with J_l = s_0...s_l, R_l = R_{l-1} + (k_l - 1) J_{l-1}
                (R_{-1} = J_{-1} = 1). The paper's 10 frames, k = (4, 2, 2, 1, 1), s = (2, 2, 2, 1, 1):
                conv0 gives 4 times each seeing 4 frames, conv1 2 times seeing 6, conv2 1 time seeing all 10.

Parameter names: tower/conv{l}/{kernel,bias} (2D kernels [f,f,C,D] for SingleFrame and LateFusion, 3D
[k_l,f,f,C,D] for EarlyFusion and SlowFusion), fc{i}/{kernel,bias}, head/{kernel,bias}. SingleFrame and
LateFusion(fusion="pool") have the same parameters, so a single-frame model initialises a late-fusion one.
`ConvTower` is also the per-frame CNN of lrcn.py and two_stream.py.
"""
import functools
from typing import ClassVar, Sequence

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_video.layers import conv_lowering
from vit_video.layers.conv import RELU_INIT


def tower_sizes(size: tuple[int, ...], kernel_sizes: Sequence[int], strides: Sequence[int],
                pools: Sequence[bool], temporal_kernels: Sequence[int] = (),
                temporal_strides: Sequence[int] = ()) -> list[tuple[int, ...]]:
  """Output sizes (H',W') or, with temporal kernels, (T',H',W') of every ConvTower layer for input `size`.

  Spatial: n -> (n + 2 (f // 2) - f) // s + 1, then n // 2 after a pool; temporal: t -> (t - k) // s + 1.
  A size < 1 means the layer cannot take the input.
  """
  sizes, current = [], tuple(size)
  for i, (f, s, pool) in enumerate(zip(kernel_sizes, strides, pools)):
    spatial = [(n + 2 * (f // 2) - f) // s + 1 for n in current[-2:]]
    spatial = [n // 2 for n in spatial] if pool else spatial
    time = [(current[0] - temporal_kernels[i]) // temporal_strides[i] + 1] if temporal_kernels else []
    current = tuple(time + spatial)
    sizes.append(current)
  return sizes


def check_lengths(widths: Sequence[int], kernel_sizes: Sequence[int], strides: Sequence[int],
                  pools: Sequence[bool], temporal_kernels: Sequence[int] = (), temporal_strides: Sequence[int] = ()):
  """Raises ValueError unless there is at least one layer and every per-layer attribute has one entry per layer."""
  lengths = [len(widths), len(kernel_sizes), len(strides), len(pools)]
  if temporal_kernels or temporal_strides:
    lengths += [len(temporal_kernels), len(temporal_strides)]
  if lengths[0] == 0 or len(set(lengths)) > 1:
    raise ValueError(f"widths, kernel_sizes, strides, pools (and temporal_kernels, temporal_strides) need one "
                     f"entry per layer, got lengths {lengths}")


class ConvTower(nn.Module):
  """Conv -> ReLU [-> 2x2 max pool] layers `conv{l}`: Karpathy et al.'s C(d,f,s) [-P] stack."""
  widths: Sequence[int]  # d per layer.
  kernel_sizes: Sequence[int]  # f per layer (spatial f x f, padded f // 2 on each side).
  strides: Sequence[int]  # s per layer (spatial).
  pools: Sequence[bool]  # A 2x2/2 max pool after the layer.
  temporal_kernels: Sequence[int] = ()  # (): 2D convs on every frame; else 3D convs, no temporal padding.
  temporal_strides: Sequence[int] = ()  # Temporal strides of the 3D convs.
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """2D: [...,H,W,C] -> [...,H',W',D]; 3D: [B,T,H,W,C] -> [B,T',H',W',D]; D = widths[-1], sizes `tower_sizes`."""
    check_lengths(self.widths, self.kernel_sizes, self.strides, self.pools, self.temporal_kernels,
                  self.temporal_strides)
    for l, (width, f, s, pool) in enumerate(zip(self.widths, self.kernel_sizes, self.strides, self.pools)):
      pad = (f // 2, f // 2)
      if self.temporal_kernels:
        kt, st = self.temporal_kernels[l], self.temporal_strides[l]
        kernel, stride, padding, window = (kt, f, f), (st, s, s), ((0, 0), pad, pad), (1, 2, 2)
      else:
        kernel, stride, padding, window = (f, f), (s, s), (pad, pad), (2, 2)
      x = nn.Conv(width, kernel, stride, padding=padding, kernel_init=RELU_INIT, dtype=self.dtype,
                  param_dtype=self.param_dtype, name=f"conv{l}",
                  conv_general_dilated=conv_lowering.conv_general_dilated)(x)
      x = nn.relu(x)
      if pool:
        x = nn.max_pool(x, window, strides=window)
    return x


class FusionCNN(nn.Module):
  """Hyperparameters shared by Karpathy et al.'s models (the base class; use a subclass)."""
  inputs: ClassVar[tuple[str, ...]] = ("video",)
  head: ClassVar[str] = "head"
  batch_norm: ClassVar[bool] = False
  num_classes: int  # 0: no classifier, __call__ returns the last FC layer's features [B,D].
  widths: Sequence[int] = (96, 256, 384, 384, 256)  # Conv tower, as in the paper.
  kernel_sizes: Sequence[int] = (11, 5, 3, 3, 3)
  strides: Sequence[int] = (3, 1, 1, 1, 1)
  pools: Sequence[bool] = (True, True, False, False, True)
  fc_widths: Sequence[int] = (4096, 4096)
  image_size: tuple[int, int] = (170, 170)  # (H, W): fixed, the tower's output is flattened into fc0.
  in_channels: int = 3  # Input channels C, checked on every call.
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  def _check(self, x: jax.Array, temporal_kernels: Sequence[int] = (), temporal_strides: Sequence[int] = ()):
    """Raises ValueError unless x is [B,T,H,W,C] with C = in_channels, (H, W) = image_size, all layers fit."""
    check_lengths(self.widths, self.kernel_sizes, self.strides, self.pools, temporal_kernels, temporal_strides)
    if x.ndim != 5 or x.shape[-1] != self.in_channels:
      raise ValueError(f"input shape {x.shape} is not [B,T,H,W,C] with C = in_channels = {self.in_channels}")
    if tuple(x.shape[2:4]) != tuple(self.image_size):
      raise ValueError(f"frame size (H, W) = {tuple(x.shape[2:4])} is not image_size {tuple(self.image_size)} "
                       f"(fc0 takes the flattened conv tower output, which fixes the size)")
    size = x.shape[1:4] if temporal_kernels else x.shape[2:4]
    sizes = tower_sizes(size, self.kernel_sizes, self.strides, self.pools, temporal_kernels, temporal_strides)
    for l, out in enumerate(sizes):
      if min(out) < 1:
        raise ValueError(f"input (T, H, W) = {tuple(x.shape[1:4])} is too small for the conv tower: conv{l} "
                         f"leaves {'(T, H, W)' if temporal_kernels else '(H, W)'} = {out}")

  def _tower(self, x: jax.Array, temporal_kernels: Sequence[int] = (),
             temporal_strides: Sequence[int] = ()) -> jax.Array:
    return ConvTower(self.widths, self.kernel_sizes, self.strides, self.pools, temporal_kernels, temporal_strides,
                     dtype=self.dtype, param_dtype=self.param_dtype, name="tower")(x)

  def _classify(self, x: jax.Array) -> jax.Array:
    """[...,F] -> fc{i} + ReLU -> [...,D] -> head -> [...,K] float32 (or [...,D] float32 if num_classes == 0)."""
    for i, width in enumerate(self.fc_widths):
      x = nn.relu(nn.Dense(width, kernel_init=RELU_INIT, dtype=self.dtype, param_dtype=self.param_dtype,
                           name=f"fc{i}")(x))
    if self.num_classes == 0:
      return x.astype(jnp.float32)
    return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name="head")(x).astype(
        jnp.float32)


class SingleFrame(FusionCNN):
  """The 2D CNN on every frame, class scores averaged over the frames (any T)."""

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """[B,T,H,W,C] -> [B,K] = mean_t f(x_t) with f the 2D CNN's logits ([B,D] mean features if K = 0).

    `train` is unused (no dropout or normalisation layers); it is there for the common model interface.
    """
    self._check(x)
    y = self._tower(x)  # [B,T,H',W',D']
    y = einops.rearrange(y, "b t h w d -> b t (h w d)")  # [B,T,H'W'D']
    return self._classify(y).mean(axis=1)  # [B,T,K] -> [B,K]


class LateFusion(FusionCNN):
  """The conv tower on every frame, fused at the first FC layer by concatenation ("fc") or averaging ("pool")."""
  fusion: str = "fc"  # "fc": concatenate the T frames' features (T fixed); "pool": average them (any T).
  num_frames: int = 2  # T for fusion="fc" (the paper: 2 frames 15 apart); unused by "pool".

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """[B,T,H,W,C] -> [B,K]: fc: head(fc([g(x_1), ..., g(x_T)])); pool: head(fc(mean_t g(x_t))).

    g: the conv tower, flattened. `train` is unused (no dropout or normalisation layers).
    """
    if self.fusion not in ("fc", "pool"):
      raise ValueError(f"fusion {self.fusion!r} is not one of ['fc', 'pool']")
    self._check(x)
    if self.fusion == "fc" and x.shape[1] != self.num_frames:
      raise ValueError(f"late fusion by fc was built for num_frames = {self.num_frames} frames (fc0 takes their "
                       f"concatenated features), got T = {x.shape[1]}")
    y = einops.rearrange(self._tower(x), "b t h w d -> b t (h w d)")  # [B,T,H',W',D'] -> [B,T,F]
    y = einops.rearrange(y, "b t f -> b (t f)") if self.fusion == "fc" else y.mean(axis=1)  # [B,TF] or [B,F]
    return self._classify(y)


class EarlyFusion(FusionCNN):
  """The first conv spans all T frames (a [T,f,f,C,D] 3D conv, no temporal padding); the rest is 2D."""
  num_frames: int = 10  # T, fixed by the first conv's temporal extent (the paper: 10).

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """[B,T,H,W,C] -> [B,K]; conv0 merges the T frames into one: [B,T,H,W,C] -> [B,1,H',W',D].

    `train` is unused (no dropout or normalisation layers).
    """
    if x.ndim == 5 and x.shape[1] != self.num_frames:
      raise ValueError(f"early fusion was built for num_frames = {self.num_frames} frames (the first conv's "
                       f"temporal extent), got T = {x.shape[1]}")
    kernels, strides = (self.num_frames,) + (1,) * (len(self.widths) - 1), (1,) * len(self.widths)
    self._check(x, kernels, strides)
    y = self._tower(x, kernels, strides)  # [B,1,H',W',D']
    return self._classify(einops.rearrange(y, "b t h w d -> b (t h w d)"))  # [B,H'W'D']


class SlowFusion(FusionCNN):
  """3D convs of small temporal extent and stride merge time progressively (receptive fields: module doc)."""
  num_frames: int = 10  # T: fixed, the last conv's [T',H',W',D] output is flattened into fc0.
  temporal_kernels: Sequence[int] = (4, 2, 2, 1, 1)  # k_l per conv layer (the paper's).
  temporal_strides: Sequence[int] = (2, 2, 2, 1, 1)  # s_l per conv layer.

  def min_frames(self) -> int:
    """The smallest T every layer can take: T_min = k_0 + s_0 (k_1 + s_1 (... - 1) - 1) ..., from T' = 1."""
    t = 1
    for k, s in zip(reversed(self.temporal_kernels), reversed(self.temporal_strides)):
      t = (t - 1) * s + k
    return t

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """[B,T,H,W,C] -> [B,K]; conv{l} maps time T_l -> (T_l - k_l) // s_l + 1 (no temporal padding).

    `train` is unused (no dropout or normalisation layers).
    """
    if x.ndim == 5 and x.shape[1] < self.min_frames():
      raise ValueError(f"slow fusion with temporal_kernels {tuple(self.temporal_kernels)} and temporal_strides "
                       f"{tuple(self.temporal_strides)} needs T >= {self.min_frames()} frames, got T = {x.shape[1]}")
    if x.ndim == 5 and x.shape[1] != self.num_frames:
      raise ValueError(f"slow fusion was built for num_frames = {self.num_frames} frames (fc0 takes the "
                       f"flattened [T',H',W',D] map), got T = {x.shape[1]}")
    self._check(x, self.temporal_kernels, self.temporal_strides)
    y = self._tower(x, self.temporal_kernels, self.temporal_strides)  # [B,T',H',W',D']
    return self._classify(einops.rearrange(y, "b t h w d -> b (t h w d)"))  # [B,T'H'W'D']


MODELS = {
    "single_frame": functools.partial(SingleFrame),
    "late_fusion_fc": functools.partial(LateFusion, fusion="fc"),
    "late_fusion_pool": functools.partial(LateFusion, fusion="pool"),
    "early_fusion": functools.partial(EarlyFusion),
    "slow_fusion": functools.partial(SlowFusion),
}

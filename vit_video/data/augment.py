"""Stateless, seeded image augmentations for tf.data (same seed -> same output, so pipelines can resume).

Per-image ops take one image [H,W,C] float32 with values in [0, 255] and a seed (int tensor of shape [2]);
batch ops (mixup, cutmix) take a batch [B,H,W,C] and soft labels [B,K]. Seeds come from
`tf.random.experimental.stateless_fold_in`, which maps (seed, n) to a fresh seed, so one seed per image or per
batch is all an op needs. Nothing here holds random state.
"""
import dataclasses
import math

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """Training augmentations; the defaults turn everything off. Build with `AugmentConfig(**config.augment)`."""

  crop_padding: int = 0  # Zero-pad each side by this many pixels, then random-crop back to size (0: off).
  flip: bool = False  # Random horizontal flip with probability 1/2.
  randaugment_layers: int = 0  # RandAugment-lite N: ops applied in sequence, each drawn uniformly (0: off).
  randaugment_magnitude: int = 10  # RandAugment-lite M in [0, 10]: the strength of every op.
  mixup_alpha: float = 0.0  # Mixup with lambda ~ Beta(alpha, alpha) per batch (0: off).
  cutmix_alpha: float = 0.0  # CutMix with lambda ~ Beta(alpha, alpha) per batch (0: off).
  # With both alphas > 0 each batch uses mixup or cutmix with probability 1/2 each.

  def __post_init__(self):
    if self.crop_padding < 0 or self.randaugment_layers < 0:
      raise ValueError(f"crop_padding ({self.crop_padding}) and randaugment_layers "
                       f"({self.randaugment_layers}) must be >= 0")
    if not 0 <= self.randaugment_magnitude <= 10:
      raise ValueError(f"randaugment_magnitude {self.randaugment_magnitude} is outside [0, 10]")
    if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
      raise ValueError(f"mixup_alpha ({self.mixup_alpha}) and cutmix_alpha ({self.cutmix_alpha}) must be >= 0")

  @property
  def mixes(self) -> bool:
    """True when batches get soft labels [B,K] (mixup or cutmix on)."""
    return self.mixup_alpha > 0 or self.cutmix_alpha > 0


def fold_in(seed: tf.Tensor, data) -> tf.Tensor:
  """A new seed [2] from `seed` [2] and an integer `data`; different data give independent streams."""
  return tf.random.experimental.stateless_fold_in(seed, tf.cast(data, tf.int64))


def random_crop_with_padding(image: tf.Tensor, padding: int, seed: tf.Tensor) -> tf.Tensor:
  """[H,W,C] -> [H,W,C]: zero-pad by `padding` on each side, then crop an H x W window at a random offset."""
  if padding == 0:
    return image
  padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])  # [H+2p, W+2p, C]
  return tf.image.stateless_random_crop(padded, tf.shape(image), seed=seed)


def random_flip(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """[H,W,C] -> [H,W,C]: mirrored left-right with probability 1/2."""
  return tf.image.stateless_random_flip_left_right(image, seed=seed)


def _affine(image: tf.Tensor, transform: list) -> tf.Tensor:
  """[H,W,C] -> [H,W,C]: output pixel (x, y) samples input (a0 x + a1 y + a2, b0 x + b1 y + b2); zero fill."""
  h, w = tf.shape(image)[0], tf.shape(image)[1]
  transforms = tf.reshape(tf.stack([tf.cast(t, tf.float32) for t in transform] + [0.0, 0.0]), [1, 8])
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=image[None], transforms=transforms, output_shape=tf.stack([h, w]), fill_value=0.0,
      interpolation="BILINEAR", fill_mode="CONSTANT")[0]  # [1,H,W,C] -> [H,W,C]


def _rotate(image, level, sign):
  """Rotates about the centre by up to 30 degrees."""
  angle = sign * level * (30.0 * math.pi / 180.0)
  h, w = tf.cast(tf.shape(image)[0], tf.float32), tf.cast(tf.shape(image)[1], tf.float32)
  cx, cy = (w - 1) / 2, (h - 1) / 2
  cos, sin = tf.cos(angle), tf.sin(angle)
  return _affine(image, [cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy])


def _shear_x(image, level, sign):
  """Shears rows by up to 0.3 pixels per pixel of height, about the centre row."""
  k = sign * level * 0.3
  cy = (tf.cast(tf.shape(image)[0], tf.float32) - 1) / 2
  return _affine(image, [1.0, k, -k * cy, 0.0, 1.0, 0.0])


def _shear_y(image, level, sign):
  """Shears columns by up to 0.3 pixels per pixel of width, about the centre column."""
  k = sign * level * 0.3
  cx = (tf.cast(tf.shape(image)[1], tf.float32) - 1) / 2
  return _affine(image, [1.0, 0.0, 0.0, k, 1.0, -k * cx])


def _translate_x(image, level, sign):
  """Shifts right (or left) by up to 30% of the width, rounded to whole pixels."""
  t = tf.round(sign * level * 0.3 * tf.cast(tf.shape(image)[1], tf.float32))
  return _affine(image, [1.0, 0.0, -t, 0.0, 1.0, 0.0])


def _translate_y(image, level, sign):
  """Shifts down (or up) by up to 30% of the height, rounded to whole pixels."""
  t = tf.round(sign * level * 0.3 * tf.cast(tf.shape(image)[0], tf.float32))
  return _affine(image, [1.0, 0.0, 0.0, 0.0, 1.0, -t])


def _brightness(image, level, sign):
  """Scales intensities by 1 +- 0.9 level (PIL ImageEnhance.Brightness)."""
  return tf.clip_by_value(image * (1.0 + sign * 0.9 * level), 0.0, 255.0)


def _contrast(image, level, sign):
  """Blends with the image's mean by 1 +- 0.9 level (PIL ImageEnhance.Contrast)."""
  mean = tf.reduce_mean(image)
  return tf.clip_by_value(mean + (image - mean) * (1.0 + sign * 0.9 * level), 0.0, 255.0)


def _solarize(image, level, sign):
  """Inverts pixels at or above 256 (1 - level): level 0 changes nothing."""
  del sign
  threshold = 256.0 * (1.0 - level)
  return tf.where(image >= threshold, 255.0 - image, image)


def _posterize(image, level, sign):
  """Keeps the top 8 - round(4 level) bits of each intensity: level 0 changes nothing."""
  del sign
  step = tf.pow(2.0, tf.round(4.0 * level))
  return tf.where(step > 1.0, tf.floor(image / step) * step, image)


def _auto_contrast(image, level, sign):
  """Stretches each channel's [min, max] to [0, 255] (channels with one value are left alone)."""
  del level, sign
  lo = tf.reduce_min(image, axis=[0, 1], keepdims=True)  # [1,1,C]
  hi = tf.reduce_max(image, axis=[0, 1], keepdims=True)  # [1,1,C]
  scale = tf.where(hi > lo, 255.0 / tf.maximum(hi - lo, 1e-6), 1.0)
  return tf.where(hi > lo, (image - lo) * scale, image)


def _identity(image, level, sign):
  del level, sign
  return image


# The op list of RandAugment-lite; every op but auto_contrast is the identity at level 0 (a tested property).
RANDAUGMENT_OPS = (
    _identity, _auto_contrast, _brightness, _contrast, _solarize, _posterize,
    _rotate, _shear_x, _shear_y, _translate_x, _translate_y,
)


def apply_op(image: tf.Tensor, op_index, level, sign) -> tf.Tensor:
  """[H,W,C] -> [H,W,C]: RANDAUGMENT_OPS[op_index] at strength `level` in [0, 1], direction `sign` (+-1)."""
  level, sign = tf.cast(level, tf.float32), tf.cast(sign, tf.float32)
  branches = [lambda op=op: op(image, level, sign) for op in RANDAUGMENT_OPS]
  out = tf.switch_case(tf.cast(op_index, tf.int32), branches)
  return tf.ensure_shape(out, image.shape)


def rand_augment(image: tf.Tensor, layers: int, magnitude: float, seed: tf.Tensor) -> tf.Tensor:
  """[H,W,C] -> [H,W,C]: RandAugment-lite, `layers` ops drawn uniformly (with a random sign) at `magnitude`.

  A small RandAugment (Cubuk et al. 2020) without equalize/sharpness/colour ops, so it also suits grayscale.
  """
  for layer in range(layers):
    layer_seed = fold_in(seed, layer)
    op_index = tf.random.stateless_uniform([], fold_in(layer_seed, 0), 0, len(RANDAUGMENT_OPS), tf.int32)
    sign = tf.where(tf.random.stateless_uniform([], fold_in(layer_seed, 1)) < 0.5, -1.0, 1.0)
    image = apply_op(image, op_index, magnitude / 10.0, sign)
  return image


def augment_image(image: tf.Tensor, config: AugmentConfig, seed: tf.Tensor) -> tf.Tensor:
  """[H,W,C] -> [H,W,C], values in [0, 255]: random crop, flip, then RandAugment-lite, as `config` asks."""
  image = random_crop_with_padding(image, config.crop_padding, fold_in(seed, 0))
  if config.flip:
    image = random_flip(image, fold_in(seed, 1))
  if config.randaugment_layers:
    image = rand_augment(image, config.randaugment_layers, config.randaugment_magnitude, fold_in(seed, 2))
  return image


def sample_beta(alpha: float, seed: tf.Tensor) -> tf.Tensor:
  """A scalar float32 from Beta(alpha, alpha) = G1 / (G1 + G2) with G1, G2 ~ Gamma(alpha)."""
  g1 = tf.random.stateless_gamma([], fold_in(seed, 0), alpha=alpha)
  g2 = tf.random.stateless_gamma([], fold_in(seed, 1), alpha=alpha)
  return g1 / tf.maximum(g1 + g2, 1e-12)


def mixup(images: tf.Tensor, labels: tf.Tensor, alpha: float, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """[B,H,W,C], [B,K] -> same: x_i <- lam x_i + (1 - lam) x_{i-1} (batch rolled by one), labels likewise.

  lam ~ Beta(alpha, alpha), one per batch; soft labels keep summing to one.
  """
  lam = sample_beta(alpha, seed)
  images = lam * images + (1.0 - lam) * tf.roll(images, 1, axis=0)
  labels = lam * labels + (1.0 - lam) * tf.roll(labels, 1, axis=0)
  return images, labels


def cutmix(images: tf.Tensor, labels: tf.Tensor, alpha: float, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """[B,H,W,C], [B,K] -> same: a box of x_i is replaced by the same box of x_{i-1} (batch rolled by one).

  lam ~ Beta(alpha, alpha) sets the box to about (1 - lam) of the area, centred uniformly and clipped to the
  image; the labels mix with the box's exact share of the pixels, so they still sum to one.
  """
  h, w = tf.shape(images)[1], tf.shape(images)[2]
  hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
  lam = sample_beta(alpha, seed)
  ratio = tf.sqrt(1.0 - lam)
  cy = tf.random.stateless_uniform([], fold_in(seed, 2), 0, h, tf.int32)
  cx = tf.random.stateless_uniform([], fold_in(seed, 3), 0, w, tf.int32)
  half_h = tf.cast(tf.round(hf * ratio / 2), tf.int32)
  half_w = tf.cast(tf.round(wf * ratio / 2), tf.int32)
  y0, y1 = tf.maximum(cy - half_h, 0), tf.minimum(cy + half_h, h)
  x0, x1 = tf.maximum(cx - half_w, 0), tf.minimum(cx + half_w, w)
  rows = tf.logical_and(tf.range(h) >= y0, tf.range(h) < y1)  # [H]
  cols = tf.logical_and(tf.range(w) >= x0, tf.range(w) < x1)  # [W]
  box = tf.cast(tf.logical_and(rows[:, None], cols[None, :]), images.dtype)[None, :, :, None]  # [1,H,W,1]
  images = images * (1.0 - box) + tf.roll(images, 1, axis=0) * box
  kept = 1.0 - tf.cast((y1 - y0) * (x1 - x0), tf.float32) / (hf * wf)
  labels = kept * labels + (1.0 - kept) * tf.roll(labels, 1, axis=0)
  return images, labels


def mix_batch(images: tf.Tensor, labels: tf.Tensor, config: AugmentConfig,
              seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """[B,H,W,C], soft labels [B,K] -> same: mixup or cutmix as `config` asks (one of them at random if both)."""
  if config.mixup_alpha > 0 and config.cutmix_alpha > 0:
    use_mixup = tf.random.stateless_uniform([], fold_in(seed, 0)) < 0.5
    return tf.cond(use_mixup,
                   lambda: mixup(images, labels, config.mixup_alpha, fold_in(seed, 1)),
                   lambda: cutmix(images, labels, config.cutmix_alpha, fold_in(seed, 2)))
  if config.mixup_alpha > 0:
    return mixup(images, labels, config.mixup_alpha, fold_in(seed, 1))
  if config.cutmix_alpha > 0:
    return cutmix(images, labels, config.cutmix_alpha, fold_in(seed, 2))
  return images, labels

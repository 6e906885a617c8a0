"""Tests for vit_video.data.augment: properties of each stateless op (sizes differ: B=3, H=6, W=8, C=2, K=5)."""
import numpy as np
import pytest
import tensorflow as tf

from vit_video.data import augment as aug

B, H, W, C, K = 3, 6, 8, 2, 5


def _image(seed=0, shape=(H, W, C)):
  return np.random.default_rng(seed).integers(0, 256, shape).astype(np.float32)


def _seed(i):
  return tf.constant([i, 17], tf.int64)


def test_crop_is_a_window_of_the_zero_padded_image():
  x = _image()
  padded = np.pad(x, [(2, 2), (2, 2), (0, 0)])
  offsets = set()
  for i in range(30):
    y = aug.random_crop_with_padding(tf.constant(x), 2, _seed(i)).numpy()
    matches = [(dy, dx) for dy in range(5) for dx in range(5)
               if np.array_equal(y, padded[dy:dy + H, dx:dx + W])]
    assert matches, "crop is not a window of the padded image"
    offsets.update(matches)
  assert len(offsets) > 5  # the offset really is random
  np.testing.assert_array_equal(aug.random_crop_with_padding(tf.constant(x), 0, _seed(0)), x)


def test_flip_is_identity_or_mirror_both_occur():
  x = _image()
  outcomes = []
  for i in range(20):
    y = aug.random_flip(tf.constant(x), _seed(i)).numpy()
    outcomes.append("same" if np.array_equal(y, x) else "mirror" if np.array_equal(y, x[:, ::-1]) else "other")
  assert set(outcomes) == {"same", "mirror"}


@pytest.mark.parametrize("op_index", range(len(aug.RANDAUGMENT_OPS)))
def test_ops_at_level_zero_are_identity_except_auto_contrast(op_index):
  x = _image(op_index) * 0.99 + 0.3  # not whole numbers (as after brightness), inside [0, 255]
  y = aug.apply_op(tf.constant(x), op_index, 0.0, -1.0).numpy()
  assert y.shape == x.shape
  if aug.RANDAUGMENT_OPS[op_index] is aug._auto_contrast:
    x = x * 0.5 + 10  # range [10, 137.5]: auto contrast must stretch it to [0, 255] per channel
    y = aug.apply_op(tf.constant(x), op_index, 0.0, 1.0).numpy()
    np.testing.assert_allclose(y.min(axis=(0, 1)), 0, atol=1e-3)
    np.testing.assert_allclose(y.max(axis=(0, 1)), 255, atol=1e-3)
  else:
    np.testing.assert_allclose(y, x, atol=1e-3)


@pytest.mark.parametrize("op_index", range(len(aug.RANDAUGMENT_OPS)))
def test_ops_at_full_level_stay_in_range(op_index):
  x = _image(op_index)
  for sign in (-1.0, 1.0):
    y = aug.apply_op(tf.constant(x), op_index, 1.0, sign).numpy()
    assert y.shape == x.shape and 0 <= y.min() and y.max() <= 255


def test_translate_x_shifts_whole_pixels_with_zero_fill():
  x = _image()
  ops = list(aug.RANDAUGMENT_OPS)
  # level 1/3 -> shift round(1/3 * 0.3 * 8) = 1 pixel.
  right = aug.apply_op(tf.constant(x), ops.index(aug._translate_x), 1 / 3, 1.0).numpy()
  np.testing.assert_allclose(right[:, 1:], x[:, :-1], atol=1e-4)
  np.testing.assert_array_equal(right[:, 0], 0)
  left = aug.apply_op(tf.constant(x), ops.index(aug._translate_x), 1 / 3, -1.0).numpy()
  np.testing.assert_allclose(left[:, :-1], x[:, 1:], atol=1e-4)


def test_rotation_commutes_with_mirroring_when_the_angle_flips():
  # Rotating about the centre then mirroring left-right equals mirroring then rotating the other way.
  x = _image()
  rotate = list(aug.RANDAUGMENT_OPS).index(aug._rotate)
  a = aug.apply_op(tf.constant(x), rotate, 0.7, 1.0).numpy()[:, ::-1]
  b = aug.apply_op(tf.constant(x[:, ::-1].copy()), rotate, 0.7, -1.0).numpy()
  np.testing.assert_allclose(a, b, atol=1e-3)
  assert not np.allclose(a, x[:, ::-1], atol=1)


def test_rand_augment_is_deterministic_in_its_seed():
  x = tf.constant(_image())
  a = aug.rand_augment(x, 3, 9, _seed(1)).numpy()
  np.testing.assert_array_equal(a, aug.rand_augment(x, 3, 9, _seed(1)).numpy())
  assert any(not np.array_equal(a, aug.rand_augment(x, 3, 9, _seed(i)).numpy()) for i in range(2, 6))


def test_augment_image_all_off_is_identity_and_config_checks():
  x = _image()
  np.testing.assert_array_equal(aug.augment_image(tf.constant(x), aug.AugmentConfig(), _seed(0)), x)
  config = aug.AugmentConfig(crop_padding=1, flip=True, randaugment_layers=2, randaugment_magnitude=5)
  y = aug.augment_image(tf.constant(x), config, _seed(3)).numpy()
  np.testing.assert_array_equal(y, aug.augment_image(tf.constant(x), config, _seed(3)).numpy())
  for bad in (dict(crop_padding=-1), dict(randaugment_magnitude=11), dict(mixup_alpha=-0.1)):
    with pytest.raises(ValueError):
      aug.AugmentConfig(**bad)
  assert not aug.AugmentConfig().mixes and aug.AugmentConfig(cutmix_alpha=1.0).mixes


def _batch():
  images = np.stack([_image(i) for i in range(B)])  # [B,H,W,C], distinct images
  labels = np.eye(K, dtype=np.float32)[[0, 1, 2]]  # [B,K], distinct classes
  return images, labels


def test_mixup_is_a_convex_combination_with_its_labels():
  images, labels = _batch()
  for i in range(5):
    mixed, soft = (t.numpy() for t in aug.mixup(tf.constant(images), tf.constant(labels), 0.4, _seed(i)))
    np.testing.assert_allclose(soft.sum(axis=1), 1, atol=1e-6)
    lam = soft[0, 0]  # example 0 (class 0) mixed with example B-1 (class 2)
    np.testing.assert_allclose(soft[:, :3], lam * np.eye(3) + (1 - lam) * np.roll(np.eye(3), 1, axis=0), atol=1e-6)
    np.testing.assert_allclose(mixed, lam * images + (1 - lam) * np.roll(images, 1, axis=0), atol=1e-3)


def test_cutmix_labels_match_the_pasted_area():
  images, labels = _batch()
  partner = np.roll(images, 1, axis=0)
  boxes = 0
  for i in range(10):
    mixed, soft = (t.numpy() for t in aug.cutmix(tf.constant(images), tf.constant(labels), 1.0, _seed(i)))
    np.testing.assert_allclose(soft.sum(axis=1), 1, atol=1e-6)
    from_partner = np.all(mixed == partner, axis=-1) & ~np.all(mixed == images, axis=-1)  # [B,H,W]
    assert np.all(np.all(mixed == images, axis=-1) | from_partner)  # every pixel comes from one of the two
    share = from_partner.mean(axis=(1, 2))  # [B]
    np.testing.assert_allclose(share, soft[np.arange(B), np.roll(np.arange(B), 1)], atol=1e-6)
    boxes += share[0] > 0
  assert boxes > 3


def test_mix_batch_with_both_uses_one_of_them_deterministically():
  images, labels = _batch()
  config = aug.AugmentConfig(mixup_alpha=0.5, cutmix_alpha=1.0)
  used = set()
  for i in range(12):
    seed = _seed(i)
    got = [t.numpy() for t in aug.mix_batch(tf.constant(images), tf.constant(labels), config, seed)]
    via_mixup = [t.numpy() for t in aug.mixup(tf.constant(images), tf.constant(labels), 0.5, aug.fold_in(seed, 1))]
    via_cutmix = [t.numpy() for t in aug.cutmix(tf.constant(images), tf.constant(labels), 1.0, aug.fold_in(seed, 2))]
    if all(np.array_equal(g, m) for g, m in zip(got, via_mixup)):
      used.add("mixup")
    else:
      assert all(np.array_equal(g, c) for g, c in zip(got, via_cutmix))
      used.add("cutmix")
  assert used == {"mixup", "cutmix"}


def test_sample_beta_matches_beta_moments():
  samples = np.array([aug.sample_beta(0.4, _seed(i)).numpy() for i in range(400)])
  assert samples.min() >= 0 and samples.max() <= 1
  # Beta(0.4, 0.4): mean 1/2, variance 1 / (4 (2 * 0.4 + 1)) = 0.139.
  assert abs(samples.mean() - 0.5) < 0.06 and abs(samples.var() - 0.139) < 0.03

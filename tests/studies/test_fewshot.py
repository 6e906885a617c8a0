"""Few-shot linear probes: the closed form is ridge regression, separable features score high, random ones chance."""
import jax.numpy as jnp
import numpy as np
import pytest

from vit_video.studies import fewshot


def _clusters(rng, n: int, *, num_classes: int, dim: int, spread: float):
  centers = np.random.default_rng(123).normal(size=(num_classes, dim)) * 4.0
  labels = rng.integers(0, num_classes, n)
  return (centers[labels] + spread * rng.normal(size=(n, dim))).astype(np.float32), labels


def test_separable_features_score_high_and_random_ones_chance():
  rng = np.random.default_rng(0)
  k, d = 7, 24
  train, val, test = (_clusters(rng, n, num_classes=k, dim=d, spread=1.0) for n in (300, 140, 900))
  for shots in (1, 5, 25):
    assert fewshot.fewshot_accuracy(train, val, test, shots=shots, num_classes=k) > 0.95
  noise = lambda n: (rng.normal(size=(n, d)).astype(np.float32), rng.integers(0, k, n))  # noqa: E731
  accuracy = fewshot.fewshot_accuracy(noise(300), noise(140), noise(4000), shots=10, num_classes=k, seeds=4)
  assert abs(accuracy - 1 / k) < 0.04  # chance is 1/7; 4 x 4000 test points give a std of about 0.003


@pytest.mark.parametrize("n,d", [(40, 9), (6, 11)])  # N >= D (X^T X) and D > N (X X^T) branches
def test_closed_form_is_ridge_regression(n, d):
  rng = np.random.default_rng(1)
  x, y = rng.normal(size=(n, d)).astype(np.float32), rng.integers(0, 3, n)
  x_test, l2 = rng.normal(size=(13, d)).astype(np.float32), 0.7
  cache = fewshot._precompute(jnp.asarray(x), jnp.asarray(y), num_classes=3)
  # Direct ridge regression on the same whitened, bias-augmented features.
  mean, std = x.mean(0), x.std(0) + 1e-5
  aug = lambda a: np.concatenate([(a - mean) / std, np.full((len(a), 1), fewshot.BIAS_CONSTANT)], 1)  # noqa: E731
  a = aug(x).astype(np.float64)
  w = np.linalg.solve(a.T @ a + l2 * np.eye(d + 1), a.T @ (2.0 * np.eye(3)[y] - 1.0))
  expected = np.argmax(aug(x_test) @ w, 1)
  for labels in (expected, (expected + 1) % 3):  # the accuracy is 1 on the ridge predictions, 0 on others
    got = fewshot._accuracies(cache, jnp.asarray(x_test), jnp.asarray(labels), jnp.asarray([l2]))
    assert float(got[0]) == pytest.approx(float(np.all(labels == expected)), abs=1e-6)


def test_sample_shots_draws_exactly_k_of_each_class():
  labels = np.array([2, 0, 1, 2, 2, 0, 1, 1, 0, 2, 1, 0, 0])
  idx = fewshot.sample_shots(labels, 3, num_classes=3, seed=5)
  assert len(set(idx.tolist())) == 9 and np.bincount(labels[idx]).tolist() == [3, 3, 3]
  np.testing.assert_array_equal(idx, fewshot.sample_shots(labels, 3, num_classes=3, seed=5))  # seeded
  with pytest.raises(ValueError, match="needs 5 examples of class 1; the pool has 4"):
    fewshot.sample_shots(labels, 5, num_classes=3, seed=0)


def test_bad_shapes_are_named():
  x, y = np.zeros((10, 4), np.float32), np.zeros(10, int)
  with pytest.raises(ValueError, match="feature widths differ"):
    fewshot.fewshot_accuracy((x, y), (x[:, :3], y), (x, y), shots=1, num_classes=1)
  with pytest.raises(ValueError, match="val features must be"):
    fewshot.fewshot_accuracy((x, y), (x, y[:4]), (x, y), shots=1, num_classes=1)


def test_extract_features_drops_padding():
  batches = [{"image": np.arange(6.0).reshape(3, 2), "label": np.array([4, 5, 0]), "mask": np.array([1, 1, 0])},
             {"image": np.ones((3, 2)), "label": np.array([1, 0, 0]), "mask": np.array([1, 0, 0])}]
  feats, labels = fewshot.extract_features(lambda v, x: x * v, 2.0, batches)
  np.testing.assert_array_equal(feats, [[0, 2], [4, 6], [2, 2]])
  np.testing.assert_array_equal(labels, [4, 5, 1])

"""Few-shot linear evaluation on frozen features: the ViT paper's few-shot protocol (Dosovitskiy et al. 2020,
section 4.1; big_vision's `fewshot_lsr` evaluator).

A k-shot probe takes k training examples per class, and solves a regularised least-squares regression from their
(whitened) features to {-1, 1}^K targets in closed form; the test prediction is the argmax of the regression.
Following big_vision: features are standardised with the shots' mean and std, a constant feature of 100 is
appended (an almost unregularised bias), and one eigendecomposition serves every L2 strength. The strength is
chosen per draw on a held-out validation set (never on the test set); the accuracy is averaged over
`seeds` independent draws of the shots.

    feats, labels = extract_features(features_fn, variables, batches)     # [N,D], [N]
    acc = fewshot_accuracy(train, val, test, shots=10, num_classes=10, seeds=3)
"""
import functools
from collections.abc import Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

BIAS_CONSTANT = 100.0  # big_vision: large enough to leave the bias almost unregularised.
L2_REGS = tuple(2.0 ** i for i in range(-10, 20))  # big_vision's grid of L2 strengths.


@functools.partial(jax.jit, static_argnames="num_classes")
def _precompute(x: jax.Array, y: jax.Array, num_classes: int) -> dict:
  """Whitening statistics and the eigendecomposition of the Gram matrix of x [N,D] (y [N] int labels).

  Ridge regression w = (X^T X + l2 I)^-1 X^T Y (N >= D) or X^T (X X^T + l2 I)^-1 Y (D > N); with
  G = Q diag(e) Q^T the smaller Gram matrix, both are lhs diag(1 / (e + l2)) rhs for every l2.
  """
  mean = jnp.mean(x, axis=0, keepdims=True)
  std = jnp.std(x, axis=0, keepdims=True) + 1e-5
  x = jnp.pad((x - mean) / std, ((0, 0), (0, 1)), constant_values=BIAS_CONSTANT)  # [N,D+1]
  targets = 2.0 * jax.nn.one_hot(y, num_classes) - 1.0  # [N,K] in {-1, 1}
  n, d = x.shape
  if n >= d:
    eigs, q = jnp.linalg.eigh(x.T @ x)  # [D+1], [D+1,D+1]
    lhs, rhs = q, q.T @ x.T @ targets
  else:
    eigs, q = jnp.linalg.eigh(x @ x.T)  # [N], [N,N]
    lhs, rhs = x.T @ q, q.T @ targets
  return {"eigs": eigs, "lhs": lhs, "rhs": rhs, "mean": mean, "std": std}


@jax.jit
def _accuracies(cache: dict, x: jax.Array, y: jax.Array, l2_regs: jax.Array) -> jax.Array:
  """Accuracy on (x [M,D], y [M]) of the ridge solution for every strength in l2_regs [R] -> [R]."""
  x = jnp.pad((x - cache["mean"]) / cache["std"], ((0, 0), (0, 1)), constant_values=BIAS_CONSTANT)

  def one(l2):
    w = (cache["lhs"] / (cache["eigs"] + l2)[None, :]) @ cache["rhs"]  # [D+1,K]
    return jnp.mean(jnp.argmax(x @ w, axis=1) == y)

  return jax.lax.map(one, l2_regs)


def sample_shots(labels: np.ndarray, shots: int, *, num_classes: int, seed: int) -> np.ndarray:
  """Indices of `shots` examples of every class in [0, num_classes), drawn without replacement.

  Raises ValueError naming the class when one has fewer than `shots` examples.
  """
  labels = np.asarray(labels)
  rng = np.random.default_rng(seed)
  chosen = []
  for k in range(num_classes):
    (candidates,) = np.nonzero(labels == k)
    if len(candidates) < shots:
      raise ValueError(f"{shots}-shot evaluation needs {shots} examples of class {k}; the pool has "
                       f"{len(candidates)}")
    chosen.append(rng.choice(candidates, shots, replace=False))
  return np.sort(np.concatenate(chosen))


def fewshot_accuracy(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
                     test: tuple[np.ndarray, np.ndarray], *, shots: int, num_classes: int, seeds: int = 3,
                     l2_regs: Sequence[float] = L2_REGS) -> float:
  """Mean test accuracy of `seeds` k-shot linear probes; each picks its L2 strength on `val`.

  train/val/test: (features [N,D] float, labels [N] int). Draw s uses `sample_shots(..., seed=s)`.
  """
  for name, (x, y) in (("train", train), ("val", val), ("test", test)):
    if x.ndim != 2 or y.shape != x.shape[:1]:
      raise ValueError(f"{name} features must be [N,D] with labels [N]; got {x.shape} and {y.shape}")
  if not train[0].shape[1] == val[0].shape[1] == test[0].shape[1]:
    raise ValueError(f"feature widths differ: train {train[0].shape}, val {val[0].shape}, test {test[0].shape}")
  regs = jnp.asarray(l2_regs, jnp.float32)
  accuracies = []
  for seed in range(seeds):
    idx = sample_shots(train[1], shots, num_classes=num_classes, seed=seed)
    cache = _precompute(jnp.asarray(train[0][idx], jnp.float32), jnp.asarray(train[1][idx]),
                        num_classes=num_classes)
    best = int(jnp.argmax(_accuracies(cache, jnp.asarray(val[0], jnp.float32), jnp.asarray(val[1]), regs)))
    accuracies.append(float(_accuracies(cache, jnp.asarray(test[0], jnp.float32), jnp.asarray(test[1]),
                                        regs[best:best + 1])[0]))
  return float(np.mean(accuracies))


def extract_features(features_fn: Callable, variables: dict,
                     batches: Iterable[dict[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
  """Runs `features_fn(variables, images [B,H,W,C]) -> [B,D]` over padded eval batches ({'image', 'label',
  'mask'}) and returns the real examples' features [N,D] float32 and labels [N], in order."""
  feats, labels = [], []
  for batch in batches:
    mask = np.asarray(batch["mask"], bool)
    out = np.asarray(jax.device_get(features_fn(variables, batch["image"])), np.float32)
    feats.append(out[mask])
    labels.append(np.asarray(batch["label"])[mask])
  if not feats:
    raise ValueError("no batches to extract features from")
  return np.concatenate(feats), np.concatenate(labels)

"""Marked-token recall, a synthetic long-range sequence task: the answer is the one marked token, at a controlled
distance from the end of the sequence.

A sequence of N tokens holds N - 1 random content tokens drawn uniformly from {0, ..., K-1} and one marked token
K + y, the marked copy of content token y (inputs take 2K ids). The answer (the label) is y; the marked token stands
at index N - d, so a model reading left to right must carry it across the last d - 1 steps (d = 1: the last token).
Within a batch every example draws its own distance from `distances` (all <= N), so the mark's position varies and
the answer can only be found by its mark, never from a fixed position. Chance accuracy is 1/K. (The marked token
is the marker and the token after it in one: a Transformer finds it with one attention lookup, as an RNN meets it
in one step, so what differs between the models is only how far the answer must be carried.)

    batch = recall_batch(seed=0, split="train", index=step, batch_size=32, length=129, distances=(8, 16, 128),
                         vocab_size=16)
    batch["tokens"]    [B,N] int32 in {0..2K-1} (exactly one id >= K per row)
    batch["label"]     [B] int32 in {0..K-1}, tokens[b, N - distance[b]] - K
    batch["distance"]  [B] int32

Batches are pure functions of (seed, split, index): numpy's `default_rng([seed, split id, index])`, so a batch is
drawn again identically anywhere, in any order, and the train and test streams come from different seed sequences
(split ids 0 and 1). Nothing is stored on disk.
"""
from collections.abc import Sequence

import numpy as np

SPLITS = {"train": 0, "test": 1}  # split -> the second word of the seed sequence


def input_ids(vocab_size: int) -> int:
  """The number of input ids: 2K (the K content tokens, then their K marked copies)."""
  return 2 * vocab_size


def recall_batch(*, seed: int, split: str, index: int, batch_size: int, length: int, distances: Sequence[int],
                 vocab_size: int) -> dict[str, np.ndarray]:
  """One batch of the marked-token recall task (module docstring): tokens [B,N], label [B], distance [B].

  Each example's distance is drawn uniformly from `distances`; raises ValueError for a split not in SPLITS, a
  distance outside [1, N], fewer than 2 content tokens or a non-positive size.
  """
  if split not in SPLITS:
    raise ValueError(f"split {split!r} is not one of {sorted(SPLITS)}")
  if batch_size < 1 or length < 1 or index < 0 or seed < 0:
    raise ValueError(f"batch_size={batch_size} must be >= 1, length={length} >= 1, index={index} and seed={seed} "
                     ">= 0")
  if vocab_size < 2:
    raise ValueError(f"vocab_size={vocab_size} must be >= 2 content tokens")
  distances = np.asarray(distances, np.int64)
  if distances.ndim != 1 or not distances.size or distances.min() < 1 or distances.max() > length:
    raise ValueError(f"distances {distances.tolist()} must be a non-empty list of integers in [1, length = "
                     f"{length}]")
  rng = np.random.default_rng([seed, SPLITS[split], index])
  tokens = rng.integers(0, vocab_size, (batch_size, length))  # [B,N] content tokens
  distance = distances[rng.integers(0, distances.size, batch_size)]  # [B]
  rows = np.arange(batch_size)
  label = tokens[rows, length - distance]  # [B], the token at distance d from the end...
  tokens[rows, length - distance] += vocab_size  # ...marked
  return {"tokens": tokens.astype(np.int32), "label": label.astype(np.int32), "distance": distance.astype(np.int32)}

"""Tests for vit_video.data.long_range: the answer is the one marked token, at the stated distance;
batches are pure functions of (seed, split, index); the splits differ; bad arguments raise."""
import numpy as np
import pytest

from vit_video.data import long_range

K, N, B = 5, 23, 37
DISTANCES = (1, 3, 7, 23)


def batch(**kw):
  args = dict(seed=3, split="train", index=11, batch_size=B, length=N, distances=DISTANCES, vocab_size=K)
  return long_range.recall_batch(**{**args, **kw})


def test_the_answer_is_the_only_marked_token_at_the_stated_distance():
  b = batch()
  tokens, label, distance = b["tokens"], b["label"], b["distance"]
  assert tokens.shape == (B, N) and label.shape == distance.shape == (B,)
  assert tokens.dtype == label.dtype == distance.dtype == np.int32
  assert long_range.input_ids(K) == 2 * K
  assert ((tokens >= K).sum(1) == 1).all()  # exactly one marked token per row
  assert tokens.min() >= 0 and tokens.max() < 2 * K and 0 <= label.min() and label.max() < K
  rows = np.arange(B)
  np.testing.assert_array_equal(tokens[rows, N - distance], label + K)  # d tokens from the end (d = 1: the last)
  assert set(distance.tolist()) == set(DISTANCES)  # every distance drawn (37 draws of 4; 23: the first token)


def test_positions_vary_within_a_batch_and_content_is_uniform():
  b = batch(batch_size=400, index=0)
  assert len(set(b["distance"].tolist())) == len(DISTANCES)
  counts = np.bincount(b["tokens"][b["tokens"] < K], minlength=K)
  assert counts.min() > 0.8 * counts.mean()  # 400 x 22 draws of 5 tokens
  assert np.bincount(b["label"], minlength=K).min() > 0.6 * B * 400 / B / K  # answers uniform too


def test_batches_are_deterministic_and_the_streams_differ():
  a, again = batch(), batch()
  for key in a:
    np.testing.assert_array_equal(a[key], again[key])
  others = [batch(split="test"), batch(index=12), batch(seed=4)]
  for other in others:
    assert not np.array_equal(a["tokens"], other["tokens"])
  train = {r.tobytes() for i in range(4) for r in batch(index=i)["tokens"]}
  test = {r.tobytes() for i in range(4) for r in batch(split="test", index=i)["tokens"]}
  assert not train & test  # no test sequence among the training ones


@pytest.mark.parametrize("kw, match", [
    (dict(split="val"), "split"),
    (dict(distances=(0, 3)), "distances"),
    (dict(distances=(N + 1,)), "distances"),
    (dict(distances=()), "distances"),
    (dict(vocab_size=1), "vocab_size"),
    (dict(batch_size=0), "batch_size"),
    (dict(length=0, distances=(1,)), "length"),
])
def test_bad_arguments_raise(kw, match):
  with pytest.raises(ValueError, match=match):
    batch(**kw)

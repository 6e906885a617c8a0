"""Tests for vit_video.data.pipeline on a tiny fake Fashion-MNIST (37 train, 11 test: no batch size divides them)."""
import math
import os
import socket
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from vit_video.data import fashion_mnist_local as fml
from vit_video.data import builders
from vit_video.data import common
from vit_video.data import pipeline
from vit_video.data.augment import AugmentConfig

NAME = "fashion_mnist_local"
NUM_TRAIN, NUM_TEST = 37, 11
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REAL_DATA_DIR = os.path.join(REPO, "data", "tfds")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """A tfds data_dir holding the fake dataset; images are random so each identifies its example."""
  root = tmp_path_factory.mktemp("pipeline")
  rng = np.random.default_rng(1)
  os.makedirs(root / "raw")
  for split, n in (("train", NUM_TRAIN), ("test", NUM_TEST)):
    images_stem, labels_stem = fml.SPLIT_FILES[split]
    fml.write_idx(str(root / "raw" / images_stem), rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
    fml.write_idx(str(root / "raw" / labels_stem), rng.integers(0, 10, (n,), dtype=np.uint8))
  builder = fml.FashionMnistLocal(data_dir=str(root / "tfds"))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(root / "raw")))
  return str(root / "tfds")


def _split_arrays(data_dir, split):
  """(images uint8 [N,28,28,1], labels [N]) in the order tfds stores them."""
  builder = tfds.builder(NAME, data_dir=data_dir)
  examples = list(builder.as_dataset(split=split, shuffle_files=False).as_numpy_iterator())
  return np.stack([e["image"] for e in examples]), np.array([e["label"] for e in examples])


def _keys(images):
  """Normalised float images [B,28,28,1] -> the uint8 bytes of each, identifying its example."""
  return [np.round((i + 1.0) * 127.5).astype(np.uint8).tobytes() for i in images]


def _train(data_dir, *, start_step=0, seed=3, process_index=0, process_count=2, augment=AugmentConfig(),
           global_batch_size=8, image_size=28, host_sharding="global", stop_step=None, **kwargs):
  return pipeline.make_train_iterator(
      NAME, "train", data_dir, global_batch_size=global_batch_size, image_size=image_size, seed=seed,
      start_step=start_step, process_index=process_index, process_count=process_count, augment=augment,
      num_classes=10, host_sharding=host_sharding, stop_step=stop_step, **kwargs)


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def test_num_examples(data_dir):
  assert builders.num_examples(NAME, "train", data_dir) == NUM_TRAIN
  assert builders.num_examples(NAME, "test[:4]", data_dir) == 4


@pytest.mark.parametrize("name", [NAME, "cifar10", "no_such_dataset"])
def test_unprepared_dataset_fails_at_once_with_the_prepare_command(tmp_path, monkeypatch, name):
  def no_network(*args, **kwargs):
    raise AssertionError("the pipeline tried to download")
  monkeypatch.setattr(socket.socket, "connect", no_network)
  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_network)
  command = f"python -m vit_video.data.prepare {name} --data_dir {tmp_path}"
  start = time.perf_counter()
  calls = [
      lambda: builders.check_prepared(name, str(tmp_path)),
      lambda: builders.num_examples(name, "train", str(tmp_path)),
      lambda: pipeline.make_eval_iterator(name, "test", str(tmp_path), global_batch_size=4, image_size=28,
                                          process_index=0, process_count=1),
      lambda: pipeline.make_train_iterator(name, "train", str(tmp_path), global_batch_size=4, image_size=28,
                                           seed=0, start_step=0, process_index=0, process_count=1,
                                           augment=AugmentConfig(), num_classes=10),
  ]
  for call in calls:
    with pytest.raises(ValueError) as e:
      call()
    assert command in str(e.value)
  assert time.perf_counter() - start < 10


def test_bad_arguments_raise(data_dir):
  with pytest.raises(ValueError, match="global batch size 9 is not a positive multiple of process count 2"):
    _train(data_dir, global_batch_size=9)
  with pytest.raises(ValueError, match=r"process_index 2 is outside \[0, process_count=2\)"):
    _train(data_dir, process_index=2)
  with pytest.raises(ValueError, match="num_classes 7 differs from the 10 classes"):
    pipeline.make_train_iterator(NAME, "train", data_dir, global_batch_size=4, image_size=28, seed=0,
                                 start_step=0, process_index=0, process_count=1, augment=AugmentConfig(),
                                 num_classes=7)
  with pytest.raises(ValueError, match="host_sharding 'hosts' is not one of 'global', 'split'"):
    _train(data_dir, host_sharding="hosts")
  with pytest.raises(ValueError, match="shuffle_buffer_size -1 must be None"):
    _train(data_dir, shuffle_buffer_size=-1)
  with pytest.raises(ValueError, match="cache 'yes' is not one of 'auto', True, False"):
    _train(data_dir, cache="yes")
  with pytest.raises(ValueError, match="images must be uint8"):
    pipeline.make_array_iterator(np.zeros((3, 4, 5, 1)), np.zeros(3), global_batch_size=2, process_index=0,
                                 process_count=1)


def test_split_train_batches_shapes_values_and_epochs(data_dir):
  images, labels = _split_arrays(data_dir, "train")
  label_of = dict(zip(_keys(common.normalize(images.astype(np.float32))), labels))
  # Host 1 of 2 holds examples [19, 37) (18 of them); batch 4 per host; 9 batches = 2 epochs exactly.
  batches = _take(_train(data_dir, process_index=1, host_sharding="split"), 9)
  for batch in batches:
    assert batch["image"].shape == (4, 28, 28, 1) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (4,) and batch["label"].dtype == np.int32
    assert -1 <= batch["image"].min() and batch["image"].max() <= 1
  keys = [k for b in batches for k in _keys(b["image"])]
  got_labels = [l for b in batches for l in b["label"]]
  assert [label_of[k] for k in keys] == got_labels  # images and labels stay paired
  shard = set(_keys(common.normalize(images[19:].astype(np.float32))))
  epoch0, epoch1 = keys[:18], keys[18:]
  assert set(epoch0) == shard and set(epoch1) == shard  # each epoch: the whole shard, each example once
  assert epoch0 != epoch1  # reshuffled
  assert epoch0 != list(_keys(common.normalize(images[19:].astype(np.float32))))  # shuffled at all


def test_cache_rule_is_applied_to_what_this_host_reads(data_dir, monkeypatch):
  """common.cache_records (tested in test_video_pipeline.py) decides on the split, or the host's shard."""
  calls = []
  monkeypatch.setattr(pipeline, "cache_records", lambda cache, builder, split: calls.append((cache, split)) or False)
  for host_sharding in ("split", "global"):
    next(_train(data_dir, process_index=1, host_sharding=host_sharding, stop_step=1))
  next(_train(data_dir, cache=False, stop_step=1))
  assert calls == [("auto", tfds.even_splits("train", 2)[1]), ("auto", "train"), (False, "train")]


def test_train_order_depends_on_seed_only(data_dir):
  a = _take(_train(data_dir, seed=3), 6)
  b = _take(_train(data_dir, seed=3), 6)
  c = _take(_train(data_dir, seed=4), 6)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["image"], y["image"])
  assert any(not np.array_equal(x["image"], z["image"]) for x, z in zip(a, c))


def test_split_train_shards_are_disjoint_and_cover_the_split(data_dir):
  images, _ = _split_arrays(data_dir, "train")
  seen = []
  for process_index, shard_size in ((0, 19), (1, 18)):  # tfds.even_splits: the first host gets the extra one
    batches = _take(_train(data_dir, process_index=process_index, host_sharding="split"), 5)
    epoch = [k for b in batches for k in _keys(b["image"])][:shard_size]
    assert len(set(epoch)) == shard_size
    seen.append(set(epoch))
  assert len(seen[0] & seen[1]) == 0
  assert seen[0] | seen[1] == set(_keys(common.normalize(images.astype(np.float32))))


@pytest.mark.parametrize("augment", [
    AugmentConfig(),
    AugmentConfig(crop_padding=3, flip=True, randaugment_layers=2, randaugment_magnitude=7, mixup_alpha=0.3,
                  cutmix_alpha=1.0),
])
def test_split_train_resumes_exactly_across_epoch_boundaries(data_dir, augment):
  # Host 1 of 2: 18 examples, batch 4: batch 4 spans epochs 0 and 1, batch 9 starts epoch 2 at position 0.
  fresh = _take(_train(data_dir, process_index=1, augment=augment, host_sharding="split"), 12)
  for start in (4, 5, 9):
    resumed = _take(_train(data_dir, process_index=1, augment=augment, start_step=start, host_sharding="split"),
                    12 - start)
    for expected, got in zip(fresh[start:], resumed):
      np.testing.assert_array_equal(got["image"], expected["image"])
      np.testing.assert_array_equal(got["label"], expected["label"])


def _hosts(data_dir, process_count, steps, **kwargs):
  """[host][step] batches of every host of `process_count`."""
  return [_take(_train(data_dir, process_index=p, process_count=process_count, **kwargs), steps)
          for p in range(process_count)]


def test_global_stream_is_a_fresh_permutation_of_the_split_each_epoch(data_dir):
  images, labels = _split_arrays(data_dir, "train")
  all_keys = _keys(common.normalize(images.astype(np.float32)))
  label_of = dict(zip(all_keys, labels))
  batches = _take(_train(data_dir, process_count=1), 10)  # 80 positions: epochs 0 and 1, 6 of epoch 2
  keys = [k for b in batches for k in _keys(b["image"])]
  assert [label_of[k] for k in keys] == [l for b in batches for l in b["label"]]
  epoch0, epoch1 = keys[:NUM_TRAIN], keys[NUM_TRAIN:2 * NUM_TRAIN]
  assert len(set(epoch0)) == NUM_TRAIN and set(epoch0) == set(epoch1) == set(all_keys)
  assert epoch0 != epoch1 and epoch0 != all_keys  # shuffled, and reshuffled each epoch


@pytest.mark.parametrize("global_batch_size, process_count", [(8, 2), (8, 4), (12, 3)])
def test_global_hosts_concatenate_to_the_one_process_batch(data_dir, global_batch_size, process_count):
  # 37 examples: the steps cover two epoch boundaries, inside batches (no global batch size divides 37).
  steps = 2 * NUM_TRAIN // global_batch_size + 1
  augment = AugmentConfig(crop_padding=3, flip=True)
  kwargs = dict(global_batch_size=global_batch_size, augment=augment)
  reference = _take(_train(data_dir, process_count=1, **kwargs), steps)
  plain = _take(_train(data_dir, process_count=1, global_batch_size=global_batch_size), steps)
  hosts = _hosts(data_dir, process_count, steps, **kwargs)
  for step, (expected, unaugmented) in enumerate(zip(reference, plain)):
    np.testing.assert_array_equal(expected["label"], unaugmented["label"])  # same order ...
    assert not np.array_equal(expected["image"], unaugmented["image"])  # ... but augmentation is really on
    for key in ("image", "label"):
      b = global_batch_size // process_count
      assert all(host[step][key].shape[0] == b for host in hosts)
      np.testing.assert_array_equal(np.concatenate([host[step][key] for host in hosts]), expected[key])


def test_global_and_split_agree_for_one_process(data_dir):
  augment = AugmentConfig(crop_padding=3, flip=True, mixup_alpha=0.3)
  for a, b in zip(*(_take(_train(data_dir, process_count=1, augment=augment, host_sharding=mode), 6)
                    for mode in pipeline.HOST_SHARDINGS)):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])


def test_global_mixup_mixes_within_the_host_rows(data_dir):
  # Host 1 of 2: soft label i mixes the host's own hard labels i and i - 1 (batch rolled by one), nothing else.
  hard = _take(_train(data_dir, process_index=1), 8)
  soft = _take(_train(data_dir, process_index=1, augment=AugmentConfig(mixup_alpha=0.5)), 8)
  for h, s in zip(hard, soft):
    onehot = np.eye(10)[h["label"]]  # [B,K]
    support = np.maximum(onehot, np.roll(onehot, 1, axis=0))  # [B,K]: labels i and i - 1
    assert np.all(s["label"][support == 0] == 0)
    np.testing.assert_allclose(s["label"].sum(axis=1), 1, atol=1e-6)
  assert any(np.sort(s["label"], axis=1)[:, -1].min() < 1 for s in soft)  # really mixed


@pytest.mark.parametrize("process_count", [1, 4])
def test_global_train_resumes_exactly_across_epoch_boundaries(data_dir, process_count):
  # Global batch 8 over 37 examples: batch 4 spans epochs 0 and 1, batch 5 is inside epoch 1, batch 9 spans 1-2.
  augment = AugmentConfig(crop_padding=3, flip=True, mixup_alpha=0.3)
  last = process_count - 1
  fresh = _take(_train(data_dir, process_index=last, process_count=process_count, augment=augment), 11)
  for start in (4, 5, 9):
    resumed = _take(_train(data_dir, process_index=last, process_count=process_count, augment=augment,
                           start_step=start), 11 - start)
    for expected, got in zip(fresh[start:], resumed):
      np.testing.assert_array_equal(got["image"], expected["image"])
      np.testing.assert_array_equal(got["label"], expected["label"])


@pytest.mark.parametrize("process_count", [1, 4])
def test_stop_step_yields_exactly_the_endless_batches_then_stops(data_dir, process_count):
  last = process_count - 1
  fresh = _take(_train(data_dir, process_index=last, process_count=process_count), 10)
  bounded = list(_train(data_dir, process_index=last, process_count=process_count, start_step=3, stop_step=9))
  assert len(bounded) == 6  # steps 3..8; batch 4 spans an epoch boundary, as does 9
  for expected, got in zip(fresh[3:9], bounded):
    np.testing.assert_array_equal(got["image"], expected["image"])
    np.testing.assert_array_equal(got["label"], expected["label"])
  with pytest.raises(ValueError, match="stop_step 2 is before start_step 3"):
    _train(data_dir, start_step=3, stop_step=2)


def test_train_augmentation_and_soft_labels(data_dir):
  augment = AugmentConfig(crop_padding=2, flip=True, mixup_alpha=0.4, cutmix_alpha=1.0)
  batches = _take(_train(data_dir, process_count=1, augment=augment, image_size=(24, 20)), 6)
  plain = _take(_train(data_dir, process_count=1, image_size=(24, 20)), 6)
  for batch, reference in zip(batches, plain):
    assert batch["image"].shape == (8, 24, 20, 1) and reference["image"].shape == (8, 24, 20, 1)
    assert batch["label"].shape == (8, 10) and batch["label"].dtype == np.float32
    np.testing.assert_allclose(batch["label"].sum(axis=1), 1, atol=1e-6)
    assert batch["label"].min() >= 0
    # Same order, different pixels: the hard label always keeps the largest or second largest weight.
    assert all(reference["label"][i] in np.argsort(batch["label"][i])[-2:] for i in range(8))
    assert not np.array_equal(batch["image"], reference["image"])
  assert any(np.sort(b["label"], axis=1)[:, -1].min() < 1 for b in batches)  # some labels are really mixed


@pytest.mark.parametrize("global_batch_size, process_count", [(4, 1), (8, 2), (10, 2), (6, 3), (9, 3), (12, 3)])
def test_eval_counts_every_example_exactly_once(data_dir, global_batch_size, process_count):
  images, labels = _split_arrays(data_dir, "test")
  expected = sorted(zip(_keys(common.normalize(images.astype(np.float32))), labels))
  got, num_batches = [], set()
  for process_index in range(process_count):
    batches = list(pipeline.make_eval_iterator(
        NAME, "test", data_dir, global_batch_size=global_batch_size, image_size=28,
        process_index=process_index, process_count=process_count))
    num_batches.add(len(batches))
    for batch in batches:
      b = global_batch_size // process_count
      assert batch["image"].shape == (b, 28, 28, 1) and batch["mask"].dtype == bool
      assert batch["label"].dtype == np.int32
      mask = batch["mask"]
      assert np.all(mask[:mask.sum()])  # real examples first, then padding
      np.testing.assert_array_equal(batch["image"][~mask], 0)
      got += zip(_keys(batch["image"][mask]), batch["label"][mask])
  assert sorted(got) == expected
  assert num_batches == {pipeline.num_eval_batches(NAME, "test", data_dir, global_batch_size=global_batch_size,
                                                    process_count=process_count)}
  local_batch = global_batch_size // process_count
  assert num_batches == {math.ceil(math.ceil(NUM_TEST / process_count) / local_batch)}  # one part: ceil(N/P)


def test_eval_composite_split_pads_every_host_to_the_largest_shard(data_dir):
  # 'train[:3]+test[:3]' over 2 hosts: each part splits 2/1, so the shards hold 4 and 2 examples.
  train, _ = _split_arrays(data_dir, "train")
  test, _ = _split_arrays(data_dir, "test")
  expected = sorted(_keys(common.normalize(np.concatenate([train[:3], test[:3]]).astype(np.float32))))
  got, counts = [], []
  for process_index in range(2):
    batches = list(pipeline.make_eval_iterator(NAME, "train[:3]+test[:3]", data_dir, global_batch_size=6,
                                               image_size=28, process_index=process_index, process_count=2))
    counts.append((len(batches), sum(b["mask"].sum() for b in batches)))
    got += [k for b in batches for k in _keys(b["image"][b["mask"]])]
  assert counts == [(2, 4), (2, 2)]
  assert sorted(got) == expected


def test_eval_resizes_to_image_size(data_dir):
  batch = next(pipeline.make_eval_iterator(NAME, "test", data_dir, global_batch_size=5, image_size=(24, 20),
                                           process_index=0, process_count=1))
  assert batch["image"].shape == (5, 24, 20, 1)


@pytest.mark.parametrize("global_batch_size, process_count", [(4, 1), (8, 2), (6, 3)])
def test_array_iterator_equals_eval_iterator(data_dir, global_batch_size, process_count):
  images, labels = _split_arrays(data_dir, "test")
  for process_index in range(process_count):
    kwargs = dict(global_batch_size=global_batch_size, process_index=process_index, process_count=process_count)
    from_tfds = list(pipeline.make_eval_iterator(NAME, "test", data_dir, image_size=28, **kwargs))
    from_arrays = list(pipeline.make_array_iterator(images, labels, **kwargs))
    assert len(from_tfds) == len(from_arrays)
    for a, b in zip(from_tfds, from_arrays):
      assert a.keys() == b.keys()
      for key in a:
        assert a[key].dtype == b[key].dtype
        np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.skipif(not os.path.exists(os.path.join(REAL_DATA_DIR, NAME)),
                    reason=f"real Fashion-MNIST not prepared: run `python -m vit_video.data.prepare {NAME}` in {REPO}")
def test_real_fashion_mnist_is_prepared_with_all_examples():
  assert builders.num_examples(NAME, "train", REAL_DATA_DIR) == 60_000
  assert builders.num_examples(NAME, "test", REAL_DATA_DIR) == 10_000
  batch = next(pipeline.make_eval_iterator(NAME, "test", REAL_DATA_DIR, global_batch_size=16, image_size=28,
                                           process_index=0, process_count=1))
  assert batch["image"].shape == (16, 28, 28, 1) and batch["mask"].all()

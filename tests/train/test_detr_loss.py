"""Tests for vit_video.train.detr_loss: box conversions, GIoU's properties, matching by brute force, and the loss and
matching against Hugging Face's (ForObjectDetectionLoss, HungarianMatcher) on the same random predictions."""
import itertools

import jax
import numpy as np
import pytest

from tests.checkpoints.hf_reference import import_transformers
from vit_video.train import detr_loss

L, B, Q, K, M = 3, 3, 6, 4, 5  # decoder layers, images, queries, classes, padded targets per image
COUNTS = (2, 0, 5)  # valid targets per image: some, none, and as many as the padding


def random_boxes(rng, shape) -> np.ndarray:
  """(cx, cy, w, h) float32 boxes of positive size inside the unit square."""
  size = rng.uniform(0.05, 0.4, (*shape, 2))
  center = rng.uniform(size / 2, 1 - size / 2)
  return np.concatenate([center, size], -1).astype(np.float32)


@pytest.fixture(scope="module")
def case():
  """Random per-layer predictions [L,B,Q,...] and padded targets [B,M,...] with COUNTS valid."""
  rng = np.random.default_rng(0)
  return dict(logits=(2 * rng.normal(size=(L, B, Q, K + 1))).astype(np.float32),
              boxes=random_boxes(rng, (L, B, Q)), labels=rng.integers(0, K, (B, M)),
              target_boxes=random_boxes(rng, (B, M)), valid=np.arange(M)[None] < np.array(COUNTS)[:, None])


def test_box_conversions_round_trip():
  boxes = random_boxes(np.random.default_rng(1), (7,))
  xyxy = np.asarray(detr_loss.cxcywh_to_xyxy(boxes))
  assert np.all(xyxy[:, 2:] > xyxy[:, :2])
  np.testing.assert_allclose(xyxy[:, 2:] - xyxy[:, :2], boxes[:, 2:], rtol=1e-5)
  np.testing.assert_allclose(detr_loss.xyxy_to_cxcywh(xyxy), boxes, atol=1e-6)


def test_generalized_iou_properties():
  a = np.asarray(detr_loss.cxcywh_to_xyxy(random_boxes(np.random.default_rng(2), (6,))))
  b = np.asarray(detr_loss.cxcywh_to_xyxy(random_boxes(np.random.default_rng(3), (4,))))
  pairwise = np.asarray(detr_loss.generalized_iou(a[:, None], b[None]))  # [6,4]
  assert pairwise.shape == (6, 4) and np.all(pairwise >= -1) and np.all(pairwise <= 1)
  np.testing.assert_allclose(detr_loss.generalized_iou(b[None], a[:, None]), pairwise, rtol=1e-6)  # symmetric
  np.testing.assert_allclose(detr_loss.generalized_iou(a, a), 1.0, rtol=1e-6)  # identity
  # Disjoint boxes: negative, and lower the farther apart. Overlap 1, union 7, enclosing 9: 1/7 - 2/9.
  unit = np.array([0.0, 0.0, 1.0, 1.0])
  near, far = detr_loss.generalized_iou(unit, unit + [2, 0, 2, 0]), detr_loss.generalized_iou(unit, unit + [5, 0, 5, 0])
  assert far < near < 0
  np.testing.assert_allclose(detr_loss.generalized_iou(np.array([0, 0, 2, 2.0]), np.array([1, 1, 3, 3.0])),
                             1 / 7 - 2 / 9, rtol=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_hungarian_match_equals_brute_force(seed):
  rng = np.random.default_rng(seed)
  cost = rng.normal(size=(3, 4, 3))  # [B,Q,M]
  valid = np.array([[True, False, True], [False, False, False], [True, True, True]])
  matched = detr_loss.hungarian_match(cost, valid)
  for i in range(3):
    targets = np.flatnonzero(valid[i])
    best = min(itertools.permutations(range(4), len(targets)), key=lambda qs: cost[i, qs, targets].sum())
    np.testing.assert_array_equal(matched[i, targets], best)
    np.testing.assert_array_equal(matched[i, ~valid[i]], -1)


def test_more_targets_than_queries_leaves_the_costliest_unmatched():
  cost = np.array([[[0.0, 9.0, 1.0], [9.0, 0.0, 1.0]]])  # [1,Q=2,M=3]: target 2 costs most overall
  np.testing.assert_array_equal(detr_loss.hungarian_match(cost, np.ones((1, 3), bool)), [[0, 1, -1]])


def test_matching_and_loss_equal_hugging_face(case):
  transformers = import_transformers()
  import torch
  from transformers.loss.loss_for_object_detection import ForObjectDetectionLoss, HungarianMatcher
  t = torch.from_numpy
  targets = [{"class_labels": t(case["labels"][i, :n]), "boxes": t(case["target_boxes"][i, :n])}
             for i, n in enumerate(COUNTS)]
  config = transformers.DetrConfig(num_labels=K, auxiliary_loss=True, decoder_layers=L, use_pretrained_backbone=False)
  logits, boxes = case["logits"], case["boxes"]
  ref_total, ref_parts, _ = ForObjectDetectionLoss(t(logits[-1]), targets, "cpu", t(boxes[-1]), config, t(logits),
                                                   t(boxes))
  outputs = {"logits": logits[-1], "boxes": boxes[-1],
             "aux": [{"logits": logits[i], "boxes": boxes[i]} for i in range(L - 1)]}
  total, parts = jax.jit(detr_loss.detr_loss)(outputs, case["labels"], case["target_boxes"], case["valid"])
  assert set(parts) == {k.removeprefix("loss_").replace("bbox", "l1") for k in ref_parts if "cardinality" not in k}
  for name, value in parts.items():
    np.testing.assert_allclose(value, float(ref_parts["loss_" + name.replace("l1", "bbox")]), rtol=1e-5, err_msg=name)
  np.testing.assert_allclose(total, float(ref_total), rtol=1e-5)
  match = jax.jit(detr_loss.match)
  for layer in range(L):
    ref = HungarianMatcher(1, 5, 2)({"logits": t(logits[layer]), "pred_boxes": t(boxes[layer])}, targets)
    ours = np.asarray(match(logits[layer], boxes[layer], case["labels"], case["target_boxes"], case["valid"]))
    for i, (queries, target_ids) in enumerate(ref):
      np.testing.assert_array_equal(ours[i, target_ids.numpy()], queries.numpy())
      assert np.sum(ours[i] >= 0) == len(queries)


def test_loss_ignores_padding_values(case):
  """Whatever the padded targets hold, the loss is the same."""
  outputs = {"logits": case["logits"][-1], "boxes": case["boxes"][-1], "aux": []}
  loss = jax.jit(detr_loss.detr_loss)
  total, _ = loss(outputs, case["labels"], case["target_boxes"], case["valid"])
  pad = ~case["valid"]
  labels = np.where(pad, K - 1, case["labels"])
  boxes = np.where(pad[..., None], random_boxes(np.random.default_rng(9), (B, M)), case["target_boxes"])
  np.testing.assert_allclose(loss(outputs, labels, boxes, case["valid"])[0], total, rtol=1e-6)


def _outputs(case) -> dict:
  """The case's last layer as DETR's output, the earlier layers as its `aux`."""
  layer = lambda i: {"logits": case["logits"][i], "boxes": case["boxes"][i]}  # noqa: E731
  return {**layer(-1), "aux": [layer(i) for i in range(L - 1)]}


def test_without_aux_loss_only_the_final_layer_counts(case):
  targets = (case["labels"], case["target_boxes"], case["valid"])
  total, parts = jax.jit(detr_loss.detr_loss)(_outputs(case), *targets)
  final, final_parts = jax.jit(lambda o, *t: detr_loss.detr_loss(o, *t, aux_loss=False))(_outputs(case), *targets)
  assert sorted(final_parts) == ["ce", "giou", "l1"] and len(parts) == 3 * L
  np.testing.assert_allclose(final, final_parts["ce"] + 5 * final_parts["l1"] + 2 * final_parts["giou"], rtol=1e-6)
  for k in ("ce", "l1", "giou"):
    np.testing.assert_allclose(final_parts[k], parts[k], rtol=1e-6)
  assert total > final


def test_per_device_matching_equals_matching_the_whole_batch():
  """16 images sharded over the 8 devices, each device matching its own 2: the assignment of the whole batch."""
  from jax.sharding import Mesh, NamedSharding, PartitionSpec  # noqa: PLC0415
  rng = np.random.default_rng(3)
  b = 16
  args = (rng.normal(size=(b, Q, K + 1)).astype(np.float32), random_boxes(rng, (b, Q)),
          rng.integers(0, K, (b, M)).astype(np.int32), random_boxes(rng, (b, M)), rng.uniform(size=(b, M)) < 0.7)
  mesh = Mesh(np.asarray(jax.devices()), ("data",))
  assert mesh.size == 8
  sharded = [jax.device_put(a, NamedSharding(mesh, PartitionSpec("data"))) for a in args]
  ours = jax.jit(detr_loss.per_device_match(mesh, "data"))(*sharded)
  np.testing.assert_array_equal(ours, jax.jit(detr_loss.match)(*args))
  assert (np.asarray(ours) >= 0).sum() == args[4].sum()

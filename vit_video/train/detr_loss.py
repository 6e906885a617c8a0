"""DETR's set prediction loss (Carion et al. 2020), as Hugging Face's `ForObjectDetectionLoss` and the official
`SetCriterion`: a Hungarian matching of predictions to targets, then a loss on the matched pairs.

    total, parts = detr_loss(model.apply(variables, images, train=True, rngs=...), labels, boxes, valid)

Targets are padded to M per image: `labels` [B,M] int in [0, K), `boxes` [B,M,4] (cx, cy, w, h) relative to the
image, `valid` [B,M] bool (False on padding). For each decoder layer's predictions (the final ones and every `aux`):
  1. matching (no gradient): per image, the one-to-one assignment of queries to valid targets that minimises
       class_weight * -p(target class) + l1_weight * |box - target|_1 + giou_weight * -GIoU(box, target)
     solved exactly on the host by scipy's `linear_sum_assignment` (through `jax.pure_callback`, so all of this jits);
  2. loss: class_weight * cross-entropy over all B*Q queries (unmatched queries' target is "no object", class K,
     whose terms weigh `eos_coef`; a weighted mean, as torch's cross_entropy with `weight`) + l1_weight * L1 +
     giou_weight * (1 - GIoU) over the matched pairs, both summed and divided by the number of valid targets in the
     batch (at least 1).
The total sums the layers' losses. The same three weights serve the matching costs and the loss, as in DETR's
published settings (1, 5, 2; the official code and HF configure them separately). The box conversions here are
jax's, differentiable, for the loss; vit_video.data.boxes has the numpy ones, for data and evaluation.
"""
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P
from scipy.optimize import linear_sum_assignment


def cxcywh_to_xyxy(boxes: jax.Array) -> jax.Array:
  """(cx, cy, w, h) -> (x0, y0, x1, y1): [..., 4] -> [..., 4]."""
  center, size = boxes[..., :2], boxes[..., 2:]
  return jnp.concatenate([center - size / 2, center + size / 2], axis=-1)


def xyxy_to_cxcywh(boxes: jax.Array) -> jax.Array:
  """(x0, y0, x1, y1) -> (cx, cy, w, h): [..., 4] -> [..., 4]."""
  low, high = boxes[..., :2], boxes[..., 2:]
  return jnp.concatenate([(low + high) / 2, high - low], axis=-1)


def generalized_iou(a: jax.Array, b: jax.Array) -> jax.Array:
  """GIoU (Rezatofighi et al. 2019) of corner boxes (x0, y0, x1, y1), broadcasting: [..., 4], [..., 4] -> [...].

  IoU - (|C| - |A u B|) / |C|, C the smallest box enclosing both; in [-1, 1], 1 only for equal boxes, below 0 for
  disjoint ones. Pairwise: generalized_iou(a[:, None], b[None]) -> [N, M]. Boxes must have positive area.
  """
  area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
  size = lambda low, high: jnp.clip(high - low, 0)  # noqa: E731  [..., 2]
  inter = size(jnp.maximum(a[..., :2], b[..., :2]), jnp.minimum(a[..., 2:], b[..., 2:])).prod(-1)
  union = area(a) + area(b) - inter
  enclosing = size(jnp.minimum(a[..., :2], b[..., :2]), jnp.maximum(a[..., 2:], b[..., 2:])).prod(-1)
  return inter / union - (enclosing - union) / enclosing


def matching_cost(logits: jax.Array, boxes: jax.Array, labels: jax.Array, target_boxes: jax.Array, *,
                  class_weight: float, l1_weight: float, giou_weight: float) -> jax.Array:
  """The cost of assigning each query to each target: [B,Q,K+1], [B,Q,4], [B,M], [B,M,4] -> [B,Q,M]."""
  prob = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)  # [B,Q,K+1]
  class_cost = -jnp.take_along_axis(prob, jnp.broadcast_to(labels[:, None, :], (*prob.shape[:2], labels.shape[1])),
                                    axis=-1)  # [B,Q,M]: -p(target class) of every query
  l1 = jnp.abs(boxes[:, :, None, :] - target_boxes[:, None, :, :]).sum(-1)  # [B,Q,M]
  giou = generalized_iou(cxcywh_to_xyxy(boxes)[:, :, None], cxcywh_to_xyxy(target_boxes)[:, None])  # [B,Q,M]
  return class_weight * class_cost + l1_weight * l1 - giou_weight * giou


def hungarian_match(cost: np.ndarray, valid: np.ndarray) -> np.ndarray:
  """On the host: [B,Q,M] cost, [B,M] valid -> [B,M] int32, the query assigned to each target, -1 for padding (and
  for the targets left over when an image has more than Q)."""
  cost, valid = np.asarray(cost), np.asarray(valid)
  matched = np.full(valid.shape, -1, np.int32)
  for i in range(cost.shape[0]):
    targets = np.flatnonzero(valid[i])
    queries, columns = linear_sum_assignment(cost[i][:, targets])
    matched[i, targets[columns]] = queries
  return matched


def match(logits: jax.Array, boxes: jax.Array, labels: jax.Array, target_boxes: jax.Array, valid: jax.Array, *,
          class_weight: float = 1.0, l1_weight: float = 5.0, giou_weight: float = 2.0) -> jax.Array:
  """The optimal assignment (`hungarian_match` of `matching_cost`), jittable: -> [B,M] int32 query per target."""
  cost = jax.lax.stop_gradient(matching_cost(logits, boxes, labels, target_boxes, class_weight=class_weight,
                                             l1_weight=l1_weight, giou_weight=giou_weight))
  return jax.pure_callback(hungarian_match, jax.ShapeDtypeStruct(valid.shape, jnp.int32), cost, valid,
                           vmap_method="sequential")


def per_device_match(mesh: Mesh, axis: str) -> Callable[..., jax.Array]:
  """`match` with each device solving the assignments of its own images (shard_map over the batch axis `axis` of
  `mesh`): under jit on many hosts no batch is gathered to one device for the host callback. Images are matched
  independently, so the result is `match`'s."""

  def matcher(logits, boxes, labels, target_boxes, valid, **weights):
    logits, boxes = jax.lax.stop_gradient((logits, boxes))
    return jax.shard_map(functools.partial(match, **weights), mesh=mesh, in_specs=P(axis),
                         out_specs=P(axis))(logits, boxes, labels, target_boxes, valid)

  return matcher


def set_loss(logits: jax.Array, boxes: jax.Array, labels: jax.Array, target_boxes: jax.Array, matched: jax.Array,
             num_boxes: jax.Array, *, eos_coef: float) -> dict[str, jax.Array]:
  """The three losses of one layer's predictions given the matching `matched` [B,M] (-1: unmatched):
  {"ce": weighted mean cross-entropy, "l1": L1 sum / num_boxes, "giou": (1 - GIoU) sum / num_boxes}, float32."""
  b, q, classes = logits.shape
  no_object = classes - 1
  ok = matched >= 0  # [B,M]
  target_classes = jnp.full((b, q), no_object).at[jnp.arange(b)[:, None], jnp.where(ok, matched, q)].set(
      labels, mode="drop")  # [B,Q]; index Q (unmatched) is out of range and dropped
  nll = -jnp.take_along_axis(jax.nn.log_softmax(logits.astype(jnp.float32), -1), target_classes[..., None],
                             axis=-1)[..., 0]  # [B,Q]
  weight = jnp.where(target_classes == no_object, eos_coef, 1.0)  # [B,Q]
  pred = jnp.take_along_axis(boxes.astype(jnp.float32), jnp.where(ok, matched, 0)[..., None], axis=1)  # [B,M,4]
  l1 = jnp.where(ok[..., None], jnp.abs(pred - target_boxes), 0.0).sum()
  giou = generalized_iou(cxcywh_to_xyxy(pred), cxcywh_to_xyxy(target_boxes))  # [B,M]
  return {"ce": (weight * nll).sum() / weight.sum(), "l1": l1 / num_boxes,
          "giou": jnp.where(ok, 1.0 - giou, 0.0).sum() / num_boxes}


def detr_loss(outputs: dict, labels: jax.Array, target_boxes: jax.Array, valid: jax.Array, *,
              class_weight: float = 1.0, l1_weight: float = 5.0, giou_weight: float = 2.0,
              eos_coef: float = 0.1, aux_loss: bool = True,
              matcher: Callable[..., jax.Array] = match) -> tuple[jax.Array, dict[str, jax.Array]]:
  """DETR's loss of the model's `outputs` ({"logits", "boxes", "aux"}) on padded targets (module docstring).

  `aux_loss` False: the final layer's loss only (the paper's ablation; `aux` is ignored). `matcher`: `match`, or
  `per_device_match(mesh, axis)` under jit on a mesh.

  Returns (total, parts): parts "ce", "l1", "giou" for the final layer and "ce_{i}", "l1_{i}", "giou_{i}" for aux
  layer i (HF's names less "loss_"), each unweighted; total = sum over the layers of class_weight * ce + l1_weight
  * l1 + giou_weight * giou.
  """
  target_boxes = target_boxes.astype(jnp.float32)
  num_boxes = jnp.maximum(valid.sum(), 1).astype(jnp.float32)
  layers = [("", outputs)] + ([(f"_{i}", aux) for i, aux in enumerate(outputs["aux"])] if aux_loss else [])
  total, parts = 0.0, {}
  for suffix, out in layers:
    matched = matcher(out["logits"], out["boxes"], labels, target_boxes, valid, class_weight=class_weight,
                    l1_weight=l1_weight, giou_weight=giou_weight)
    losses = set_loss(out["logits"], out["boxes"], labels, target_boxes, matched, num_boxes, eos_coef=eos_coef)
    total += class_weight * losses["ce"] + l1_weight * losses["l1"] + giou_weight * losses["giou"]
    parts.update({f"{name}{suffix}": value for name, value in losses.items()})
  return total, parts

"""COCO box evaluation (AP, AP50, AP75, AP / AR by size) of detections, computed by pycocotools' COCOeval.

It lives in `data/` because it is the evaluation side of the datasets' annotations: it reads tfds examples (the
`fmnist_scenes` features, as tfds coco's) and knows no model or training loop, so the training code and the studies
import it as they import the pipelines.

  gt = coco_eval.ground_truth(examples, class_names)         # examples: numpy dicts of a split, e.g. tfds.as_numpy
  dets = coco_eval.detections(image_ids, boxes, scores, labels, height=96, width=96)  # DETR's normalised cxcywh
  metrics = coco_eval.evaluate(gt, dets)                     # {'AP': ..., 'AP50': ..., ..., 'ARl': ...}

Category ids are the dataset's class indices (0-based); annotation ids start at 1 (COCOeval takes id 0 for "no
match"). Metrics pycocotools leaves undefined (-1: no ground-truth box in that size range, e.g. APl when every
object is smaller than 96^2 px) come back as NaN. No detections at all is a valid result, scored 0 wherever there is
ground truth (pycocotools' `loadRes` rejects an empty list, so an empty result set is built here instead).
pycocotools prints its progress and summary; `evaluate` captures them and logs the summary at DEBUG level.
"""
import contextlib
import io
import logging
import math
from collections.abc import Iterable, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from vit_video.data import boxes as box_ops

_LOG = logging.getLogger(__name__)

# COCOeval.stats, in its order: AP at IoU .50:.95, .50, .75; AP small / medium / large; AR at 1, 10, 100
# detections per image; AR small / medium / large (at 100). Small: area < 32^2 px, medium: < 96^2, large: above.
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _quiet(function, *args):
  """Calls function(*args) with stdout captured (pycocotools prints); returns (result, the printed text)."""
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    result = function(*args)
  return result, out.getvalue()


def ground_truth(examples: Iterable[dict], class_names: Sequence[str]) -> COCO:
  """An in-memory COCO ground truth of `examples`, numpy dicts with the `fmnist_scenes` features:

    image_id  int, unique among the examples
    image     [H,W,C] (only its size is read)
    objects   {'bbox': [M,4] tfds (y_min, x_min, y_max, x_max) normalised, 'label': [M], 'area': [M] pixels,
               optionally 'is_crowd': [M] bool (tfds coco)}

  Boxes become COCO xywh pixels; crowd objects are iscrowd 1 (pycocotools ignores detections on them), all
  others 0. Raises ValueError naming the image for a repeated image id,
  a box of zero or negative width or height, or a label outside the classes; an image without objects is kept (its
  detections are false positives).
  """
  images, annotations, seen = [], [], set()
  for example in examples:
    image_id = int(example["image_id"])
    if image_id in seen:
      raise ValueError(f"image_id {image_id} occurs twice")
    seen.add(image_id)
    height, width = example["image"].shape[:2]
    images.append({"id": image_id, "height": int(height), "width": int(width)})
    objects = example["objects"]
    xyxy = box_ops.tfds_to_xyxy(np.asarray(objects["bbox"]).reshape(-1, 4), height=height, width=width)  # [M,4]
    crowd = objects.get("is_crowd", np.zeros(len(objects["label"]), bool))
    for box, label, area, is_crowd in zip(box_ops.xyxy_to_xywh(xyxy), objects["label"], objects["area"], crowd):
      if box[2] <= 0 or box[3] <= 0:
        raise ValueError(f"image {image_id}: box xywh {box.tolist()} has zero or negative width or height")
      if not 0 <= label < len(class_names):
        raise ValueError(f"image {image_id}: label {label} is not one of the {len(class_names)} classes")
      annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label),
                          "bbox": [float(v) for v in box], "area": float(area), "iscrowd": int(bool(is_crowd))})
  coco = COCO()
  coco.dataset = {"images": images, "annotations": annotations,
                  "categories": [{"id": k, "name": name} for k, name in enumerate(class_names)]}
  _quiet(coco.createIndex)
  return coco


def detections(image_ids, boxes, scores, labels, *, height: float, width: float) -> list[dict]:
  """COCO detection results from a batch of predictions: image_ids [B], boxes [B,Q,4] cxcywh normalised (DETR's
  format), scores [B,Q], labels [B,Q] -> B*Q dicts {'image_id', 'category_id', 'bbox' (xywh pixels), 'score'}.

  Keep only the detections you mean to score (e.g. drop DETR's no-object predictions) before or after."""
  xywh = box_ops.xyxy_to_xywh(box_ops.denormalize_xyxy(box_ops.cxcywh_to_xyxy(boxes), height=height, width=width))
  return [{"image_id": int(image_id), "category_id": int(label), "bbox": [float(v) for v in box], "score": float(s)}
          for image_id, image_boxes, image_scores, image_labels in zip(image_ids, xywh, scores, labels)
          for box, s, label in zip(image_boxes, image_scores, image_labels)]


def evaluate(gt: COCO, dets: list[dict]) -> dict[str, float]:
  """COCO box metrics (METRICS) of detections `dets` (dicts as `detections` makes) against `gt`; NaN where undefined.

  Raises ValueError for a detection of an image or category that `gt` does not hold.
  """
  unknown = {d["image_id"] for d in dets} - set(gt.getImgIds())
  if unknown:
    raise ValueError(f"detections of images not in the ground truth: {sorted(unknown)[:10]}")
  unknown = {d["category_id"] for d in dets} - set(gt.getCatIds())
  if unknown:
    raise ValueError(f"detections of categories not in the ground truth: {sorted(unknown)}")
  if dets:
    results, _ = _quiet(gt.loadRes, [dict(d) for d in dets])  # copies: loadRes adds id, area, iscrowd
  else:
    results = COCO()
    results.dataset = {"images": list(gt.dataset["images"]), "categories": list(gt.dataset["categories"]),
                       "annotations": []}
    _quiet(results.createIndex)
  evaluator = COCOeval(gt, results, iouType="bbox")
  _quiet(evaluator.evaluate)
  _quiet(evaluator.accumulate)
  _, summary = _quiet(evaluator.summarize)
  _LOG.debug("COCO evaluation of %d detections on %d images:\n%s", len(dets), len(gt.getImgIds()), summary)
  return {name: math.nan if value == -1 else float(value) for name, value in zip(METRICS, evaluator.stats)}

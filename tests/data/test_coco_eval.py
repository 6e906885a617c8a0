"""Tests for vit_video.data.coco_eval: pycocotools' metrics on hand-made scenes with known answers, and the errors."""
import logging
import math

import numpy as np
import pytest

from vit_video.data import boxes, coco_eval

H, W = 40, 60  # image height and width
CLASSES = ("a", "b", "c")


def example(image_id, xyxy, labels):
  """A scene's numpy example (the fmnist_scenes features) with objects at pixel boxes xyxy [M,4]."""
  xyxy = np.asarray(xyxy, np.float64).reshape(-1, 4)
  return {"image_id": image_id, "image": np.zeros((H, W, 1), np.uint8),
          "objects": {"bbox": boxes.xyxy_to_tfds(xyxy, height=H, width=W).astype(np.float32),
                      "label": np.asarray(labels, np.int64), "area": boxes.area_xyxy(xyxy).astype(np.int64)}}


# Three images, four objects of 20 x 10 px (area 200: COCO "small"), classes 0, 1, 2, 0.
EXAMPLES = [example(3, [[5, 5, 25, 15], [30, 20, 50, 30]], [0, 1]), example(7, [[10, 10, 30, 20]], [2]),
            example(0, [[0, 0, 20, 10]], [0])]


def perfect(shift=0.0, label_offset=0, score=1.0):
  """Detections at the ground-truth boxes moved right by `shift` px, with labels + label_offset (mod 3)."""
  dets = []
  for ex in EXAMPLES:
    xywh = boxes.xyxy_to_xywh(boxes.tfds_to_xyxy(ex["objects"]["bbox"], height=H, width=W))
    for box, label in zip(xywh, ex["objects"]["label"]):
      dets.append({"image_id": ex["image_id"], "category_id": int(label + label_offset) % len(CLASSES),
                   "bbox": [float(box[0] + shift), *map(float, box[1:])], "score": score})
  return dets


def evaluate(dets):
  return coco_eval.evaluate(coco_eval.ground_truth(EXAMPLES, CLASSES), dets)


def test_ground_truth_holds_the_boxes_in_coco_pixels():
  gt = coco_eval.ground_truth(EXAMPLES, CLASSES)
  assert sorted(gt.getImgIds()) == [0, 3, 7] and gt.imgs[7] == {"id": 7, "height": H, "width": W}
  annotations = gt.loadAnns(gt.getAnnIds(imgIds=[3]))
  np.testing.assert_allclose([a["bbox"] for a in annotations], [[5, 5, 20, 10], [30, 20, 20, 10]], atol=1e-4)
  assert [(a["category_id"], a["area"], a["iscrowd"]) for a in annotations] == [(0, 200, 0), (1, 200, 0)]
  assert min(gt.getAnnIds()) == 1  # COCOeval reads id 0 as "no match"


def test_perfect_detections_score_one_and_undefined_ranges_are_nan(capsys):
  metrics = evaluate(perfect())
  assert list(metrics) == list(coco_eval.METRICS)
  for name in ("AP", "AP50", "AP75", "APs", "AR1", "AR10", "AR100", "ARs"):
    assert metrics[name] == pytest.approx(1.0), name
  for name in ("APm", "APl", "ARm", "ARl"):  # every object is small: pycocotools' -1
    assert math.isnan(metrics[name]), name
  assert capsys.readouterr().out == ""  # pycocotools' prints are captured


def test_summary_is_logged_at_debug(caplog):
  with caplog.at_level(logging.DEBUG, logger=coco_eval.__name__):
    evaluate(perfect())
  assert "Average Precision  (AP) @[ IoU=0.50:0.95" in caplog.text


def test_shifted_detections_lose_the_strict_thresholds():
  # 4 px right on a 20 px wide box: IoU 16 / 24 = 0.667, a match at thresholds 0.50 ... 0.65 (4 of 10).
  metrics = evaluate(perfect(shift=4))
  assert metrics["AP50"] == pytest.approx(1.0) and metrics["AP75"] == 0.0
  assert metrics["AP"] == pytest.approx(0.4)
  # Half a box (10 px): IoU 10 / 30 = 0.33, no match at any threshold.
  metrics = evaluate(perfect(shift=10))
  assert metrics["AP50"] == 0.0 and metrics["AP"] == 0.0 and metrics["AR100"] == 0.0


def test_wrong_class_and_no_detections_score_zero():
  assert evaluate(perfect(label_offset=1))["AP"] == 0.0
  metrics = evaluate([])
  assert metrics["AP"] == metrics["AP50"] == metrics["AR100"] == 0.0
  assert math.isnan(metrics["APl"])


def test_a_better_scored_false_positive_halves_the_precision():
  """One image's object found, after a false positive scored higher: precision 1/2 at every recall, AP 0.5."""
  gt = coco_eval.ground_truth(EXAMPLES[1:2], CLASSES)
  hit = {"image_id": 7, "category_id": 2, "bbox": [10.0, 10.0, 20.0, 10.0], "score": 0.6}
  miss = {"image_id": 7, "category_id": 2, "bbox": [40.0, 25.0, 15.0, 10.0], "score": 0.9}
  assert coco_eval.evaluate(gt, [hit, miss])["AP"] == pytest.approx(0.5)
  assert coco_eval.evaluate(gt, [{**miss, "score": 0.1}, hit])["AP"] == pytest.approx(1.0)


def test_detections_from_normalised_cxcywh():
  """DETR's output format: boxes [B,Q,4] cxcywh normalised, scores and labels [B,Q] -> COCO xywh pixels."""
  cxcywh = np.array([[[0.25, 0.5, 0.1, 0.2], [0.5, 0.25, 0.2, 0.1]]])  # [1,2,4]
  dets = coco_eval.detections([7], cxcywh, np.array([[0.9, 0.2]]), np.array([[2, 0]]), height=H, width=W)
  assert [(d["image_id"], d["category_id"], d["score"]) for d in dets] == [(7, 2, 0.9), (7, 0, 0.2)]
  np.testing.assert_allclose([d["bbox"] for d in dets], [[12, 16, 6, 8], [24, 8, 12, 4]], atol=1e-9)


def test_bad_ground_truth_and_detections_raise():
  flat = example(1, [[5, 5, 25, 15]], [0])
  flat["objects"]["bbox"][0, 2] = flat["objects"]["bbox"][0, 0]  # y_max = y_min
  with pytest.raises(ValueError, match=r"image 1: box xywh \[5.0, 5.0, 20.0, 0.0\] has zero or negative"):
    coco_eval.ground_truth([flat], CLASSES)
  with pytest.raises(ValueError, match="image 1: label 3 is not one of the 3 classes"):
    coco_eval.ground_truth([example(1, [[5, 5, 25, 15]], [3])], CLASSES)
  with pytest.raises(ValueError, match="image_id 3 occurs twice"):
    coco_eval.ground_truth([EXAMPLES[0], EXAMPLES[0]], CLASSES)
  empty = coco_eval.ground_truth([example(5, np.zeros((0, 4)), [])], CLASSES)  # an image without objects is kept
  assert empty.getImgIds() == [5] and empty.getAnnIds() == []
  with pytest.raises(ValueError, match=r"detections of images not in the ground truth: \[99\]"):
    evaluate([{**perfect()[0], "image_id": 99}])
  with pytest.raises(ValueError, match=r"detections of categories not in the ground truth: \[5\]"):
    evaluate([{**perfect()[0], "category_id": 5}])


def test_crowd_regions_are_ignored_not_counted():
  """One object and one 25 x 25 crowd region (tfds coco's is_crowd): a small detection inside the crowd, scored
  above the hit, is ignored (pycocotools matches crowds by the detection's own area), so AP is 1; were the region
  an object, the detection would be a false positive (IoU 0.16) and the region a miss."""
  ex = example(5, [[5, 5, 25, 15], [30, 10, 55, 35]], [1, 1])
  hit = {"image_id": 5, "category_id": 1, "bbox": [5.0, 5.0, 20.0, 10.0], "score": 0.5}
  inside = {"image_id": 5, "category_id": 1, "bbox": [35.0, 15.0, 10.0, 10.0], "score": 0.9}
  crowd = {**ex, "objects": {**ex["objects"], "is_crowd": np.array([False, True])}}
  gt = coco_eval.ground_truth([crowd], CLASSES)
  assert [a["iscrowd"] for a in gt.dataset["annotations"]] == [0, 1]
  assert coco_eval.evaluate(gt, [hit, inside])["AP"] == pytest.approx(1.0)
  assert coco_eval.evaluate(coco_eval.ground_truth([ex], CLASSES), [hit, inside])["AP"] < 0.5

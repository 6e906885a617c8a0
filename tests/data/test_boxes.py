"""Tests for vit_video.data.boxes: known values of every conversion and round trips at several leading shapes."""
import numpy as np
import pytest

from vit_video.data import boxes

H, W = 30, 50  # image height and width, different so that swapping x and y shows

# One box in every format: x 10..20, y 4..10 pixels of a 30 (H) x 50 (W) image.
XYXY = [10.0, 4.0, 20.0, 10.0]
CXCYWH = [15.0, 7.0, 10.0, 6.0]
XYWH = [10.0, 4.0, 10.0, 6.0]
TFDS = [4 / H, 10 / W, 10 / H, 20 / W]  # (y_min, x_min, y_max, x_max) normalised
XYXY_NORMALISED = [10 / W, 4 / H, 20 / W, 10 / H]


def test_known_values():
  np.testing.assert_allclose(boxes.xyxy_to_cxcywh(XYXY), CXCYWH)
  np.testing.assert_allclose(boxes.cxcywh_to_xyxy(CXCYWH), XYXY)
  np.testing.assert_allclose(boxes.xyxy_to_xywh(XYXY), XYWH)
  np.testing.assert_allclose(boxes.xywh_to_xyxy(XYWH), XYXY)
  np.testing.assert_allclose(boxes.normalize_xyxy(XYXY, height=H, width=W), XYXY_NORMALISED)
  np.testing.assert_allclose(boxes.denormalize_xyxy(XYXY_NORMALISED, height=H, width=W), XYXY)
  np.testing.assert_allclose(boxes.xyxy_to_tfds(XYXY, height=H, width=W), TFDS)
  np.testing.assert_allclose(boxes.tfds_to_xyxy(TFDS, height=H, width=W), XYXY)
  assert boxes.area_xyxy(XYXY) == 60.0
  np.testing.assert_array_equal(boxes.area_xyxy([[0, 0, 2, 3], [5, 5, 4, 9]]), [6.0, 0.0])  # inverted: 0


@pytest.mark.parametrize("shape", [(4,), (7, 4), (3, 5, 4)])
def test_round_trips_keep_boxes(shape):
  rng = np.random.default_rng(len(shape))
  corner = rng.uniform(0, 40, shape[:-1] + (2,))
  xyxy = np.concatenate([corner, corner + rng.uniform(0.5, 10, shape[:-1] + (2,))], -1)  # [..., 4]
  for there, back in ((boxes.xyxy_to_cxcywh, boxes.cxcywh_to_xyxy), (boxes.xyxy_to_xywh, boxes.xywh_to_xyxy)):
    assert there(xyxy).shape == shape
    np.testing.assert_allclose(back(there(xyxy)), xyxy, atol=1e-12)
  for there, back in ((boxes.normalize_xyxy, boxes.denormalize_xyxy), (boxes.xyxy_to_tfds, boxes.tfds_to_xyxy)):
    np.testing.assert_allclose(back(there(xyxy, height=H, width=W), height=H, width=W), xyxy, atol=1e-12)
  # DETR's normalised cxcywh -> COCO's xywh pixels and back.
  detr = boxes.xyxy_to_cxcywh(boxes.normalize_xyxy(xyxy, height=H, width=W))
  coco = boxes.xyxy_to_xywh(boxes.denormalize_xyxy(boxes.cxcywh_to_xyxy(detr), height=H, width=W))
  np.testing.assert_allclose(coco[..., 2] * coco[..., 3], boxes.area_xyxy(xyxy))
  np.testing.assert_allclose(boxes.xywh_to_xyxy(coco), xyxy, atol=1e-12)


def test_dtypes_and_bad_shape():
  assert boxes.xyxy_to_cxcywh(np.array(XYXY, np.float32)).dtype == np.float32
  assert boxes.tfds_to_xyxy(np.array(TFDS, np.float32), height=H, width=W).dtype == np.float32
  assert boxes.xyxy_to_tfds(np.array(XYXY, np.float32), height=H, width=W).dtype == np.float32
  assert boxes.xyxy_to_xywh(np.array([1, 2, 3, 5])).dtype == np.float64  # integer pixels -> float64
  np.testing.assert_array_equal(boxes.xyxy_to_cxcywh(np.array([1, 2, 3, 5])), [2.0, 3.5, 2.0, 3.0])
  with pytest.raises(ValueError, match=r"boxes must have shape \[..., 4\], got \(2, 3\)"):
    boxes.xyxy_to_cxcywh(np.zeros((2, 3)))

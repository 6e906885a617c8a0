"""Box format conversions (numpy), for detection data and its evaluation.

Every function takes boxes [..., 4] (any leading shape, e.g. [M,4] objects or [B,Q,4] queries) and returns the same
shape, floating point (integer input comes back float64, float32 stays float32). The formats:
  xyxy    (x_min, y_min, x_max, y_max): corners, pixels unless said otherwise.
  cxcywh  (centre x, centre y, width, height): DETR's prediction format, there normalised to [0, 1] by image size.
  xywh    (x_min, y_min, width, height): COCO's `bbox` (annotations and detection results), pixels.
  tfds    (y_min, x_min, y_max, x_max) normalised to [0, 1] by (height, width): tfds `BBoxFeature`, as in tfds coco.
Pixel coordinates are continuous: pixel (row i, column j) covers [j, j + 1) x [i, i + 1), so the tight box of
pixels rows i0..i1, columns j0..j1 is xyxy (j0, i0, j1 + 1, i1 + 1), never of zero size. x is the column, y the row.
"""
import numpy as np


def _float(boxes) -> np.ndarray:
  boxes = np.asarray(boxes)
  if boxes.shape[-1:] != (4,):
    raise ValueError(f"boxes must have shape [..., 4], got {boxes.shape}")
  return boxes.astype(np.result_type(boxes.dtype, np.float32))  # ints -> float64; float32 stays


def xyxy_to_cxcywh(boxes) -> np.ndarray:
  """[..., 4] (x_min, y_min, x_max, y_max) -> [..., 4] (cx, cy, w, h), in the same units."""
  b = _float(boxes)
  x0, y0, x1, y1 = np.moveaxis(b, -1, 0)
  return np.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], axis=-1)


def cxcywh_to_xyxy(boxes) -> np.ndarray:
  """[..., 4] (cx, cy, w, h) -> [..., 4] (x_min, y_min, x_max, y_max), in the same units."""
  b = _float(boxes)
  cx, cy, w, h = np.moveaxis(b, -1, 0)
  return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def xyxy_to_xywh(boxes) -> np.ndarray:
  """[..., 4] (x_min, y_min, x_max, y_max) -> [..., 4] COCO (x_min, y_min, w, h), in the same units."""
  b = _float(boxes)
  return np.concatenate([b[..., :2], b[..., 2:] - b[..., :2]], axis=-1)


def xywh_to_xyxy(boxes) -> np.ndarray:
  """[..., 4] COCO (x_min, y_min, w, h) -> [..., 4] (x_min, y_min, x_max, y_max), in the same units."""
  b = _float(boxes)
  return np.concatenate([b[..., :2], b[..., :2] + b[..., 2:]], axis=-1)


def normalize_xyxy(boxes, *, height: float, width: float) -> np.ndarray:
  """[..., 4] xyxy pixels -> [..., 4] xyxy in [0, 1] (x divided by width, y by height)."""
  b = _float(boxes)
  return b / np.array([width, height, width, height], b.dtype)


def denormalize_xyxy(boxes, *, height: float, width: float) -> np.ndarray:
  """[..., 4] xyxy in [0, 1] -> [..., 4] xyxy pixels (x times width, y times height)."""
  b = _float(boxes)
  return b * np.array([width, height, width, height], b.dtype)


def tfds_to_xyxy(boxes, *, height: float, width: float) -> np.ndarray:
  """[..., 4] tfds (y_min, x_min, y_max, x_max) normalised -> [..., 4] xyxy pixels of an H x W image."""
  return denormalize_xyxy(_float(boxes)[..., [1, 0, 3, 2]], height=height, width=width)


def xyxy_to_tfds(boxes, *, height: float, width: float) -> np.ndarray:
  """[..., 4] xyxy pixels of an H x W image -> [..., 4] tfds (y_min, x_min, y_max, x_max) normalised."""
  return normalize_xyxy(boxes, height=height, width=width)[..., [1, 0, 3, 2]]


def area_xyxy(boxes) -> np.ndarray:
  """[..., 4] xyxy -> [...] areas (width times height; negative sizes count as 0)."""
  b = _float(boxes)
  return np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)

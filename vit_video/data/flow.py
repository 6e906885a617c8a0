"""Dense optical flow for two-stream networks (numpy + OpenCV): compute, quantise, stack, warp, measure.

Sign convention (OpenCV's). flow_t = compute_flow(frames)[t], float32 [H,W,2], holds for every pixel p = (x, y)
(x the column, y the row, in pixels) the displacement (dx, dy) = flow_t[y, x] of the scene point seen at p in
frame t to where it is seen in frame t+1:

    frame_{t+1}(p + flow_t(p)) ~ frame_t(p).

So content moving right / down between t and t+1 gives positive x / y flow. `warp(frame_{t+1}, flow_t)`
samples frame_{t+1} at p + flow_t(p) (backward warping), which rebuilds frame_t; this is how flow is validated.

Methods (grey frames: C=3 frames are taken as RGB and converted with cv2.COLOR_RGB2GRAY, C=1 used as is):
  "dis"        cv2.DISOpticalFlow with DISOPTICAL_FLOW_PRESET_MEDIUM (Kroeger et al. 2016, "Fast optical flow
               using dense inverse search"): 8x8 patches at stride 3, down to the finest scale (full resolution),
               25 gradient-descent iterations, 5 variational-refinement iterations. MEDIUM is OpenCV's most
               accurate preset (there is no FINE one; ULTRAFAST and FAST stop at 1/4 resolution).
  "farneback"  cv2.calcOpticalFlowFarneback with FARNEBACK below (Farneback 2003, "Two-frame motion estimation
               based on polynomial expansion"): OpenCV's documented example parameters.

Storage. The two-stream and TSN papers store flow as 8-bit images: each component is clipped to [-bound, bound]
(bound = 20 px in TSN's dense_flow) and mapped linearly to 0..255. `quantize_flow` does exactly

    q = round((clip(f, -bound, bound) + bound) * 255 / (2 bound))          (uint8)
    f' = q * 2 bound / 255 - bound                                          (`dequantize_flow`, float32)

so a flow inside the bound comes back within half a step, bound / 255 (0.078 px for bound 20); f = 0 maps to
q = 128 (127.5 rounded half to even), which reads back as bound / 255; clipped values read back as +-bound.

`stack_flow` lays T-1 fields out as the temporal stream's input [H,W,2(T-1)], channels x_0, y_0, x_1, y_1, ...
(channel 2t is field t's x, 2t+1 its y), the order vit_video/models/two_stream.py documents.
"""
import cv2
import numpy as np

METHODS = ("dis", "farneback")
# cv2.calcOpticalFlowFarneback's parameters (OpenCV's tutorial values): a 3-level pyramid halving each level,
# 15x15 averaging windows, 3 iterations per level, polynomial expansion over 5x5 neighbourhoods with sigma 1.2.
FARNEBACK = {"pyr_scale": 0.5, "levels": 3, "winsize": 15, "iterations": 3, "poly_n": 5, "poly_sigma": 1.2,
             "flags": 0}


def _grey(frames: np.ndarray) -> np.ndarray:
  """uint8 [T,H,W,C] -> uint8 [T,H,W]: RGB to grey for C=3, the single channel for C=1."""
  if frames.shape[-1] == 1:
    return frames[..., 0]
  return np.stack([cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in frames])  # [T,H,W]


def compute_flow(frames: np.ndarray, *, method: str = "dis") -> np.ndarray:
  """Dense flow between consecutive frames: uint8 [T,H,W,C] (C = 1 or 3) -> float32 [T-1,H,W,2].

  Field t goes from frame t to frame t+1, components (x, y) in pixels, with
  frame_{t+1}(p + flow[t](p)) ~ frame_t(p) (module docstring). Raises ValueError for an unknown method or input
  that is not uint8 [T,H,W,C] with T >= 2 and C in (1, 3).
  """
  if method not in METHODS:
    raise ValueError(f"unknown flow method {method!r}; valid methods: {', '.join(METHODS)}")
  if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] not in (1, 3):
    raise ValueError(f"frames must be uint8 [T,H,W,C] with C = 1 or 3, got {frames.dtype} {frames.shape}")
  if frames.shape[0] < 2:
    raise ValueError(f"frames has T = {frames.shape[0]} frames: flow needs at least 2 (shape {frames.shape})")
  grey = np.ascontiguousarray(_grey(frames))  # [T,H,W]
  if method == "dis":
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    fields = [dis.calc(grey[t], grey[t + 1], None) for t in range(len(grey) - 1)]
  else:
    fields = [cv2.calcOpticalFlowFarneback(grey[t], grey[t + 1], None, **FARNEBACK) for t in range(len(grey) - 1)]
  return np.stack(fields).astype(np.float32)  # [T-1,H,W,2]


def _check_bound(bound: float) -> None:
  if not bound > 0:
    raise ValueError(f"bound = {bound}: must be positive")


def quantize_flow(flow: np.ndarray, *, bound: float = 20.0) -> np.ndarray:
  """Flow (any shape, pixels) -> uint8, same shape: round((clip(f, -bound, bound) + bound) * 255 / (2 bound))."""
  _check_bound(bound)
  scaled = (np.clip(np.asarray(flow, np.float64), -bound, bound) + bound) * (255.0 / (2.0 * bound))
  return np.round(scaled).astype(np.uint8)


def dequantize_flow(q: np.ndarray, *, bound: float) -> np.ndarray:
  """uint8 (any shape) -> float32 flow of the same shape: q * 2 bound / 255 - bound; inverts `quantize_flow`."""
  _check_bound(bound)
  if q.dtype != np.uint8:
    raise ValueError(f"quantised flow must be uint8, got {q.dtype} (shape {q.shape})")
  return (q.astype(np.float64) * (2.0 * bound / 255.0) - bound).astype(np.float32)


def stack_flow(flow: np.ndarray) -> np.ndarray:
  """[T-1,H,W,2] -> [H,W,2(T-1)]: channel 2t is field t's x and 2t+1 its y (x_0, y_0, x_1, y_1, ...). Any dtype."""
  if flow.ndim != 4 or flow.shape[-1] != 2:
    raise ValueError(f"flow must be [T-1,H,W,2], got shape {flow.shape}")
  n, h, w, _ = flow.shape
  return flow.transpose(1, 2, 0, 3).reshape(h, w, 2 * n)  # [T-1,H,W,2] -> [H,W,T-1,2] -> [H,W,2(T-1)]


def warp(frame: np.ndarray, flow: np.ndarray) -> np.ndarray:
  """Backward warp: frame [H,W] or [H,W,C], flow [H,W,2] -> float32 of frame's shape, out(p) = frame(p + flow(p)).

  Bilinear sampling (cv2.remap); points outside the frame take the nearest border pixel. With the module's sign
  convention, warp(frames[t + 1], compute_flow(frames)[t]) ~ frames[t].
  """
  if frame.ndim not in (2, 3) or flow.shape != frame.shape[:2] + (2,):
    raise ValueError(f"flow shape {flow.shape} does not match frame shape {frame.shape}: "
                     f"want {frame.shape[:2] + (2,)}")
  h, w = frame.shape[:2]
  grid_y, grid_x = np.mgrid[0:h, 0:w].astype(np.float32)  # [H,W] each: a pixel's row and column
  map_x = grid_x + flow[..., 0].astype(np.float32)
  map_y = grid_y + flow[..., 1].astype(np.float32)
  out = cv2.remap(frame.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
  return out.reshape(frame.shape)  # cv2.remap drops a trailing channel axis of size 1.


def _masked_mean(values: np.ndarray, mask: np.ndarray | None) -> float:
  """Mean of values [H,W,...] (float64) over all entries, or over the pixels where mask [H,W] is True."""
  if mask is None:
    return float(values.mean())
  mask = np.asarray(mask, bool)
  if mask.shape != values.shape[:mask.ndim]:
    raise ValueError(f"mask shape {mask.shape} does not match the leading axes of {values.shape}")
  if not mask.any():
    raise ValueError(f"mask {mask.shape} selects no pixel")
  return float(values[mask].mean())


def end_point_error(flow: np.ndarray, true_flow: np.ndarray, mask: np.ndarray | None = None) -> float:
  """Mean end-point error (pixels): mean over pixels of ||flow - true_flow||_2, both [...,2].

  mask: bool over the leading axes (e.g. [H,W] or [T-1,H,W]), True for the pixels to average over; None for all.
  """
  if flow.shape != true_flow.shape or flow.shape[-1] != 2:
    raise ValueError(f"flow shape {flow.shape} and true_flow shape {true_flow.shape} must be equal [...,2]")
  diff = flow.astype(np.float64) - true_flow.astype(np.float64)
  return _masked_mean(np.sqrt((diff ** 2).sum(axis=-1)), mask)


def photometric_error(frame_a: np.ndarray, frame_b: np.ndarray, mask: np.ndarray | None = None) -> float:
  """Mean absolute difference |frame_a - frame_b| over pixels and channels, in the frames' intensity units.

  frame_a, frame_b: equal shapes [H,W] or [H,W,C], any dtype (computed in float64). mask: bool [H,W], True for
  the pixels to average over; None for all.
  """
  if frame_a.shape != frame_b.shape:
    raise ValueError(f"frame shapes {frame_a.shape} and {frame_b.shape} differ")
  return _masked_mean(np.abs(frame_a.astype(np.float64) - frame_b.astype(np.float64)), mask)

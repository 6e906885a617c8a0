"""Decoding video files to uint8 RGB frames with the ffmpeg binary that the `imageio-ffmpeg` wheel ships.

`read_video_frames` runs `imageio_ffmpeg.get_ffmpeg_exe()` as a subprocess that writes raw rgb24 frames to a
pipe, so no system ffmpeg, PyAV or TensorFlow is needed:

  ffmpeg -nostdin -hide_banner -i PATH [-vf scale=W:H:flags=area] -frames:v MAX_FRAMES -an -sn
         -f rawvideo -pix_fmt rgb24 pipe:

The frame size is read from the "Output #0" stream line that ffmpeg writes to stderr (after any rotation the
container asks for and after scaling), the number of frames from the number of bytes received.
"""
import os
import re
import subprocess

import imageio_ffmpeg
import numpy as np

# The rawvideo output stream's line on ffmpeg's stderr, e.g.
#   Stream #0:0(und): Video: rawvideo (RGB[24] / 0x18424752), rgb24(pc, ...), 640x272 [SAR 1:1 DAR 40:17], ...
# The size is the first ", WxH" on it (the codec tag "/ 0x18424752" has no comma before it).
_OUTPUT_SIZE = re.compile(r"Output #0.*?Video: rawvideo.*?, (\d+)x(\d+)[ ,\n]", re.DOTALL)


def ffmpeg_error(stderr: str) -> str:
  """The last few non-empty lines of ffmpeg's stderr, joined: where ffmpeg says what went wrong."""
  lines = [line.strip() for line in stderr.splitlines() if line.strip()]
  return " | ".join(lines[-3:]) if lines else "(ffmpeg wrote nothing to stderr)"


def read_video_frames(path: str | os.PathLike, *, max_frames: int,
                      size: tuple[int, int] | None = None) -> np.ndarray:
  """Decodes the first (up to) `max_frames` frames of a video file: -> uint8 [T,H,W,3] RGB, T <= max_frames.

  size: (H, W) to resize every frame to (ffmpeg's area-averaging scaler, the right one for shrinking), or None
  to keep the file's own size. Raises FileNotFoundError if `path` does not exist, and ValueError naming the file
  (with ffmpeg's own message) if ffmpeg cannot decode it or decodes no frame, or if max_frames or size is not
  positive.
  """
  if max_frames < 1:
    raise ValueError(f"max_frames = {max_frames}: must be at least 1")
  if size is not None and (len(size) != 2 or min(size) < 1):
    raise ValueError(f"size {size} is not a positive (H, W) pair")
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"video file {path!r} does not exist")
  command = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-hide_banner", "-i", path]
  if size is not None:
    command += ["-vf", f"scale={size[1]}:{size[0]}:flags=area"]  # ffmpeg's scale filter takes W:H.
  command += ["-frames:v", str(max_frames), "-an", "-sn", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:"]
  result = subprocess.run(command, capture_output=True, check=False)
  stderr = result.stderr.decode("utf-8", errors="replace")
  if result.returncode != 0:
    raise ValueError(f"cannot decode video file {path!r}: ffmpeg exited with status {result.returncode}: "
                     f"{ffmpeg_error(stderr)}")
  match = _OUTPUT_SIZE.search(stderr)
  if match is None or not result.stdout:
    raise ValueError(f"cannot decode video file {path!r}: ffmpeg decoded no video frame: {ffmpeg_error(stderr)}")
  height, width = int(match.group(2)), int(match.group(1))
  frame_bytes = height * width * 3
  if len(result.stdout) % frame_bytes:
    raise ValueError(f"cannot decode video file {path!r}: ffmpeg wrote {len(result.stdout)} bytes, not a "
                     f"multiple of one {height}x{width} rgb24 frame ({frame_bytes} bytes)")
  frames = np.frombuffer(result.stdout, np.uint8)
  return frames.reshape(-1, height, width, 3).copy()  # [T,H,W,3]; copy: frombuffer's array is read-only.

"""A folder of your own video files as a local tfds builder, `video_folder` (the Kinetics / UCF101 layout).

manual_dir holds one folder per split and, inside it, one folder per class:

  DIR/train/archery/abc.mp4  DIR/train/bowling/def.avi  ...  DIR/test/archery/xyz.mkv  ...

  python -m vit_video.data.prepare video_folder --manual_dir DIR            # config 'default'
  python -m vit_video.data.prepare video_folder/fps10 --manual_dir DIR
  python -m vit_video.data.prepare video_folder/kinetics_flow --manual_dir DIR  # also stores optical flow

Splits: every sub-folder of DIR (train, test, validation, ...; hidden ones ignored); its name must be a word of
letters, digits and '_' (tfds slicing syntax) and not 'all'. Classes: the sorted union of the class folder names
over all splits, one ClassLabel. A class folder in another split but not in train is allowed (its label is then
never trained on) and logged as a warning. Videos are the files of a class folder (not its sub-folders) whose
suffix is one of VIDEO_SUFFIXES (any case); other files and sub-folders, and files directly in a split folder,
are left out with a warning. Keep DIR for the splits only: a sub-folder holding no video file (an
`annotations/` folder, say) is taken for a split and fails the build.

Features: 'video' uint8 [V,H,W,3] (tfds Video, PNG frames, V variable), 'label' ClassLabel, 'path' the file's
path relative to DIR with '/' ("train/archery/abc.mp4", also the example's key), 'num_frames' int32 V; and with
the config's `flow` (configs ucf101_flow, kinetics_flow), 'flow' uint8 [V-1,H,W,2] (zlib-compressed; [0,H,W,2]
for a one-frame video), the layout `video_pipeline` reads for two-stream models (flow=True).

What is kept of a video (`VideoFolderConfig`), decoded by ffmpeg (`decode_video`):
  * fps: None keeps the source frame rate; a number first resamples every video to that rate with ffmpeg's fps
    filter (output frame k is the last source frame whose timestamp rounds to k / fps: 10 fps -> 5 keeps frames
    0, 2, 4, ...). Datasets mix rates (Kinetics: mostly 25 and 30 fps), so a rate makes frames - and the clip
    pipeline's frame_stride - mean the same time everywhere.
  * num_frames: V = min(num_frames, frames of the video), its FIRST frames (after resampling). Frames are stored
    consecutively and the clip pipeline chooses frame_stride and the temporal window at training time, so
    there is no stride here: subsample in time with fps. Shorter videos are stored as they are; the clip pipeline
    repeats their last frame (`video_pipeline`'s padding rule).
  * size: (H, W) every frame is resized to (ffmpeg's area-averaging scaler), whatever its aspect ratio: the
    clip pipeline then takes square crops of side min(H, W). Pick H:W near the sources' (4:3 for UCF101).
  * flow, flow_bound: with flow, field i of 'flow' is `flow.compute_flow` (OpenCV DIS, MEDIUM preset) from
    stored frame i to i+1, i.e. on the frames after fps resampling and resizing, quantised by
    `flow.quantize_flow` with bound flow_bound px (steps of 2 flow_bound / 255 px). It is computed once, here,
    beside the decoding, not while training: measured 10 ms per frame at 256x340 on one core (a synthetic
    frame pair, best of 10 runs), 2.5 s per 10 s Kinetics video at 25 fps. Stored with zlib: about 27 KB per
    field at 256x340 (raw 174 KB; the PNG frames take about 98 KB) on tests/data/bikes.mp4.

Unreadable files do not stop the build, and are never silent: a file ffmpeg cannot decode, or from which it
decodes no frame (an empty or zero-frame file), is left out, logged as a warning with its path and ffmpeg's
message, and recorded in the dataset's metadata: `builder.info.metadata['skipped']` = {split: [{'path': ...,
'error': ...}, ...]} (every split, [] when none was skipped), saved as metadata.json in the dataset's folder
(DATA_DIR/video_folder/CONFIG/1.0.0/). A split with no readable video raises ValueError naming its folder.

Videos are decoded by up to MAX_DECODE_WORKERS ffmpeg processes at once (threads wait on them; with flow the
same threads then compute it, OpenCV releasing the GIL), at most twice that many ahead of the writer, so memory
stays bounded (about 110 MB per queued video at kinetics_flow's size); the examples' order does not depend on
it. A progress bar per split counts the videos (tqdm, on a terminal only).
"""
import collections
import concurrent.futures
import dataclasses
import logging
import os
import re
import subprocess

import imageio_ffmpeg
import numpy as np
import tensorflow_datasets as tfds
import tqdm

from vit_video.data import flow, video_io

_LOG = logging.getLogger(__name__)
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm")
MAX_DECODE_WORKERS = 8
_SPLIT_NAME = re.compile(r"[A-Za-z0-9_]+")


@dataclasses.dataclass(kw_only=True)
class VideoFolderConfig(tfds.core.BuilderConfig):
  """What `video_folder` keeps of each video (see the module docstring)."""
  num_frames: int  # V <= num_frames: the first frames (after fps resampling) are kept
  size: tuple[int, int]  # (H, W) every frame is resized to (area averaging; the aspect ratio is not kept)
  fps: float | None  # resample to this frame rate first (ffmpeg's fps filter); None keeps the source rate
  flow: bool = False  # also store 'flow' uint8 [V-1,H,W,2]: DIS flow between consecutive stored frames
  flow_bound: float | None = None  # with flow: fields are clipped to +-flow_bound px and quantised to uint8


def check_config(config: VideoFolderConfig) -> None:
  """Raises ValueError naming the value unless num_frames >= 1, size is a positive (H, W), fps is None or > 0,
  flow is a bool, and flow_bound is positive with flow and None without it (a bound without flow does nothing)."""
  if isinstance(config.num_frames, bool) or not isinstance(config.num_frames, int) or config.num_frames < 1:
    raise ValueError(f"config {config.name}: num_frames {config.num_frames!r} must be a positive int")
  if len(config.size) != 2 or min(config.size) < 1:
    raise ValueError(f"config {config.name}: size {config.size} is not a positive (H, W) pair")
  if config.fps is not None and not config.fps > 0:
    raise ValueError(f"config {config.name}: fps {config.fps} must be positive (or None: the source rate)")
  if not isinstance(config.flow, bool):
    raise ValueError(f"config {config.name}: flow {config.flow!r} must be True or False")
  if config.flow and (config.flow_bound is None or not config.flow_bound > 0):
    raise ValueError(f"config {config.name}: flow_bound {config.flow_bound!r} must be positive (pixels) with flow")
  if not config.flow and config.flow_bound is not None:
    raise ValueError(f"config {config.name}: flow_bound {config.flow_bound!r} is set but flow is False "
                     f"(no flow is stored)")


def decode_video(path: str | os.PathLike, *, num_frames: int, size: tuple[int, int],
                 fps: float | None) -> np.ndarray:
  """The first (up to) num_frames frames of a video file, at `fps`, resized to size (H, W): uint8 [V,H,W,3] RGB.

  fps None: `video_io.read_video_frames(path, max_frames=num_frames, size=size)`. Otherwise the same ffmpeg
  command with the fps filter before the scaler (-vf fps=FPS,scale=W:H:flags=area). Raises ValueError naming
  the file (with ffmpeg's message) when ffmpeg cannot decode it or decodes no frame, FileNotFoundError when it
  does not exist.
  """
  if fps is None:
    return video_io.read_video_frames(path, max_frames=num_frames, size=size)
  # video_io.read_video_frames has no fps argument: this is its command with the fps filter added.
  if not fps > 0:
    raise ValueError(f"fps {fps} must be positive")
  if num_frames < 1 or len(size) != 2 or min(size) < 1:
    raise ValueError(f"num_frames {num_frames} must be at least 1 and size {size} a positive (H, W) pair")
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"video file {path!r} does not exist")
  command = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-hide_banner", "-i", path,
             "-vf", f"fps={fps},scale={size[1]}:{size[0]}:flags=area",  # the scale filter takes W:H
             "-frames:v", str(num_frames), "-an", "-sn", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:"]
  result = subprocess.run(command, capture_output=True, check=False)
  stderr = result.stderr.decode("utf-8", errors="replace")
  if result.returncode != 0:
    raise ValueError(f"cannot decode video file {path!r}: ffmpeg exited with status {result.returncode}: "
                     f"{video_io.ffmpeg_error(stderr)}")
  frame_bytes = size[0] * size[1] * 3
  if not result.stdout or len(result.stdout) % frame_bytes:
    raise ValueError(f"cannot decode video file {path!r}: ffmpeg wrote {len(result.stdout)} bytes, not a "
                     f"positive multiple of one {size[0]}x{size[1]} rgb24 frame: {video_io.ffmpeg_error(stderr)}")
  return np.frombuffer(result.stdout, np.uint8).reshape(-1, *size, 3).copy()  # [V,H,W,3]; writable copy


def quantized_flow(frames: np.ndarray, *, bound: float, chunk: int = 16) -> np.ndarray:
  """The stored 'flow': uint8 [V,H,W,3] -> uint8 [V-1,H,W,2], `flow.compute_flow` (DIS) quantised at bound.

  Computed `chunk` fields at a time (each field depends only on its two frames, so the result is the same), which
  keeps the float temporaries for a 250-frame 256x340 video near 60 MB instead of 870 MB.
  """
  out = np.zeros((max(len(frames) - 1, 0), *frames.shape[1:3], 2), np.uint8)  # [V-1,H,W,2]; [0,H,W,2] for V = 1
  for i in range(0, len(out), chunk):
    out[i:i + chunk] = flow.quantize_flow(flow.compute_flow(frames[i:i + chunk + 1], method="dis"), bound=bound)
  return out


def _is_visible_dir(path: str) -> bool:
  return os.path.isdir(path) and not os.path.basename(path).startswith(".")


def _warn_left_out(folder: str, names: list[str], what: str) -> None:
  if names:
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    _LOG.warning("left out %d %s in %s (video suffixes: %s): %s", len(names), what, folder,
                 " ".join(VIDEO_SUFFIXES), shown)


def list_videos(manual_dir: str) -> tuple[dict[str, list[tuple[str, str]]], list[str]]:
  """Lists manual_dir/<split>/<class>/<video>: ({split: [(path relative to manual_dir, class), ...]}, classes).

  Splits, classes (their sorted union) and videos are in sorted order; relative paths use '/'. Logs a warning
  for files and folders left out and for class folders missing from train. Raises ValueError naming the folder
  when manual_dir has no split folder, a split's name is not a word (letters, digits, '_') or is 'all', or a
  split has no video file.
  """
  if not os.path.isdir(manual_dir):
    raise ValueError(f"manual_dir {manual_dir} is not a folder")
  splits = sorted(s for s in os.listdir(manual_dir) if _is_visible_dir(os.path.join(manual_dir, s)))
  if not splits:
    raise ValueError(f"{manual_dir} has no split folder: expected {manual_dir}/<split>/<class_name>/<video files>")
  videos, split_classes = {}, {}
  for split in splits:
    split_dir = os.path.join(manual_dir, split)
    if not _SPLIT_NAME.fullmatch(split) or split.lower() == "all":
      raise ValueError(f"split folder {split_dir}: a split name must be letters, digits and '_', and not 'all'")
    entries = sorted(os.listdir(split_dir))
    classes = [c for c in entries if _is_visible_dir(os.path.join(split_dir, c))]
    _warn_left_out(split_dir, [e for e in entries if e not in classes and not e.startswith(".")],
                   "entries that are not class folders")
    videos[split], split_classes[split] = [], classes
    for class_name in classes:
      class_dir = os.path.join(split_dir, class_name)
      files = sorted(f for f in os.listdir(class_dir) if not f.startswith("."))
      is_video = [f.lower().endswith(VIDEO_SUFFIXES) and os.path.isfile(os.path.join(class_dir, f)) for f in files]
      _warn_left_out(class_dir, [f for f, ok in zip(files, is_video) if not ok], "entries that are not video files")
      videos[split] += [(f"{split}/{class_name}/{f}", class_name) for f, ok in zip(files, is_video) if ok]
    if not videos[split]:
      raise ValueError(f"split folder {split_dir} holds no video file ({' '.join(VIDEO_SUFFIXES)}) in a class "
                       f"folder {split_dir}/<class_name>/ ({len(classes)} class folders)")
  if "train" in split_classes:
    for split, classes in split_classes.items():
      missing = sorted(set(classes) - set(split_classes["train"]))
      if missing:
        _LOG.warning("class folders of %s not in train (labels never trained on): %s", split, ", ".join(missing))
  return videos, sorted(set().union(*split_classes.values()))


def _decoded_in_order(decode, paths: list[str], workers: int):
  """Yields decode(path) for each path in order, computed by `workers` threads at most 2 * workers ahead."""
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    pending = collections.deque()
    for path in paths:
      pending.append(pool.submit(decode, path))
      if len(pending) >= 2 * workers:
        yield pending.popleft().result()
    while pending:
      yield pending.popleft().result()


# The two-stream configs' flow bound (px): TSN's (dense_flow's 20 px, on frames of 340x256 as here). On
# tests/data/bikes.mp4 at 256x340 it clips 2.4 % of the flow components, mostly in fields across a cut or a fast
# pan (10 px would clip 7.4 %), with steps of 40 / 255 = 0.16 px; moving_fmnist_actions' 2 px suits its slow
# 32x32 items only.
FLOW_BOUND = 20.0


class VideoFolder(tfds.core.GeneratorBasedBuilder):
  """Your own videos in manual_dir/<split>/<class_name>/*.mp4|*.avi|*.mkv|*.webm, labelled by class folder."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: first num_frames frames, optional fps resampling, fixed (H, W)."}
  BUILDER_CONFIGS = [
      VideoFolderConfig(name="default", description="First 64 frames at the source rate, 128x171 (4:3, C3D's).",
                        num_frames=64, size=(128, 171), fps=None),
      VideoFolderConfig(name="fps10", description="10 fps, first 100 frames (10 s: a whole Kinetics clip), "
                                                  "128x171.", num_frames=100, size=(128, 171), fps=10),
      VideoFolderConfig(name="kinetics", description="25 fps, first 250 frames (a whole 10 s Kinetics clip), "
                                                     "256x340 (the non-local paper's short side 256).",
                        num_frames=250, size=(256, 340), fps=25),
      VideoFolderConfig(name="ssv2", description="Something-Something v2's 12 fps kept, first 72 frames (6 s; "
                                                 "nearly all of its videos are shorter), 256x340.",
                        num_frames=72, size=(256, 340), fps=None),
      VideoFolderConfig(name="ucf101_flow", description="UCF101's own 25 fps, first 300 frames (12 s: all of "
                                                        "most clips, 7.2 s on average), 240x320 (its source size), "
                                                        "with flow.",
                        num_frames=300, size=(240, 320), fps=25, flow=True, flow_bound=FLOW_BOUND),
      VideoFolderConfig(name="kinetics_flow", description="As 'kinetics' (25 fps, first 250 frames, 256x340), with "
                                                          "flow.",
                        num_frames=250, size=(256, 340), fps=25, flow=True, flow_bound=FLOW_BOUND),
      VideoFolderConfig(name="tiny", description="First 5 frames at the source rate, 12x16 (for tests).",
                        num_frames=5, size=(12, 16), fps=None),
      VideoFolderConfig(name="tiny_flow", description="First 4 frames at the source rate, 12x16, with flow "
                                                      "(for tests).",
                        num_frames=4, size=(12, 16), fps=None, flow=True, flow_bound=4.0),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put your videos in manual_dir/<split>/<class_name>/*.mp4|*.avi|*.mkv|*.webm (e.g. train/ and test/ "
      "folders, each with one folder per class), then pass --manual_dir to python -m vit_video.data.prepare.")

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    check_config(config)
    h, w = config.size
    features = {
        "video": tfds.features.Video(shape=(None, h, w, 3)),
        "label": tfds.features.ClassLabel(),
        "path": tfds.features.Text(),
        "num_frames": tfds.features.Scalar(dtype=np.int32),
    }
    description = (
        f"Videos from manual_dir/<split>/<class_name>/, labelled by class folder: the first {config.num_frames} "
        f"frames ({'at the source rate' if config.fps is None else f'at {config.fps} fps'}), resized to "
        f"{h}x{w}. Unreadable files are left out and listed in metadata['skipped'].")
    if config.flow:
      features["flow"] = tfds.features.Tensor(shape=(None, h, w, 2), dtype=np.uint8,
                                              encoding=tfds.features.Encoding.ZLIB)
      description += (f" 'flow': OpenCV DIS optical flow between consecutive frames, clipped to "
                      f"+-{config.flow_bound} px and quantised to uint8 (vit_video.data.flow).")
    return tfds.core.DatasetInfo(
        builder=self,
        description=description,
        # Class names come from the folders, known only in _split_generators (and restored from disk later).
        features=tfds.features.FeaturesDict(features),
        supervised_keys=("video", "label"),
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    videos, classes = list_videos(manual_dir)
    self.info.features["label"].names = classes
    self.info.metadata["skipped"] = {split: [] for split in videos}
    return {split: self._generate_examples(manual_dir, split, split_videos)
            for split, split_videos in videos.items()}

  def _generate_examples(self, manual_dir: str, split: str, videos: list[tuple[str, str]]):
    config = self.builder_config

    def decode(relative_path):
      """-> ({'video': [V,H,W,3], with flow 'flow': [V-1,H,W,2]}, None), or (None, the error) if unreadable."""
      try:
        frames = decode_video(os.path.join(manual_dir, relative_path), num_frames=config.num_frames,
                              size=config.size, fps=config.fps)
      except (ValueError, OSError) as e:  # OSError: a file gone or unreadable since it was listed
        return None, f"{type(e).__name__}: {e}"
      if config.flow:
        return {"video": frames, "flow": quantized_flow(frames, bound=config.flow_bound)}, None
      return {"video": frames}, None

    skipped = self.info.metadata["skipped"][split]
    workers = min(MAX_DECODE_WORKERS, os.cpu_count() or 1)
    decoded = _decoded_in_order(decode, [path for path, _ in videos], workers)
    # disable=None: a bar on a terminal only (not in logs or tests).
    with tqdm.tqdm(total=len(videos), desc=f"{self.name}/{config.name} {split}", unit="video",
                   disable=None) as bar:
      for (arrays, error), (path, class_name) in zip(decoded, videos):
        bar.update()
        if error is not None:
          skipped.append({"path": path, "error": error})
          bar.set_postfix(skipped=len(skipped))
          _LOG.warning("skipped unreadable video %s (%d skipped in %s so far): %s", path, len(skipped), split,
                       error)
          continue
        yield path, {**arrays, "label": class_name, "path": path, "num_frames": np.int32(len(arrays["video"]))}
    if len(skipped) == len(videos):
      raise ValueError(f"split folder {os.path.join(manual_dir, split)}: none of its {len(videos)} video files "
                       f"could be decoded, e.g. {skipped[0]['path']}: {skipped[0]['error']}")
    if skipped:
      _LOG.warning("split %s: kept %d videos, skipped %d unreadable ones (listed in metadata['skipped'])",
                   split, len(videos) - len(skipped), len(skipped))

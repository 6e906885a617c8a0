"""Moving Fashion-MNIST actions: the default video dataset, rendered offline and deterministically.

A clip shows one real Fashion-MNIST image (the "item") moving on a black S x S canvas for T frames; the label
is the motion, one of MOTIONS:
  left, right     constant-speed horizontal translation (x decreases / increases), about 0.4 px per frame.
  up, down        constant-speed vertical translation (y, the row, decreases / increases), about 0.4 px per frame.
  rotate_cw       rotation about the item's centre, clockwise as seen on screen, about 6 degrees per frame.
  rotate_ccw      the same, counter-clockwise.
  zoom_in         the item grows: its scale is multiplied by about exp(0.015) (+1.5 %) per frame.
  zoom_out        the item shrinks by the same factor per frame.
  bounce          a diagonal translation (about 0.9 px per frame along each axis, random signs) reflecting off
                  the canvas walls; the only diagonal motion, so it is told apart even without a reflection.
  still           no motion: all frames are equal.
Every speed is the base speed times a per-clip jitter uniform in [0.9, 1.1]. The item's "centre" is its
intensity centroid: translations move it, rotations and zooms keep it fixed.

Why a single frame does not tell the class. A frame is a function of the item, which is drawn independently of
the motion, and of the state (centre, angle, scale). For every motion the state at the clip's temporal midpoint
t_c = (T - 1) / 2 is drawn from the same distribution (`sample_trajectory`): centre uniform over the square
that keeps every trajectory on the canvas, angle uniform over the whole circle, log-scale uniform over the
range that keeps every zoom within [MIN_SCALE, MAX_SCALE]. A motion changes one part of the state linearly in
t - t_c (bounce folds it back at the walls). Hence:
  * the angle is uniform on the circle in every frame of every motion (a rotation maps that distribution to
    itself), so the angle tells nothing in any frame;
  * the middle frame (the two middle frames for even T, half a step away) has the same distribution for all
    motions: the centre is not biased by the direction (left and right cover the same positions) and the
    scale not by zoom_in / zoom_out;
  * time reversal maps left <-> right, up <-> down, zoom_in <-> zoom_out, rotate_cw <-> rotate_ccw, so a frame
    drawn at a uniformly random time has exactly the same distribution for the two motions of each pair.
What is left is a shift of the centre (translations) or log-scale (zooms) of at most half the path, growing
towards the first and last frames: a model that knows a frame is the first one can partly guess the motion
from where the item sits or how big it is. Measured on the default config with real items (logistic regression on
centroid, mass, orientation and 6x6 pixels of one frame, 2,000 clips to train, 1,000 held out; chance 0.10):
frames 7 and 8 0.09, a random frame 0.12, frames 4 and 11 0.18 and 0.16, frames 0 and 15 0.28 and 0.26; the
same classifier on the change from frame 0 to frame 10 1.00. tests/data/test_moving_fmnist.py checks this
on synthetic items.

`MovingFashionMnistActions` writes the clips through a tfds builder (name `moving_fmnist_actions`, configs
`default`: T=16, 32x32, 8,000 train / 2,000 test clips; `tiny`: T=6, 20x20, 60 / 30) from the Fashion-MNIST idx
files in manual_dir (train clips use Fashion-MNIST train items, test clips Fashion-MNIST test items):

  python -m vit_video.data.prepare moving_fmnist_actions             # fetches the Debian package if needed
  python -m vit_video.data.prepare moving_fmnist_actions/tiny --manual_dir data/raw/fashion_mnist

Each example also holds 'flow', uint8 [T-1,S,S,2]: OpenCV DIS optical flow between consecutive frames
(`flow.compute_flow`), quantised with `flow.quantize_flow` at the config's flow_bound (FLOW_BOUND = 2 px), for the
two-stream temporal stream (`video_pipeline`'s flow=True); it adds about 5 ms per clip to preparation.

Defining the class registers the name with tfds, so `tfds.builder('moving_fmnist_actions', data_dir=...)` works
once this module is imported.
"""
import dataclasses
import math
import os
from typing import NamedTuple

import cv2
import numpy as np
import tensorflow_datasets as tfds

from vit_video.data import fashion_mnist_local, flow

MOTIONS = (
    "left", "right", "up", "down", "rotate_cw", "rotate_ccw", "zoom_in", "zoom_out", "bounce", "still",
)
ITEM_SHAPE = fashion_mnist_local.IMAGE_SHAPE[:2]  # (28, 28)
# Item scale (canvas px per item px) over all frames: a 28 px item spans 7 to 12.6 px.
MIN_SCALE, MAX_SCALE = 0.25, 0.45
# Radius (item px) around the item's centroid kept on the canvas: on average 99.8 % of a real Fashion-MNIST
# item's intensity lies within it (97.3 % for the 1 % worst items), whatever the angle.
ITEM_RADIUS = 17.0
# Base speeds per frame; each clip multiplies its speed by a jitter uniform in SPEED_JITTER.
TRANSLATION_SPEED = 0.4  # px per frame (left, right, up, down)
BOUNCE_SPEED = 0.9  # px per frame along each axis (the speed recorded is the norm, sqrt(2) times this)
ROTATION_SPEED = 6.0  # degrees per frame
ZOOM_SPEED = 0.015  # change of log(scale) per frame
SPEED_JITTER = (0.9, 1.1)
# Frames are drawn SUPERSAMPLE times larger, then area-averaged down: with MIN_SCALE * SUPERSAMPLE >= 1 the warp
# never shrinks the item, so bilinear sampling does not alias and a frame's mass is the item's times scale^2.
SUPERSAMPLE = 4
SPLITS = ("train", "test")
# The stored optical flow's quantisation bound (px): the fastest motions move about 1.5 px per frame (rotation
# at the item's rim), so +-2 px keeps them with steps of 4 / 255 = 0.016 px (TSN's 20 px would leave 0.16 px steps).
FLOW_BOUND = 2.0


class Trajectory(NamedTuple):
  """The state of the item in each of T frames (canvas coordinates: pixel (row i, column j) is centred at x=j, y=i)."""
  centres: np.ndarray  # float64 [T,2]: (x, y) of the item's intensity centroid
  angles: np.ndarray  # float64 [T]: degrees, counter-clockwise as seen on screen
  scales: np.ndarray  # float64 [T]: canvas px per item px
  speed: float  # px per frame (translations, bounce), degrees per frame (rotations), log-scale per frame (zooms)


def check_geometry(num_frames: int, size: int) -> None:
  """Raises ValueError naming the sizes unless every motion's T-frame trajectory fits an S x S canvas."""
  if num_frames < 2:
    raise ValueError(f"num_frames {num_frames} is below 2: a motion needs at least 2 frames")
  span = 2 * ITEM_RADIUS * MAX_SCALE
  if size < span:
    raise ValueError(
        f"canvas size {size} is smaller than the item, which spans up to {span:.1f} px "
        f"({2 * ITEM_RADIUS:.0f} item px at scale {MAX_SCALE})")
  path = TRANSLATION_SPEED * SPEED_JITTER[1] * (num_frames - 1)
  if size - span <= path:
    raise ValueError(
        f"canvas size {size} is too small for {num_frames} frames: the item spans up to {span:.1f} px and "
        f"moves up to {path:.1f} px, which needs a canvas larger than {span + path:.1f} px")
  zoom = ZOOM_SPEED * SPEED_JITTER[1] * (num_frames - 1)
  if zoom >= math.log(MAX_SCALE / MIN_SCALE):
    max_frames = math.ceil(math.log(MAX_SCALE / MIN_SCALE) / (ZOOM_SPEED * SPEED_JITTER[1]))
    raise ValueError(
        f"num_frames {num_frames} is too many: a zoom would change the scale by up to a factor "
        f"{math.exp(zoom):.2f}, more than the item's scale range {MIN_SCALE}..{MAX_SCALE} (factor "
        f"{MAX_SCALE / MIN_SCALE:.2f}) allows; use at most {max_frames} frames")


def _check_motion(motion: str) -> None:
  if motion not in MOTIONS:
    raise ValueError(f"unknown motion {motion!r}; valid motions: {', '.join(MOTIONS)}")


def _fold(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
  """Reflects x into [lo, hi] off both walls, as often as needed (the path of a ball bouncing between them)."""
  y = np.mod(x - lo, 2 * (hi - lo))
  return lo + np.where(y > hi - lo, 2 * (hi - lo) - y, y)


def sample_trajectory(motion: str, *, num_frames: int, size: int, rng: np.random.Generator) -> Trajectory:
  """Draws the start state and speed of `motion` and returns its T-frame trajectory on an S x S canvas.

  The random numbers are drawn in the same order for every motion, so one rng state gives every motion the same
  midpoint state (centre, angle, scale at t_c = (T - 1) / 2) and jitter: the motions differ only in what moves.
  Raises ValueError for an unknown motion or sizes that `check_geometry` rejects.
  """
  _check_motion(motion)
  check_geometry(num_frames, size)
  # Centres keeping the item's ITEM_RADIUS disc (at the largest scale) on the canvas [-0.5, S - 0.5]^2.
  lo, hi = ITEM_RADIUS * MAX_SCALE - 0.5, size - 0.5 - ITEM_RADIUS * MAX_SCALE
  max_path = TRANSLATION_SPEED * SPEED_JITTER[1] * (num_frames - 1)
  max_zoom = ZOOM_SPEED * SPEED_JITTER[1] * (num_frames - 1)
  centre = rng.uniform(lo + max_path / 2, hi - max_path / 2, size=2)  # (x, y) at t_c
  angle = rng.uniform(0.0, 360.0)
  log_scale = rng.uniform(math.log(MIN_SCALE) + max_zoom / 2, math.log(MAX_SCALE) - max_zoom / 2)
  jitter = rng.uniform(*SPEED_JITTER)
  signs = rng.choice([-1.0, 1.0], size=2)  # bounce's diagonal direction
  dt = np.arange(num_frames) - (num_frames - 1) / 2  # [T] frames from the midpoint
  centres = np.tile(centre, (num_frames, 1))  # [T,2]
  angles = np.full(num_frames, angle)
  log_scales = np.full(num_frames, log_scale)
  speed = 0.0
  if motion in ("left", "right", "up", "down"):
    speed = TRANSLATION_SPEED * jitter
    axis = 0 if motion in ("left", "right") else 1
    sign = -1.0 if motion in ("left", "up") else 1.0
    centres[:, axis] += sign * speed * dt
  elif motion in ("rotate_cw", "rotate_ccw"):
    speed = ROTATION_SPEED * jitter
    angles = angle + (1.0 if motion == "rotate_ccw" else -1.0) * speed * dt
  elif motion in ("zoom_in", "zoom_out"):
    speed = ZOOM_SPEED * jitter
    log_scales = log_scale + (1.0 if motion == "zoom_in" else -1.0) * speed * dt
  elif motion == "bounce":
    speed = math.sqrt(2) * BOUNCE_SPEED * jitter
    radius = ITEM_RADIUS * math.exp(log_scale)  # walls where this item's disc touches the canvas edge
    centres = _fold(centre + signs * BOUNCE_SPEED * jitter * dt[:, None], radius - 0.5, size - 0.5 - radius)
  return Trajectory(centres=centres, angles=np.mod(angles, 360.0), scales=np.exp(log_scales), speed=speed)


def item_centre(item: np.ndarray) -> tuple[float, float]:
  """(x, y) intensity centroid of an item in its own pixel coordinates; the box centre for a blank item."""
  mass = float(item.sum(dtype=np.float64))
  if mass == 0:
    return (item.shape[1] - 1) / 2, (item.shape[0] - 1) / 2
  ys, xs = np.indices(item.shape)
  return float((xs * item).sum() / mass), float((ys * item).sum() / mass)


def _check_item(item: np.ndarray) -> np.ndarray:
  item = np.asarray(item)
  if item.dtype != np.uint8 or item.shape != ITEM_SHAPE:
    raise ValueError(f"item must be a uint8 image of shape {ITEM_SHAPE}, got {item.dtype} {item.shape}")
  return item


def render(item: np.ndarray, trajectory: Trajectory, *, size: int) -> np.ndarray:
  """Draws `item` (uint8 [28,28]) along `trajectory` on a black canvas: uint8 [T,S,S,1].

  Each frame is one cv2.warpAffine (bilinear, zero border) of the item onto a canvas SUPERSAMPLE times larger,
  mapping the item's centroid to the frame's centre, rotated by its angle and scaled by its scale, then an area
  average down to S x S. The pixel arithmetic is integer (uint8 fixed-point warp; a k x k area mean, k =
  SUPERSAMPLE a power of two so its division is exact), so the frames are reproducible bit for bit (only the
  float64 matrix entries could differ in the last bit across C maths libraries).
  """
  item = _check_item(item)
  px, py = item_centre(item)
  k = SUPERSAMPLE
  frames = []
  for (cx, cy), angle, scale in zip(trajectory.centres, trajectory.angles, trajectory.scales):
    # Canvas point (x, y) is supersampled point (k x + (k - 1) / 2, k y + (k - 1) / 2).
    a = k * scale * math.cos(math.radians(angle))
    b = k * scale * math.sin(math.radians(angle))
    # [[a, b], [-b, a]] turns counter-clockwise on screen (y points down), as cv2.getRotationMatrix2D.
    matrix = np.array([[a, b, k * cx + (k - 1) / 2 - (a * px + b * py)],
                       [-b, a, k * cy + (k - 1) / 2 - (-b * px + a * py)]])
    big = cv2.warpAffine(item, matrix, (k * size, k * size), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    frames.append(cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA))
  return np.stack(frames)[..., None]  # T x [S,S] -> [T,S,S,1]


def render_clip(item: np.ndarray, motion: str, *, num_frames: int, size: int,
                rng: np.random.Generator) -> np.ndarray:
  """A clip of `item` (uint8 [28,28]) performing `motion`: uint8 [T,S,S,1], start state and speed drawn from rng.

  Raises ValueError for an unknown motion (naming the valid ones), a malformed item, or a canvas too small for
  the item or its trajectory (naming the sizes).
  """
  return render(item, sample_trajectory(motion, num_frames=num_frames, size=size, rng=rng), size=size)


@dataclasses.dataclass(kw_only=True)
class MovingFmnistConfig(tfds.core.BuilderConfig):
  """Clip and split sizes of one `moving_fmnist_actions` config."""
  num_frames: int  # T
  size: int  # S: frames are S x S
  num_train: int  # clips in train (items from Fashion-MNIST train)
  num_test: int  # clips in test (items from Fashion-MNIST test)
  seed: int  # clip i of split s uses np.random.default_rng([seed, s, i])
  flow_bound: float = FLOW_BOUND  # Stored flow is clipped to +-flow_bound px and quantised to uint8.


def make_example(items: np.ndarray, object_labels: np.ndarray, index: int, *, split: str,
                 config: MovingFmnistConfig) -> dict:
  """Example `index` of `split` ('train' or 'test') from that split's Fashion-MNIST items [N,28,28,1] and labels [N].

  Uses np.random.default_rng([config.seed, SPLITS.index(split), index]) for the item index and then the start
  state; the motion is MOTIONS[index % len(MOTIONS)], so every split is balanced up to one clip per motion.
  """
  rng = np.random.default_rng([config.seed, SPLITS.index(split), index])
  item_index = int(rng.integers(len(items)))
  motion = MOTIONS[index % len(MOTIONS)]
  trajectory = sample_trajectory(motion, num_frames=config.num_frames, size=config.size, rng=rng)
  video = render(items[item_index, ..., 0], trajectory, size=config.size)  # [T,S,S,1]
  return {
      "video": video,
      "label": motion,
      "object_label": int(object_labels[item_index]),
      "item_index": item_index,
      "speed": np.float32(trajectory.speed),
      "flow": flow.quantize_flow(flow.compute_flow(video, method="dis"), bound=config.flow_bound),  # [T-1,S,S,2]
  }


class MovingFashionMnistActions(tfds.core.GeneratorBasedBuilder):
  """Moving Fashion-MNIST actions: classify the motion of a real Fashion-MNIST item in a short clip."""

  name = "moving_fmnist_actions"  # tfds would derive moving_fashion_mnist_actions from the class name
  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: 10 motions, rendered from local Fashion-MNIST idx files.",
                   "1.1.0": "Adds 'flow': DIS optical flow between consecutive frames, uint8-quantised."}
  BUILDER_CONFIGS = [
      MovingFmnistConfig(name="default", description="16 frames of 32x32; 8,000 train and 2,000 test clips.",
                         num_frames=16, size=32, num_train=8000, num_test=2000, seed=0),
      MovingFmnistConfig(name="tiny", description="6 frames of 20x20; 60 train and 30 test clips (for tests).",
                         num_frames=6, size=20, num_train=60, num_test=30, seed=0),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = fashion_mnist_local.FashionMnistLocal.MANUAL_DOWNLOAD_INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    t, s = self.builder_config.num_frames, self.builder_config.size
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            "Moving Fashion-MNIST actions: a real Fashion-MNIST item moves on a black canvas; the label is the "
            f"motion, one of {', '.join(MOTIONS)}. Start state (position, angle, scale) and speed are random "
            "so that no single frame tells the motion. Rendered deterministically from the Fashion-MNIST idx "
            "files; train clips use Fashion-MNIST train items, test clips Fashion-MNIST test items."),
        features=tfds.features.FeaturesDict({
            "video": tfds.features.Video(shape=(t, s, s, 1)),
            "label": tfds.features.ClassLabel(names=list(MOTIONS)),
            "object_label": tfds.features.ClassLabel(names=list(fashion_mnist_local.CLASS_NAMES)),
            "item_index": tfds.features.Scalar(dtype=np.int64),
            "speed": tfds.features.Scalar(dtype=np.float32),
            "flow": tfds.features.Tensor(shape=(t - 1, s, s, 2), dtype=np.uint8,
                                         encoding=tfds.features.Encoding.ZLIB),
        }),
        supervised_keys=("video", "label"),
        homepage="https://github.com/zalandoresearch/fashion-mnist",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    directory = os.fspath(dl_manager.manual_dir)
    return {split: self._generate_examples(directory, split) for split in SPLITS}

  def _generate_examples(self, directory: str, split: str):
    config = self.builder_config
    items, object_labels = fashion_mnist_local.load_split(directory, split)  # [N,28,28,1], [N]
    num_clips = config.num_train if split == "train" else config.num_test
    for i in range(num_clips):  # tfds shuffles the examples by key when writing
      yield i, make_example(items, object_labels, i, split=split, config=config)

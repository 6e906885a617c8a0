"""Drawing the visualisations: saliency over images and over every frame of a clip, optimised clips, animated GIFs.

    fig = clip_saliency_figure(clip, {"gradient": g, "grad_cam": cam})   # rows: the clip, then each map; columns: T
    write_png(fig, "gs://bucket/out/saliency.png")                       # any etils.epath path, written atomically
    write_gif(overlay_frames(clip, g), "out/saliency.gif")

Pictures are numpy arrays: a frame [H,W,C] (C 1 or 3) or [H,W]; a clip [T,H,W,C]; a saliency map [h,w] or, for a
clip, [T',h,w] (T' <= T: flow maps have T-1 frames, a 3D CNN's Grad-CAM its layer's t). A map is drawn over the
whole frame whatever its resolution (a Grad-CAM grid of 4 x 4 covers a 32 x 32 frame), and clip frame t shows map
frame floor(t T' / T). Inputs of the models are in [-1, 1] (the pipelines' normalisation): `value_range=(-1, 1)`
draws them as they were seen; None stretches each picture's own min..max (optimised inputs have no fixed range).
Figures are matplotlib `Figure`s built without pyplot (no display, no global state; saved through the Agg canvas).
"""
import io
import os
from collections.abc import Mapping, Sequence

import imageio.v2 as imageio
import matplotlib
import numpy as np
from etils import epath
from matplotlib.figure import Figure

from vit_video.train.run_folder import as_path, write_atomic

CMAP = "inferno"  # saliency colour map (dark: none, bright: most)


def _frames(clip: np.ndarray) -> np.ndarray:
  """[T,H,W], [T,H,W,1] or [T,H,W,3] -> [T,H,W,C] float."""
  clip = np.asarray(clip, np.float32)
  if clip.ndim == 3:
    clip = clip[..., None]
  if clip.ndim != 4 or clip.shape[-1] not in (1, 3):
    raise ValueError(f"a clip must be [T,H,W] or [T,H,W,C] with C 1 or 3; got shape {clip.shape}")
  return clip


def to_unit(x: np.ndarray, value_range: tuple[float, float] | None = (-1.0, 1.0)) -> np.ndarray:
  """Pixel values -> [0, 1]: from `value_range`, or (None) from the array's own min..max (0.5 when constant)."""
  x = np.asarray(x, np.float32)
  lo, hi = value_range if value_range is not None else (float(x.min()), float(x.max()))
  if hi <= lo:
    return np.full_like(x, 0.5)
  return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def map_frames(saliency: np.ndarray, num_frames: int) -> np.ndarray:
  """A clip's map [T',h,w] (or [h,w], the same for every frame) -> [num_frames,h,w]: frame t shows map frame
  floor(t T' / T)."""
  saliency = np.asarray(saliency, np.float32)
  if saliency.ndim == 2:
    return np.broadcast_to(saliency, (num_frames, *saliency.shape))
  if saliency.ndim != 3 or not 1 <= saliency.shape[0] <= num_frames:
    raise ValueError(f"a clip's map must be [h,w] or [T',h,w] with 1 <= T' <= {num_frames}; got {saliency.shape}")
  return saliency[np.arange(num_frames) * saliency.shape[0] // num_frames]


def _show(ax, picture: np.ndarray, value_range) -> None:
  picture = to_unit(picture, value_range)
  if picture.ndim == 3 and picture.shape[-1] == 1:
    picture = picture[..., 0]
  ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")


def _overlay(ax, picture: np.ndarray, saliency: np.ndarray, *, vmax: float, value_range, alpha: float) -> None:
  """The picture in grey, the map over it in CMAP stretched to cover it (any resolution), 0..vmax."""
  h, w = np.asarray(picture).shape[:2]
  grey = to_unit(picture, value_range)
  grey = grey.mean(axis=-1) if grey.ndim == 3 else grey
  ax.imshow(grey, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
  ax.imshow(saliency, cmap=CMAP, vmin=0, vmax=vmax if vmax > 0 else 1.0, alpha=alpha,
            extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="bilinear")


def _clean(ax) -> None:
  ax.set_xticks([])
  ax.set_yticks([])


def image_saliency_figure(images: np.ndarray, maps: Mapping[str, np.ndarray], *, titles: Sequence[str] = (),
                          value_range=(-1.0, 1.0), alpha: float = 0.6) -> Figure:
  """Rows: the images [B,H,W,C]; columns: the image, then each method's map [B,h,w] over it (each map scaled to
  its own maximum). `titles`: one per image (row labels)."""
  images = np.asarray(images)
  for name, m in maps.items():
    if np.asarray(m).shape[0] != len(images) or np.asarray(m).ndim != 3:
      raise ValueError(f"map {name!r} has shape {np.asarray(m).shape}; expected [{len(images)},h,w]")
  fig = Figure(figsize=(1.6 * (len(maps) + 1), 1.7 * len(images)), layout="constrained")
  axes = np.asarray(fig.subplots(len(images), len(maps) + 1, squeeze=False))
  for i, image in enumerate(images):
    _show(axes[i, 0], image, value_range)
    for ax, (name, m) in zip(axes[i, 1:], maps.items()):
      m = np.asarray(m[i], np.float32)
      _overlay(ax, image, m, vmax=float(m.max()), value_range=value_range, alpha=alpha)
      if i == 0:
        ax.set_title(name, fontsize=8)
    if i < len(titles):
      axes[i, 0].set_ylabel(titles[i], fontsize=8)
  for ax in axes.flat:
    _clean(ax)
  return fig


def clip_saliency_figure(clip: np.ndarray, maps: Mapping[str, np.ndarray], *, title: str = "",
                         notes: Mapping[str, str] | None = None, value_range=(-1.0, 1.0),
                         alpha: float = 0.6) -> Figure:
  """A frames x methods grid: row 0 the clip [T,H,W,C], then one row per map ([T',h,w] or [h,w], module docstring)
  over the frames. Each row is scaled to its map's maximum over all frames, so the rows show how the map's mass
  moves over time. `notes[name]`: text under the row's label (e.g. the share on the item)."""
  clip = _frames(clip)
  t = len(clip)
  fig = Figure(figsize=(1.05 * t + 1.2, 1.15 * (len(maps) + 1) + (0.3 if title else 0)), layout="constrained")
  axes = np.asarray(fig.subplots(len(maps) + 1, t, squeeze=False))
  for j in range(t):
    _show(axes[0, j], clip[j], value_range)
    axes[0, j].set_title(f"t={j}", fontsize=7)
  axes[0, 0].set_ylabel("clip", fontsize=8)
  for i, (name, m) in enumerate(maps.items(), start=1):
    frames = map_frames(m, t)
    vmax = float(frames.max())
    for j in range(t):
      _overlay(axes[i, j], clip[j], frames[j], vmax=vmax, value_range=value_range, alpha=alpha)
    label = name + (f"\n{notes[name]}" if notes and name in notes else "")
    axes[i, 0].set_ylabel(label, fontsize=7)
  for ax in axes.flat:
    _clean(ax)
  if title:
    fig.suptitle(title, fontsize=9)
  return fig


def clip_rows_figure(clips: Mapping[str, np.ndarray], *, title: str = "", value_range=None) -> Figure:
  """One row per clip [T,H,W,C] (e.g. an activation-maximisation optimum per regulariser), its frames in a row,
  each clip stretched to its own min..max (value_range None) so that rows of different contrast stay visible."""
  clips = {name: _frames(c) for name, c in clips.items()}
  t = max(len(c) for c in clips.values())
  fig = Figure(figsize=(1.05 * t + 1.2, 1.15 * len(clips) + (0.3 if title else 0)), layout="constrained")
  axes = np.asarray(fig.subplots(len(clips), t, squeeze=False))
  for i, (name, clip) in enumerate(clips.items()):
    unit = to_unit(clip, value_range)
    for j in range(t):
      if j < len(clip):
        _show(axes[i, j], unit[j], (0.0, 1.0))
      else:
        axes[i, j].axis("off")
      if i == 0:
        axes[i, j].set_title(f"t={j}", fontsize=7)
    axes[i, 0].set_ylabel(name, fontsize=7)
  for ax in axes.flat:
    _clean(ax)
  if title:
    fig.suptitle(title, fontsize=9)
  return fig


def panels_figure(panels: Sequence[tuple[str, np.ndarray]], *, columns: int, title: str = "", cmap: str = "viridis",
                  size: float = 1.3) -> Figure:
  """Named 2D arrays (attention maps per head, rollout maps, ...) in a grid of `columns`, each on its own scale."""
  if not panels:
    raise ValueError("no panels to draw")
  rows = -(-len(panels) // columns)
  fig = Figure(figsize=(size * columns, size * rows + (0.3 if title else 0)), layout="constrained")
  axes = np.asarray(fig.subplots(rows, columns, squeeze=False))
  for ax in axes.flat:
    ax.axis("off")
  for ax, (name, array) in zip(axes.flat, panels):
    array = np.asarray(array, np.float32)
    if array.ndim == 3 and array.shape[-1] in (1, 3):
      _show(ax, array, None)
    else:
      ax.imshow(array, cmap=cmap, interpolation="nearest")
    ax.set_title(name, fontsize=6)
  if title:
    fig.suptitle(title, fontsize=9)
  return fig


def overlay_frames(clip: np.ndarray, saliency: np.ndarray | None = None, *, value_range=(-1.0, 1.0),
                   alpha: float = 0.6, scale: int = 4) -> np.ndarray:
  """A clip [T,H,W,C] (with a map [T',h,w] blended over it in CMAP, scaled to its maximum over time) as 8-bit RGB
  frames [T,scale H,scale W,3] (pixels repeated `scale` times; the map resized to the frame by nearest neighbour)."""
  clip = _frames(clip)
  t, h, w, _ = clip.shape
  rgb = to_unit(clip, value_range)
  rgb = np.repeat(rgb, 3, axis=-1) if rgb.shape[-1] == 1 else rgb  # [T,H,W,3]
  if saliency is not None:
    frames = map_frames(saliency, t)  # [T,h,w]
    rows = np.arange(h) * frames.shape[1] // h
    cols = np.arange(w) * frames.shape[2] // w
    full = frames[:, rows][:, :, cols]  # [T,H,W]
    vmax = float(full.max())
    colour = matplotlib.colormaps[CMAP](full / vmax if vmax > 0 else full)[..., :3]  # [T,H,W,3]
    rgb = (1 - alpha) * rgb + alpha * colour
  rgb = np.repeat(np.repeat(rgb, scale, axis=1), scale, axis=2)
  return np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def gif_bytes(frames: np.ndarray, *, fps: float = 4.0) -> bytes:
  """8-bit frames [T,H,W,3] (or [T,H,W]) -> an animated GIF that loops forever, with a time bar under the frames:
  [T,H+bar,W,3], frame t's bar filled over (t+1)/T of the width. The bar also keeps every frame: GIF writers merge
  identical consecutive frames (a still clip, a static optimum) into one."""
  frames = np.asarray(frames)
  if frames.dtype != np.uint8 or frames.ndim not in (3, 4) or len(frames) < 1:
    raise ValueError(f"GIF frames must be uint8 [T,H,W] or [T,H,W,3]; got {frames.dtype} {frames.shape}")
  frames = np.repeat(frames[..., None], 3, axis=-1) if frames.ndim == 3 else frames
  t, _, w, _ = frames.shape
  bar = np.zeros((t, max(2, w // 32), w, 3), np.uint8)  # [T,bar,W,3]
  for i in range(t):
    bar[i, :, :max(1, round(w * (i + 1) / t))] = 200
  frames = np.concatenate([frames, bar], axis=1)
  buffer = io.BytesIO()
  imageio.mimsave(buffer, list(frames), format="GIF", duration=1000.0 / fps, loop=0)
  return buffer.getvalue()


def figure_png(fig: Figure, *, dpi: int = 110) -> bytes:
  """A figure's PNG bytes."""
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=dpi)
  return buffer.getvalue()


def write_png(fig: Figure, path: str | os.PathLike, *, dpi: int = 110) -> epath.Path:
  """Saves the figure as PNG to `path` (local or any etils.epath URI), atomically; returns the path."""
  write_atomic(path, figure_png(fig, dpi=dpi))
  return as_path(path)


def write_gif(frames: np.ndarray, path: str | os.PathLike, *, fps: float = 4.0) -> epath.Path:
  """Saves 8-bit frames [T,H,W,3] as an animated GIF to `path`, atomically; returns the path."""
  write_atomic(path, gif_bytes(frames, fps=fps))
  return as_path(path)


def as_frames(x: np.ndarray, kind: str) -> np.ndarray:
  """An optimised input [T,H,W,C] or a flow [H,W,2(T-1)] -> frames to draw [T',H,W,C] (flow: its magnitude)."""
  if kind == "video":
    return x
  h, w, c = x.shape
  fields = x.reshape(h, w, c // 2, 2).transpose(2, 0, 1, 3)  # [T-1,H,W,2]
  return np.linalg.norm(fields, axis=-1, keepdims=True)

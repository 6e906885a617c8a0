"""The ViT paper's Figure 7 for a trained ViT, and attention maps over images and clips.

    paths = draw_figure7(load_run("workdirs/vit_vs_resnet/vit_s"), images, "out/")   # three PNGs
    paths += draw_attention(run.model, run.variables, images[:2], "out/attention.png")

    python -m vit_video.visualize.figure7 --workdir=workdirs/vit_vs_resnet/vit_s \
        --out=experiments/results/visualise_figure7 [--examples=128]

Figure 7 (Dosovitskiy et al. 2020): left, the first principal components of the patch-embedding filters; centre,
the cosine similarity of each patch's position embedding to all others (one small map per patch, laid out on the
patch grid); right, each head's mean attention distance (pixels) against depth, averaged over `images`. The
attention figure has one row per layer and one column per head, each panel the head's map over the image
(`attention_maps.query_map`: the class token's attention, or without one the attention each patch receives), and
a last column with the rollout (`attention_maps.rollout`, the class token's row or the mean over all rows). For
clips (`draw_clip_attention`) the maps of attention over space-time tokens (ViViT Model 1, TimeSformer "joint"),
within each frame (ViViT Model 2's spatial encoder, TimeSformer "space") or, for MViT, the class token's on each
block's pooled key map, are drawn over every frame. `figure7_numbers` gives what the figures show as numbers; the
command writes them, with the same numbers for the architecture at initialisation (seed 0) as a baseline, to
`{run}_numbers.json` beside the PNGs. For a Swin run it draws the distance panel per block against uniform
attention over each query's window (`swin_distance`) and the filters.
"""
import json
import math
import os
from collections.abc import Sequence

import flax.linen as nn
import jax
import numpy as np
from etils import epath
from matplotlib.figure import Figure

from vit_video.models import mvit, swin
from vit_video.visualize import attention_maps, draw


def _model_variables(run) -> tuple[nn.Module, dict]:
  """A runs.Run, or a (model, variables) pair."""
  if hasattr(run, "model") and hasattr(run, "variables"):
    return run.model, run.variables
  model, variables = run
  return model, variables


def vit_grid(model: nn.Module, image_shape: Sequence[int]) -> tuple[tuple[int, int], int]:
  """A ViT's patch grid (gh, gw) for images `[B,H,W,C]` (or [H,W,C]) and its pixels per token (the patch times a
  hybrid trunk's stride)."""
  if not hasattr(model, "patch_size") or not hasattr(model, "pool"):
    raise ValueError(f"Figure 7 is drawn for ViTs; got {type(model).__name__}")
  stages = getattr(model, "stem_stage_sizes", None)
  pixels = model.patch_size * (1 if stages is None else 4 * 2 ** max(len(stages) - 1, 0))
  h, w = image_shape[-3:-1]
  if h % pixels or w % pixels:
    raise ValueError(f"images {tuple(image_shape)} are not a whole number of {pixels}-pixel tokens")
  return (h // pixels, w // pixels), pixels


def _weights(model, variables, *inputs) -> dict:
  """attention_weights compiled (one program instead of one per operation), in layer order."""
  weights = jax.jit(lambda v, *x: attention_maps.attention_weights(model, v, *x))(variables, *inputs)
  return attention_maps.in_layer_order(weights)


def encoder_weights(model: nn.Module, variables: dict, images: np.ndarray) -> list:
  """A ViT's encoder attention weights, one `[B,h,N,N]` per layer, first to last (for `rollout_map` and the
  distance)."""
  return [w for k, w in _weights(model, variables, images).items() if k.startswith("Transformer/")]


_encoder_weights = encoder_weights  # the name __main__.py used before it was public


def attention_entropy(weights) -> np.ndarray:
  """Per head, the mean entropy of the attention rows over their keys as a share of the uniform row's, log N:
  `[B,h,N,N]` -> `[h]` (1: uniform attention, 0: every query on one key)."""
  w = np.asarray(weights, np.float64)
  entropy = -(w * np.log(np.where(w > 0, w, 1.0))).sum(-1)  # [B,h,N]
  return (entropy.mean(axis=(0, 2)) / np.log(w.shape[-1])).astype(np.float32)


def figure7_numbers(model: nn.Module, variables: dict, images: np.ndarray, *, components: int = 28) -> dict:
  """Figure 7's quantities for a ViT and a batch of images `[B,H,W,C]` (as the model takes them).

  Returns {"distance": [L,h] pixels, "entropy": [L,h] (`attention_entropy`), "uniform_distance": the mean
  distance of uniform attention on the grid, "similarity": [gh,gw,gh,gw], "same_row", "same_column", "other": the
  mean position-embedding similarity of a patch to the other patches of its row (same grid row i), of its column
  (same j), and to the rest, "neighbour": to its 4-neighbours, "filters": [k,P,P,C], "explained": [k] variance
  shares, "grid", "pixels_per_token"}.
  """
  grid, pixels = vit_grid(model, np.shape(images))
  weights = encoder_weights(model, variables, images)
  distance = attention_maps.mean_attention_distance(weights, grid, pixels)
  entropy = np.stack([attention_entropy(w) for w in weights])  # [L,h]
  uniform = np.full((1, 1, math.prod(grid), math.prod(grid)), 1.0 / math.prod(grid))
  similarity = attention_maps.position_embedding_similarity(variables, grid)
  filters, explained = attention_maps.embedding_filters(variables, components, return_variance=True)
  rows, cols = np.meshgrid(np.arange(grid[0]), np.arange(grid[1]), indexing="ij")
  r, c = rows.reshape(-1), cols.reshape(-1)
  flat = similarity.reshape(math.prod(grid), math.prod(grid))
  off = ~np.eye(len(r), dtype=bool)
  same_row, same_col = (r[:, None] == r[None]) & off, (c[:, None] == c[None]) & off
  neighbour = np.abs(r[:, None] - r[None]) + np.abs(c[:, None] - c[None]) == 1
  mean = lambda mask: float(flat[mask].mean()) if mask.any() else float("nan")  # noqa: E731
  uniform_distance = float(attention_maps.mean_attention_distance([uniform], grid, pixels)[0, 0])
  return dict(distance=distance, entropy=entropy, uniform_distance=uniform_distance,
              similarity=similarity, same_row=mean(same_row), same_column=mean(same_col),
              other=mean(off & ~same_row & ~same_col), neighbour=mean(neighbour), filters=filters,
              explained=explained, grid=grid, pixels_per_token=pixels)


def filters_figure(filters: np.ndarray, explained: np.ndarray | None = None, *, title: str = "") -> Figure:
  """The principal components `[k,P,P,C]` (C 1 or 3), each stretched to its own range, in rows of 7."""
  panels = [(f"PC{i + 1}" + (f" {explained[i]:.0%}" if explained is not None else ""), f)
            for i, f in enumerate(np.asarray(filters))]
  return draw.panels_figure(panels, columns=min(7, len(panels)), title=title, size=1.0)


def similarity_figure(similarity: np.ndarray, *, title: str = "") -> Figure:
  """`[gh,gw,gh,gw]`: at grid cell (i, j), the small map of patch (i, j)'s similarity to every patch (the paper's
  layout), on one colour scale from -1 to 1."""
  gh, gw = similarity.shape[:2]
  fig = Figure(figsize=(0.55 * gw + 1.2, 0.55 * gh + 0.6), layout="constrained")
  axes = np.asarray(fig.subplots(gh, gw, squeeze=False))
  image = None
  for i in range(gh):
    for j in range(gw):
      image = axes[i, j].imshow(similarity[i, j], cmap="viridis", vmin=-1, vmax=1, interpolation="nearest")
      axes[i, j].set_xticks([])
      axes[i, j].set_yticks([])
      if j == 0:
        axes[i, j].set_ylabel(str(i + 1), fontsize=6)
      if i == gh - 1:
        axes[i, j].set_xlabel(str(j + 1), fontsize=6)
  fig.colorbar(image, ax=axes, shrink=0.6, label="cosine similarity")
  fig.suptitle(title or "position embedding similarity", fontsize=9)
  return fig


def distance_figure(distance, *, uniform=None, title: str = "") -> Figure:
  """Mean attention distance (pixels), `[L,h]` or one `[h_l]` array per layer (Swin's head counts change): one
  dot per head against the layer (1-based), as the paper's. `uniform`: the distance of uniform attention, one
  number (a dashed line) or one per layer (a dash at each)."""
  distance = [np.asarray(d) for d in distance]
  layers, heads = len(distance), max(len(d) for d in distance)
  fig = Figure(figsize=(3.4 + 0.08 * max(layers - 12, 0), 2.8), layout="constrained")
  ax = fig.subplots()
  for h in range(heads):
    at = [layer for layer in range(layers) if h < len(distance[layer])]
    ax.scatter(np.asarray(at) + 1, [distance[layer][h] for layer in at], s=14, label=f"head {h + 1}")
  if np.ndim(uniform) == 0 and uniform is not None:
    ax.axhline(uniform, color="grey", linestyle="--", linewidth=0.8, label="uniform attention")
  elif uniform is not None:
    ax.scatter(np.arange(1, layers + 1), uniform, marker="_", s=120, color="grey", label="uniform in window")
  ax.set_xlabel("network depth (layer)")
  ax.set_ylabel("mean attention distance (pixels)")
  ax.set_xticks(np.arange(1, layers + 1))
  ax.set_ylim(bottom=0)
  ax.legend(fontsize=6, loc="lower right", ncol=1 + heads // 6)
  ax.set_title(title or "mean attention distance", fontsize=9)
  return fig


def swin_distance(model: nn.Module, variables: dict, images: np.ndarray) -> dict:
  """Figure 7 (right) for a Swin on images `[B,H,W,C]` (or a Video Swin on clips): per block, in run order,
  {"blocks": paths, "distance": [h] pixels per block, "uniform": per block the distance of uniform attention over
  each query's own window (the attention's support: what the windows alone allow), "maps": each block's map S}."""
  weights = _weights(model, variables, images)
  dense = attention_maps.swin_dense_weights(model, weights, np.shape(images))
  out = dict(blocks=list(dense), distance=[], uniform=[], maps=[])
  for w, spatial, pixels in dense.values():
    support = (w > 0).astype(np.float32)
    out["distance"].append(attention_maps.mean_attention_distance([w], spatial, pixels)[0])
    out["uniform"].append(float(attention_maps.mean_attention_distance([support], spatial, pixels)[0].mean()))
    out["maps"].append(spatial)
  return out


def draw_figure7(run, images: np.ndarray, out_dir: str | os.PathLike, *, components: int = 28,
                 prefix: str = "figure7", numbers: dict | None = None) -> list[epath.Path]:
  """Figure 7's three panels for a ViT (`run`: a runs.Run or (model, variables)) and images `[B,H,W,C]`, as
  `{prefix}_filters.png`, `{prefix}_position.png` and `{prefix}_distance.png` in `out_dir` (any epath folder;
  each written atomically). `numbers`: `figure7_numbers`' result when already computed. Returns their paths."""
  model, variables = _model_variables(run)
  numbers = numbers or figure7_numbers(model, variables, images, components=components)
  out = epath.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  k = len(numbers["filters"])
  return [
      draw.write_png(filters_figure(numbers["filters"], numbers["explained"],
                                    title=f"patch-embedding filters: first {k} principal components"),
                     out / f"{prefix}_filters.png"),
      draw.write_png(similarity_figure(numbers["similarity"]), out / f"{prefix}_position.png"),
      draw.write_png(distance_figure(numbers["distance"], uniform=numbers["uniform_distance"],
                                     title=f"mean attention distance ({len(images)} images)"),
                     out / f"{prefix}_distance.png"),
  ]


def _overlay(ax, picture: np.ndarray, values: np.ndarray, *, alpha: float = 0.6) -> None:
  """The picture `[H,W,C]` in grey, `values` `[h,w]` over it stretched to cover it (own maximum)."""
  grey = draw.to_unit(picture, (-1.0, 1.0))
  grey = grey.mean(axis=-1) if grey.ndim == 3 else grey
  h, w = grey.shape
  ax.imshow(grey, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
  vmax = float(values.max())
  ax.imshow(values, cmap=draw.CMAP, vmin=0, vmax=vmax if vmax > 0 else 1.0, alpha=alpha,
            extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="nearest")
  ax.set_xticks([])
  ax.set_yticks([])


def rollout_map(weights: Sequence, grid: Sequence[int]) -> np.ndarray:
  """The rollout of `weights` (per layer `[B',h,N,N]`) as a map `[B',*grid]`: the class token's row over the patches,
  or, without a class token, the mean of all rows (how much of every output token comes from each input token)."""
  flow = np.asarray(attention_maps.rollout(list(weights)))  # [B',N,N]
  m = math.prod(grid)
  row = flow[:, 0, 1:] if flow.shape[-1] == m + 1 else flow.mean(axis=1)  # [B',M]
  return row.reshape(len(flow), *grid)


def attention_figure(image: np.ndarray, maps: np.ndarray, rollout: np.ndarray | None = None, *,
                     title: str = "") -> Figure:
  """One image `[H,W,C]`; `maps` `[L,h,gh,gw]` (a row per layer, a column per head) and the rollout `[gh,gw]` in a
  last column, each over the image on its own scale."""
  layers, heads = maps.shape[:2]
  columns = heads + (rollout is not None)
  fig = Figure(figsize=(1.2 * columns + 0.4, 1.2 * layers + 0.4), layout="constrained")
  axes = np.asarray(fig.subplots(layers, columns, squeeze=False))
  for layer in range(layers):
    for h in range(heads):
      _overlay(axes[layer, h], image, maps[layer, h])
      if layer == 0:
        axes[layer, h].set_title(f"head {h + 1}", fontsize=7)
    axes[layer, 0].set_ylabel(f"layer {layer + 1}", fontsize=7)
    if rollout is not None:
      if layer == 0:
        _overlay(axes[0, -1], image, rollout)
        axes[0, -1].set_title("rollout", fontsize=7)
      else:
        axes[layer, -1].axis("off")
  if title:
    fig.suptitle(title, fontsize=9)
  return fig


def draw_attention(model: nn.Module, variables: dict, images: np.ndarray, out: str | os.PathLike, *,
                   title: str = "") -> list[epath.Path]:
  """Per-head attention maps of every encoder layer and the rollout of a ViT over each image of `images`
  `[B,H,W,C]`: one PNG per image, `out` with `_{i}` before its suffix when B > 1. Returns the paths."""
  grid, _ = vit_grid(model, np.shape(images))
  weights = encoder_weights(model, variables, images)
  maps = np.stack([attention_maps.query_map(w, grid) for w in weights], axis=1)  # [B,L,h,gh,gw]
  flows = rollout_map(weights, grid)  # [B,gh,gw]
  out = epath.Path(out)
  paths = []
  for i, image in enumerate(np.asarray(images)):
    path = out if len(images) == 1 else out.with_name(f"{out.stem}_{i}{out.suffix}")
    paths.append(draw.write_png(attention_figure(image, maps[i], flows[i], title=title), path))
  return paths


def clip_token_grid(model: nn.Module, clip_shape: Sequence[int]) -> tuple[int, int, int]:
  """The (T', gh, gw) token grid of a ViViT or TimeSformer for clips `[B,T,H,W,C]`."""
  t, h, w = clip_shape[-4:-1]
  p = model.patch_size
  depth = getattr(model, "tubelet_depth", 1) if getattr(model, "embedding", "tubelet") == "tubelet" else 1
  return t // depth, h // p, w // p


def clip_attention_maps(model: nn.Module, variables: dict, clip: np.ndarray) -> dict[str, np.ndarray]:
  """Maps over a clip `[1,T,H,W,C]` of ViViT Model 1/2, TimeSformer "joint"/"space" or MViT: {name: [T',h,w]}.

  Space-time layers (weights `[1,h,c+T'S,c+T'S]`) give each layer's head-mean map and their rollout
  ("rollout"); per-frame layers (`[T',h,c+S,c+S]`) give each layer's head-mean map per frame and the per-frame
  rollout. Other layers (temporal-only, axial, factorised) are skipped; ValueError when none is left. MViT: each
  block's class-token map on its pooled key map (`attention_maps.mvit_key_maps`, heads averaged), no rollout.
  """
  if np.shape(clip)[0] != 1:
    raise ValueError(f"one clip at a time: [1,T,H,W,C]; got {np.shape(clip)}")
  if isinstance(model, mvit.MViT):  # hierarchical: the class token's map per block, no rollout
    maps = attention_maps.mvit_key_maps(model, _weights(model, variables, clip), np.shape(clip))
    return {name.removesuffix("/attn"): m[0].mean(axis=0) for name, m in maps.items()}  # [T_k,H_k,W_k]
  t, gh, gw = clip_token_grid(model, np.shape(clip))
  s = gh * gw
  shapes = jax.eval_shape(lambda v, x: attention_maps.attention_weights(model, v, x), variables, clip)
  joint = [k for k, w in shapes.items() if w.shape[0] == 1 and w.shape[2] in (t * s, t * s + 1)]
  frames = [k for k, w in shapes.items() if w.shape[0] == t and w.shape[2] in (s, s + 1)]
  if not joint and not frames:
    raise ValueError(f"{type(model).__name__} has no space-time or per-frame spatial attention over its "
                     f"{(t, gh, gw)} tokens to draw")
  weights = _weights(model, variables, clip)
  joint, frames = ({k: weights[k] for k in keys} for keys in (joint, frames))
  out = {}
  for name, w in (joint | frames).items():
    grid = (t, gh, gw) if name in joint else (gh, gw)
    out[name.replace("Transformer/", "").replace("/MultiHeadDotProductAttention_1", "")] = (
        attention_maps.query_map(w, grid).mean(axis=1).reshape(t, gh, gw))
  if joint:
    out["rollout"] = rollout_map(list(joint.values()), (t, gh, gw))[0]
  else:
    out["rollout"] = rollout_map(list(frames.values()), (gh, gw))  # [T',gh,gw]: one rollout per frame
  return out


def draw_clip_attention(model: nn.Module, variables: dict, clip: np.ndarray, out: str | os.PathLike, *,
                        title: str = "") -> epath.Path:
  """`clip_attention_maps` over every frame of the clip `[1,T,H,W,C]`: a frames x maps PNG at `out`."""
  maps = clip_attention_maps(model, variables, clip)
  return draw.write_png(draw.clip_saliency_figure(np.asarray(clip)[0], maps, title=title), out)


def _main_swin(run, images: np.ndarray, labels: np.ndarray, out: epath.Path) -> None:
  """The command for a Swin: the attention-distance panel per block and the patch-filter components."""
  name = run.workdir.name
  numbers = swin_distance(run.model, run.variables, images)
  filters, explained = attention_maps.embedding_filters(run.variables, 28, return_variance=True)
  out.mkdir(parents=True, exist_ok=True)
  paths = [draw.write_png(distance_figure(numbers["distance"], uniform=numbers["uniform"],
                                          title=f"{name}: mean attention distance per block"),
                          out / f"{name}_figure7_distance.png"),
           draw.write_png(filters_figure(filters, explained, title="patch-embedding filters: principal components"),
                          out / f"{name}_figure7_filters.png")]
  logits = jax.jit(lambda v, x: run.model.apply(v, x, train=False))(run.variables, images)
  summary = dict(
      workdir=str(run.workdir), examples=len(images), top1=float(np.mean(np.argmax(logits, -1) == labels)),
      blocks=numbers["blocks"], maps=[list(m) for m in numbers["maps"]],
      distance=[np.round(d, 3).tolist() for d in numbers["distance"]],
      uniform_in_window=[round(u, 3) for u in numbers["uniform"]], explained=np.round(explained, 4).tolist(),
      pngs=[str(p) for p in paths])
  init = jax.jit(lambda x: run.model.init(jax.random.key(0), x, train=False))(images[:1])
  summary["at_init"] = dict(distance=[np.round(d, 3).tolist()
                                      for d in swin_distance(run.model, init, images)["distance"]])
  (out / f"{name}_numbers.json").write_text(json.dumps(summary, indent=1) + "\n")
  print(json.dumps(summary, indent=1))


def main(argv: Sequence[str]) -> None:
  """`python -m vit_video.visualize.figure7 --workdir=RUN --out=DIR [--examples=128]` (module docstring); for a
  Swin run, the attention distance per block (`swin_distance`) and the filters."""
  from absl import flags  # noqa: PLC0415

  from vit_video.visualize import runs  # noqa: PLC0415
  del argv
  flag = flags.FLAGS
  run = runs.load_run(flag.workdir)
  inputs, labels = runs.read_examples(run.config, flag.examples, "test")
  images = inputs["image"]
  out = epath.Path(flag.out)
  name = run.workdir.name
  if isinstance(run.model, swin.SwinBase):
    _main_swin(run, images, labels, out)
    return
  numbers = figure7_numbers(run.model, run.variables, images)
  paths = draw_figure7(run, images, out, prefix=f"{name}_figure7", numbers=numbers)
  paths += draw_attention(run.model, run.variables, images[:2], out / f"{name}_attention.png",
                          title=f"{name}: attention per layer and head, and rollout")
  logits = jax.jit(lambda v, x: run.model.apply(v, x, train=False))(run.variables, images)
  summary = dict(
      workdir=str(run.workdir), examples=len(images), labels=np.bincount(labels, minlength=10).tolist(),
      top1=float(np.mean(np.argmax(logits, -1) == labels)),
      entropy=np.round(numbers["entropy"], 4).tolist(),
      grid=list(numbers["grid"]), pixels_per_token=numbers["pixels_per_token"],
      distance=np.round(numbers["distance"], 3).tolist(), uniform_distance=round(numbers["uniform_distance"], 3),
      distance_min_median_max=[[round(float(f(d)), 3) for f in (np.min, np.median, np.max)]
                               for d in numbers["distance"]],
      similarity_same_row=round(numbers["same_row"], 4), similarity_same_column=round(numbers["same_column"], 4),
      similarity_neighbour=round(numbers["neighbour"], 4), similarity_other=round(numbers["other"], 4),
      explained=np.round(numbers["explained"], 4).tolist(),
      pngs=[str(p) for p in paths])
  # The same architecture at initialisation (seed 0): what these numbers are before any training.
  init = jax.jit(lambda x: run.model.init(jax.random.key(0), x, train=False))(images[:1])
  base = figure7_numbers(run.model, init, images)
  summary["at_init"] = dict(
      distance_min_median_max=[[round(float(f(d)), 3) for f in (np.min, np.median, np.max)] for d in base["distance"]],
      entropy_mean=round(float(base["entropy"].mean()), 4), similarity_same_row=round(base["same_row"], 4),
      similarity_same_column=round(base["same_column"], 4), similarity_neighbour=round(base["neighbour"], 4),
      similarity_other=round(base["other"], 4), explained=np.round(base["explained"], 4).tolist())
  (out / f"{name}_numbers.json").write_text(json.dumps(summary, indent=1) + "\n")
  print(json.dumps(summary, indent=1))


if __name__ == "__main__":
  from absl import app, flags

  flags.DEFINE_string("workdir", None, "A trained ViT's run folder.", required=True)
  flags.DEFINE_string("out", None, "Folder for the PNGs and numbers.json.", required=True)
  flags.DEFINE_integer("examples", 128, "Test images averaged over (the paper: 128).")
  app.run(main)

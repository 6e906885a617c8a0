"""Draws what a trained run's model looks at: saliency, attention, Figure 7 or activation maximisation, as PNG/GIF.

    python -m vit_video.visualize --workdir=workdirs/video/c3d --method=grad_cam --out=/tmp/c3d [--examples=4]
    python -m vit_video.visualize --workdir=workdirs/vit_vs_resnet/vit_s --method=figure7 --out=/tmp/vit_s
    python -m vit_video.visualize --workdir=RUN --method=activation_max --regulariser=fast --index=3 --out=DIR

Methods:
  gradient, smoothgrad, integrated_gradients   saliency of each example's true class (or class --index) on its
      inputs (vit_video/visualize/saliency.py; integrated gradients from the black image/clip and zero flow);
  grad_cam                                      CNNs only: at --layer (default: the last conv map);
  attention                                     transformers only: per-head maps of every layer (and the rollout)
      over each image, or the head-mean maps over each clip (ViViT 1/2, TimeSformer joint/space; figure7.py);
  rollout                                       transformers only: attention rollout (Abnar & Zuidema 2020);
  figure7                                       image ViTs only: the ViT paper's Figure 7 panels;
  activation_max                                the input maximising class --index (default 0), or channel
      --index of --layer, under --regulariser (appearance, slow, fast, none; activation_max.py).
The examples are the first --examples of --split (default: the run's eval split) through the run's own eval
pipeline (one view per video). Images give one PNG per method (examples x maps); clips one PNG per example
(frames x maps, flow maps included) and one animated GIF (the main map over the clip). --out may be any
etils.epath folder (gs://...); every file is written atomically, and its path printed.
"""
import sys

from absl import app, flags

from vit_video import cli

METHODS = ("gradient", "smoothgrad", "integrated_gradients", "grad_cam", "attention", "rollout", "figure7",
           "activation_max")


def _define_flags() -> None:
  """The command's flags (defined only when run as a command, so that importing this module defines none)."""
  flags.DEFINE_string("workdir", None, "A trained run's folder (vit_video.main's workdir; any URI).")
  flags.DEFINE_enum("method", None, METHODS, "What to draw.")
  flags.DEFINE_string("out", None, "Folder for the PNG/GIF files (created; any URI).")
  flags.DEFINE_integer("index", None, "Class to explain (default: each example's label) or maximise (default 0); "
                       "with --layer, the channel.")
  flags.DEFINE_string("layer", None, "Module path of a layer (hooks.layer_paths): Grad-CAM's layer, or the layer "
                      "whose channel --index activation_max maximises.")
  flags.DEFINE_integer("examples", 4, "Examples to explain.")
  flags.DEFINE_string("split", "", "tfds split of the examples (default: the run's eval split).")
  flags.DEFINE_enum("regulariser", "slow", ("appearance", "slow", "fast", "none"),
                    "activation_max: the temporal regulariser.")
  flags.DEFINE_integer("steps", None, "activation_max: optimisation steps (default 200); integrated_gradients: path "
                       "steps (default 32).")
  flags.DEFINE_integer("seed", 0, "Random seed (SmoothGrad's noise, activation_max's start).")
  flags.mark_flags_as_required(["workdir", "method", "out"])


def _does_not_apply(method: str, run, why: str) -> ValueError:
  return ValueError(f"--method={method} does not apply to {run.config.model_name} "
                    f"({type(run.model).__name__}, inputs {run.inputs}): {why}")


def _saliency_maps(method: str, run, inputs: dict, labels, *, index, layer, steps, seed):
  """{input name: maps [B,H,W] or [B,T',H,W]} of a saliency method."""
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415

  from vit_video.visualize import hooks, saliency  # noqa: PLC0415
  xs = tuple(jnp.asarray(inputs[n]) for n in run.inputs)
  targets = np.full(len(labels), index) if index is not None else labels
  if method == "grad_cam":
    try:
      layer = layer or saliency.cam_layer(run.model, run.variables, *xs)
    except ValueError as e:
      raise _does_not_apply(method, run, str(e)) from e
    cams = {}
    for k in np.unique(targets):
      rows = np.flatnonzero(targets == k)
      cam = np.asarray(saliency.grad_cam(run.model, run.variables, *(x[rows] for x in xs), index=int(k), layer=layer))
      for i, r in enumerate(rows):
        cams[r] = cam[i]
    name = "flow" if layer.startswith("flow_stream") else run.inputs[0]
    return {f"grad_cam ({layer})" if name != "flow" else "grad_cam (flow)": np.stack([cams[r] for r in
                                                                                     range(len(targets))])}
  score = hooks.class_objective(run.model, run.variables, targets)
  if method == "gradient":
    attributions = saliency.vanilla_gradient(score, *xs)
  elif method == "smoothgrad":
    attributions = saliency.smoothgrad(score, *xs, rng=jax.random.key(seed))
  else:
    attributions = saliency.integrated_gradients(score, *xs, baselines=saliency.black_baselines(run.inputs, xs),
                                                 steps=steps or 32)
  return {name: np.asarray(saliency.to_map(a, name)) for name, a in zip(run.inputs, attributions)}


def _write(path, what: list) -> None:
  what.append(path)
  print(path)


def draw_saliency(method: str, run, inputs: dict, labels, out, **options) -> list:
  import numpy as np  # noqa: PLC0415

  from vit_video.visualize import draw  # noqa: PLC0415
  maps = _saliency_maps(method, run, inputs, labels, **options)
  written = []
  if run.inputs == ("image",):
    fig = draw.image_saliency_figure(inputs["image"], maps, titles=[f"label {int(k)}" for k in labels])
    _write(draw.write_png(fig, out / f"{method}.png"), written)
    return written
  for k in range(len(labels)):
    clip = inputs["video"][k]
    example = {name: m[k] for name, m in maps.items()}
    fig = draw.clip_saliency_figure(clip, example, title=f"{method}: example {k}, label {int(labels[k])}")
    _write(draw.write_png(fig, out / f"{method}_{k}.png"), written)
    main = max(example, key=lambda n: float(np.sum(example[n])))  # the input the model uses most
    _write(draw.write_gif(draw.overlay_frames(clip, example[main]), out / f"{method}_{k}.gif"), written)
  return written


def _has_attention(run) -> bool:
  import dataclasses  # noqa: PLC0415
  return "sow_attention_weights" in {f.name for f in dataclasses.fields(run.model)}


def draw_attention(method: str, run, inputs: dict, out) -> list:
  import numpy as np  # noqa: PLC0415

  from vit_video.visualize import draw, figure7  # noqa: PLC0415
  if not _has_attention(run):
    raise _does_not_apply(method, run, "the model has no attention layers to read (a CNN)")
  written = []
  try:
    if run.inputs == ("image",):
      images = inputs["image"]
      if method == "attention":
        for path in figure7.draw_attention(run.model, run.variables, images, out / "attention.png",
                                           title=run.config.model_name):
          _write(path, written)
        return written
      grid, _ = figure7.vit_grid(run.model, images.shape)
      maps = figure7.rollout_map(figure7.encoder_weights(run.model, run.variables, images), grid)
      _write(draw.write_png(draw.image_saliency_figure(images, {"rollout": maps}), out / "rollout.png"), written)
      return written
    for k in range(len(inputs["video"])):
      clip = inputs["video"][k:k + 1]
      maps = figure7.clip_attention_maps(run.model, run.variables, clip)
      if method == "rollout":
        maps = {"rollout": maps["rollout"]}
      fig = draw.clip_saliency_figure(clip[0], maps, title=f"{method}: example {k}")
      _write(draw.write_png(fig, out / f"{method}_{k}.png"), written)
      _write(draw.write_gif(draw.overlay_frames(clip[0], np.asarray(maps["rollout"])), out / f"{method}_{k}.gif"),
             written)
  except (ValueError, AttributeError) as e:
    raise _does_not_apply(method, run, str(e)) from e
  return written


def draw_figure7(run, inputs: dict, out) -> list:
  from vit_video.visualize import figure7  # noqa: PLC0415
  if run.inputs != ("image",) or not _has_attention(run):
    raise _does_not_apply("figure7", run, "Figure 7 reads an image ViT's patch embedding, position embedding and "
                          "attention")
  try:
    paths = figure7.draw_figure7(run, inputs["image"], out)
  except (ValueError, AttributeError, KeyError) as e:
    raise _does_not_apply("figure7", run, str(e)) from e
  written = []
  for p in paths:
    _write(p, written)
  return written


def draw_activation_max(run, out, *, index, layer, regulariser, steps, seed) -> list:
  import jax  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415

  from vit_video.visualize import activation_max, draw, hooks  # noqa: PLC0415
  index, steps = index or 0, steps or 200
  score = hooks.objective(run.model, run.variables, index=index, layer=layer)
  shapes = [(1, *s) for s in run.input_shapes]
  result = activation_max.maximise(score, shapes, rng=jax.random.key(seed), regulariser=regulariser, steps=steps,
                                   kinds=run.inputs)
  target = f"{layer} channel {index}" if layer else f"class {index}"
  name = f"activation_max_{regulariser}"
  written = []
  print(f"{target}: score {float(result.scores[0, 0]):.3f} at the start, {float(result.scores[-1, 0]):.3f} at the "
        f"end ({steps} steps, {regulariser})")
  if run.inputs == ("image",):
    fig = draw.panels_figure([(target, np.asarray(result.inputs[0][0]))], columns=1)
    _write(draw.write_png(fig, out / f"{name}.png"), written)
    return written
  clips = {kind: draw.as_frames(np.asarray(x[0]), kind) for kind, x in zip(run.inputs, result.inputs)}
  fig = draw.clip_rows_figure({("flow magnitude" if k == "flow" else k): c for k, c in clips.items()},
                              title=f"{run.config.model_name}: {target}, {regulariser}")
  _write(draw.write_png(fig, out / f"{name}.png"), written)
  for kind, c in clips.items():
    _write(draw.write_gif(draw.overlay_frames(c, value_range=(float(c.min()), float(c.max()) + 1e-6)),
                          out / f"{name}_{kind}.gif"), written)
  return written


def visualise(workdir, method: str, out, *, index: int | None = None, layer: str | None = None, examples: int = 4,
              split: str = "", regulariser: str = "slow", steps: int | None = None, seed: int = 0) -> list:
  """Draws `method` for the run in `workdir` (a folder or a runs.Run) into `out`, printing and returning the paths
  (the flags' meanings: module docstring). ValueError for a method that does not apply to the run's model."""
  from vit_video.train.run_folder import as_path  # noqa: PLC0415
  from vit_video.visualize import runs  # noqa: PLC0415
  if method not in METHODS:
    raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
  if examples < 1:
    raise ValueError(f"examples={examples} must be >= 1")
  if layer and method not in ("grad_cam", "activation_max"):
    raise ValueError(f"a layer applies to grad_cam and activation_max, not {method}")
  run = workdir if isinstance(workdir, runs.Run) else runs.load_run(workdir)
  out = as_path(out)
  out.mkdir(parents=True, exist_ok=True)
  if method == "activation_max":
    return draw_activation_max(run, out, index=index, layer=layer, regulariser=regulariser, steps=steps, seed=seed)
  inputs, labels = runs.read_examples(run.config, examples, split)
  if method in ("attention", "rollout"):
    return draw_attention(method, run, inputs, out)
  if method == "figure7":
    return draw_figure7(run, inputs, out)
  return draw_saliency(method, run, inputs, labels, out, index=index, layer=layer, steps=steps, seed=seed)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  written = cli.exit_on_failure(lambda: visualise(
      f.workdir, f.method, f.out, index=f.index, layer=f.layer, examples=f.examples, split=f.split,
      regulariser=f.regulariser, steps=f.steps, seed=f.seed))
  print(f"{len(written)} files in {f.out}", file=sys.stderr)


if __name__ == "__main__":
  _define_flags()
  app.run(main)

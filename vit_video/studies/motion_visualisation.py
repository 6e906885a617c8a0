"""What the video models look at, and which motions their classes prefer (issue 17).

    rows = run(config, workdir)   # python -m vit_video.study --config=experiments/visualise.py:cpu ...

The members (`config.members[name]`, training configs of the video comparisons on the motion label of moving
Fashion-MNIST actions) are trained into workdir/<name>/ through `loop.train_once` (a finished run is read back) and
read back with `runs.load_run`. Then, per member:

(a) Saliency over time. The first `examples` test clips (one view each, the member's own frames and flow) are
    explained for their true class by the vanilla gradient, integrated gradients (`ig_steps` steps from the black
    clip and zero flow) and, for the CNNs, Grad-CAM at the last conv map (`saliency.cam_layer`). A map is |a| summed
    over channels per frame ([B,T,H,W]; flow: [B,T-1,H,W], field t between frames t and t+1; Grad-CAM at its layer's
    grid, repeated to the frame's pixels and frames). Of the model's inputs the one with the most attribution mass
    is measured (the flow for a flow stream). Measured per clip, then averaged over the clips:
      share_item     the map's mass on the item: pixels above `item_threshold` of the intensity range (a flow
                     field's item: the item in either of its frames); item_area, the item's share of the pixels,
                     is what a map spread evenly would get.
      share_moving   the mass on the pixels that change between frames (|x_{t+1} - x_t| above the threshold, a
                     frame counting the changes to its neighbours); moving_area likewise. Clips of "still" have
                     none and are left out of these two.
      time_entropy   the entropy of the map's mass per frame over the frames, divided by log T' (1: spread evenly
                     over time, 0: all in one frame); peak_frame_share, the largest frame's share. Not defined for
                     a Grad-CAM layer with no time left (early fusion).
(b) Activation maximisation (`activation_max.maximise`) of each motion logit of `activation_max.classes`, one clip
    (and flow) per class in one batch, under each regulariser: the target logit and softmax probability reached,
    the optimum's temporal_change, and per class the regulariser whose optimum scores highest. Looser regularisers
    can only score as high or higher if the optimiser finds it, so a class is said to prefer a looser one only
    when it gains at least `PREFERENCE_MARGIN` of the logit's range over the classes; a model that cannot use
    motion (single_frame) gains nothing from slow or fast motion.
(c) The ViT paper's Figure 7 (`figure7.draw_figure7`: patch-embedding filters, position-embedding similarity, mean
    attention distance over `vit_images` test images) for the ViT in `config.vit_workdir`, or `config.vit` trained
    into workdir/vit.

Report (each written atomically into the workdir): config.json, results.csv (saliency: one row per member and
method), activation_max.csv (one row per member and regulariser), results.md, saliency_<method>.png (the
`figure_example` clip, models x frames), saliency_<model>.gif (its gradient over the clip), activation_max_<model>.png
(the `figure_class` optimum per regulariser, flow drawn as its magnitude), activation_max_<model>.gif (the "fast"
optimum) and figure7/*.png.
"""
import logging
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vit_video.train import loop
from vit_video.train.run_folder import RunFolder
from vit_video.visualize import activation_max, draw, hooks, runs, saliency

_LOG = logging.getLogger(__name__)
REPORT = ("config.json", "results.csv", "activation_max.csv", "results.md")  # and the figures (module docstring)
METHODS = ("gradient", "integrated_gradients", "grad_cam")
COLUMNS = ("model", "model_name", "motion_top1", "method", "input", "examples", "share_item", "item_area",
           "share_moving", "moving_area", "time_entropy", "peak_frame_share")
AM_COLUMNS = ("model", "model_name", "regulariser", "classes", "start_logit", "logit", "probability",
              "temporal_change", "preferred_by")
PREFERENCE_MARGIN = 0.05  # a looser regulariser is preferred when its optimum's logit is this much higher (as a
#   fraction of the range of the model's optimum logits over classes and regularisers)


def item_masks(video: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
  """[B,T,H,W,C] in [-1, 1] -> (item [B,T,H,W]: pixels above `threshold` of the range; moving [B,T,H,W]: pixels
  whose value changes by more than `threshold` of the range to the previous or the next frame)."""
  grey = np.asarray(video, np.float32).mean(axis=-1)  # [B,T,H,W]
  item = grey > -1.0 + 2.0 * threshold
  change = np.abs(np.diff(grey, axis=1)) > 2.0 * threshold  # [B,T-1,H,W]: frame t to t+1
  pad = np.zeros_like(change[:, :1])
  moving = np.concatenate([pad, change], axis=1) | np.concatenate([change, pad], axis=1)  # [B,T,H,W]
  return item, moving


def flow_masks(video: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
  """Masks of the T-1 flow fields [B,T-1,H,W]: the item in frame t or t+1, and the pixels changing from t to t+1."""
  grey = np.asarray(video, np.float32).mean(axis=-1)
  item = grey > -1.0 + 2.0 * threshold
  return item[:, :-1] | item[:, 1:], np.abs(np.diff(grey, axis=1)) > 2.0 * threshold


def upsample(cam: np.ndarray, frames: int, height: int, width: int) -> np.ndarray:
  """A Grad-CAM map [B,h,w] or [B,t,h,w] repeated to [B,frames,H,W] (nearest: frame f <- floor(f t / T))."""
  cam = np.asarray(cam, np.float32)
  cam = cam[:, None] if cam.ndim == 3 else cam
  _, t, h, w = cam.shape
  cam = cam[:, np.arange(frames) * t // frames]  # [B,T,h,w]
  return cam[:, :, np.arange(height) * h // height][..., np.arange(width) * w // width]  # [B,T,H,W]


def map_statistics(maps: np.ndarray, item: np.ndarray, moving: np.ndarray, *, over_time: bool = True) -> dict:
  """Per-clip statistics of non-negative maps [B,T',H,W] against masks of the same shape, averaged over the clips
  (module docstring); NaN where undefined."""
  maps = np.asarray(maps, np.float64)
  total = maps.reshape(len(maps), -1).sum(axis=1)  # [B]
  ok = total > 0
  share = lambda mask: (maps * mask).reshape(len(maps), -1).sum(axis=1) / np.where(ok, total, 1.0)  # [B]
  has_motion = moving.reshape(len(moving), -1).any(axis=1) & ok
  stats = {
      "share_item": float(np.mean(share(item)[ok])) if ok.any() else math.nan,
      "item_area": float(item.mean()),
      "share_moving": float(np.mean(share(moving)[has_motion])) if has_motion.any() else math.nan,
      "moving_area": float(moving[has_motion].mean()) if has_motion.any() else math.nan,
      "time_entropy": math.nan, "peak_frame_share": math.nan,
  }
  if over_time and maps.shape[1] > 1 and ok.any():
    per_frame = maps.reshape(*maps.shape[:2], -1).sum(axis=2)[ok] / total[ok, None]  # [B',T']
    entropy = -np.sum(np.where(per_frame > 0, per_frame * np.log(np.maximum(per_frame, 1e-30)), 0.0), axis=1)
    stats["time_entropy"] = float(np.mean(entropy / np.log(maps.shape[1])))
    stats["peak_frame_share"] = float(np.mean(per_frame.max(axis=1)))
  return stats


def explain(run: runs.Run, inputs: dict[str, np.ndarray], labels: np.ndarray, config: ml_collections.ConfigDict
            ) -> dict[str, tuple[str, np.ndarray, bool]]:
  """{method: (input name, maps [B,T',H,W], has time)} for the methods that apply to the run's model."""
  names = run.inputs
  xs = tuple(jnp.asarray(inputs[n]) for n in names)
  score = hooks.class_objective(run.model, run.variables, labels)
  out = {}
  attributions = {
      "gradient": jax.jit(lambda *x: saliency.vanilla_gradient(score, *x))(*xs),  # one compile, not op by op
      "integrated_gradients": saliency.integrated_gradients(score, *xs, baselines=saliency.black_baselines(names, xs),
                                                            steps=config.ig_steps),
  }
  for method, attribution in attributions.items():
    maps = {n: np.asarray(saliency.to_map(a, n)) for n, a in zip(names, attribution)}
    name = max(maps, key=lambda n: float(maps[n].sum()))  # the input the model uses most
    out[method] = (name, maps[name], True)
  try:
    layer = saliency.cam_layer(run.model, run.variables, *xs)
  except ValueError:
    return out  # no conv map (a transformer): no Grad-CAM
  name = "flow" if layer.startswith("flow_stream") else "video"  # two_stream's flow tower sees the flow
  t, h, w = inputs["video"].shape[1:4]
  cams = np.zeros((len(labels), t - 1 if name == "flow" else t, h, w), np.float32)  # [B,T',H,W]
  has_time = True
  for k in np.unique(labels):
    rows = np.flatnonzero(labels == k)
    cam = np.asarray(saliency.grad_cam(run.model, run.variables, *(x[rows] for x in xs), index=int(k), layer=layer))
    has_time = cam.ndim == 4 and cam.shape[1] > 1  # [B,t,h,w] with t > 1: the layer still has time
    cams[rows] = upsample(cam, *cams.shape[1:])
  out["grad_cam"] = (name, cams, has_time)
  return out


def saliency_rows(name: str, run: runs.Run, summary: dict, inputs: dict, labels: np.ndarray,
                  config: ml_collections.ConfigDict) -> tuple[list[dict], dict]:
  """The member's results.csv rows and its maps {method: maps} (for the figures)."""
  rows, maps = [], {}
  video_masks = item_masks(inputs["video"], config.item_threshold)
  for method, (input_name, m, has_time) in explain(run, inputs, labels, config).items():
    masks = flow_masks(inputs["video"], config.item_threshold) if input_name == "flow" else video_masks
    stats = map_statistics(m, *masks, over_time=has_time)
    rows.append({"model": name, "model_name": run.config.model_name, "motion_top1": float(summary["eval_top1"]),
                 "method": method, "input": input_name, "examples": len(labels), **stats})
    maps[method] = m
  return rows, maps


def maximise_classes(run: runs.Run, config: ml_collections.ConfigDict) -> dict[str, dict]:
  """{regulariser: {"inputs": optimised inputs, "start" [K'], "logit" [K'], "probability" [K'], "change" [K']}} for
  the classes of config.activation_max, one example per class."""
  am = config.activation_max
  classes = np.asarray(am.classes)
  shapes = [(len(classes), *s) for s in run.input_shapes]
  logits_of = jax.jit(lambda *x: run.model.apply(run.variables, *x, train=False).astype(jnp.float32))
  score = hooks.class_objective(run.model, run.variables, classes)
  flow_only = "streams" in run.config.model and run.config.model.streams == "flow"
  main = "flow" if flow_only else "video"  # the input whose temporal change is measured
  out = {}
  for regulariser in am.regularisers:
    result = activation_max.maximise(score, shapes, rng=jax.random.key(config.seed), regulariser=regulariser,
                                     steps=am.steps, learning_rate=am.learning_rate, kinds=run.inputs)
    logits = np.asarray(logits_of(*result.inputs))  # [K',K]
    probability = np.asarray(jax.nn.softmax(logits, axis=-1))[np.arange(len(classes)), classes]
    x = result.inputs[run.inputs.index(main)]
    out[regulariser] = {"inputs": [np.asarray(a) for a in result.inputs], "main": main,
                        "start": np.asarray(result.scores)[0], "logit": logits[np.arange(len(classes)), classes],
                        "probability": probability,
                        "change": np.asarray(activation_max.temporal_change(x, main))}
  return out


def preferences(results: dict[str, dict], regularisers: tuple[str, ...]) -> np.ndarray:
  """Per class, the index of the preferred regulariser (in `regularisers`, from the tightest to the loosest): the
  loosest whose logit beats every tighter one's by PREFERENCE_MARGIN of the logits' range."""
  logits = np.stack([results[r]["logit"] for r in regularisers])  # [R,K']
  margin = PREFERENCE_MARGIN * max(float(logits.max() - logits.min()), 1e-6)
  preferred = np.zeros(logits.shape[1], int)
  for r in range(1, len(regularisers)):
    better = logits[r] > logits[preferred, np.arange(logits.shape[1])] + margin
    preferred = np.where(better, r, preferred)
  return preferred


def activation_rows(name: str, run: runs.Run, results: dict[str, dict], config: ml_collections.ConfigDict
                    ) -> list[dict]:
  regularisers = tuple(config.activation_max.regularisers)
  preferred = preferences(results, regularisers)
  return [{"model": name, "model_name": run.config.model_name, "regulariser": r,
           "classes": len(config.activation_max.classes), "start_logit": float(np.mean(results[r]["start"])),
           "logit": float(np.mean(results[r]["logit"])), "probability": float(np.mean(results[r]["probability"])),
           "temporal_change": float(np.mean(results[r]["change"])), "preferred_by": int(np.sum(preferred == i))}
          for i, r in enumerate(regularisers)]


def draw_member(name: str, folder: RunFolder, inputs: dict, maps: dict, results: dict,
                config: ml_collections.ConfigDict) -> None:
  """The member's GIFs and activation-maximisation figure."""
  k = config.figure_example
  draw.write_gif(draw.overlay_frames(inputs["video"][k], maps["gradient"][k]), folder / f"saliency_{name}.gif")
  index = list(config.activation_max.classes).index(config.activation_max.figure_class)
  main = next(iter(results.values()))["main"]
  position = 1 if main == "flow" else 0
  clips = {f"{r}\nlogit {results[r]['logit'][index]:.1f}": draw.as_frames(results[r]["inputs"][position][index], main)
           for r in results}
  label = config.label_names[config.activation_max.figure_class]
  fig = draw.clip_rows_figure(clips, title=f"{name}: class {label!r}" + (" (flow magnitude)" if main == "flow" else ""))
  draw.write_png(fig, folder / f"activation_max_{name}.png", dpi=80)
  if "fast" in results:
    fast = draw.as_frames(results["fast"]["inputs"][position][index], main)
    draw.write_gif(draw.overlay_frames(fast, value_range=(float(fast.min()), float(fast.max()) + 1e-6)),
                   folder / f"activation_max_{name}.gif")


def draw_saliency(examples: dict[str, tuple[np.ndarray, dict, int]], rows: list[dict], folder: RunFolder,
                  config: ml_collections.ConfigDict) -> None:
  """saliency_<method>.png: the figure example under each model's map of the method (a row per model)."""
  k = config.figure_example
  for method in METHODS:
    maps, notes = {}, {}
    for name, (_, member_maps, _) in examples.items():
      if method in member_maps:
        maps[name] = member_maps[method][k]
        r = next(r for r in rows if r["model"] == name and r["method"] == method)
        notes[name] = f"item {100 * r['share_item']:.0f}%"
    if maps:
      clip, _, label = next(iter(examples.values()))
      fig = draw.clip_saliency_figure(clip, maps, notes=notes,
                                      title=f"{method}: test clip {k} ({config.label_names[int(label)]})")
      draw.write_png(fig, folder / f"saliency_{method}.png", dpi=80)


def vit_figure7(config: ml_collections.ConfigDict, folder: RunFolder) -> tuple[str, list]:
  """Figure 7 of the configured ViT: (its workdir, the PNG paths)."""
  from vit_video.visualize import figure7  # noqa: PLC0415  (helper B's module)
  workdir = config.vit_workdir
  if not workdir or not (RunFolder(workdir) / "config.json").exists():
    workdir = str(folder.child("vit"))
    loop.train_once(config.vit, workdir)
  run = runs.load_run(workdir)
  images = runs.read_examples(run.config, config.vit_images)[0]["image"]  # [N,H,W,C] test images
  return workdir, figure7.draw_figure7(run, images, folder.child("figure7").path)


def _pct(x: float) -> str:
  return "" if math.isnan(x) else f"{100 * x:.1f}"


def _num(x: float, digits: int = 2) -> str:
  return "" if math.isnan(x) else f"{x:.{digits}f}"


def markdown(config: ml_collections.ConfigDict, rows: list[dict], am_rows: list[dict], vit: str, figures: list,
             command: str, notes: str) -> str:
  parts = [
      "# What the video models look at, and which motions they prefer",
      f"Moving Fashion-MNIST actions, motion label. Saliency on the first {config.examples} test clips, each for its "
      f"true class; shares are of the map's mass (|attribution| summed over channels), averaged over the clips; "
      f"item: pixels above {config.item_threshold:g} of the intensity range (area: what an even map gets); moving: "
      "pixels changing by as much to a neighbouring frame (\"still\" clips left out); time entropy: of the mass "
      "per frame, 1 = even over the frames. Grad-CAM at the last conv map, repeated to the pixels.",
      _saliency_table(config, rows),
      f"Activation maximisation of the motion logits {tuple(config.activation_max.classes)} (one clip per class, "
      f"{config.activation_max.steps} Adam steps at {config.activation_max.learning_rate:g}; "
      "vit_video/visualize/activation_max.py): mean target logit and softmax probability at the optimum, mean "
      "temporal change (mean |x_t+1 - x_t| of the optimised input: the flow's for a flow stream), and how many "
      f"classes prefer each regulariser (the loosest that beats the tighter ones by {PREFERENCE_MARGIN:g} of the "
      "logit range).",
      _am_table(config, am_rows),
  ]
  if vit:
    parts.append(f"ViT Figure 7 of {vit}: " + ", ".join(str(p) for p in figures))
  if command:
    parts.append(f"Command: `{command}`")
  if notes:
    parts.append(notes)
  return "\n\n".join(parts) + "\n"


def _saliency_table(config, rows) -> str:
  header = ("model", "motion top-1", "method", "input", "share on item", "item area", "share on moving",
            "moving area", "time entropy", "peak frame")
  lines = ["| " + " | ".join(header) + " |", "|---|---:|---|---|" + "---:|" * (len(header) - 4)]
  for r in rows:
    lines.append("| " + " | ".join([r["model"], _pct(r["motion_top1"]), r["method"], r["input"],
                                    _pct(r["share_item"]), _pct(r["item_area"]), _pct(r["share_moving"]),
                                    _pct(r["moving_area"]), _num(r["time_entropy"]),
                                    _pct(r["peak_frame_share"])]) + " |")
  return "\n".join(lines)


def _am_table(config, am_rows) -> str:
  header = ("model", "regulariser", "start logit", "logit", "probability", "temporal change", "preferred by")
  lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
  for r in am_rows:
    lines.append("| " + " | ".join([r["model"], r["regulariser"], _num(r["start_logit"]), _num(r["logit"]),
                                    _pct(r["probability"]), _num(r["temporal_change"], 3),
                                    f"{r['preferred_by']}/{r['classes']}"]) + " |")
  return "\n".join(lines)


def write_report(config, folder: RunFolder, rows, am_rows, *, vit: str = "", figures=(), command="", notes="") -> None:
  folder.write_json(REPORT[0], config.to_dict())
  folder.write_csv(REPORT[1], rows, COLUMNS)
  folder.write_csv(REPORT[2], am_rows, AM_COLUMNS)
  folder.write_text(REPORT[3], markdown(config, rows, am_rows, vit, list(figures), command, notes))


def check_config(config: ml_collections.ConfigDict) -> None:
  """ValueError naming the problem unless the models are members and the figure choices are in range."""
  missing = [n for n in config.models if n not in config.members]
  if not config.models or missing:
    raise ValueError(f"config.models {tuple(config.models)} must be non-empty keys of config.members; not found: "
                     f"{missing}")
  if not 0 <= config.figure_example < config.examples:
    raise ValueError(f"figure_example {config.figure_example} is not one of the {config.examples} examples")
  am = config.activation_max
  if am.figure_class not in am.classes:
    raise ValueError(f"activation_max.figure_class {am.figure_class} is not one of its classes {tuple(am.classes)}")
  unknown = [r for r in am.regularisers if r not in activation_max.REGULARISERS]
  if unknown:
    raise ValueError(f"unknown regularisers {unknown}; valid: {', '.join(activation_max.REGULARISERS)}")


def run(config: ml_collections.ConfigDict, workdir: str, *, command: str = "", notes: str = "") -> list[dict]:
  """Trains (or reads back) the members, measures and draws; returns the saliency rows (results.csv)."""
  check_config(config)
  folder = RunFolder(workdir)
  folder.makedirs()
  rows, am_rows, examples = [], [], {}
  for i, name in enumerate(config.models):
    summary = loop.train_once(config.members[name], str(folder.child(name)))
    _LOG.info("motion visualisation [%d/%d] %s: motion top-1 %.1f%%", i + 1, len(config.models), name,
              100 * summary["eval_top1"])
    run_ = runs.load_run(folder.child(name).path)
    inputs, labels = runs.read_examples(run_.config, config.examples)
    member_rows, maps = saliency_rows(name, run_, summary, inputs, labels, config)
    rows += member_rows
    results = maximise_classes(run_, config)
    am_rows += activation_rows(name, run_, results, config)
    if jax.process_index() == 0:
      examples[name] = (inputs["video"][config.figure_example], maps, labels[config.figure_example])
      draw_member(name, folder, inputs, maps, results, config)
      write_report(config, folder, rows, am_rows, command=command, notes=notes)
    _LOG.info("motion visualisation [%d/%d] %s: %s", i + 1, len(config.models), name, "; ".join(
        f"{r['method']} {_pct(r['share_item'])}% on item" for r in member_rows))
  vit, figures = vit_figure7(config, folder)
  if jax.process_index() == 0:
    draw_saliency(examples, rows, folder, config)
    write_report(config, folder, rows, am_rows, vit=vit, figures=figures, command=command, notes=notes)
  return rows


def summary_table(config: ml_collections.ConfigDict, rows: list[dict]) -> str:
  """The saliency table as the command line prints it."""
  return _saliency_table(config, rows)

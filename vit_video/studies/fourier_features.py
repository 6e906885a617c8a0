"""Fourier features (Tancik et al. 2020): coordinate MLPs regressing photographs, one per input mapping, and PSNR.

    rows = run(config, workdir)   # python -m vit_video.study --config=experiments/fourier_features.py:cpu ...

For every photograph of `config.images` (vit_video/data/photographs.py: the centre square at `image_size`) and
every member of `config.order` (a mapping and its scale sigma, `config.members[name]`), a CoordinateMLP
(vit_video/models/coordinate_mlp.py) is fitted to the training pixels (even rows and columns) with full-batch Adam
on the mean squared error for `steps` steps, and scored by PSNR on the other three quarters of the pixels:

  PSNR = -10 log10(MSE) dB, the MSE over every held-out pixel and channel of [0, 1] images (the paper's).

Sigmas are given at the paper's 512 x 512 (`paper_size`) and multiplied by image_size / paper_size, so that the
frequencies keep their size in cycles per pixel when the images are smaller (natural images' statistics are
roughly scale invariant, so the best sigma per pixel should carry over).

Each member's folder workdir/<image>/<member>/ holds summary.json (the PSNRs, seconds, the PSNR curve; written
last, so a finished member is skipped on a re-run), reconstruction.png (the MLP at every pixel, 8-bit) and, for
the Gaussian mapping, constants.npz (its fixed frequency matrix B, never trained). After every member the
report is rewritten atomically: config.json (the config), results.csv (one row per image and member),
results.md (the PSNR table beside the paper's natural-image row) and reconstructions.png (images x members).
"""
import csv
import functools
import io
import logging
import time
from collections.abc import Sequence
from importlib import metadata

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from matplotlib.figure import Figure
from PIL import Image

from vit_video.data import photographs
from vit_video.models.coordinate_mlp import CoordinateMLP
from vit_video.train import run_lock
from vit_video.train.run_folder import RunFolder, as_path

_LOG = logging.getLogger(__name__)
REPORT = ("config.json", "results.csv", "results.md", "reconstructions.png")  # in the study's folder
COLUMNS = ("image", "member", "mapping", "sigma_paper", "sigma", "num_features", "steps", "train_psnr",
           "test_psnr", "seconds")
# Tancik et al. (2020), Table 1, 2D image regression, natural images: test PSNR (dB) per mapping (Gaussian at the
# sigma of 10 chosen there for natural images).
PAPER_PSNR = {"none": 19.32, "basic": 21.71, "positional": 24.95, "gaussian": 25.57}
PAPER_GAUSSIAN_SIGMA = 10.0


def psnr(prediction: jax.Array, target: jax.Array) -> jax.Array:
  """Peak signal-to-noise ratio of [0, 1] signals in dB: -10 log10(mean((prediction - target)^2)); +inf when equal.

  [...] x [...] (equal shapes) -> () float32.
  """
  if prediction.shape != target.shape:
    raise ValueError(f"prediction {prediction.shape} and target {target.shape} must have the same shape")
  mse = jnp.mean((jnp.asarray(prediction, jnp.float32) - jnp.asarray(target, jnp.float32)) ** 2)
  return -10.0 * jnp.log10(mse)


def make_model(config: ml_collections.ConfigDict, member: str) -> CoordinateMLP:
  """The member's CoordinateMLP: its mapping, its sigma scaled from paper_size to image_size, config.model."""
  m = config.members[member]
  return CoordinateMLP(mapping=m.mapping, sigma=m.sigma * config.image_size / config.paper_size, **config.model)


def fit(model: CoordinateMLP, data: dict[str, np.ndarray], *, steps: int, learning_rate: float, seed: int,
        eval_every: int = 0) -> dict:
  """Full-batch Adam on the MSE of data["train_coords"] [N,d] -> data["train_pixels"] [N,C] for `steps` steps.

  Returns {"variables" (params and, for the Gaussian mapping, constants), "curve" [(step, train PSNR, test PSNR)]
  at step 0, every `eval_every` steps (0: only at the end) and at the end, "reconstruction" [H,W,C] float32 (the
  MLP at every pixel of data["coords"] [H,W,d]), any d}. The steps run in jitted `lax.scan` chunks of `eval_every`.
  """
  if steps < 1:
    raise ValueError(f"steps={steps} must be >= 1")
  x, y = jnp.asarray(data["train_coords"]), jnp.asarray(data["train_pixels"])  # [N,2], [N,C]
  x_test, y_test = jnp.asarray(data["test_coords"]), jnp.asarray(data["test_pixels"])  # [M,2], [M,C]
  variables = model.init(jax.random.key(seed), x[:1], train=False)
  constants = {k: v for k, v in variables.items() if k != "params"}  # the Gaussian B: passed, never trained
  tx = optax.adam(learning_rate)

  def predict(params, coords):
    return model.apply({"params": params, **constants}, coords, train=False)

  def step(carry, _):
    params, opt_state = carry
    grads = jax.grad(lambda p: jnp.mean((model.apply({"params": p, **constants}, x, train=True) - y) ** 2))(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), None

  @functools.partial(jax.jit, static_argnums=2)
  def train_chunk(params, opt_state, length):
    (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), None, length=length)
    return params, opt_state

  @jax.jit
  def evaluate(params):
    return psnr(predict(params, x), y), psnr(predict(params, x_test), y_test)

  params, opt_state = variables["params"], tx.init(variables["params"])
  curve = [(0, *map(float, evaluate(params)))]
  chunk = eval_every if 0 < eval_every < steps else steps
  done = 0
  while done < steps:
    length = min(chunk, steps - done)
    params, opt_state = train_chunk(params, opt_state, length)
    done += length
    curve.append((done, *map(float, evaluate(params))))
  coords = jnp.asarray(data["coords"])  # [H,W,d] (or any [...,d])
  flat = coords.reshape(-1, coords.shape[-1])  # [H*W,d]
  reconstruction = np.asarray(jax.jit(predict)(params, flat)).reshape(*coords.shape[:-1], -1)  # [H,W,C]
  return {"variables": {"params": params, **constants}, "curve": curve, "reconstruction": reconstruction}


def png_bytes(image: np.ndarray) -> bytes:
  """[H,W,3] float in [0, 1] -> an 8-bit PNG file's bytes."""
  buffer = io.BytesIO()
  Image.fromarray(np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)).save(buffer, format="png")
  return buffer.getvalue()


def read_png(path) -> np.ndarray:
  """An 8-bit RGB PNG (any etils.epath path) -> [H,W,3] float32 in [0, 1]."""
  return np.asarray(Image.open(io.BytesIO(as_path(path).read_bytes())).convert("RGB"), np.float32) / 255.0


def npz_bytes(tree: dict) -> bytes:
  """A nested dict of arrays -> .npz bytes, keys joined by '/' ("constants/fourier_features/projection")."""
  flat = {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}
  buffer = io.BytesIO()
  np.savez(buffer, **flat)
  return buffer.getvalue()


def check_config(config: ml_collections.ConfigDict) -> None:
  """ValueError naming the problem unless the config's images, members and order fit together."""
  unknown = [name for name in config.images if name not in photographs.NAMES]
  if not config.images or unknown:
    raise ValueError(f"config.images {tuple(config.images)} must be non-empty names of "
                     f"{', '.join(photographs.NAMES)}; unknown: {unknown}")
  missing = [name for name in config.order if name not in config.members]
  if not config.order or missing:
    raise ValueError(f"config.order {tuple(config.order)} must be non-empty keys of config.members "
                     f"({', '.join(config.members)}); not found: {missing}")
  for name in config.order:
    if config.members[name].mapping not in CoordinateMLP.MAPPINGS:
      raise ValueError(f"member {name!r}: unknown mapping {config.members[name].mapping!r}; valid: "
                       f"{', '.join(CoordinateMLP.MAPPINGS)}")


def run_member(config: ml_collections.ConfigDict, image_name: str, member: str, folder: RunFolder) -> dict:
  """Fits one member to one photograph (or reads back its finished summary); returns its results row."""
  summary = folder.read_summary()
  if summary is None:
    image = photographs.load(image_name, config.image_size)
    model = make_model(config, member)
    start = time.perf_counter()
    result = fit(model, photographs.split(image), steps=config.steps, learning_rate=config.learning_rate,
                 seed=config.seed, eval_every=config.eval_every)
    seconds = time.perf_counter() - start
    folder.makedirs()
    folder.write_bytes("reconstruction.png", png_bytes(result["reconstruction"]))
    if len(result["variables"]) > 1:
      folder.write_bytes("constants.npz", npz_bytes({k: v for k, v in result["variables"].items() if k != "params"}))
    _, train_psnr, test_psnr = result["curve"][-1]
    m = config.members[member]
    summary = {"image": image_name, "member": member, "mapping": m.mapping, "sigma_paper": float(m.sigma),
               "sigma": float(model.sigma), "num_features": int(model.num_features), "steps": int(config.steps),
               "train_psnr": train_psnr, "test_psnr": test_psnr, "seconds": seconds,
               "curve": [list(point) for point in result["curve"]]}
    folder.write_summary(summary)  # last: its presence marks the member finished
  return {k: summary[k] for k in COLUMNS}


def _mean_std(values: Sequence[float]) -> str:
  return f"{np.mean(values):.2f} ± {np.std(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def _paper(member: dict) -> str:
  if member["mapping"] == "gaussian" and member["sigma"] != PAPER_GAUSSIAN_SIGMA:
    return ""
  return f"{PAPER_PSNR[member['mapping']]:.2f}"


def markdown_table(config: ml_collections.ConfigDict, rows: list[dict]) -> str:
  """Test PSNR (dB) per member: mean ± std over the images, each image, the train PSNR's mean, the paper's."""
  images = [name for name in config.images if any(r["image"] == name for r in rows)]
  header = ["member", "mapping", "sigma at 512 px", "sigma here", "test PSNR", *images, "train PSNR",
            "paper (test)"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 2 + "---:|" * (len(header) - 2)]
  for name in config.order:
    mine = {r["image"]: r for r in rows if r["member"] == name}
    if not mine:
      continue
    first = next(iter(mine.values()))
    lines.append("| " + " | ".join([
        name, first["mapping"], f"{first['sigma_paper']:g}" if first["mapping"] in ("positional", "gaussian") else "",
        f"{first['sigma']:.3g}" if first["mapping"] in ("positional", "gaussian") else "",
        _mean_std([r["test_psnr"] for r in mine.values()]),
        *[f"{mine[i]['test_psnr']:.2f}" if i in mine else "" for i in images],
        _mean_std([r["train_psnr"] for r in mine.values()]),
        _paper({"mapping": first["mapping"], "sigma": first["sigma_paper"]})]) + " |")
  return "\n".join(lines)


def summary_table(config: ml_collections.ConfigDict, rows: list[dict]) -> str:
  """The table as the command line prints it."""
  return markdown_table(config, rows)


def plot_reconstructions(config: ml_collections.ConfigDict, rows: list[dict], folder: RunFolder) -> Figure:
  """Images (rows) x [the photograph, then each member's reconstruction with its test PSNR] (columns)."""
  images = [name for name in config.images if any(r["image"] == name for r in rows)]
  members = [name for name in config.order if any(r["member"] == name for r in rows)]
  by_key = {(r["image"], r["member"]): r for r in rows}
  fig = Figure(figsize=(1.7 * (len(members) + 1), 1.85 * len(images)), layout="constrained")
  axes = np.asarray(fig.subplots(len(images), len(members) + 1, squeeze=False))
  for i, image_name in enumerate(images):
    panels = [("photograph", photographs.load(image_name, config.image_size))]
    for name in members:
      r = by_key.get((image_name, name))
      png = folder.child(image_name, name) / "reconstruction.png"
      panels.append((f"{name}\n{r['test_psnr']:.2f} dB", read_png(png)) if r else (name, None))
    for ax, (title, picture) in zip(axes[i], panels):
      if picture is not None:
        ax.imshow(picture, interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
      ax.set_title(title, fontsize=7)
    axes[i, 0].set_ylabel(image_name, fontsize=8)
  return fig


def write_report(config: ml_collections.ConfigDict, rows: list[dict], folder: RunFolder, *, command: str = "",
                 notes: str = "", figure: bool = True) -> None:
  """config.json, results.csv, results.md and (when `figure`) reconstructions.png, each written atomically."""
  folder.write_json(REPORT[0], config.to_dict())
  folder.write_csv(REPORT[1], [{k: f"{v:.4f}" if isinstance(v, float) else v for k, v in r.items()} for r in rows],
                   COLUMNS)
  size = config.image_size
  parts = [
      f"# Fourier features: coordinate MLPs on {len(set(r['image'] for r in rows))} photographs at {size} x {size}",
      f"Test PSNR (dB) on the held-out three quarters of the pixels after {config.steps} full-batch Adam steps "
      f"(learning rate {config.learning_rate:g}) on the other quarter (even rows and columns); mean ± std over "
      f"the images. MLP: {config.model.depth} x {config.model.width} ReLU, {config.model.num_features} "
      f"frequencies for the positional and Gaussian mappings. Sigmas are the paper's at 512 px, scaled by "
      f"{size}/{config.paper_size}. Paper: Tancik et al. (2020) Table 1, natural images (512 x 512 DIV2K crops; "
      f"Gaussian at sigma {PAPER_GAUSSIAN_SIGMA:g}).",
      markdown_table(config, rows)]
  if command:
    parts.append(f"Command: `{command}`")
  seconds = sum(r["seconds"] for r in rows)
  parts.append(f"Fitting time: {seconds:.0f} s for {len(rows)} members (sum of the members' own times).")
  parts.append(f"Photographs from scikit-image {metadata.version('scikit-image')} (skimage.data, bundled).")
  if notes:
    parts.append(notes)
  folder.write_text(REPORT[2], "\n\n".join(parts) + "\n")
  if not figure:
    return
  fig = plot_reconstructions(config, rows, folder)
  png = io.BytesIO()
  fig.savefig(png, format="png", dpi=110)
  folder.write_bytes(REPORT[3], png.getvalue())


def run(config: ml_collections.ConfigDict, workdir: str, *, command: str = "", notes: str = "") -> list[dict]:
  """Fits (or reads back) every image x member, rewriting the report after each; returns the rows in order."""
  check_config(config)
  folder = RunFolder(workdir)
  folder.makedirs()
  rows = []
  with run_lock.hold(folder / run_lock.LOCK):
    total = len(config.images) * len(config.order)
    for image_name in config.images:
      for name in config.order:
        rows.append(run_member(config, image_name, name, folder.child(image_name, name)))
        _LOG.info("fourier features [%d/%d] %s %s: test PSNR %.2f dB, train %.2f dB, %.0f s", len(rows), total,
                  image_name, name, rows[-1]["test_psnr"], rows[-1]["train_psnr"], rows[-1]["seconds"])
        if jax.process_index() == 0:  # the figure once an image is done
          write_report(config, rows, folder, command=command, notes=notes, figure=name == config.order[-1])
  return rows


def read_rows(path) -> list[dict]:
  """results.csv -> rows with numbers parsed."""
  rows = list(csv.DictReader(io.StringIO(as_path(path).read_text())))
  for r in rows:
    for k in COLUMNS:
      if k not in ("image", "member", "mapping"):
        r[k] = int(r[k]) if k in ("num_features", "steps") else float(r[k])
  return rows

"""Captioning with attention (Xu et al. 2015, "Show, Attend and Tell") in miniature, beside a retrieval baseline.

    rows = run(config, workdir)   # python -m vit_video.study --config=experiments/captioning.py:cpu --workdir=...

On `fmnist_captions` (vit_video/data/fmnist_captions.py: 2-4 Fashion-MNIST items on a 2x2 layout, 5 layout
captions a scene, 10 held-out item/relation facts), in four stages, each kept in the workdir and skipped when done:

  encoder/   a package image model (config.encoder.model_name through `models.create_model`, `return_grid=True`)
             pre-trained on the scenes' item labels (the class in each cell of the layout, or empty, from the mean of
             its grid over that cell's quarter), then frozen, as the paper's encoder was pre-trained (on ImageNet)
             and frozen; its feature grid [h,w,D] of every scene is computed once and standardised per channel with
             the training scenes' statistics. (Cell labels rather than the set of classes: on these CPUs the set
             was not learned in 200 steps, exact-set test accuracy 7%; the cell labels say no more than the
             captions' layout facts, which is what the decoder must learn to read from the grid.)
  decoder/   `ShowAttendTell` trained with teacher forcing on (scene, one of its references) pairs, Adam, the paper's
             loss (word NLL summed over the caption plus lambda times the doubly stochastic penalty).
  results    the test scenes captioned greedily and by beam search (caption_decoding); retrieval baselines in the
             encoder's space (the flattened grid, L2-normalised, cosine similarity: it keeps where things are):
             `retrieval_nearest` gives a test scene the first reference of its nearest training scene,
             `retrieval_consensus` (Devlin et al. 2015) picks among the references of its k nearest training scenes
             the one with the highest mean BLEU against the others (caption_eval.consensus).
Every method is scored with pycocoevalcap's BLEU-1..4 and CIDEr(-D) against the 5 references, on the whole test
split, its held-out scenes (those holding a fact no training scene holds) and the others ("seen"); results.csv and
results.md hold one table, examples of captions and how much of a class word's attention falls on that item
(`noun_attention`), attention.png the per-word attention maps of a few scenes; config.json the config. A finished
study (summary.json) is not run again: its rows are read back.
"""
import functools
import io
import logging
import math
import time

import flax
import jax
import jax.numpy as jnp
import matplotlib
import ml_collections
import numpy as np
import optax
import tensorflow_datasets as tfds

from vit_video import models
from vit_video.data import builders, caption_eval, fmnist_captions
from vit_video.data import fashion_mnist_local as fml
from vit_video.models import caption_decoding, show_attend_tell
from vit_video.train import run_lock
from vit_video.train.run_folder import RunFolder

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

_LOG = logging.getLogger(__name__)
REPORT = ("results.csv", "results.md", "attention.png")
METHODS = ("attention_greedy", "attention_beam", "retrieval_nearest", "retrieval_consensus")
SPLITS = ("test", "held_out", "seen")
COLUMNS = ("method", "split", "scenes") + caption_eval.METRICS
NUM_CLASSES = len(fml.CLASS_NAMES)


def load_split(name: str, data_dir: str, split: str) -> dict:
  """A prepared split as numpy: images uint8 [N,S,S,1], captions (N lists of str), held_out bool [N], labels, cells
  and boxes (N arrays), in the order of image_id."""
  builder = builders.check_prepared(name, data_dir)
  out = {"images": [], "captions": [], "held_out": [], "labels": [], "cells": [], "bbox": [], "image_id": []}
  for ex in tfds.as_numpy(builder.as_dataset(split=split)):
    out["images"].append(ex["image"])
    out["captions"].append([c.decode() for c in ex["captions"]])
    out["held_out"].append(bool(ex["held_out"]))
    out["labels"].append(ex["objects"]["label"])
    out["cells"].append(ex["objects"]["cell"])
    out["bbox"].append(ex["objects"]["bbox"])
    out["image_id"].append(int(ex["image_id"]))
  order = np.argsort(out["image_id"])
  out = {k: [v[i] for i in order] for k, v in out.items()}
  out["images"], out["held_out"] = np.stack(out["images"]), np.array(out["held_out"])
  return out


def cell_targets(labels: list[np.ndarray], cells: list[np.ndarray]) -> np.ndarray:
  """The class in each of the 4 cells of every scene, 10 for an empty cell: int32 [N,4] (cell = row * 2 + column)."""
  out = np.full((len(labels), 4), NUM_CLASSES, np.int32)
  for i, (scene_labels, scene_cells) in enumerate(zip(labels, cells)):
    out[i, scene_cells] = scene_labels
  return out


def _batches(n: int, batch_size: int):
  for start in range(0, n, batch_size):
    yield slice(start, min(start + batch_size, n))


def _pixels(images: np.ndarray) -> jax.Array:
  return jnp.asarray(images, jnp.float32) / 255.0  # uint8 [B,S,S,1] -> [0,1]


# --- encoder -----------------------------------------------------------------------------------------------------


def encoder_model(config: ml_collections.ConfigDict):
  """The package image model returning its grid [B,h,w,D] (h, w even)."""
  e = config.encoder
  return models.create_model(e.model_name, num_classes=0, return_grid=True, in_channels=1, **e.model)


def cell_logits(grid: jax.Array, head: dict) -> jax.Array:
  """The pre-training head: each quadrant's mean feature -> 11 logits (10 classes, empty).
  grid [B,h,w,D] -> [B,4,11], cells in row-major order."""
  b, h, w, d = grid.shape
  quadrants = grid.reshape(b, 2, h // 2, 2, w // 2, d).mean((2, 4)).reshape(b, 4, d)  # [B,2,h/2,2,w/2,D] -> [B,4,D]
  return quadrants @ head["kernel"] + head["bias"]


def train_encoder(config: ml_collections.ConfigDict, train: dict, test: dict, folder: RunFolder) -> dict:
  """Trains (or reloads) the encoder on the scenes' item labels: the class in each cell of the 2x2 layout (or
  "empty"), from the mean of the grid over that cell's quarter (`cell_logits`), softmax cross-entropy, AdamW with
  cosine decay. Writes variables.msgpack (the image model's variables, the head dropped), metrics.jsonl and
  summary.json (test accuracy per cell and per scene, all 4 cells right). Returns the image model's variables."""
  e = config.encoder
  model = encoder_model(config)
  images, targets = train["images"], cell_targets(train["labels"], train["cells"])
  variables = dict(jax.jit(functools.partial(model.init, train=False))(jax.random.key(config.seed),
                                                                       _pixels(images[:2])))
  if folder.read_summary() is not None:
    return flax.serialization.from_bytes(variables, (folder / "variables.msgpack").read_bytes())
  folder.makedirs()
  width = jax.eval_shape(lambda: model.apply(variables, _pixels(images[:1]), train=False)).shape[-1]
  head = {"kernel": jax.random.normal(jax.random.key(config.seed + 2), (width, NUM_CLASSES + 1)) / np.sqrt(width),
          "bias": jnp.zeros((NUM_CLASSES + 1,))}
  params, batch_stats = {"model": variables["params"], "head": head}, variables.get("batch_stats", {})
  tx = optax.adamw(optax.cosine_decay_schedule(e.learning_rate, e.steps), weight_decay=e.weight_decay)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, batch_stats, opt_state, x, y):
    def loss_fn(p):
      grid, updates = model.apply({"params": p["model"], "batch_stats": batch_stats}, x, train=True,
                                  mutable=["batch_stats"])
      loss = optax.softmax_cross_entropy_with_integer_labels(cell_logits(grid, p["head"]), y).mean()
      return loss, updates
    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    changes, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, changes), updates["batch_stats"], opt_state, loss

  rng = np.random.default_rng(config.seed)
  start, losses = time.perf_counter(), []
  for i in range(e.steps):
    index = rng.choice(len(images), e.batch_size, replace=False)
    params, batch_stats, opt_state, loss = step(params, batch_stats, opt_state, _pixels(images[index]),
                                                jnp.asarray(targets[index]))
    losses.append(float(loss))
    if (i + 1) % config.log_every_steps == 0 or i + 1 == e.steps:
      folder.append_metrics([{"step": i + 1, "kind": "train", "loss": float(np.mean(losses))}])
      _LOG.info("captioning encoder step %d/%d: loss %.4f", i + 1, e.steps, np.mean(losses))
      losses = []
  variables = {"params": params["model"], "batch_stats": batch_stats}
  grid = grid_features(model, variables, test["images"])  # [N,h,w,D]
  predicted = np.argmax(np.asarray(cell_logits(jnp.asarray(grid), params["head"])), -1)  # [N,4]
  right = predicted == cell_targets(test["labels"], test["cells"])  # [N,4]
  folder.write_bytes("variables.msgpack", flax.serialization.to_bytes(variables))
  folder.write_summary({"steps": e.steps, "train_seconds": time.perf_counter() - start,
                        "test_cell_accuracy": float(right.mean()), "test_scene_accuracy": float(right.all(-1).mean())})
  return variables


def annotations(config: ml_collections.ConfigDict, variables: dict, train_images: np.ndarray,
                *other_images: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], tuple[int, int]]:
  """The decoder's annotations: each scene's encoder grid [h,w,D], standardised per channel with the training
  scenes' mean and standard deviation, flattened to [h*w,D]. Returns (train [N,h*w,D], [other [M,h*w,D], ...],
  (h, w))."""
  grid_model = encoder_model(config)
  train_grid = grid_features(grid_model, variables, train_images)  # [N,h,w,D]
  mean, std = train_grid.mean((0, 1, 2)), train_grid.std((0, 1, 2)) + 1e-6
  flat = lambda g: ((g - mean) / std).reshape(len(g), -1, g.shape[-1]).astype(np.float32)  # [N,h,w,D] -> [N,hw,D]
  others = [flat(grid_features(grid_model, variables, images)) for images in other_images]
  return flat(train_grid), others, tuple(train_grid.shape[1:3])


@functools.partial(jax.jit, static_argnums=0)
def _grid(model, variables: dict, x: jax.Array) -> jax.Array:
  return model.apply(variables, x, train=False)


def grid_features(grid_model, variables: dict, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
  """uint8 [N,S,S,1] -> float32 [N,h,w,D], the frozen encoder's grid (chunks of one shape: one compilation)."""
  size = min(batch_size, len(images))
  out = []
  for s in _batches(len(images), size):
    chunk = images[s]
    padded = np.concatenate([chunk, np.zeros((size - len(chunk),) + chunk.shape[1:], chunk.dtype)])
    out.append(np.asarray(_grid(grid_model, variables, _pixels(padded)))[:len(chunk)])
  return np.concatenate(out)


# --- decoder -----------------------------------------------------------------------------------------------------


def decoder_model(config: ml_collections.ConfigDict, vocab_size: int) -> show_attend_tell.ShowAttendTell:
  return show_attend_tell.ShowAttendTell(vocab_size=vocab_size, **config.decoder.model)


def encode_captions(captions: list[list[str]], vocab: caption_eval.Vocabulary, max_len: int) -> np.ndarray:
  """N scenes' references -> int32 [N,R,max_len + 1] (<bos> words <eos> <pad>...)."""
  return np.stack([np.stack([vocab.encode(c, max_len=max_len + 1) for c in refs]) for refs in captions])


def train_decoder(config: ml_collections.ConfigDict, annotations: np.ndarray, tokens: np.ndarray,
                  vocab_size: int, folder: RunFolder) -> dict:
  """Trains (or reloads) the decoder on (scene, reference) pairs, every pair once an epoch in a shuffled order;
  annotations [N,h*w,D], tokens [N,R,L+1]. Writes params.msgpack, metrics.jsonl and summary.json."""
  d = config.decoder
  model = decoder_model(config, vocab_size)
  params = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(config.seed), jnp.asarray(annotations[:2]), jnp.asarray(tokens[:2, 0, :-1]))["params"]
  if folder.read_summary() is not None:
    return flax.serialization.from_bytes(params, (folder / "params.msgpack").read_bytes())
  folder.makedirs()
  tx = optax.chain(optax.clip_by_global_norm(d.grad_clip_norm),
                   optax.adam(optax.cosine_decay_schedule(d.learning_rate, d.steps)))
  opt_state = tx.init(params)
  dropout_rng = jax.random.key(config.seed + 1)

  @jax.jit
  def step(params, opt_state, a, words, i):
    def loss_fn(p):
      outputs = model.apply({"params": p}, a, words[:, :-1], train=True,
                            rngs={"dropout": jax.random.fold_in(dropout_rng, i)})
      return show_attend_tell.caption_loss(outputs, words[:, 1:], penalty=d.penalty)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    changes, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, changes), opt_state, dict(aux, loss=loss)

  rng = np.random.default_rng(config.seed)
  n, r = tokens.shape[:2]
  order = np.zeros(0, np.int64)
  start, records = time.perf_counter(), []
  for i in range(d.steps):
    if len(order) < d.batch_size:
      order = np.concatenate([order, rng.permutation(n * r)])
    pairs, order = order[:d.batch_size], order[d.batch_size:]
    scenes, refs = pairs // r, pairs % r
    params, opt_state, metrics = step(params, opt_state, jnp.asarray(annotations[scenes]),
                                      jnp.asarray(tokens[scenes, refs]), i)
    records.append({k: float(v) for k, v in metrics.items()})
    if (i + 1) % config.log_every_steps == 0 or i + 1 == d.steps:
      mean = {k: float(np.mean([m[k] for m in records])) for k in records[0]}
      folder.append_metrics([{"step": i + 1, "kind": "train", **mean}])
      _LOG.info("captioning decoder step %d/%d: %s", i + 1, d.steps, mean)
      records = []
  folder.write_bytes("params.msgpack", flax.serialization.to_bytes(params))
  folder.write_summary({"steps": d.steps, "epochs": d.steps * d.batch_size / (n * r),
                        "train_seconds": time.perf_counter() - start})
  return params


def decode(model, params: dict, annotations: np.ndarray, *, beam_size: int, max_len: int,
           batch_size: int = 250) -> tuple[np.ndarray, np.ndarray]:
  """Captions of [N,h*w,D] annotations: (tokens [N,max_len], alphas [N,max_len,h*w]); beam_size 1 is greedy."""
  def one(a):
    state = model.apply({"params": params}, a, method=model.init_state)
    step = lambda s, t: model.apply({"params": params}, s, t, method=model.decode_step)
    kwargs = dict(batch_size=a.shape[0], bos=1, eos=2, max_len=max_len)
    if beam_size == 1:
      out = caption_decoding.greedy(step, state, **kwargs)
    else:
      out = caption_decoding.beam_search(step, state, beam_size=beam_size, **kwargs)
    return out["tokens"], out["alphas"]
  one = jax.jit(one)
  tokens, alphas = zip(*(one(jnp.asarray(annotations[s])) for s in _batches(len(annotations), batch_size)))
  return np.concatenate(tokens), np.concatenate(alphas)


# --- retrieval ---------------------------------------------------------------------------------------------------


def nearest_neighbours(train_features: np.ndarray, test_features: np.ndarray, k: int) -> np.ndarray:
  """Indices [N_test,k] of the k most cosine-similar training scenes, nearest first; features [N,F]."""
  normed = lambda x: x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
  a, b = normed(train_features), normed(test_features)
  out = []
  for s in _batches(len(b), 500):
    similarity = b[s] @ a.T  # [n,N_train]
    top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    out.append(np.take_along_axis(top, np.argsort(-np.take_along_axis(similarity, top, 1), 1), 1))
  return np.concatenate(out)


def retrieval_captions(neighbours: np.ndarray, train_captions: list[list[str]]) -> tuple[list[str], list[str]]:
  """(the nearest scene's first reference, the consensus among the k nearest scenes' references) per test scene."""
  nearest = [train_captions[row[0]][0] for row in neighbours]
  consensus = []
  for row in neighbours:
    pool = [c for i in row for c in train_captions[i]]
    consensus.append(pool[caption_eval.consensus(pool)])
  return nearest, consensus


# --- report ------------------------------------------------------------------------------------------------------


def noun_attention(tokens: np.ndarray, alphas: np.ndarray, vocab: caption_eval.Vocabulary, labels: list[np.ndarray],
                   cells: list[np.ndarray], grid_shape: tuple[int, int]) -> dict[str, float]:
  """Does "bag" look at the bag? For every generated word naming an item class that the scene holds, the attention
  weight on the quarters of the grid whose cell holds an item of that class. Returns {"weight": its mean,
  "chance": the mean share of the grid those quarters cover (what uniform attention would give), "words": how many
  words were counted}. tokens [N,L], alphas [N,L,h*w], labels and cells: N arrays (cell = row * 2 + column)."""
  h, w = grid_shape
  rows, cols = np.divmod(np.arange(h * w), w)
  quarter = (rows >= h // 2) * 2 + (cols >= w // 2)  # [h*w]: the layout cell under each grid position
  word_class = {vocab.index[noun.split()[-1]]: k for k, forms in enumerate(fmnist_captions.NOUNS) for noun in forms
                if noun.split()[-1] in vocab.index}
  weights, chances = [], []
  for i in range(len(tokens)):
    for t, token in enumerate(tokens[i]):
      k = word_class.get(int(token))
      if k is None or k not in labels[i]:
        continue
      held = np.isin(quarter, cells[i][labels[i] == k])  # [h*w]
      weights.append(float(alphas[i, t][held].sum()))
      chances.append(float(held.mean()))
  return {"weight": float(np.mean(weights)) if weights else math.nan,
          "chance": float(np.mean(chances)) if chances else math.nan, "words": len(weights)}



def score_rows(method: str, candidates: list[str], references: list[list[str]], held_out: np.ndarray) -> list[dict]:
  """One row per split of SPLITS (a split with no scene: NaN scores)."""
  rows = []
  for split, keep in (("test", np.ones_like(held_out)), ("held_out", held_out), ("seen", ~held_out)):
    ids = np.flatnonzero(keep)
    scores = (caption_eval.score({i: references[i] for i in ids}, {i: candidates[i] for i in ids}) if len(ids)
              else dict.fromkeys(caption_eval.METRICS, math.nan))
    rows.append({"method": method, "split": split, "scenes": len(ids), **scores})
  return rows


def markdown_table(rows: list[dict]) -> str:
  lines = ["| method | split | scenes | BLEU-1 | BLEU-2 | BLEU-3 | BLEU-4 | CIDEr |", "|---|---|---:|" + "---:|" * 5]
  for r in rows:
    values = [r[m] for m in caption_eval.METRICS]
    lines.append(f"| {r['method']} | {r['split']} | {r['scenes']:,} | "
                 + " | ".join("" if math.isnan(v) else f"{v:.3f}" for v in values) + " |")
  return "\n".join(lines)


def summary_table(config: ml_collections.ConfigDict, rows: list[dict]) -> str:
  """The table as the command line prints it."""
  del config
  return markdown_table(rows)


def attention_figure(image: np.ndarray, words: list[str], alphas: np.ndarray, grid_shape: tuple[int, int],
                     boxes: np.ndarray, labels: np.ndarray, title: str, axes_row) -> None:
  """One scene's row of panels: the image with its items' boxes, then each word's attention upsampled over it."""
  size = image.shape[0]
  axes_row[0].imshow(image[..., 0], cmap="gray")
  for box, label in zip(boxes, labels):
    y0, x0, y1, x1 = box * size
    axes_row[0].add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color="lime"))
    axes_row[0].text(x0, y0, fml.CLASS_NAMES[label], color="lime", fontsize=6, va="bottom")
  axes_row[0].set_title(title, fontsize=7)
  for ax, word, alpha in zip(axes_row[1:], words, alphas):
    ax.imshow(image[..., 0], cmap="gray")
    ax.imshow(alpha.reshape(grid_shape), cmap="jet", alpha=0.5, interpolation="bilinear",
              extent=(-0.5, size - 0.5, size - 0.5, -0.5))  # the h x w grid stretched over the S x S scene
    ax.set_title(word, fontsize=8)
  for ax in axes_row:
    ax.axis("off")


def draw_attention(test: dict, tokens: np.ndarray, alphas: np.ndarray, vocab: caption_eval.Vocabulary,
                   grid_shape: tuple[int, int], indices: list[int]) -> bytes:
  """PNG bytes: one row per scene in `indices`, its greedy caption's words with their attention maps."""
  captions = [vocab.decode(tokens[i]).split() + ["<eos>"] for i in indices]
  columns = 1 + max(len(c) for c in captions)
  fig, axes = plt.subplots(len(indices), columns, figsize=(1.3 * columns, 1.5 * len(indices)), squeeze=False)
  for row, (i, words) in enumerate(zip(indices, captions)):
    attention_figure(test["images"][i], words, alphas[i], grid_shape, test["bbox"][i], test["labels"][i],
                     f"test {i}{' (held out)' if test['held_out'][i] else ''}", axes[row])
    for ax in axes[row, 1 + len(words):]:
      ax.axis("off")
  fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.9, wspace=0.05, hspace=0.3)
  out = io.BytesIO()
  fig.savefig(out, format="png", dpi=110)
  plt.close(fig)
  return out.getvalue()


def write_report(folder: RunFolder, rows: list[dict], *, examples: str, figure: bytes, preamble: str,
                 command: str = "", notes: str = "") -> None:
  folder.write_csv(REPORT[0], rows, COLUMNS)
  folder.write_bytes(REPORT[2], figure)
  parts = ["# Captioning with attention on Fashion-MNIST captions", preamble, markdown_table(rows),
           "## Examples (test scenes)", examples, "Per-word attention of the greedy captions: attention.png."]
  if command:
    parts.append(f"Command: `{command}`")
  if notes:
    parts.append(notes)
  folder.write_text(REPORT[1], "\n\n".join(parts) + "\n")


def _examples(indices, test, candidates: dict[str, list[str]]) -> str:
  lines = []
  for i in indices:
    lines.append(f"- test {i}{' (held out)' if test['held_out'][i] else ''}: reference \"{test['captions'][i][0]}\"; "
                 + "; ".join(f"{m} \"{c[i]}\"" for m, c in candidates.items()))
  return "\n".join(lines)


def run(config: ml_collections.ConfigDict, workdir: str, *, command: str = "", notes: str = "") -> list[dict]:
  """Runs (or resumes) the study; returns the table's rows (method x split)."""
  folder = RunFolder(workdir)
  folder.makedirs()
  with run_lock.hold(folder / run_lock.LOCK):
    finished = folder.read_summary()
    if finished is not None:
      return finished["rows"]
    if jax.process_index() == 0:
      folder.write_config(config.to_dict())
    start = time.perf_counter()
    times = {}
    data = config.dataset
    train = load_split(data.name, data.data_dir, data.train_split)
    test = load_split(data.name, data.data_dir, data.test_split)
    vocab = caption_eval.Vocabulary.build(c for refs in train["captions"] for c in refs)
    max_len = config.decode.max_len
    _LOG.info("captioning: %d train / %d test scenes (%d held out), %d words", len(train["images"]),
              len(test["images"]), int(test["held_out"].sum()), len(vocab))

    t = time.perf_counter()
    variables = train_encoder(config, train, test, folder.child("encoder"))
    train_a, (test_a,), grid_shape = annotations(config, variables, train["images"], test["images"])
    times["encoder_s"] = time.perf_counter() - t
    _LOG.info("captioning: encoder and features in %.0f s, grid %s x %d", times["encoder_s"], grid_shape,
              train_a.shape[-1])

    t = time.perf_counter()
    tokens = encode_captions(train["captions"], vocab, max_len)
    params = train_decoder(config, train_a, tokens, len(vocab), folder.child("decoder"))
    times["decoder_s"] = time.perf_counter() - t

    t = time.perf_counter()
    model = decoder_model(config, len(vocab))
    greedy_tokens, greedy_alphas = decode(model, params, test_a, beam_size=1, max_len=max_len)
    beam_tokens, _ = decode(model, params, test_a, beam_size=config.decode.beam_size, max_len=max_len)
    candidates = {"attention_greedy": [vocab.decode(x) for x in greedy_tokens],
                  "attention_beam": [vocab.decode(x) for x in beam_tokens]}
    times["decode_s"] = time.perf_counter() - t
    _LOG.info("captioning: test scenes captioned (greedy, beam %d) in %.0f s", config.decode.beam_size,
              times["decode_s"])

    t = time.perf_counter()
    neighbours = nearest_neighbours(train_a.reshape(len(train_a), -1), test_a.reshape(len(test_a), -1),
                                    config.retrieval.k)
    candidates["retrieval_nearest"], candidates["retrieval_consensus"] = retrieval_captions(
        neighbours, train["captions"])
    times["retrieval_s"] = time.perf_counter() - t
    _LOG.info("captioning: retrieval (k %d) in %.0f s", config.retrieval.k, times["retrieval_s"])

    rows = [row for method in METHODS
            for row in score_rows(method, candidates[method], test["captions"], test["held_out"])]
    held = [int(i) for i in np.flatnonzero(test["held_out"])]
    seen = [int(i) for i in np.flatnonzero(~test["held_out"])]
    shown = (seen[:config.report.examples // 2] + held[:config.report.examples - config.report.examples // 2])
    drawn = seen[:config.report.attention_scenes // 2] + held[:config.report.attention_scenes
                                                                - config.report.attention_scenes // 2]
    figure = draw_attention(test, greedy_tokens, greedy_alphas, vocab, grid_shape, drawn)
    looks = noun_attention(greedy_tokens, greedy_alphas, vocab, test["labels"], test["cells"], grid_shape)
    times["total_s"] = time.perf_counter() - start
    encoder_summary = folder.child("encoder").read_summary()
    preamble = (
        f"`{data.name}`: {len(train['images']):,} training scenes ({len(train['images']) * 5:,} captions), "
        f"{len(test['images']):,} test scenes of which {len(held):,} hold a held-out fact; vocabulary of "
        f"{len(vocab)} tokens from the training captions. Encoder: `{config.encoder.model_name}` "
        f"{dict(config.encoder.model)} trained {config.encoder.steps} steps to name the item in each cell "
        f"(test accuracy per cell {encoder_summary['test_cell_accuracy']:.3f}, per scene "
        f"{encoder_summary['test_scene_accuracy']:.3f}), then frozen; grid {tuple(grid_shape)} x "
        f"{train_a.shape[-1]}. Decoder: {dict(config.decoder.model)}, {config.decoder.steps} steps of "
        f"{config.decoder.batch_size} pairs, lambda {config.decoder.penalty}. Beam size {config.decode.beam_size}; "
        f"retrieval k {config.retrieval.k}. BLEU and CIDEr(-D) from pycocoevalcap against the 5 references "
        f"(lower-cased, split on non-letters; no PTB tokenizer). Does \"bag\" look at the bag? Over the "
        f"{looks['words']:,} words of the greedy test captions that name an item class the scene holds, "
        f"{looks['weight']:.1%} of the word's attention falls on the quarters of the grid holding such an item "
        f"({looks['chance']:.1%} with uniform attention). Times (s): "
        + ", ".join(f"{k[:-2]} {v:.0f}" for k, v in times.items()) + ".")
    if jax.process_index() == 0:
      write_report(folder, rows, examples=_examples(shown, test, candidates), figure=figure, preamble=preamble,
                   command=command, notes=notes)
      folder.write_summary({"rows": rows, "times": times, "vocab_size": len(vocab), "max_len": max_len,
                            "noun_attention": looks,
                            "grid": [*grid_shape, train_a.shape[-1]]})
    return rows

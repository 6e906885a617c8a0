"""VQA with attention on easy-VQA: stacked attention networks against the baselines that expose the language prior.

    rows = run(config, workdir)   # python -m vit_video.study --config=experiments/vqa.py:cpu --workdir=workdirs/vqa

Its config (experiments/vqa.py) names the dataset (`easy_vqa` or `easy_vqa/tiny`, built into `data_dir` first if it
is not there: nothing is downloaded, the data comes from the installed easy-vqa package), one training recipe
(batch size, steps, Adam with warm-up and cosine decay) and the `members` in table order, each a
`vit_video.models.vqa.VQA` (kind, question encoder, widths, image model). Every member is trained with the same
recipe and budget, from the same seed, on one example per question (the image decoded once per image id and
indexed), the question encoded by the training split's vocabulary (`easy_vqa.build_vocabulary`). Then the whole test
split is scored: top-1 accuracy overall and per question type (shape, color, yes_no; `accuracy_by_type`).

  workdir/<member>/    config.json, metrics.jsonl (train loss and accuracy every `log_every_steps`), params.msgpack
                       (the final parameters, flax serialization) and summary.json (written last: a member with one
                       is finished and skipped on a re-run; one without is trained again from the start)
  workdir/vocabulary.json           the question vocabulary (word of each id)
  workdir/results.csv, results.md   one row per member, rewritten after each
  workdir/attention.png             the stacked attention of `figure.member` on a few test questions, per layer

The workdir is held with `run_lock.hold` (workdir/lock.json: one study per workdir).
"""
import csv
import dataclasses
import functools
import io
import logging
import math
import time

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tensorflow_datasets as tfds
from matplotlib.figure import Figure

from vit_video.data import builders, easy_vqa, prepare
from vit_video.models import vqa as vqa_models
from vit_video.train import run_lock
from vit_video.train.run_folder import RunFolder

_LOG = logging.getLogger(__name__)
REPORT = ("results.csv", "results.md", "attention.png")  # in the study's folder
PARAMS = "params.msgpack"  # in a member's folder
VOCABULARY = "vocabulary.json"  # in the study's folder: the question vocabulary, ids in order
COLUMNS = ("model", "kind", "question_encoder", "params", "steps", "train_seconds", "train_accuracy",
           "test_accuracy") + tuple(f"test_{t}_accuracy" for t in easy_vqa.QUESTION_TYPES)


@dataclasses.dataclass(frozen=True)
class Split:
  """One split, one row per question: images [I,H,W,C] uint8 (each image once), image_index [N] (row of images),
  question ids [N,L] int32 and lengths [N], answers [N] and types [N] (indices of ANSWERS and QUESTION_TYPES)."""
  texts: tuple[str, ...]
  images: np.ndarray
  image_index: np.ndarray
  question: np.ndarray
  lengths: np.ndarray
  answers: np.ndarray
  types: np.ndarray

  def __len__(self) -> int:
    return len(self.answers)

  def batch(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image float32 [B,H,W,C] in [0, 1], question [B,L], lengths [B]) of the questions `rows`."""
    return self.images[self.image_index[rows]].astype(np.float32) / 255.0, self.question[rows], self.lengths[rows]


def read_split(builder: tfds.core.DatasetBuilder, split: str) -> dict:
  """A prepared easy_vqa split as arrays: {texts, images [I,H,W,C] (first occurrence of each image id, in order),
  image_index [N], answers [N], types [N]}."""
  texts, image_index, answers, types, images, rows_of = [], [], [], [], [], {}
  for e in builder.as_dataset(split=split, shuffle_files=False, decoders={"image": tfds.decode.SkipDecoding()}):
    image_id = int(e["image_id"])
    if image_id not in rows_of:
      rows_of[image_id] = len(images)
      images.append(tf_decode_png(e["image"]))
    texts.append(e["question"].numpy().decode())
    image_index.append(rows_of[image_id])
    answers.append(int(e["answer"]))
    types.append(int(e["question_type"]))
  return dict(texts=tuple(texts), images=np.stack(images), image_index=np.array(image_index, np.int64),
              answers=np.array(answers, np.int32), types=np.array(types, np.int32))


def tf_decode_png(encoded) -> np.ndarray:
  import tensorflow as tf  # noqa: PLC0415  (tfds has loaded it already)
  return tf.io.decode_png(encoded, channels=3).numpy()


def load_data(config: ml_collections.ConfigDict) -> tuple[Split, Split, tuple[str, ...]]:
  """(train, test, vocabulary): the dataset built if absent, the questions encoded by train's vocabulary."""
  if builders.base_name(config.dataset) != "easy_vqa":
    raise ValueError(f"the VQA study reads easy_vqa (or a config of it, e.g. easy_vqa/tiny), not {config.dataset!r}")
  builder = prepare.prepare(config.dataset, config.data_dir)  # offline: the data is in the easy-vqa package
  raw = {split: read_split(builder, split) for split in ("train", "test")}
  vocabulary = easy_vqa.build_vocabulary(raw["train"]["texts"])
  splits = []
  for split in ("train", "test"):
    question, lengths = easy_vqa.encode_questions(raw[split]["texts"], vocabulary, config.max_length)
    splits.append(Split(question=question, lengths=lengths, **raw[split]))
  return splits[0], splits[1], vocabulary


def accuracy_by_type(predictions: np.ndarray, answers: np.ndarray, types: np.ndarray,
                     type_names: tuple[str, ...] = easy_vqa.QUESTION_TYPES) -> dict[str, float]:
  """Top-1 accuracy overall ("all") and per question type: predictions, answers, types [N] int -> {name: accuracy};
  NaN for a type with no question."""
  predictions, answers, types = map(np.asarray, (predictions, answers, types))
  if not predictions.shape == answers.shape == types.shape or predictions.ndim != 1:
    raise ValueError(f"predictions, answers and types must be [N] alike, got shapes {predictions.shape}, "
                     f"{answers.shape}, {types.shape}")
  correct = predictions == answers
  result = {"all": float(correct.mean()) if len(correct) else math.nan}
  for t, name in enumerate(type_names):
    result[name] = float(correct[types == t].mean()) if np.any(types == t) else math.nan
  return result


def make_model(config: ml_collections.ConfigDict, name: str, vocab_size: int) -> vqa_models.VQA:
  """Member `name` of the config as a VQA module (the model attributes of `config.model`, then the member's)."""
  if name not in config.members:
    raise ValueError(f"unknown member {name!r}; the config has {', '.join(config.members)}")
  attributes = {**config.model.to_dict(), **config.members[name].to_dict()}
  kind = attributes.pop("kind")
  return vqa_models.MODELS[kind](num_answers=len(easy_vqa.ANSWERS), vocab_size=vocab_size, **attributes)


def _schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  warmup = min(config.warmup_steps, max(config.steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, warmup, max(config.steps, warmup + 1))


def train_member(config: ml_collections.ConfigDict, name: str, train: Split, test: Split, vocab_size: int,
                 folder: RunFolder) -> dict:
  """Trains member `name` for `config.steps` steps, scores the test split, writes its files; returns the summary."""
  model = make_model(config, name, vocab_size)
  folder.makedirs()
  folder.write_config(config.members[name].to_dict() | {"recipe": {k: config[k] for k in (
      "dataset", "seed", "batch_size", "steps", "learning_rate", "warmup_steps", "max_length")}})
  (folder / "metrics.jsonl").unlink(missing_ok=True)  # an unfinished member starts again
  init_rng, dropout_rng = jax.random.split(jax.random.key(config.seed))
  variables = jax.jit(functools.partial(model.init, train=False))(init_rng, *train.batch(np.arange(2)))
  params, state = variables["params"], {k: v for k, v in variables.items() if k != "params"}
  tx = optax.adam(_schedule(config))
  opt_state = tx.init(params)

  @jax.jit
  def train_step(params, state, opt_state, batch, answers, step):
    def loss_fn(p):
      logits, new_state = model.apply({"params": p, **state}, *batch, train=True, mutable=list(state),
                                      rngs={"dropout": jax.random.fold_in(dropout_rng, step)})
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, answers).mean()
      return loss, (new_state, jnp.mean(jnp.argmax(logits, -1) == answers))
    (loss, (new_state, accuracy)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), dict(new_state), opt_state, loss, accuracy

  rng = np.random.default_rng(config.seed)
  order, position, logged = rng.permutation(len(train)), 0, []
  start = time.perf_counter()
  for step in range(config.steps):
    if position + config.batch_size > len(order):  # a new epoch: a fresh permutation, the remainder dropped
      order, position = rng.permutation(len(train)), 0
    rows = order[position:position + config.batch_size]
    position += config.batch_size
    params, state, opt_state, loss, accuracy = train_step(params, state, opt_state, train.batch(rows),
                                                          train.answers[rows], step)
    logged.append((float(loss), float(accuracy)))
    if (step + 1) % config.log_every_steps == 0 or step + 1 == config.steps:
      losses, accuracies = zip(*logged)
      folder.append_metrics([{"step": step + 1, "kind": "train", "loss": float(np.mean(losses)),
                              "accuracy": float(np.mean(accuracies)), "seconds": time.perf_counter() - start}])
      logged = []
  train_seconds = time.perf_counter() - start
  variables = {"params": params, **state}
  folder.write_bytes(PARAMS, flax.serialization.to_bytes(variables))
  scores = {f"test_{k}": v for k, v in evaluate(model, variables, test, config.eval_batch_size).items()}
  summary = {"model": name, "params": int(sum(x.size for x in jax.tree.leaves(params))), "steps": config.steps,
             "train_seconds": train_seconds, "train_accuracy": folder.read_metrics()[-1]["accuracy"], **scores}
  folder.write_summary(summary)
  return summary


def predict(model: vqa_models.VQA, variables: dict, data: Split, batch_size: int) -> np.ndarray:
  """The model's answer (index of ANSWERS) to every question of `data`: [N] int."""
  apply = jax.jit(lambda v, *batch: jnp.argmax(model.apply(v, *batch, train=False), -1))
  return np.concatenate([np.asarray(apply(variables, *data.batch(np.arange(i, min(i + batch_size, len(data))))))
                         for i in range(0, len(data), batch_size)])


def evaluate(model: vqa_models.VQA, variables: dict, data: Split, batch_size: int) -> dict[str, float]:
  """{"accuracy": overall, "<type>_accuracy": per question type} on `data`."""
  scores = accuracy_by_type(predict(model, variables, data, batch_size), data.answers, data.types)
  return {("accuracy" if k == "all" else f"{k}_accuracy"): v for k, v in scores.items()}


def attention_maps(model: vqa_models.VQA, variables: dict, image: np.ndarray, question: np.ndarray,
                   lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(answers [B] int, attention [K,B,h,w]) of a SAN: each stacked layer's p_I on the square region grid."""
  logits, intermediates = model.apply(variables, image, question, lengths, train=False, mutable=["intermediates"])
  layers = [intermediates["intermediates"][f"attention_{k}"][f"attention_{k}"][0]
            for k in range(model.attention_layers)]  # K x [B,N]
  p = np.stack([np.asarray(x) for x in layers])  # [K,B,N]
  side = math.isqrt(p.shape[-1])
  if side * side != p.shape[-1]:
    raise ValueError(f"attention over {p.shape[-1]} regions is not a square grid")
  return np.asarray(jnp.argmax(logits, -1)), p.reshape(*p.shape[:2], side, side)  # [K,B,N] -> [K,B,h,w]


def attention_figure(images: np.ndarray, texts: list[str], answers: list[str], truths: list[str],
                     attention: np.ndarray) -> bytes:
  """PNG: one row per question: the image, then each layer's attention [K,B,h,w] over it (nearest upsampling)."""
  k, b = attention.shape[:2]
  fig = Figure(figsize=(2.2 * (k + 1), 2.3 * b))  # no pyplot: the caller's matplotlib backend is left alone
  axes = fig.subplots(b, k + 1, squeeze=False)
  for i in range(b):
    axes[i, 0].imshow(images[i])
    axes[i, 0].set_title(f"{texts[i]}\n{answers[i]} (truth: {truths[i]})", fontsize=7)
    for j in range(k):
      axes[i, j + 1].imshow(images[i])
      axes[i, j + 1].imshow(attention[j, i], cmap="inferno", alpha=0.6, interpolation="nearest",
                            extent=(-0.5, images.shape[2] - 0.5, images.shape[1] - 0.5, -0.5))
      axes[i, j + 1].set_title(f"layer {j + 1}: max p {attention[j, i].max():.2f}", fontsize=7)
  for ax in axes.flat:
    ax.set_axis_off()
  fig.tight_layout()
  out = io.BytesIO()
  fig.savefig(out, format="png", dpi=100)
  return out.getvalue()


def load_variables(model: vqa_models.VQA, folder: RunFolder, inputs: tuple[np.ndarray, ...]) -> dict:
  """A finished member's params.msgpack, restored onto the structure `model.init` gives on example `inputs` (image,
  question, lengths)."""
  template = jax.eval_shape(lambda: model.init(jax.random.key(0), *inputs, train=False))
  return flax.serialization.from_bytes(template, (folder / PARAMS).read_bytes())


def figure_png(config: ml_collections.ConfigDict, folder: RunFolder, test: Split, vocab_size: int) -> bytes:
  """attention.png of `config.figure.member` on the first test question of each type, then the next ones."""
  member = config.figure.member
  model = make_model(config, member, vocab_size)
  variables = load_variables(model, folder.child(member), test.batch(np.arange(2)))
  firsts = [int(np.argmax(test.types == t)) for t in range(len(easy_vqa.QUESTION_TYPES)) if np.any(test.types == t)]
  rows = np.array((firsts + [i for i in range(len(test)) if i not in firsts])[:config.figure.examples])
  image, question, lengths = test.batch(rows)
  predicted, attention = attention_maps(model, variables, image, question, lengths)
  return attention_figure(image, [test.texts[r] for r in rows], [easy_vqa.ANSWERS[a] for a in predicted],
                          [easy_vqa.ANSWERS[a] for a in test.answers[rows]], attention)


def _percent(x: float) -> str:
  return "" if math.isnan(x) else f"{100 * x:.1f}"


def markdown_table(rows: list[dict]) -> str:
  header = ("model", "question encoder", "params", "train s", "train acc", "test acc") + tuple(
      f"test {t}" for t in easy_vqa.QUESTION_TYPES)
  lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
  for r in rows:
    lines.append("| " + " | ".join(
        [r["model"], r["question_encoder"], f"{r['params']:,}", f"{r['train_seconds']:.0f}",
         _percent(r["train_accuracy"]), _percent(r["test_accuracy"])]
        + [_percent(r[f"test_{t}_accuracy"]) for t in easy_vqa.QUESTION_TYPES]) + " |")
  return "\n".join(lines)


def summary_table(config: ml_collections.ConfigDict, rows: list[dict]) -> str:
  """The table as the command line prints it."""
  del config
  return markdown_table(rows)


def write_report(folder: RunFolder, config: ml_collections.ConfigDict, rows: list[dict], test: Split, *,
                 command: str = "", notes: str = "") -> None:
  """results.csv (COLUMNS) and results.md (what was run, the table, the command, the notes), each atomic."""
  text = io.StringIO()
  writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
  writer.writeheader()
  writer.writerows({k: r[k] for k in COLUMNS} for r in rows)
  folder.write_text(REPORT[0], text.getvalue())
  counts = ", ".join(f"{t} {int(np.sum(test.types == i)):,}" for i, t in enumerate(easy_vqa.QUESTION_TYPES))
  parts = [
      f"# VQA with attention on {config.dataset}",
      f"Every model trained {config.steps:,} steps of {config.batch_size} questions (Adam, peak learning rate "
      f"{config.learning_rate:g}, {config.warmup_steps} warm-up steps, cosine decay; seed {config.seed}); top-1 "
      f"accuracy (%) on all {len(test):,} test questions ({counts}); train acc: the last "
      f"{config.log_every_steps} steps' batches. train s: wall-clock training seconds on this machine.",
      markdown_table(rows),
      f"Stacked attention of `{config.figure.member}` on test questions: attention.png."]
  if command:
    parts.append(f"Command: `{command}`")
  if notes:
    parts.append(notes)
  folder.write_text(REPORT[1], "\n\n".join(parts) + "\n")


def run(config: ml_collections.ConfigDict, workdir: str, *, command: str = "", notes: str = "") -> list[dict]:
  """Trains every member not yet finished, rewriting the report after each; returns the rows in order."""
  unknown = [name for name in config.models if name not in config.members]
  if not config.models or unknown:
    raise ValueError(f"the study's models {tuple(config.models)} must be non-empty keys of its members "
                     f"({', '.join(config.members)}); not found: {unknown}")
  if config.figure.member not in config.models or config.members[config.figure.member].kind != "san":
    raise ValueError(f"figure.member {config.figure.member!r} must be a 'san' member of models {config.models}")
  folder = RunFolder(workdir)
  folder.makedirs()
  with run_lock.hold(folder.path / run_lock.LOCK):
    train, test, vocabulary = load_data(config)
    folder.write_json(VOCABULARY, list(vocabulary))
    rows = []
    for index, name in enumerate(config.models):
      member = folder.child(name)
      summary = member.read_summary()
      if summary is None:
        _LOG.info("vqa [%d/%d] %s: training %d steps", index + 1, len(config.models), name, config.steps)
        summary = train_member(config, name, train, test, len(vocabulary), member)
      else:
        _LOG.info("vqa [%d/%d] %s: finished before, skipped", index + 1, len(config.models), name)
      m = config.members[name]
      encoder = "-" if m.kind == "image_only" else m.question_encoder  # image_only reads no question
      rows.append({**summary, "kind": m.kind, "question_encoder": encoder})
      _LOG.info("vqa [%d/%d] %s: test accuracy %s%%", index + 1, len(config.models), name,
                _percent(summary["test_accuracy"]))
      write_report(folder, config, rows, test, command=command, notes=notes)
    folder.write_bytes(REPORT[2], figure_png(config, folder, test, len(vocabulary)))
  return rows

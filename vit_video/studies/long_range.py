"""The RNN's long-range problem, measured: marked-token recall (vit_video/data/long_range.py) against distance for
an LSTM, a GRU and a small Transformer of matched parameter count (vit_video/models/sequence.py), trained alike.

    rows = run(config, workdir)   # python -m vit_video.study --config=experiments/long_range.py:cpu ...

Design. Every model trains on the same batches (the same seeds) with the same optimizer, steps and schedule: step
i reads a batch of length N_i = `train_lengths[i % len]` (cycling from short to long) whose examples each draw a
distance from the `distances` that fit (d <= N_i), with `tokens_per_batch / N_i` examples (at most
`max_batch_size`), so long sequences cost about as much per step as short ones do and every distance is trained.
The mark's position varies within a batch, so no model can read the answer off a fixed position. Then each model
is scored on `examples_per_distance` test sequences of length `eval_length` per distance (only the distance
varies), and the gradient norm ||d loss / d x_t|| with respect to each input embedding x_t (through the models'
`perturb("embeddings")`) is measured at initialisation and after training, against the distance N - t from the
end, averaged over `grad_examples` test sequences (each example's own summed loss).

Member runs are workdir/<model>/ with config.json, metrics.jsonl (training loss and accuracy), gradient_norms.json
and summary.json; a member with a summary of the same config is skipped on a re-run, a half-finished one starts
again (they take minutes), a folder of another config raises. After every member the report is rewritten
atomically: results.csv, results.md (the accuracy table, where each model breaks down, the command and versions),
accuracy.png (accuracy against distance) and gradient_norms.png (gradient norms against distance, log y).

"Breaks down at": the first distance of the grid at which test accuracy falls below 50%; "at chance from": the
first distance from which it stays within 3 binomial standard errors of chance (1/K).

Trained on one distance only (`single`): the mix lets a model learn to keep the answer on short distances, where
its gradient has not vanished, and then keep it for longer. Each `single.models` x `single.distances` member
instead trains `single.steps` steps on sequences of exactly d tokens (the marked answer first, so d - 1 steps to
carry it) and is scored there: whether the long dependency can be learnt at all from its own, vanishing, gradient.
These runs are workdir/<model>_only_d<d>/, their accuracies the report's second table (single_distance.csv) and
the dashed lines of accuracy.png.
"""
import functools
import io
import json
import logging
import math
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vit_video.data import long_range as task
from vit_video.models import sequence
from vit_video.train import run_lock
from vit_video.train.run_folder import RunFolder

_LOG = logging.getLogger(__name__)
REPORT = ("results.csv", "results.md", "accuracy.png", "gradient_norms.png", "single_distance.csv")  # in workdir
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
BREAKDOWN_ACCURACY = 0.5
SINGLE_COLUMNS = ("model", "distance", "params", "steps", "train_seconds", "eval_seconds", "accuracy")


def single_distance_config(config: ml_collections.ConfigDict, distance: int) -> ml_collections.ConfigDict:
  """The config of a member trained and scored on `distance` alone: sequences of exactly that many tokens,
  `single.steps` steps."""
  c = config.copy_and_resolve_references()
  c.task.distances = (distance,)
  c.task.eval_length = distance
  c.train.train_lengths = (distance,)
  c.train.steps = config.single.steps
  return c


def build_model(config: ml_collections.ConfigDict, name: str):
  """The member's model: sequence.VARIANTS[variant] with the member's attribute overrides, 2K input ids."""
  member = config.members[name]
  if member.variant not in sequence.VARIANTS:
    raise ValueError(f"member {name!r}: variant {member.variant!r} is not one of {sorted(sequence.VARIANTS)}")
  k = config.task.vocab_size
  return sequence.VARIANTS[member.variant](vocab_size=task.input_ids(k), num_classes=k, dtype=DTYPES[config.dtype],
                                           **member.model.to_dict())


def batch_size_for(config: ml_collections.ConfigDict, length: int) -> int:
  """Examples in a training batch of `length` tokens: tokens_per_batch // length, within [1, max_batch_size]."""
  return int(min(config.train.max_batch_size, max(1, config.train.tokens_per_batch // length)))


def train_batch(config: ml_collections.ConfigDict, step: int) -> dict[str, np.ndarray]:
  """Step `step`'s training batch (the same for every member)."""
  length = int(config.train.train_lengths[step % len(config.train.train_lengths)])
  fits = tuple(d for d in config.task.distances if d <= length)
  return task.recall_batch(seed=config.seed, split="train", index=step, batch_size=batch_size_for(config, length),
                           length=length, distances=fits, vocab_size=config.task.vocab_size)


def check_config(config: ml_collections.ConfigDict) -> None:
  """ValueError naming the problem unless the models are members and every length fits the distances."""
  unknown = [m for m in (*config.models, *config.single.models) if m not in config.members]
  if not config.models or unknown:
    raise ValueError(f"models {tuple(config.models)} must be non-empty keys of members ({', '.join(config.members)})"
                     f"; not found: {unknown}")
  d = sorted(config.task.distances)
  if not d or d[0] < 1 or d[-1] > config.task.eval_length:
    raise ValueError(f"distances {d} must lie in [1, eval_length = {config.task.eval_length}]")
  if config.single.models and (not config.single.distances or min(config.single.distances) < 1):
    raise ValueError(f"single.distances {tuple(config.single.distances)} must be non-empty and >= 1")
  short = [n for n in config.train.train_lengths if n < d[0]]
  if not config.train.train_lengths or short:
    raise ValueError(f"train_lengths {tuple(config.train.train_lengths)} must be non-empty and hold the shortest "
                     f"distance {d[0]}; too short: {short}")


def optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  t = config.train
  schedule = optax.warmup_cosine_decay_schedule(0.0, t.learning_rate, t.warmup_steps, max(t.steps, t.warmup_steps + 1))
  return optax.chain(optax.clip_by_global_norm(t.grad_clip_norm), optax.adamw(schedule, weight_decay=t.weight_decay))


def _loss(model, params, tokens, labels, perturbations=None):
  variables = {"params": params} if perturbations is None else {"params": params, "perturbations": perturbations}
  logits = model.apply(variables, tokens, train=True)  # [B,K]
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)  # [B]
  return losses, logits


@functools.partial(jax.jit, static_argnums=(0, 1))
def train_step(model, tx, params, opt_state, tokens, labels):
  """One AdamW step on the mean cross-entropy: (params, opt_state, loss, accuracy)."""
  def loss_fn(p):
    losses, logits = _loss(model, p, tokens, labels)
    return losses.mean(), logits
  (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss, (logits.argmax(-1) == labels).mean()


@functools.partial(jax.jit, static_argnums=0)
def predict(model, params, tokens):
  """[B,N] -> [B] predicted class."""
  return model.apply({"params": params}, tokens, train=False).argmax(-1)


@functools.partial(jax.jit, static_argnums=0)
def embedding_gradient_norms(model, params, tokens, labels):
  """||d loss_b / d x_{b,t}|| [B,N] for each example's own cross-entropy loss_b and input embedding x_{b,t}."""
  shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), tokens)
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), shapes["perturbations"])
  grads = jax.grad(lambda z: _loss(model, params, tokens, labels, z)[0].sum())(zeros)
  return jnp.linalg.norm(grads["embeddings"].astype(jnp.float32), axis=-1)  # [B,N,E] -> [B,N]


def gradient_norms_by_distance(model, params, config: ml_collections.ConfigDict) -> list[float]:
  """Mean over `grad_examples` test sequences of ||d loss / d x_t||, listed by distance from the end 1..N."""
  n = config.task.eval_length
  b = task.recall_batch(seed=config.seed, split="test", index=0, batch_size=config.eval.grad_examples, length=n,
                        distances=config.task.distances, vocab_size=config.task.vocab_size)
  norms = np.asarray(embedding_gradient_norms(model, params, b["tokens"], b["label"])).mean(0)  # [N], t = 0..N-1
  return [float(x) for x in norms[::-1]]  # index d - 1 holds position t = N - d


def accuracy_by_distance(model, params, config: ml_collections.ConfigDict) -> dict[int, float]:
  """Test accuracy per distance, `examples_per_distance` sequences of length eval_length each."""
  e = config.eval
  result = {}
  for d in config.task.distances:
    correct = 0
    for j in range(math.ceil(e.examples_per_distance / e.batch_size)):
      size = min(e.batch_size, e.examples_per_distance - j * e.batch_size)
      b = task.recall_batch(seed=config.seed, split="test", index=1 + d * 10_000 + j, batch_size=size,
                            length=config.task.eval_length, distances=(d,), vocab_size=config.task.vocab_size)
      correct += int((np.asarray(predict(model, params, b["tokens"])) == b["label"]).sum())
    result[int(d)] = correct / e.examples_per_distance
  return result


def member_config(config: ml_collections.ConfigDict, name: str) -> dict:
  """What a member's run of model `name` depends on (its config.json)."""
  return json.loads(json.dumps({"name": name, "seed": config.seed, "dtype": config.dtype, "task": config.task.to_dict(),
                                "train": config.train.to_dict(), "eval": config.eval.to_dict(),
                                "member": config.members[name].to_dict()}))


def train_member(config: ml_collections.ConfigDict, name: str, folder: RunFolder) -> dict:
  """Trains and scores model `name` (a key of members) in `folder`; returns (and writes) its summary."""
  model = build_model(config, name)
  first = train_batch(config, 0)
  params = jax.jit(functools.partial(model.init, train=False))(jax.random.key(config.seed), first["tokens"])["params"]
  num_params = int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
  grad_init = gradient_norms_by_distance(model, params, config)
  tx = optimizer(config)
  opt_state = tx.init(params)
  folder.write_text("metrics.jsonl", "")
  start, records, examples = time.perf_counter(), [], 0
  for step in range(config.train.steps):
    b = first if step == 0 else train_batch(config, step)
    params, opt_state, loss, acc = train_step(model, tx, params, opt_state, b["tokens"], b["label"])
    examples += len(b["label"])
    if (step + 1) % config.train.log_every_steps == 0 or step + 1 == config.train.steps:
      records.append({"step": step + 1, "kind": "train", "loss": float(loss), "accuracy": float(acc),
                      "length": int(b["tokens"].shape[1]), "seconds": time.perf_counter() - start})
      folder.append_metrics(records)
      records = []
  train_seconds = time.perf_counter() - start
  start = time.perf_counter()
  accuracy = accuracy_by_distance(model, params, config)
  grad_trained = gradient_norms_by_distance(model, params, config)
  eval_seconds = time.perf_counter() - start
  folder.write_json("gradient_norms.json", {"distance": list(range(1, config.task.eval_length + 1)),
                                            "init": grad_init, "trained": grad_trained})
  summary = {"model": name, "variant": config.members[name].variant, "params": num_params,
             "steps": int(config.train.steps), "train_examples": examples, "train_seconds": train_seconds,
             "eval_seconds": eval_seconds, "accuracy": {str(d): a for d, a in accuracy.items()}}
  folder.write_summary(summary)
  return summary


def breakdown(accuracy: dict[int, float], chance: float, n: int) -> tuple[int | None, int | None]:
  """(first distance with accuracy < 50%, first distance from which accuracy stays within 3 standard errors of
  chance), None where there is none."""
  distances = sorted(accuracy)
  below = next((d for d in distances if accuracy[d] < BREAKDOWN_ACCURACY), None)
  band = chance + 3 * math.sqrt(chance * (1 - chance) / n)
  at_chance = None
  for d in reversed(distances):
    if accuracy[d] > band:
      break
    at_chance = d
  return below, at_chance


def gradient_ratio(config: ml_collections.ConfigDict, norms: list[float]) -> float:
  """||d loss / d x_t|| at the longest distance of the grid over that at the shortest (norms listed by distance
  1..N; distance 1, the read-out position, is left out by any grid that starts above 1)."""
  return norms[max(config.task.distances) - 1] / norms[min(config.task.distances) - 1]


def zero_from(norms: list[float]) -> int | None:
  """The distance from which every gradient norm (listed by distance 1..N) is exactly 0, float32 underflow; None
  if the last is not."""
  d = len(norms)
  while d > 0 and norms[d - 1] == 0.0:
    d -= 1
  return d + 1 if d < len(norms) else None


def summary_row(config: ml_collections.ConfigDict, summary: dict, curves: dict) -> dict:
  """A member's table row from its summary and gradient_norms.json."""
  accuracy = {int(d): a for d, a in summary["accuracy"].items()}
  below, at_chance = breakdown(accuracy, 1 / config.task.vocab_size, config.eval.examples_per_distance)
  row = {k: summary[k] for k in ("model", "variant", "params", "steps", "train_examples", "train_seconds",
                                  "eval_seconds")}
  row.update(grad_ratio_init=gradient_ratio(config, curves["init"]),
             grad_ratio_trained=gradient_ratio(config, curves["trained"]),
             grad_zero_from_init=zero_from(curves["init"]), grad_zero_from_trained=zero_from(curves["trained"]))
  row.update({f"acc_d{d}": a for d, a in sorted(accuracy.items())})
  row.update(breaks_down_at=below, at_chance_from=at_chance)
  return row


def columns(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  return ("model", "variant", "params", "steps", "train_examples", "train_seconds", "eval_seconds") + tuple(
      f"acc_d{d}" for d in sorted(config.task.distances)) + (
      "breaks_down_at", "at_chance_from", "grad_ratio_init", "grad_ratio_trained", "grad_zero_from_init",
      "grad_zero_from_trained")


def markdown_table(config: ml_collections.ConfigDict, rows: list[dict]) -> str:
  distances = sorted(config.task.distances)
  header = ["model", "params", "train s"] + [f"d={d}" for d in distances] + ["breaks down at", "at chance from"]
  lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
  for r in rows:
    cells = [r["model"], f"{r['params']:,}", f"{r['train_seconds']:.0f}"] + [
        f"{100 * r[f'acc_d{d}']:.1f}" for d in distances] + [
        "-" if r["breaks_down_at"] is None else str(r["breaks_down_at"]),
        "-" if r["at_chance_from"] is None else str(r["at_chance_from"])]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def single_table(config: ml_collections.ConfigDict, rows: list[dict]) -> str:
  """Accuracy (%) of the members trained on one distance only: a row per model, a column per distance."""
  models = list(dict.fromkeys(r["model"] for r in rows))
  distances = sorted(config.single.distances)
  found = {(r["model"], r["distance"]): r for r in rows}
  header = ["trained on d only"] + [f"d={d}" for d in distances]
  lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * len(distances)]
  for m in models:
    lines.append("| " + " | ".join([m] + [f"{100 * found[m, d]['accuracy']:.1f}" if (m, d) in found else ""
                                          for d in distances]) + " |")
  return "\n".join(lines)


def single_sentences(config: ml_collections.ConfigDict, rows: list[dict]) -> str:
  """Where each model trained on one distance only stops learning (breakdown() over its members)."""
  lines = []
  for m in dict.fromkeys(r["model"] for r in rows):
    accuracy = {r["distance"]: r["accuracy"] for r in rows if r["model"] == m}
    below, chance = breakdown(accuracy, 1 / config.task.vocab_size, config.eval.examples_per_distance)
    text = f"- **{m}** trained on one distance only: " + (
        "above 50% at every distance" if below is None else f"below 50% from distance {below}")
    lines.append(text + ("" if chance is None else f", at chance from distance {chance} on") + ".")
  return "\n".join(lines)


def breakdown_sentences(config: ml_collections.ConfigDict, rows: list[dict]) -> str:
  lines = []
  for r in rows:
    below, chance = r["breaks_down_at"], r["at_chance_from"]
    text = (f"- **{r['model']}**: " + ("above 50% at every distance" if below is None else
                                       f"breaks down at distance {below} (below 50%)"))
    text += "" if chance is None else f", at chance from distance {chance} on"
    text += (f"; gradient norm at distance {max(config.task.distances)} over distance {min(config.task.distances)}: "
             f"{r['grad_ratio_init']:.1e} at init, {r['grad_ratio_trained']:.1e} trained")
    zeros = [f"{label} from distance {r[key]} on" for label, key in (
        ("at init", "grad_zero_from_init"), ("trained", "grad_zero_from_trained")) if r[key] is not None]
    text += f" (exactly 0, float32 underflow: {', '.join(zeros)})." if zeros else "."
    lines.append(text)
  return "\n".join(lines)


def accuracy_figure(config: ml_collections.ConfigDict, rows: list[dict], single: list[dict]) -> bytes:
  import matplotlib  # noqa: PLC0415
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415
  distances = sorted(config.task.distances)
  fig, ax = plt.subplots(figsize=(6, 4))
  for r in rows:
    ax.plot(distances, [100 * r[f"acc_d{d}"] for d in distances], "o-", label=f"{r['model']} ({r['params']:,})")
  colors = {r["model"]: f"C{i}" for i, r in enumerate(rows)}
  for m in dict.fromkeys(r["model"] for r in single):
    points = sorted((r["distance"], 100 * r["accuracy"]) for r in single if r["model"] == m)
    ax.plot(*zip(*points), "s--", color=colors.get(m, "k"), label=f"{m}, trained on that distance only")
  ax.axhline(100 / config.task.vocab_size, color="gray", ls="--", label="chance")
  ax.set_xscale("log", base=2)
  ax.set(xlabel="distance d of the answer from the end (tokens)", ylabel="test accuracy (%)", ylim=(0, 102),
         title=f"Marked-token recall, sequences of {config.task.eval_length} tokens")
  ax.legend()
  return _png(fig)


def gradient_figure(config: ml_collections.ConfigDict, curves: dict[str, dict]) -> bytes:
  import matplotlib  # noqa: PLC0415
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415
  fig, ax = plt.subplots(figsize=(6, 4))
  for i, (name, c) in enumerate(curves.items()):
    ax.plot(c["distance"], c["trained"], color=f"C{i}", label=f"{name} trained")
    ax.plot(c["distance"], c["init"], color=f"C{i}", ls=":", label=f"{name} at init")
  ax.set(yscale="log", xlabel="distance N - t of input x_t from the end (geometric decay: a straight line)",
         ylabel="||d loss / d x_t||, mean of sequences",
         title="Gradient w.r.t. each input embedding (0, float32\nunderflow, is not drawn)")
  ax.legend(fontsize="small")
  return _png(fig)


def _png(fig) -> bytes:
  import matplotlib.pyplot as plt  # noqa: PLC0415
  buffer = io.BytesIO()
  fig.tight_layout()
  fig.savefig(buffer, format="png", dpi=110)
  plt.close(fig)
  return buffer.getvalue()


def write_report(config: ml_collections.ConfigDict, folder: RunFolder, rows: list[dict], curves: dict[str, dict],
                 single: list[dict], *, command: str = "", notes: str = "") -> None:
  """results.csv, results.md, accuracy.png, gradient_norms.png and single_distance.csv, each written atomically."""
  folder.write_csv(REPORT[0], rows, columns(config), missing=None)
  t, tr = config.task, config.train
  parts = [
      f"# {config.title}",
      f"Marked-token recall: {t.vocab_size} content tokens (chance {100 / t.vocab_size:.2f}%), the answer at distance "
      f"d from the end of a {t.eval_length}-token sequence; test accuracy (%) of {config.eval.examples_per_distance} "
      f"sequences per distance. Training: {tr.steps} AdamW steps (lr {tr.learning_rate}, {tr.warmup_steps} warm-up, "
      f"cosine), lengths cycling through {tuple(tr.train_lengths)}, {tr.tokens_per_batch} tokens per batch (at most "
      f"{tr.max_batch_size} sequences), the same batches for every model.",
      markdown_table(config, rows),
      "Where each model breaks down (first distance below 50%; at chance: within 3 standard errors of chance from "
      "there on):",
      breakdown_sentences(config, rows),
      "![accuracy against distance](accuracy.png)\n\n![gradient norms against distance](gradient_norms.png)"]
  if single:
    parts[5:5] = [f"Trained on one distance only: {config.single.steps} steps on sequences of exactly d tokens (the "
                  "marked answer first), the same recipe and token budget per batch; test accuracy (%) there:",
                  single_table(config, single), single_sentences(config, single)]
  seconds = sum(r["train_seconds"] + r["eval_seconds"] for r in rows + single)
  parts.append(f"Recorded member time (training and scoring, compilation included): {seconds / 60:.1f} min.")
  if command:
    parts.append(f"Command: `{command}`")
  if notes:
    parts.append(notes)
  folder.write_text(REPORT[1], "\n\n".join(parts) + "\n")
  folder.write_bytes(REPORT[2], accuracy_figure(config, rows, single))
  folder.write_bytes(REPORT[3], gradient_figure(config, curves))
  folder.write_csv(REPORT[4], single, SINGLE_COLUMNS)


def summary_table(config: ml_collections.ConfigDict, rows: list[dict]) -> str:
  """The table as the command line prints it."""
  return markdown_table(config, rows) + "\n\n" + breakdown_sentences(config, rows)


def _member(config: ml_collections.ConfigDict, model: str, member: RunFolder, label: str) -> dict:
  """The summary of model `model`'s run of `config` in `member`, training it first unless it finished."""
  member.makedirs()
  wanted = member_config(config, model)
  saved = member.read_config()
  if saved is not None and saved != wanted:
    differ = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
    raise ValueError(f"{member} holds a run of another config (differs in {differ}); use a new workdir, or "
                     "delete that folder to start it again")
  summary = member.read_summary()
  if summary is None:
    member.write_config(wanted)
    _LOG.info("long range %s: training", label)
    summary = train_member(config, model, member)
  else:
    _LOG.info("long range %s: finished before, skipped", label)
  accuracy = sorted((int(d), a) for d, a in summary["accuracy"].items())
  _LOG.info("long range %s: %s", label, ", ".join(f"d={d} {100 * a:.1f}%" for d, a in accuracy))
  return summary


def run(config: ml_collections.ConfigDict, workdir: str, *, command: str = "", notes: str = "") -> list[dict]:
  """Trains (or skips, when finished) every member, rewriting the report after each; returns the rows of the mixed
  training in order (the single-distance rows are in the report)."""
  check_config(config)
  folder = RunFolder(workdir)
  folder.makedirs()
  rows, curves, single = [], {}, []
  singles = [(m, d) for m in config.single.models for d in config.single.distances]
  total = len(config.models) + len(singles)
  with run_lock.hold(folder / run_lock.LOCK):
    for index, name in enumerate(config.models):
      member = folder.child(name)
      summary = _member(config, name, member, f"[{index + 1}/{total}] {name}")
      curves[name] = member.read_json("gradient_norms.json")
      rows.append(summary_row(config, summary, curves[name]))
      if jax.process_index() == 0:
        write_report(config, folder, rows, curves, single, command=command, notes=notes)
    for index, (name, d) in enumerate(singles, start=len(config.models) + 1):
      summary = _member(single_distance_config(config, d), name, folder.child(f"{name}_only_d{d}"),
                        f"[{index}/{total}] {name} trained on d={d} only")
      single.append({"model": name, "distance": d, "params": summary["params"], "steps": summary["steps"],
                     "train_seconds": summary["train_seconds"], "eval_seconds": summary["eval_seconds"],
                     "accuracy": summary["accuracy"][str(d)]})
      if jax.process_index() == 0:
        write_report(config, folder, rows, curves, single, command=command, notes=notes)
  return rows

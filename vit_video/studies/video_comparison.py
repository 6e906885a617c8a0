"""The video comparisons: every video model of a config on each of its labels, and the table of their accuracy.

    rows = run(config, workdir)   # python -m vit_video.study --config=experiments/video_classics.py:sweep ...

A comparison config (experiments/video_classics.py:sweep, experiments/video_transformers.py:sweep) holds
`members[model][label]`: a full training config per model and label; `models`, the models in table order, and
`labels`, the labels in column order (a ConfigDict's keys come back sorted); `title`, the report's heading, and
`label_notes`, what each label is (chance level included). Each member is a normal run in
workdir/<model>/<label>/ through `loop.train_once` (finished runs are skipped, half-finished ones resume, a
folder holding another config raises). After every model, workdir/results.csv and results.md are rewritten
atomically, one row per model:

  params, GFLOP per clip (XLA's count of one eval view), train clips/s (the median over the first label's log
  records after the first, i.e. after compilation; wall clock on this machine), and per label the clip top-1
  (every view scored alone) and video top-1 (the views' softmaxes averaged per video).
"""
import csv
import io
import logging
import math
import os
import re
import statistics

import jax
import ml_collections

from vit_video.train import loop
from vit_video.train.run_folder import RunFolder, as_path

_LOG = logging.getLogger(__name__)
REPORT = ("results.csv", "results.md")  # in the study's folder
BASE_COLUMNS = ("model", "model_name", "frames", "params", "gflop_per_clip", "train_clips_per_s")
_VIEWS = ("clip", "video")
_LABEL_COLUMN = re.compile(r"(.+)_(clip|video)_top1")


def columns(labels: tuple[str, ...]) -> tuple[str, ...]:
  """results.csv's columns: the base ones, then `{label}_clip_top1`, `{label}_video_top1` per label."""
  return BASE_COLUMNS + tuple(f"{label}_{view}_top1" for label in labels for view in _VIEWS)


def train_clips_per_second(folder: RunFolder) -> float:
  """Median `examples_per_second` of a run's train records after the first (which includes compilation)."""
  rates = [r["examples_per_second"] for r in folder.read_metrics()
           if r.get("kind") == "train" and "examples_per_second" in r][1:]
  return statistics.median(rates) if rates else float("nan")


def model_row(name: str, members: ml_collections.ConfigDict, summaries: dict[str, dict],
              folders: dict[str, RunFolder]) -> dict:
  """One table row from the model's run summaries per label."""
  first = next(iter(summaries))
  config = members[first]
  row = {"model": name, "model_name": config.model_name, "frames": int(config.video.num_frames),
         "params": int(summaries[first]["params"]),
         "gflop_per_clip": float(summaries[first]["eval_gflop_per_example"]),
         "train_clips_per_s": train_clips_per_second(folders[first])}
  for label, summary in summaries.items():
    row[f"{label}_clip_top1"] = float(summary["eval_clip_top1"])
    row[f"{label}_video_top1"] = float(summary["eval_top1"])
  return row


def _percent(x: float) -> str:
  return "" if math.isnan(x) else f"{100 * x:.1f}"


def markdown_table(rows: list[dict], labels: tuple[str, ...]) -> str:
  """The rows as a markdown table with a clip and a video column per label."""
  header = ("model", "frames", "params", "GFLOP/clip", "train clips/s") + tuple(
      f"{label} {view}" for label in labels for view in _VIEWS)
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 2 + "---:|" * (len(header) - 2)]
  for r in rows:
    lines.append("| " + " | ".join([
        r["model"], str(r["frames"]), f"{r['params']:,}", f"{r['gflop_per_clip']:.3f}",
        f"{r['train_clips_per_s']:.0f}"] + [_percent(r.get(f"{label}_{view}_top1", math.nan)) for label in labels
                                            for view in _VIEWS]) + " |")
  return "\n".join(lines)


def write_report(folder: RunFolder, rows: list[dict], *, labels: tuple[str, ...], title: str, label_notes: str = "",
                 command: str = "", notes: str = "") -> None:
  """results.csv (`columns(labels)`) and results.md (the title, the table, the command, the notes), each written
  atomically."""
  folder.write_csv(REPORT[0], rows, columns(labels), missing=math.nan)
  parts = [f"# {title}", "Top-1 accuracy (%) on the test split; clip: every view alone, video: the views' softmaxes "
           f"averaged.{' ' + label_notes if label_notes else ''}", markdown_table(rows, labels)]
  if command:
    parts.append(f"Command: `{command}`")
  if notes:
    parts.append(notes)
  folder.write_text(REPORT[1], "\n\n".join(parts) + "\n")


def check_config(config: ml_collections.ConfigDict) -> None:
  """ValueError naming the problem unless every model of `models` is a member trained on every label of
  `labels`."""
  unknown = [name for name in config.models if name not in config.members]
  if not config.models or unknown:
    raise ValueError(f"the comparison's models {tuple(config.models)} must be non-empty keys of its members "
                     f"({', '.join(config.members)}); not found: {unknown}")
  if not config.labels:
    raise ValueError("the comparison has no labels")
  for name in config.models:
    missing = [label for label in config.labels if label not in config.members[name]]
    if missing:
      raise ValueError(f"member {name!r} has no config for label(s) {missing}; it has {list(config.members[name])}")


def summary_table(config: ml_collections.ConfigDict, rows: list[dict]) -> str:
  """The table as the command line prints it."""
  return markdown_table(rows, tuple(config.labels))


def run(config: ml_collections.ConfigDict, workdir: str, *, command: str = "", notes: str = "") -> list[dict]:
  """Runs (or resumes) every member, rewriting the report after each model; returns the rows in order."""
  check_config(config)
  folder = RunFolder(workdir)
  folder.makedirs()
  labels = tuple(config.labels)
  rows = []
  for index, name in enumerate(config.models):
    summaries, folders = {}, {}
    for label in labels:
      folders[label] = folder.child(name, label)
      _LOG.info("video comparison [%d/%d] %s: %s", index + 1, len(config.models), name, label)
      summaries[label] = loop.train_once(config.members[name][label], str(folders[label]))
    rows.append(model_row(name, config.members[name], summaries, folders))
    r = rows[-1]
    accuracies = ", ".join(f"{label} video top-1 {_percent(r[f'{label}_video_top1'])}%" for label in labels)
    _LOG.info("video comparison [%d/%d] %s: %s, %.3f GFLOP/clip", index + 1, len(config.models), name,
              accuracies, r["gflop_per_clip"])
    if jax.process_index() == 0:
      write_report(folder, rows, labels=labels, title=config.title, label_notes=config.label_notes,
                   command=command, notes=notes)
  return rows


def read_rows(path: str | os.PathLike) -> tuple[list[dict], tuple[str, ...]]:
  """results.csv -> (rows with numbers parsed, the labels with a result in some row, in column order)."""
  reader = csv.DictReader(io.StringIO(as_path(path).read_text()))
  rows = list(reader)
  for r in rows:
    for k in r:
      if k not in ("model", "model_name"):
        r[k] = int(r[k]) if k in ("frames", "params") else float(r[k])
  labels = dict.fromkeys(m[1] for c in reader.fieldnames or () if (m := _LABEL_COLUMN.fullmatch(c)))
  return rows, tuple(label for label in labels if any(not math.isnan(r[f"{label}_video_top1"]) for r in rows))

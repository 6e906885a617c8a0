"""`run_video_sweep(sweep, workdir)`: trains every video model on every label and writes the comparison table.

A video sweep config (experiments/video_classics.py:sweep, experiments/video_transformers.py:sweep) holds
`members[model][label]`: a full training config per model and label ("motion", "object"; a sweep may train one),
`models`, the models to run in table order (a ConfigDict's keys come back sorted), and `title`, the report's
heading. Each is a normal `train_and_evaluate` run in workdir/<model>/<label>/;
finished runs are skipped, half-finished ones resume, a folder holding another config raises (as in
vit_video.train.sweep). After every model, workdir/results.csv and results.md are rewritten atomically, one row
per model:

  params, GFLOP per clip (XLA's count of one eval view), train clips/s (the median over the motion run's log
  records after the first, i.e. after compilation; wall clock on this machine), and per label the clip top-1
  (every view scored alone) and video top-1 (the views' softmaxes averaged per video).
"""
import csv
import io
import logging
import math
import os
import statistics

import jax
import ml_collections

from vit_video.train import atomic_files, sweep, writers

_LOG = logging.getLogger(__name__)
COLUMNS = ("model", "model_name", "frames", "params", "gflop_per_clip", "train_clips_per_s",
           "motion_clip_top1", "motion_video_top1", "object_clip_top1", "object_video_top1")


def train_clips_per_second(workdir: str) -> float:
  """Median `examples_per_second` of a run's train records after the first (which includes compilation)."""
  rates = [r["examples_per_second"] for r in writers.read_metrics(workdir)
           if r.get("kind") == "train" and "examples_per_second" in r][1:]
  return statistics.median(rates) if rates else float("nan")


def model_row(name: str, members: ml_collections.ConfigDict, summaries: dict[str, dict],
              workdirs: dict[str, str]) -> dict:
  """One table row from the model's run summaries per label (motion, object)."""
  first = next(iter(summaries))
  config = members[first]
  row = {"model": name, "model_name": config.model_name, "frames": int(config.video.num_frames),
         "params": int(summaries[first]["params"]),
         "gflop_per_clip": float(summaries[first]["eval_gflop_per_example"]),
         "train_clips_per_s": train_clips_per_second(workdirs[first])}
  for label in ("motion", "object"):
    summary = summaries.get(label, {})
    row[f"{label}_clip_top1"] = float(summary.get("eval_clip_top1", float("nan")))
    row[f"{label}_video_top1"] = float(summary.get("eval_top1", float("nan")))
  return row


def _percent(x: float) -> str:
  return "" if x != x else f"{100 * x:.1f}"


def markdown_table(rows: list[dict]) -> str:
  """The rows as a markdown table; a label no row was trained on (all nan) gets no columns."""
  labels = [label for label in ("motion", "object")
            if not all(math.isnan(r[f"{label}_video_top1"]) for r in rows)]
  header = ("model", "frames", "params", "GFLOP/clip", "train clips/s") + tuple(
      f"{label} {view}" for label in labels for view in ("clip", "video"))
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 2 + "---:|" * (len(header) - 2)]
  for r in rows:
    lines.append("| " + " | ".join([
        r["model"], str(r["frames"]), f"{r['params']:,}", f"{r['gflop_per_clip']:.3f}",
        f"{r['train_clips_per_s']:.0f}"] + [_percent(r[f"{label}_{view}_top1"]) for label in labels
                                            for view in ("clip", "video")]) + " |")
  return "\n".join(lines)


def write_report(workdir: str, rows: list[dict], *, title: str = "Video classifiers on moving Fashion-MNIST actions",
                 command: str = "", notes: str = "") -> None:
  """results.csv (COLUMNS) and results.md (the title, the table, the command, the notes), each written atomically.

  A label the sweep did not train gets no columns in results.md and nan in results.csv."""
  def write_csv(f):
    writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: r[k] for k in COLUMNS} for r in rows)
  atomic_files.write_atomic(os.path.join(workdir, "results.csv"), write_csv, suffix=".csv")
  text = io.StringIO()
  text.write(f"# {title}\n\n")
  text.write("Top-1 accuracy (%) on the test split; clip: every view alone, video: the views' softmaxes "
             "averaged. Motion: the 10 motions (chance 10%); object: the 10 Fashion-MNIST classes.\n\n")
  text.write(markdown_table(rows) + "\n")
  if command:
    text.write(f"\nCommand: `{command}`\n")
  if notes:
    text.write(f"\n{notes}\n")
  atomic_files.write_atomic(os.path.join(workdir, "results.md"), lambda f: f.write(text.getvalue()), suffix=".md")


def run_video_sweep(config: ml_collections.ConfigDict, workdir: str, *, command: str = "",
                    notes: str = "") -> list[dict]:
  """Runs (or resumes) every member, rewriting the report after each model; returns the rows in order."""
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  unknown = [name for name in config.models if name not in config.members]
  if not config.models or unknown:
    raise ValueError(f"the sweep's models {tuple(config.models)} must be non-empty keys of its members "
                     f"({', '.join(config.members)}); not found: {unknown}")
  rows = []
  for index, name in enumerate(config.models):
    labels = config.members[name]
    summaries, workdirs = {}, {}
    for label, member in labels.items():
      workdirs[label] = os.path.join(workdir, name, label)
      _LOG.info("video sweep [%d/%d] %s: %s", index + 1, len(config.models), name, label)
      summaries[label] = sweep.train_once(member, workdirs[label])
    rows.append(model_row(name, labels, summaries, workdirs))
    r = rows[-1]
    accuracies = ", ".join(f"{label} video top-1 {_percent(r[f'{label}_video_top1'])}%" for label in summaries)
    _LOG.info("video sweep [%d/%d] %s: %s, %.3f GFLOP/clip", index + 1, len(config.models), name, accuracies,
              r["gflop_per_clip"])
    if jax.process_index() == 0:
      write_report(workdir, rows, title=config.title, command=command, notes=notes)
  return rows


def read_rows(path: str) -> list[dict]:
  """results.csv -> rows with numbers parsed."""
  with open(path) as f:
    rows = list(csv.DictReader(f))
  for r in rows:
    for k in COLUMNS[2:]:
      r[k] = int(r[k]) if k in ("frames", "params") else float(r[k])
  return rows


"""Reporting for the ViT-vs-ResNet study: results CSV, markdown tables and the paper's Figure 5 in miniature.

Figure 5 of Dosovitskiy et al. (2020) plots transfer accuracy against total pre-training compute for three
families: ViT, ResNet (BiT) and hybrids (a ResNet stem under a ViT); the same report serves any of the families
in `FAMILIES` (ConvNeXt vs Swin vs ViT vs ResNet: experiments/convnext_vs_swin.py). One row per sweep member holds

    member, family, model, params, epochs, pretrain_steps, pretrain_gflop, pretrain_top1,
    then per transfer dataset DS: finetune_DS, fewshot{k}_DS for every shot count k,
    then finetune_avg, fewshot{k}_avg (means over the datasets).

Accuracies are fractions in [0, 1] (shown as percentages); `pretrain_gflop` is total pre-training GFLOP from
XLA's cost analysis. Files (local paths or any `etils.epath` URI) are written atomically (`run_folder.write_atomic`)
with a fixed number format, so writing the same numbers twice gives byte-identical files. Plotting uses
`matplotlib.figure.Figure` directly: no pyplot, no global state.

    rows = [add_averages(r, datasets, shots) for r in raw_rows]
    write_csv("results.csv", rows, datasets, shots)
    rows, datasets, shots = read_csv("results.csv")
    plot_figure5(rows, datasets, shots, path="figure5.png")
"""
import csv
import io
import math
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from vit_video.train.run_folder import as_path, write_atomic

BASE_COLUMNS = ("member", "family", "model", "params", "epochs", "pretrain_steps", "pretrain_gflop",
                "pretrain_top1")
STR_COLUMNS = ("member", "family", "model")
INT_COLUMNS = ("params", "pretrain_steps")
# family key -> (legend name, colour, marker); the order is the order of tables and legends. A study's members
# name one of these keys (a study uses the ones it needs: vit_vs_resnet.py the first three, convnext_vs_swin.py
# the ConvNeXt paper's four).
FAMILIES = {
    "vit": ("ViT", "tab:blue", "o"),
    "bit": ("ResNet (BiT)", "tab:gray", "s"),
    "hybrid": ("Hybrid", "tab:orange", "^"),
    "resnet": ("ResNet (v1.5)", "tab:brown", "P"),
    "swin": ("Swin", "tab:green", "D"),
    "convnext": ("ConvNeXt", "tab:red", "v"),
}
_FINETUNE = re.compile(r"finetune_(.+)")
_FEWSHOT = re.compile(r"fewshot(\d+)_(.+)")


def columns(datasets: Sequence[str], shots: Sequence[int]) -> list[str]:
  """The CSV column order: base columns, per dataset `finetune_DS` and `fewshot{k}_DS`, then the averages."""
  if not datasets or not shots:
    raise ValueError(f"need at least one dataset and one shot count; got datasets={list(datasets)}, "
                     f"shots={list(shots)}")
  if "avg" in datasets or len(set(datasets)) != len(datasets):
    raise ValueError(f"dataset names must be unique and not 'avg'; got {list(datasets)}")
  if len(set(shots)) != len(shots) or any(int(k) != k or k < 1 for k in shots):
    raise ValueError(f"shot counts must be unique positive integers; got {list(shots)}")
  cols = list(BASE_COLUMNS)
  for ds in datasets:
    cols += [f"finetune_{ds}"] + [f"fewshot{k}_{ds}" for k in shots]
  return cols + ["finetune_avg"] + [f"fewshot{k}_avg" for k in shots]


def add_averages(row: dict[str, Any], datasets: Sequence[str], shots: Sequence[int]) -> dict[str, Any]:
  """A copy of `row` with `finetune_avg` and `fewshot{k}_avg` set to the means over `datasets`."""
  out = dict(row)
  for prefix in ["finetune"] + [f"fewshot{k}" for k in shots]:
    keys = [f"{prefix}_{ds}" for ds in datasets]
    missing = [k for k in keys if k not in row]
    if missing:
      raise ValueError(f"row {row.get('member', '?')!r} has no column {missing[0]!r}")
    out[f"{prefix}_avg"] = float(np.mean([float(row[k]) for k in keys]))
  return out


def _format(column: str, value: Any) -> str:
  """One CSV cell: strings as they are, integers exactly, floats with 6 significant digits."""
  if column in STR_COLUMNS:
    return str(value)
  if column in INT_COLUMNS:
    if float(value) != int(value):
      raise ValueError(f"column {column!r} must hold an integer; got {value!r}")
    return str(int(value))
  return f"{float(value):.6g}"


def _parse(column: str, text: str) -> Any:
  if column in STR_COLUMNS:
    return text
  if column in INT_COLUMNS:
    return int(text)
  return float(text)


def _check_rows(rows: Sequence[dict[str, Any]], cols: Sequence[str]) -> None:
  for row in rows:
    for col in cols:
      if col not in row:
        raise ValueError(f"row {row.get('member', '?')!r} has no column {col!r}")
    if row["family"] not in FAMILIES:
      raise ValueError(f"row {row['member']!r} has family {row['family']!r}; expected one of {list(FAMILIES)}")


def write_csv(path: str | os.PathLike, rows: Sequence[dict[str, Any]], datasets: Sequence[str],
              shots: Sequence[int]) -> None:
  """Writes `rows` to `path` atomically in `columns(datasets, shots)` order (extra keys are not written).

  Raises ValueError naming the member and the column when a row lacks one.
  """
  cols = columns(datasets, shots)
  _check_rows(rows, cols)

  text = io.StringIO()
  writer = csv.writer(text, lineterminator="\n")
  writer.writerow(cols)
  for row in rows:
    writer.writerow([_format(c, row[c]) for c in cols])
  write_atomic(path, text.getvalue())


def read_csv(path: str | os.PathLike) -> tuple[list[dict[str, Any]], list[str], list[int]]:
  """The rows of a results CSV (numbers parsed back) and the datasets and shot counts named in its header."""
  reader = csv.reader(io.StringIO(as_path(path).read_text(), newline=""))
  header = next(reader, [])
  body = list(reader)
  missing = [c for c in BASE_COLUMNS if c not in header]
  if missing:
    raise ValueError(f"{path} lacks the column(s) {missing}; its header is {header}")
  datasets, shots = [], []
  for col in header[len(BASE_COLUMNS):]:
    if (m := _FINETUNE.fullmatch(col)) and m[1] != "avg":
      datasets.append(m[1])
    elif (m := _FEWSHOT.fullmatch(col)) and int(m[1]) not in shots:
      shots.append(int(m[1]))
  expected = columns(datasets, shots)
  if header != expected:
    raise ValueError(f"{path}: header {header} is not in the expected order {expected}")
  rows = []
  for i, cells in enumerate(body):
    if len(cells) != len(header):
      raise ValueError(f"{path}: line {i + 2} has {len(cells)} cells; the header has {len(header)}")
    rows.append({c: _parse(c, v) for c, v in zip(header, cells, strict=True)})
  return rows, datasets, shots


def _sorted_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """Rows grouped by family (in `FAMILIES` order), each family sorted by compute, then by member."""
  _check_rows(rows, ("member", "family", "pretrain_gflop"))
  order = list(FAMILIES)
  return sorted(rows, key=lambda r: (order.index(r["family"]), r["pretrain_gflop"], r["member"]))


def _percent(x: float) -> str:
  return "n/a" if math.isnan(x) else f"{100 * x:.1f}"


def format_flop(gflop: float) -> str:
  """GFLOP in a readable unit: 0.25 -> '250 MFLOP', 1234.0 -> '1.23 TFLOP'."""
  flop = gflop * 1e9
  for unit, scale in (("EFLOP", 1e18), ("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9)):
    if flop >= scale:
      return f"{flop / scale:.3g} {unit}"
  return f"{flop / 1e6:.3g} MFLOP"


def _table(header: Sequence[str], body: Sequence[Sequence[str]], right_from: int) -> str:
  align = ["---"] * right_from + ["---:"] * (len(header) - right_from)
  lines = [header, align] + list(body)
  return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def markdown_table(rows: Sequence[dict[str, Any]], datasets: Sequence[str], shots: Sequence[int]) -> str:
  """Two markdown tables, families grouped and sorted by compute; accuracies in percent with 1 decimal.

  The first holds the model, size, compute, upstream accuracy, fine-tuning per dataset and the few-shot
  averages; the second the few-shot linear-probe accuracy per dataset and shot count.
  """
  _check_rows(rows, columns(datasets, shots))
  rows = _sorted_rows(rows)
  header = (["Family", "Member", "Model", "Params", "Epochs", "Steps", "Compute", "Upstream top-1"]
            + [f"FT {ds}" for ds in datasets] + ["FT avg"] + [f"{k}-shot avg" for k in shots])
  body = [[FAMILIES[r["family"]][0], r["member"], r["model"], f"{r['params']:,}", f"{r['epochs']:g}",
           f"{r['pretrain_steps']:,}", format_flop(r["pretrain_gflop"]), _percent(r["pretrain_top1"])]
          + [_percent(r[f"finetune_{ds}"]) for ds in datasets] + [_percent(r["finetune_avg"])]
          + [_percent(r[f"fewshot{k}_avg"]) for k in shots] for r in rows]
  main = _table(header, body, right_from=3)
  few_header = ["Family", "Member"] + [f"{k}-shot {ds}" for ds in datasets for k in shots]
  few_body = [[FAMILIES[r["family"]][0], r["member"]]
              + [_percent(r[f"fewshot{k}_{ds}"]) for ds in datasets for k in shots] for r in rows]
  return main + "\n\nFew-shot linear probes per dataset (top-1 %):\n\n" + _table(few_header, few_body, 2)


def write_markdown(path: str | os.PathLike, rows: Sequence[dict[str, Any]], datasets: Sequence[str],
                   shots: Sequence[int], *, title: str, command: str, notes: str = "") -> None:
  """Writes a markdown report (title, the command that reproduces it, notes, `markdown_table`) atomically."""
  parts = [f"# {title}", f"Reproduce with:\n\n```\n{command}\n```"]
  if notes:
    parts.append(notes.strip())
  parts.append(markdown_table(rows, datasets, shots))
  text = "\n\n".join(parts) + "\n"
  write_atomic(path, text)


def compute_ratios(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
  """Per family key: the pre-training compute of its largest member over that of its smallest."""
  rows, out = _sorted_rows(rows), {}
  for family in FAMILIES:
    gflop = [r["pretrain_gflop"] for r in rows if r["family"] == family]
    if gflop:
      out[family] = max(gflop) / min(gflop)
  return out


def matched_compute(rows: Sequence[dict[str, Any]], key: str = "finetune_avg",
                    points: int = 3) -> list[tuple[float, dict[str, float]]]:
  """Accuracy `key` of every family at the same compute, for `points` log-spaced GFLOP values.

  Each family's accuracy is interpolated linearly in log-compute between its members; the values span the
  compute range all families share. Returns [(gflop, {family: accuracy})], empty when the ranges do not overlap.
  """
  rows, curves = _sorted_rows(rows), {}
  for family in FAMILIES:
    members = [r for r in rows if r["family"] == family]
    if members:
      curves[family] = (np.log([r["pretrain_gflop"] for r in members]), np.array([r[key] for r in members]))
  if not curves:
    return []
  lo, hi = max(x[0] for x, _ in curves.values()), min(x[-1] for x, _ in curves.values())
  if lo > hi:
    return []
  grid = np.linspace(lo, hi, points if hi > lo else 1)
  return [(float(np.exp(g)), {f: float(np.interp(g, x, y)) for f, (x, y) in curves.items()}) for g in grid]


def plot_figure5(rows: Sequence[dict[str, Any]], datasets: Sequence[str], shots: Sequence[int], *,
                 path: str | os.PathLike | None = None) -> Figure:
  """Transfer accuracy (%) against pre-training compute (GFLOP, log axis), one colour and marker per family.

  Panels, as in the paper's Figure 5: "Average fine-tuning", fine-tuning on each dataset, and the average
  few-shot linear probe at the largest shot count. Each panel has one line per family present, through its
  members sorted by compute. Saved as PNG (dpi 120) atomically to `path` when given.
  """
  _check_rows(rows, columns(datasets, shots))
  rows = _sorted_rows(rows)
  k = max(shots)
  panels = ([("finetune_avg", "Average fine-tuning")] + [(f"finetune_{ds}", f"Fine-tuning: {ds}") for ds in datasets]
            + [(f"fewshot{k}_avg", f"Average {k}-shot linear")])
  ncols = len(panels) if len(panels) <= 4 else -(-len(panels) // 2)  # one row, or two: ceil(n / 2) columns
  nrows = -(-len(panels) // ncols)
  fig = Figure(figsize=(4.2 * ncols, 3.4 * nrows), layout="constrained")
  for i, (key, title) in enumerate(panels):
    ax = fig.add_subplot(nrows, ncols, i + 1)
    for family, (name, color, marker) in FAMILIES.items():
      members = [r for r in rows if r["family"] == family]
      if members:
        ax.plot([r["pretrain_gflop"] for r in members], [100 * r[key] for r in members], color=color,
                marker=marker, label=name)
    ax.set_xscale("log")
    ax.set_title(title)
    ax.set_xlabel("Pre-training compute [GFLOP]")
    ax.set_ylabel("Transfer accuracy [%]")
    ax.grid(True, which="both", alpha=0.3)
    if i == 0:
      ax.legend(loc="lower right")
  if path is not None:
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120)
    write_atomic(path, png.getvalue())
  return fig

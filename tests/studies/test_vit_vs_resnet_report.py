"""Tests for vit_video.studies.vit_vs_resnet_report: CSV round trips, tables, matched-compute summaries and Figure 5."""
import csv
import math
import os

import numpy as np
import pytest

from vit_video.studies import vit_vs_resnet_report

DATASETS = ("a_ds", "b_ds")  # 2 datasets, 3 shot counts: sizes that differ
SHOTS = (1, 5, 10)
# family -> members' pre-training GFLOP: families of different sizes, rows given out of compute order.
MEMBERS = {"vit": (40.0, 2.5, 900.0), "bit": (7.25, 3100.0), "hybrid": (55.5,)}


def make_rows(members=MEMBERS, seed=0) -> list[dict]:
  rng = np.random.default_rng(seed)
  rows = []
  for family, gflops in members.items():
    for i, gflop in enumerate(gflops):
      row = {"member": f"{family}_{i}", "family": family, "model": f"{family} d{i + 1}, w{8 * (i + 1)}",
             "params": int(rng.integers(1_000, 5_000_000)), "epochs": 2.5, "pretrain_steps": 120 * (i + 1),
             "pretrain_gflop": gflop, "pretrain_top1": round(float(rng.uniform(0.5, 0.95)), 4)}
      for ds in DATASETS:
        row[f"finetune_{ds}"] = round(float(rng.uniform(0.3, 0.99)), 4)
        for k in SHOTS:
          row[f"fewshot{k}_{ds}"] = round(float(rng.uniform(0.1, 0.9)), 4)
      rows.append(vit_vs_resnet_report.add_averages(row, DATASETS, SHOTS))
  return rows


def test_columns_order():
  assert vit_vs_resnet_report.columns(DATASETS, SHOTS) == [
      "member", "family", "model", "params", "epochs", "pretrain_steps", "pretrain_gflop", "pretrain_top1",
      "finetune_a_ds", "fewshot1_a_ds", "fewshot5_a_ds", "fewshot10_a_ds",
      "finetune_b_ds", "fewshot1_b_ds", "fewshot5_b_ds", "fewshot10_b_ds",
      "finetune_avg", "fewshot1_avg", "fewshot5_avg", "fewshot10_avg"]
  with pytest.raises(ValueError, match="avg"):
    vit_vs_resnet_report.columns(["avg"], SHOTS)
  with pytest.raises(ValueError, match="shot"):
    vit_vs_resnet_report.columns(DATASETS, [5, 5])


def test_add_averages():
  row = make_rows()[0]
  bare = {k: v for k, v in row.items() if not k.endswith("_avg")}
  out = vit_vs_resnet_report.add_averages(bare, DATASETS, SHOTS)
  assert "finetune_avg" not in bare  # a copy
  assert out["finetune_avg"] == pytest.approx((bare["finetune_a_ds"] + bare["finetune_b_ds"]) / 2)
  for k in SHOTS:
    assert out[f"fewshot{k}_avg"] == pytest.approx((bare[f"fewshot{k}_a_ds"] + bare[f"fewshot{k}_b_ds"]) / 2)
  del bare["fewshot5_b_ds"]
  with pytest.raises(ValueError, match="vit_0.*fewshot5_b_ds"):
    vit_vs_resnet_report.add_averages(bare, DATASETS, SHOTS)


def test_csv_round_trip(tmp_path):
  rows = make_rows()
  path = str(tmp_path / "out" / "results.csv")
  vit_vs_resnet_report.write_csv(path, rows, DATASETS, SHOTS)
  read, datasets, shots = vit_vs_resnet_report.read_csv(path)
  assert (datasets, shots) == (list(DATASETS), list(SHOTS))
  assert len(read) == len(rows)
  for got, want in zip(read, rows):
    assert list(got) == vit_vs_resnet_report.columns(DATASETS, SHOTS)
    for key, value in got.items():
      if key in ("member", "family", "model", "params", "pretrain_steps"):
        assert value == want[key] and type(value) is type(want[key]), key
      else:
        assert type(value) is float and value == float(f"{want[key]:.6g}"), key
  assert read[0]["pretrain_top1"] == rows[0]["pretrain_top1"]  # 4 decimals survive the 6-digit format exactly
  assert sorted(os.listdir(tmp_path / "out")) == ["results.csv"]  # no temporary file left


def test_csv_rewrite_is_byte_identical(tmp_path):
  rows = make_rows()
  vit_vs_resnet_report.write_csv(str(tmp_path / "a.csv"), rows, DATASETS, SHOTS)
  vit_vs_resnet_report.write_csv(str(tmp_path / "a.csv"), rows, DATASETS, SHOTS)  # overwrite in place
  read, datasets, shots = vit_vs_resnet_report.read_csv(str(tmp_path / "a.csv"))
  vit_vs_resnet_report.write_csv(str(tmp_path / "b.csv"), read, datasets, shots)
  first = (tmp_path / "a.csv").read_bytes()
  assert first == (tmp_path / "b.csv").read_bytes()
  assert first.count(b"\n") == len(rows) + 1 and b"\r" not in first
  assert b'"vit d1, w8"' in first  # a comma in a field is quoted, not split


def test_write_csv_missing_column(tmp_path):
  rows = make_rows()
  del rows[3]["fewshot10_a_ds"]
  path = tmp_path / "results.csv"
  with pytest.raises(ValueError, match=r"bit_0.*fewshot10_a_ds"):
    vit_vs_resnet_report.write_csv(str(path), rows, DATASETS, SHOTS)
  assert not path.exists() and not os.listdir(tmp_path)
  rows = make_rows()
  rows[0]["family"] = "vit_video"
  with pytest.raises(ValueError, match="vit_video"):
    vit_vs_resnet_report.write_csv(str(path), rows, DATASETS, SHOTS)


def test_read_csv_errors(tmp_path):
  path = tmp_path / "bad.csv"
  with open(path, "w", newline="") as f:
    cols = [c for c in vit_vs_resnet_report.columns(DATASETS, SHOTS) if c != "pretrain_gflop"]
    csv.writer(f).writerow(cols)
  with pytest.raises(ValueError, match=r"bad\.csv.*pretrain_gflop"):
    vit_vs_resnet_report.read_csv(str(path))
  with open(path, "w", newline="") as f:  # an average column missing
    csv.writer(f).writerow(vit_vs_resnet_report.columns(DATASETS, SHOTS)[:-1])
  with pytest.raises(ValueError, match=r"bad\.csv.*fewshot10_avg"):
    vit_vs_resnet_report.read_csv(str(path))


def test_format_flop():
  assert vit_vs_resnet_report.format_flop(0.25) == "250 MFLOP"
  assert vit_vs_resnet_report.format_flop(7.25) == "7.25 GFLOP"
  assert vit_vs_resnet_report.format_flop(3100.0) == "3.1 TFLOP"
  assert vit_vs_resnet_report.format_flop(2.5e6) == "2.5 PFLOP"


def test_markdown_table(tmp_path):
  rows = make_rows()
  text = vit_vs_resnet_report.markdown_table(rows, DATASETS, SHOTS)
  lines = text.splitlines()
  for row in rows:
    assert f"| {row['member']} |" in text
    assert f"{row['params']:,}" in text
    for key in ["pretrain_top1", "finetune_avg"] + [c for c in row if c.startswith(("finetune_", "fewshot"))]:
      assert f"{100 * row[key]:.1f}" in text, key
  # families grouped in order ViT, ResNet (BiT), Hybrid; each sorted by compute.
  members = [line.split(" | ")[1] for line in lines if line.startswith(("| ViT", "| ResNet", "| Hybrid"))]
  order = ["vit_1", "vit_0", "vit_2", "bit_0", "bit_1", "hybrid_0"]
  assert members == order + order  # main table, then the few-shot table
  assert "| 2.5 GFLOP |" in text and "| 3.1 TFLOP |" in text
  header = lines[0].split(" | ")
  assert len(header) == 8 + len(DATASETS) + 1 + len(SHOTS)
  assert all(line.count("|") == lines[0].count("|") for line in lines[:len(rows) + 2])

  path = tmp_path / "results.md"
  vit_vs_resnet_report.write_markdown(str(path), rows, DATASETS, SHOTS, title="ViT vs ResNet", command="make run",
                              notes="Quick sweep.")
  report = path.read_text()
  assert report.startswith("# ViT vs ResNet\n") and "```\nmake run\n```" in report and "Quick sweep." in report
  assert text in report and os.listdir(tmp_path) == ["results.md"]


def test_plot_figure5(tmp_path):
  rows = make_rows()
  path = tmp_path / "fig" / "figure5.png"
  fig = vit_vs_resnet_report.plot_figure5(rows, DATASETS, SHOTS, path=str(path))
  axes = fig.get_axes()
  assert len(axes) == 1 + len(DATASETS) + 1
  assert [ax.get_title() for ax in axes] == ["Average fine-tuning", "Fine-tuning: a_ds", "Fine-tuning: b_ds",
                                             "Average 10-shot linear"]
  keys = ["finetune_avg", "finetune_a_ds", "finetune_b_ds", "fewshot10_avg"]
  for ax, key in zip(axes, keys):
    assert ax.get_xscale() == "log"
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["ViT", "ResNet (BiT)", "Hybrid"]
    for line, family in zip(lines, ["vit", "bit", "hybrid"]):
      want = sorted((r["pretrain_gflop"], 100 * r[key]) for r in rows if r["family"] == family)
      np.testing.assert_allclose(line.get_xdata(), [x for x, _ in want])
      np.testing.assert_allclose(line.get_ydata(), [y for _, y in want])
    assert len({line.get_color() for line in lines}) == len({line.get_marker() for line in lines}) == 3
  assert [t.get_text() for t in axes[0].get_legend().get_texts()] == ["ViT", "ResNet (BiT)", "Hybrid"]
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert os.listdir(path.parent) == ["figure5.png"]

  two = vit_vs_resnet_report.plot_figure5([r for r in rows if r["family"] != "hybrid"], DATASETS[:1], SHOTS[:2])
  assert len(two.get_axes()) == 3 and two.get_axes()[-1].get_title() == "Average 5-shot linear"
  assert all(len(ax.get_lines()) == 2 for ax in two.get_axes())


def test_compute_ratios_and_matched_compute():
  rows = make_rows()
  assert vit_vs_resnet_report.compute_ratios(rows) == pytest.approx({"vit": 900 / 2.5, "bit": 3100 / 7.25, "hybrid": 1.0})
  # Accuracies linear in log10(compute): interpolation is then exact at any compute inside both ranges.
  lines = {"vit": (0.1, 0.0), "bit": (0.05, 0.2)}
  members = {"vit": (1.0, 10.0, 1e4), "bit": (3.0, 1e3, 1e5)}
  rows = make_rows({f: members[f] for f in lines})
  for r in rows:
    slope, offset = lines[r["family"]]
    r["finetune_avg"] = slope * math.log10(r["pretrain_gflop"]) + offset
  matched = vit_vs_resnet_report.matched_compute(rows, "finetune_avg", points=4)
  np.testing.assert_allclose([g for g, _ in matched], np.geomspace(3.0, 1e4, 4))
  for gflop, acc in matched:
    assert acc == pytest.approx({f: s * math.log10(gflop) + o for f, (s, o) in lines.items()})
  apart = make_rows({"vit": (1.0, 2.0), "bit": (3.0, 4.0)})
  assert vit_vs_resnet_report.matched_compute(apart) == []

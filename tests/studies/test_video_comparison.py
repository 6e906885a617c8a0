"""The video comparison study end to end on the tiny moving Fashion-MNIST (6 frames of 20x20): its table, a rerun
that trains nothing, a workdir on a non-local filesystem (ram://), label columns from the config, the command line
(whose trained member the label test then finds finished, so that vivit_fdp is trained once here)."""
import csv
import io
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from etils import epath

from tests import ram_fs
from tests.experiment_files import ROOT, load_module
from tests.xla_flags import xla_flags
from tests.studies.first_device import on_first_device
from vit_video.studies import video_comparison
from vit_video.train import loop


def test_comparison_on_a_ram_workdir_writes_the_table_and_a_rerun_trains_nothing(tiny_moving_fmnist, monkeypatch,
                                                                                tmp_path):
  """Two models x two labels in a ram:// workdir (any os.path/open on a workdir would miss it: ram:// exists only
  through tf.io.gfile), then the same config again: every run is read back, nothing is retrained."""
  sweep = load_module("video_classics").sweep_config(tiny=True, models="single_frame+two_stream_flow",
                                                     data_dir=tiny_moving_fmnist)
  workdir = ram_fs.new_folder("video_classics")
  monkeypatch.chdir(tmp_path)  # a stray local folder named "ram:" would appear here
  with on_first_device():
    rows = video_comparison.run(sweep, workdir, command="pytest")
  assert [r["model"] for r in rows] == ["single_frame", "two_stream_flow"]
  written = list(csv.DictReader(io.StringIO((epath.Path(workdir) / "results.csv").read_text())))
  assert [r["model"] for r in written] == ["single_frame", "two_stream_flow"]
  assert tuple(written[0]) == video_comparison.columns(("motion", "object"))
  for r in rows:
    assert r["params"] > 0 and r["gflop_per_clip"] > 0 and r["train_clips_per_s"] > 0
    for key in ("motion_clip_top1", "motion_video_top1", "object_clip_top1", "object_video_top1"):
      assert 0.0 <= r[key] <= 1.0
  assert rows[0]["frames"] == 6
  table = (epath.Path(workdir) / "results.md").read_text()
  assert "| single_frame | 6 |" in table and "two_stream_flow" in table and "Command: `pytest`" in table
  members = [epath.Path(workdir) / m / label for m in ("single_frame", "two_stream_flow")
             for label in ("motion", "object")]
  assert all((m / "summary.json").exists() and (m / "checkpoints").exists() for m in members)
  assert os.listdir(tmp_path) == []  # nothing went to a local path
  monkeypatch.setattr(loop, "train_and_evaluate", lambda *a, **k: pytest.fail("a finished run was retrained"))
  assert video_comparison.run(sweep, workdir, command="pytest") == rows


@pytest.fixture(scope="module")
def command_line_run(tiny_moving_fmnist, tmp_path_factory):
  """(workdir, completed process) of `python -m vit_video.study` as the README runs it, on the tiny data: one model
  (vivit_fdp), the motion label only, on one device as the in-process studies here (first_device.py)."""
  workdir = tmp_path_factory.mktemp("command_line")
  arg = f"sweep,tiny,models=vivit_fdp,data_dir={tiny_moving_fmnist}"
  env = {**os.environ, "XLA_FLAGS": xla_flags(1)}
  result = subprocess.run(
      [sys.executable, "-m", "vit_video.study", f"--config=experiments/video_transformers.py:{arg}",
       f"--workdir={workdir}"], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
  return workdir, result


def test_label_columns_follow_the_config(tiny_moving_fmnist, command_line_run, monkeypatch, tmp_path):
  """The transformer comparison trains the motion label only: its table and CSV have motion columns only. The
  workdir starts with the command line's finished vivit_fdp: it is read back, only video_swin is trained."""
  sweep = load_module("video_transformers").sweep_config(tiny=True, models="vivit_fdp+video_swin",
                                                        data_dir=tiny_moving_fmnist)
  assert command_line_run[1].returncode == 0, command_line_run[1].stderr[-3000:]
  shutil.copytree(command_line_run[0] / "vivit_fdp", tmp_path / "vivit_fdp")
  trained, train_and_evaluate = [], loop.train_and_evaluate

  def recorded(config, workdir):
    trained.append(workdir)
    return train_and_evaluate(config, workdir)
  monkeypatch.setattr(loop, "train_and_evaluate", recorded)
  with on_first_device():
    rows = video_comparison.run(sweep, str(tmp_path))
  assert trained == [str(tmp_path / "video_swin" / "motion")]
  assert [r["model"] for r in rows] == ["vivit_fdp", "video_swin"]
  for r in rows:
    assert 0.0 <= r["motion_video_top1"] <= 1.0 and "object_video_top1" not in r
  table = (tmp_path / "results.md").read_text()
  assert table.startswith("# Video transformers on moving Fashion-MNIST actions")
  assert "| vivit_fdp | 6 |" in table and "motion video |" in table and "object video" not in table
  read, labels = video_comparison.read_rows(tmp_path / "results.csv")
  assert labels == ("motion",) and [r["model"] for r in read] == ["vivit_fdp", "video_swin"]
  assert read[0]["motion_video_top1"] == pytest.approx(rows[0]["motion_video_top1"])


def test_committed_results_read_back():
  """The committed tables read back with the labels they hold results for (the transformers' table was written
  before labels came from the config: its object columns are empty)."""
  rows, labels = video_comparison.read_rows(
      os.path.join(ROOT, "experiments", "results", "video_classics_cpu", "results.csv"))
  assert labels == ("motion", "object") and len(rows) == 12 and rows[0]["params"] > 0
  rows, labels = video_comparison.read_rows(
      os.path.join(ROOT, "experiments", "results", "video_transformers_cpu", "results.csv"))
  assert labels == ("motion",) and np.isnan(rows[0]["object_video_top1"]) and rows[0]["motion_video_top1"] > 0.5


def test_bad_configs_are_named():
  sweep = load_module("video_classics").sweep_config(tiny=True, models="single_frame")
  with sweep.unlocked():
    sweep.models = ("single_frame", "c4d")
  with pytest.raises(ValueError, match=r"not found: \['c4d'\]"):
    video_comparison.check_config(sweep)
  sweep = load_module("video_transformers").sweep_config(tiny=True, models="vivit_fdp")
  with sweep.unlocked():
    sweep.labels = ("motion", "object")
  with pytest.raises(ValueError, match=r"'vivit_fdp' has no config for label\(s\) \['object'\]"):
    video_comparison.check_config(sweep)


def test_study_command_line(command_line_run, tmp_path):
  """`python -m vit_video.study` as the README runs it, on the tiny data: one model, one label; the command's
  former name still starts it."""
  workdir, result = command_line_run
  assert result.returncode == 0, result.stderr[-3000:]
  assert "| vivit_fdp | 6 |" in result.stdout and "results.csv, results.md" in result.stdout
  rows, labels = video_comparison.read_rows(workdir / "results.csv")
  assert [r["model"] for r in rows] == ["vivit_fdp"] and rows[0]["params"] > 0 and labels == ("motion",)
  assert "Command: `python -m vit_video.study" in (workdir / "results.md").read_text()
  # A config that names no study (a member's training config), through the command's former name.
  bad = subprocess.run([sys.executable, "-m", "vit_video.video_sweep", "--config=experiments/video_classics.py",
                        f"--workdir={tmp_path / 'bad'}"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "XLA_FLAGS": xla_flags(2)})
  assert bad.returncode != 0 and "`study` field must name one of vit_vs_resnet, video_comparison" in bad.stderr

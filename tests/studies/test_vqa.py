"""Tests for vit_video.studies.vqa: the accuracy per question type, and a tiny end-to-end run that writes the report
and skips its finished members when run again."""
import csv
import math

import numpy as np
import pytest

from tests.experiment_files import get_config
from vit_video.data import easy_vqa
from vit_video.studies import vqa
from vit_video.train.run_folder import RunFolder


def test_accuracy_by_type_is_the_count_weighted_mean_of_its_types():
  rng = np.random.default_rng(0)
  answers = rng.integers(0, 13, 57)
  predictions = np.where(rng.random(57) < 0.6, answers, rng.integers(0, 13, 57))
  types = rng.integers(0, 3, 57)
  scores = vqa.accuracy_by_type(predictions, answers, types)
  assert scores["all"] == pytest.approx(np.mean(predictions == answers))
  counts = np.bincount(types, minlength=3)
  weighted = sum(scores[t] * counts[i] for i, t in enumerate(easy_vqa.QUESTION_TYPES)) / counts.sum()
  assert scores["all"] == pytest.approx(weighted)
  assert vqa.accuracy_by_type(answers, answers, types) == {"all": 1.0, "shape": 1.0, "color": 1.0, "yes_no": 1.0}
  no_color = vqa.accuracy_by_type(answers[:3], answers[:3], np.array([0, 2, 2]))
  assert math.isnan(no_color["color"]) and no_color["all"] == 1.0
  with pytest.raises(ValueError, match="must be"):
    vqa.accuracy_by_type(predictions, answers[:5], types)


def test_tiny_study_writes_the_report_and_skips_finished_members(tmp_path, monkeypatch, tiny_easy_vqa):
  config = get_config("vqa", "tiny")
  config.data_dir = tiny_easy_vqa
  config.models = ("question_only", "san_lstm")
  workdir = str(tmp_path / "study")
  rows = vqa.run(config, workdir, command="the command", notes="the notes")
  assert [r["model"] for r in rows] == ["question_only", "san_lstm"]
  for name in vqa.REPORT:
    assert (tmp_path / "study" / name).stat().st_size > 0
  with open(tmp_path / "study" / "results.csv") as f:
    table = list(csv.DictReader(f))
  assert [r["model"] for r in table] == ["question_only", "san_lstm"] and tuple(table[0]) == vqa.COLUMNS
  train, test, vocabulary = vqa.load_data(config)
  counts = np.bincount(test.types, minlength=3)
  for r in rows:
    per_type = [r[f"test_{t}_accuracy"] for t in easy_vqa.QUESTION_TYPES]
    assert r["test_accuracy"] == pytest.approx(np.dot(per_type, counts) / counts.sum())
    assert (tmp_path / "study" / r["model"] / vqa.PARAMS).exists()
  assert "the command" in (tmp_path / "study" / "results.md").read_text()
  # The attention maps of the trained SAN: K layers of the 8x8 grid (64x64 images), each a distribution.
  model = vqa.make_model(config, "san_lstm", len(vocabulary))
  variables = vqa.load_variables(model, RunFolder(workdir).child("san_lstm"), test.batch(np.arange(2)))
  assert tuple(RunFolder(workdir).read_json(vqa.VOCABULARY)) == vocabulary
  answers, attention = vqa.attention_maps(model, variables, *test.batch(np.arange(5)))
  assert answers.shape == (5,) and attention.shape == (2, 5, 8, 8)
  np.testing.assert_allclose(attention.sum(axis=(2, 3)), 1.0, rtol=1e-5)

  def no_training(*args, **kwargs):
    raise AssertionError("a finished member was trained again")
  monkeypatch.setattr(vqa, "train_member", no_training)
  again = vqa.run(config, workdir)
  assert again == rows
  assert len(train) == 123

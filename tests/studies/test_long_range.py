"""The long-range study (vit_video/studies/long_range.py) on the tiny config: the report end to end and a re-run
that trains nothing; its batches, breakdown rule and gradient-norm measurement as properties."""
import csv
import functools
import io
import json

import jax
import numpy as np
import pytest

from tests.experiment_files import get_config
from vit_video.models import sequence
from vit_video.studies import long_range


def test_tiny_study_writes_the_report_and_a_rerun_trains_nothing(tmp_path, monkeypatch):
  config = get_config("long_range", "tiny").copy_and_resolve_references()
  config.models = ("lstm", "transformer")  # the GRU differs from the LSTM only in its cell
  rows = long_range.run(config, str(tmp_path), command="pytest", notes="versions here")
  assert [r["model"] for r in rows] == ["lstm", "transformer"]
  for name in long_range.REPORT:
    assert (tmp_path / name).stat().st_size > 0, name
  written = list(csv.DictReader(io.StringIO((tmp_path / "results.csv").read_text())))
  assert tuple(written[0]) == long_range.columns(config) and len(written) == 2
  for r in rows:
    assert r["params"] > 0 and r["steps"] == 6 and r["train_examples"] == 6 * 3  # 24 tokens // 8 per batch
    assert all(0.0 <= r[f"acc_d{d}"] <= 1.0 for d in (2, 4, 8))
  curves = json.loads((tmp_path / "lstm" / "gradient_norms.json").read_text())
  assert curves["distance"] == list(range(1, 9)) and len(curves["init"]) == len(curves["trained"]) == 8
  assert all(g > 0 for g in curves["init"])
  report = (tmp_path / "results.md").read_text()
  assert "| lstm |" in report and "Command: `pytest`" in report and "versions here" in report
  assert "breaks down" in report or "above 50% at every distance" in report
  single = list(csv.DictReader(io.StringIO((tmp_path / "single_distance.csv").read_text())))
  assert [(r["model"], r["distance"]) for r in single] == [("lstm", "8")] and 0 <= float(single[0]["accuracy"]) <= 1
  assert (tmp_path / "lstm_only_d8" / "summary.json").exists() and "| lstm | " in report.split("one distance only")[1]
  monkeypatch.setattr(long_range, "train_member", lambda *a: pytest.fail("a finished member was retrained"))
  assert long_range.run(config, str(tmp_path)) == rows
  other = config.copy_and_resolve_references()
  other.train.steps = 7
  with pytest.raises(ValueError, match="another config"):
    long_range.run(other, str(tmp_path))


def test_every_step_gives_every_member_the_same_batch_within_the_token_budget():
  config = get_config("long_range", "cpu")
  lengths = config.train.train_lengths
  for step in (0, 3, 7, 8, 13):
    b = long_range.train_batch(config, step)
    n = lengths[step % len(lengths)]
    assert b["tokens"].shape == (min(64, 8192 // n), n)
    assert b["distance"].max() <= n and set(b["distance"].tolist()) <= set(config.task.distances)
    np.testing.assert_array_equal(long_range.train_batch(config, step)["tokens"], b["tokens"])
  long_range.check_config(config)


def test_breakdown_is_the_first_distance_below_half_and_chance_the_tail_near_it():
  accuracy = {8: 1.0, 16: 0.9, 32: 0.4, 64: 0.6, 128: 0.08, 256: 0.05}
  assert long_range.breakdown(accuracy, 1 / 16, 256) == (32, 128)  # 3 s.e. of 1/16 at n=256: 0.107
  assert long_range.breakdown({8: 0.9, 16: 0.7}, 0.25, 100) == (None, None)
  assert long_range.breakdown({8: 0.2, 16: 0.9, 32: 0.1}, 0.1, 100) == (8, 32)  # chance only from the tail


def test_zero_from_is_where_the_gradient_underflows_for_good():
  assert long_range.zero_from([0.5, 0.0, 0.1, 0.0, 0.0]) == 4
  assert long_range.zero_from([0.5, 0.1]) is None
  assert long_range.zero_from([0.0, 0.0]) == 1


def test_gradient_norms_vanish_with_distance_through_an_lstm_not_through_attention():
  """At initialisation, ||d loss / d x_t|| through a toy LSTM falls by orders of magnitude from distance 2 to 48;
  through a one-block Transformer it stays within a factor of 3 (every token is one attention step from the
  output; distance 1, the read-out token, also has the residual path and is left out)."""
  config = get_config("long_range", "tiny").copy_and_resolve_references()
  config.task.eval_length = 48
  config.task.distances = (2, 48)
  config.eval.grad_examples = 4
  ratios = {}
  for name, kw in (("lstm", dict(features=6, embed_dim=5)), ("transformer", dict(width=8, depth=1, mlp_dim=12))):
    model = sequence.VARIANTS[name](vocab_size=8, num_classes=4, **kw)
    tokens = np.zeros((1, 4), np.int32)
    params = jax.jit(functools.partial(model.init, train=False))(jax.random.key(1), tokens)["params"]
    norms = long_range.gradient_norms_by_distance(model, params, config)
    assert len(norms) == 48 and min(norms) > 0
    ratios[name] = norms[-1] / norms[1]
    assert ratios[name] == pytest.approx(long_range.gradient_ratio(config, norms))  # the report's ratio
  assert ratios["lstm"] < 1e-3, ratios
  assert 1 / 3 < ratios["transformer"] < 3, ratios

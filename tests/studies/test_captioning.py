"""Tests for the captioning study (vit_video/studies/captioning.py) and caption_eval: the BLEU/CIDEr wrapper's
properties, the vocabulary, consensus re-ranking, nearest neighbours; then one tiny end-to-end run (fmnist_captions/
tiny, toy encoder and decoder, 4 steps each) that writes the report and is skipped when run again."""
import csv
import importlib.util
import os
import time

import numpy as np
import pytest

from vit_video.data import caption_eval as ce
from vit_video.studies import captioning

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REFS = {0: ["a bag above a shirt", "a shirt below a bag", "a bag and a shirt"],
        1: ["two dresses", "a picture of two dresses"],
        2: ["a coat to the left of a sandal", "a sandal to the right of a coat"]}


def test_identical_captions_score_one_and_unrelated_ones_do_not():
  perfect = ce.score(REFS, {k: v[0] for k, v in REFS.items()})
  for n in range(1, 5):
    assert perfect[f"bleu{n}"] == pytest.approx(1.0, abs=1e-6)
  unrelated = ce.score(REFS, {0: "four boots", 1: "three boots", 2: "four boots"})
  assert unrelated["bleu1"] == pytest.approx(0.0, abs=1e-6) and unrelated["cider"] == pytest.approx(0.0, abs=1e-6)
  partial = ce.score(REFS, {0: "a bag above a coat", 1: "two dresses", 2: "a coat"})
  assert 0 < partial["bleu4"] < 1 and 0 < partial["cider"] < perfect["cider"]


def test_tokenising_ignores_case_and_punctuation():
  assert ce.tokenize("Two shirts, above a BAG.") == ["two", "shirts", "above", "a", "bag"]
  shouting = {0: "A BAG ABOVE A SHIRT!", 1: "Two dresses.", 2: "a coat, to the left of a sandal"}
  assert ce.score(REFS, shouting) == ce.score(REFS, {0: "a bag above a shirt", 1: "two dresses",
                                                     2: "a coat to the left of a sandal"})


def test_scoring_needs_matching_ids_and_lists_of_references():
  with pytest.raises(ValueError, match="same ids"):
    ce.score(REFS, {0: "a bag"})
  with pytest.raises(ValueError, match="non-empty list of captions"):
    ce.score({0: "a bag"}, {0: "a bag"})


def test_vocabulary_round_trip_and_bounds():
  vocab = ce.Vocabulary.build(["a bag above a shirt", "a shirt"])
  assert vocab.words[:4] == ce.SPECIALS and vocab.words[4:] == ("a", "shirt", "above", "bag")
  ids = vocab.encode("A bag above a coat", max_len=8)
  np.testing.assert_array_equal(ids, [1, 4, 7, 6, 4, 3, 2, 0])  # <bos> a bag above a <unk> <eos> <pad>
  assert vocab.decode(ids) == "a bag above a <unk>"
  with pytest.raises(ValueError, match="needs 7 tokens with <bos> and <eos>; max_len is 6"):
    vocab.encode("a bag above a shirt", max_len=6)


def test_consensus_picks_the_caption_the_others_agree_with():
  captions = ["two dresses", "a bag above a shirt", "a bag above a coat", "a shirt below a bag"]
  assert ce.consensus(captions) == 1
  assert ce.consensus(["a bag"]) == 0


def test_nearest_neighbours_are_the_most_cosine_similar_in_order():
  rng = np.random.default_rng(0)
  train = rng.normal(size=(13, 5))
  queries = np.concatenate([3.0 * train[[4, 9]], rng.normal(size=(2, 5))])  # a scaled copy is its own nearest
  found = captioning.nearest_neighbours(train, queries, k=3)
  assert found.shape == (4, 3) and list(found[:2, 0]) == [4, 9]
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  expected = np.argsort(-(unit(queries) @ unit(train).T), axis=1)[:, :3]
  np.testing.assert_array_equal(found, expected)


def test_noun_attention_measures_the_weight_on_the_named_items_quarters():
  """A 2x4 grid (quarters: columns 0-1 left, 2-3 right); a bag in cell 1 (top right), trousers in cell 2 (bottom
  left). "bag" puts 0.7 on the top right, "trousers" attends uniformly (1/4 on its quarter); "a" is no noun and
  "shirt" names no item of the scene, so neither counts."""
  vocab = ce.Vocabulary.build(["a bag above a shirt", "two bags", "a pair of trousers"])
  tokens = np.array([[vocab.index[w] for w in ("a", "bag", "trousers", "shirt")] + [2]])
  alphas = np.zeros((1, 5, 8))
  alphas[0, 1, [2, 4]] = (0.7, 0.3)
  alphas[0, 2:4] = 1 / 8
  found = captioning.noun_attention(tokens, alphas, vocab, [np.array([8, 1])], [np.array([1, 2])], (2, 4))
  assert found == pytest.approx({"weight": (0.7 + 0.25) / 2, "chance": 0.25, "words": 2})


def _config(data_dir):
  spec = importlib.util.spec_from_file_location("captioning_config", os.path.join(ROOT, "experiments",
                                                                                  "captioning.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("tiny").unlock()
  config.dataset.data_dir = data_dir
  return config.lock()


def test_tiny_run_writes_the_report_and_is_skipped_when_finished(tiny_captions, tmp_path):
  config = _config(tiny_captions)
  rows = captioning.run(config, str(tmp_path), command="test", notes="versions")
  assert [(r["method"], r["split"]) for r in rows] == [(m, s) for m in captioning.METHODS for s in captioning.SPLITS]
  for name in captioning.REPORT + ("config.json", "summary.json"):
    assert (tmp_path / name).exists()
  table = list(csv.DictReader(open(tmp_path / "results.csv")))
  assert len(table) == len(rows) and int(table[0]["scenes"]) == 24
  assert int(table[1]["scenes"]) + int(table[2]["scenes"]) == 24
  assert "| attention_beam | test | 24 |" in (tmp_path / "results.md").read_text()
  assert "of the word's attention falls on the quarters" in (tmp_path / "results.md").read_text()
  for stage in ("encoder", "decoder"):
    assert (tmp_path / stage / "summary.json").exists() and (tmp_path / stage / "metrics.jsonl").exists()
  start = time.perf_counter()
  again = captioning.run(config, str(tmp_path))
  assert time.perf_counter() - start < 1.0
  assert [r["method"] for r in again] == [r["method"] for r in rows]
  np.testing.assert_allclose([r["bleu4"] for r in again], [r["bleu4"] for r in rows])

"""Tests for vit_video.data.easy_vqa: the tfds builder of easy-VQA (its tiny config) and the question vocabulary."""
import collections
import json
import os

import easy_vqa as package
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from vit_video.data import builders  # noqa: F401  (registers the builders)
from vit_video.data import easy_vqa


@pytest.fixture(scope="module")
def tiny(tiny_easy_vqa):
  return tfds.builder("easy_vqa/tiny", data_dir=tiny_easy_vqa)  # prepared by the conftest fixture


def _package_questions(split):
  """[(text, answer, image_id)] of the package's questions.json, read here without the module."""
  with open(os.path.join(os.path.dirname(package.__file__), "data", split, "questions.json")) as f:
    return [tuple(q) for q in json.load(f)]


def test_full_counts_and_the_types_partition_the_questions_consistently_with_the_answers():
  counts = {}
  for split, (questions, images) in {"train": (38_575, 4_000), "test": (9_673, 1_000)}.items():
    qs = easy_vqa.read_split(split)
    assert len(qs) == questions and len({q.image_id for q in qs}) == images
    types = collections.Counter()
    for q in qs:
      t = easy_vqa.question_type(q.text)  # exactly one type per question (a function of the text)
      assert q.answer in easy_vqa.TYPE_ANSWERS[t], (q, t)
      types[t] += 1
    assert sum(types.values()) == questions
    counts[split] = dict(types)
  assert counts["train"] == {"shape": 5_002, "color": 5_166, "yes_no": 28_407}  # as the module docstring says
  assert counts["test"] == {"shape": 1_257, "color": 1_280, "yes_no": 7_136}
  assert set(easy_vqa.ANSWERS) == {a for answers in easy_vqa.TYPE_ANSWERS.values() for a in answers}
  assert len(easy_vqa.ANSWERS) == 13 and tuple(package.get_answers()) == easy_vqa.ANSWERS


def test_tiny_builder_holds_exactly_the_questions_of_its_images(tiny):
  assert tiny.info.features["answer"].names == list(easy_vqa.ANSWERS)
  assert tiny.info.features["question_type"].names == list(easy_vqa.QUESTION_TYPES)
  paths = {"train": package.get_train_image_paths(), "test": package.get_test_image_paths()}
  for split, max_id in (("train", 12), ("test", 6)):
    expected = [q for q in _package_questions(split) if q[2] < max_id]
    examples = list(tiny.as_dataset(split=split, shuffle_files=False).as_numpy_iterator())
    assert tiny.info.splits[split].num_examples == len(expected) == len(examples) > 0
    got = sorted((e["question"].decode(), easy_vqa.ANSWERS[e["answer"]], int(e["image_id"])) for e in examples)
    assert got == sorted(expected)
    assert {int(e["image_id"]) for e in examples} == set(range(max_id))
    for e in examples:
      assert e["question_type"] == easy_vqa.QUESTION_TYPES.index(easy_vqa.question_type(e["question"].decode()))
      assert e["image"].shape == (64, 64, 3) and e["image"].dtype == np.uint8
    first = examples[0]
    np.testing.assert_array_equal(first["image"], np.asarray(Image.open(paths[split][first["image_id"]])))


def test_question_type_rule():
  assert easy_vqa.question_type("What color is the triangle?") == "color"
  assert easy_vqa.question_type("what is the color of the shape?") == "color"
  assert easy_vqa.question_type("what is the blue shape?") == "shape"
  assert easy_vqa.question_type("does the image not contain a red shape?") == "yes_no"
  assert easy_vqa.question_type("is no circle present?") == "yes_no"
  with pytest.raises(ValueError, match="neither 'what'"):
    easy_vqa.question_type("how many shapes?")
  with pytest.raises(ValueError, match="split 'val'"):
    easy_vqa.read_split("val")


def test_tokenize_lowercases_and_drops_punctuation():
  assert easy_vqa.tokenize("What COLOR is the shape?") == ["what", "color", "is", "the", "shape"]
  assert easy_vqa.tokenize("  is there,a  red-circle?? ") == ["is", "there", "a", "red", "circle"]
  assert easy_vqa.tokenize("?!") == []


def test_vocabulary_order_and_min_count():
  texts = ["b a c?", "a b", "a d", "e"]  # counts: a 3, b 2, c d e 1
  assert easy_vqa.build_vocabulary(texts) == ("<pad>", "<unk>", "a", "b", "c", "d", "e")
  assert easy_vqa.build_vocabulary(texts, min_count=2) == ("<pad>", "<unk>", "a", "b")
  with pytest.raises(ValueError, match="min_count"):
    easy_vqa.build_vocabulary(texts, min_count=0)


def test_encode_pads_marks_unknown_words_and_round_trips():
  vocabulary = easy_vqa.build_vocabulary(["is there a red circle?", "what color is the shape?"])
  texts = ["What color is the circle?", "is there a blue shape?", "circle"]
  ids, lengths = easy_vqa.encode_questions(texts, vocabulary, 7)
  assert ids.shape == (3, 7) and ids.dtype == np.int32 and lengths.tolist() == [5, 5, 1]
  for row, n, text in zip(ids, lengths, texts):
    assert np.all(row[n:] == 0) and np.all(row[:n] != 0)  # PAD exactly after the words
    decoded = [vocabulary[i] for i in row[:n]]
    assert decoded == [w if w in vocabulary else "<unk>" for w in easy_vqa.tokenize(text)]
  assert ids[1, 3] == 1  # "blue" is unknown
  with pytest.raises(ValueError, match="has 5 words"):
    easy_vqa.encode_questions(texts, vocabulary, 4)
  with pytest.raises(ValueError, match="has 0 words"):
    easy_vqa.encode_questions(["?"], vocabulary, 4)
  with pytest.raises(ValueError, match="starts with"):
    easy_vqa.encode_questions(texts, vocabulary[2:], 7)

"""easy-VQA (Victor Zhou's `easy-vqa` 1.0 on PyPI) as a tfds builder, and the vocabulary of its questions.

The package ships 4,000 train and 1,000 test 64x64 RGB images, each of one shape (circle, rectangle, triangle) of one
colour (8 colours) on a plain background, with template questions about them and 13 answers (the shapes, the colours,
yes, no). `EasyVqa` stores one example per question:

  image          (64, 64, 3) uint8, the package's PNG bytes as they are (not re-encoded)
  question       text, e.g. "what color is the triangle?"
  answer         ClassLabel of ANSWERS, the package's answers.txt order
  question_type  ClassLabel of QUESTION_TYPES, derived from the question's words (`question_type`): "color" for a
                 "what ..." question naming "color", "shape" for any other "what ..." question, "yes_no" for the
                 questions starting "is" or "does". The rule is checked against the answers: every "color" question
                 is answered by a colour, every "shape" one by a shape, every "yes_no" one by yes or no
                 (tests/data/test_easy_vqa.py).
  image_id       the package's image id (its file name), an int

Configs: `default`, every question (train 38,575 questions of 4,000 images, test 9,673 of 1,000; types in train:
shape 5,002, color 5,166, yes_no 28,407; the package's questions.json order, example key = that index); `tiny`,
only the questions of the images with id < 12 (train) or < 6 (test), for tests. Nothing is downloaded: the data
comes from the installed package (`pip install easy-vqa`, imported only when the dataset is built).

  python -m vit_video.data.prepare easy_vqa        # 14 s here, 42 s with the 2 CPU cores busy with other jobs
  python -m vit_video.data.prepare easy_vqa/tiny

Question vocabulary (`tokenize`, `build_vocabulary`, `encode_questions`): lower-case words (runs of letters, digits
and apostrophes; punctuation and spaces separate them and are dropped), ids 0 = PAD ("<pad>") and 1 = UNK ("<unk>"),
then the training questions' words by falling count (ties alphabetical); questions become ids padded with PAD to a
fixed length, and their lengths.
"""
import collections
import dataclasses
import re
from collections.abc import Iterable, Sequence

import numpy as np
import tensorflow_datasets as tfds

# The package's data/answers.txt, in its order (checked against the package when the dataset is built).
ANSWERS = ("circle", "green", "red", "gray", "yes", "teal", "black", "rectangle", "yellow", "triangle", "brown",
           "blue", "no")
SHAPES = ("circle", "rectangle", "triangle")
COLORS = ("green", "red", "gray", "teal", "black", "yellow", "brown", "blue")
QUESTION_TYPES = ("shape", "color", "yes_no")
TYPE_ANSWERS = {"shape": SHAPES, "color": COLORS, "yes_no": ("yes", "no")}  # what each type is answered by
IMAGE_SHAPE = (64, 64, 3)
SPLITS = ("train", "test")
PAD, UNK = "<pad>", "<unk>"  # ids 0 and 1 of every vocabulary
_WORD = re.compile(r"[a-z0-9']+")


def question_type(question: str) -> str:
  """'what color is the shape?' -> 'color'; 'what is the blue shape?' -> 'shape'; 'is there a red circle?' ->
  'yes_no'. From the words alone (see the module docstring); ValueError on a question of another form."""
  words = tokenize(question)
  if words and words[0] == "what":
    return "color" if "color" in words else "shape"
  if words and words[0] in ("is", "does"):
    return "yes_no"
  raise ValueError(f"question {question!r} is not an easy-VQA question: it starts with neither 'what', 'is' "
                   "nor 'does'")


@dataclasses.dataclass(frozen=True)
class Question:
  """One question of the package: its text, answer (a word of ANSWERS) and image (id and PNG path)."""
  text: str
  answer: str
  image_id: int
  image_path: str


def read_split(split: str, *, max_image_id: int | None = None) -> list[Question]:
  """The package's questions of `split` ('train' or 'test') in its order, only those of images with id <
  `max_image_id` when given. Raises ImportError saying how to install easy-vqa when it is missing, ValueError on an
  unknown split or an answer outside ANSWERS."""
  if split not in SPLITS:
    raise ValueError(f"split {split!r} is not one of {SPLITS}")
  try:
    import easy_vqa as package  # noqa: PLC0415  (optional dependency, needed only to build)
  except ImportError as e:
    raise ImportError("easy_vqa needs the package easy-vqa, which holds the data: `pip install easy-vqa`") from e
  if tuple(package.get_answers()) != ANSWERS:
    raise ValueError(f"the installed easy-vqa's answers {package.get_answers()} are not {ANSWERS} (version 1.0's)")
  texts, answers, image_ids = package.get_train_questions() if split == "train" else package.get_test_questions()
  paths = package.get_train_image_paths() if split == "train" else package.get_test_image_paths()
  questions = []
  for text, answer, image_id in zip(texts, answers, image_ids):
    if answer not in ANSWERS:
      raise ValueError(f"easy-vqa {split} question {text!r} has the answer {answer!r}, not one of {ANSWERS}")
    if max_image_id is None or image_id < max_image_id:
      questions.append(Question(text, answer, int(image_id), paths[image_id]))
  return questions


@dataclasses.dataclass(kw_only=True)
class EasyVqaConfig(tfds.core.BuilderConfig):
  """Which questions an `easy_vqa` config keeps."""
  max_image_ids: dict[str, int] | None = None  # split -> keep the questions of images with id < this; None: all


class EasyVqa(tfds.core.GeneratorBasedBuilder):
  """easy-VQA: template questions about one coloured shape per image; 13 answers."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: easy-vqa 1.0's questions, one example per question."}
  BUILDER_CONFIGS = [
      EasyVqaConfig(name="default", description="Every question: train 38,575 (4,000 images), test 9,673 (1,000)."),
      EasyVqaConfig(name="tiny", description="The questions of train images 0-11 and test images 0-5 (for tests).",
                    max_image_ids={"train": 12, "test": 6}),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            "easy-VQA (the PyPI package easy-vqa 1.0): 64x64 images of one coloured shape and template questions "
            "about it, answered by one of 13 words. One example per question; question_type (shape, color, yes_no) "
            "is derived from the question's words."),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=IMAGE_SHAPE, encoding_format="png"),
            "question": tfds.features.Text(),
            "answer": tfds.features.ClassLabel(names=list(ANSWERS)),
            "question_type": tfds.features.ClassLabel(names=list(QUESTION_TYPES)),
            "image_id": np.int64,
        }),
        homepage="https://github.com/vzhou842/easy-VQA",
        citation="@misc{zhou2020easyvqa, title={easy-VQA: a simple VQA dataset}, author={Zhou, Victor}, "
                 "howpublished={\\url{https://github.com/vzhou842/easy-VQA}}, year={2020}}",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # nothing to download: the package holds the data
    limits = self.builder_config.max_image_ids or {}
    return {split: self._generate_examples(read_split(split, max_image_id=limits.get(split))) for split in SPLITS}

  def _generate_examples(self, questions: list[Question]):
    for index, q in enumerate(questions):
      yield index, {"image": q.image_path, "question": q.text, "answer": q.answer,
                    "question_type": question_type(q.text), "image_id": q.image_id}


def tokenize(text: str) -> list[str]:
  """'What color is the shape?' -> ['what', 'color', 'is', 'the', 'shape']: lower-case words, punctuation dropped."""
  return _WORD.findall(text.lower())


def build_vocabulary(texts: Iterable[str], *, min_count: int = 1) -> tuple[str, ...]:
  """(PAD, UNK, then every word met at least `min_count` times, by falling count, ties alphabetical)."""
  if min_count < 1:
    raise ValueError(f"min_count must be >= 1, got {min_count}")
  counts = collections.Counter(word for text in texts for word in tokenize(text))
  words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
  return (PAD, UNK, *words)


def encode_questions(texts: Sequence[str], vocabulary: Sequence[str], length: int) -> tuple[np.ndarray, np.ndarray]:
  """N questions -> (ids int32 [N,L] padded with 0 = PAD, unknown words 1 = UNK; lengths int32 [N], >= 1).

  ValueError naming the question when one has no word or more than `length` words, or when the vocabulary does not
  start with (PAD, UNK).
  """
  if tuple(vocabulary[:2]) != (PAD, UNK):
    raise ValueError(f"a vocabulary starts with {(PAD, UNK)}, this one with {tuple(vocabulary[:2])}")
  index = {word: i for i, word in enumerate(vocabulary)}
  ids = np.zeros((len(texts), length), np.int32)
  lengths = np.zeros(len(texts), np.int32)
  for n, text in enumerate(texts):
    words = tokenize(text)
    if not 1 <= len(words) <= length:
      raise ValueError(f"question {text!r} has {len(words)} words; questions need 1 to length={length}")
    ids[n, :len(words)] = [index.get(w, 1) for w in words]
    lengths[n] = len(words)
  return ids, lengths

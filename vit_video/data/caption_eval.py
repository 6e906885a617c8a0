"""Caption text: tokenising, the vocabulary, and the scores of generated captions (BLEU-1..4, CIDEr).

    vocab = Vocabulary.build(train_captions)               # words of the training captions, in frequency order
    ids = vocab.encode("a bag above a shirt", max_len=12)  # [L] int32: <bos> words <eos> <pad>...
    scores = score(references, candidates)                 # {"bleu1".."bleu4", "cider"}

Scores come from pycocoevalcap (the COCO caption evaluation code): `Bleu(4)` (corpus BLEU with the "closest"
reference length) and `Cider` (its CIDEr is CIDEr-D: Gaussian length penalty, clipped counts, times 10; document
frequencies from the references of the captions scored). COCO's scripts tokenise with the Stanford PTB tokenizer,
which needs Java; `tokenize` here lower-cases, turns every character other than a-z, 0-9 and ' into a space and
splits, which is what PTB tokenising does to captions made of plain words (as in `fmnist_captions`).
"""
import dataclasses
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)  # ids 0, 1, 2, 3
METRICS = ("bleu1", "bleu2", "bleu3", "bleu4", "cider")
_NON_WORD = re.compile(r"[^a-z0-9']+")


def tokenize(caption: str) -> list[str]:
  """'Two shirts, above a bag.' -> ['two', 'shirts', 'above', 'a', 'bag']."""
  return _NON_WORD.sub(" ", caption.lower()).split()


@dataclasses.dataclass(frozen=True)
class Vocabulary:
  """Words <-> ids: ids 0-3 are <pad>, <bos>, <eos>, <unk>; then the words, most frequent first."""
  words: tuple[str, ...]  # every id's word, specials first

  @classmethod
  def build(cls, captions: Iterable[str], *, min_count: int = 1) -> "Vocabulary":
    """The words occurring at least `min_count` times in `captions` (ties in alphabetical order)."""
    counts = Counter(w for c in captions for w in tokenize(c))
    if not counts:
      raise ValueError("cannot build a vocabulary from no words")
    kept = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
    return cls(SPECIALS + tuple(kept))

  def __len__(self) -> int:
    return len(self.words)

  @property
  def index(self) -> dict[str, int]:
    return {w: i for i, w in enumerate(self.words)}

  def encode(self, caption: str, *, max_len: int) -> np.ndarray:
    """A caption -> int32 [max_len]: <bos>, its word ids (<unk> for unknown words), <eos>, then <pad>.

    ValueError when the caption does not fit (its words plus <bos> and <eos> exceed max_len)."""
    index = self.index
    ids = [1] + [index.get(w, 3) for w in tokenize(caption)] + [2]
    if len(ids) > max_len:
      raise ValueError(f"caption {caption!r} needs {len(ids)} tokens with <bos> and <eos>; max_len is {max_len}")
    return np.array(ids + [0] * (max_len - len(ids)), np.int32)

  def decode(self, ids: Sequence[int]) -> str:
    """Word ids -> a caption: stops at the first <eos> or <pad>, drops <bos>."""
    words = []
    for i in ids:
      i = int(i)
      if i in (0, 2):
        break
      if i != 1:
        words.append(self.words[i])
    return " ".join(words)


def _prepared(references: Mapping, candidates: Mapping) -> tuple[dict, dict]:
  if not candidates:
    raise ValueError("no captions to score")
  if set(references) != set(candidates):
    missing = sorted(set(candidates) ^ set(references), key=str)[:5]
    raise ValueError(f"references and candidates must have the same ids; differing ids (first 5): {missing}")
  gts, res = {}, {}
  for key, refs in references.items():
    if isinstance(refs, str) or not refs:
      raise ValueError(f"references of {key!r} must be a non-empty list of captions, got {refs!r}")
    gts[key] = [" ".join(tokenize(r)) for r in refs]
    res[key] = [" ".join(tokenize(candidates[key]))]
  return gts, res


def score(references: Mapping[object, Sequence[str]], candidates: Mapping[object, str]) -> dict[str, float]:
  """Corpus BLEU-1..4 and CIDEr(-D) of `candidates` (id -> caption) against `references` (id -> captions)."""
  gts, res = _prepared(references, candidates)
  bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
  cider, _ = Cider().compute_score(gts, res)
  return {**{f"bleu{n + 1}": float(b) for n, b in enumerate(bleu)}, "cider": float(cider)}


def bleu_per_caption(references: Mapping[object, Sequence[str]], candidates: Mapping[object, str]) -> dict:
  """Sentence-level BLEU of each candidate against its own references, the mean of BLEU-1..4 (pycocoevalcap's
  per-caption scores, smoothed by its tiny constants, so a caption with no 4-gram in common still ranks by its
  shorter n-grams)."""
  gts, res = _prepared(references, candidates)
  _, per_n = Bleu(4).compute_score(gts, res, verbose=0)  # [4][num captions]
  return {key: float(np.mean([s[i] for s in per_n])) for i, key in enumerate(gts)}


def consensus(captions: Sequence[str]) -> int:
  """The index of the caption that agrees most with the others (Devlin et al. 2015's consensus re-ranking): the
  caption most often among them, and among those the one with the highest `bleu_per_caption` against all the other
  distinct captions as references. Ties: the first. One caption: 0.

  Each distinct caption is scored once (a repeated reference changes no BLEU count), which keeps the cost at
  distinct x distinct sentence pairs. BLEU, not CIDEr: CIDEr's document frequencies would come from these few
  captions, and an n-gram shared by every caption's references (all but one of the same captions) gets weight 0,
  so every score would be 0."""
  if not captions:
    raise ValueError("consensus needs at least one caption")
  counts = Counter(captions)
  distinct = list(counts)
  if len(distinct) == 1:
    return 0
  scores = bleu_per_caption({i: [d for d in distinct if d != c] for i, c in enumerate(distinct)},
                            dict(enumerate(distinct)))
  best = max(range(len(distinct)), key=lambda i: (counts[distinct[i]], scores[i], -i))
  return captions.index(distinct[best])

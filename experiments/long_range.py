"""The RNN's long-range problem, measured: marker recall against distance for an LSTM, a GRU and a Transformer.

    python -m vit_video.study --config=experiments/long_range.py:cpu --workdir=workdirs/long_range_cpu
    python -m vit_video.study --config=experiments/long_range.py:tiny --workdir=/tmp/long_range_tiny

The task (vit_video/data/long_range.py): 16 content tokens and one marked token (ids 16-31: the marked copies); the
answer is the marked token's identity, at distance d in {8, 16, ..., 1024} from the end of a 1,024-token sequence;
chance is 1/16. The models
(vit_video/models/sequence.py VARIANTS, about 26k parameters each): an LSTM of 64 units, a GRU of 74, a
Transformer of width 32, 3 blocks, 2 heads, sinusoidal positions, each reading out the last position. The study
(vit_video/studies/long_range.py) trains them on the same batches and reports accuracy per distance and the
LSTM's (and the others') gradient norms with respect to early inputs; then the LSTM and the GRU again, trained on
one distance at a time (sequences of exactly d tokens), to see up to which distance the dependency can be learnt
from its own gradient.

Scales: `cpu` the committed run (experiments/results/long_range_cpu/); `tiny` toy sizes for the tests (seconds).
"""
import ml_collections

from vit_video import configs

SCALES = ("cpu", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  scale = configs.pick_scale(arg, SCALES, default="cpu")
  tiny = scale == "tiny"
  c = ml_collections.ConfigDict()
  c.study = "long_range"  # The study that runs this config (vit_video/studies/long_range.py).
  c.title = "The RNN's long-range problem: marked-token recall against distance"  # The report's heading.
  c.seed = 0  # Initialisation and the data streams (train and test batches are functions of it).
  c.dtype = "float32"  # Compute dtype, "float32" or "bfloat16".

  c.task = ml_collections.ConfigDict()
  c.task.vocab_size = 4 if tiny else 16  # K content tokens (ids K..2K-1 are their marked copies); chance 1/K.
  c.task.distances = (2, 4, 8) if tiny else (8, 16, 32, 64, 128, 256, 512, 1024)  # Distances of the answer from
  #   the end: trained as a mix, scored one by one.
  c.task.eval_length = 8 if tiny else 1024  # N of the test sequences (the longest distance: the first token).

  c.train = ml_collections.ConfigDict()
  c.train.steps = 6 if tiny else 800  # AdamW steps, the same for every model.
  c.train.train_lengths = (8,) if tiny else (8, 16, 32, 64, 128, 256, 512, 1024)  # Step i's sequence length
  #   is train_lengths[i % len]; its examples draw their distances from those that fit.
  c.train.tokens_per_batch = 24 if tiny else 8192  # Examples per batch: tokens_per_batch // length...
  c.train.max_batch_size = 4 if tiny else 64  # ...at most this many.
  c.train.learning_rate = 3e-3  # Peak, after a linear warm-up; cosine decay to 0.
  c.train.warmup_steps = 2 if tiny else 50
  c.train.weight_decay = 0.0  # AdamW's decoupled weight decay.
  c.train.grad_clip_norm = 1.0  # Global-norm gradient clipping.
  c.train.log_every_steps = 2 if tiny else 25  # A metrics.jsonl record every this many steps.

  c.eval = ml_collections.ConfigDict()
  c.eval.examples_per_distance = 4 if tiny else 256  # Test sequences per distance.
  c.eval.batch_size = 4 if tiny else 64  # Evaluation batch.
  c.eval.grad_examples = 3 if tiny else 32  # Test sequences the gradient norms are averaged over.

  c.single = ml_collections.ConfigDict()  # Members trained on one distance only (after the mix; none: skipped).
  c.single.models = ("lstm",) if tiny else ("lstm", "gru")  # Models trained so...
  c.single.distances = (8,) if tiny else c.task.distances  # ...once per distance, on sequences of d tokens...
  c.single.steps = 4 if tiny else 400  # ...for this many steps (the mix's recipe otherwise).

  c.models = ("lstm", "gru", "transformer")  # Table order.
  toy = {"lstm": dict(features=6, embed_dim=5), "gru": dict(features=7, embed_dim=5),
         "transformer": dict(width=8, depth=1, num_heads=2, mlp_dim=12)}
  c.members = ml_collections.ConfigDict({  # name -> sequence.VARIANTS name and attributes over it
      name: dict(variant=name, model=toy[name] if tiny else {}) for name in c.models})
  return c.lock()

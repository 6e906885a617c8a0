"""Captioning with attention (Xu et al. 2015) on Fashion-MNIST captions, beside a retrieval baseline.

    python -m vit_video.data.prepare fmnist_captions --data_dir data/tfds
    python -m vit_video.study --config=experiments/captioning.py:cpu --workdir=workdirs/captioning_cpu
    python -m vit_video.study --config=experiments/captioning.py:tiny --workdir=/tmp/captioning_tiny \
        --config.dataset.data_dir=DIR   # the tests' run: fmnist_captions/tiny, a toy encoder and decoder

The study (vit_video/studies/captioning.py) trains a small ResNet to name the item classes of a scene, freezes it,
trains the attention decoder on its 8x8 feature grid, and scores greedy and beam-search captions and two retrieval
baselines with BLEU-1..4 and CIDEr on the test scenes, the held-out ones and the rest.
Scales: `cpu` (the committed run, experiments/results/captioning_cpu/), `tiny` (tests).

Measured (`cpu`, 21 min 26 s on the 2-core CPU shared with other jobs): test BLEU-4 / CIDEr greedy 0.645 / 3.05,
beam 0.642 / 3.23, nearest-neighbour caption 0.633 / 2.83, consensus re-ranking 0.672 / 3.08; on the 385 held-out
scenes greedy 0.627 / 2.84, beam 0.621 / 2.92, nearest 0.545 / 2.18, consensus 0.610 / 2.35: retrieval leads where
the test scene's facts occur in training and falls behind where they do not.
"""
import ml_collections

from vit_video import configs

SCALES = ("cpu", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  scale = configs.pick_scale(arg, SCALES, default="cpu")
  tiny = scale == "tiny"
  c = ml_collections.ConfigDict()
  c.study = "captioning"  # The study that runs this config (vit_video/studies/captioning.py).
  c.name = f"captioning/{scale}"
  c.seed = 0  # Initialisation, data order and dropout.
  c.log_every_steps = 2 if tiny else 100  # Training records in metrics.jsonl (mean over the steps since the last).

  c.dataset = ml_collections.ConfigDict(dict(
      name="fmnist_captions/tiny" if tiny else "fmnist_captions",  # a prepared tfds dataset (never downloaded)
      data_dir="data/tfds",  # tfds data_dir; `python -m vit_video.data.prepare fmnist_captions` fills it
      train_split="train",  # the decoder, the encoder, the vocabulary and the retrieval database
      test_split="test",  # scored, with its held-out subset
  ))
  c.encoder = ml_collections.ConfigDict(dict(
      model_name="resnet18",  # a package image model with return_grid (models.create_model)
      # Its attributes: 2 basic-block stages; a 64x64 scene gives an 8x8 grid of 2 * width channels.
      model=dict(stage_sizes=(1, 1), width=8) if tiny else dict(stage_sizes=(1, 1), width=16),
      steps=4 if tiny else 2000,  # pre-training on the scenes' item classes (then frozen)
      batch_size=8 if tiny else 64,
      learning_rate=2e-3,  # AdamW, cosine decay to 0
      weight_decay=1e-4,
  ))
  c.decoder = ml_collections.ConfigDict(dict(
      model=dict(embed_dim=8, hidden_dim=12, attention_dim=6, dropout_rate=0.5) if tiny else
      dict(embed_dim=32, hidden_dim=128, attention_dim=32, dropout_rate=0.5),  # ShowAttendTell's attributes
      steps=4 if tiny else 3000,  # Adam steps on (scene, reference) pairs
      batch_size=8 if tiny else 64,
      learning_rate=2e-3,  # cosine decay to 0
      grad_clip_norm=5.0,
      penalty=1.0,  # lambda of the doubly stochastic attention regulariser (the paper's lambda is 1)
  ))
  c.decode = ml_collections.ConfigDict(dict(
      max_len=19,  # words plus <eos>: the longest caption has 18 words
      beam_size=3,  # the beam of `attention_beam`
  ))
  c.retrieval = ml_collections.ConfigDict(dict(
      k=2 if tiny else 5,  # nearest training scenes whose references (5 each) the consensus re-ranking chooses among
  ))
  c.report = ml_collections.ConfigDict(dict(
      examples=6,  # captions listed in results.md: half seen, half held-out test scenes
      attention_scenes=1 if tiny else 4,  # rows of attention.png: half seen, half held-out test scenes
  ))
  return c.lock()

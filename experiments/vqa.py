"""VQA with attention on easy-VQA: stacked attention networks (Yang et al. 2016) against the question-only and
image-only baselines, each trained with one recipe and budget (vit_video/studies/vqa.py).

    python -m vit_video.study --config=experiments/vqa.py:cpu --workdir=workdirs/vqa_cpu
    python -m vit_video.study --config=experiments/vqa.py:long --workdir=workdirs/vqa_long
    python -m vit_video.study --config=experiments/vqa.py:tiny --workdir=/tmp/vqa_tiny   # seconds; for tests

The dataset is built into `data_dir` by the study when it is absent (offline, from the installed easy-vqa package;
about 15 s). Members (vit_video/models/vqa.py), all with the same image encoder, a two-stage basic-block ResNet
(resnet18's blocks, one per stage, stem width 8: a 64x64 image gives an 8x8 grid of 16-channel regions, 64 regions)
trained jointly from scratch, and the same width D = 64:

  question_only    the LSTM's question vector -> answer (the language prior: the image is never read)
  image_only       the mean of the regions -> answer (the question is never read)
  pooled_lstm      LSTM question + mean region -> answer (fusion without attention)
  san_lstm         SAN, 2 attention layers, LSTM question encoder (the paper's SAN(2, LSTM))
  san_transformer  SAN, 2 attention layers, a 2-block transformer question encoder (mean over the words)
  san_lstm_mlp     san_lstm with an MLP read-out (64 hidden ReLU units) instead of the paper's linear softmax layer
  san_lstm_sum_product  san_lstm whose attention layers fuse by u_k = u_{k-1} + v~ + v~ * u_{k-1} (`fusion`), so that
                   a linear read-out can compare the colour/shape a yes/no question names with the image's

Scales: `cpu` trains each member 1,500 steps of 64 questions (2.5 epochs of the 38,575 training questions) and scores
all 9,673 test questions; `long` trains only question_only and san_lstm, 6,000 steps (10 epochs): does the SAN
learn the yes/no questions given more time?; `tiny` 4 steps of 8 on easy_vqa/tiny with tiny widths (the smoke
test's).

Measured (experiments/results/vqa_cpu/, vqa_long/; 2 CPU cores shared with other jobs): `cpu` took 25 min 16 s for the
first five members (san_lstm_mlp, added later, 3 min 41 s more; san_lstm_sum_product 2 min 52 s more). Test accuracy:
question_only 66.9%, image_only 37.3%, pooled_lstm 79.4%, san_lstm 86.3%, san_transformer 84.8%, san_lstm_mlp 85.5%,
san_lstm_sum_product 84.9%; the SANs answer the colour (99.8%) and shape (93.7% for san_lstm) questions, but every
model that reads the question answers the yes/no ones exactly as the per-question majority prior does (82.5%). `long`
(21 min 31 s): san_lstm 87.0% (shape 99.4%, colour 100%, yes/no still 82.5%). The product fusion does not change that
either (san_lstm_sum_product: yes/no 82.5%; see results.md there for the checks of the pipeline and the attention).
"""
import ml_collections

from vit_video import configs

SCALES = ("cpu", "long", "tiny")

MEMBERS = {  # name -> VQA attributes over `model`
    "question_only": dict(kind="question_only", question_encoder="lstm"),
    "image_only": dict(kind="image_only", question_encoder="lstm"),  # the encoder is unused
    "pooled_lstm": dict(kind="pooled", question_encoder="lstm"),
    "san_lstm": dict(kind="san", question_encoder="lstm"),
    "san_transformer": dict(kind="san", question_encoder="transformer"),
    "san_lstm_mlp": dict(kind="san", question_encoder="lstm", head_hidden=64),
    "san_lstm_sum_product": dict(kind="san", question_encoder="lstm", fusion="sum_product"),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  scale = configs.pick_scale(arg, SCALES, default="cpu")
  tiny = scale == "tiny"
  c = ml_collections.ConfigDict()
  c.study = "vqa"  # The study that runs this config (vit_video/studies/vqa.py).
  c.name = f"vqa/{scale}"
  c.seed = 0  # Initialisation, batch order and dropout of every member.
  c.dataset = "easy_vqa/tiny" if tiny else "easy_vqa"  # A config of vit_video/data/easy_vqa.py.
  c.data_dir = "./data/tfds"  # tfds data_dir; the study builds the dataset there when it is absent.
  c.max_length = 10  # L: questions padded to this many words (easy-VQA's longest has 9).

  # One recipe for every member: Adam, linear warm-up, cosine decay to 0, softmax cross-entropy over the answers.
  c.batch_size = 8 if tiny else 64
  c.steps = {"cpu": 1500, "long": 6000, "tiny": 4}[scale]
  c.learning_rate = 1e-3
  c.warmup_steps = 1 if tiny else 100
  c.log_every_steps = 2 if tiny else 100
  c.eval_batch_size = 32 if tiny else 500

  c.model = ml_collections.ConfigDict(dict(  # VQA attributes every member shares (vit_video/models/vqa.py)
      width=8 if tiny else 64,  # D: question vector and regions
      embed_dim=6 if tiny else 32,  # the LSTM's word embeddings
      transformer_depth=1 if tiny else 2,
      transformer_heads=2 if tiny else 4,
      transformer_mlp_dim=12 if tiny else 128,
      transformer_pool="mean",
      attention_layers=2,  # K, the paper's best
      attention_dim=10 if tiny else 64,  # A
      head_hidden=0,  # the paper's linear read-out; members may set an MLP's width
      fusion="sum",  # the paper's u_k = u_{k-1} + v~; members may set "product" or "sum_product" (FUSIONS)
      image_model="resnet18",
      image_options=dict(stage_sizes=(1, 1), width=4 if tiny else 8),
  ))
  c.members = ml_collections.ConfigDict(MEMBERS)
  # Table order (a ConfigDict's keys come back sorted); `long` trains the SAN and the language prior only.
  c.models = ("question_only", "san_lstm") if scale == "long" else tuple(MEMBERS)
  c.figure = ml_collections.ConfigDict(dict(
      member="san_lstm",  # whose stacked attention attention.png shows
      examples=3 if tiny else 6,  # test questions shown: the first of each type, then the next ones
  ))
  return c.lock()

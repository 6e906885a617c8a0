"""A miniature DETR on Fashion-MNIST scenes (96x96 grey canvases of 1-6 items, 10 classes).

    python -m vit_video.data.prepare fmnist_scenes --data_dir data/tfds
    python -m vit_video.detection --config=experiments/detr_scenes.py --workdir=workdirs/detr_scenes \
        [--config.total_steps=2000 ...]
    python -m vit_video.main --config=experiments/detr_scenes.py:backbone --workdir=workdirs/detr_backbone
    python -m vit_video.detection --config=experiments/detr_scenes.py:pretrained --workdir=workdirs/detr_long

Arguments: none (the paper's recipe with a random backbone, 1,400 steps), pretrained (the recipe that learned here:
the backbone from the `backbone` run in BACKBONE_WORKDIR at a tenth of the rate, 10 queries, 8,400 steps), backbone
(a classification config, for `vit_video.main`: the ResNet classifier of the backbone's shape on Fashion-MNIST
items), tiny (the tests' run: fmnist_scenes/tiny, a toy model, a few steps). Re-running a command resumes from the
newest checkpoint. DETR's recipe (Carion et al. 2020) otherwise: AdamW 1e-4, weight decay 1e-4, gradient clipping
0.1, the learning rate divided by 10 after 2/3 of training, loss weights 1 / 5 / 2 and eos_coef 0.1; a random
backbone learns at the full rate (DETR's 0.1 is for fine-tuning a pre-trained one), its stem and first stage
frozen as DETR's.

Measured on the 2-core CPU (README, "DETR in miniature", has every run): the paper's recipe from scratch, 1,400
steps (10 min), test AP 0.00002: not learned (the class loss never moved); `pretrained`, 8,400 steps (40 min,
part of it beside another run), test AP 0.066, AP50 0.170, AR100 0.222.
"""
import ml_collections

from vit_video import configs

# The backbone: three bottleneck stages of a ResNet (stride 16; 4 * 16 * 4 = 256 channels at the end).
BACKBONE = dict(stage_sizes=(1, 1, 1), width=16)
BACKBONE_WORKDIR = "workdirs/detr_backbone"  # where `pretrained` finds the `backbone` argument's run


def backbone_config() -> ml_collections.ConfigDict:
  """A ResNet classifier with DETR's backbone, trained on Fashion-MNIST items (28x28) by `vit_video.main`; its
  workdir is what `init.backbone` takes. 2 epochs, batch 128, AdamW 2e-3, cosine, crops and flips."""
  c = configs.base_config()
  c.name = "detr_scenes/backbone"
  c.model_name = "resnet50"  # The torchvision-layout ResNet; BACKBONE sets its depth and width.
  c.model = ml_collections.ConfigDict(dict(stage_sizes=BACKBONE["stage_sizes"], width=BACKBONE["width"],
                                           in_channels=1))
  c.num_epochs = 2.0
  c.optimizer.learning_rate = 2e-3
  c.optimizer.warmup_steps = 100
  c.augment.crop_padding = 2
  c.augment.flip = True
  c.label_smoothing = 0.1
  c.eval_every_steps = 0
  return c.lock()


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = configs.parse_arg(arg, tiny=False, backbone=False, pretrained=False)
  if a.backbone:
    return backbone_config()
  if a.tiny and a.pretrained:
    raise ValueError("the tiny model's backbone has no pre-trained run: give tiny or pretrained, not both")
  tiny = a.tiny
  c = configs.detection_base_config()  # each field's comment is there
  c.name = "detr_scenes/tiny" if tiny else "detr_scenes"
  c.num_classes = 10
  c.model = ml_collections.ConfigDict(dict(  # vit_video.models.detr.DETR attributes (besides K and in_channels).
      num_queries=20,  # Q: at most 6 objects per scene, so 20 leaves DETR's slack.
      hidden_dim=128,  # D
      num_heads=4,
      num_encoder_layers=3,
      num_decoder_layers=3,
      ffn_dim=256,
      dropout_rate=0.1,
      stage_sizes=BACKBONE["stage_sizes"],  # Three bottleneck stages: stride 16, a 6x6 token grid for 96x96 scenes.
      backbone_width=BACKBONE["width"],  # Stem channels (ResNet-50: 64).
  ))
  if tiny:  # A toy model for the tests: 40x40 scenes, stride 8, a 5x5 token grid.
    c.model.update(dict(num_queries=10, hidden_dim=32, num_heads=2, num_encoder_layers=2, num_decoder_layers=2,
                        ffn_dim=64, stage_sizes=(1, 1), backbone_width=8))
  c.dataset.name = "fmnist_scenes/tiny" if tiny else "fmnist_scenes"
  c.dataset.image_size = 40 if tiny else 96  # the scenes' own size
  c.dataset.channels = 1
  c.dataset.max_objects = 8
  c.batch_size = 8 if tiny else 32
  c.total_steps = 6 if tiny else 1400  # 1400: the 10-minute CPU run in the docstring
  c.optimizer.learning_rate = 1e-3 if tiny else 1e-4
  c.optimizer.backbone_lr_factor = 0.1 if tiny else 1.0  # a random backbone learns at the full rate
  c.eval_max_detections = 20
  c.log_every_steps = 2 if tiny else 50
  c.eval_every_steps = 0 if tiny else 700
  c.checkpoint.save_every_steps = 3 if tiny else 350
  c.checkpoint.async_save = not tiny  # tests save synchronously
  if a.pretrained:  # the recipe that learned here (README, "DETR in miniature")
    c.init.backbone = BACKBONE_WORKDIR
    c.optimizer.backbone_lr_factor = 0.1  # DETR's, for a pre-trained backbone
    c.model.num_queries = 10
    c.total_steps = 8400  # 13.4 epochs
    c.eval_every_steps = 1400
    c.checkpoint.save_every_steps = 700
  return c.lock()

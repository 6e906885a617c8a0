"""A miniature DETR trained from scratch on Fashion-MNIST scenes (96x96 grey canvases of 1-6 items, 10 classes).

    python -m vit_video.data.prepare fmnist_scenes --data_dir data/tfds
    python -m vit_video.detection --config=experiments/detr_scenes.py --workdir=workdirs/detr_scenes \
        [--config.total_steps=2000 ...]

Arguments: tiny (the tests' run: fmnist_scenes/tiny, a toy model, a few steps). Re-running the command resumes
from the newest checkpoint. DETR's recipe (Carion et al. 2020) otherwise: AdamW 1e-4, weight decay 1e-4, gradient
clipping 0.1, the learning rate divided by 10 after 2/3 of training, loss weights 1 / 5 / 2 and eos_coef 0.1. One
deliberate change: the backbone is not an ImageNet ResNet but a random one (no package ships a small one), so it
learns at the full rate (DETR's 0.1 is for fine-tuning a pretrained backbone); its stem and first stage stay
frozen as DETR's (random features there).

Measured on the shared 2-core CPU (1400 steps, 10 min 23 s end to end): the loss fell from 19.7 (step 50) to 13.7,
mostly in the boxes (L1 0.49 -> 0.24, 1 - GIoU 1.04 -> 0.60) while the class loss stayed near 2.1; test AP 0.00002,
AP50 0.00008, AR100 0.004: from scratch and this short, DETR has not learned to detect yet (the same step memorises
one batch: loss 15 -> 0.7 in 300 steps of the tiny config).
"""
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  tiny = arg == "tiny"
  if arg not in (None, "", "tiny"):
    raise ValueError(f"unknown config argument {arg!r}; valid: tiny")
  c = ml_collections.ConfigDict()
  c.name = "detr_scenes/tiny" if tiny else "detr_scenes"  # A label for the run in logs and the summary.
  c.seed = 0  # Base of every random stream: initialisation, dropout, data order.
  c.num_classes = 10  # K object classes; must equal the dataset's (the model adds "no object").
  c.model = ml_collections.ConfigDict(dict(  # vit_video.models.detr.DETR attributes (besides K and in_channels).
      num_queries=20,  # Q: at most 6 objects per scene, so 20 leaves DETR's slack.
      hidden_dim=128,  # D
      num_heads=4,
      num_encoder_layers=3,
      num_decoder_layers=3,
      ffn_dim=256,
      dropout_rate=0.1,
      stage_sizes=(1, 1, 1),  # Three bottleneck stages: stride 16, a 6x6 token grid for 96x96 scenes.
      backbone_width=16,  # Stem channels (ResNet-50: 64); the last stage gives 4 * 16 * 4 = 256 channels.
  ))
  if tiny:  # A toy model for the tests: 40x40 scenes, stride 8, a 5x5 token grid.
    c.model.update(dict(num_queries=10, hidden_dim=32, num_heads=2, num_encoder_layers=2, num_decoder_layers=2,
                        ffn_dim=64, stage_sizes=(1, 1), backbone_width=8))
  c.dataset = ml_collections.ConfigDict()
  c.dataset.name = "fmnist_scenes/tiny" if tiny else "fmnist_scenes"  # A tfds detection dataset in data_dir.
  c.dataset.data_dir = "data/tfds"  # tfds data_dir; `python -m vit_video.data.prepare NAME` fills it.
  c.dataset.train_split = "train"
  c.dataset.eval_split = "test"  # Every image scored once by COCO AP (pycocotools).
  c.dataset.image_size = 40 if tiny else 96  # Side S the images are resized to (the scenes' own size: none).
  c.dataset.channels = 1  # C fed to the model (3 repeats grey images).
  c.dataset.max_objects = 8  # M: targets padded per image; an image with more stops the run.
  c.batch_size = 8 if tiny else 32  # Global batch, split over the devices.
  c.total_steps = 6 if tiny else 1400  # Training length in steps (1400: the 15-minute CPU run in the docstring).
  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.learning_rate = 1e-3 if tiny else 1e-4  # AdamW, the transformer and heads.
  c.optimizer.backbone_lr_factor = 0.1 if tiny else 1.0  # The backbone's rate is this times the rate above.
  c.optimizer.weight_decay = 1e-4  # Decoupled (times the rate), on every trained parameter as DETR.
  c.optimizer.grad_clip_norm = 0.1  # Global norm of the trained parameters' gradient.
  c.optimizer.decay_at = 2 / 3  # The rate drops to a tenth after this fraction of the steps.
  c.loss = ml_collections.ConfigDict(dict(  # vit_video.train.detr_loss.detr_loss weights.
      class_weight=1.0, l1_weight=5.0, giou_weight=2.0, eos_coef=0.1))
  c.eval_max_detections = 20  # Detections kept per image, highest scores first (COCO counts up to 100).
  c.log_every_steps = 2 if tiny else 50
  c.eval_every_steps = 0 if tiny else 700  # 0: evaluate at the end only.
  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.save_every_steps = 3 if tiny else 350
  c.checkpoint.max_to_keep = 2
  c.checkpoint.async_save = not tiny  # Background saves (tests save synchronously).
  return c.lock()

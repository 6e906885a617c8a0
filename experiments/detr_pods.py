"""DETR-R50 on COCO 2017 with the paper's recipe (for GPU/TPU pods), trained by `vit_video.detection`.

    python -m vit_video.detection --config=experiments/detr_pods.py:model=detr_r50,dataset=coco \
        --workdir=gs://.../detr_r50 --config.dataset.data_dir=gs://.../tfds \
        --config.init.backbone=gs://.../resnet50_imagenet
    python -m vit_video.detection --config=experiments/detr_pods.py --workdir=unused --dry_run [--devices=64]

Data (never downloaded at run time): tfds's `coco/2017` (80 object classes; tfds numbers them 0..79, so the head
has 80 classes plus "no object", not the 91 of COCO's category ids), prepared beforehand with
`tfds build coco/2017 --data_dir gs://.../tfds` on a machine that may download. `init.backbone`: the workdir of an
ImageNet ResNet-50 classifier trained by this package (DETR fine-tunes an ImageNet backbone at a tenth of the rate;
empty, the backbone starts from random weights, which is not the paper's set-up).

Recipe (Carion et al. 2020, the 300-epoch schedule): AdamW 1e-4 (backbone 1e-5), weight decay 1e-4, gradient
clipping 0.1, the rate divided by 10 after 200 epochs, batch 64 (4 images on each of 16 V100s), 100 queries,
dropout 0.1, auxiliary losses, loss weights 1 / 5 / 2, eos_coef 0.1. What our pipeline does differently: each
image's longer side is resized to 1088 (DETR: the shorter side to 800, the longer at most 1333; 1088 gives 816 on
the shorter side of a 4:3 image) and padded to 1088 x 1088 with a pixel mask, with no random resizing, cropping or
flipping; crowd and degenerate boxes are not targets (as DETR), and crowd regions are ignored by the COCO
evaluation.
"""
import ml_collections

from vit_video import configs

# The slice the recipe is written for: 16 GPUs on 2 hosts of 8, 4 images per GPU (the paper's 16 V100s).
SLICE = (16, 2)
DATASETS = {  # name -> (tfds name, classes, train split, eval split, train images)
    "coco": ("coco/2017", 80, "train", "validation", 118_287),
}
MODELS = {  # name -> DETR attributes (vit_video.models.detr.DETR; its defaults are DETR-R50's)
    "detr_r50": dict(num_queries=100, dropout_rate=0.1),
}
EPOCHS, DECAY_EPOCHS, BATCH = 300, 200, 64


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = configs.parse_arg(arg, model="detr_r50", dataset="coco")
  if a.model not in MODELS:
    raise ValueError(f"unknown model {a.model!r}; valid: {', '.join(MODELS)}")
  if a.dataset not in DATASETS:
    raise ValueError(f"unknown dataset {a.dataset!r}; valid: {', '.join(DATASETS)}")
  tfds_name, num_classes, train_split, eval_split, train_images = DATASETS[a.dataset]
  c = configs.detection_base_config()  # DETR-R50 and the paper's optimizer; every field's comment is there
  c.name = f"detr_pods/{a.model}/{a.dataset}"
  c.num_classes = num_classes
  c.model = ml_collections.ConfigDict(MODELS[a.model])
  c.dataset.update(name=tfds_name, data_dir="data/tfds", train_split=train_split, eval_split=eval_split,
                   image_size=1088, channels=3, max_objects=100, keep_aspect_ratio=True, cache="auto")
  c.batch_size = BATCH
  c.total_steps = round(EPOCHS * train_images / BATCH)
  c.optimizer.update(learning_rate=1e-4, backbone_lr_factor=0.1, weight_decay=1e-4, grad_clip_norm=0.1,
                     decay_at=DECAY_EPOCHS / EPOCHS)
  c.eval_max_detections = 100  # COCO's AP counts up to 100 detections per image
  c.log_every_steps = 100
  c.eval_every_steps = round(25 * train_images / BATCH)  # every 25 epochs
  c.checkpoint.update(save_every_steps=5000, max_to_keep=2, async_save=True)
  c.slice.devices, c.slice.hosts = SLICE
  return c.lock()

"""Paper-size ConvNeXt on ImageNet-1k, with the paper's recipe (for TPU/GPU pods).

    python -m vit_video.main --config=experiments/image_pods.py:model=convnext_t,dataset=imagenet2012 \
        --workdir=gs://.../convnext_t --config.dataset.data_dir=gs://.../tfds
    python -m vit_video.main --config=experiments/image_pods.py:model=convnext_b --dry_run --devices=64

Data (never downloaded at run time): tfds's `imagenet2012`, prepared with tfds from the ILSVRC2012 tar files put
in its manual folder (`tfds build imagenet2012 --manual_dir DIR --data_dir gs://.../tfds`).

Recipe (Liu et al. 2022, Appendix A.1, ImageNet-1k from scratch): 300 epochs, AdamW lr 4e-3 at batch 4096, 20
epochs of linear warm-up then cosine, weight decay 0.05, RandAugment (9, 0.5) -> 2 ops at magnitude 9, mixup 0.8,
cutmix 1.0, label smoothing 0.1, stochastic depth 0.1 / 0.4 / 0.5 / 0.5 for T / S / B / L, layer scale 1e-6; EMA
(0.9999) for the larger models only, off here. What our image pipeline does differently: images are resized to
224 x 224 and flipped, not Inception-cropped; no random erasing; the paper's stochastic-depth rates at batch 4096
are kept as they are. (The rates as we read the paper: check them before relying on them.)
"""
import ml_collections

from vit_video import configs

# The slice the recipe is written for: a TPU v3-128 (128 cores on 16 hosts, 32 images per core at batch 4096).
SLICE = (128, 16)
DATASETS = {  # name -> (tfds name, classes, train split, eval split, train images)
    "imagenet2012": ("imagenet2012", 1000, "train", "validation", 1_281_167),
}
MODELS = {  # name -> (model_name, model attributes)
    "convnext_t": ("convnext_t", dict(drop_path_rate=0.1)),
    "convnext_s": ("convnext_s", dict(drop_path_rate=0.4)),
    "convnext_b": ("convnext_b", dict(drop_path_rate=0.5)),
    "convnext_l": ("convnext_l", dict(drop_path_rate=0.5)),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = configs.parse_arg(arg, model="convnext_t", dataset="imagenet2012")
  if a.model not in MODELS:
    raise ValueError(f"unknown model {a.model!r}; valid: {', '.join(MODELS)}")
  if a.dataset not in DATASETS:
    raise ValueError(f"unknown dataset {a.dataset!r}; valid: {', '.join(DATASETS)}")
  model_name, model = MODELS[a.model]
  tfds_name, num_classes, train_split, eval_split, train_images = DATASETS[a.dataset]
  c = configs.base_config()
  c.name = f"image_pods/{a.model}/{a.dataset}"
  c.model_name = model_name
  c.model = ml_collections.ConfigDict(model)
  c.num_classes = num_classes
  c.dtype = "bfloat16"
  c.dataset.name = tfds_name
  c.dataset.data_dir = "data/tfds"
  c.dataset.train_split, c.dataset.eval_split = train_split, eval_split
  c.dataset.image_size = 224
  c.dataset.channels = 3
  c.dataset.host_sharding = "split"  # each host reads its 1/16 of the records
  c.dataset.shuffle_buffer_size = 10_000
  c.augment.flip = True
  c.augment.randaugment_layers, c.augment.randaugment_magnitude = 2, 9
  c.augment.mixup_alpha, c.augment.cutmix_alpha = 0.8, 1.0
  c.batch_size = 4096
  c.num_epochs = 300.0
  c.optimizer.update(name="adamw", learning_rate=4e-3, schedule="cosine", weight_decay=0.05, grad_clip_norm=0.0,
                     warmup_steps=round(20 * train_images / 4096))
  c.label_smoothing = 0.1
  c.log_every_steps = 100
  c.checkpoint.save_every_steps = 5000
  c.slice.devices, c.slice.hosts = SLICE
  return c.lock()

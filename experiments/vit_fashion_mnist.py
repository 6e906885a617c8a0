"""A small ViT on Fashion-MNIST (the embedded default data), the README's main job.

    python -m vit_video.data.prepare fashion_mnist_local
    python -m vit_video.main --config=experiments/vit_fashion_mnist.py:variant=vit_s4 --workdir=workdirs/fmnist
    python -m vit_video.main --config=experiments/vit_fashion_mnist.py:variant=vit_t4,quick --workdir=/tmp/q

Arguments: variant (a key of VARIANTS), quick (a short run for smoke tests), epochs (override, 0 keeps the
variant's).
"""
import ml_collections

from vit_video import configs

# Sizes for 28x28 inputs, 7x7 = 49 patches of 4x4 (model attributes of vit_video.models.vit.ViT).
VARIANTS = {
    "vit_t4": dict(patch_size=4, width=64, depth=4, num_heads=4, mlp_dim=128),
    "vit_s4": dict(patch_size=4, width=128, depth=6, num_heads=4, mlp_dim=256),
    "vit_s7": dict(patch_size=7, width=128, depth=6, num_heads=4, mlp_dim=256),
    "vit_b4": dict(patch_size=4, width=192, depth=8, num_heads=6, mlp_dim=384),
}
EPOCHS = {"vit_t4": 10.0, "vit_s4": 8.0, "vit_s7": 7.0, "vit_b4": 8.0}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = configs.parse_arg(arg, variant="vit_s4", quick=False, epochs=0.0)
  if a.variant not in VARIANTS:
    raise ValueError(f"unknown variant {a.variant!r}; valid: {', '.join(VARIANTS)}")
  c = configs.base_config()
  c.model_name = "vit_ti16"  # The ViT family; VARIANTS[variant] sets every size.
  c.model = ml_collections.ConfigDict(dict(VARIANTS[a.variant], attention_implementation="fused"))
  c.batch_size = 256
  c.num_epochs = a.epochs or EPOCHS[a.variant]
  c.optimizer.learning_rate = 2e-3
  c.optimizer.warmup_steps = 200
  c.optimizer.weight_decay = 0.05
  c.label_smoothing = 0.1
  c.augment.crop_padding = 2
  c.augment.flip = True
  c.log_every_steps = 100
  c.checkpoint.save_every_steps = 500
  if a.quick:
    c.batch_size = 64
    c.total_steps = 40
    c.optimizer.warmup_steps = 5
    c.log_every_steps = 10
    c.checkpoint.save_every_steps = 20
  return c.lock()

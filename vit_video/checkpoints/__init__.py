"""Pretrained-weight importers: published `.npz` files (vit_jax, big_vision, BiT) and timm/torchvision state dicts.

    variables = import_vit_npz("vit_b16", "ViT-B_16.npz", num_classes=10)
    variables = import_timm("resnet50", {k: v.numpy() for k, v in torch_model.state_dict().items()})

Both return variables for `create_model(name, num_classes=...)`, checked name by name and shape by shape
against the model (ValueError naming the key and both shapes otherwise). Neither imports torch or TensorFlow.
"""
from vit_video.checkpoints.npz import import_vit_npz
from vit_video.checkpoints.timm import import_timm

__all__ = ["import_timm", "import_vit_npz"]

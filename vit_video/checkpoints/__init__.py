"""All parameter surgery: importers of published weights, 2D -> 3D inflation, head replacement and resampling.

    variables = import_vit_npz("vit_b16", "ViT-B_16.npz", num_classes=10)
    variables = import_timm("resnet50", {k: v.numpy() for k, v in torch_model.state_dict().items()})
    variables = import_torchvision("video_swin_t", state_dict)

The importers return variables for `create_model(name, num_classes=...)`, checked name by name and shape by shape
against the model (ValueError naming the key and both shapes otherwise), one entry point per source: `.npz` (vit_jax,
big_vision, BiT), timm (ViT and hybrids, ResNet, BiT, Swin, ConvNeXt), torchvision (ResNet, Video Swin, MViT), Hugging
Face transformers (DETR); `detr_backbone_from_resnet` gives DETR the backbone of one of the package's own ResNet
classifiers. None imports torch or TensorFlow. `inflate` initialises a video model from an image model's
parameters as the papers do (ViViT and TimeSformer from ViT, Video Swin from Swin, I3D from ResNet); `surgery` fits
another run's parameters to a model of the same family (a new head, a resampled position embedding).
"""
from vit_video.checkpoints.detr_backbone import detr_backbone_from_resnet
from vit_video.checkpoints.hf_detr import import_hf_detr
from vit_video.checkpoints.inflate import INFLATIONS, i3d_from_resnet, inflate_kernel, video_swin_from_swin
from vit_video.checkpoints.inflate_vit import timesformer_from_vit, vivit_from_vit
from vit_video.checkpoints.npz import import_vit_npz
from vit_video.checkpoints.surgery import IMAGE_FAMILY, from_image_model, merge_params
from vit_video.checkpoints.timm import import_timm
from vit_video.checkpoints.torchvision import import_torchvision

__all__ = ["IMAGE_FAMILY", "INFLATIONS", "detr_backbone_from_resnet", "from_image_model", "i3d_from_resnet",
           "import_hf_detr", "import_timm", "import_torchvision", "import_vit_npz", "inflate_kernel", "merge_params",
           "timesformer_from_vit", "video_swin_from_swin", "vivit_from_vit"]

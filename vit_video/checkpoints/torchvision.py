"""Imports torchvision state dicts, given as numpy arrays: `import_torchvision`, every torchvision family we have.

    import torchvision
    model = torchvision.models.video.swin3d_t(weights="KINETICS400_V1")
    variables = import_torchvision("video_swin_t", {k: v.numpy() for k, v in model.state_dict().items()})

ResNets (`resnet*`, torchvision's `resnet*`) share timm's key names (timm.RESNET_RULES). MViT (`mvit_v1_b`,
`mvit_v2_s`, `*_image`): checkpoints/torchvision_mvit.py. Video Swin: names
(torchvision 0.28 `SwinTransformer3d`; stage i's blocks are `features.{2i}`, the merging that starts stage
i+1 is `features.{2i+1}`; Linear weights transposed, the Conv3d kernel [D,C,t,p,p] -> [t,p,p,C,D]):
  patch_embed.proj -> embedding; patch_embed.norm -> embedding_norm;
  features.{2i}.{j}.norm1/norm2 -> stage_{i}/block_{j}/norm1/norm2;
  ....attn.qkv [3hd,D] -> .../attn/{query,key,value} kernels [D,h,d], biases [h,d]; ....attn.proj -> .../attn/out;
  ....attn.relative_position_bias_table -> .../rel_pos/relative_position_bias_table;
  ....mlp.0/mlp.3 -> .../mlp/Dense_0/Dense_1;
  features.{2i+1}.{norm,reduction} -> stage_{i+1}/downsample/{norm,reduction};
  norm -> norm; head -> head.
The buffer `relative_position_index` (persistent in torchvision's state dicts) is ignored. With
`window_padding="torchvision"` outputs equal torchvision's at every size; with the default "masked", at sizes that
pad nothing and reduce no window in space (tests/checkpoints/test_torchvision.py).
"""
import re

import numpy as np

from vit_video.checkpoints import convert, timm, torchvision_mvit
from vit_video.checkpoints.torch_keys import Rule, conv3d_kernel, dense_kernel, import_state_dict, norm, same
from vit_video.models import mvit, resnet, video_swin

# Our name -> torchvision's builder of the same configuration (`torchvision.models.video.<name>`).
TORCHVISION_NAMES = {
    "video_swin_t": "swin3d_t",
    "video_swin_s": "swin3d_s",
    "video_swin_b": "swin3d_b",
}

_BLOCK = r"features\.(\d*[02468])\.(\d+)\."  # Even entries of `features` are stages of blocks.
_MERGE = r"features\.(\d*[13579])\."  # Odd entries are the patch merging that starts the next stage.
_IGNORED = re.compile(_BLOCK + r"attn\.relative_position_index")


def _block(m: re.Match) -> str:
  return f"stage_{int(m[1]) // 2}/block_{m[2]}"


def _merge(m: re.Match) -> str:
  return f"stage_{(int(m[1]) + 1) // 2}/downsample"


VIDEO_SWIN_RULES: list[Rule] = [
    (r"patch_embed\.proj\.weight", lambda m: "params/embedding/kernel", conv3d_kernel),
    (r"patch_embed\.proj\.bias", lambda m: "params/embedding/bias", same),
    (r"patch_embed\.norm\.(weight|bias)", lambda m: norm("embedding_norm", m[1]), same),
    (_BLOCK + r"norm(1|2)\.(weight|bias)", lambda m: norm(f"{_block(m)}/norm{m[3]}", m[4]), same),
    (_BLOCK + r"attn\.proj\.bias", lambda m: f"params/{_block(m)}/attn/out/bias", same),
    (_BLOCK + r"attn\.relative_position_bias_table",
     lambda m: f"params/{_block(m)}/rel_pos/relative_position_bias_table", same),
    (_BLOCK + r"mlp\.(0|3)\.weight", lambda m: f"params/{_block(m)}/mlp/Dense_{int(m[3]) // 3}/kernel",
     dense_kernel),
    (_BLOCK + r"mlp\.(0|3)\.bias", lambda m: f"params/{_block(m)}/mlp/Dense_{int(m[3]) // 3}/bias", same),
    (_MERGE + r"norm\.(weight|bias)", lambda m: norm(f"{_merge(m)}/norm", m[2]), same),
    (_MERGE + r"reduction\.weight", lambda m: f"params/{_merge(m)}/reduction/kernel", dense_kernel),
    (r"norm\.(weight|bias)", lambda m: norm("norm", m[1]), same),
    (r"head\.weight", lambda m: "params/head/kernel", dense_kernel),
    (r"head\.bias", lambda m: "params/head/bias", same),
]


def import_torchvision(name: str, state_dict: dict[str, np.ndarray], *, num_classes: int | None = None,
                       **overrides) -> dict:
  """Converts a torchvision state dict `{key: tensor.numpy()}` into variables for `create_model(name)`.

  name: `resnet*` (torchvision's `resnet*`; `{'params', 'batch_stats'}` come back), `video_swin_*` (its
  `swin3d_*`) or `mvit_*` (its `mvit_v1_b`, `mvit_v2_s`; checkpoints/torchvision_mvit.py); another name raises ValueError listing these. `num_classes` and `**overrides` as in
  `timm.import_timm`: None keeps the checkpoint's classes, another K drops its head (to initialise afresh).
  """
  family = convert.supported_family(name, (resnet.ResNet, video_swin.VideoSwin, mvit.MViT, mvit.MViTImage),
                                    "torchvision")
  if family is resnet.ResNet:
    return timm.import_timm(name, state_dict, num_classes=num_classes, **overrides)
  if family in (mvit.MViT, mvit.MViTImage):
    return torchvision_mvit.import_torchvision_mvit(name, state_dict, num_classes=num_classes, **overrides)
  return import_torchvision_video_swin(name, state_dict, num_classes=num_classes, **overrides)


def import_torchvision_video_swin(name: str, state_dict: dict[str, np.ndarray], *, num_classes: int | None = None,
                                  **overrides) -> dict:
  """`import_torchvision` for a Video Swin name (`video_swin_t`, `_s`, `_b`; import_torchvision checks that it is
  one): a torchvision `swin3d_*` state dict `{key: tensor.numpy()}` -> `{'params': ...}` for `create_model(name,
  num_classes=K, **overrides)`.

  num_classes: K; None keeps the checkpoint's (400 for the Kinetics-400 weights), another K drops its head (logged
  at INFO), to be initialised afresh. overrides: VideoSwin's attributes (dtypes, `window_padding`, a custom size);
  the relative-position tables fix the window: a different `window_size` is reported as a shape mismatch. Raises
  ValueError as `import_timm`.
  """
  return import_state_dict(name, state_dict, num_classes=num_classes, overrides=overrides, head_bias="head.bias",
                           input_size=_any_size, rules=VIDEO_SWIN_RULES, ignored=_IGNORED,
                           attention=(_BLOCK, lambda m: f"params/{_block(m)}/attn"))


def _any_size(model) -> tuple[int, int, int]:
  """A clip size (T, H, W) the model takes; its parameter shapes do not depend on it."""
  pt, ph, pw = model.patch_size
  scale = 2 ** (len(model.depths) - 1)
  return pt, ph * scale, pw * scale

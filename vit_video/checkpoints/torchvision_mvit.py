"""Imports torchvision MViT state dicts (`torchvision.models.video.mvit_v1_b`, `mvit_v2_s`), given as numpy arrays.

    import torchvision
    model = torchvision.models.video.mvit_v2_s(weights="KINETICS400_V1")
    variables = import_torchvision_mvit("mvit_v2_s", {k: v.numpy() for k, v in model.state_dict().items()})

Names (torchvision 0.28 `MViT`; Linear weights transposed, Conv3d kernels [O,I,t,h,w] -> [t,h,w,I,O]):
  conv_proj -> embedding; pos_encoding.class_token [D] -> cls/token [1,1,D];
  pos_encoding.{spatial_pos,temporal_pos,class_pos} -> pos_embedding_{spatial,temporal,cls} (MViT);
  blocks.{i}.norm1/norm2/project -> block_{i}/norm1/norm2/project; blocks.{i}.mlp.0/mlp.3 -> .../mlp/Dense_0/Dense_1;
  ....attn.qkv [3hd,D] -> .../attn/{query,key,value} kernels [D,h,d], biases [h,d];
  ....attn.project.0 [D',hd] -> .../attn/out kernel [h,d,D'];
  ....attn.pool_{q,k,v}.pool [d,1,t,h,w] -> .../attn/pool_{q,k,v}/conv [t,h,w,1,d];
  ....attn.pool_{q,k,v}.norm_act.0 -> .../attn/pool_{q,k,v}/norm; ....attn.rel_pos_{t,h,w} -> the same (MViTv2);
  norm -> norm; head.1 -> head.
The `*_image` names take the state dict of a torchvision MViT built for images (temporal_size 2, so T' = 1; see
models/mvit.py); the Kinetics weights' temporal tables do not fit them and are reported as a shape mismatch.
"""
import functools
import re

import numpy as np

from vit_video.checkpoints.torch_keys import (Rule, conv3d_kernel, dense_kernel, import_state_dict, norm, proj_to_out,
                                              same)

# Our name -> torchvision's builder of the same configuration (`torchvision.models.video.<name>`).
TORCHVISION_NAMES = {
    "mvit_v1_b": "mvit_v1_b",
    "mvit_v2_s": "mvit_v2_s",
}

_BLOCK = r"blocks\.(\d+)\."


def _block(m: re.Match) -> str:
  return f"block_{m[1]}"


MVIT_RULES: list[Rule] = [
    (r"conv_proj\.weight", lambda m: "params/embedding/kernel", conv3d_kernel),
    (r"conv_proj\.bias", lambda m: "params/embedding/bias", same),
    (r"pos_encoding\.class_token", lambda m: "params/cls/token", lambda a: a.reshape(1, 1, -1)),
    (r"pos_encoding\.(spatial|temporal)_pos", lambda m: f"params/pos_embedding_{m[1]}", same),
    (r"pos_encoding\.class_pos", lambda m: "params/pos_embedding_cls", same),
    (_BLOCK + r"(norm1|norm2)\.(weight|bias)", lambda m: norm(f"{_block(m)}/{m[2]}", m[3]), same),
    (_BLOCK + r"project\.weight", lambda m: f"params/{_block(m)}/project/kernel", dense_kernel),
    (_BLOCK + r"project\.bias", lambda m: f"params/{_block(m)}/project/bias", same),
    (_BLOCK + r"mlp\.(0|3)\.weight", lambda m: f"params/{_block(m)}/mlp/Dense_{int(m[2]) // 3}/kernel",
     dense_kernel),
    (_BLOCK + r"mlp\.(0|3)\.bias", lambda m: f"params/{_block(m)}/mlp/Dense_{int(m[2]) // 3}/bias", same),
    (_BLOCK + r"attn\.project\.0\.weight", lambda m: f"params/{_block(m)}/attn/out/kernel", same),  # _adapt
    (_BLOCK + r"attn\.project\.0\.bias", lambda m: f"params/{_block(m)}/attn/out/bias", same),
    (_BLOCK + r"attn\.pool_(q|k|v)\.pool\.weight", lambda m: f"params/{_block(m)}/attn/pool_{m[2]}/conv/kernel",
     conv3d_kernel),
    (_BLOCK + r"attn\.pool_(q|k|v)\.norm_act\.0\.(weight|bias)",
     lambda m: norm(f"{_block(m)}/attn/pool_{m[2]}/norm", m[3]), same),
    (_BLOCK + r"attn\.rel_pos_(t|h|w)", lambda m: f"params/{_block(m)}/attn/rel_pos_{m[2]}", same),
    (r"norm\.(weight|bias)", lambda m: norm("norm", m[1]), same),
    (r"head\.1\.weight", lambda m: "params/head/kernel", dense_kernel),
    (r"head\.1\.bias", lambda m: "params/head/bias", same),
]


def import_torchvision_mvit(name: str, state_dict: dict[str, np.ndarray], *, num_classes: int | None = None,
                            **overrides) -> dict:
  """A torchvision MViT state dict `{key: tensor.numpy()}` -> `{'params': ...}` for `create_model(name,
  num_classes=K, **overrides)`; name: `mvit_v1_b`, `mvit_v2_s` (their torchvision builders) or their `_image`
  forms (module docstring).

  num_classes: K; None keeps the checkpoint's (400 for the Kinetics-400 weights), another K drops its head (logged
  at INFO), to be initialised afresh. overrides: MViT's attributes (dtypes, a custom block setting, `input_size`,
  which sizes the position tables). Raises ValueError as `import_timm` (unknown or missing keys, shapes).
  """
  return import_state_dict(name, state_dict, num_classes=num_classes, overrides=overrides, head_bias="head.1.bias",
                           input_size=_input_size, rules=MVIT_RULES, adapt=functools.partial(_adapt, name=name),
                           attention=(_BLOCK, lambda m: f"params/{_block(m)}/attn"))


def _input_size(model) -> tuple[int, ...]:
  """The input size, (T, H, W) or (H, W) for the image form, that the position tables are built for."""
  return tuple(model.input_size[1:] if model.inputs == ("image",) else model.input_size)


def _adapt(model, expected: dict, ours: str, key: str, value: np.ndarray, *, name: str) -> np.ndarray:
  """The attention output projection [D',hd] -> our out kernel [h,d,D'], its shape checked (`proj_to_out`)."""
  if ours.endswith("/attn/out/kernel"):
    return proj_to_out(name, key, value, expected.get(ours))
  return value

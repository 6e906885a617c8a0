"""Imports timm's ConvNeXt state dicts (given as numpy arrays) into `vit_video.models.convnext`.

    import timm
    sd = {k: v.numpy() for k, v in timm.create_model("convnext_tiny", pretrained=True).state_dict().items()}
    variables = import_timm("convnext_t", sd)  # vit_video.checkpoints.import_timm, which calls import_timm_convnext

Names (timm 1.0.31, `convnext_{tiny,small,base,large}`; i, j 0-based; Linear weights transposed, conv weights
OIHW -> HWIO, the depthwise conv's [D,1,k,k] -> [k,k,1,D]):
  stem.0 -> stem_conv; stem.1 -> stem_norm; stages.{i}.downsample.0/1 -> stage_{i}/downsample_norm/downsample_conv
  (i > 0); stages.{i}.blocks.{j}.{conv_dw,norm,gamma} -> stage_{i}/block_{j}/{conv_dw,norm,gamma};
  ....mlp.fc1/fc2 -> .../fc1/fc2; head.norm -> norm; head.fc -> head.
Checkpoints in the official (facebookresearch/ConvNeXt) layout are renamed by timm's `checkpoint_filter_fn` when
timm loads them; pass timm's state dict.
"""
import numpy as np

from vit_video.checkpoints.torch_keys import Rule, conv_kernel, dense_kernel, import_state_dict, norm, same

# Our name -> timm's model of the same configuration.
TIMM_NAMES = {
    "convnext_t": "convnext_tiny",
    "convnext_s": "convnext_small",
    "convnext_b": "convnext_base",
    "convnext_l": "convnext_large",
}

_STAGE = r"stages\.(\d+)\."
_BLOCK = _STAGE + r"blocks\.(\d+)\."


def _block(m) -> str:
  return f"stage_{m[1]}/block_{m[2]}"


CONVNEXT_RULES: list[Rule] = [
    (r"stem\.0\.weight", lambda m: "params/stem_conv/kernel", conv_kernel),
    (r"stem\.0\.bias", lambda m: "params/stem_conv/bias", same),
    (r"stem\.1\.(weight|bias)", lambda m: norm("stem_norm", m[1]), same),
    (_STAGE + r"downsample\.0\.(weight|bias)", lambda m: norm(f"stage_{m[1]}/downsample_norm", m[2]), same),
    (_STAGE + r"downsample\.1\.weight", lambda m: f"params/stage_{m[1]}/downsample_conv/kernel", conv_kernel),
    (_STAGE + r"downsample\.1\.bias", lambda m: f"params/stage_{m[1]}/downsample_conv/bias", same),
    (_BLOCK + r"conv_dw\.weight", lambda m: f"params/{_block(m)}/conv_dw/kernel", conv_kernel),
    (_BLOCK + r"conv_dw\.bias", lambda m: f"params/{_block(m)}/conv_dw/bias", same),
    (_BLOCK + r"norm\.(weight|bias)", lambda m: norm(f"{_block(m)}/norm", m[3]), same),
    (_BLOCK + r"mlp\.fc(1|2)\.weight", lambda m: f"params/{_block(m)}/fc{m[3]}/kernel", dense_kernel),
    (_BLOCK + r"mlp\.fc(1|2)\.bias", lambda m: f"params/{_block(m)}/fc{m[3]}/bias", same),
    (_BLOCK + r"gamma", lambda m: f"params/{_block(m)}/gamma", same),
    (r"head\.norm\.(weight|bias)", lambda m: norm("norm", m[1]), same),
    (r"head\.fc\.weight", lambda m: "params/head/kernel", dense_kernel),
    (r"head\.fc\.bias", lambda m: "params/head/bias", same),
]


def import_timm_convnext(name: str, state_dict: dict[str, np.ndarray], *, num_classes: int | None = None,
                         **overrides) -> dict:
  """`import_timm` for a ConvNeXt name (`convnext_t`, ..., `convnext_l`; import_timm checks that it is one): a timm
  ConvNeXt state dict `{key: tensor.numpy()}` -> `{'params': ...}` for `create_model(name, num_classes=K,
  **overrides)`.

  num_classes: K; None keeps the checkpoint's (0 when it has no head), another K drops its head (logged at INFO),
  to be initialised afresh. overrides: ConvNeXt's attributes (e.g. depths and dims of a custom size, dtypes).
  Raises ValueError as `import_timm`.
  """
  return import_state_dict(name, state_dict, num_classes=num_classes, overrides=overrides, head_bias="head.fc.bias",
                           input_size=_any_size, rules=CONVNEXT_RULES)


def _any_size(model) -> tuple[int, int]:
  """An image size the model takes (every stage's map non-empty); its parameter shapes do not depend on it."""
  side = 2 ** (len(model.depths) + 1)
  return side, side

"""Imports timm's Swin Transformer state dicts (given as numpy arrays) into `vit_video.models.swin`.

    import timm
    sd = {k: v.numpy() for k, v in timm.create_model("swin_tiny_patch4_window7_224", pretrained=True)
          .state_dict().items()}
    variables = import_timm_swin("swin_t", sd)

Names (timm 1.0.31, `swin_*_patch4_window*`; i, j 0-based; Linear weights transposed, the conv OIHW -> HWIO):
  patch_embed.proj -> embedding; patch_embed.norm -> embedding_norm;
  layers.{i}.downsample.{norm,reduction} -> stage_{i}/downsample/{norm,reduction} (i > 0);
  layers.{i}.blocks.{j}.norm1/norm2 -> stage_{i}/block_{j}/norm1/norm2;
  ....attn.qkv [3hd,D] -> .../attn/{query,key,value} kernels [D,h,d], biases [h,d]; ....attn.proj -> .../attn/out;
  ....attn.relative_position_bias_table -> .../rel_pos/relative_position_bias_table, bicubically resampled
    (`resize_relative_position_bias_table`) when the checkpoint's window differs from the model's;
  ....mlp.fc1/fc2 -> .../mlp/Dense_0/Dense_1; norm -> norm; head.fc -> head.
The buffers `relative_position_index` and `attn_mask` (persistent in older checkpoints) are ignored. Checkpoints in
the official (microsoft/Swin-Transformer) layout, whose stage i ends with the merging that timm puts at the start
of stage i+1 and whose head is `head`, are renamed first, as timm's own checkpoint filter does.
"""
import logging
import math
import re

import numpy as np

from vit_video.checkpoints import convert
from vit_video.checkpoints.torch_keys import Rule, assemble, conv_kernel, convert_keys, dense_kernel, norm, same
from vit_video.layers import windows
from vit_video.models import swin

_LOG = logging.getLogger(__name__)

# Our name -> timm's model of the same configuration.
TIMM_NAMES = {
    "swin_t": "swin_tiny_patch4_window7_224",
    "swin_s": "swin_small_patch4_window7_224",
    "swin_b": "swin_base_patch4_window7_224",
    "swin_l": "swin_large_patch4_window7_224",
    "swin_b_w12": "swin_base_patch4_window12_384",
    "swin_l_w12": "swin_large_patch4_window12_384",
}

_BLOCK = r"layers\.(\d+)\.blocks\.(\d+)\."
_IGNORED = re.compile(r".*\.(relative_position_index|attn_mask)")


def _block(m: re.Match) -> str:
  return f"stage_{m[1]}/block_{m[2]}"


SWIN_RULES: list[Rule] = [
    (r"patch_embed\.proj\.weight", lambda m: "params/embedding/kernel", conv_kernel),
    (r"patch_embed\.proj\.bias", lambda m: "params/embedding/bias", same),
    (r"patch_embed\.norm\.(weight|bias)", lambda m: norm("embedding_norm", m[1]), same),
    (r"layers\.(\d+)\.downsample\.norm\.(weight|bias)", lambda m: norm(f"stage_{m[1]}/downsample/norm", m[2]), same),
    (r"layers\.(\d+)\.downsample\.reduction\.weight", lambda m: f"params/stage_{m[1]}/downsample/reduction/kernel",
     dense_kernel),
    (_BLOCK + r"norm(1|2)\.(weight|bias)", lambda m: norm(f"{_block(m)}/norm{m[3]}", m[4]), same),
    (_BLOCK + r"attn\.proj\.bias", lambda m: f"params/{_block(m)}/attn/out/bias", same),
    (_BLOCK + r"attn\.relative_position_bias_table",
     lambda m: f"params/{_block(m)}/rel_pos/relative_position_bias_table", same),
    (_BLOCK + r"mlp\.fc(1|2)\.weight", lambda m: f"params/{_block(m)}/mlp/Dense_{int(m[3]) - 1}/kernel",
     dense_kernel),
    (_BLOCK + r"mlp\.fc(1|2)\.bias", lambda m: f"params/{_block(m)}/mlp/Dense_{int(m[3]) - 1}/bias", same),
    (r"norm\.(weight|bias)", lambda m: norm("norm", m[1]), same),
    (r"head\.fc\.weight", lambda m: "params/head/kernel", dense_kernel),
    (r"head\.fc\.bias", lambda m: "params/head/bias", same),
]


def official_to_timm_names(state_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Renames an official-layout checkpoint (`layers.{i}.downsample` ends stage i, head `head`) to timm's
  (`layers.{i+1}.downsample`, `head.fc`); a timm-layout one (no `layers.0.downsample`) comes back as it is."""
  if "layers.0.downsample.reduction.weight" not in state_dict:
    return dict(state_dict)
  out = {}
  for k, v in state_dict.items():
    k = re.sub(r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m[1]) + 1}.downsample", k)
    out[re.sub(r"^head\.", "head.fc.", k)] = v
  return out


def import_timm_swin(name: str, state_dict: dict[str, np.ndarray], *, num_classes: int | None = None,
                     **overrides) -> dict:
  """Converts a timm (or official) Swin state dict `{key: tensor.numpy()}` into variables for `swin.MODELS[name]`.

  Args:
    name: a key of `vit_video.models.swin.MODELS` (`swin_t`, ..., `swin_l_w12`).
    state_dict: parameter (and buffer) names -> numpy arrays.
    num_classes: K of the model to build. None keeps the checkpoint's (0 when it has no head). A different K
      drops the head (logged at INFO), to be initialised afresh and merged as
      `{"params": {**fresh["params"], **imported["params"]}}`.
    **overrides: module attributes of `swin.Swin` (e.g. `window_size=12` to fine-tune a window-7 checkpoint at
      window 12: its relative-position tables are resampled; dtypes; a custom size).

  Returns:
    `{'params': ...}` for `swin.MODELS[name](num_classes=K, **overrides).apply`.

  Raises:
    ValueError: an unknown name or attribute, a checkpoint key that is not Swin's (another family's checkpoint),
      a missing model variable, or a shape that differs (naming the model, the checkpoint key and both shapes).
  """
  if name not in swin.MODELS:
    raise ValueError(f"unknown Swin model {name!r}; valid names: {', '.join(sorted(swin.MODELS))}")
  fields = set(swin.Swin.__dataclass_fields__) - {"parent", "name", "num_classes"}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ValueError(f"unknown attribute(s) {unknown} for model {name!r} (Swin); valid: {', '.join(sorted(fields))}")
  state_dict = official_to_timm_names(state_dict)
  head_bias = state_dict.get("head.fc.bias")
  num_classes, replace = convert.head_classes(name, num_classes, head_bias.shape[-1] if head_bias is not None else 0)
  model = swin.MODELS[name](num_classes=num_classes, **overrides)
  side = model.patch_size * 2 ** (len(model.depths) - 1)  # Any size does: parameter shapes do not depend on it.
  expected = convert.expected_variables(model, (side, side))

  def adapt(ours: str, key: str, value: np.ndarray) -> np.ndarray:
    if ours.endswith("relative_position_bias_table") and ours in expected:
      return _resize_table(name, key, value, expected[ours].shape, model.window_size)
    return value

  converted = convert_keys(name, state_dict, expected, rules=SWIN_RULES, ignored=_IGNORED,
                           attention=(_BLOCK, lambda m: f"params/{_block(m)}/attn"), adapt=adapt)
  return assemble(name, converted, expected, head=swin.Swin.head, num_classes=num_classes, replace_head=replace)


def _resize_table(name: str, key: str, table: np.ndarray, want: tuple[int, ...], window) -> np.ndarray:
  """A table of another (square) window, same heads, resampled to the model's window; others left to `assemble`."""
  if table.shape == tuple(want) or table.ndim != 2 or table.shape[1] != want[1]:
    return table
  side = math.isqrt(table.shape[0])
  if side * side != table.shape[0] or side % 2 == 0:
    return table  # Not a square window's table: `assemble` reports the shapes.
  _LOG.info("%s: resampling %r from window %d to %s", name, key, (side + 1) // 2, window)
  return windows.resize_relative_position_bias_table(table, window)

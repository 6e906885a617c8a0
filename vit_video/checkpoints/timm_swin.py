"""Imports timm's Swin Transformer state dicts (given as numpy arrays) into `vit_video.models.swin`.

    import timm
    sd = {k: v.numpy() for k, v in timm.create_model("swin_tiny_patch4_window7_224", pretrained=True)
          .state_dict().items()}
    variables = import_timm("swin_t", sd)  # vit_video.checkpoints.import_timm, which calls import_timm_swin

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
import functools
import logging
import math
import re

import numpy as np

from vit_video.checkpoints.torch_keys import Rule, conv_kernel, dense_kernel, import_state_dict, norm, same
from vit_video.layers import windows

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
  """`import_timm` for a Swin name (`swin_t`, ..., `swin_l_w12`; import_timm checks that it is one): a timm (or
  official) Swin state dict `{key: tensor.numpy()}` -> `{'params': ...}` for `create_model(name, num_classes=K,
  **overrides)`.

  num_classes: K; None keeps the checkpoint's (0 when it has no head), another K drops its head (logged at INFO),
  to be initialised afresh. overrides: Swin's attributes, e.g. `window_size=12` to fine-tune a window-7 checkpoint at
  window 12 (its relative-position tables are resampled). Raises ValueError as `import_timm`.
  """
  return import_state_dict(name, official_to_timm_names(state_dict), num_classes=num_classes, overrides=overrides,
                           head_bias="head.fc.bias", input_size=_any_size, rules=SWIN_RULES, ignored=_IGNORED,
                           attention=(_BLOCK, lambda m: f"params/{_block(m)}/attn"),
                           adapt=functools.partial(_resize_table, name))


def _any_size(model) -> tuple[int, int]:
  """An image size the model takes; its parameter shapes do not depend on it."""
  side = model.patch_size * 2 ** (len(model.depths) - 1)
  return side, side


def _resize_table(name: str, model, expected: dict, ours: str, key: str, table: np.ndarray) -> np.ndarray:
  """A relative-position table of another (square) window, same heads, resampled to the model's window; other
  arrays, and tables of other shapes, as they are (`assemble` reports the shapes)."""
  want = expected[ours].shape if ours.endswith("relative_position_bias_table") and ours in expected else None
  if want is None or table.shape == tuple(want) or table.ndim != 2 or table.shape[1] != want[1]:
    return table
  side = math.isqrt(table.shape[0])
  if side * side != table.shape[0] or side % 2 == 0:
    return table
  _LOG.info("%s: resampling %r from window %d to %s", name, key, (side + 1) // 2, model.window_size)
  return windows.resize_relative_position_bias_table(table, model.window_size)

"""Imports the published `.npz` checkpoints: ViT and hybrids (vit_jax, big_vision) and BiT (big_transfer).

    variables = import_vit_npz("vit_b16", "ViT-B_16.npz", num_classes=10, image_size=384)
    logits = create_model("vit_b16", num_classes=10).apply(variables, images, train=False)

Layouts (names relative to a prefix; `{i}` 0-based blocks):
  vit_jax (google-research/vision_transformer): embedding/{kernel,bias}, cls [1,1,D],
    Transformer/posembed_input/pos_embedding, Transformer/encoderblock_{i}/{LayerNorm_0,
    MultiHeadDotProductAttention_1/{query,key,value,out}, LayerNorm_2, MlpBlock_3/Dense_{0,1}},
    Transformer/encoder_norm, [pre_logits], head; hybrids add conv_root, gn_root, block{s}/unit{u}/... at the top.
    Ours are the same names except cls -> cls/token and the hybrid trunk under stem/.
  big_vision: prefix '', 'opt/target/', 'params/' or 'params/img/' (the first holding embedding/kernel; keys
    outside it, e.g. optimizer state or a text tower, are ignored); pos_embedding at the top; blocks named
    MultiHeadDotProductAttention_0, LayerNorm_1, MlpBlock_0, possibly scanned as Transformer/encoderblock/ with a
    leading layer axis. Detected as timm does: a 'params/' prefix, a top-level pos_embedding or a scanned block.
  big_transfer BiT (prefix resnet/): root_block/standardized_conv2d/kernel ->
    stem_conv/kernel; block{s}/unit{uu:02d}/{a,b,c}/standardized_conv2d/kernel -> stage{s-1}/block{u-1}/conv{1,2,3};
    {a,b,c}/group_norm/{gamma,beta} -> norm{1,2,3}/{scale,bias}; a/proj/standardized_conv2d/kernel ->
    downsample_conv/kernel; group_norm -> norm; head/conv2d/{kernel [1,1,D,K], bias} -> head/{kernel [D,K], bias}.

Files are read with `np.load(path, allow_pickle=False)`: nothing in a checkpoint can run code.
"""
import contextlib
import logging
import os
import re
from collections.abc import Iterator

import numpy as np
from etils import epath

from vit_video.checkpoints import convert
from vit_video.layers.embed import resample_pos_embedding
from vit_video.models import bit, create_model, vit

_LOG = logging.getLogger(__name__)

VIT_PREFIXES = ("", "opt/target/", "params/", "params/img/")
BIG_VISION_BLOCK_NAMES = {"MultiHeadDotProductAttention_0": "MultiHeadDotProductAttention_1",
                          "LayerNorm_1": "LayerNorm_2", "MlpBlock_0": "MlpBlock_3"}
POS = "params/Transformer/posembed_input/pos_embedding"


def import_vit_npz(name: str, path: str | os.PathLike, *, num_classes: int | None = None,
                   image_size: int | tuple[int, int] | None = None, scan: bool = False, **overrides) -> dict:
  """Reads a published `.npz` checkpoint into variables `{'params': ...}` for `create_model(name, ...)`.

  Args:
    name: a ViT or hybrid (`vit_*`, `r*_vit_*`; vit_jax or big_vision layout) or a BiT (`bit_*`, big_transfer
      layout) name from `vit_video.models.MODELS`.
    path: the `.npz` file: a local path or any `etils.epath` URI (gs://...).
    num_classes: K of the model to build. None keeps the checkpoint's (0 when it has none). A different K drops
      the checkpoint's head, which must then be initialised afresh (see below).
    image_size: ViT only: `H` or `(H, W)` to fine-tune at. A grid other than the checkpoint's gets the position
      embedding resampled bilinearly (`resample_pos_embedding`; the checkpoint grid must be square). None keeps
      the checkpoint's grid.
    scan: ViT only: return the `nn.scan` layout (`Transformer/encoderblock` stacked), for `scan=True` models.
    **overrides: module attributes for `create_model` (e.g. `representation_size=768` to keep a pre_logits
      layer, `pool="gap"` for a big_vision model without class token, dtypes).

  Returns:
    `{'params': ...}`, ready for `create_model(name, num_classes=K, scan=scan, **overrides).apply`, except that
    dropped parts are absent: a replaced head, and `pre_logits` when the model has no representation layer
    (vit_jax drops it the same way when fine-tuning). Their checkpoint keys are logged at INFO (loggers
    `vit_video.checkpoints.*`, as is a resampling). Both are top-level entries, so merge with fresh ones as

        fresh = model.init(jax.random.key(0), images, train=False)
        variables = {"params": {**fresh["params"], **imported["params"]}}

  Raises:
    ValueError: the file is not an npz of plain numeric arrays (an object array would need pickle); the
      checkpoint is of another family (no `embedding/kernel` under any ViT prefix, no `resnet/root_block`); a
      checkpoint array has no place in the model, a model variable is missing, or a shape differs (naming the
      model, key and both shapes); bad `image_size` (from the model's own check).
  """
  model = create_model(name, num_classes=0, **overrides)  # Validates name and overrides; K comes later.
  if scan and not isinstance(model, vit.ViT):
    raise ValueError(f"{name}: scan=True applies to ViT models only")
  if not isinstance(model, (vit.ViT, bit.BiT)):
    raise ValueError(f"{name}: no published .npz layout for {type(model).__name__} models; use import_timm")
  if image_size is not None and not isinstance(model, vit.ViT):
    raise ValueError(f"{name}: image_size applies to ViT models only")
  with _open_npz(path) as npz:
    converted = _vit_arrays(name, npz, path) if isinstance(model, vit.ViT) else _bit_arrays(name, npz, path)

  left_to_init = ()
  head_bias = converted.get("params/head/bias")
  num_classes, replace = convert.head_classes(name, num_classes,
                                              head_bias.value.shape[-1] if head_bias is not None else 0)
  if replace:
    convert.drop_head(name, converted, ("params/head/",), f"the model has {num_classes} classes")
    left_to_init = ("params/head/",)
  model = create_model(name, num_classes=num_classes, **overrides)
  if isinstance(model, vit.ViT):
    if model.representation_size is None:
      convert.drop_head(name, converted, ("params/pre_logits/",), "the model has representation_size=None")
    h, w = _vit_image_shape(model, converted, image_size)
    expected = convert.expected_variables(model, (h, w))  # The model checks that H, W divide into patches.
    patch = convert.vit_total_patch(model)
    _resample_pos_embedding(name, model, converted, expected, (h // patch, w // patch))
  else:
    expected = convert.expected_variables(model, (64, 64))  # BiT parameter shapes do not depend on H, W.
  variables = convert.assemble(name, converted, expected, left_to_init=left_to_init)
  if scan:
    variables["params"] = vit.unscanned_to_scan(variables["params"])
  return variables


@contextlib.contextmanager
def _open_npz(path: str | os.PathLike) -> Iterator[np.lib.npyio.NpzFile]:
  """Opens an `.npz` (a local path or any `etils.epath` URI, e.g. gs://) without pickle (arrays are read on
  access); ValueError for anything else."""
  with epath.Path(path).open("rb") as f:
    try:
      npz = np.load(f, allow_pickle=False)
    except ValueError as e:  # A pickle file: np.load refuses it.
      raise ValueError(f"{path}: not an .npz of plain arrays ({e})") from e
    if not isinstance(npz, np.lib.npyio.NpzFile):
      raise ValueError(f"{path}: expected an .npz archive of named arrays; got a single {type(npz).__name__}")
    with npz:
      yield npz


def _read(npz: np.lib.npyio.NpzFile, key: str, path) -> np.ndarray:
  """One numeric array; ValueError naming the key for an object array (it would need pickle) or other dtype."""
  try:
    a = npz[key]
  except ValueError as e:  # allow_pickle=False refuses object arrays.
    raise ValueError(f"{path}: array {key!r} cannot be read without pickle ({e}); checkpoints hold numeric "
                     "arrays only") from e
  if a.dtype.kind not in "fiu":
    raise ValueError(f"{path}: array {key!r} has dtype {a.dtype}; checkpoints hold numeric arrays only")
  return a


def _vit_arrays(name: str, npz: np.lib.npyio.NpzFile, path) -> dict[str, convert.Converted]:
  """vit_jax / big_vision ViT names -> ours, blocks unstacked when scanned. Reads only the keys under the prefix."""
  prefix = next((p for p in VIT_PREFIXES if f"{p}embedding/kernel" in npz.files), None)
  if prefix is None:
    raise ValueError(f"{name}: {path} is not a ViT checkpoint: no 'embedding/kernel' under any of the prefixes "
                     f"{VIT_PREFIXES}; its first keys are {sorted(npz.files)[:5]}")
  rel = {k[len(prefix):]: k for k in npz.files if k.startswith(prefix)}
  big_vision = (prefix.startswith("params/") or "pos_embedding" in rel
                or "Transformer/encoderblock/LayerNorm_0/scale" in rel)
  converted = {}
  for key, source in rel.items():
    a = _read(npz, source, path)
    if key.startswith("Transformer/encoderblock/"):  # Scanned: [L, ...] -> L blocks.
      rest = key[len("Transformer/encoderblock/"):]
      for i in range(a.shape[0]):
        ours = _vit_name(f"Transformer/encoderblock_{i}/{rest}", big_vision)
        converted[ours] = convert.Converted(f"{source}[{i}]", a.shape[1:], a[i])
    else:
      converted[_vit_name(key, big_vision)] = convert.Converted(source, a.shape, a)
  return converted


def _vit_name(key: str, big_vision: bool) -> str:
  """One vit_jax / big_vision key (prefix removed, blocks unscanned) -> our flat 'params/...' path."""
  parts = key.split("/")
  if key == "cls":
    parts = ["cls", "token"]
  elif key == "pos_embedding":
    parts = ["Transformer", "posembed_input", "pos_embedding"]
  elif re.fullmatch(r"conv_root|gn_root|block\d+", parts[0]):
    parts = ["stem", *parts]
  elif big_vision and len(parts) > 2 and re.fullmatch(r"encoderblock_\d+", parts[1]):
    parts[2] = BIG_VISION_BLOCK_NAMES.get(parts[2], parts[2])
  return "/".join(["params", *parts])


def _vit_image_shape(model: vit.ViT, converted: dict[str, convert.Converted],
                     image_size: int | tuple[int, int] | None) -> tuple[int, int]:
  """`image_size` as (H, W), or without it an image size giving the checkpoint's token count."""
  if image_size is not None:
    return (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
  pos = converted.get(POS)
  n = pos.value.shape[1] - int(model.pool == "token") if pos is not None and pos.value.ndim == 3 else 1
  return convert.vit_image_shape(model, n)


def _resample_pos_embedding(name: str, model: vit.ViT, converted: dict[str, convert.Converted], expected: dict,
                            grid: tuple[int, int]) -> None:
  """Resamples the checkpoint's (square-grid) position embedding in place to the model's `grid` (gh, gw) when
  the token counts differ."""
  pos, want = converted.get(POS), expected[POS].shape
  if pos is None or pos.value.shape == want or pos.value.ndim != 3 or pos.value.shape[2] != want[2]:
    return  # Nothing to do, or a mismatch that `assemble` reports.
  value = np.asarray(resample_pos_embedding(pos.value, grid, num_prefix_tokens=int(model.pool == "token")))
  _LOG.info("%s: resampled %s from %s to %s (grid %s)", name, pos.source, pos.value.shape, value.shape, grid)
  converted[POS] = convert.Converted(pos.source, pos.source_shape, value)


def _bit_arrays(name: str, npz: np.lib.npyio.NpzFile, path) -> dict[str, convert.Converted]:
  """big_transfer BiT names (prefix resnet/) -> ours."""
  if "resnet/root_block/standardized_conv2d/kernel" not in npz.files:
    raise ValueError(f"{name}: {path} is not a BiT checkpoint: no 'resnet/root_block/standardized_conv2d/kernel'; "
                     f"its first keys are {sorted(npz.files)[:5]}")
  converted = {}
  for source in npz.files:
    a = _read(npz, source, path)
    ours, value = _bit_name(source.removeprefix("resnet/"), a)
    converted[ours] = convert.Converted(source, a.shape, value)
  return converted


_ABC = {"a": 1, "b": 2, "c": 3}
_GN = {"gamma": "scale", "beta": "bias"}


def _bit_name(key: str, a: np.ndarray) -> tuple[str, np.ndarray]:
  """One big_transfer key (prefix removed) -> our flat 'params/...' path and array; unknown keys kept as they are."""
  unit = r"block(\d+)/unit(\d+)/"
  if key == "root_block/standardized_conv2d/kernel":
    return "params/stem_conv/kernel", a
  if m := re.fullmatch(unit + r"([abc])/standardized_conv2d/kernel", key):
    return f"params/stage{int(m[1]) - 1}/block{int(m[2]) - 1}/conv{_ABC[m[3]]}/kernel", a
  if m := re.fullmatch(unit + r"([abc])/group_norm/(gamma|beta)", key):
    return f"params/stage{int(m[1]) - 1}/block{int(m[2]) - 1}/norm{_ABC[m[3]]}/{_GN[m[4]]}", a
  if m := re.fullmatch(unit + r"a/proj/standardized_conv2d/kernel", key):
    return f"params/stage{int(m[1]) - 1}/block{int(m[2]) - 1}/downsample_conv/kernel", a
  if m := re.fullmatch(r"group_norm/(gamma|beta)", key):
    return f"params/norm/{_GN[m[1]]}", a
  if key == "head/conv2d/kernel":  # A 1x1 conv [1,1,D,K] -> Dense [D,K].
    return "params/head/kernel", a.reshape(a.shape[2:]) if a.ndim == 4 and a.shape[:2] == (1, 1) else a
  if key == "head/conv2d/bias":
    return "params/head/bias", a
  return f"params/{key}", a

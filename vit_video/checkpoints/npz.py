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

Files are read with `np.load(path, allow_pickle=False)`: nothing in a checkpoint can run code. A file that is not
a whole .npz (a truncated download, a saved HTML error page, a pickle), an array holding NaN or infinity, and
arrays that do not fit the model asked for are refused with a ValueError naming the file.
"""
import contextlib
import logging
import os
import re
import zipfile
import zlib
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
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # A zip's first entry, or the end record of an empty zip.
_DAMAGED = (zipfile.BadZipFile, EOFError, zlib.error, OSError)  # Reading a truncated or overwritten archive.
_SHOWN = 5  # How many arrays an error lists.


class ModelMismatchError(ValueError):
  """A checkpoint's arrays do not fit the model asked for: some are missing, extra, or of another shape."""


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
    ValueError: the file is not a complete .npz archive (truncated or damaged: download it again) or not an .npz
      at all (its first bytes are shown); it holds an object array (that would need pickle) or an array with NaN
      or infinity (each such key named); the checkpoint is of another family (no `embedding/kernel` under any
      ViT prefix, no `resnet/root_block`); bad `image_size` (from the model's own check).
    ModelMismatchError (a ValueError): checkpoint arrays with no place in the model, model variables missing from
      the checkpoint, and arrays whose shapes differ (checkpoint key, both shapes), all listed; for a ViT also
      the sizes (patch_size, width, depth, ...) in which the checkpoint and the model differ.
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
  _check_finite(path, converted)

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
  _check_fits(name, model, path, converted, expected, left_to_init)
  variables = convert.assemble(name, converted, expected, left_to_init=left_to_init)
  if scan:
    variables["params"] = vit.unscanned_to_scan(variables["params"])
  return variables


@contextlib.contextmanager
def _open_npz(path: str | os.PathLike) -> Iterator[np.lib.npyio.NpzFile]:
  """Opens an `.npz` (a local path or any `etils.epath` URI, e.g. gs://) without pickle (arrays are read on
  access); ValueError naming the file for anything else: not a zip (its first bytes shown), or a zip whose
  index is gone (a truncated download)."""
  with epath.Path(path).open("rb") as f:
    head = f.read(32)
    if not head.startswith(_ZIP_MAGIC):
      raise ValueError(f"{path} is not an .npz archive (a zip of .npy arrays): {_kind(head)}")
    f.seek(0)
    try:
      npz = np.load(f, allow_pickle=False)
    except _DAMAGED as e:
      raise ValueError(f"{path} is not a complete .npz archive ({type(e).__name__}: {e}): a truncated or damaged "
                       f"download? Download it again") from e
    with npz:
      yield npz


def _kind(head: bytes) -> str:
  """What a file is, from its first bytes, for an error message."""
  if not head:
    return "the file is empty"
  if head.startswith(b"\x93NUMPY"):
    return "it is a single .npy array (np.save), not an archive of named arrays (np.savez)"
  if head[0] == 0x80:  # The PROTO opcode that starts every pickle of protocol 2 or later.
    return "it is a Python pickle, which is never loaded (unpickling can run code)"
  return f"its first bytes are {head!r}"


def _read(npz: np.lib.npyio.NpzFile, key: str, path) -> np.ndarray:
  """One numeric array; ValueError naming the key for an object array (it would need pickle) or other dtype, and
  naming the file when the array's bytes are damaged (a CRC mismatch, data cut short)."""
  try:
    a = npz[key]
  except _DAMAGED as e:
    raise ValueError(f"{path}: array {key!r} cannot be read ({type(e).__name__}: {e}): the .npz archive is "
                     f"damaged (a truncated or damaged download?). Download it again") from e
  except ValueError as e:  # allow_pickle=False refuses object arrays.
    raise ValueError(f"{path}: array {key!r} cannot be read without pickle ({e}); checkpoints hold numeric "
                     "arrays only") from e
  if a.dtype.kind not in "fiu":
    raise ValueError(f"{path}: array {key!r} has dtype {a.dtype}; checkpoints hold numeric arrays only")
  return a


def _check_finite(path, converted: dict[str, convert.Converted]) -> None:
  """ValueError naming every checkpoint array that holds NaN or infinity."""
  bad = [(c.source, int(np.sum(~np.isfinite(c.value))), c.value.size) for c in converted.values()
         if c.value.dtype.kind == "f" and not np.all(np.isfinite(c.value))]
  if bad:
    listed = [f"{source!r} ({n} of {size} values)" for source, n, size in sorted(bad)]
    raise ValueError(f"{path}: {len(bad)} array(s) hold NaN or infinity: {_show(listed)}; weights must be finite "
                     f"(the run that wrote it diverged, or the file is damaged)")


def _show(items: list[str]) -> str:
  return ", ".join(items[:_SHOWN]) + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def _check_fits(name: str, model: vit.ViT | bit.BiT, path, converted: dict[str, convert.Converted], expected: dict,
                left_to_init: tuple[str, ...]) -> None:
  """ModelMismatchError listing every array that does not fit the model: those with no place in it, the model's
  variables the checkpoint lacks (but those in `left_to_init`) and those whose shapes differ (both shapes); for a
  ViT, also the sizes in which the two differ."""
  unexpected = sorted(k for k in converted if k not in expected)
  missing = sorted(k for k in expected if k not in converted and not k.startswith(left_to_init))
  differ = sorted(k for k in converted if k in expected and converted[k].value.shape != expected[k].shape)
  if not (unexpected or missing or differ):
    return
  problems = []
  if isinstance(model, vit.ViT):
    sizes = [f"{a} {v} vs {getattr(model, a)}" for a, v in _vit_sizes(converted).items()
             if v is not None and v != getattr(model, a)]
    if sizes:
      problems.append(f"sizes that differ (checkpoint vs model): {', '.join(sizes)}")
  if differ:
    shapes = []
    for k in differ:
      c = converted[k]
      read_as = f" (read as {c.value.shape})" if c.value.shape != c.source_shape else ""
      shapes.append(f"{c.source!r} {c.source_shape}{read_as} vs {tuple(expected[k].shape)}")
    problems.append(f"{len(differ)} checkpoint array(s) differ in shape (checkpoint vs model): {_show(shapes)}")
  if unexpected:
    problems.append(f"{len(unexpected)} checkpoint array(s) have no place in the model: "
                    f"{_show([repr(converted[k].source) for k in unexpected])}")
  if missing:
    problems.append(f"{len(missing)} model variable(s) are missing from the checkpoint: {_show(missing)}")
  raise ModelMismatchError(f"{name}: {path} does not fit the model: {'; '.join(problems)}")


def _vit_sizes(converted: dict[str, convert.Converted]) -> dict[str, object]:
  """A ViT checkpoint's module attributes as its shapes tell them (None where an array is absent)."""
  shape = lambda key: converted[key].value.shape if key in converted else None  # noqa: E731
  embedding = shape("params/embedding/kernel")  # [P,P,C,D]
  root = shape("params/stem/conv_root/kernel")  # [7,7,C,D'] of a hybrid's trunk
  query = shape("params/Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel")  # [D,heads,D/heads]
  mlp = shape("params/Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel")  # [D,mlp_dim]
  blocks = {k.split("/")[2] for k in converted if k.startswith("params/Transformer/encoderblock_")}
  return {
      "patch_size": (embedding[0] if embedding[0] == embedding[1] else embedding[:2]) if embedding else None,
      "width": embedding[-1] if embedding else None,
      "depth": len(blocks) or None,
      "num_heads": query[1] if query else None,
      "mlp_dim": mlp[-1] if mlp else None,
      "in_channels": (root or embedding or (None,) * 3)[2],
  }


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

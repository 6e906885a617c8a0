"""What the importers share: the model's expected variables, the checks, head dropping, flat names.

Importers rename checkpoint arrays to flat, `/`-joined variable paths that start with the collection
("params/Transformer/encoder_norm/scale", "batch_stats/bn1/mean") and keep, for each, the checkpoint key it came
from, so that every error names both. `assemble` then checks the set of names and every shape against the
model's own (from `jax.eval_shape` of its `init`, which costs nothing) and builds the nested variables.
"""
import dataclasses
import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_video import models

_LOG = logging.getLogger(__name__)
_SHOWN = 5  # How many names an error message lists.
UNKNOWN = "unknown/"  # Path prefix for checkpoint keys that no rule recognises.


@dataclasses.dataclass(frozen=True)
class Converted:
  """One array renamed and re-laid-out for the model, with where it came from (for error messages)."""
  source: str  # Checkpoint key, e.g. "blocks.0.attn.qkv.weight[query]".
  source_shape: tuple[int, ...]
  value: np.ndarray


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
  """Nested dicts -> {"a/b/c": leaf}."""
  flat = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      flat.update(flatten(v, f"{prefix}{k}/"))
    else:
      flat[f"{prefix}{k}"] = v
  return flat


def unflatten(flat: dict[str, object]) -> dict:
  """{"a/b/c": leaf} -> nested dicts."""
  tree = {}
  for path, v in flat.items():
    *parents, leaf = path.split("/")
    node = tree
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = v
  return tree


def supported_family(name: str, families: tuple[type, ...], source: str) -> type:
  """The family of model `name` when `source`'s importer takes it; else ValueError listing the names it takes."""
  if name not in models.MODELS or models.model_class(name) not in families:
    supported = sorted(n for n in models.MODELS if models.model_class(n) in families)
    what = f"{name!r} ({models.model_class(name).__name__})" if name in models.MODELS else f"unknown model {name!r}"
    raise ValueError(f"no {source} importer for {what}; supported: {', '.join(supported)}")
  return models.model_class(name)


def head_classes(name: str, requested: int | None, in_checkpoint: int) -> tuple[int, bool]:
  """Returns (K to build the model with, whether the checkpoint's head is replaced).

  `requested` None keeps the checkpoint's K (0 when it has no head: the model returns features).
  """
  if requested is None:
    return in_checkpoint, False
  if requested < 0:
    raise ValueError(f"{name}: num_classes must be >= 0; got {requested}")
  return requested, requested != in_checkpoint


def expected_variables(model: nn.Module, size: tuple[int, ...]) -> dict[str, jax.ShapeDtypeStruct]:
  """Flat {collection/path: ShapeDtypeStruct} of `model.init` on one `[1,*size,C]` input (an image (H, W) or a clip
  (T, H, W)), via `jax.eval_shape`."""
  x = jax.ShapeDtypeStruct((1, *size, model.in_channels), jnp.float32)
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  return flatten(dict(shapes))


def vit_total_patch(model: nn.Module) -> int:
  """A ViT's input pixels per token side: the patch times a hybrid trunk's stride 4 * 2**max(S-1, 0) (vit.py)."""
  if model.stem_stage_sizes is None:
    return model.patch_size
  return model.patch_size * 4 * 2 ** max(len(model.stem_stage_sizes) - 1, 0)


def vit_image_shape(model: nn.Module, num_grid_tokens: int) -> tuple[int, int]:
  """An image size (H, W) whose token grid has `num_grid_tokens` tokens: one row of them.

  Parameter shapes depend on the grid only through its token count, so a 1 x n grid stands for whatever
  (square or not) grid a checkpoint was trained at.
  """
  patch = vit_total_patch(model)
  return patch, patch * max(num_grid_tokens, 1)


def drop_head(name: str, converted: dict[str, Converted], prefixes: tuple[str, ...], reason: str) -> list[str]:
  """Removes the arrays under `prefixes` (e.g. "params/head/") and logs their checkpoint keys; returns them."""
  dropped = sorted(k for k in converted if k.startswith(prefixes))
  sources = [converted.pop(k).source for k in dropped]
  if sources:
    _LOG.info("%s: dropped %s (%s); initialise them afresh", name, ", ".join(sources), reason)
  return sources


def _describe(path: str, c: Converted) -> str:
  """An unexpected array: its checkpoint key, and our path when the key was recognised."""
  return repr(c.source) if path.startswith(UNKNOWN) else f"{c.source!r} (as {path!r})"


def _show(names: list[str]) -> str:
  more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
  return ", ".join(names[:_SHOWN]) + more


def assemble(name: str, converted: dict[str, Converted], expected: dict[str, jax.ShapeDtypeStruct], *,
             left_to_init: tuple[str, ...] = ()) -> dict:
  """Checks names and shapes against the model and returns nested variables `{collection: {...}}`.

  Every expected path must be converted except those starting with one of `left_to_init` (a dropped head),
  and every converted path must be expected. Arrays are cast to the model's parameter dtype.

  Raises:
    ValueError: naming the model, the unexpected checkpoint keys or the missing model paths (first few), or the
      first array whose shape differs (checkpoint key, our path, both shapes).
  """
  unexpected = sorted(k for k in converted if k not in expected)
  if unexpected:
    raise ValueError(f"{name}: {len(unexpected)} checkpoint array(s) have no place in the model: "
                     f"{_show([_describe(k, converted[k]) for k in unexpected])}")
  missing = sorted(k for k in expected if k not in converted and not k.startswith(left_to_init))
  if missing:
    raise ValueError(f"{name}: {len(missing)} model variable(s) are missing from the checkpoint: {_show(missing)}")
  out = {}
  for k, c in converted.items():
    want = expected[k]
    if c.value.shape != want.shape:
      via = f" (converted to {c.value.shape})" if c.value.shape != c.source_shape else ""
      raise ValueError(f"{name}: checkpoint array {c.source!r} has shape {c.source_shape}{via} but the model's "
                       f"{k!r} has shape {want.shape}")
    out[k] = jnp.asarray(c.value, dtype=want.dtype)
  return unflatten(out)

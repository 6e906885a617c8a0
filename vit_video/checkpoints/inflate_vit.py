"""ViViT and TimeSformer initialised from a 2D ViT's parameters (the helpers and kernel modes: inflate.py)."""
import functools

import jax.numpy as jnp
import numpy as np

from vit_video.checkpoints.inflate import (INFLATIONS, Inflation, copy_leaf, copy_tree, inflate_kernel, unwrap,
                                           zeros_like)
from vit_video.layers.embed import resample_pos_embedding
from vit_video.models import vit

_VIT_KEYS = {"embedding", "cls", "Transformer", "pre_logits", "head"}
_VIT_BLOCK = ("LayerNorm_0", "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3")


def _vit_encoder(vit_params: dict, target: str) -> tuple[dict, dict]:
  """(the ViT's params, its encoder unscanned); ValueError for another family or a hybrid."""
  vit_params, _ = unwrap(vit_params)
  if "stem" in vit_params:
    raise ValueError(f"a hybrid ViT (ResNet 'stem' + ViT) cannot initialise a {target}, which embeds pixels "
                     "directly; start from a plain ViT")
  if set(vit_params) - _VIT_KEYS or not {"embedding", "Transformer"} <= set(vit_params):
    raise ValueError(f"vit_params are not a vit_video ViT's parameters (expected top-level {sorted(_VIT_KEYS)}, "
                     f"with 'embedding' and 'Transformer'); got {sorted(vit_params)}")
  encoder = vit_params["Transformer"]
  if "encoderblock" in encoder:  # Scanned layout: one stacked block.
    encoder = vit.scan_to_unscanned(vit_params)["Transformer"]
  return vit_params, encoder


def _depth(encoder: dict) -> int:
  return sum(1 for k in encoder if k.startswith("encoderblock_"))


def vivit_from_vit(vit_params: dict, template: dict, *, mode: Inflation = "central_frame",
                   frame_grid: tuple[int, int] | None = None, vit_grid: tuple[int, int] | None = None) -> dict:
  """ViViT parameters initialised from a 2D ViT's (vit.ViT's names, or a converted published .npz).

  Args:
    vit_params: a ViT's 'params' (scanned or not; no hybrid stem).
    template: the ViViT's 'params': it fixes the variant and every shape.
    mode: the patch kernel `[p,p,C,D]` as a tubelet kernel `[t,p,p,C,D]` (`inflate_kernel`; "central_frame" is
      the paper's best). A "uniform" ViViT takes the 2D kernel as it is.
    frame_grid: the ViViT's tokens per frame (H/p, W/p); None: the ViT's own grid (its embeddings are taken as
      they are). Given, the ViT's grid is resampled to it bilinearly (`resample_pos_embedding`; unchanged when
      the grids agree).
    vit_grid: the ViT's token grid, used only with frame_grid; None: the square grid its token count implies.

  Copied: the patch embedding (inflated), the class token (Models 1 and 2), the position embedding (its grid,
  resampled if needed, repeated over the T' temporal indices; Model 2's spatial encoder takes it per frame; the
  class-token row kept where the ViViT has a class token), every encoder block, the final norm, pre_logits and the
  head where their shapes agree. Left from the template: Model 2's temporal encoder and temporal class token, Model
  3's temporal LayerNorms; Model 3's temporal attentions are zeroed (the paper's Sec. 3.4: the temporal step is then
  a plain residual, the block the ViT's per frame; scenic's loader copies the spatial weights instead by default);
  a head (or pre_logits) of another size is dropped.

  Raises:
    ValueError: for parameters that are not a ViT's (another family, e.g. a ResNet's; a hybrid), a different
      width, depth, patch size, channel count or MLP/head shape, or a grid that does not fit.
  """
  template, wrapped = unwrap(template)
  vit_params, encoder = _vit_encoder(vit_params, "ViViT")
  copy = functools.partial(copy_tree, source="ViT", target="ViViT", hint="different mlp_dim, heads or width?")
  vit_kernel = vit_params["embedding"]["kernel"]
  if np.ndim(vit_kernel) != 4:
    raise ValueError(f"the ViT's patch embedding kernel should be [p,p,C,D]; got shape {np.shape(vit_kernel)}")
  if mode not in INFLATIONS:
    raise ValueError(f"inflation mode {mode!r} is not one of {list(INFLATIONS)}")
  fe = "SpatialTransformer" in template
  name = "SpatialTransformer" if fe else "Transformer"
  if name not in template or "embedding" not in template:
    raise ValueError(f"template is not a ViViT's parameters; got {sorted(template)}")
  target = template[name]
  kernel = template["embedding"]["kernel"]
  if np.shape(vit_kernel)[-1] != kernel.shape[-1]:
    raise ValueError(f"ViT width {np.shape(vit_kernel)[-1]} differs from the ViViT's width {kernel.shape[-1]}")
  if _depth(encoder) != _depth(target):
    raise ValueError(f"ViT depth {_depth(encoder)} differs from the ViViT's depth {_depth(target)} ({name})")
  if kernel.shape[-4:] != np.shape(vit_kernel):
    raise ValueError(f"the ViT's patch kernel {np.shape(vit_kernel)} [p,p,C,D] does not match the ViViT's "
                     f"{kernel.shape} (patch size or channels differ)")

  out = dict(template)
  vit_kernel = jnp.asarray(vit_kernel, kernel.dtype)
  out["embedding"] = {"kernel": inflate_kernel(vit_kernel, kernel.shape, mode) if kernel.ndim == 5 else vit_kernel,
                      "bias": copy("embedding/bias", vit_params["embedding"]["bias"], template["embedding"]["bias"])}
  if "cls" in template and "cls" in vit_params:
    out["cls"] = copy("cls", vit_params["cls"], template["cls"])

  # Position embedding: ViT [1, P + g, D] (P = 1 with a class token) -> grid resampled, repeated over time.
  posemb = jnp.asarray(encoder["posembed_input"]["pos_embedding"])
  vit_prefix = 1 if "cls" in vit_params else 0
  per_frame = g = posemb.shape[1] - vit_prefix
  if frame_grid is not None:
    if vit_grid is None and int(round(np.sqrt(g))) ** 2 != g:
      raise ValueError(f"the ViT's {g} grid position embeddings are not a square grid; pass vit_grid")
    posemb = resample_pos_embedding(posemb, frame_grid, num_prefix_tokens=vit_prefix, old_grid=vit_grid)
    per_frame = frame_grid[0] * frame_grid[1]
  wanted = target["posembed_input"]["pos_embedding"]
  prefix = 1 if "cls" in template else 0
  frames, rest = divmod(wanted.shape[1] - prefix, per_frame)
  if rest or (fe and frames != 1):
    source = "the ViT's grid" if frame_grid is None else f"frame_grid {tuple(frame_grid)}"
    raise ValueError(f"the ViViT's {wanted.shape[1] - prefix} grid position embeddings are not whole frames of the "
                     f"{per_frame} tokens of {source}; pass frame_grid=(H/p, W/p) of the ViViT's frames")
  cls_row = posemb[:, :1] if vit_prefix else jnp.asarray(wanted[:, :1])
  rows = [cls_row] * prefix + [jnp.tile(posemb[:, vit_prefix:], (1, frames, 1))]  # [1, prefix + T'S, D]
  new_target = {"posembed_input": {"pos_embedding": copy_leaf(
                    "Transformer/posembed_input/pos_embedding", jnp.concatenate(rows, axis=1), wanted, source="ViT",
                    target="ViViT", hint="different width?")},
                "encoder_norm": copy("Transformer/encoder_norm", encoder["encoder_norm"], target["encoder_norm"])}
  for i in range(_depth(target)):
    path, block = f"Transformer/encoderblock_{i}", target[f"encoderblock_{i}"]
    new_block = {}
    for key, sub in block.items():
      if key == "MultiHeadDotProductAttention_time":
        new_block[key] = zeros_like(sub)
      elif key == "LayerNorm_time":
        new_block[key] = sub
      elif key not in encoder[f"encoderblock_{i}"]:
        raise ValueError(f"ViT block {path!r} has no {key!r}; its entries are {sorted(encoder[f'encoderblock_{i}'])}")
      else:
        new_block[key] = copy(f"{path}/{key}", encoder[f"encoderblock_{i}"][key], sub)
    new_target[f"encoderblock_{i}"] = new_block
  out[name] = new_target
  for key in ("pre_logits", "head"):  # Copied where the shapes agree, else left from the template.
    if key in template and key in vit_params and all(
        np.shape(vit_params[key][k]) == template[key][k].shape for k in template[key]):
      out[key] = copy(key, vit_params[key], template[key])
  return {"params": out} if wrapped else out


def timesformer_from_vit(vit_params: dict, template: dict, *, frame_grid: tuple[int, int] | None = None,
                         vit_grid: tuple[int, int] | None = None) -> dict:
  """TimeSformer parameters initialised from a 2D ViT's (vit.ViT's names, or a converted published .npz), as the
  official `load_pretrained` does.

  Args:
    vit_params: a class-token ViT's 'params' (scanned or not; no hybrid stem).
    template: the TimeSformer's 'params'; it fixes the attention scheme and every shape.
    frame_grid: the TimeSformer's tokens per frame (H/p, W/p) when it differs from the ViT's: the ViT's grid
      position embedding is resampled to it bilinearly (`resample_pos_embedding`). None: taken as it is.
    vit_grid: the ViT's grid, used only with frame_grid; None: the square grid its token count implies.

  Copied: the patch embedding, the class token, the position embedding (class row and grid, shared by all
  frames), every block's LayerNorm_0, attention, LayerNorm_2 and MLP, the final norm, and the head where its shape
  agrees (else the template's is kept). The temporal (and width) attention and its LayerNorm are copies of the
  block's spatial ones (the official loader's `attn` -> `temporal_attn`, `norm1` -> `temporal_norm1`); their
  output layers `Dense_{time,width}` and the time embedding are set to zero (their official initial values,
  which no ViT checkpoint holds). So the temporal steps start as identities: a "divided" model then is the ViT per
  frame, and on a clip of identical frames gives the ViT's logits; so does "space" (which averages its per-frame
  class tokens). "joint" does on a single frame only, "axial" not at all (its height step is not the ViT's).

  Raises:
    ValueError: for parameters that are not a class-token ViT's (another family, a hybrid, a "gap" ViT), or a
      different width, depth, patch size, channel count, MLP width or position grid.
  """
  template, wrapped = unwrap(template)
  vit_params, encoder = _vit_encoder(vit_params, "TimeSformer")
  copy = functools.partial(copy_tree, source="ViT", target="TimeSformer",
                           hint="different width, mlp_dim, heads, patch size or channels?")
  if "cls" not in vit_params:
    raise ValueError("the ViT has no class token (pool='gap'); TimeSformer classifies its class token")
  if not {"embedding", "cls", "Transformer"} <= set(template):
    raise ValueError(f"template is not a TimeSformer's parameters; got {sorted(template)}")
  target = template["Transformer"]
  if _depth(encoder) != _depth(target):
    raise ValueError(f"ViT depth {_depth(encoder)} differs from the TimeSformer's depth {_depth(target)}")
  out = dict(template)
  out["embedding"] = copy("embedding", vit_params["embedding"], template["embedding"])
  out["cls"] = copy("cls", vit_params["cls"], template["cls"])
  posemb = jnp.asarray(encoder["posembed_input"]["pos_embedding"])  # [1,1+g,D]
  if frame_grid is not None:
    posemb = resample_pos_embedding(posemb, frame_grid, num_prefix_tokens=1, old_grid=vit_grid)
  wanted = target["posembed_input"]["pos_embedding"]
  if posemb.shape != wanted.shape:
    raise ValueError(f"the ViT's position embedding has shape {posemb.shape}, the TimeSformer's {wanted.shape} "
                     f"(a class row and the H/p x W/p grid of one frame); pass frame_grid=(H/p, W/p) to resample it")
  new_target = {"posembed_input": {"pos_embedding": posemb.astype(wanted.dtype)},
                "encoder_norm": copy("Transformer/encoder_norm", encoder["encoder_norm"], target["encoder_norm"])}
  if "posembed_time" in target:
    new_target["posembed_time"] = zeros_like(target["posembed_time"])
  for i in range(_depth(target)):
    path, vit_block = f"Transformer/encoderblock_{i}", encoder[f"encoderblock_{i}"]
    new_block = {}
    for key, sub in target[f"encoderblock_{i}"].items():
      base, _, axis = key.rpartition("_")
      if axis in ("time", "width") and base == "Dense":
        new_block[key] = zeros_like(sub)
      elif axis in ("time", "width"):
        source = {"MultiHeadDotProductAttention": "MultiHeadDotProductAttention_1", "LayerNorm": "LayerNorm_0"}[base]
        new_block[key] = copy(f"{path}/{source}", vit_block.get(source), sub)
      elif key in _VIT_BLOCK:
        new_block[key] = copy(f"{path}/{key}", vit_block.get(key), sub)
      else:
        raise ValueError(f"{path}: the TimeSformer block entry {key!r} has no ViT counterpart")
    new_target[f"encoderblock_{i}"] = new_block
  out["Transformer"] = new_target
  if "head" in template and "head" in vit_params and all(
      np.shape(vit_params["head"][k]) == template["head"][k].shape for k in template["head"]):
    out["head"] = copy("head", vit_params["head"], template["head"])
  return {"params": out} if wrapped else out

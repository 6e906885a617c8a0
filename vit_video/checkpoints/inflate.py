"""2D -> 3D: a video model's parameters from an image model's, as the papers initialise them; the shared helpers.

    params = video_swin_from_swin(swin_params, video_swin_template, window_size=(8, 7, 7))
    variables = i3d_from_resnet(resnet_variables, i3d_template, mode="average")

  ViViT        <- ViT     inflate_vit.vivit_from_vit        (Arnab et al. 2021, Sec. 3.4)
  TimeSformer  <- ViT     inflate_vit.timesformer_from_vit  (the official `load_pretrained`)
  VideoSwin    <- Swin    video_swin_from_swin              (Liu et al. 2022, Sec. 3.3)
  I3DResNet    <- ResNet  i3d_from_resnet                   (Carreira & Zisserman 2017's "bootstrapping")
  any of them             surgery.from_image_model          (the pair from the model's class)

The template (the video model's own parameters, e.g. from `init`) fixes every shape and provides what has no 2D
counterpart; a head of another size (or none) is left from it. Each function accepts its arguments wrapped as
`{"params": ...}` or not, and returns the template's wrapping. A 2D kernel [kh,kw,C,O] becomes a 3D one
[kt,kh,kw,C,O] by `inflate_kernel`'s modes: "central_frame" (the 2D kernel at kt // 2, zeros elsewhere: each output
sees its central frame; ViViT's best), "average" (repeated and divided by kt: a clip of identical frames gives the
2D response; I3D's and Video Swin's), "repeat" (repeated: kt times the response). Sizes that must agree (width,
depth, heads, MLP width, patch) raise ValueError naming the parameter and both shapes, as does a checkpoint of
another family.
"""
import functools
import logging
from collections.abc import Sequence
from typing import Literal, get_args

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from vit_video.layers import windows
from vit_video.models import i3d

_LOG = logging.getLogger(__name__)

Inflation = Literal["central_frame", "average", "repeat"]
INFLATIONS = get_args(Inflation)


def inflate_kernel(kernel_2d, shape_3d: Sequence[int], mode: Inflation) -> jax.Array:
  """A 2D kernel `[kh,kw,C,O]` as a 3D one `[kt,kh,kw,C,O]` (module docstring for the modes)."""
  kt = shape_3d[0]
  kernel_2d = jnp.asarray(kernel_2d)
  if mode == "central_frame":
    return jnp.zeros(shape_3d, kernel_2d.dtype).at[kt // 2].set(kernel_2d)
  if mode == "average":
    return jnp.broadcast_to(kernel_2d / kt, shape_3d)
  if mode == "repeat":
    return jnp.broadcast_to(kernel_2d, shape_3d)
  raise ValueError(f"inflation mode {mode!r} is not one of {list(INFLATIONS)}")


def unwrap(tree: dict) -> tuple[dict, bool]:
  """(the 'params' collection, whether `tree` was wrapped as {"params": ...})."""
  return (tree["params"], True) if set(tree) == {"params"} else (tree, False)


def copy_leaf(path: str, value, template, *, source: str, target: str, hint: str) -> jax.Array:
  """`value` cast to `template`'s dtype; ValueError naming `path` and both shapes when they differ."""
  if np.shape(value) != np.shape(template):
    raise ValueError(f"{source} parameter {path!r} has shape {np.shape(value)} but the {target}'s has shape "
                     f"{np.shape(template)} ({hint})")
  return jnp.asarray(value, dtype=template.dtype)


def copy_tree(path: str, tree, template, *, source: str, target: str, hint: str):
  """`template`'s structure filled from `tree` (the same names below `path`), shapes checked."""
  def leaf(keys, t):
    value = tree
    for k in keys:
      if not isinstance(value, dict) or k.key not in value:
        raise ValueError(f"{source} parameters have no {path}/{'/'.join(k.key for k in keys)}")
      value = value[k.key]
    return copy_leaf(f"{path}/{'/'.join(k.key for k in keys)}", value, t, source=source, target=target, hint=hint)
  return jax.tree_util.tree_map_with_path(leaf, template)


def zeros_like(tree):
  return jax.tree.map(jnp.zeros_like, tree)


# --- Video Swin from Swin ------------------------------------------------------------------------------------------


def _is_swin(params: dict) -> bool:
  keys = set(params)
  stages = {k for k in keys if k.startswith("stage_")}
  return {"embedding", "embedding_norm", "norm"} <= keys and bool(stages) and keys - stages <= {
      "embedding", "embedding_norm", "norm", "head"}


def video_swin_from_swin(swin_params: dict, template: dict, *, window_size: Sequence[int] | None = None,
                         mode: Inflation = "average") -> dict:
  """VideoSwin parameters initialised from a 2D Swin's (vit_video.models.swin), as the Video Swin paper does.

  Args:
    swin_params: a `swin.Swin`'s 'params' (e.g. from `import_timm`).
    template: the VideoSwin's 'params' (from `init` or random draws): it fixes every shape and provides what has no
      2D counterpart (a head of another K; from `jax.eval_shape`, that head stays a ShapeDtypeStruct).
    window_size: the VideoSwin's (Wt, Wh, Ww). None: the 2D tables' window in space, each 3D table having
      (2Wt-1) times the 2D table's rows.
    mode: the patch kernel `[p,p,C,D]` as `[p_t,p,p,C,D]` (`inflate_kernel`); the paper's "average" makes a
      tubelet of p_t identical frames embed as the frame's patch ("central_frame" does too).

  Copied: the inflated patch kernel; each relative-position table `[(2Mh-1)(2Mw-1),h]` bicubically resampled to
  (Wh, Ww) if its window differs (`windows.resize_relative_position_bias_table`) and repeated for each of the 2Wt-1
  temporal offsets (the bias ignores the temporal offset); every other parameter as it is. A head of another
  shape (or none) is left from the template (logged). On a clip of identical frames, with the same spatial window
  and no attended padding (window_padding="masked" on both models at any size; "torchvision" where nothing is
  padded), the VideoSwin then computes exactly the 2D Swin on the frame (tests/checkpoints/test_inflate.py).

  Raises:
    ValueError: for parameters that are not a 2D Swin's (another family, or a VideoSwin's), a template that is
      not a VideoSwin's, a missing or extra parameter (another depth), or a shape that differs.
  """
  src, _ = unwrap(swin_params)
  dst, wrapped = unwrap(template)
  if not _is_swin(src):
    raise ValueError(f"swin_params are not a vit_video Swin's parameters (expected 'embedding', "
                     f"'embedding_norm', 'stage_*', 'norm' and optionally 'head'); got {sorted(src)}")
  kernel_2d = src["embedding"].get("kernel")
  if np.ndim(kernel_2d) != 4:
    raise ValueError(f"a 2D Swin's patch kernel is [p,p,C,D]; got shape {np.shape(kernel_2d)} (a VideoSwin's?)")
  if not _is_swin(dst) or np.ndim(dst["embedding"].get("kernel")) != 5:
    raise ValueError(f"template is not a VideoSwin's parameters (patch kernel [p_t,p,p,C,D]); got {sorted(dst)}")
  flat_src, flat_dst = traverse_util.flatten_dict(src, sep="/"), traverse_util.flatten_dict(dst, sep="/")
  body = lambda flat: {k for k in flat if not k.startswith("head/")}  # noqa: E731
  missing, extra = sorted(body(flat_dst) - body(flat_src)), sorted(body(flat_src) - body(flat_dst))
  if missing or extra:
    raise ValueError(f"the 2D Swin and the VideoSwin differ in parameters (another depth?): missing from the "
                     f"2D Swin {missing[:5]}, not in the VideoSwin {extra[:5]}")
  copy = functools.partial(copy_leaf, source="2D Swin", target="VideoSwin", hint="another width, heads or mlp_ratio?")
  out = {}
  for path, want in flat_dst.items():
    if path.startswith("head/"):
      have = flat_src.get(path)
      if have is None or np.shape(have) != want.shape:
        _LOG.info("video_swin_from_swin: %s left from the template (2D Swin's: %s)", path,
                  None if have is None else np.shape(have))
        out[path] = want
      else:
        out[path] = copy(path, have, want)
    elif path == "embedding/kernel":
      if np.shape(kernel_2d) != want.shape[1:]:
        raise ValueError(f"the 2D Swin's patch kernel {np.shape(kernel_2d)} [p,p,C,D] does not match the "
                         f"VideoSwin's {want.shape} [p_t,p,p,C,D]")
      out[path] = inflate_kernel(kernel_2d, want.shape, mode).astype(want.dtype)
    elif path.endswith("relative_position_bias_table"):
      out[path] = jnp.asarray(_inflate_table(path, np.asarray(flat_src[path]), want.shape, window_size), want.dtype)
    else:
      out[path] = copy(path, flat_src[path], want)
  params = traverse_util.unflatten_dict(out, sep="/")
  return {"params": params} if wrapped else params


def _inflate_table(path: str, table: np.ndarray, want: tuple[int, ...], window_size: Sequence[int] | None):
  """A 2D table `[(2Mh-1)(2Mw-1),h]` as a 3D one `[(2Wt-1)(2Wh-1)(2Ww-1),h]`, resampled in space if needed."""
  if table.ndim != 2 or table.shape[1] != want[1]:
    raise ValueError(f"2D Swin table {path!r} has shape {table.shape} but the VideoSwin's is {want} "
                     f"(another head count?)")
  if window_size is None:
    if want[0] % table.shape[0] or (want[0] // table.shape[0]) % 2 == 0:
      raise ValueError(f"the VideoSwin's {path!r} ({want[0]} rows) is not 2Wt-1 copies of the 2D table "
                       f"({table.shape[0]} rows): the windows differ in space; pass window_size")
    return np.tile(table, (want[0] // table.shape[0], 1))
  wt, wh, ww = window_size
  if want[0] != (2 * wt - 1) * (2 * wh - 1) * (2 * ww - 1):
    raise ValueError(f"window_size {tuple(window_size)} does not give the VideoSwin's {path!r} of shape {want}")
  if table.shape[0] != (2 * wh - 1) * (2 * ww - 1):
    table = windows.resize_relative_position_bias_table(table, (wh, ww))  # [(2Wh-1)(2Ww-1),h]
  return np.tile(table, (2 * wt - 1, 1))  # rows t * (2Wh-1)(2Ww-1) + hw: the same for every temporal offset


# --- I3D from ResNet ------------------------------------------------------------------------------------------------


def i3d_from_resnet(resnet_variables: dict, template: dict, *, mode: Inflation = "average") -> dict:
  """Maps a 2D ResNet's variables (resnet.py layout) onto an I3DResNet's, key by key.

  Works on any matching trees: `{"params": ..., "batch_stats": ...}` (both collections) or one collection.
  For every leaf of `template`, at the same path in `resnet_variables`:
    - a 2D kernel [kh,kw,C,O] for a 3D one [kt,kh,kw,C,O] is inflated (`inflate_kernel`): "average" (I3D's), so a
      clip of identical frames gives the 2D response at every time whose temporal receptive field lies inside the
      clip (temporal zero padding changes the border); "central_frame", so every frame gives the 2D response of
      that frame alone (identical frames: the 2D logits exactly);
    - a leaf of the same shape (BatchNorm scale/bias/mean/var) is copied;
    - the classifier `fc` is copied, or left as in the template when the number of classes differs;
    - the non-local blocks, which have no 2D counterpart, and fc when the 2D model has none, are left as in the
      template.
  Raises ValueError naming the key on any other shape or missing key, or on an unknown mode.
  """
  if mode not in INFLATIONS:
    raise ValueError(f"inflation mode {mode!r} is not one of {list(INFLATIONS)}")
  head = i3d.I3DResNet.head
  flat_2d = traverse_util.flatten_dict(resnet_variables)
  out = {}
  for key, template_leaf in traverse_util.flatten_dict(template).items():
    name = "/".join(key)
    if key not in flat_2d:
      if head not in key and not any(part.startswith("nonlocal") for part in key):
        raise ValueError(f"cannot inflate {name}: the 2D variables have no {name} (a different block or depth?)")
      out[key] = template_leaf
      continue
    value = jnp.asarray(flat_2d[key])
    if value.shape == template_leaf.shape:
      out[key] = value.astype(template_leaf.dtype)
    elif head in key and value.shape[:-1] == template_leaf.shape[:-1]:
      out[key] = template_leaf  # A new classifier for a different number of classes.
    elif value.ndim == 4 and template_leaf.ndim == 5 and value.shape == template_leaf.shape[1:]:
      out[key] = inflate_kernel(value, template_leaf.shape, mode).astype(template_leaf.dtype)
    else:
      raise ValueError(f"cannot inflate {name}: 2D shape {tuple(value.shape)} does not map to 3D shape "
                       f"{tuple(np.shape(template_leaf))}")
  return traverse_util.unflatten_dict(out)

"""What the PyTorch importers (timm.py, timm_swin.py, torchvision.py) share: key rules, layouts, attention splits.

A family's importer is a list of `Rule`s (regex on the state-dict key -> our flat variable path, plus an array
transform) given to `import_state_dict` (the head's classes, the model, its expected variables, `convert_keys`, the
checks), whose `convert_keys` applies them and splits the fused attention projections that every transformer family
stores the same way (timm's and torchvision's `attn.qkv` [3hd,D] and `attn.proj` [D,hd]). Paths start with the
collection ("params/...", "batch_stats/..."); see `convert.assemble` for the checks.
"""
import functools
import re
from collections.abc import Callable, Sequence

import flax.linen as nn
import numpy as np

from vit_video import models
from vit_video.checkpoints import convert

Rule = tuple[str, Callable[[re.Match], str], Callable[[np.ndarray], np.ndarray]]


def same(a: np.ndarray) -> np.ndarray:
  return a


def conv_kernel(w: np.ndarray) -> np.ndarray:
  """torch conv weight OIHW -> flax HWIO; other ranks unchanged (the shape check reports them)."""
  return w.transpose(2, 3, 1, 0) if w.ndim == 4 else w


def conv3d_kernel(w: np.ndarray) -> np.ndarray:
  """torch Conv3d weight [O,C,t,h,w] -> flax [t,h,w,C,O]; other ranks unchanged (the shape check reports them)."""
  return w.transpose(2, 3, 4, 1, 0) if w.ndim == 5 else w


def dense_kernel(w: np.ndarray) -> np.ndarray:
  """torch Linear weight [out, in] -> flax Dense kernel [in, out]."""
  return w.T if w.ndim == 2 else w


def head_conv(a: np.ndarray) -> np.ndarray:
  """A 1x1 conv head [K,D,1,1] -> Dense kernel [D,K]."""
  return a[:, :, 0, 0].T if a.ndim == 4 and a.shape[2:] == (1, 1) else a


def norm(path: str, m: str) -> str:
  """A torch norm's `weight`/`bias` -> Flax `scale`/`bias` under `path`."""
  return f"params/{path}/{'scale' if m == 'weight' else 'bias'}"


def batch_norm(path: str, m: str) -> str:
  """A torch BatchNorm's weight, bias, running_mean, running_var -> params or batch_stats under `path`."""
  return {"weight": f"params/{path}/scale", "bias": f"params/{path}/bias",
          "running_mean": f"batch_stats/{path}/mean", "running_var": f"batch_stats/{path}/var"}[m]


def rename(key: str, rules: Sequence[Rule]) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
  """The first matching rule's (path, transform); an unknown key keeps its name (`convert.assemble` reports it)."""
  for pattern, target, transform in rules:
    if m := re.fullmatch(pattern, key):
      return target(m), transform
  return f"{convert.UNKNOWN}{key}", same


def proj_to_out(name: str, key: str, a: np.ndarray, want) -> np.ndarray:
  """The attention output projection weight [D, hd] -> our out kernel [h, d, D] (`want`: its expected shape)."""
  if want is None:
    return a  # Not a place in this model: `assemble` reports it.
  h, d, dim = want.shape
  if a.shape != (dim, h * d):
    raise ValueError(f"{name}: checkpoint array {key!r} has shape {a.shape} but the model expects {(dim, h * d)} "
                     f"(out kernel of shape {want.shape})")
  return a.T.reshape(h, d, dim)


def split_qkv(name: str, key: str, a: np.ndarray, path: str, expected: dict) -> dict[str, convert.Converted]:
  """A fused qkv, weight [3hd, D] or bias [3hd] -> query/key/value kernels [D,h,d] or biases [h,d] under `path`."""
  leaf = "kernel" if key.endswith("weight") else "bias"
  want = expected.get(f"{path}/query/{leaf}")
  if want is None:
    return {f"{convert.UNKNOWN}{key}": convert.Converted(key, a.shape, a)}
  hd = int(np.prod(want.shape[-2:]))
  expect = (3 * hd, want.shape[0]) if leaf == "kernel" else (3 * hd,)
  if a.shape != expect:
    raise ValueError(f"{name}: checkpoint array {key!r} has shape {a.shape} but the model expects {expect} "
                     f"(query/key/value {leaf}s of shape {want.shape})")
  out = {}
  for i, part in enumerate(("query", "key", "value")):
    chunk = a[i * hd:(i + 1) * hd]  # [hd, D] or [hd]
    value = chunk.T.reshape(want.shape) if leaf == "kernel" else chunk.reshape(want.shape)
    out[f"{path}/{part}/{leaf}"] = convert.Converted(f"{key}[{part}]", a.shape, value)
  return out


def convert_keys(name: str, state_dict: dict[str, np.ndarray], expected: dict, *, rules: Sequence[Rule],
                 attention: tuple[str, Callable[[re.Match], str]] | None = None, ignored: re.Pattern | None = None,
                 adapt: Callable[[str, str, np.ndarray], np.ndarray] | None = None) -> dict[str, convert.Converted]:
  """A torch state dict -> {our flat variable path: convert.Converted}.

  attention: (block regex, our attention path of its match), e.g. (r"blocks\\.(\\d+)\\.", lambda m: "params/.../attn"):
    in each block the fused `attn.qkv` is split into query/key/value and `attn.proj.weight` becomes `out/kernel`.
  ignored: keys to skip (buffers such as `relative_position_index`, `num_batches_tracked`).
  adapt: `(ours, key, value) -> value`, applied after a rule's transform (e.g. to resample a table).
  Every other key is renamed by the first matching rule; unknown keys are kept for `convert.assemble` to report.
  """
  converted = {}
  for key, value in state_dict.items():
    if ignored is not None and ignored.fullmatch(key):
      continue
    a = np.asarray(value)
    if attention and (m := re.fullmatch(attention[0] + r"attn\.qkv\.(weight|bias)", key)):
      converted.update(split_qkv(name, key, a, attention[1](m), expected))
    elif attention and (m := re.fullmatch(attention[0] + r"attn\.proj\.weight", key)):
      ours = f"{attention[1](m)}/out/kernel"
      converted[ours] = convert.Converted(key, a.shape, proj_to_out(name, key, a, expected.get(ours)))
    else:
      ours, transform = rename(key, rules)
      value = transform(a)
      converted[ours] = convert.Converted(key, a.shape, adapt(ours, key, value) if adapt else value)
  return converted


def import_state_dict(name: str, state_dict: dict[str, np.ndarray], *, num_classes: int | None, overrides: dict,
                      head_bias: str, input_size: Callable[[nn.Module], tuple[int, ...]], rules: Sequence[Rule],
                      attention: tuple[str, Callable[[re.Match], str]] | None = None,
                      ignored: re.Pattern | None = None,
                      adapt: Callable[[nn.Module, dict, str, str, np.ndarray], np.ndarray] | None = None) -> dict:
  """What every torch importer does, given its family's rules: variables for `create_model(name, num_classes=K,
  **overrides)` (which checks the name and the attributes).

  K is `num_classes`, or with None the checkpoint's (the length of `state_dict[head_bias]`, 0 without it); another K
  drops the checkpoint's head (logged), which the model then initialises afresh. `input_size(model)`: the (H, W) or
  (T, H, W) of an input at which the model has the checkpoint's parameter shapes. `rules`, `attention`, `ignored`:
  as in `convert_keys`; `adapt(model, expected, ours, key, value) -> value` its `adapt` with the model and its
  expected variables. The names and shapes are checked by `convert.assemble`.
  """
  bias = state_dict.get(head_bias)
  num_classes, replace_head = convert.head_classes(name, num_classes, bias.shape[-1] if bias is not None else 0)
  model = models.create_model(name, num_classes=num_classes, **overrides)
  expected = convert.expected_variables(model, input_size(model))
  converted = convert_keys(name, state_dict, expected, rules=rules, attention=attention, ignored=ignored,
                           adapt=None if adapt is None else functools.partial(adapt, model, expected))
  left_to_init = ()
  if replace_head:
    left_to_init = (f"params/{type(model).head}/",)
    convert.drop_head(name, converted, left_to_init, f"the model has {num_classes} classes")
  return convert.assemble(name, converted, expected, left_to_init=left_to_init)

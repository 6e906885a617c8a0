"""Reading a transformer's attention: per-head weights, rollout, and the ViT paper's Figure 7 quantities.

    weights = attention_weights(model, variables, images)        # {layer path: [B',h,Nq,Nk]} float32, in run order
    flow = rollout(list(weights.values()))                       # [B,N,N] (Abnar & Zuidema 2020)
    dist = mean_attention_distance(list(weights.values()), grid=(7, 7), pixels_per_token=4)  # [L,h] pixels
    sim = position_embedding_similarity(variables["params"])    # [gh,gw,gh,gw] cosine
    filters = embedding_filters(variables["params"], 28)         # [k,P,P,C] principal components

`attention_weights` clones the model with `sow_attention_weights=True` (every family with attention has the
attribute; the same parameters) and reads the 'intermediates' collection. A key is the attention module's path
("Transformer/encoderblock_0/MultiHeadDotProductAttention_1"), with "/spatial_attention_weights" or
"/temporal_attention_weights" appended for ViViT Model 4, whose one module sows both. What B' and N mean depends on
the family (the rows are queries, the columns keys, each row sums to one):
  ViT, ViViT Model 1 ("st"):  [B,h,c+N,c+N], c = 1 with a class token (first), N the patches (T' S for a clip,
                              T'-major).
  ViViT Model 2 ("fe"):       SpatialTransformer [B*T',h,1+S,1+S]; TemporalTransformer [B,h,1+T',1+T'].
  ViViT Models 3, 4:          spatial [B*T',h,S,S]; temporal [B*S,h,T',T'] (no class token; Model 4: h/2 heads
                              each, under .../spatial_attention_weights and .../temporal_attention_weights).
  TimeSformer:                "space" [B*T,h,1+S,1+S] (each frame its own class token); "joint" [B,h,1+T S,1+T S];
                              "divided" _time [B*S,h,T,T] then _1 [B*T,h,1+S,1+S] (a copy of the class token in
                              each frame's group); "axial" _time [B*S,h,T,T], _width [B*T*H',h,W',W'], _1
                              [B*T*W',h,1+H',1+H'] (grouping: timesformer._GROUPS).
  Swin, Video Swin:           [B*nW,h,M,M] per window, windows and their tokens in the block's shifted, padded
                              order; `window_weights_to_dense` puts them back on the token map, `[B,h,N,N]` with
                              N = prod(S) in the map's row-major order (zero outside each query's window).
  MViT:                       [B,h,1+Nq,1+Nk], queries on the block's output map, keys on its pooled key/value
                              map (coarser than the queries' in early blocks), class token first;
                              `mvit_key_maps` lays the class token's row out on each block's key map.
  VTN:                        block_{i}/attention [B,h,1+T,1+T] ([CLS] first, Longformer's window mask); a ViT or
                              Swin backbone's own weights under backbone/..., per frame (B' = B*T).
A scanned ViT (`scan=True`) sows one array stacked over its layers; it is split back into one entry per layer,
named as the unscanned model names its blocks (encoderblock_{i}). `swin_dense_weights` puts all of a Swin's blocks
on their maps. The dict is in run order; one that went through jax.jit or jax.eval_shape comes back with its keys
sorted as strings, which `in_layer_order` (and `rollout`, `mean_attention_distance` given a dict) undo for
numbered blocks.

`rollout` and `mean_attention_distance` need one token set through all the layers they are given (ViT, ViViT
Model 1, TimeSformer "joint", VTN, or one Swin stage made dense); a hierarchical model's (MViT, Swin across
stages) token counts change, and they raise.
"""
import dataclasses
import math
import re
from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from vit_video.layers import windows as windows_lib


def attention_weights(model: nn.Module, variables: Mapping, *inputs: jax.Array) -> dict[str, jax.Array]:
  """Every attention's weights in one eval forward pass: {layer path: float32 `[B',h,Nq,Nk]`}, in run order.

  The model is cloned with `sow_attention_weights=True` (and `remat=False` where it has the attribute: the same
  parameters); ValueError for a model without the attribute (CNNs have no attention to read).
  """
  fields = {f.name for f in dataclasses.fields(model)}
  if "sow_attention_weights" not in fields:
    raise ValueError(f"{type(model).__name__} has no attention weights to sow (no sow_attention_weights attribute)")
  overrides = {"sow_attention_weights": True} | ({"remat": False} if "remat" in fields else {})
  sowing = model.clone(**overrides)
  order: dict[str, int] = {}

  def interceptor(next_fun, args, kwargs, context):  # records where each module's call starts: the run order
    order.setdefault("/".join(context.module.path), len(order))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    _, state = sowing.apply(variables, *inputs, train=False, mutable=["intermediates"])
  flat = traverse_util.flatten_dict(nn.unbox(state.get("intermediates", {})))
  flat = dict(sorted(flat.items(), key=lambda kv: (order.get("/".join(kv[0][:-1]), len(order)), _natural(kv[0]))))
  if not flat:
    raise ValueError(f"{type(model).__name__} sowed no attention weights (no attention ran)")
  out: dict[str, jax.Array] = {}
  for key, values in flat.items():
    *path, name = key
    base = "/".join(path) if name == "attention_weights" else "/".join(key)
    for call, value in enumerate(values):
      label = base if len(values) == 1 else f"{base}#{call}"
      if value.ndim == 5 and "encoderblock" in path:
        # nn.scan stacks its layers' weights on a leading axis [L,B',h,Nq,Nk]: one entry per layer.
        for i in range(value.shape[0]):
          out[label.replace("encoderblock", f"encoderblock_{i}", 1)] = value[i].astype(jnp.float32)
      else:
        out[label] = value.astype(jnp.float32)
  return out


def _natural(key) -> list:
  """Sort key that puts encoderblock_2 before encoderblock_10."""
  text = "/".join(key) if isinstance(key, tuple) else key
  return [(int(part), "") if part.isdigit() else (-1, part) for part in re.split(r"(\d+)", text)]


def in_layer_order(weights: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
  """The dict with its keys in natural order (encoderblock_2 before encoderblock_10): the run order of a ViT's
  layers when the dict came back through jax.jit or jax.eval_shape, which sort keys as strings."""
  return {k: weights[k] for k in sorted(weights, key=_natural)}


def _stack(weights: Sequence[jax.Array] | Mapping[str, jax.Array], what: str) -> list[jax.Array]:
  # A dict that went through jax (jit, eval_shape) comes back with its keys sorted as strings: re-sort naturally.
  layers = list(in_layer_order(weights).values()) if isinstance(weights, Mapping) else list(weights)
  if not layers:
    raise ValueError(f"{what} needs at least one layer's weights")
  shapes = {tuple(w.shape) for w in layers}
  if len(shapes) != 1 or any(len(s) != 4 or s[-1] != s[-2] for s in shapes):
    raise ValueError(f"{what} needs every layer's weights as [B,h,N,N] with one N; got shapes {sorted(shapes)}")
  return layers


def rollout(weights: Sequence[jax.Array] | Mapping[str, jax.Array], residual: bool = True) -> jax.Array:
  """Attention rollout (Abnar & Zuidema 2020): how much each input token flows into each token of the last layer.

  weights: per layer, first to last, `[B,h,N,N]` (rows = queries). Each layer's heads are averaged; with
  `residual`, the identity is added and the rows renormalised (A = (W + I) / 2 when W's rows sum to one: the
  paper's account of the skip connection); the layers are multiplied, later on the left:
  R = A_L ... A_2 A_1. Returns float32 `[B,N,N]` whose rows sum to one: R[b, i, j] is how much of token i's final
  state comes from input token j (for a class-token model, R[:, 0, 1:] over the patches is the usual map).
  """
  result = None
  for w in _stack(weights, "rollout"):
    a = jnp.asarray(w, jnp.float32).mean(axis=1)  # [B,N,N]
    if residual:
      a = a + jnp.eye(a.shape[-1], dtype=a.dtype)
      a = a / a.sum(axis=-1, keepdims=True)
    result = a if result is None else jnp.einsum("bij,bjk->bik", a, result)  # [B,N,N]
  return result


def token_positions(grid: Sequence[int], pixels_per_token: float | Sequence[float]) -> np.ndarray:
  """Centres of a token grid's cells in pixels, `[prod(grid),len(grid)]`, row-major (the patch order)."""
  grid = tuple(int(g) for g in grid)
  scale = np.broadcast_to(np.asarray(pixels_per_token, np.float64), (len(grid),))
  coords = np.stack(np.meshgrid(*[np.arange(g) for g in grid], indexing="ij"), -1).reshape(-1, len(grid))
  return (coords + 0.5) * scale  # [N,k]


def mean_attention_distance(weights: Sequence[jax.Array] | Mapping[str, jax.Array], grid: Sequence[int],
                            pixels_per_token: float | Sequence[float]) -> np.ndarray:
  """The ViT paper's Figure 7 (right): per layer and head, the attention-weighted mean distance in pixels between
  a query patch and the key patches, averaged over the queries and the batch: `[L,h]`.

  weights: per layer `[B,h,N,N]`, N = prod(grid) patches in row-major order, optionally after one class token
  (N = 1 + prod(grid)). The class token has no position: its row is dropped, and so is its column, each patch
  query's weights being renormalised over the patches (so the distance is where a head looks among the patches;
  the share a head gives the class token is not counted as distance 0). grid: the patch grid (gh, gw) or any rank
  (T', H', W'); pixels_per_token: the patch size, one number or one per axis (distances are Euclidean in these
  units, so for a clip's time axis pass the frames per token and read the result as mixed units).
  """
  layers = _stack(weights, "mean_attention_distance")
  n = layers[0].shape[-1]
  m = math.prod(grid)
  if n not in (m, m + 1):
    raise ValueError(f"weights over {n} tokens do not fit the grid {tuple(grid)} ({m} patches, or {m + 1} with a "
                     f"class token)")
  pos = token_positions(grid, pixels_per_token)
  dist = np.sqrt(((pos[:, None] - pos[None]) ** 2).sum(-1))  # [M,M]
  out = []
  for w in layers:
    w = np.asarray(w, np.float64)[..., n - m:, n - m:]  # [B,h,M,M]
    total = w.sum(-1, keepdims=True)
    w = np.divide(w, total, out=np.zeros_like(w), where=total > 0)
    out.append((w * dist).sum(-1).mean(axis=(0, 2)))  # [h]
  return np.stack(out).astype(np.float32)  # [L,h]


def _params(params: Mapping) -> Mapping:
  return params["params"] if "params" in params else params


def position_embedding_similarity(params: Mapping, grid: Sequence[int] | None = None) -> np.ndarray:
  """The ViT paper's Figure 7 (centre): cosine similarity of each patch's position embedding to every other's,
  `[gh,gw,gh,gw]` float32 (entry [i,j,k,l]: patch (i,j) against patch (k,l); the diagonal is one).

  params: a ViT's (or any model with `Transformer/posembed_input/pos_embedding` `[1,c+N,D]`). The class token's
  row (present when the params hold `cls`) is excluded. grid: (gh, gw); None takes a square grid.
  """
  params = _params(params)
  try:
    table = np.asarray(params["Transformer"]["posembed_input"]["pos_embedding"], np.float64)[0]  # [c+N,D]
  except KeyError as error:
    raise ValueError(f"no position embedding at Transformer/posembed_input/pos_embedding (missing {error})") from None
  if "cls" in params:
    table = table[1:]  # [N,D]
  n = table.shape[0]
  if grid is None:
    side = math.isqrt(n)
    if side * side != n:
      raise ValueError(f"{n} position embeddings are not a square grid; pass grid=(gh, gw)")
    grid = (side, side)
  if len(grid) != 2 or math.prod(grid) != n:
    raise ValueError(f"grid {tuple(grid)} does not hold the {n} patch position embeddings")
  unit = table / np.maximum(np.linalg.norm(table, axis=-1, keepdims=True), 1e-12)
  return (unit @ unit.T).reshape(*grid, *grid).astype(np.float32)  # [gh,gw,gh,gw]


def embedding_filters(params: Mapping, components: int = 28, *, return_variance: bool = False):
  """The ViT paper's Figure 7 (left): the principal components of the patch-embedding filters, `[k,*kernel]`.

  The kernel `embedding/kernel` `[P,P,C,D]` (a tubelet's `[t,P,P,C,D]`) is D filters of P*P*C values: the matrix
  `[P*P*C,D]`, centred over the D filters (the mean filter subtracted: PCA's convention; the paper does not say),
  has left singular vectors that are the components, largest variance first, each of unit norm and reshaped to
  the kernel (sign: the largest entry positive). k = min(components, P*P*C, D). With `return_variance`, also the
  share of the filters' variance each component explains, `[k]`.
  """
  params = _params(params)
  if components < 1:
    raise ValueError(f"components must be >= 1; got {components}")
  try:
    kernel = np.asarray(params["embedding"]["kernel"], np.float64)
  except KeyError:
    raise ValueError("no patch embedding at embedding/kernel") from None
  *shape, d = kernel.shape
  matrix = kernel.reshape(-1, d)  # [P*P*C,D]: one filter per column
  matrix = matrix - matrix.mean(axis=1, keepdims=True)
  u, s, _ = np.linalg.svd(matrix, full_matrices=False)  # u [P*P*C,r]
  k = min(components, u.shape[1])
  u = u[:, :k] * np.sign(u[np.abs(u[:, :k]).argmax(0), range(k)])  # largest entry positive
  filters = u.T.reshape(k, *shape).astype(np.float32)  # [k,P,P,C]
  if return_variance:
    return filters, (s[:k] ** 2 / max((s ** 2).sum(), 1e-30)).astype(np.float32)
  return filters


def window_token_index(spatial: Sequence[int], window_size: Sequence[int], shifted: bool,
                       window_padding: str = "masked") -> np.ndarray:
  """Which token of the map each window slot holds in a Swin block: int `[nW,M]`, the row-major index into the
  map S, or -1 for padding. Follows swin.SwinBlock's data path: pad then cyclic shift ("masked", "torchvision"),
  or shift then pad ("timm"), then `windows.window_partition`."""
  spatial = tuple(spatial)
  window, shift = windows_lib.window_and_shift(spatial, tuple(window_size), shifted)
  padded = windows_lib.padded_size(spatial, window)
  index = np.arange(math.prod(spatial)).reshape(spatial)
  pad = [(0, p - s) for p, s in zip(padded, spatial)]
  roll = lambda a: np.roll(a, [-s for s in shift], axis=tuple(range(len(shift))))  # noqa: E731
  if window_padding == "timm":
    index = np.pad(roll(index), pad, constant_values=-1)
  elif window_padding in ("masked", "torchvision"):
    index = roll(np.pad(index, pad, constant_values=-1))
  else:
    raise ValueError(f"window_padding must be 'timm', 'torchvision' or 'masked'; got {window_padding!r}")
  return windows_lib.window_partition(index[None, ..., None], window)[..., 0]  # [nW,M]


def window_weights_to_dense(weights: jax.Array, spatial: Sequence[int], window_size: Sequence[int], shifted: bool,
                            window_padding: str = "masked") -> np.ndarray:
  """A Swin block's window weights `[B*nW,h,M,M]` on its token map: `[B,h,N,N]`, N = prod(S) row-major.

  Entry [b,h,i,j] is the weight of map token i on map token j (zero when j is outside i's window). Weights on
  padding are dropped: with "masked" (both families' default) real queries give padding none, so real rows sum to
  one; with "timm"/"torchvision" padding they may sum to less. spatial: the block's map (e.g. (H/4, W/4) in stage
  0, halved per stage); window_size, shifted (odd blocks), window_padding: the model's.
  """
  index = window_token_index(spatial, window_size, shifted, window_padding)  # [nW,M]
  nw, m = index.shape
  w = np.asarray(weights, np.float32)
  if w.ndim != 4 or w.shape[0] % nw or w.shape[2:] != (m, m):
    raise ValueError(f"weights {w.shape} are not [B*{nw},h,{m},{m}] for the map {tuple(spatial)} in windows "
                     f"{tuple(window_size)}")
  b, h, n = w.shape[0] // nw, w.shape[1], math.prod(spatial)
  w = w.reshape(b, nw, h, m, m).transpose(0, 2, 1, 3, 4)  # [B,h,nW,M,M]
  slot = np.where(index < 0, n, index)  # padding -> one extra row/column, cropped below
  dense = np.zeros((b, h, n + 1, n + 1), np.float32)
  dense[:, :, slot[:, :, None], slot[:, None, :]] = w  # each real token sits in exactly one window slot
  return dense[:, :, :n, :n]


def swin_dense_weights(model: nn.Module, weights: Mapping[str, jax.Array], input_shape: Sequence[int]
                       ) -> dict[str, tuple[np.ndarray, tuple[int, ...], tuple[int, ...]]]:
  """A Swin's or Video Swin's `attention_weights` on their token maps: {"stage_{i}/block_{j}/attn": (dense
  `[B,h,N,N]` (`window_weights_to_dense`), the block's map S, pixels per token per axis)}.

  input_shape: the model's input `[B,H,W,C]` or `[B,T,H,W,C]`. Stage 0's map is the input over the patch; each
  later stage halves H and W (rounding up); odd blocks are shifted. A Video Swin's time axis is in frames.
  """
  patch = tuple(model.patch_size) if isinstance(model.patch_size, (tuple, list)) else (model.patch_size,) * 2
  window = (model.window_size,) * 2 if isinstance(model.window_size, int) else tuple(model.window_size)
  sizes = tuple(input_shape[1:1 + len(patch)])
  if len(input_shape) != len(patch) + 2 or any(s % p for s, p in zip(sizes, patch)):
    raise ValueError(f"input shape {tuple(input_shape)} does not fit {type(model).__name__}'s patch {patch}")
  out = {}
  for path, w in in_layer_order(weights).items():
    match = re.fullmatch(r"stage_(\d+)/block_(\d+)/attn", path)
    if match is None:
      raise ValueError(f"{path!r} is not a Swin block's attention (stage_i/block_j/attn)")
    stage, block = int(match[1]), int(match[2])
    spatial, pixels = [s // p for s, p in zip(sizes, patch)], list(patch)
    for _ in range(stage):  # 2x2 merging of the last two axes, odd sides padded
      spatial[-2:] = [-(-s // 2) for s in spatial[-2:]]
      pixels[-2:] = [2 * p for p in pixels[-2:]]
    dense = window_weights_to_dense(w, spatial, window, block % 2 == 1, model.window_padding)
    out[path] = (dense, tuple(spatial), tuple(pixels))
  return out


def mvit_key_maps(model: nn.Module, weights: Mapping[str, jax.Array], input_shape: Sequence[int]
                  ) -> dict[str, np.ndarray]:
  """An MViT's class-token attention on each block's key map: {"block_{i}/attn": `[B,h,T_k,H_k,W_k]`}.

  The class token's row of `[B,h,1+Nq,1+Nk]` over the keys (its own key dropped), laid out on the block's pooled
  key/value map, which the model's attributes fix: the patch embedding's map of `input_shape` (`[B,T,H,W,C]`, or
  `[B,H,W,C]` for MViTImage), pooled per block by `pooling_attention.pooled_size`. Time is the first map axis:
  where the class token looks in space and in time, per head.
  """
  from vit_video.layers import pooling_attention as pa  # noqa: PLC0415
  shape = tuple(input_shape)
  sizes = shape[1:4] if len(shape) == 5 else (1, *shape[1:3])
  thw = tuple((s + 2 * p - k) // st + 1 for s, k, st, p in zip(sizes, model.patch_kernel, model.patch_stride,
                                                                model.patch_padding))
  out = {}
  for i in range(len(model.num_heads)):
    k_thw = (pa.pooled_size(thw, model.kernel_kv[i], model.stride_kv[i])
             if pa.pools(model.kernel_kv[i], model.stride_kv[i]) else thw)
    if pa.pools(model.kernel_q[i], model.stride_q[i]):
      thw = pa.pooled_size(thw, model.kernel_q[i], model.stride_q[i])
    w = np.asarray(weights[f"block_{i}/attn"], np.float32)  # [B,h,1+Nq,1+Nk]
    if w.shape[-1] != 1 + math.prod(k_thw) or w.shape[-2] != 1 + math.prod(thw):
      raise ValueError(f"block_{i}'s weights {w.shape} do not fit its query map {thw} and key map {k_thw}")
    out[f"block_{i}/attn"] = w[:, :, 0, 1:].reshape(*w.shape[:2], *k_thw)
  return out


def query_map(weights: jax.Array, grid: Sequence[int]) -> np.ndarray:
  """What the model reads per head: `[B,h,N,N]` -> `[B,h,*grid]`. With a class token (N = 1 + prod(grid)) its row
  over the patches; without one, the attention each patch receives, averaged over the queries."""
  w = np.asarray(weights, np.float32)
  m = math.prod(grid)
  if w.ndim != 4 or w.shape[-1] not in (m, m + 1):
    raise ValueError(f"weights {w.shape} are not [B,h,N,N] over the grid {tuple(grid)} (N = {m} or {m + 1})")
  row = w[:, :, 0, 1:] if w.shape[-1] == m + 1 else w.mean(axis=2)  # [B,h,M]
  return row.reshape(*w.shape[:2], *grid)

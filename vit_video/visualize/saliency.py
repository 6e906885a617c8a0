"""Saliency: which pixels, frames and flow fields a model's score depends on, for every model of the package.

    score = hooks.objective(model, variables, index=k)               # f(*inputs) -> [B], e.g. class k's logit
    (g,) = vanilla_gradient(score, clip)                             # d score / d clip, [B,T,H,W,C]
    (s,) = smoothgrad(score, clip, rng=key)                          # mean gradient over 25 noisy copies
    (a,) = integrated_gradients(score, clip)                         # sums to score(clip) - score(0) per example
    cam = grad_cam(model, variables, clip, index=k)                  # [B,t,h,w] >= 0 at the layer's grid
    heat = to_map(a, "video")                                        # [B,T,H,W]: |a| summed over channels
    share = share_on(heat, moving_item_mask)                         # [B]: the map's mass on the mask

The gradient methods take any number of positional inputs (image; video; video and flow for two_stream) and give
one attribution per input, each the input's shape. They treat the batch as independent examples (the eval model:
BatchNorm on its running statistics), so one gradient of the batch's summed score gives every example's gradient.
Each is plain JAX (scan over noise samples and path steps, batch kept): jit it with the score closed over and
`samples`/`steps` static.
  - Vanilla gradient (Simonyan et al. 2014): d score / d input.
  - SmoothGrad (Smilkov et al. 2017): the mean gradient over `samples` copies of the input with Gaussian noise of
    standard deviation `noise` times each example's own max - min range (their 10-20% is where maps look
    sharpest; 15% is PAIR's default); `squared` averages squared gradients (their SmoothGrad-Squared).
  - Integrated gradients (Sundararajan et al. 2017): (x - x') times the gradient's mean along the straight path
    from the baseline x' (zeros by default: mid-grey for pixels in [-1, 1], zero flow) to x, by the midpoint rule
    over `steps` intervals. Completeness: the attributions of all inputs sum to score(x) - score(x') up to the
    quadrature error (tests/visualize/test_saliency.py states it). The midpoint rule (the paper's is the right
    Riemann sum; PAIR's averages linspace(0, 1, steps), both ends included) never evaluates the gradient at the
    baseline, where a ReLU net sits on its kinks and a normalised one divides by sqrt(eps): the trained BiT-R8x1's
    mean |gradient| at the zero image is 1e6 times that at test images. Such a model (GroupNorm on its first map)
    barely depends on the input's contrast, so its score jumps at alpha ~ 0 and IG from a constant image explains
    none of score(x) - score(x'); give it a baseline whose first map is not constant (the black image -1, which
    the convs' zero padding makes non-constant at the borders: complete within 2% at 32 steps).
  - Grad-CAM (Selvaraju et al. 2017): at a convolutional layer's map A [B,(t,)h,w,C], channel weights
    w_c = mean over (t,)h,w of d logit_k / d A_c, and the map ReLU(sum_c w_c A_c). `cam_layer` picks the layer.

Why not PAIR's `saliency` package (the framework-agnostic one, 0.2.1): it is numpy and per example, calling back
into the model once per batch of path points or noise samples from a Python loop, so in JAX it would leave jit
and the batch; the methods themselves are a few lines each here. The tests check integrated gradients against it.
"""
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_video.visualize import hooks

Score = Callable[..., jax.Array]
KINDS = ("image", "video", "flow")


def _check_inputs(inputs: Sequence[jax.Array]) -> int:
  """The batch size B shared by all inputs; ValueError naming the first bad input."""
  if not inputs:
    raise ValueError("no inputs given: pass the model's positional inputs (image; video; video and flow)")
  batch = None
  for i, x in enumerate(inputs):
    if not hasattr(x, "shape") or len(x.shape) < 2:
      raise ValueError(f"input {i} has shape {getattr(x, 'shape', None)}, not a batch [B,...]")
    if not jnp.issubdtype(x.dtype, jnp.floating):
      raise ValueError(f"input {i} has dtype {x.dtype}; gradients need float pixels (cast it first)")
    if batch is None:
      batch = x.shape[0]
    elif x.shape[0] != batch:
      raise ValueError(f"input {i} has batch {x.shape[0]}, input 0 has {batch}")
  return batch


def _count(value, name: str, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
  return value


def _gradients(score: Score, inputs: Sequence[jax.Array], batch: int) -> tuple[jax.Array, ...]:
  """d score_b / d input_b for every example b and input: the gradient of the batch's summed score."""
  def total(*x):
    s = score(*x)
    if s.shape != (batch,):
      raise ValueError(f"score returns shape {s.shape}, not one value per example [B] = ({batch},)")
    return s.astype(jnp.float32).sum()
  return jax.grad(total, argnums=tuple(range(len(inputs))))(*inputs)


def vanilla_gradient(score: Score, *inputs: jax.Array) -> tuple[jax.Array, ...]:
  """d score / d input for each input: one array per input, its shape and dtype."""
  return _gradients(score, inputs, _check_inputs(inputs))


def smoothgrad(score: Score, *inputs: jax.Array, rng: jax.Array, samples: int = 25, noise: float = 0.15,
               squared: bool = False) -> tuple[jax.Array, ...]:
  """Mean gradient (or squared gradient) over `samples` noisy copies: one array per input, its shape.

  The noise of input i for example b is Gaussian with standard deviation noise * (max - min of x_i[b]), each
  input's own range (a clip's pixels and its flow fields differ in scale); samples = 1 and noise = 0 give the
  vanilla gradient.
  """
  batch = _check_inputs(inputs)
  _count(samples, "samples", 1)
  if not isinstance(noise, (int, float)) or noise < 0:
    raise ValueError(f"noise must be a fraction >= 0 of each input's range, got {noise!r}")
  if rng is None:
    raise ValueError("rng is None: pass a jax.random.key for the noise")
  sigmas = []
  for x in inputs:
    axes = tuple(range(1, x.ndim))
    spread = x.max(axis=axes, keepdims=True) - x.min(axis=axes, keepdims=True)  # [B,1,...]
    sigmas.append(noise * spread)

  def step(totals, key):
    keys = jax.random.split(key, len(inputs))
    noisy = [x + s * jax.random.normal(k, x.shape, x.dtype) for x, s, k in zip(inputs, sigmas, keys)]
    grads = _gradients(score, noisy, batch)
    return tuple(t + (g * g if squared else g).astype(jnp.float32) for t, g in zip(totals, grads)), None

  zeros = tuple(jnp.zeros(x.shape, jnp.float32) for x in inputs)
  totals, _ = jax.lax.scan(step, zeros, jax.random.split(rng, samples))
  return tuple((t / samples).astype(x.dtype) for t, x in zip(totals, inputs))


def integrated_gradients(score: Score, *inputs: jax.Array, baselines: Sequence[jax.Array] | None = None,
                         steps: int = 32) -> tuple[jax.Array, ...]:
  """(x - x') * mean gradient on the path x' + alpha (x - x'), alpha in [0, 1]: one array per input, its shape.

  `baselines`: one per input, broadcastable to it (None: zeros). The mean is the midpoint rule over `steps` equal
  intervals (alpha = (k + 1/2) / steps), the gradients scanned one at a time, so memory stays one backward pass.
  """
  batch = _check_inputs(inputs)
  _count(steps, "steps", 1)
  if baselines is None:
    baselines = [jnp.zeros_like(x) for x in inputs]
  if len(baselines) != len(inputs):
    raise ValueError(f"{len(baselines)} baselines for {len(inputs)} inputs: give one per input")
  starts = []
  for i, (x, x0) in enumerate(zip(inputs, baselines)):
    try:
      starts.append(jnp.broadcast_to(jnp.asarray(x0, x.dtype), x.shape))
    except ValueError:
      raise ValueError(f"baseline {i} has shape {jnp.shape(x0)}, which does not broadcast to input {i}'s "
                       f"{x.shape}") from None
  diffs = [x - x0 for x, x0 in zip(inputs, starts)]
  alphas = (jnp.arange(steps, dtype=jnp.float32) + 0.5) / steps  # interval midpoints

  def step(totals, alpha):
    grads = _gradients(score, [x0 + alpha.astype(x0.dtype) * d for x0, d in zip(starts, diffs)], batch)
    return tuple(t + g.astype(jnp.float32) for t, g in zip(totals, grads)), None

  zeros = tuple(jnp.zeros(x.shape, jnp.float32) for x in inputs)
  totals, _ = jax.lax.scan(step, zeros, alphas)
  return tuple((d.astype(jnp.float32) * t / steps).astype(x.dtype) for d, t, x in zip(diffs, totals, inputs))


# ---------------------------------------------------------------------------------------------------- Grad-CAM


def _frames(inputs: Sequence[jax.Array]) -> int | None:
  """T of the first clip input [B,T,H,W,C], the frames a per-frame tower folds into its batch; None without one."""
  return next((x.shape[1] for x in inputs if len(x.shape) == 5), None)


def _grid(shape: tuple[int, ...], batch: int, frames: int | None) -> tuple[int, ...] | None:
  """The map's shape as [B,h,w,C] or [B,t,h,w,C] (a per-frame tower's [B*T,h,w,C] unfolded), or None."""
  if len(shape) == 5 and shape[0] == batch:
    return tuple(shape)
  if len(shape) == 4 and shape[0] == batch:
    return tuple(shape)
  if len(shape) == 4 and frames and shape[0] == batch * frames:
    return (batch, frames, *shape[1:])  # [(B T),h,w,C] -> [B,T,h,w,C], b major as every tower folds it
  return None


def _holds_conv(params, path: str) -> bool:
  """Whether the parameters under `path` hold a 2D or 3D convolution kernel ([kh,kw,Cin,Cout] or 5 dims)."""
  node = params
  for name in path.split("/"):
    if not hasattr(node, "get") or name not in node:
      return False
    node = node[name]
  leaves = jax.tree_util.tree_flatten_with_path(node)[0]
  return any(getattr(p[-1], "key", None) == "kernel" and len(leaf.shape) >= 4 for p, leaf in leaves)


def cam_layer(model: nn.Module, variables: dict, *inputs: jax.Array) -> str:
  """The default Grad-CAM layer: the last convolutional map in run order. A layer is one when it
  (1) returns [B,h,w,C], [B,t,h,w,C] or a per-frame tower's [B*T,h,w,C] with h, w > 1;
  (2) holds a 2D or 3D convolution kernel (a conv, or a block, stage or tower of them: not a normalisation, a
      position embedding, or a transformer's attention or MLP);
  (3) is not the first layer to run (a transformer's patch embedding is one linear map of the pixels, where
      Grad-CAM is only gradient x input pooled over patches), runs once, and does not sit inside a layer whose
      map is 1 wide or high (the first convs of a stage that ends 1x1 see a grid the head never reads).
  A model whose first token sequence [B',N,D] runs before any such layer is a transformer on patches and has none.

  What it gives: ResNet, BiT, I3D (non-local too), ConvNeXt: the last stage whose map is larger than 1x1 (BiT's
  before its final norm); single-frame, late, early and slow fusion: the conv tower ([B,t,h,w,C] after its last
  pooling); C3D: conv5b; LRCN and VTN with a ResNet: the per-frame backbone's last stage, unfolded to
  [B,T,h,w,C]; two_stream: the flow stream's tower (layer="rgb_stream/tower" for the appearance stream); hybrid
  ViTs: the patch embedding of the ResNet stem's map. ViT, ViViT, TimeSformer, Swin, Video Swin, MViT (and VTN on
  a ViT) have none: ValueError.
  """
  batch = _check_inputs(inputs)
  frames = _frames(inputs)
  runs = hooks.layer_shapes(model, variables, *inputs)
  params = variables.get("params", {}) if hasattr(variables, "get") else {}
  flat = [path for path, (shape, _) in runs.items()  # layers whose map is 1 wide or high
          if (g := _grid(shape, batch, frames)) is not None and min(g[-3:-1]) < 2]
  found, tokens = None, None
  for i, (path, (shape, calls)) in enumerate(runs.items()):
    if len(shape) == 3 and shape[0] % batch == 0 and tokens is None:
      tokens = path
    grid = _grid(shape, batch, frames)
    if (i == 0 or calls != 1 or grid is None or min(grid[-3:-1]) < 2 or not _holds_conv(params, path)
        or any(path.startswith(f + "/") for f in flat)):
      continue
    if found is None and tokens is not None:
      break  # tokens before any convolutional map: a transformer on patches
    found = path
  if found is None:
    why = (f"its first token sequence ({tokens!r}) runs before any convolutional map: a transformer on patches"
           if tokens is not None else "no layer after the first holds a 2D/3D convolution and returns a map "
           "[B,h,w,C] or [B,t,h,w,C] with h, w > 1")
    raise ValueError(f"{type(model).__name__} has no convolutional map for Grad-CAM: {why}; use the gradient "
                     f"methods or attention maps, or name a layer")
  return found


def grad_cam(model: nn.Module, variables: dict, *inputs: jax.Array, index: int, layer: str | None = None
             ) -> jax.Array:
  """Grad-CAM of class `index` at `layer` (default: `cam_layer`): [B,h,w] for a 2D map, [B,t,h,w] for a 3D map
  or a per-frame tower's, float32 >= 0, at the layer's grid (upsample it to the input to overlay).

  Weights are the logit's gradient averaged over the map's space (and time): one weight per channel per example.
  """
  batch = _check_inputs(inputs)
  if layer is None:
    layer = cam_layer(model, variables, *inputs)
  shape = jax.eval_shape(lambda *x: hooks.apply_with_layer(model, variables, *x, layer=layer), *inputs)
  logits, act = shape
  if len(logits.shape) != 2 or not 0 <= index < logits.shape[-1]:
    raise ValueError(f"class index {index} out of range for logits of shape {logits.shape}")
  grid = _grid(act.shape, batch, _frames(inputs))
  if grid is None:
    raise ValueError(f"layer {layer!r} returns shape {act.shape}, not a map [B,h,w,C], [B,t,h,w,C] or a "
                     f"per-frame [B*T,h,w,C] (B = {batch})")

  def logit(delta):
    out, a = hooks.apply_with_layer(model, variables, *inputs, layer=layer, delta=delta)
    return out[:, index].astype(jnp.float32).sum(), a

  grads, act = jax.grad(logit, has_aux=True)(jnp.zeros(act.shape, act.dtype))
  act = act.astype(jnp.float32).reshape(grid)  # [B,(t,)h,w,C]
  grads = grads.astype(jnp.float32).reshape(grid)
  weights = grads.mean(axis=tuple(range(1, len(grid) - 1)), keepdims=True)  # [B,1,(1,)1,C]
  return jax.nn.relu((weights * act).sum(axis=-1))  # [B,(t,)h,w]


# ---------------------------------------------------------------------------------------------------- maps


def to_map(attribution: jax.Array, kind: str) -> jax.Array:
  """|attribution| summed over channels, per pixel: "image" [B,H,W,C] -> [B,H,W]; "video" [B,T,H,W,C] ->
  [B,T,H,W]; "flow" [B,H,W,2(T-1)] (x, y interleaved) -> [B,T-1,H,W], one map per flow field."""
  if kind not in KINDS:
    raise ValueError(f"kind {kind!r} is not one of {KINDS}")
  a = jnp.abs(jnp.asarray(attribution)).astype(jnp.float32)
  want = {"image": 4, "video": 5, "flow": 4}[kind]
  if a.ndim != want:
    raise ValueError(f"{kind} attribution has shape {a.shape}, not {want} dims "
                     f"{dict(image='[B,H,W,C]', video='[B,T,H,W,C]', flow='[B,H,W,2(T-1)]')[kind]}")
  if kind != "flow":
    return a.sum(axis=-1)
  if a.shape[-1] % 2:
    raise ValueError(f"flow attribution has {a.shape[-1]} channels, not 2(T-1) (x and y per field)")
  b, h, w, c = a.shape
  fields = a.reshape(b, h, w, c // 2, 2).sum(axis=-1)  # [B,H,W,T-1,2] -> [B,H,W,T-1]
  return fields.transpose(0, 3, 1, 2)  # [B,T-1,H,W]


def share_on(saliency_map: jax.Array, mask: jax.Array) -> jax.Array:
  """[B]: the fraction of each example's map mass (map >= 0, e.g. to_map's or grad_cam's) that falls on `mask`.

  `mask`: bool or weights in [0, 1], the map's shape or broadcastable to it (e.g. [B,H,W] for every frame); a mask
  of the same rank at another grid (an input-sized mask for a Grad-CAM map) is resized to the map's with
  jax.image.resize (linear, antialiased), giving the mask's fraction of each cell. NaN where a map is all zero.
  """
  m = jnp.asarray(saliency_map, jnp.float32)
  mask = jnp.asarray(mask, jnp.float32)
  if m.ndim < 2:
    raise ValueError(f"saliency map has shape {m.shape}, not [B,...]")
  if not _broadcasts(mask.shape, m.shape):
    if mask.ndim != m.ndim or mask.shape[0] != m.shape[0]:
      raise ValueError(f"mask of shape {mask.shape} does not fit the map's {m.shape}: give the map's shape, one "
                       f"that broadcasts to it, or the same rank and batch at another grid")
    mask = jax.image.resize(mask, m.shape, "linear")  # the mask's fraction of each cell of the map's grid
  mask = jnp.broadcast_to(mask, m.shape)
  axes = tuple(range(1, m.ndim))
  total = m.sum(axis=axes)
  return jnp.where(total > 0, (m * mask).sum(axis=axes) / jnp.where(total > 0, total, 1.0), jnp.nan)


def _broadcasts(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
  try:
    return jnp.broadcast_shapes(shape, target) == tuple(target)
  except ValueError:
    return False


def black_baselines(names: Sequence[str], inputs: Sequence[jax.Array]) -> tuple[jax.Array, ...]:
  """Integrated gradients' starting points for inputs named as in the model contract: the black image or clip (-1,
  the bottom of the data pipelines' [-1, 1] range) and zero flow (no motion)."""
  return tuple(jnp.full_like(x, -1.0) if name == "video" else jnp.zeros_like(x) for name, x in zip(names, inputs))

"""Activation maximisation: the clip (and flow) a class or a unit likes best, as appearance, slow or fast motion.

    score = hooks.objective(model, variables, index=3)                 # or layer="tower/conv1", index=channel
    result = maximise(score, [(2, 8, 32, 32, 1)], rng=jax.random.key(0), regulariser="slow")
    result.inputs[0]                                                   # [B,T,H,W,C], in the data's range
    temporal_change(result.inputs[0])                                  # [B]: mean |x_{t+1} - x_t|

Following Feichtenhofer, Pinz, Wildes and Zisserman ("What have we learned from deep representations for action
recognition?", CVPR 2018; "Deep insights into convolutional networks for video recognition", IJCV 2020), each input
x is found by gradient ascent on

    score(x) - lambda_norm R_alpha(x) - lambda_tv R_TV(x) - lambda_t R_T(x)

with R_alpha = sum |x|^alpha (alpha = 6; keeps pixels from running to the range's ends), R_TV = sum over space of
the squared differences of horizontal and vertical neighbours (beta = 2 total variation: smooth frames), and R_T =
sum over time of the squared differences of consecutive frames (the paper's temporal term: a penalty on the input's
change over time). x is measured relative to the data's range (centre 0, half-range 1), and the score is divided by
the mean absolute value of its gradient with respect to the whole input at the start, per example (the same for every
regulariser), so that one table of weights means the same for every model, layer and input size (our choice: the
paper tunes its weights per network). The paper shows appearance, slow and fast motion by changing the temporal
term; the issue that asked for this module speaks of its sign and weight, and the paper's equations were not at
hand to check which it uses for fast motion. The defaults here are penalties only, chosen by weight
(TEMPORAL_WEIGHTS):

  appearance  no motion at all: the frames are tied, one frame repeated T times is optimised (the limit of an
              infinite temporal weight), so the result's temporal change is exactly zero
  slow        a strong penalty on frame-to-frame change: only the motion that pays for itself survives
  fast        a weak penalty: the motion the unit prefers, up to fast changes
  none        no temporal term (the spatial regularisers only)

A negative `temporal_weight` rewards change instead: fast motion chosen by the term's sign (projected onto the
range, such an optimum can flicker between the range's ends).

Starting point: one random frame (small noise around the range's centre) repeated T times, so that every
frame-to-frame change in the result was put there by the score's gradient, not left over from the start; a model
that sees each frame alone (single_frame, late fusion by pooling, a two-stream rgb stream) gets the same gradient
for every frame and never moves off a static clip. Each step shifts all inputs by one random spatial offset (jitter,
up to `jitter` pixels, wrapping around) before scoring, optionally blurs every input spatially (a Gaussian of
`blur_sigma` pixels every `blur_every` steps), and after the optax update clips every input to its range
(projected gradient ascent). The whole optimisation is one jit-compiled `lax.scan` over the steps.

Inputs (the model contract's positional inputs, `kinds` say which):
  "video" [B,T,H,W,C]: time is axis 1.
  "flow" [B,H,W,2(T-1)] (x and y interleaved): time is the T-1 fields; the temporal terms act on the change of
     the flow from one field to the next. So for a flow stream, "appearance" is one flow field repeated (a
     constant motion), "slow" flow that changes little over time (steady motion, like a constant velocity) and
     "fast" flow free to change from field to field (accelerating, reversing or flickering motion); the speed
     itself is the flow's magnitude, which only the norm term and the range bound.
  "image" [B,H,W,C]: no time; every regulariser gives the same optimisation (appearance only).
The data's range is [-1, 1] for every input by default: the video pipeline's frames (x / 127.5 - 1) and its flow
(pixels divided by the quantisation bound, mostly in [-1, 1]).
"""
import dataclasses
import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

REGULARISERS = ("appearance", "slow", "fast", "none")
# Weight lambda_t of R_T per regulariser (None: frames tied). In units where the score's gradient has mean absolute
# value 1 per input element at the start and x has half-range 1: a frame difference d costs 4 lambda_t d of
# gradient per element, so "slow" keeps changes under about 1 / (4 * 10) of the half-range where the score's pull is
# average, and "fast" lets them grow to the whole range.
TEMPORAL_WEIGHTS = {"appearance": None, "slow": 10.0, "fast": 0.05, "none": 0.0}
KINDS = ("video", "flow", "image")
_RANKS = {"video": 5, "flow": 4, "image": 4}


@dataclasses.dataclass(frozen=True)
class Result:
  """The optimised inputs (one array per positional input, the shapes asked for, in range) and the score per step.

  scores: [steps, B] float32, the score of the (jittered) inputs at each step before its update.
  """
  inputs: tuple[jax.Array, ...]
  scores: np.ndarray


def temporal_change(clip: jax.Array, kind: str = "video") -> jax.Array:
  """Mean absolute change between consecutive frames, [B]: mean |x_{t+1} - x_t| over time, space and channels.

  kind "video": clip [B,T,H,W,C]; "flow": [B,H,W,2(T-1)], the change between consecutive flow fields.
  """
  if kind not in ("video", "flow"):
    raise ValueError(f"temporal_change kind {kind!r}: not 'video' or 'flow' (an image has no time)")
  if clip.ndim != _RANKS[kind]:
    raise ValueError(f"temporal_change of a {kind} needs rank {_RANKS[kind]}, got shape {clip.shape}")
  frames = _frames(clip, kind)  # [B,T',...] time on axis 1
  if frames.shape[1] < 2:
    raise ValueError(f"temporal_change needs at least 2 frames, got shape {clip.shape} ({kind})")
  return jnp.abs(jnp.diff(frames, axis=1)).reshape(clip.shape[0], -1).mean(axis=1)


def _frames(x: jax.Array, kind: str) -> jax.Array:
  """Time on axis 1: video as is; flow [B,H,W,2(T-1)] -> [B,T-1,H,W,2]."""
  if kind == "video":
    return x
  b, h, w, c = x.shape
  return x.reshape(b, h, w, c // 2, 2).transpose(0, 3, 1, 2, 4)  # [B,H,W,T-1,2] -> [B,T-1,H,W,2]


def _spatial_axes(kind: str) -> tuple[int, int]:
  return (2, 3) if kind == "video" else (1, 2)


def _infer_kinds(shapes: Sequence[tuple[int, ...]]) -> tuple[str, ...]:
  """Rank 5 -> "video"; rank 4 -> "flow" after a video, else "image" (the contract's three input tuples)."""
  kinds = []
  for shape in shapes:
    if len(shape) == 5:
      kinds.append("video")
    elif len(shape) == 4:
      kinds.append("flow" if "video" in kinds else "image")
    else:
      raise ValueError(f"input shape {tuple(shape)} has rank {len(shape)}: not a video [B,T,H,W,C] (rank 5) or an "
                       f"image or flow (rank 4)")
  return tuple(kinds)


def _tie(kind: str, shape: tuple[int, ...]) -> tuple[tuple[int, ...], Callable[[jax.Array], jax.Array]]:
  """Appearance: the free variable's shape and its expansion to the input (one frame or flow field repeated)."""
  if kind == "video":
    b, t, h, w, c = shape
    return (b, 1, h, w, c), lambda p: jnp.broadcast_to(p, shape)
  if kind == "flow":
    b, h, w, c = shape
    return (b, h, w, 2), lambda p: jnp.tile(p, (1, 1, 1, c // 2))  # x0 y0 x1 y1 ...: the same field T-1 times
  return shape, lambda p: p


def _gaussian_blur(x: jax.Array, sigma: float, axes: tuple[int, int]) -> jax.Array:
  """Separable Gaussian of `sigma` pixels over two axes, edges padded by repetition."""
  radius = max(1, math.ceil(2 * sigma))
  weights = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
  weights = weights / weights.sum()
  for axis in axes:
    pad = [(0, 0)] * x.ndim
    pad[axis] = (radius, radius)
    padded = jnp.pad(x, pad, mode="edge")
    n = x.shape[axis]
    x = sum(float(w) * jax.lax.slice_in_dim(padded, k, k + n, axis=axis) for k, w in enumerate(weights))
  return x


def _check(score, shapes, kinds, regulariser, steps, learning_rate, value_range, jitter, blur_every, blur_sigma,
           alpha, temporal_weight):
  if regulariser not in REGULARISERS:
    raise ValueError(f"unknown regulariser {regulariser!r}; valid: {', '.join(REGULARISERS)}")
  if not callable(score):
    raise ValueError(f"score must be a function f(*inputs) -> [B], got {type(score).__name__}")
  if not shapes:
    raise ValueError("shapes is empty: give one shape (with the batch) per positional input")
  shapes = tuple(tuple(int(n) for n in s) for s in shapes)
  kinds = _infer_kinds(shapes) if kinds is None else tuple(kinds)
  if len(kinds) != len(shapes):
    raise ValueError(f"{len(kinds)} kinds {kinds} for {len(shapes)} input shapes")
  for kind, shape in zip(kinds, shapes):
    if kind not in KINDS:
      raise ValueError(f"unknown input kind {kind!r}; valid: {', '.join(KINDS)}")
    if len(shape) != _RANKS[kind] or min(shape) < 1:
      raise ValueError(f"{kind} input shape {shape}: needs rank {_RANKS[kind]} with every size >= 1")
    if kind == "flow" and shape[-1] % 2:
      raise ValueError(f"flow input shape {shape}: 2(T-1) channels (x and y interleaved) must be even")
  if len({s[0] for s in shapes}) != 1:
    raise ValueError(f"the inputs' batch sizes differ: {[s[0] for s in shapes]}")
  if steps < 1:
    raise ValueError(f"steps = {steps}: needs at least 1")
  if not learning_rate > 0:
    raise ValueError(f"learning_rate = {learning_rate}: must be > 0")
  ranges = (tuple(value_range),) * len(shapes) if np.ndim(value_range) == 1 else tuple(map(tuple, value_range))
  if len(ranges) != len(shapes) or any(len(r) != 2 or not r[0] < r[1] for r in ranges):
    raise ValueError(f"value_range {value_range}: one (low, high) with low < high, or one such pair per input")
  if jitter < 0 or blur_every < 0 or blur_sigma <= 0 or alpha < 1:
    raise ValueError(f"jitter = {jitter} and blur_every = {blur_every} must be >= 0, blur_sigma = {blur_sigma} > 0, "
                     f"alpha = {alpha} >= 1")
  if temporal_weight is not None and regulariser == "appearance":
    raise ValueError("temporal_weight overrides the slow/fast/none weight; appearance ties the frames instead")
  return shapes, kinds, ranges


def maximise(score: Callable[..., jax.Array], shapes: Sequence[tuple[int, ...]], *, rng: jax.Array,
             regulariser: str = "slow", steps: int = 200, learning_rate: float = 0.05,
             kinds: Sequence[str] | None = None, value_range=(-1.0, 1.0), jitter: int = 1, norm_weight: float = 1e-3,
             alpha: float = 6.0, tv_weight: float = 0.05, temporal_weight: float | None = None,
             blur_every: int = 0, blur_sigma: float = 0.5, init_scale: float = 0.1) -> Result:
  """Inputs that maximise `score` (f(*inputs) -> [B]) under `regulariser`, each example of the batch on its own.

  shapes: one shape per positional input, with the batch (e.g. [(B,T,H,W,C)] or [(B,T,H,W,C), (B,H,W,2(T-1))]);
  kinds: "video", "flow" or "image" per input (default from the ranks: 5 -> video, 4 -> flow after a video, else
  image; a run's `inputs` names them). value_range: (low, high) for all inputs or one pair per input. learning_rate
  is Adam's, in units of the half-range. Weights: norm_weight (R_alpha), tv_weight (R_TV), temporal_weight (R_T,
  default TEMPORAL_WEIGHTS[regulariser]). init_scale: the start's noise, a fraction of the half-range.
  Raises ValueError naming a bad argument, or the score's output when it is not [B].
  """
  shapes, kinds, ranges = _check(score, shapes, kinds, regulariser, steps, learning_rate, value_range, jitter,
                                 blur_every, blur_sigma, alpha, temporal_weight)
  batch = shapes[0][0]
  out = jax.eval_shape(score, *[jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes])
  if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != (batch,):
    raise ValueError(f"score returns {getattr(out, 'shape', type(out).__name__)}, not one value per example "
                     f"({batch},)")
  weight = TEMPORAL_WEIGHTS[regulariser] if temporal_weight is None else float(temporal_weight)
  centres = [0.5 * (lo + hi) for lo, hi in ranges]
  halves = [0.5 * (hi - lo) for lo, hi in ranges]
  run = _compiled(score, shapes, kinds, tuple(centres), tuple(halves), regulariser == "appearance", steps,
                  float(learning_rate), int(jitter), float(norm_weight), float(alpha), float(tv_weight),
                  int(blur_every), float(blur_sigma), float(init_scale))
  inputs, scores = run(rng, jnp.float32(weight or 0.0))
  if not isinstance(scores, jax.core.Tracer):  # concrete unless traced (jax.eval_shape of a smoke test)
    scores = np.asarray(scores)
  return Result(inputs=tuple(inputs), scores=scores)


@functools.lru_cache(maxsize=8)
def _compiled(score, shapes, kinds, centres, halves, tied, steps, learning_rate, jitter, norm_weight, alpha,
              tv_weight, blur_every, blur_sigma, init_scale):
  """The jitted optimisation (rng, temporal weight) -> (inputs, scores [steps,B]); cached, so slow, fast and none on
  one score compile once. Variables: u = (x - centre) / half, in [-1, 1]."""
  ties = [_tie(k, s) if tied else (s, lambda p: p) for k, s in zip(kinds, shapes)]
  optimiser = optax.adam(learning_rate)

  def expand(params):
    return [expand_one(p) for (_, expand_one), p in zip(ties, params)]

  def to_data(us):
    return [u * h + c for u, h, c in zip(us, halves, centres)]

  def regularisers(us, weight):  # [B] per example: R_alpha, R_TV, R_T summed over each input's elements
    total = 0.0
    for u, kind in zip(us, kinds):
      per = lambda r: r.reshape(r.shape[0], -1).sum(axis=1)  # noqa: E731
      total = total + norm_weight * per(jnp.abs(u) ** alpha)
      for axis in _spatial_axes(kind):
        total = total + tv_weight * per(jnp.diff(u, axis=axis) ** 2)
      if kind != "image" and not tied:
        total = total + weight * per(jnp.diff(_frames(u, kind), axis=1) ** 2)
    return total

  def shift(xs, offset):
    return [jnp.roll(x, offset, axis=_spatial_axes(k)) for x, k in zip(xs, kinds)]

  def raw_score(params, offset):
    return score(*shift(to_data(expand(params)), offset)).astype(jnp.float32)  # [B]

  @jax.jit
  def run(rng, weight):
    init_rng, jitter_rng = jax.random.split(rng)
    keys = jax.random.split(init_rng, len(shapes))
    # One random frame (flow field) repeated: the start has no motion (see the module docstring).
    starts = [jnp.clip(_frames_back(_one_frame(key, shape, kind, init_scale), kind, shape), -1.0, 1.0)
              for key, shape, kind in zip(keys, shapes, kinds)]
    params = [_untie(x, kind, tie_shape) if tied else x for x, kind, (tie_shape, _) in zip(starts, kinds, ties)]
    # The gradient with respect to the whole (untied) input, so that appearance's objective is the others' objective
    # restricted to static clips (the limit of an infinite temporal weight).
    grads0 = jax.grad(lambda us: score(*to_data(us)).astype(jnp.float32).sum())(expand(params))
    # Mean |d score / d u| per example at the start, over all inputs' elements (1 where the gradient is zero).
    size = sum(math.prod(g.shape[1:]) for g in grads0)
    scale = sum(jnp.abs(g).reshape(g.shape[0], -1).sum(axis=1) for g in grads0) / size
    scale = jnp.where(scale > 0, scale, 1.0)

    def objective(params, offset):
      s = raw_score(params, offset)
      return -(s / jax.lax.stop_gradient(scale) - regularisers(expand(params), weight)).sum(), s

    def step(carry, i):
      params, state = carry
      offset = jax.random.randint(jax.random.fold_in(jitter_rng, i), (2,), -jitter, jitter + 1)
      grads, s = jax.grad(objective, has_aux=True)(params, offset)
      updates, state = optimiser.update(grads, state, params)
      params = optax.apply_updates(params, updates)
      if blur_every:
        params = jax.lax.cond((i + 1) % blur_every == 0,
                              lambda ps: [_gaussian_blur(p, blur_sigma, _spatial_axes(k)) for p, k in zip(ps, kinds)],
                              lambda ps: list(ps), params)
      params = [jnp.clip(p, -1.0, 1.0) for p in params]
      return (params, state), s

    (params, _), scores = jax.lax.scan(step, (params, optimiser.init(params)), jnp.arange(steps))
    return to_data(expand(params)), scores

  return run


def _one_frame(key: jax.Array, shape: tuple[int, ...], kind: str, scale: float) -> jax.Array:
  """Noise for one frame (video), one flow field (flow) or the image, in time-on-axis-1 layout for video/flow."""
  if kind == "video":
    b, _, h, w, c = shape
    return scale * jax.random.normal(key, (b, 1, h, w, c))
  if kind == "flow":
    b, h, w, c = shape
    return scale * jax.random.normal(key, (b, 1, h, w, 2))
  return scale * jax.random.normal(key, shape)


def _frames_back(frames: jax.Array, kind: str, shape: tuple[int, ...]) -> jax.Array:
  """The inverse of `_frames` after broadcasting the one frame over time: [B,T',...] -> the input's layout."""
  if kind == "video":
    return jnp.broadcast_to(frames, shape)
  if kind == "flow":
    b, h, w, c = shape
    return jnp.broadcast_to(frames, (b, c // 2, h, w, 2)).transpose(0, 2, 3, 1, 4).reshape(shape)
  return frames


def _untie(x: jax.Array, kind: str, tie_shape: tuple[int, ...]) -> jax.Array:
  """The appearance variable of a static start: its first frame (flow field)."""
  if kind == "video":
    return x[:, :1]
  if kind == "flow":
    return x[..., :2]
  return x

"""Learning-rate schedules, optimizers, the parameter EMA, and the classification loss and accuracy.

    schedule = make_schedule("cosine", base_lr=1e-3, total_steps=10_000, warmup_steps=500)
    tx = make_optimizer(name="adamw", schedule=schedule, weight_decay=0.05, b1=0.9, b2=0.999, momentum=0.9,
                        nesterov=False, grad_clip_norm=1.0, grad_accum_steps=1, params=params)
    loss = cross_entropy(logits, labels, label_smoothing=0.1, num_classes=K)  # [B]

Steps are optimizer updates: under gradient accumulation (`grad_accum_steps` = k > 1) the training loop calls
`tx.update` once per micro-batch, only every k-th call changes the parameters, and the schedule (and
`total_steps`) counts those parameter-changing calls only. `has_updated(opt_state)` tells the loop whether the
last call did (e.g. to update the EMA only then).

Weight decay follows the ViT/DeiT convention (timm's `no_weight_decay`, big_vision's `.*/kernel`): only weight
matrices and conv kernels decay, i.e. leaves named `kernel`; biases, LayerNorm/BatchNorm/GroupNorm scales and
biases, the position embedding and the class token do not. It is decoupled (Loshchilov & Hutter 2019) and, as
in optax and PyTorch's AdamW, multiplied by the learning rate: a kernel shrinks by `lr_t * weight_decay * w` per
step, for SGD as for AdamW. (PyTorch's SGD `weight_decay` is coupled L2 that goes through the momentum buffer,
so with momentum m it decays about 1/(1-m) times more at the same value.)
"""
from typing import Literal

import jax
import jax.numpy as jnp
import optax

ScheduleKind = Literal["cosine", "linear", "constant", "step"]
OptimizerName = Literal["adamw", "sgd"]


def make_schedule(kind: ScheduleKind, *, base_lr: float, total_steps: int, warmup_steps: int,
                  end_lr_factor: float = 0.0, step_boundaries: tuple[float, ...] = (),
                  step_factor: float = 0.1) -> optax.Schedule:
  """Learning rate per optimizer step: linear warm-up from 0, then decay to `base_lr * end_lr_factor`.

  With w = warmup_steps, T = total_steps, E = base_lr * end_lr_factor and t the step:
    t < w:       base_lr * t / w                                   (all kinds; lr is 0 at step 0)
    "cosine":    E + (base_lr - E) * (1 + cos(pi * (t - w) / (T - w))) / 2
    "linear":    base_lr + (E - base_lr) * (t - w) / (T - w)
    "constant":  base_lr (end_lr_factor is ignored)
    "step":      base_lr * step_factor^n, n = the number of boundaries b in `step_boundaries` (fractions of T,
                 ascending, in (0, 1)) with t >= round(b T): the video papers' "divide by 10 at ..." (the
                 non-local paper: (0.375, 0.75) of 400k iterations); end_lr_factor is ignored
  and E (base_lr for "constant", the last step for "step") for t >= T. The returned function takes an int or
  traced step.
  """
  if kind not in ("cosine", "linear", "constant", "step"):
    raise ValueError(f"schedule kind {kind!r} is not one of 'cosine', 'linear', 'constant', 'step'")
  if total_steps <= 0:
    raise ValueError(f"total_steps must be positive; got {total_steps}")
  if not 0 <= warmup_steps < total_steps:
    raise ValueError(f"warmup_steps {warmup_steps} must be in [0, total_steps) = [0, {total_steps})")
  if base_lr < 0 or end_lr_factor < 0:
    raise ValueError(f"base_lr {base_lr} and end_lr_factor {end_lr_factor} must be non-negative")
  end_lr = base_lr * end_lr_factor
  if kind == "cosine":
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=base_lr, warmup_steps=warmup_steps, decay_steps=total_steps, end_value=end_lr)
  if kind == "step":
    bounds = [round(b * total_steps) for b in step_boundaries]
    if list(step_boundaries) != sorted(step_boundaries) or not all(0 < b < 1 for b in step_boundaries) or (
        bounds and bounds[0] <= warmup_steps):
      raise ValueError(f"step_boundaries {tuple(step_boundaries)} must be ascending fractions in (0, 1) of the "
                       f"{total_steps} steps, each after the {warmup_steps} warm-up steps")
    if not 0 < step_factor <= 1:
      raise ValueError(f"step_factor {step_factor} must be in (0, 1]")
    decay = optax.piecewise_constant_schedule(base_lr, {b - warmup_steps: step_factor for b in bounds})
  elif kind == "linear":
    decay = optax.linear_schedule(base_lr, end_lr, transition_steps=total_steps - warmup_steps)
  else:
    decay = optax.constant_schedule(base_lr)
  warmup = optax.linear_schedule(0.0, base_lr, transition_steps=warmup_steps)
  return optax.join_schedules([warmup, decay], [warmup_steps])


def _key_name(key) -> str:
  """The name of one step of a pytree path (a dict key or a dataclass attribute)."""
  return str(getattr(key, "key", getattr(key, "name", key)))


def weight_decay_mask(params):
  """True for the leaves that decay: those named `kernel` with ndim >= 2; False for all others.

  That is every Dense/DenseGeneral/Conv kernel, the patch embedding and the head, but no bias (including the
  attention's `[h,d]` biases), no norm scale, no `pos_embedding` and no class `token`. Deciding by name rather
  than by ndim alone keeps this right for the scanned layout, where a LayerNorm scale is `[depth,D]`.
  Works on arrays and on `jax.ShapeDtypeStruct`s (from `jax.eval_shape`); returns the same tree of bools.
  """
  return jax.tree_util.tree_map_with_path(lambda path, x: _key_name(path[-1]) == "kernel" and x.ndim >= 2, params)


def make_optimizer(*, name: OptimizerName, schedule: optax.Schedule, weight_decay: float, b1: float, b2: float,
                   momentum: float, nesterov: bool, grad_clip_norm: float | None, grad_accum_steps: int,
                   params) -> optax.GradientTransformation:
  """Gradient clipping, then AdamW or SGD with momentum, with masked decoupled weight decay.

  Args:
    name: "adamw" (uses b1, b2; eps 1e-8) or "sgd" (uses momentum, nesterov; momentum 0 keeps no buffer).
    schedule: learning rate per optimizer step, from `make_schedule`.
    weight_decay: decoupled, times the learning rate, on the leaves `weight_decay_mask(params)` marks.
    grad_clip_norm: clip the (accumulated) gradient to this global norm first; None: no clipping.
    grad_accum_steps: k; k > 1 averages the gradients of k consecutive calls (`optax.MultiSteps`) and updates
      once; the other calls return zero updates. 1: off.
    params: the parameters (or their `jax.eval_shape`), for the decay mask; the optimizer must be used with
      parameters of the same tree structure.

  Returns:
    An `optax.GradientTransformation` whose state is a pytree of arrays and optax NamedTuples, as orbax
    checkpoints it.
  """
  if name not in ("adamw", "sgd"):
    raise ValueError(f"optimizer {name!r} is not one of 'adamw', 'sgd'")
  if weight_decay < 0:
    raise ValueError(f"weight_decay must be non-negative; got {weight_decay}")
  if grad_clip_norm is not None and grad_clip_norm <= 0:
    raise ValueError(f"grad_clip_norm must be positive or None; got {grad_clip_norm}")
  if grad_accum_steps < 1:
    raise ValueError(f"grad_accum_steps must be >= 1; got {grad_accum_steps}")
  mask = weight_decay_mask(params)
  if name == "adamw":
    optimizer = optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay, mask=mask)
  else:
    if not 0 <= momentum < 1:
      raise ValueError(f"SGD momentum must be in [0, 1); got {momentum}")
    if nesterov and momentum == 0:
      raise ValueError("nesterov=True needs momentum > 0; got momentum 0")
    optimizer = optax.chain(
        optax.trace(decay=momentum, nesterov=nesterov) if momentum else optax.identity(),
        optax.add_decayed_weights(weight_decay, mask),
        optax.scale_by_learning_rate(schedule))
  clip = optax.clip_by_global_norm(grad_clip_norm) if grad_clip_norm is not None else optax.identity()
  tx = optax.chain(clip, optimizer)
  if grad_accum_steps > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=grad_accum_steps).gradient_transformation()
  return tx


def has_updated(opt_state) -> jax.Array:
  """Whether the `tx.update` call that returned `opt_state` changed the parameters: a bool scalar, always True
  without gradient accumulation, every `grad_accum_steps`-th call with it (`optax.MultiStepsState`)."""
  if isinstance(opt_state, optax.MultiStepsState):
    return jnp.logical_and(opt_state.mini_step == 0, opt_state.gradient_step > 0)
  return jnp.asarray(True)


def ema_update(ema_params, params, decay: float | jax.Array, step: int | jax.Array | None):
  """One step of the parameter moving average: `ema <- d * ema + (1 - d) * params`, leaf by leaf.

  d = decay when `step` is None; otherwise d = min(decay, (1 + step) / (10 + step)), a warm-up that lets the
  average follow the fast early changes (0.1 at step 0, 0.5 at step 8, 0.9 at step 80, 0.99 at step 890).
  Pure and jit-able (decay and step may be traced); the result keeps the dtypes of `ema_params`.
  """
  if step is not None:
    step = jnp.asarray(step, jnp.float32)
    decay = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
  return jax.tree.map(lambda e, p: (decay * e + (1.0 - decay) * p).astype(e.dtype), ema_params, params)


def _check_labels(logits: jax.Array, labels: jax.Array, num_classes: int) -> None:
  """ValueError unless logits are [B,K] with K = num_classes and labels are int [B] or float [B,K]."""
  if logits.ndim != 2 or logits.shape[-1] != num_classes:
    raise ValueError(f"logits must be [B,K] with K = num_classes = {num_classes}; got shape {logits.shape}")
  if jnp.issubdtype(labels.dtype, jnp.integer):
    if labels.shape != logits.shape[:1]:
      raise ValueError(f"integer labels must be [B] = {logits.shape[:1]}; got shape {labels.shape}")
  elif labels.shape != logits.shape:
    raise ValueError(f"soft labels must be [B,K] = {logits.shape}; got shape {labels.shape}")


def cross_entropy(logits: jax.Array, labels: jax.Array, *, label_smoothing: float = 0.0,
                  num_classes: int) -> jax.Array:
  """Per-example softmax cross-entropy, `[B,K]` logits and int `[B]` or soft `[B,K]` labels -> float32 `[B]`.

  The target is y = (1 - s) * one_hot(labels) + s / K (soft labels: (1 - s) * labels + s / K) and the loss
  -sum_k y_k log softmax(logits)_k, in float32. Integer labels outside [0, K) get a zero one-hot (padding
  examples); the loop masks them out.
  """
  _check_labels(logits, labels, num_classes)
  if not 0 <= label_smoothing < 1:
    raise ValueError(f"label_smoothing must be in [0, 1); got {label_smoothing}")
  if jnp.issubdtype(labels.dtype, jnp.integer):
    labels = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)  # [B,K]
  targets = (1.0 - label_smoothing) * labels.astype(jnp.float32) + label_smoothing / num_classes
  return -jnp.sum(targets * jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1), axis=-1)


def topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """Whether the label is among the k largest logits: `[B,K]`, int `[B]` or soft `[B,K]` -> bool `[B]`.

  Soft labels count their argmax as the label. Ties are broken as `jax.lax.top_k` does (lower index first).
  """
  if logits.ndim != 2:
    raise ValueError(f"logits must be [B,K]; got shape {logits.shape}")
  _check_labels(logits, labels, logits.shape[-1])
  if not 1 <= k <= logits.shape[-1]:
    raise ValueError(f"k = {k} must be in [1, K] = [1, {logits.shape[-1]}]")
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    labels = jnp.argmax(labels, axis=-1)  # [B]
  _, top = jax.lax.top_k(logits, k)  # [B,k]
  return jnp.any(top == labels[:, None], axis=-1)

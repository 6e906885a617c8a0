"""The train state and the pure train/eval step functions (wrapped by `jax.jit` or `jax.pmap` in the loop)."""
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from vit_video.train import optim


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs, as one pytree of arrays (checkpointed whole).

  step: int32 scalar, the number of optimizer steps (micro-steps under gradient accumulation) taken.
  batch_stats: BatchNorm running statistics, {} for models without BatchNorm.
  ema_params: exponential moving average of params, {} when EMA is off.
  rng: uint32 key data of the run's base key; step s uses fold_in(rng, s), so no RNG state advances.
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  ema_params: Any
  rng: jax.Array


def model_inputs(model: nn.Module, batch: dict) -> tuple:
  """The model's positional inputs from a batch, by its family's `inputs` (vit_video.models' contract): e.g.
  (batch["image"],) [B,H,W,C], or (batch["video"], batch["flow"]) for two-stream models."""
  return tuple(batch[name] for name in model.inputs)


def init_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array,
               input_shapes: tuple[tuple[int, ...], ...], *, ema: bool) -> TrainState:
  """Initialises parameters on dummy inputs `[1, *shape]`, one per shape in `input_shapes` (e.g. ((H, W, C),) for
  images, ((T, H, W, C), (H, W, 2(T-1))) for two-stream). Pure: wrap in `jax.jit` with out_shardings."""
  params_rng, dropout_rng, base_rng = jax.random.split(rng, 3)
  dummies = [jnp.zeros((1, *shape)) for shape in input_shapes]
  variables = model.init({"params": params_rng, "dropout": dropout_rng}, *dummies, train=False)
  params = variables["params"]
  return TrainState(
      step=jnp.zeros((), jnp.int32), params=params, batch_stats=variables.get("batch_stats", {}),
      opt_state=tx.init(params), ema_params=jax.tree.map(jnp.copy, params) if ema else {},
      rng=jax.random.key_data(base_rng))


def _apply(model: nn.Module, state: TrainState, params: Any, inputs: tuple, *, train: bool, rng=None):
  """Runs the model on `inputs` (`model_inputs`); returns (logits, new batch_stats)."""
  variables = {"params": params}
  if state.batch_stats:
    variables["batch_stats"] = state.batch_stats
  rngs = {"dropout": rng} if rng is not None else None
  if train and state.batch_stats:
    logits, updated = model.apply(variables, *inputs, train=True, rngs=rngs, mutable=["batch_stats"])
    return logits, updated["batch_stats"]
  return model.apply(variables, *inputs, train=train, rngs=rngs), state.batch_stats


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, *, num_classes: int,
                    label_smoothing: float, ema_decay: float, schedule: Callable[[jax.Array], jax.Array],
                    grad_accum_steps: int = 1,
                    axis_name: str | None = None) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """One step on a batch {'image': [B,H,W,C] (or 'video', 'flow': `model_inputs`), 'label': [B] or [B,K]}
  -> (state, metrics).

  With gradient accumulation a step is a micro-step: the optimizer (whose schedule counts its own updates)
  and the EMA move every `grad_accum_steps` steps. With `axis_name` (pmap) gradients, loss and BatchNorm
  statistics are averaged over that axis; under jit the batch is one global array and XLA inserts the
  reductions itself.
  """

  def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    if axis_name is not None:  # pmap: each device's examples get their own dropout masks
      rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))

    def loss_fn(params):
      logits, batch_stats = _apply(model, state, params, model_inputs(model, batch), train=True, rng=rng)
      loss = optim.cross_entropy(logits, batch["label"], label_smoothing=label_smoothing,
                                 num_classes=num_classes).mean()
      return loss, (logits, batch_stats)

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    accuracy = optim.topk_correct(logits, batch["label"], 1).mean()
    if axis_name is not None:
      grads, loss, accuracy, batch_stats = jax.lax.pmean((grads, loss, accuracy, batch_stats), axis_name)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    update_step = state.step // grad_accum_steps
    ema_params = state.ema_params
    if ema_decay:
      ema_params = jax.tree.map(lambda new, old: jnp.where(optim.has_updated(opt_state), new, old),
                                optim.ema_update(state.ema_params, params, ema_decay, update_step), ema_params)
    metrics = {"loss": loss, "accuracy": accuracy, "grad_norm": optax.tree.norm(grads),
               "learning_rate": schedule(update_step)}
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state,
                              ema_params=ema_params)
    return new_state, metrics

  return train_step


def make_eval_step(model: nn.Module, *, num_classes: int, use_ema: bool,
                   axis_name: str | None = None) -> Callable[[TrainState, dict], dict]:
  """Masked sums over a padded batch {'image', 'label', 'mask'} -> {'loss', 'top1', 'top5', 'count'}.

  top-5 becomes top-min(5, K) for fewer than 5 classes. Divide by 'count' after summing over all batches.
  """

  def eval_step(state: TrainState, batch: dict) -> dict:
    params = state.ema_params if use_ema else state.params
    logits, _ = _apply(model, state, params, model_inputs(model, batch), train=False)
    mask = batch["mask"].astype(jnp.float32)
    loss = optim.cross_entropy(logits, batch["label"], label_smoothing=0.0, num_classes=num_classes)
    sums = {"loss": (loss * mask).sum(), "top1": (optim.topk_correct(logits, batch["label"], 1) * mask).sum(),
            "top5": (optim.topk_correct(logits, batch["label"], min(5, num_classes)) * mask).sum(),
            "count": mask.sum()}
    return jax.lax.psum(sums, axis_name) if axis_name is not None else sums

  return eval_step


def make_view_eval_step(model: nn.Module, *, use_ema: bool, axis_name: str | None = None
                        ) -> Callable[[TrainState, dict], dict]:
  """Video evaluation: a batch of views {'video', ['flow'], 'label', 'mask', 'video_index'} -> the views' logits
  [B,K] with their 'label', 'mask' and 'video_index' [B], for per-video aggregation on the host
  (`video_pipeline.clip_and_video_top1`). Under pmap the devices' rows are gathered, so every device returns
  the whole batch."""

  def eval_step(state: TrainState, batch: dict) -> dict:
    params = state.ema_params if use_ema else state.params
    logits, _ = _apply(model, state, params, model_inputs(model, batch), train=False)
    out = {"logits": logits, **{k: batch[k] for k in ("label", "mask", "video_index")}}
    return jax.lax.all_gather(out, axis_name, tiled=True) if axis_name is not None else out

  return eval_step

"""`train_and_evaluate(config, workdir)`: a config in; a trained, evaluated, checkpointed model out.

Resumable: every start first restores the newest complete checkpoint in `workdir` (parameters, optimizer
state, EMA, step; the data order and dropout keys are functions of (seed, step)), so a killed run restarted
with the same command ends exactly where an uninterrupted one would.
"""
import inspect
import logging
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vit_video import models
from vit_video.data import augment as augment_lib
from vit_video.data import pipeline, video_pipeline
from vit_video.train import checkpointing, finetune, flops, optim, parallel, steps, writers

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def build_model(config: ml_collections.ConfigDict, *, axis_name: str | None = None):
  """The config's model; under pmap, BatchNorm models get the axis to average statistics over."""
  if config.dtype not in DTYPES:
    raise ValueError(f"dtype must be one of {sorted(DTYPES)}; got {config.dtype!r}")
  overrides = dict(config.model)
  factory = models.MODELS.get(config.model_name)
  if axis_name is not None and factory is not None and "axis_name" in factory.func.__dataclass_fields__:
    overrides["axis_name"] = axis_name
  if factory is not None and "in_channels" in factory.func.__dataclass_fields__:
    overrides.setdefault("in_channels", config.dataset.channels)
  return models.create_model(config.model_name, num_classes=config.num_classes, dtype=DTYPES[config.dtype],
                             **overrides)


def input_shapes(config: ml_collections.ConfigDict) -> tuple[tuple[int, ...], ...]:
  """Per-example shapes of the model's inputs: ((S, S, C),) for images, ((T, S, S, C),) for clips, and
  ((T, S, S, C), (S, S, 2(T-1))) for clips with optical flow (config.video.flow)."""
  ds, video = config.dataset, config.video
  image = (ds.image_size, ds.image_size, ds.channels)
  if video.num_frames <= 0:
    if video.flow:
      raise ValueError("video.flow needs a video dataset: set video.num_frames > 0")
    return (image,)
  if video.flow and video.num_frames < 2:
    raise ValueError(f"video.flow needs num_frames >= 2 (2(T-1) flow channels); got {video.num_frames}")
  clip = (video.num_frames, *image)
  return (clip, (ds.image_size, ds.image_size, 2 * (video.num_frames - 1))) if video.flow else (clip,)


def _check_model_inputs(model, name: str, count: int) -> None:
  """ValueError unless the model's __call__ takes `count` positional inputs (two-stream: rgb and flow)."""
  kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
  inputs = [p.name for p in inspect.signature(type(model).__call__).parameters.values() if p.kind in kinds][1:]
  if len(inputs) != count:
    given = "clips and flow" if count == 2 else "images or clips"
    raise ValueError(f"model {name} takes {len(inputs)} input(s) ({', '.join(inputs)}), but the config feeds "
                     f"{count} ({given}): video.flow must be {len(inputs) == 2} for it")


def _total_steps(config, num_train: int) -> int:
  if config.total_steps > 0:
    return int(config.total_steps)
  steps_per_epoch = num_train // config.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f"batch size {config.batch_size} exceeds the {num_train} training examples")
  return max(1, int(round(config.num_epochs * steps_per_epoch)))


class Trainer:
  """The compiled steps and shardings of one run (built once; used by the loop and by notebooks)."""

  def __init__(self, config: ml_collections.ConfigDict, total_steps: int, *, devices: list | None = None):
    """`devices`: the jit mesh's devices (default: all); pmap always uses every local device."""
    self.config = config
    self.layout = parallel.make_layout(config.parallelism, fsdp=config.fsdp, devices=devices)
    parallel.check_batch_size(config.batch_size, self.layout.mesh.devices.size)
    pmap = config.parallelism == "pmap"
    axis = parallel.DATA_AXIS if pmap else None
    self.model = build_model(config, axis_name=axis)
    opt = config.optimizer
    if opt.grad_accum_steps < 1 or total_steps % opt.grad_accum_steps:
      raise ValueError(f"total steps {total_steps} must be a multiple of grad_accum_steps {opt.grad_accum_steps}")
    self.schedule = optim.make_schedule(  # counts optimizer updates: one per grad_accum_steps batches
        opt.schedule, base_lr=opt.learning_rate, total_steps=total_steps // opt.grad_accum_steps,
        warmup_steps=opt.warmup_steps, end_lr_factor=opt.end_lr_factor,
        step_boundaries=tuple(opt.step_boundaries), step_factor=opt.step_factor)
    self.video = config.video.num_frames > 0
    self.input_shapes = input_shapes(config)
    _check_model_inputs(self.model, config.model_name, len(self.input_shapes))
    self.abstract_params = jax.eval_shape(lambda: self.model.init(
        jax.random.key(0), *(jnp.zeros((1, *shape)) for shape in self.input_shapes), train=False))["params"]
    self.tx = optim.make_optimizer(
        name=opt.name, schedule=self.schedule, weight_decay=opt.weight_decay, b1=opt.b1, b2=opt.b2,
        momentum=opt.momentum, nesterov=opt.nesterov, grad_clip_norm=opt.grad_clip_norm or None,
        grad_accum_steps=opt.grad_accum_steps, params=self.abstract_params)
    train_step = steps.make_train_step(self.model, self.tx, num_classes=config.num_classes,
                                       label_smoothing=config.label_smoothing, ema_decay=config.ema_decay,
                                       schedule=self.schedule, grad_accum_steps=opt.grad_accum_steps,
                                       axis_name=axis)
    if self.video:  # per-view logits, aggregated per video on the host
      eval_step = steps.make_view_eval_step(self.model, use_ema=config.ema_decay > 0, axis_name=axis)
    else:
      eval_step = steps.make_eval_step(self.model, num_classes=config.num_classes, use_ema=config.ema_decay > 0,
                                       axis_name=axis)
    init = lambda rng: steps.init_state(self.model, self.tx, rng, self.input_shapes, ema=config.ema_decay > 0)  # noqa: E731
    self.abstract_state = jax.eval_shape(init, jax.random.key(0))
    if pmap:
      self.state_shardings = None
      self._init = jax.jit(init)
      self.train_step = jax.pmap(train_step, axis_name=axis, donate_argnums=0)
      self.eval_step = jax.pmap(eval_step, axis_name=axis)
    else:
      self.state_shardings = self.layout.state_shardings(self.abstract_state)
      batch, replicated = self.layout.batch_sharding, self.layout.replicated
      self._init = jax.jit(init, out_shardings=self.state_shardings)
      self.train_step = jax.jit(train_step, in_shardings=(self.state_shardings, batch),
                                out_shardings=(self.state_shardings, replicated), donate_argnums=0)
      self.eval_step = jax.jit(eval_step, in_shardings=(self.state_shardings, batch), out_shardings=replicated)

  def init(self, seed: int) -> steps.TrainState:
    """A fresh state, laid out for the step functions (replicated on a device axis under pmap)."""
    state = self._init(jax.random.key(seed))
    return self.place(state)

  def place(self, state: steps.TrainState) -> steps.TrainState:
    """Puts a host or global state where the step functions want it."""
    if self.config.parallelism == "pmap":
      return parallel.replicate(jax.device_get(state))
    return jax.device_put(state, self.state_shardings)

  def host_state(self, state: steps.TrainState) -> steps.TrainState:
    """The state as one global copy (un-replicated under pmap)."""
    return parallel.unreplicate(state) if self.config.parallelism == "pmap" else state

  def evaluate(self, state: steps.TrainState, batches) -> dict[str, float]:
    """Top-1, top-5 and loss over every example of an eval iterator (padding masked out).

    Video (multi-view) evaluation: 'top1' is the per-video top-1 (the views' softmaxes averaged), 'clip_top1',
    'top5' and 'loss' are per view, 'count' the number of videos and 'views' of views.
    """
    if self.video:
      return self._evaluate_views(state, batches)
    totals = None
    for batch in batches:
      sums = self.eval_step(state, parallel.host_batch_to_global(batch, self.layout))
      if self.config.parallelism == "pmap":
        sums = parallel.unreplicate(sums)
      totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    totals = jax.device_get(totals)
    count = float(totals["count"])
    return {"top1": float(totals["top1"]) / count, "top5": float(totals["top5"]) / count,
            "loss": float(totals["loss"]) / count, "count": count}

  def _evaluate_views(self, state: steps.TrainState, batches) -> dict[str, float]:
    outputs = []
    for batch in batches:
      out = self.eval_step(state, parallel.host_batch_to_global(batch, self.layout))
      out = jax.device_get(parallel.unreplicate(out) if self.config.parallelism == "pmap" else out)
      outputs.append(out)
    out = {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}
    mask = out["mask"].astype(bool)
    logits, labels = out["logits"][mask].astype(np.float64), out["label"][mask]
    log_p = logits - logits.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    top5 = np.argsort(-logits, axis=1)[:, :min(5, logits.shape[1])]
    accuracy = video_pipeline.clip_and_video_top1(out["logits"], out["label"], out["video_index"], mask)
    return {"top1": accuracy["video_top1"], "clip_top1": accuracy["clip_top1"],
            "top5": float(np.mean((top5 == labels[:, None]).any(1))),
            "loss": float(-np.mean(log_p[np.arange(len(labels)), labels])),
            "count": float(len(np.unique(out["video_index"][mask]))), "views": float(mask.sum())}

  def compile(self, state: steps.TrainState, batch: dict) -> tuple[float, float]:
    """Compiles both steps for these shapes once, keeps the executables, and returns XLA's FLOP counts:
    (train step over the global batch, eval per example). XLA's cost analysis counts one device's program, under
    jit (SPMD) and pmap alike, so it is scaled by the device count."""
    per_device = jax.device_count() if self.config.parallelism == "pmap" else self.layout.mesh.devices.size
    key, rank = ("video", 4) if self.video else ("image", 3)
    lead = batch[key].shape[:batch[key].ndim - rank]  # [B] (jit) or [devices, B/devices] (pmap)
    eval_batch = {**batch, "mask": jnp.ones(lead, bool)}
    if self.video:
      eval_batch["video_index"] = jnp.zeros(lead, jnp.int32)
    if eval_batch["label"].ndim > eval_batch["mask"].ndim:  # soft labels: evaluate on hard ones
      eval_batch["label"] = eval_batch["label"].argmax(-1)
    self.train_step = self.train_step.lower(state, batch).compile()
    self.eval_step = self.eval_step.lower(state, eval_batch).compile()
    train = flops.cost_analysis_flops(self.train_step) * per_device
    per_example = flops.cost_analysis_flops(self.eval_step) * per_device / self.config.batch_size
    return train, per_example


def _eval_iterator(config, split: str):
  if config.video.num_frames > 0:
    v = config.video
    return video_pipeline.make_clip_eval_iterator(
        config.dataset.name, split, config.dataset.data_dir, global_batch_size=config.batch_size,
        num_frames=v.num_frames, frame_stride=v.frame_stride, image_size=config.dataset.image_size,
        num_clips=v.eval_num_clips, num_crops=v.eval_num_crops, process_index=jax.process_index(),
        process_count=jax.process_count(), label_key=v.label_key, flow=v.flow)
  return pipeline.make_eval_iterator(
      config.dataset.name, split, config.dataset.data_dir, global_batch_size=config.batch_size,
      image_size=config.dataset.image_size, process_index=jax.process_index(), process_count=jax.process_count())


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> steps.TrainState:
  """Trains and evaluates `config` in `workdir` (resuming from its newest checkpoint); returns the final state.

  Writes `workdir/config.json`, `metrics.jsonl`, `tensorboard/`, `checkpoints/` and `summary.json`
  (final eval metrics, GFLOP per train step and per eval example, total training GFLOP).
  """
  workdir = os.path.abspath(workdir)  # orbax writes only to absolute paths
  d = config.distributed
  parallel.maybe_initialize_distributed(initialize=d.initialize, coordinator_address=d.coordinator_address,
                                        num_processes=d.num_processes, process_id=d.process_id)
  os.makedirs(workdir, exist_ok=True)
  ds = config.dataset
  pipeline.check_prepared(ds.name, ds.data_dir)
  total_steps = _total_steps(config, pipeline.num_examples(ds.name, ds.train_split, ds.data_dir))
  trainer = Trainer(config, total_steps)
  if config.log_every_steps < 1:
    raise ValueError(f"log_every_steps must be >= 1; got {config.log_every_steps}")
  if config.progress_bar not in ("auto", "on", "off"):
    raise ValueError(f"progress_bar must be 'auto', 'on' or 'off'; got {config.progress_bar!r}")

  ckpt = config.checkpoint
  checkpointer = checkpointing.Checkpointer(
      os.path.join(workdir, "checkpoints"), save_every_steps=ckpt.save_every_steps, total_steps=total_steps,
      max_to_keep=ckpt.max_to_keep, keep_best=ckpt.keep_best, async_save=ckpt.async_save)
  expected_meta = {"model": config.model_name}
  abstract = trainer.abstract_state
  if trainer.state_shardings is not None:
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract,
                            trainer.state_shardings)
  restored = checkpointer.restore_latest(abstract, expected_meta=expected_meta)
  if restored is not None:
    state, meta = restored
    state = trainer.place(state)
    start_step = int(meta["step"])
    if start_step > total_steps:
      raise ValueError(f"{workdir} holds a checkpoint at step {start_step}, past this config's {total_steps} "
                       f"steps: use another workdir, or train for at least {start_step} steps")
    logging.info("resumed from step %d in %s", start_step, workdir)
  else:
    state = trainer.init(config.seed)
    if config.init.checkpoint:
      state = trainer.place(finetune.init_from(trainer.host_state(state), config))
    start_step = 0
  if jax.process_index() == 0:  # only once the workdir's checkpoints were accepted
    writers.write_json_atomic(os.path.join(workdir, "config.json"), config.to_dict())

  train_iter = _train_iterator(config, start_step, stop_step=total_steps + 1)  # +1: a finished run's FLOP count
  bar = {"auto": None, "on": True, "off": False}[config.progress_bar]
  writer = writers.RunWriter(workdir, total_steps=total_steps, start_step=start_step,
                             global_batch_size=config.batch_size, progress_bar=bar)
  summary_path = os.path.join(workdir, "summary.json")
  step_gflop = eval_gflop = None
  eval_metrics: dict[str, float] = {}
  evaluated_at = None  # the step eval_metrics belong to
  start_time, pending = time.perf_counter(), None
  for step in range(start_step + 1, total_steps + 1):
    batch = parallel.host_batch_to_global(next(train_iter), trainer.layout)
    if step_gflop is None:
      step_gflop, eval_gflop = (f / 1e9 for f in trainer.compile(state, batch))
    state, metrics = trainer.train_step(state, batch)
    if pending is not None:  # Check the previous step while this one runs (one step of lag, no stall).
      _check_finite(*pending, checkpointer)
    pending = (step, metrics)
    last = step == total_steps
    if step % config.log_every_steps == 0 or last:
      _check_finite(step, metrics, checkpointer)
      writer.write(step, _host_scalars(metrics, config), kind="train")
    if last or (config.eval_every_steps and step % config.eval_every_steps == 0):
      eval_metrics, evaluated_at = trainer.evaluate(state, _eval_iterator(config, ds.eval_split)), step
      writer.write(step, eval_metrics, kind="eval")
    if checkpointer.should_save(step):
      _check_finite(step, metrics, checkpointer)
      # Keep-best ranks only checkpoints evaluated at their own step (align save and eval schedules).
      checkpointer.save(step, jax.device_get(trainer.host_state(state)) if config.parallelism == "pmap"
                        else state, meta={**expected_meta, "step": step},
                        metrics={"top1": eval_metrics["top1"]} if evaluated_at == step else None)
    writer.advance(step)
  checkpointer.wait()
  writer.close()
  if step_gflop is None:  # Nothing left to train (a finished run re-started): count on one batch.
    batch = parallel.host_batch_to_global(next(train_iter), trainer.layout)
    step_gflop, eval_gflop = (f / 1e9 for f in trainer.compile(state, batch))
  if not eval_metrics:
    eval_metrics = trainer.evaluate(state, _eval_iterator(config, ds.eval_split))
  summary = {
      "step": total_steps, "name": config.name or config.model_name, "model": config.model_name,
      **{f"eval_{k}": v for k, v in eval_metrics.items()},
      "train_gflop_per_step": step_gflop, "train_gflop_total": step_gflop * total_steps,
      "eval_gflop_per_example": eval_gflop,
      "params": int(sum(np.prod(a.shape) for a in jax.tree.leaves(trainer.abstract_params))),
      "seconds_this_start": time.perf_counter() - start_time,
  }
  if jax.process_index() == 0:
    writers.write_json_atomic(summary_path, summary)
  logging.info("done: %s step %d, eval top-1 %.4f, top-5 %.4f, loss %.4f, %.1f train GFLOP total, %s",
               summary["name"], total_steps, eval_metrics["top1"], eval_metrics["top5"], eval_metrics["loss"],
               summary["train_gflop_total"], workdir)
  return trainer.host_state(state)


def _train_iterator(config, start_step: int, stop_step: int):
  ds, v = config.dataset, config.video
  if v.num_frames > 0:
    if any(config.augment[k] for k in ("crop_padding", "flip", "randaugment_layers", "mixup_alpha", "cutmix_alpha")):
      raise ValueError("the image augmentations (config.augment) do not apply to video; clips are cropped and "
                       "flipped by config.video.min_crop_area and config.video.flip")
    return video_pipeline.make_clip_train_iterator(
        ds.name, ds.train_split, ds.data_dir, global_batch_size=config.batch_size, num_frames=v.num_frames,
        frame_stride=v.frame_stride, image_size=ds.image_size, seed=config.seed, process_index=jax.process_index(),
        process_count=jax.process_count(), start_step=start_step, flip=v.flip, scale_range=(v.min_crop_area, 1.0),
        label_key=v.label_key, stop_step=stop_step, cache=ds.cache, flow=v.flow)
  return pipeline.make_train_iterator(
      ds.name, ds.train_split, ds.data_dir, global_batch_size=config.batch_size, image_size=ds.image_size,
      seed=config.seed, start_step=start_step, process_index=jax.process_index(),
      process_count=jax.process_count(), augment=augment_lib.AugmentConfig(**config.augment),
      num_classes=config.num_classes, shuffle_buffer_size=ds.shuffle_buffer_size or None, cache=ds.cache,
      host_sharding=ds.host_sharding, stop_step=stop_step)


def _host_scalars(metrics: dict, config) -> dict[str, float]:
  metrics = jax.device_get(metrics)
  if config.parallelism == "pmap":
    metrics = parallel.unreplicate(metrics)
  return {k: float(v) for k, v in metrics.items()}


def _check_finite(step: int, metrics: Any, checkpointer) -> None:
  """Stops the run at the first non-finite loss, naming the step; the checkpoints on disk stay as they are."""
  loss = np.asarray(jax.device_get(metrics["loss"]))
  if not np.all(np.isfinite(loss)):
    checkpointer.wait()
    raise FloatingPointError(
        f"loss is {loss.ravel()[0]} at step {step}; training stopped. The last good checkpoint "
        f"(step {checkpointer.latest_step()}) is kept in {checkpointer.directory}")

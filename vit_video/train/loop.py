"""`train_and_evaluate(config, workdir)`: a config in; a trained, evaluated, checkpointed model out.

Resumable: every start first restores the newest complete checkpoint in `workdir` (parameters, optimizer
state, EMA, step; the data order and dropout keys are functions of (seed, step)), so a killed run restarted
with the same command ends exactly where an uninterrupted one would.
"""
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
from vit_video.data import pipeline
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
        warmup_steps=opt.warmup_steps, end_lr_factor=opt.end_lr_factor)
    self.image_shape = (config.dataset.image_size, config.dataset.image_size, config.dataset.channels)
    self.abstract_params = jax.eval_shape(
        lambda: self.model.init(jax.random.key(0), jnp.zeros((1, *self.image_shape)), train=False))["params"]
    self.tx = optim.make_optimizer(
        name=opt.name, schedule=self.schedule, weight_decay=opt.weight_decay, b1=opt.b1, b2=opt.b2,
        momentum=opt.momentum, nesterov=opt.nesterov, grad_clip_norm=opt.grad_clip_norm or None,
        grad_accum_steps=opt.grad_accum_steps, params=self.abstract_params)
    train_step = steps.make_train_step(self.model, self.tx, num_classes=config.num_classes,
                                       label_smoothing=config.label_smoothing, ema_decay=config.ema_decay,
                                       schedule=self.schedule, grad_accum_steps=opt.grad_accum_steps,
                                       axis_name=axis)
    eval_step = steps.make_eval_step(self.model, num_classes=config.num_classes, use_ema=config.ema_decay > 0,
                                     axis_name=axis)
    init = lambda rng: steps.init_state(self.model, self.tx, rng, self.image_shape, ema=config.ema_decay > 0)  # noqa: E731
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
    """Top-1, top-5 and loss over every example of an eval iterator (padding masked out)."""
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

  def compile(self, state: steps.TrainState, batch: dict) -> tuple[float, float]:
    """Compiles both steps for these shapes once, keeps the executables, and returns XLA's FLOP counts:
    (train step over the global batch, eval per example). XLA's cost analysis counts one device's program, under
    jit (SPMD) and pmap alike, so it is scaled by the device count."""
    per_device = jax.device_count() if self.config.parallelism == "pmap" else self.layout.mesh.devices.size
    eval_batch = {**batch, "mask": jnp.ones(batch["label"].shape[:batch["image"].ndim - 3], bool)}
    if eval_batch["label"].ndim > eval_batch["mask"].ndim:  # soft labels: evaluate on hard ones
      eval_batch["label"] = eval_batch["label"].argmax(-1)
    self.train_step = self.train_step.lower(state, batch).compile()
    self.eval_step = self.eval_step.lower(state, eval_batch).compile()
    train = flops.cost_analysis_flops(self.train_step) * per_device
    per_example = flops.cost_analysis_flops(self.eval_step) * per_device / self.config.batch_size
    return train, per_example


def _eval_iterator(config, split: str):
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
      state = trainer.place(finetune.init_from(
          trainer.host_state(state), config.init.checkpoint, model_name=config.model_name,
          image_size=ds.image_size, reset_head=config.init.reset_head))
    start_step = 0
  if jax.process_index() == 0:  # only once the workdir's checkpoints were accepted
    writers.write_json_atomic(os.path.join(workdir, "config.json"), config.to_dict())

  train_iter = pipeline.make_train_iterator(
      ds.name, ds.train_split, ds.data_dir, global_batch_size=config.batch_size, image_size=ds.image_size,
      seed=config.seed, start_step=start_step, process_index=jax.process_index(),
      process_count=jax.process_count(), augment=augment_lib.AugmentConfig(**config.augment),
      num_classes=config.num_classes, shuffle_buffer_size=ds.shuffle_buffer_size or None, cache=ds.cache,
      host_sharding=ds.host_sharding, stop_step=total_steps + 1)  # one spare batch for a finished run's FLOP count
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

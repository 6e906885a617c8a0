"""`train_and_evaluate(config, workdir)`: a config in; a trained, evaluated, checkpointed model out.

Resumable: every start first restores the newest complete checkpoint in `workdir` (parameters, optimizer
state, EMA, step; the data order and dropout keys are functions of (seed, step)), so a killed run restarted
with the same command ends exactly where an uninterrupted one would. `train_once` is the same for a member of a
study: it returns a finished run's summary without training again.
"""
import dataclasses
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vit_video import configs, models
from vit_video.data import video_pipeline
from vit_video.data import iterators
from vit_video.train import checkpointing, finetune, flops, optim, parallel, run_lock, steps, writers
from vit_video.train.run_folder import RunFolder

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def build_model(config: ml_collections.ConfigDict, *, axis_name: str | None = None):
  """The config's model (`config.model` overrides the named variant; its input channels default to the
  dataset's); under pmap, BatchNorm families get the axis to average statistics over."""
  if config.dtype not in DTYPES:
    raise ValueError(f"dtype must be one of {sorted(DTYPES)}; got {config.dtype!r}")
  family = models.model_class(config.model_name)
  overrides = {"in_channels": config.dataset.channels, **config.model}
  if axis_name is not None and family.batch_norm:
    overrides["axis_name"] = axis_name
  return models.create_model(config.model_name, num_classes=config.num_classes, dtype=DTYPES[config.dtype],
                             **overrides)


def input_shapes(config: ml_collections.ConfigDict) -> tuple[tuple[int, ...], ...]:
  """Per-example shapes of the model's inputs, in the order of its family's `inputs`: "image" (S, S, C), "video"
  (T, S, S, C), "flow" (S, S, 2(T-1)). ValueError when the config feeds other inputs than the model takes."""
  ds, v = config.dataset, config.video
  family = models.model_class(config.model_name)
  inputs, fed = family.inputs, iterators.input_keys(config)
  if tuple(inputs) != fed:
    want = ("set video.num_frames > 0" if "video" in inputs and v.num_frames <= 0 else
            "set video.num_frames = 0" if "image" in inputs else f"video.flow must be {'flow' in inputs}")
    raise ValueError(f"model {config.model_name} takes {len(inputs)} input(s) ({', '.join(inputs)}), but the "
                     f"config feeds {', '.join(fed)}: {want} for it")
  return models.input_shapes(family, frames=v.num_frames, height=ds.image_size, width=ds.image_size,
                             channels=ds.channels)


def total_steps(config: ml_collections.ConfigDict, num_train: int) -> int:
  """The run's steps: `total_steps`, or `num_epochs` passes over `num_train` examples (at least one step)."""
  if config.total_steps < 0 or (config.total_steps == 0 and config.num_epochs <= 0):
    raise ValueError(f"set total_steps > 0, or total_steps = 0 and num_epochs > 0; got total_steps "
                     f"{config.total_steps}, num_epochs {config.num_epochs}")
  if config.total_steps > 0:
    return int(config.total_steps)
  steps_per_epoch = num_train // config.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f"batch size {config.batch_size} exceeds the {num_train} training examples")
  return max(1, int(round(config.num_epochs * steps_per_epoch)))


@dataclasses.dataclass(frozen=True)
class Program:
  """A run's model, optimizer and pure step functions, before any device is chosen (`Trainer` compiles them for
  its layout; `train/dry_run.py` plans them for a slice that need not exist)."""
  model: nn.Module
  schedule: optax.Schedule
  tx: optax.GradientTransformation
  input_shapes: tuple[tuple[int, ...], ...]
  abstract_params: Any  # ShapeDtypeStructs
  abstract_state: steps.TrainState  # ShapeDtypeStructs
  init: Callable[[jax.Array], steps.TrainState]  # rng -> a fresh state
  train_step: Callable  # (state, batch) -> (state, metrics)
  eval_step: Callable  # (state, batch) -> masked sums (images) or the views' logits (video)

  @property
  def video(self) -> bool:
    """Evaluation by views, aggregated per video on the host."""
    return "video" in self.model.inputs


def make_schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """The learning rate per optimizer update (one per `grad_accum_steps` batches) of a run of `total_steps`;
  ValueError naming the field when the config's schedule cannot fit that many steps (e.g. its warm-up)."""
  opt = config.optimizer
  if opt.grad_accum_steps < 1 or total_steps % opt.grad_accum_steps:
    raise ValueError(f"total steps {total_steps} must be a multiple of grad_accum_steps {opt.grad_accum_steps}")
  return optim.make_schedule(
      opt.schedule, base_lr=opt.learning_rate, total_steps=total_steps // opt.grad_accum_steps,
      warmup_steps=opt.warmup_steps, end_lr_factor=opt.end_lr_factor,
      step_boundaries=tuple(opt.step_boundaries), step_factor=opt.step_factor)


def build_program(config: ml_collections.ConfigDict, total_steps: int, *, axis_name: str | None = None) -> Program:
  """The config's model, schedule, optimizer and step functions; `axis_name`: pmap's device axis (None: jit)."""
  model = build_model(config, axis_name=axis_name)
  opt = config.optimizer
  schedule = make_schedule(config, total_steps)
  shapes = input_shapes(config)
  abstract_variables = jax.eval_shape(lambda: model.init(
      jax.random.key(0), *(jnp.zeros((1, *shape)) for shape in shapes), train=False))  # the one trace of init
  abstract_params = abstract_variables["params"]
  tx = optim.make_optimizer(
      name=opt.name, schedule=schedule, weight_decay=opt.weight_decay, b1=opt.b1, b2=opt.b2,
      momentum=opt.momentum, nesterov=opt.nesterov, grad_clip_norm=opt.grad_clip_norm or None,
      grad_accum_steps=opt.grad_accum_steps, params=abstract_params)
  train_step = steps.make_train_step(model, tx, num_classes=config.num_classes,
                                     label_smoothing=config.label_smoothing, ema_decay=config.ema_decay,
                                     schedule=schedule, grad_accum_steps=opt.grad_accum_steps, axis_name=axis_name)
  ema = config.ema_decay > 0
  if "video" in model.inputs:
    eval_step = steps.make_view_eval_step(model, use_ema=ema, axis_name=axis_name)
  else:
    eval_step = steps.make_eval_step(model, num_classes=config.num_classes, use_ema=ema, axis_name=axis_name)
  init = lambda rng: steps.init_state(model, tx, rng, shapes, ema=ema)  # noqa: E731
  abstract_state = steps.TrainState(  # what `init` returns, without tracing the model again
      step=jax.ShapeDtypeStruct((), jnp.int32), params=abstract_params,
      batch_stats=abstract_variables.get("batch_stats", {}), opt_state=jax.eval_shape(tx.init, abstract_params),
      ema_params=abstract_params if ema else {},
      rng=jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0))))
  return Program(model=model, schedule=schedule, tx=tx, input_shapes=shapes, abstract_params=abstract_params,
                 abstract_state=abstract_state, init=init, train_step=train_step, eval_step=eval_step)


class Trainer:
  """The compiled steps and shardings of one run (built once; used by the loop and by notebooks)."""

  def __init__(self, config: ml_collections.ConfigDict, total_steps: int, *, devices: list | None = None):
    """`devices`: the jit mesh's devices (default: all); pmap always uses every local device."""
    self.config = config
    self.layout = parallel.make_layout(config.parallelism, fsdp=config.fsdp, devices=devices)
    parallel.check_batch_size(config.batch_size, self.layout.mesh.size)
    program = build_program(config, total_steps, axis_name=self.layout.axis_name)
    self.model, self.schedule, self.tx = program.model, program.schedule, program.tx
    self.input_shapes, self.video = program.input_shapes, program.video
    self.abstract_params, self.abstract_state = program.abstract_params, program.abstract_state
    self.state_shardings = self.layout.state_shardings(self.abstract_state)  # None under pmap
    self._init = self.layout.compile_init(program.init, self.state_shardings)
    self.train_step = self.layout.compile_step(program.train_step, self.state_shardings, updates_state=True)
    self.eval_step = self.layout.compile_step(program.eval_step, self.state_shardings, updates_state=False)

  def init(self, seed: int) -> steps.TrainState:
    """A fresh state, laid out for the step functions (replicated on a device axis under pmap)."""
    return self.place(self._init(jax.random.key(seed)))

  def place(self, state: steps.TrainState) -> steps.TrainState:
    """Puts a host or global state where the step functions want it."""
    return self.layout.place(state, self.state_shardings)

  def host_state(self, state: steps.TrainState) -> steps.TrainState:
    """The state as one global copy (un-replicated under pmap)."""
    return self.layout.one_copy(state)

  def abstract_placed_state(self) -> Any:
    """The state's `ShapeDtypeStruct`s with the shardings a restore should give them (none under pmap)."""
    if self.state_shardings is None:
      return self.abstract_state
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), self.abstract_state,
                        self.state_shardings)

  def evaluate(self, state: steps.TrainState, batches) -> dict[str, float]:
    """Top-1, top-5 and loss over every example of an eval iterator (padding masked out).

    Video (multi-view) evaluation: 'top1' is the per-video top-1 (the views' softmaxes averaged), 'clip_top1',
    'top5' and 'loss' are per view, 'count' the number of videos and 'views' of views.
    """
    if self.video:
      return self._evaluate_views(state, batches)
    totals = None
    for batch in batches:
      sums = self.layout.one_copy(self.eval_step(state, parallel.host_batch_to_global(batch, self.layout)))
      totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    totals = jax.device_get(totals)
    count = float(totals["count"])
    return {"top1": float(totals["top1"]) / count, "top5": float(totals["top5"]) / count,
            "loss": float(totals["loss"]) / count, "count": count}

  def _evaluate_views(self, state: steps.TrainState, batches) -> dict[str, float]:
    outputs = [jax.device_get(self.layout.one_copy(self.eval_step(
        state, parallel.host_batch_to_global(batch, self.layout)))) for batch in batches]
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
    lead = batch["label"].shape[:self.layout.batch_axes]  # [B] (jit) or [devices, B/devices] (pmap)
    eval_batch = {**batch, "mask": jnp.ones(lead, bool)}
    if self.video:
      eval_batch["video_index"] = jnp.zeros(lead, jnp.int32)
    if eval_batch["label"].ndim > eval_batch["mask"].ndim:  # soft labels: evaluate on hard ones
      eval_batch["label"] = eval_batch["label"].argmax(-1)
    self.train_step = self.train_step.lower(state, batch).compile()
    self.eval_step = self.eval_step.lower(state, eval_batch).compile()
    devices = self.layout.program_devices
    train = flops.cost_analysis_flops(self.train_step) * devices
    per_example = flops.cost_analysis_flops(self.eval_step) * devices / self.config.batch_size
    return train, per_example


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> tuple[steps.TrainState, dict]:
  """Trains and evaluates `config` in `workdir` (resuming from its newest checkpoint); returns the final state
  and the run's summary.

  `workdir` is a local path or any `etils.epath` URI (gs://...). It gets config.json, metrics.jsonl,
  tensorboard/, checkpoints/ and, last, summary.json (final eval metrics, GFLOP per train step and per eval
  example, total training GFLOP): see train/run_folder.py.
  """
  d = config.distributed
  if d.initialize:
    parallel.initialize_distributed(coordinator_address=d.coordinator_address, num_processes=d.num_processes,
                                    process_id=d.process_id)
  folder = RunFolder(workdir)
  data = iterators.make_iterators(config)
  num_steps = total_steps(config, data.num_train_examples)
  trainer = Trainer(config, num_steps)
  if config.log_every_steps < 1:
    raise ValueError(f"log_every_steps must be >= 1; got {config.log_every_steps}")
  if config.progress_bar not in ("auto", "on", "off"):
    raise ValueError(f"progress_bar must be 'auto', 'on' or 'off'; got {config.progress_bar!r}")
  folder.makedirs()
  with run_lock.hold(folder / run_lock.LOCK):  # one run per workdir; the hosts of one run share it
    check_same_run(folder, config, may_differ=_RESUMABLE_KEYS)
    ckpt = config.checkpoint
    checkpointer = checkpointing.Checkpointer(
        folder.checkpoints, save_every_steps=ckpt.save_every_steps, total_steps=num_steps,
        max_to_keep=ckpt.max_to_keep, keep_best=ckpt.keep_best, async_save=ckpt.async_save)
    try:
      result = _train(config, folder, trainer, checkpointer, data, num_steps)
    except BaseException:
      try:  # waits for a save in flight, also when training failed; the first error is the one raised
        checkpointer.close()
      except checkpointing.CheckpointWriteError as e:
        logging.error("%s", e)
      raise
    checkpointer.close()
    return result


def _train(config, folder: RunFolder, trainer: Trainer, checkpointer: checkpointing.Checkpointer,
           data: iterators.Iterators, total_steps: int) -> tuple[steps.TrainState, dict]:
  expected_meta = {"model": config.model_name}
  restored = checkpointer.restore_latest(trainer.abstract_placed_state(), expected_meta=expected_meta)
  if restored is not None:
    state, meta = restored
    state = trainer.place(state)
    start_step = int(meta["step"])
    if start_step > total_steps:
      raise ValueError(f"{folder} holds a checkpoint at step {start_step}, past this config's {total_steps} "
                       f"steps: use another workdir, or train for at least {start_step} steps")
    logging.info("resumed from step %d in %s", start_step, folder)
  else:
    state = trainer.init(config.seed)
    if config.init.checkpoint:
      state = trainer.place(finetune.init_from(trainer.host_state(state), config, trainer.model))
    start_step = 0
  if jax.process_index() == 0:  # only once the workdir's checkpoints were accepted
    folder.write_config(config.to_dict())

  train_iter = data.train(start_step, stop_step=total_steps + 1)  # +1: a finished run's FLOP count
  bar = {"auto": None, "on": True, "off": False}[config.progress_bar]
  writer = writers.RunWriter(folder, total_steps=total_steps, start_step=start_step,
                             global_batch_size=config.batch_size, progress_bar=bar)
  eval_split = config.dataset.eval_split
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
      writer.write(step, _host_scalars(metrics, trainer.layout), kind="train")
    if last or (config.eval_every_steps and step % config.eval_every_steps == 0):
      eval_metrics, evaluated_at = trainer.evaluate(state, data.eval(eval_split)), step
      writer.write(step, eval_metrics, kind="eval")
    if checkpointer.should_save(step):
      _check_finite(step, metrics, checkpointer)
      writer.flush()  # every record up to this checkpoint is in metrics.jsonl before the checkpoint exists
      # Keep-best ranks only checkpoints evaluated at their own step (align save and eval schedules).
      checkpointer.save(step, trainer.layout.host_copy(state), meta={**expected_meta, "step": step},
                        metrics={"top1": eval_metrics["top1"]} if evaluated_at == step else None)
    writer.advance(step)
  checkpointer.wait()
  writer.close()
  if step_gflop is None:  # Nothing left to train (a finished run re-started): count on one batch.
    batch = parallel.host_batch_to_global(next(train_iter), trainer.layout)
    step_gflop, eval_gflop = (f / 1e9 for f in trainer.compile(state, batch))
  if not eval_metrics:
    eval_metrics = trainer.evaluate(state, data.eval(eval_split))
  summary = {
      "step": total_steps, "name": config.name or config.model_name, "model": config.model_name,
      **{f"eval_{k}": v for k, v in eval_metrics.items()},
      "train_gflop_per_step": step_gflop, "train_gflop_total": step_gflop * total_steps,
      "eval_gflop_per_example": eval_gflop,
      "params": int(sum(np.prod(a.shape) for a in jax.tree.leaves(trainer.abstract_params))),
      "seconds_this_start": time.perf_counter() - start_time,
  }
  if jax.process_index() == 0:
    folder.write_summary(summary)
  logging.info("done: %s step %d, eval top-1 %.4f, top-5 %.4f, loss %.4f, %.1f train GFLOP total, %s",
               summary["name"], total_steps, eval_metrics["top1"], eval_metrics["top5"], eval_metrics["loss"],
               summary["train_gflop_total"], folder)
  return trainer.host_state(state), summary


# Config keys that may differ between two starts of the same run (paths, caching, display, the job's processes).
_VOLATILE_KEYS = ("dataset.data_dir", "dataset.cache", "init.checkpoint", "progress_bar")
_VOLATILE_PREFIXES = ("distributed.", "slice.")
# What a resumed run may change besides: how long it trains, and how often it logs, evaluates and saves.
_RESUMABLE_KEYS = ("total_steps", "num_epochs", "log_every_steps", "eval_every_steps", "checkpoint.save_every_steps",
                   "checkpoint.max_to_keep", "checkpoint.async_save")


def _flat(config: dict) -> dict:
  flat = flax.traverse_util.flatten_dict(json.loads(json.dumps(config)), sep=".")  # tuples -> lists
  return {k: v for k, v in flat.items() if k not in _VOLATILE_KEYS and not k.startswith(_VOLATILE_PREFIXES)}


def check_same_run(folder: RunFolder, config: ml_collections.ConfigDict, *, may_differ: tuple[str, ...] = ()):
  """ValueError, touching nothing, when `folder` holds a run of another config: one that differs in a key other
  than the volatile ones (`dataset.data_dir`, `dataset.cache`, `init.checkpoint`, `progress_bar`,
  `distributed.*`, `slice.*`) and `may_differ`. A field added to `configs.base_config` since the run was written
  counts as its default."""
  saved = folder.read_config()
  if saved is None:
    return
  saved = {**_flat(configs.base_config().to_dict()), **_flat(saved)}
  wanted = _flat(config.to_dict())
  differ = sorted((k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k) and k not in may_differ),
                  key=lambda k: (k.count("."), k))  # model_name before the model's fields
  if differ:
    shown = "; ".join(f"{k}: {saved.get(k)!r} there, {wanted.get(k)!r} here" for k in differ[:6])
    raise ValueError(f"{folder} holds a run of another config ({shown}{'; ...' if len(differ) > 6 else ''}); "
                     "use a new workdir, or delete that folder to start it again")


def train_once(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """The summary of a finished run of `config` in `workdir`, training it first unless it finished (a
  half-finished run resumes). For the members of a study: re-running the study skips what is done.

  Raises ValueError, touching nothing, when `workdir` holds a run of another config (`check_same_run`; here
  even the length of training counts).
  """
  folder = RunFolder(workdir)
  check_same_run(folder, config)
  summary = folder.read_summary()
  if summary is None:
    _, summary = train_and_evaluate(config, workdir)
  return summary


def _host_scalars(metrics: dict, layout: parallel.Layout) -> dict[str, float]:
  return {k: float(v) for k, v in jax.device_get(layout.one_copy(metrics)).items()}


def _check_finite(step: int, metrics: Any, checkpointer) -> None:
  """Stops the run at the first non-finite loss, naming the step; the checkpoints on disk stay as they are."""
  loss = np.asarray(jax.device_get(metrics["loss"]))
  if not np.all(np.isfinite(loss)):
    checkpointer.wait()
    raise FloatingPointError(
        f"loss is {loss.ravel()[0]} at step {step}; training stopped. The last good checkpoint "
        f"(step {checkpointer.latest_step()}) is kept in {checkpointer.directory}")

"""`train_and_evaluate_detr(config, workdir)`: DETR trained on a tfds detection dataset, scored by COCO AP.

The classification loop's shape (train/loop.py), smaller: the same run folder (config.json, metrics.jsonl,
tensorboard/, checkpoints/, summary.json last), workdir lock, orbax checkpoints and writers. Resumable: a start
restores the newest checkpoint (parameters, the frozen BatchNorm constants, optimizer state, step; data order and
dropout keys are functions of (seed, step)), so a killed run restarted ends where an uninterrupted one would.

Optimizer (DETR's): AdamW with decoupled weight decay on every trained parameter, the backbone at
`backbone_lr_factor` times the rate, the stem and first stage frozen (`detr.trainable_mask`: their gradients are
zeroed before clipping and they never move), the gradient of the trained parameters clipped to a global norm, the
rate divided by 10 after `decay_at` of the steps. `init.backbone` (a workdir of a package ResNet classifier, e.g.
`experiments/detr_scenes.py:backbone`) starts the backbone from its weights (checkpoints.detr_backbone_from_resnet).

Data-parallel with jit over a mesh of every device of every host (parameters replicated): each host reads its own
shard of the data (detection_pipeline's 'split' mode), each device solves the Hungarian matching of its own images
on its host (detr_loss.per_device_match), and `config.distributed` joins a multi-process job as the classification
loop does. Evaluation hands every host the detections of the whole global batch, so each scores the full split.

Evaluation: per image, the class probabilities are a softmax over K+1 logits with the no-object one dropped; each
query's score is its best class's probability, the `eval_max_detections` best queries are kept, and pycocotools
scores them on the eval split (metrics 'AP', 'AP50', ..., coco_eval.METRICS; NaN where undefined).
"""
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vit_video import checkpoints
from vit_video.data import coco_eval, detection_pipeline
from vit_video.models import detr
from vit_video.train import checkpointing, optim, parallel, run_lock, writers
from vit_video.train.detr_loss import detr_loss, match, per_device_match
from vit_video.train.run_folder import RunFolder

META = {"model": "detr"}
# Config keys a resumed run may change: paths, and how long it trains and how often it logs, evaluates and saves.
_MAY_DIFFER = ("dataset.data_dir", "total_steps", "log_every_steps", "eval_every_steps",
               "checkpoint.save_every_steps", "checkpoint.max_to_keep", "checkpoint.async_save", "init.backbone",
               "distributed.initialize", "distributed.coordinator_address", "distributed.num_processes",
               "distributed.process_id")


@flax.struct.dataclass
class DetrState:
  """Everything a resumed run needs. constants: the frozen BatchNorm ("constants" collection), never trained;
  rng: key data of the run's base key (step s uses fold_in(rng, s))."""
  step: jax.Array
  params: Any
  constants: Any
  opt_state: Any
  rng: jax.Array


def build_model(config: ml_collections.ConfigDict) -> detr.DETR:
  return detr.DETR(num_classes=config.num_classes, in_channels=config.dataset.channels, **config.model)


def param_groups(params: Any) -> Any:
  """'frozen' (detr.trainable_mask False), 'backbone' or 'transformer' (the rest) for every leaf."""
  trainable = detr.trainable_mask(params)
  return jax.tree_util.tree_map_with_path(
      lambda path, t: "frozen" if not t else "backbone" if path[0].key == "backbone" else "transformer", trainable)


def make_optimizer(opt: ml_collections.ConfigDict, total_steps: int) -> tuple[optax.GradientTransformation,
                                                                             optax.Schedule]:
  """DETR's optimizer (module docstring) and the transformer's learning-rate schedule."""
  schedule = optim.make_schedule("step", base_lr=opt.learning_rate, total_steps=total_steps, warmup_steps=0,
                                 step_boundaries=(opt.decay_at,), step_factor=0.1)
  adamw = lambda lr: optax.adamw(lr, b1=0.9, b2=0.999, weight_decay=opt.weight_decay)  # noqa: E731
  keep = optax.identity()
  tx = optax.chain(
      optax.multi_transform({"frozen": optax.set_to_zero(), "backbone": keep, "transformer": keep}, param_groups),
      optax.clip_by_global_norm(opt.grad_clip_norm),  # over the trained parameters' gradient only
      optax.multi_transform({"frozen": optax.set_to_zero(), "transformer": adamw(schedule),
                             "backbone": adamw(lambda step: schedule(step) * opt.backbone_lr_factor)}, param_groups))
  return tx, schedule


def init_state(model: detr.DETR, tx: optax.GradientTransformation, rng: jax.Array, image_shape) -> DetrState:
  """A fresh state for images of `image_shape` (S, S, C); pure, wrap in jit."""
  params_rng, base_rng = jax.random.split(rng)
  variables = model.init(params_rng, jnp.zeros((1, *image_shape)), train=False)
  return DetrState(step=jnp.zeros((), jnp.int32), params=variables["params"], constants=variables["constants"],
                   opt_state=tx.init(variables["params"]), rng=jax.random.key_data(base_rng))


def make_train_step(model: detr.DETR, tx: optax.GradientTransformation, schedule: optax.Schedule,
                    loss: ml_collections.ConfigDict, matcher: Callable = match
                    ) -> Callable[[DetrState, dict], tuple[DetrState, dict]]:
  """(state, {'image', ('pixel_mask'), 'boxes', 'labels', 'box_mask'}) -> (state, {'loss', 'ce', 'l1', 'giou',
  'grad_norm', 'learning_rate'}): the final layer's loss parts, the total over the layers, the trained parameters'
  gradient norm before clipping. `matcher`: detr_loss.match, or per_device_match under jit on a mesh."""

  def train_step(state: DetrState, batch: dict) -> tuple[DetrState, dict]:
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

    def loss_fn(params):
      out = model.apply({"params": params, "constants": state.constants}, batch["image"], train=True,
                        mask=batch.get("pixel_mask"), rngs={"dropout": rng})
      return detr_loss(out, batch["labels"], batch["boxes"], batch["box_mask"], matcher=matcher, **loss)

    (total, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    trained = jax.tree.leaves(jax.tree.map(lambda g, t: g if t else None, grads, detr.trainable_mask(grads)))
    metrics = {"loss": total, **{k: parts[k] for k in ("ce", "l1", "giou")},
               "grad_norm": optax.tree.norm(trained), "learning_rate": schedule(state.step)}
    return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                         opt_state=opt_state), metrics

  return train_step


def make_eval_step(model: detr.DETR) -> Callable[[DetrState, dict], dict]:
  """(state, {'image', ('pixel_mask'), 'image_id', 'mask'}) -> {'logits' [B,Q,K+1], 'boxes' [B,Q,4]} of the final
  decoder layer, with the batch's 'image_id' [B] and 'mask' [B] passed through (every host gets the global
  batch's)."""

  def eval_step(state: DetrState, batch: dict) -> dict:
    out = model.apply({"params": state.params, "constants": state.constants}, batch["image"], train=False,
                      mask=batch.get("pixel_mask"))
    return {"logits": out["logits"], "boxes": out["boxes"], "image_id": batch["image_id"], "mask": batch["mask"]}

  return eval_step


def postprocess(logits: np.ndarray, boxes: np.ndarray, max_detections: int) -> tuple[np.ndarray, ...]:
  """[B,Q,K+1] logits, [B,Q,4] boxes -> the `max_detections` best queries per image, best first: boxes [B,D,4],
  scores [B,D] (the best class's softmax probability, no-object dropped) and labels [B,D] (that class)."""
  logits = logits.astype(np.float64)
  prob = np.exp(logits - logits.max(-1, keepdims=True))
  prob = prob[..., :-1] / prob.sum(-1, keepdims=True)  # [B,Q,K]: softmax over K+1, no-object dropped
  scores, labels = prob.max(-1), prob.argmax(-1)  # [B,Q]
  order = np.argsort(-scores, axis=1, kind="stable")[:, :max_detections]  # [B,D]
  take = lambda a: np.take_along_axis(a, order, axis=1)  # noqa: E731
  return np.take_along_axis(boxes, order[..., None], axis=1), take(scores), take(labels)


class Detector:
  """A run's model, optimizer and compiled steps on a mesh of `devices` (default: all)."""

  def __init__(self, config: ml_collections.ConfigDict, total_steps: int, *, devices: list | None = None):
    self.config, self.total_steps = config, total_steps
    self.model = build_model(config)
    self.tx, self.schedule = make_optimizer(config.optimizer, total_steps)
    self.layout = parallel.make_layout("jit", devices=devices)
    parallel.check_batch_size(config.batch_size, self.layout.mesh.size)
    ds = config.dataset
    shape = (ds.image_size, ds.image_size, ds.channels)
    init = lambda rng: init_state(self.model, self.tx, rng, shape)  # noqa: E731
    self.abstract_state = jax.eval_shape(init, jax.random.key(0))
    self.shardings = self.layout.state_shardings(self.abstract_state)
    self._init = self.layout.compile_init(init, self.shardings)
    matcher = per_device_match(self.layout.mesh, parallel.DATA_AXIS)
    self.train_step = self.layout.compile_step(
        make_train_step(self.model, self.tx, self.schedule, config.loss, matcher), self.shardings,
        updates_state=True)
    self.eval_step = self.layout.compile_step(make_eval_step(self.model), self.shardings, updates_state=False)

  def init(self, seed: int) -> DetrState:
    return self._init(jax.random.key(seed))

  def place(self, state: DetrState) -> DetrState:
    """A host state (a restored checkpoint's numpy arrays, the same on every host) where the steps want it."""
    return self.layout.place(state, self.shardings)

  def init_backbone(self, state: DetrState, workdir: str) -> DetrState:
    """`state` with the backbone of the ResNet classifier trained in `workdir` (or a checkpoint folder of it)."""
    host = jax.device_get(state)
    variables = checkpoints.detr_backbone_from_resnet(checkpointing.restore_params(workdir),
                                                      {"params": host.params, "constants": host.constants})
    return self.place(host.replace(params=variables["params"], constants=variables["constants"]))

  def step(self, state: DetrState, batch: dict) -> tuple[DetrState, dict]:
    return self.train_step(state, parallel.host_batch_to_global(batch, self.layout))

  def evaluate(self, state: DetrState, batches, gt) -> dict[str, float]:
    """COCO metrics of the detections on every real image of `batches` (this host's shard of the eval split)
    against the ground truth `gt` (the whole split), and 'images', how many were scored: each host scores every
    host's detections."""
    dets, images = [], 0
    for batch in batches:
      inputs = {k: batch[k] for k in ("image", "pixel_mask", "image_id", "mask") if k in batch}
      out = jax.device_get(self.eval_step(state, parallel.host_batch_to_global(inputs, self.layout)))
      boxes, scores, labels = postprocess(out["logits"], out["boxes"], self.config.eval_max_detections)
      for i in np.flatnonzero(out["mask"]):
        images += 1
        image = gt.imgs[int(out["image_id"][i])]
        dets += coco_eval.detections(out["image_id"][i:i + 1], boxes[i:i + 1], scores[i:i + 1],
                                     labels[i:i + 1], height=image["height"], width=image["width"])
    return {**coco_eval.evaluate(gt, dets), "images": images}


def _flat(config: dict) -> dict:
  flat = flax.traverse_util.flatten_dict(json.loads(json.dumps(config)), sep=".")  # tuples -> lists
  return {k: v for k, v in flat.items() if k not in _MAY_DIFFER}


def train_and_evaluate_detr(config: ml_collections.ConfigDict, workdir: str, *,
                            detector: Detector | None = None) -> tuple[DetrState, dict]:
  """Trains `config` (experiments/detr_scenes.py) in `workdir`, resuming from its newest checkpoint; returns the
  final state and the summary (eval_AP, eval_AP50, ..., params, trained_params, seconds_this_start).

  `detector`: a `Detector(config, config.total_steps)` whose compiled steps to reuse (notebooks, tests); the
  train step holds a host callback (the matching), which XLA's persistent cache does not keep."""
  d = config.distributed
  if d.initialize:
    parallel.initialize_distributed(coordinator_address=d.coordinator_address, num_processes=d.num_processes,
                                    process_id=d.process_id)
  folder = RunFolder(workdir)
  ds = config.dataset
  if config.num_classes != len(detection_pipeline.class_names(ds.name, ds.data_dir)):
    raise ValueError(f"num_classes {config.num_classes} differs from the classes of {ds.name}")
  saved, wanted = _flat(folder.read_config() or config.to_dict()), _flat(config.to_dict())
  differ = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
  if differ:
    raise ValueError(f"{folder} holds a run of another config (keys {differ[:6]} differ); use a new workdir")
  if detector is None:
    detector = Detector(config, config.total_steps)
  elif detector.config.to_dict() != config.to_dict() or detector.total_steps != config.total_steps:
    raise ValueError("the detector was built for another config or length of training")
  folder.makedirs()
  with run_lock.hold(folder / run_lock.LOCK), checkpointing.Checkpointer(
      folder.checkpoints, save_every_steps=config.checkpoint.save_every_steps, total_steps=config.total_steps,
      max_to_keep=config.checkpoint.max_to_keep, async_save=config.checkpoint.async_save) as checkpointer:
    return _train(config, folder, detector, checkpointer)


def _train(config, folder: RunFolder, detector: Detector, checkpointer) -> tuple[DetrState, dict]:
  ds, total = config.dataset, config.total_steps
  # Host copies in and out: the state is replicated, so every host holds all of it (saving the device arrays would
  # cost orbax a program per device).
  restored = checkpointer.restore_latest(detector.abstract_state, expected_meta=META)
  if restored is None:
    state, start_step = detector.init(config.seed), 0
    if config.init.backbone:
      state = detector.init_backbone(state, config.init.backbone)
  else:
    state, start_step = detector.place(restored[0]), restored[1]["step"]
  if start_step > total:
    raise ValueError(f"{folder} holds a checkpoint at step {start_step}, past this config's {total} steps")
  if start_step:
    logging.info("resumed from step %d in %s", start_step, folder)
  if jax.process_index() == 0:
    folder.write_config(config.to_dict())
  common = dict(global_batch_size=config.batch_size, image_size=ds.image_size, channels=ds.channels,
                max_objects=ds.max_objects, keep_aspect_ratio=ds.keep_aspect_ratio,
                process_index=jax.process_index(), process_count=jax.process_count())
  train_iter = detection_pipeline.make_train_iterator(ds.name, ds.train_split, ds.data_dir, seed=config.seed,
                                                      start_step=start_step, stop_step=total, cache=ds.cache,
                                                      **common)
  gt = detection_pipeline.ground_truth(ds.name, ds.eval_split, ds.data_dir)
  evaluate = lambda: detector.evaluate(  # noqa: E731
      state, detection_pipeline.make_eval_iterator(ds.name, ds.eval_split, ds.data_dir, **common), gt)
  writer = writers.RunWriter(folder, total_steps=total, start_step=start_step, global_batch_size=config.batch_size)
  start_time, eval_metrics = time.perf_counter(), {}
  for step in range(start_step + 1, total + 1):
    state, metrics = detector.step(state, next(train_iter))
    if step % config.log_every_steps == 0 or step == total:
      scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
      if not np.isfinite(scalars["loss"]):
        raise FloatingPointError(f"loss is {scalars['loss']} at step {step}; the last good checkpoint is step "
                                 f"{checkpointer.latest_step()} in {checkpointer.directory}")
      writer.write(step, scalars, kind="train")
    if step == total or (config.eval_every_steps and step % config.eval_every_steps == 0):
      eval_metrics = evaluate()
      writer.write(step, eval_metrics, kind="eval")
    if checkpointer.should_save(step):
      writer.flush()  # every record up to this checkpoint is in metrics.jsonl before the checkpoint exists
      checkpointer.save(step, jax.device_get(state), meta={**META, "step": step})
    writer.advance(step)
  checkpointer.wait()
  writer.close()
  if not eval_metrics:  # a finished run started again
    eval_metrics = evaluate()
  count = lambda tree: int(sum(np.prod(a.shape) for a in jax.tree.leaves(tree)))  # noqa: E731
  trained = jax.tree.map(lambda a, t: a if t else None, detector.abstract_state.params,
                         detr.trainable_mask(detector.abstract_state.params))
  summary = {"step": total, "name": config.name, "model": "detr",
             **{f"eval_{k}": v for k, v in eval_metrics.items()},
             "params": count(detector.abstract_state.params), "trained_params": count(trained),
             "seconds_this_start": time.perf_counter() - start_time}
  if jax.process_index() == 0:
    folder.write_summary(summary)
  logging.info("done: %s step %d, eval AP %.4f, AP50 %.4f, %s", config.name, total, eval_metrics["AP"],
               eval_metrics["AP50"], folder)
  return state, summary

"""A dry run: could `config` train on a slice of N devices on H hosts? Answered without a device or a step.

    python -m vit_video.main --config=experiments/video_transformer_pods.py:model=vivit_b16x2_fe \
        --workdir=unused --dry_run                        # at the slice the config declares (config.slice)
    ... --dry_run --devices=256 [--hosts=32]              # at any other size
    ... --dry_run --dry_run_compile                       # also XLA's activation memory (compiles one step)

`plan(config, devices=N, hosts=H)` builds the model and the optimizer state abstractly (`jax.eval_shape`), lays
them out on an `AbstractMesh` of N devices with the config's parallelism and FSDP setting, and checks what a pod
would find out after start-up: the model takes the config's inputs; the train and eval batches split over the
devices and the hosts; the schedule fits the run's steps; and (`check_data`) the data_dir holds the dataset, its
splits and classes (and the flow a two-stream config reads), with a train shard for every host under 'split'
sharding. It reports parameters, bytes per device of parameters, optimizer state, EMA and BatchNorm statistics,
and with `compile_step` XLA's temporary memory of one device's train step (the step compiled for one local device
at the per-device batch: the activations of pure data parallelism; FSDP adds each layer's gathered parameters on
top). Every problem is collected, not just the first.

Detection configs (`config.task == "detection"`, train/detection.py: DETR) are planned the same way over their own
program: the train and eval batches over devices and hosts, the detection dataset's features, classes and host
shards, `max_objects` against the queries, the parameters (trained and frozen) and the replicated state per device.
"""
import dataclasses
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vit_video.data import builders, iterators, video_pipeline
from vit_video.data.common import shard_sizes
from vit_video.data.pipeline import HOST_SHARDINGS
from vit_video.train import loop, parallel

_STATE_PARTS = (("params", "params"), ("opt_state", "optimizer state"), ("ema_params", "EMA"),
                ("batch_stats", "BatchNorm statistics"))
_DETECTION_PARTS = (("params", "params"), ("constants", "constants"), ("opt_state", "optimizer state"))


@dataclasses.dataclass
class Plan:
  """What a dry run found: `lines` to print, and `problems` (empty: the config can run on the slice)."""
  lines: list[str] = dataclasses.field(default_factory=list)
  problems: list[str] = dataclasses.field(default_factory=list)
  bytes_per_device: dict[str, int] = dataclasses.field(default_factory=dict)  # by _STATE_PARTS' names
  activation_bytes: int | None = None  # XLA's temp bytes of one device's train step (compile_step)

  def add(self, name: str, text: str) -> None:
    self.lines.append(f"  {name:<14}{text}")

  def report(self) -> str:
    if self.problems:
      tail = [f"{len(self.problems)} problem(s):", *(f"  - {p}" for p in self.problems)]
    else:
      tail = ["no problems: the config fits this slice"]
    return "\n".join([*self.lines, *tail])


def declared_slice(config: ml_collections.ConfigDict) -> tuple[int, int]:
  """(devices, hosts) of `config.slice`; (0, 0) when the config declares none."""
  declared = config.get("slice")
  return (0, 0) if declared is None else (int(declared.devices), int(declared.hosts))


def slice_size(config: ml_collections.ConfigDict, devices: int = 0, hosts: int = 0) -> tuple[int, int]:
  """The slice to plan for: `devices` (0: the declared one, else this job's), `hosts` (0: the declared hosts if
  `devices` is the declared count, else as many hosts as keep the declared devices per host, else 1)."""
  declared_devices, declared_hosts = declared_slice(config)
  if not devices:
    devices, hosts = (declared_devices, hosts or declared_hosts) if declared_devices else (
        jax.device_count(), hosts or jax.process_count())
  elif not hosts:
    per_host = declared_devices // declared_hosts if declared_devices and declared_hosts else devices
    hosts = max(1, devices // per_host) if devices % per_host == 0 else 1
  return devices, hosts


def _bytes(tree, layout: parallel.Layout) -> int:
  """Bytes of one device's share of a pytree of ShapeDtypeStructs laid out by `layout` (whole under pmap)."""
  total = 0
  for leaf in jax.tree.leaves(tree):
    shape = leaf.shape if layout.parallelism == "pmap" else layout.param_sharding(leaf.shape).shard_shape(leaf.shape)
    total += math.prod(shape) * np.dtype(leaf.dtype).itemsize
  return total


def _size(n: float) -> str:
  for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
    if n < 1024 or unit == "TiB":
      return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
    n /= 1024


def _check_batches(config, devices: int, hosts: int, plan: Plan, video: bool) -> None:
  b = config.batch_size  # train and eval alike: the global batch of examples, or of views
  if b % devices:
    plan.problems.append(f"batch_size {b} is not divisible by the {devices} devices: choose a multiple of "
                         f"{devices} (or another slice)")
  if b % hosts:
    plan.problems.append(f"batch_size {b} is not divisible by the {hosts} hosts")
  per_host, per_device = b / hosts, b / devices
  plan.add("train batch", f"{b} global, {per_host:g} per host, {per_device:g} per device")
  if video:
    v = config.video
    views = v.eval_num_clips * v.eval_num_crops
    plan.add("eval batch", f"{b} views ({v.eval_num_clips} clips x {v.eval_num_crops} crops = {views} per video, "
                           f"{b / views:.3g} videos per step), {per_device:g} views per device")
  else:
    plan.add("eval batch", f"{b} examples, {per_device:g} per device")


def _check_data(config, hosts: int, plan: Plan) -> int | None:
  """Checks the dataset, splits, classes and flow; returns the train split's size (None if unknown)."""
  ds, v = config.dataset, config.video
  try:
    builder = builders.check_prepared(ds.name, ds.data_dir)
  except ValueError as e:
    plan.add("data", f"{ds.name} in {ds.data_dir}: not prepared")
    plan.problems.append(str(e))
    return None
  try:
    label_key = v.label_key if "video" in iterators.input_keys(config) else "label"
    if label_key != "label" or v.flow:
      video_pipeline.video_builder(ds.name, ds.train_split, ds.data_dir, label_key, v.flow)
    classes = builders.num_classes(ds.name, ds.data_dir, label_key)
    if classes != config.num_classes:
      plan.problems.append(f"num_classes {config.num_classes} differs from the {classes} classes of {ds.name}'s "
                           f"{label_key!r}")
  except ValueError as e:
    plan.problems.append(str(e))
  sizes = {}
  for split in (ds.train_split, ds.eval_split):
    try:
      sizes[split] = builders.num_examples(ds.name, split, ds.data_dir)
    except ValueError as e:
      plan.problems.append(str(e))
  plan.add("data", f"{ds.name} in {ds.data_dir}: " + ", ".join(f"{s} {n:,}" for s, n in sizes.items()))
  train = sizes.get(ds.train_split)
  if train is not None and ds.host_sharding == "split" and train < hosts:
    plan.problems.append(f"host_sharding 'split': the {train:,} training examples leave some of the {hosts} hosts "
                         "without a shard")
  return train


def plan(config: ml_collections.ConfigDict, *, devices: int = 0, hosts: int = 0, check_data: bool = True,
         compile_step: bool = False) -> Plan:
  """Plans `config` on `devices` devices of `hosts` hosts (0: `slice_size`'s defaults); see the module docstring."""
  if config.get("task") == "detection":
    return _plan_detection(config, devices=devices, hosts=hosts, check_data=check_data, compile_step=compile_step)
  devices, hosts = slice_size(config, devices, hosts)
  p = Plan()
  p.lines.append(f"dry run of {config.name or config.model_name} ({config.model_name}) on {devices} devices, "
                 f"{hosts} host(s) ({_which_slice(config, devices, hosts)}); {config.parallelism}, fsdp "
                 f"{'on' if config.fsdp else 'off'}, compute {config.dtype}")
  if devices < 1 or hosts < 1 or devices % hosts:
    p.problems.append(f"{devices} devices do not split evenly over {hosts} hosts")
    return p
  if config.dataset.host_sharding not in HOST_SHARDINGS:
    p.problems.append(f"dataset.host_sharding {config.dataset.host_sharding!r} is not one of {HOST_SHARDINGS}")
  try:
    layout = parallel.abstract_layout(config.parallelism, fsdp=config.fsdp, num_devices=devices)
    video = "video" in iterators.input_keys(config)
  except ValueError as e:
    p.problems.append(str(e))
    return p
  _check_batches(config, devices, hosts, p, video)
  train_examples = _check_data(config, hosts, p) if check_data else None
  if config.total_steps > 0:
    total_steps, how = int(config.total_steps), "total_steps"
  elif train_examples is not None and train_examples >= config.batch_size:
    total_steps = loop.total_steps(config, train_examples)
    how = f"{config.num_epochs:g} epochs of {train_examples:,}"
  else:
    total_steps, how = None, f"{config.num_epochs:g} epochs of a split of unknown size"
  accum = config.optimizer.grad_accum_steps
  # Unknown (no data to count): a length that any warm-up and step schedule fits.
  planned_steps = total_steps or max(config.optimizer.warmup_steps + 1, 1000) * max(accum, 1)
  try:
    program = loop.build_program(config, planned_steps, axis_name=layout.axis_name)
  except ValueError as e:
    p.problems.append(str(e))
    return p
  warmup = config.optimizer.warmup_steps
  p.add("steps", f"{total_steps:,} ({how}), warm-up {warmup:,}" if total_steps else f"unknown ({how})")
  if total_steps and warmup * config.optimizer.grad_accum_steps >= total_steps:
    p.problems.append(f"optimizer.warmup_steps {warmup} is not below the run's {total_steps} steps")
  params = sum(math.prod(a.shape) for a in jax.tree.leaves(program.abstract_params))
  p.add("parameters", f"{params:,}")
  state = program.abstract_state
  for field, _ in _STATE_PARTS:
    p.bytes_per_device[field] = _bytes(getattr(state, field), layout)
  sharded = sum(1 for a in jax.tree.leaves(state.params) if any(layout.param_sharding(a.shape).spec))
  p.add("per device", ", ".join(f"{name} {_size(p.bytes_per_device[field])}" for field, name in _STATE_PARTS)
        + f": {_size(sum(p.bytes_per_device.values()))}"
        + (f" ({sharded} of {len(jax.tree.leaves(state.params))} parameter arrays sharded)" if config.fsdp else ""))
  if compile_step and config.batch_size % devices == 0:
    p.activation_bytes = _activation_bytes(config, program.input_shapes, config.batch_size // devices,
                                           planned_steps)
    p.add("activations", f"{_size(p.activation_bytes)} per device (XLA's temporaries of one device's train step "
                         f"at {config.batch_size // devices} per device)")
  return p


def _which_slice(config, devices: int, hosts: int) -> str:
  declared = declared_slice(config)
  if (devices, hosts) == declared:
    return "the declared slice"
  return f"declared: {declared[0]} devices, {declared[1]} host(s)" if declared[0] else "no slice declared"


def _check_detection_data(config, hosts: int, plan: Plan) -> None:
  from vit_video.data import detection_pipeline  # noqa: PLC0415  (pycocotools only for detection)
  ds = config.dataset
  try:
    builder = detection_pipeline.detection_builder(ds.name, ds.data_dir)
  except ValueError as e:
    plan.add("data", f"{ds.name} in {ds.data_dir}: not usable")
    plan.problems.append(str(e))
    return
  classes = len(builder.info.features["objects"]["label"].names)
  if classes != config.num_classes:
    plan.problems.append(f"num_classes {config.num_classes} differs from the {classes} object classes of {ds.name}")
  sizes = {}
  for split in (ds.train_split, ds.eval_split):
    try:
      sizes[split] = min(shard_sizes(builder, split, hosts))
    except (KeyError, ValueError) as e:
      plan.problems.append(f"split {split!r} is not a split of {ds.name}: {e}")
  plan.add("data", f"{ds.name} in {ds.data_dir}: " + ", ".join(f"{s} {n:,} per host (at least)"
                                                                  for s, n in sizes.items()))
  if sizes.get(ds.train_split) == 0:
    plan.problems.append(f"split {ds.train_split!r} leaves some of the {hosts} hosts without training images")


def _plan_detection(config, *, devices: int, hosts: int, check_data: bool, compile_step: bool) -> Plan:
  """The dry run of a detection config (module docstring)."""
  from vit_video.models import detr  # noqa: PLC0415
  from vit_video.train import detection  # noqa: PLC0415  (pycocotools only for detection)
  devices, hosts = slice_size(config, devices, hosts)
  p = Plan()
  p.lines.append(f"dry run of {config.name} (DETR, {config.model.num_queries} queries) on {devices} devices, "
                 f"{hosts} host(s) ({_which_slice(config, devices, hosts)}); jit, parameters replicated")
  if devices < 1 or hosts < 1 or devices % hosts:
    p.problems.append(f"{devices} devices do not split evenly over {hosts} hosts")
    return p
  _check_batches(config, devices, hosts, p, video=False)
  ds = config.dataset
  if ds.max_objects > config.model.num_queries:
    p.problems.append(f"dataset.max_objects {ds.max_objects} exceeds model.num_queries {config.model.num_queries}: "
                      "an image's targets beyond the queries would never be matched")
  if check_data:
    _check_detection_data(config, hosts, p)
  if not 0 < config.optimizer.decay_at <= 1:
    p.problems.append(f"optimizer.decay_at {config.optimizer.decay_at} is not a fraction of the run in (0, 1]")
  p.add("steps", f"{config.total_steps:,}, the rate divided by 10 after "
                 f"{round(config.total_steps * config.optimizer.decay_at):,}")
  try:
    model = detection.build_model(config)
    tx, schedule = detection.make_optimizer(config.optimizer, config.total_steps)
    shape = (ds.image_size, ds.image_size, ds.channels)
    state = jax.eval_shape(lambda rng: detection.init_state(model, tx, rng, shape), jax.random.key(0))
  except ValueError as e:
    p.problems.append(str(e))
    return p
  count = lambda tree: sum(math.prod(a.shape) for a in jax.tree.leaves(tree))  # noqa: E731
  trained = jax.tree.leaves(jax.tree.map(lambda a, t: a if t else None, state.params,
                                         detr.trainable_mask(state.params)))
  p.add("parameters", f"{count(state.params):,} ({count(trained):,} trained, the rest frozen; "
                      f"{count(state.constants):,} frozen BatchNorm constants)")
  layout = parallel.abstract_layout("jit", num_devices=devices)
  for field, _ in _DETECTION_PARTS:
    p.bytes_per_device[field] = _bytes(getattr(state, field), layout)
  p.add("per device", ", ".join(f"{name} {_size(p.bytes_per_device[field])}" for field, name in _DETECTION_PARTS)
        + f": {_size(sum(p.bytes_per_device.values()))} (replicated)")
  if compile_step and config.batch_size % devices == 0:
    b, m = config.batch_size // devices, ds.max_objects
    batch = {"image": jax.ShapeDtypeStruct((b, *shape), jnp.float32),
             "boxes": jax.ShapeDtypeStruct((b, m, 4), jnp.float32),
             "labels": jax.ShapeDtypeStruct((b, m), jnp.int32), "box_mask": jax.ShapeDtypeStruct((b, m), bool)}
    if ds.keep_aspect_ratio:
      batch["pixel_mask"] = jax.ShapeDtypeStruct((b, *shape[:2]), bool)
    step = detection.make_train_step(model, tx, schedule, config.loss)
    compiled = jax.jit(step, donate_argnums=0).lower(state, batch).compile()
    p.activation_bytes = int(compiled.memory_analysis().temp_size_in_bytes)
    p.add("activations", f"{_size(p.activation_bytes)} per device (XLA's temporaries of one device's train step "
                         f"at {b} per device)")
  return p


def _activation_bytes(config, input_shapes, per_device: int, total_steps: int) -> int:
  """XLA's temporary bytes of the train step compiled for one local device at `per_device` examples."""
  program = loop.build_program(config, total_steps)
  batch = {name: jax.ShapeDtypeStruct((per_device, *shape), jnp.float32)
           for name, shape in zip(program.model.inputs, input_shapes)}
  batch["label"] = jax.ShapeDtypeStruct((per_device,), jnp.int32)
  compiled = jax.jit(program.train_step, donate_argnums=0).lower(program.abstract_state, batch).compile()
  return int(compiled.memory_analysis().temp_size_in_bytes)

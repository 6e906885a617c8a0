"""The one shared base of every experiment config, with a comment on every field.

Experiment files (`experiments/*.py`) start from `base_config()`, set what differs, and return the config
locked, so a typo in a file or on the command line (`--config.optimizer.lr=...`) raises instead of being
ignored. This module is data: it imports nothing from the training code.
"""
import ml_collections
from ml_collections import config_dict


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = ""  # A label for the run in logs and summaries ("": the model name).
  c.seed = 0  # Base of every random stream: initialisation, dropout, data order, augmentation.
  c.model_name = "vit_ti16"  # A name in vit_video.models.MODELS.
  c.model = ml_collections.ConfigDict()  # Module attributes overriding the named variant (width, patch_size, ...).
  c.num_classes = 10  # K, the classifier's outputs; must equal the dataset's number of classes.
  c.dtype = "float32"  # Compute dtype, "float32" or "bfloat16"; parameters and logits stay float32.

  c.dataset = ml_collections.ConfigDict()
  c.dataset.name = "fashion_mnist_local"  # tfds name, read from data_dir (never downloaded at train time).
  c.dataset.data_dir = "data/tfds"  # tfds data_dir; `python -m vit_video.data.prepare NAME` fills it.
  c.dataset.train_split = "train"  # tfds split to train on (slicing syntax like "train[:90%]" works).
  c.dataset.eval_split = "test"  # tfds split to evaluate on; every example counted once (padded batches).
  c.dataset.image_size = 28  # Side the images are resized to.
  c.dataset.channels = 1  # C of the images; checked against the model's in_channels.
  c.dataset.shuffle_buffer_size = 0  # 0 shuffles what a host reads (split or shard) exactly each epoch, holding
  #   its encoded records in memory; else a local buffer of this many records.
  c.dataset.cache = config_dict.FieldReference("auto", field_type=object)  # "auto", True or False (so untyped):
  #   keep the encoded records a host reads in memory after the first epoch; "auto": only if tfds's recorded size
  #   of the host's share (the split, or its 1/P shard under "split") is at most 1 GiB (common.cache_records).
  c.dataset.host_sharding = "global"  # "global": the same global batches for any number of hosts (each host
  #   reads every record, decodes its rows); "split": each host reads only its 1/P slice (for pod-sized data).

  c.video = ml_collections.ConfigDict()  # Video datasets (a tfds `video` feature), read by data/video_pipeline.py.
  c.video.num_frames = 0  # T > 0: batches are clips [B,T,S,S,C] of T frames (S = dataset.image_size); 0: images.
  c.video.frame_stride = 1  # Frames between consecutive clip frames.
  c.video.label_key = "label"  # The ClassLabel feature to train on (moving_fmnist_actions: "object_label" too).
  c.video.flow = False  # Also read the stored optical flow: batches get 'flow' [B,S,S,2(T-1)], models (rgb, flow).
  c.video.min_crop_area = 0.8  # Training crops cover a fraction in [min_crop_area, 1] of the shorter side's square.
  c.video.flip = True  # Training clips mirrored left-right with probability 1/2 (flow x negated).
  c.video.eval_num_clips = 1  # Evaluation views per video: num_clips windows evenly spaced in time...
  c.video.eval_num_crops = 1  # ...times num_crops spatial crops (3: left/centre/right); their softmaxes averaged.

  c.augment = ml_collections.ConfigDict()
  c.augment.crop_padding = 0  # Zero-pad each side by this many pixels, then random-crop back (0: off).
  c.augment.flip = False  # Random horizontal flips.
  c.augment.randaugment_layers = 0  # RandAugment ops per image (0: off).
  c.augment.randaugment_magnitude = 10  # RandAugment strength in [0, 10].
  c.augment.mixup_alpha = 0.0  # Mixup Beta(alpha, alpha) per batch (0: off).
  c.augment.cutmix_alpha = 0.0  # CutMix Beta(alpha, alpha) per batch (0: off).

  c.batch_size = 128  # Global batch: split over all devices of all hosts; must be divisible by the device count.
  c.num_epochs = 1.0  # Training length in passes over the train split (used when total_steps is 0).
  c.total_steps = 0  # Training length in steps; overrides num_epochs when > 0.

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adamw"  # "adamw" or "sgd" (with momentum).
  c.optimizer.learning_rate = 1e-3  # Peak learning rate, reached after warm-up.
  c.optimizer.schedule = "cosine"  # Decay after warm-up: "cosine", "linear", "constant" or "step".
  c.optimizer.step_boundaries = ()  # "step": fractions of the run at which the rate is multiplied by step_factor.
  c.optimizer.step_factor = 0.1  # "step": the factor applied at each boundary.
  c.optimizer.warmup_steps = 0  # Linear warm-up from 0 over this many steps.
  c.optimizer.end_lr_factor = 0.0  # Final learning rate as a fraction of the peak.
  c.optimizer.weight_decay = 0.05  # Decoupled weight decay on kernels (not biases, norms, embeddings).
  c.optimizer.b1 = 0.9  # Adam beta1.
  c.optimizer.b2 = 0.999  # Adam beta2.
  c.optimizer.momentum = 0.9  # SGD momentum.
  c.optimizer.nesterov = False  # SGD Nesterov momentum.
  c.optimizer.grad_clip_norm = 1.0  # Clip gradients to this global norm (0: off).
  c.optimizer.grad_accum_steps = 1  # Accumulate gradients over this many batches per update (1: off).
  c.label_smoothing = 0.0  # Cross-entropy label smoothing s: targets (1 - s) one-hot + s / K.
  c.ema_decay = 0.0  # Exponential moving average of parameters (0: off); evaluation then uses the EMA.

  c.parallelism = "jit"  # "jit" (Mesh, sharded batch) or "pmap" (replicated state, pmean of gradients).
  c.fsdp = False  # jit only: shard large parameters and optimizer state over the data axis.
  c.slice = ml_collections.ConfigDict()  # The accelerator slice the config is written for (`main.py --dry_run`).
  c.slice.devices = 0  # Devices of all hosts as JAX counts them (TPU v4 chips, v3 cores, GPUs); 0: none declared.
  c.slice.hosts = 0  # Hosts (processes) of that slice.
  c.distributed = ml_collections.ConfigDict()
  c.distributed.initialize = False  # Join a multi-process job (jax.distributed.initialize, once per process).
  c.distributed.coordinator_address = ""  # host:port of process 0; "": the cluster's environment supplies the
  #   address, process count and id (TPU VMs, SLURM/Open MPI GPU clusters).
  c.distributed.num_processes = 0  # With coordinator_address: the number of processes in the job.
  c.distributed.process_id = -1  # With coordinator_address: this process's index in [0, num_processes).

  c.log_every_steps = 50  # Train metrics to metrics.jsonl / TensorBoard every this many steps.
  c.eval_every_steps = 0  # Evaluate every this many steps (0: only at the end).
  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.save_every_steps = 500  # Checkpoint every this many steps, and always at the last step.
  c.checkpoint.max_to_keep = 2  # Keep the newest N checkpoints...
  c.checkpoint.keep_best = True  # ...plus the one with the best eval top-1.
  c.checkpoint.async_save = True  # Write checkpoints in the background.
  c.init = ml_collections.ConfigDict()  # The initial parameters (train/finetune.py; surgery in checkpoints/).
  c.init.checkpoint = ""  # Another run's workdir (or its checkpoints or step folder; a local path or any URI, e.g.
  #   gs://) or a published .npz (vit_jax, big_vision, BiT); "": from scratch. Optimizer state starts afresh.
  c.init.model_name = ""  # The checkpoint's model when it is of another family than model_name: its image family,
  #   e.g. "vit_b16" for a ViViT or TimeSformer, "swin_t" for a Video Swin, "resnet50" for an I3D ("": the same).
  c.init.model = ml_collections.ConfigDict()  # .npz of another family only: init.model_name's attribute overrides
  #   (e.g. width/depth of a custom size; pool="gap" for a class-token-free big_vision ViT).
  c.init.inflation = ""  # 2D -> 3D kernels (tubelets, Video Swin patches, I3D convs): "central_frame", "average"
  #   or "repeat" (checkpoints/inflate.py); "": the family's paper default (ViViT central_frame, others average).
  c.init.reset_head = False  # Start from a fresh zero head even when the checkpoint's has the same shape.
  c.progress_bar = "auto"  # "auto" (a bar on an interactive terminal, log lines otherwise), "on" or "off".
  return c


def detection_base_config() -> ml_collections.ConfigDict:
  """The base of detection configs (DETR, trained by `vit_video.detection`, train/detection.py): DETR-R50's model
  and the paper's recipe (Carion et al. 2020); experiment files set the data, the sizes and the length."""
  c = ml_collections.ConfigDict()
  c.task = "detection"  # Trained by `vit_video.detection`; the dry run plans it as a detector.
  c.name = ""  # A label for the run in logs and the summary.
  c.seed = 0  # Base of every random stream: initialisation, dropout, data order.
  c.num_classes = 91  # K object classes; must equal the dataset's (the model adds "no object").
  c.model = ml_collections.ConfigDict()  # vit_video.models.detr.DETR attributes (besides K and in_channels);
  #   empty: DETR-R50 (100 queries, width 256, 6 + 6 layers, a ResNet-50 backbone).

  c.dataset = ml_collections.ConfigDict()
  c.dataset.name = ""  # A tfds detection dataset in data_dir (data/detection_pipeline.py lists the features).
  c.dataset.data_dir = "data/tfds"  # tfds data_dir; `python -m vit_video.data.prepare NAME` fills it.
  c.dataset.train_split = "train"  # Each host reads its tfds.even_splits shard.
  c.dataset.eval_split = "test"  # Every image scored once by COCO AP (pycocotools).
  c.dataset.image_size = 800  # Side S of the square images fed to the model.
  c.dataset.channels = 3  # C fed to the model (grey images are repeated to 3).
  c.dataset.max_objects = 100  # M: targets padded per image; an image with more stops the run.
  c.dataset.keep_aspect_ratio = False  # True: the longer side resized to S, padded to S x S, with a pixel mask
  #   (images of varied shapes, as coco); False: resized to S x S.
  c.dataset.cache = config_dict.FieldReference("auto", field_type=object)  # Keep the encoded training records a
  #   host reads in memory after the first epoch: True, False or "auto" (when they take at most 1 GiB).

  c.batch_size = 64  # Global batch, split over all devices of all hosts.
  c.total_steps = 1000  # Training length in steps.
  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.learning_rate = 1e-4  # AdamW, the transformer and heads.
  c.optimizer.backbone_lr_factor = 0.1  # The backbone's rate is this times the rate above (DETR: 0.1, for a
  #   pre-trained backbone).
  c.optimizer.weight_decay = 1e-4  # Decoupled (times the rate), on every trained parameter as DETR.
  c.optimizer.grad_clip_norm = 0.1  # Global norm of the trained parameters' gradient.
  c.optimizer.decay_at = 2 / 3  # The rate drops to a tenth after this fraction of the steps.
  c.loss = ml_collections.ConfigDict()  # vit_video.train.detr_loss.detr_loss's weights (matching and loss alike).
  c.loss.class_weight = 1.0
  c.loss.l1_weight = 5.0
  c.loss.giou_weight = 2.0
  c.loss.eos_coef = 0.1  # The weight of "no object" targets in the class loss.
  c.loss.aux_loss = True  # Also the loss of every earlier decoder layer's predictions.
  c.init = ml_collections.ConfigDict()
  c.init.backbone = ""  # The workdir (or checkpoint folder; any URI) of a ResNet classifier of this package with
  #   the backbone's shape: its weights start the backbone, its BatchNorm frozen as it is; "": random weights.

  c.eval_max_detections = 100  # Detections kept per image, highest scores first (COCO's AP counts up to 100).
  c.log_every_steps = 50  # Train metrics to metrics.jsonl / TensorBoard every this many steps.
  c.eval_every_steps = 0  # COCO evaluation every this many steps (0: only at the end).
  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.save_every_steps = 500  # Checkpoint every this many steps, and always at the last step.
  c.checkpoint.max_to_keep = 2  # Keep the newest N checkpoints.
  c.checkpoint.async_save = True  # Write checkpoints in the background.
  base = base_config()
  c.slice = base.slice  # The accelerator slice the config is written for (--dry_run), as in base_config.
  c.distributed = base.distributed  # Joining a multi-process job, as in base_config.
  return c


def pick_scale(arg: str | None, scales: tuple[str, ...], default: str) -> str:
  """The one scale a study config's argument names ("cpu", "tiny", ...), `default` when it names none.

  ValueError for an unknown word (parse_arg's, listing the valid ones) or for more than one scale.
  """
  a = parse_arg(arg, **{s: False for s in scales})
  picked = [s for s in scales if a[s]] or [default]
  if len(picked) > 1:
    raise ValueError(f"pick one scale of {', '.join(scales)}; got {', '.join(picked)}")
  return picked[0]


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses a config file's argument "variant=vit_s4,quick" into {variant: 'vit_s4', quick: True}.

  Every key must be one of `defaults` (whose values give the types); a bare word sets a bool to True.
  """
  values = dict(defaults)
  for part in filter(None, (arg or "").split(",")):
    key, _, value = part.partition("=")
    if key not in defaults:
      raise ValueError(f"unknown config argument {key!r} in {arg!r}; valid: {', '.join(sorted(defaults))}")
    kind = type(defaults[key])
    if not value:
      if kind is not bool:
        raise ValueError(f"config argument {key!r} needs a value ({key}=...)")
      values[key] = True
    else:
      if kind is bool and value.lower() not in ("1", "true", "yes", "0", "false", "no"):
        raise ValueError(f"config argument {key}={value!r} is not a boolean (true/false)")
      values[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
  return ml_collections.ConfigDict(values)


MOVING_FMNIST_LABELS = {"motion": ("label", 10), "object": ("object_label", 10)}  # label -> (feature, classes)
MOVING_FMNIST_LABEL_NOTES = "Motion: the 10 motions (chance 10%); object: the 10 Fashion-MNIST classes."


def moving_fmnist_config(label: str, *, frames: int, stride: int, epochs: float, tiny: bool,
                         data_dir: str) -> ml_collections.ConfigDict:
  """The one recipe of the video comparisons on moving Fashion-MNIST actions (experiments/video_classics.py,
  experiments/video_transformers.py); the caller sets name, model_name and model.

  label "motion" (the 10 motions) or "object" (the item's Fashion-MNIST class); clips of `frames` frames at
  `stride`; batch 64, AdamW 1e-3 with 50 warm-up steps and cosine decay, weight decay 0.05, label smoothing 0.1,
  crops of 80-100% area, flips for the object label only (a mirrored "left" clip is a "right" one); evaluation
  on the test split with 2 clips x 1 crop per video; a checkpoint each epoch (8,000 / 64 = 125 steps).
  tiny: the `tiny` builder config (6 frames of 20x20) and a 6-step run, for the tests.
  """
  if label not in MOVING_FMNIST_LABELS:
    raise ValueError(f"unknown label {label!r}; valid: {', '.join(MOVING_FMNIST_LABELS)}")
  c = base_config()
  c.dataset.name = "moving_fmnist_actions/tiny" if tiny else "moving_fmnist_actions"
  c.dataset.data_dir = data_dir
  c.dataset.image_size = 20 if tiny else 32
  c.dataset.channels = 1
  c.dataset.eval_split = "test"
  c.video.num_frames, c.video.frame_stride = frames, stride
  c.video.label_key, c.num_classes = MOVING_FMNIST_LABELS[label]
  c.video.min_crop_area = 0.8
  c.video.flip = label == "object"
  c.video.eval_num_clips = 2
  c.video.eval_num_crops = 1
  c.batch_size = 64
  c.num_epochs = epochs
  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 50
  c.optimizer.weight_decay = 0.05
  c.label_smoothing = 0.1
  c.log_every_steps = 50
  c.checkpoint.save_every_steps = 125
  c.progress_bar = "off"
  if tiny:
    c.batch_size, c.total_steps = 8, 6
    c.optimizer.warmup_steps = 2
    c.log_every_steps = 2
    c.checkpoint.save_every_steps, c.checkpoint.async_save = 3, False
  return c

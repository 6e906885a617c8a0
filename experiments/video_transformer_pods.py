"""Paper-size video transformers on Kinetics-400/600 and Something-Something v2 (for TPU/GPU pods).

    python -m vit_video.main --config=experiments/video_transformer_pods.py:model=vivit_l16x2_fe,dataset=kinetics400 \
        --workdir=gs://.../vivit_fe_k400 --config.dataset.data_dir=gs://.../tfds
    python -m vit_video.main --config=experiments/video_transformer_pods.py:model=timesformer,dataset=ssv2 ...
    python -m vit_video.main --config=experiments/video_transformer_pods.py:model=mvit_v2_s,dataset=kinetics400 ...

Long clips (ViViT, TimeSformer): `--config.model.attention_implementation=chunked --config.model.remat=True` (the
same function with O(N) attention memory; benchmarks/long_clips.py measures what it saves).

Data (never downloaded at run time; prepare it first with the `video_folder` builder, split/class/*.mp4|webm):
  kinetics400, kinetics600  `video_folder/kinetics`: 25 fps, 250 frames (10 s), 256x340;
                            python -m vit_video.data.prepare video_folder/kinetics --manual_dir DIR
                            (a data_dir per dataset: the class folders decide the 400 or 600 labels).
  ssv2                      `video_folder/ssv2`: the source 12 fps, 72 frames, 256x340. SSv2 ships flat
                            NNNN.webm files and JSON labels: link them into split/<template>/ folders first.

Recipes (the papers' and their released configs'; what ours cannot do is said):
  vivit_*     Arnab et al. 2021 (scenic's configs): 32 frames at stride 2 (SSv2: stride 1), 224x224, 16x16x2
              tubelets; SGD momentum 0.9, lr 0.1 (SSv2 0.4) with 2.5 epochs of linear warm-up then cosine, no
              weight decay, gradients clipped at norm 1, batch 64; 30 epochs (SSv2 35, with stochastic depth 0.3
              and label smoothing 0.3); evaluation 4 clips x 3 crops. Their scale jitter (0.9-1.33) is
              approximated by crops of 45-100% area; their colour augmentation (Kinetics) and mixup and
              RandAugment (SSv2) are image-path options here and are left out. Initialise from a ViT image
              checkpoint: --config.init.checkpoint=<ViT-B/16 run or .npz> --config.init.model_name=vit_b16
              (central-frame tubelets; checkpoints.inflate_vit.vivit_from_vit).
  timesformer Bertasius et al. 2021 (divided space-time; their configs TimeSformer_divST_8x32_224 and the SSv2
              one): 8 frames at 224, sampled 1 in 32 on Kinetics (1 in 4 here on SSv2, where they spread the 8
              over the whole video by segments); SGD momentum 0.9, lr 0.005 divided by 10 at epochs 11 and 14 of 15,
              global batch 8, no gradient clipping; their coupled weight decay 1e-4 under momentum 0.9 is about
              decoupled 1e-3 here; crops of 50-100% area (their short side 256-320, crop 224); evaluation 1 clip x
              3 crops. Their head dropout 0.5 has no counterpart (dropout_rate acts in every block). Initialise
              from a ViT-B/16 the same way (init.model_name=vit_b16; checkpoints.inflate_vit.timesformer_from_vit).
  video_swin_* Liu et al. 2022: 32 frames at stride 2, 224, AdamW lr 1e-3 (their backbone's is 0.1x: no per-layer
              rates here), weight decay 0.05, 2.5 epochs of warm-up then cosine, batch 64, 30 epochs, no
              gradient clipping, drop path 0.1 / 0.2 / 0.3 for T / S / B (a port of the official configs uses
              0.1 for S: check before relying on it), random resized crops (8-100% area); evaluation 4 x 3. On
              SSv2 (their Swin-B recipe, from Kinetics-400 weights): 60 epochs, lr 3e-4, drop path 0.4, windows
              16 x 7 x 7, label smoothing 0.1, 1 x 3 views. Initialise from a
              2D Swin run (init.model_name=swin_b; checkpoints.inflate.video_swin_from_swin).
  mvit_*      Fan et al. 2021 (MViT-B 16x4) and Li et al. 2022 (MViTv2-S 16x4), from scratch on Kinetics: 16 frames
              at stride 4, 224x224 (the model's input_size fixes it); AdamW, their lr 1.6e-3 at batch 512 scaled
              linearly to 2e-4 at our batch 64, 30 epochs of linear warm-up then cosine over 200, weight decay
              0.05, drop path 0.2, label smoothing 0.1, crops of 8-100% area; evaluation 5 clips x 1 crop (their
              K400 protocol). Their mixup, cutmix, random erasing and repeated augmentation have no counterpart on
              clips here. (The recipe as we read the papers' appendices: check it before relying on it.) Import
              torchvision's weights with checkpoints.import_torchvision (mvit_v1_b, mvit_v2_s).
"""
import ml_collections

from vit_video import configs

# The slices the recipes are written for: a TPU v3-32 (32 cores on 4 hosts, 2 clips per core at batch 64), and
# for TimeSformer's global batch 8 the paper's one 8-GPU host (on a bigger slice scale batch and learning rate
# together, e.g. --config.batch_size=32 --config.optimizer.learning_rate=0.02; `--dry_run --devices=N` checks).
SLICES = {"default": (32, 4), "timesformer": (8, 1)}
DATASETS = {  # name -> (tfds name, classes, train split, eval split, train videos (about))
    "kinetics400": ("video_folder/kinetics", 400, "train", "validation", 240_000),
    "kinetics600": ("video_folder/kinetics", 600, "train", "validation", 392_000),
    "ssv2": ("video_folder/ssv2", 174, "train", "validation", 168_913),
}
# Models that take the long-clip options (attention_implementation, remat); listed so the locked config has them.
_LONG_CLIPS = dict(attention_implementation="einsum", remat=False)
MODELS = {  # name -> (model_name, model attributes)
    "vivit_b16x2_st": ("vivit_b16x2_st", _LONG_CLIPS),
    "vivit_b16x2_fe": ("vivit_b16x2_fe", _LONG_CLIPS),
    "vivit_b16x2_fsa": ("vivit_b16x2_fsa", _LONG_CLIPS),
    "vivit_b16x2_fdp": ("vivit_b16x2_fdp", _LONG_CLIPS),
    "vivit_l16x2_fe": ("vivit_l16x2_fe", _LONG_CLIPS),
    "timesformer": ("timesformer_b16_divided", _LONG_CLIPS),
    "video_swin_t": ("video_swin_t", dict(stochastic_depth_rate=0.1)),
    "video_swin_s": ("video_swin_s", dict(stochastic_depth_rate=0.2)),
    "video_swin_b": ("video_swin_b", dict(stochastic_depth_rate=0.3)),
    "mvit_v1_b": ("mvit_v1_b", dict(stochastic_depth_rate=0.2)),
    "mvit_v2_s": ("mvit_v2_s", dict(stochastic_depth_rate=0.2)),
}


def _vivit(c: ml_collections.ConfigDict, ssv2: bool) -> None:
  c.video.num_frames, c.video.frame_stride = 32, 1 if ssv2 else 2
  c.video.eval_num_clips = 4
  c.video.min_crop_area = 0.45
  c.optimizer.update(name="sgd", learning_rate=0.4 if ssv2 else 0.1, schedule="cosine", weight_decay=0.0,
                     grad_clip_norm=1.0)
  c.num_epochs = 35.0 if ssv2 else 30.0
  if ssv2:
    c.model.stochastic_depth_rate = 0.3
    c.label_smoothing = 0.3


def _timesformer(c: ml_collections.ConfigDict, ssv2: bool) -> None:
  c.video.num_frames, c.video.frame_stride = 8, 4 if ssv2 else 32
  c.video.eval_num_clips = 1
  c.video.min_crop_area = 0.5
  c.batch_size = 8
  c.optimizer.update(name="sgd", learning_rate=0.005, schedule="step", step_boundaries=(11 / 15, 14 / 15),
                     weight_decay=1e-3, grad_clip_norm=0.0)
  c.num_epochs = 15.0


def _video_swin(c: ml_collections.ConfigDict, ssv2: bool) -> None:
  c.video.num_frames, c.video.frame_stride = 32, 2
  c.video.eval_num_clips = 1 if ssv2 else 4
  c.video.min_crop_area = 0.08
  c.optimizer.update(name="adamw", learning_rate=3e-4 if ssv2 else 1e-3, schedule="cosine", weight_decay=0.05,
                     grad_clip_norm=0.0)
  c.num_epochs = 60.0 if ssv2 else 30.0
  if ssv2:
    c.model.stochastic_depth_rate = 0.4
    c.model.window_size = (16, 7, 7)
    c.label_smoothing = 0.1


def _mvit(c: ml_collections.ConfigDict, ssv2: bool) -> None:
  c.video.num_frames, c.video.frame_stride = 16, 4
  c.video.eval_num_clips, c.video.eval_num_crops = 5, 1
  c.video.min_crop_area = 0.08
  c.optimizer.update(name="adamw", learning_rate=2e-4, schedule="cosine", weight_decay=0.05, grad_clip_norm=0.0)
  c.label_smoothing = 0.1
  c.num_epochs = 200.0
  if ssv2:
    c.video.frame_stride = 2  # 16 frames over SSv2's shorter videos


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = configs.parse_arg(arg, model="vivit_b16x2_fe", dataset="kinetics400")
  if a.model not in MODELS:
    raise ValueError(f"unknown model {a.model!r}; valid: {', '.join(MODELS)}")
  if a.dataset not in DATASETS:
    raise ValueError(f"unknown dataset {a.dataset!r}; valid: {', '.join(DATASETS)}")
  model_name, model = MODELS[a.model]
  tfds_name, num_classes, train_split, eval_split, train_videos = DATASETS[a.dataset]
  ssv2 = a.dataset == "ssv2"
  c = configs.base_config()
  c.name = f"video_transformer_pods/{a.model}/{a.dataset}"
  c.model_name = model_name
  c.model = ml_collections.ConfigDict(model)
  c.num_classes = num_classes
  c.dtype = "bfloat16"
  c.dataset.name = tfds_name
  c.dataset.data_dir = "data/tfds"
  c.dataset.train_split, c.dataset.eval_split = train_split, eval_split
  c.dataset.image_size = 224
  c.dataset.channels = 3
  # Pod-sized input: each host reads its 1/P shard, shuffles 64 encoded videos at a time (tfds wrote the records
  # in a shuffled order; about 1.6 GB of Kinetics' PNG frames) and caches nothing (dataset.cache "auto").
  c.dataset.host_sharding = "split"
  c.dataset.shuffle_buffer_size = 64
  c.video.eval_num_crops = 3
  c.video.flip = not ssv2  # SSv2 has left/right classes ("pushing something from left to right")
  c.batch_size = 64
  c.optimizer.momentum = 0.9
  c.label_smoothing = 0.0
  recipe = (_vivit if a.model.startswith("vivit") else _timesformer if a.model == "timesformer" else
            _mvit if a.model.startswith("mvit") else _video_swin)
  recipe(c, ssv2)
  if recipe is not _timesformer:  # linear warm-up: 2.5 epochs (MViT: 30)
    c.optimizer.warmup_steps = round((30 if recipe is _mvit else 2.5) * train_videos / c.batch_size)
  c.log_every_steps = 100
  c.checkpoint.save_every_steps = 5000
  c.slice.devices, c.slice.hosts = SLICES["timesformer" if recipe is _timesformer else "default"]
  return c.lock()

"""Paper-size video transformers on Kinetics-400/600 and Something-Something v2 (for TPU/GPU pods).

    python -m vit_video.main --config=experiments/video_transformer_pods.py:model=vivit_l16x2_fe,dataset=kinetics400 \
        --workdir=gs://.../vivit_fe_k400 --config.dataset.data_dir=gs://.../tfds
    python -m vit_video.main --config=experiments/video_transformer_pods.py:model=timesformer,dataset=ssv2 ...

Long clips: add `--config.model.attention_implementation=chunked --config.model.remat=True` (the same function,
O(N) attention memory; benchmarks/long_clips.py measures what it saves).

Data (never downloaded at run time; prepare it first with the `video_folder` builder, split/class/*.mp4|webm):
  kinetics400, kinetics600  `video_folder/kinetics`: 25 fps, 250 frames (10 s), 256x340;
                            python -m vit_video.data.prepare video_folder/kinetics --manual_dir DIR
                            (a data_dir per dataset: the class folders decide the 400 or 600 labels).
  ssv2                      `video_folder/ssv2`: the source 12 fps, 72 frames, 256x340. SSv2 ships flat
                            NNNN.webm files and JSON labels: link them into split/<template>/ folders first.

Recipes (the papers'; where ours differ it is said):
  vivit_*     Arnab et al. 2021: 32 frames at stride 2, 224x224, 16x16x2 tubelets; synchronous SGD, momentum 0.9,
              cosine schedule, batch 64; 30 epochs on Kinetics, 35 on SSv2, where they also regularise (stochastic
              depth 0.3, label smoothing 0.3; their RandAugment and mixup act on images only here and are left
              out); evaluation 4 clips x 3 crops (Kinetics), 1 x 3 (SSv2). Initialise from a ViT image
              checkpoint with `vivit.init_from_vit` (central-frame tubelets): config.init.checkpoint loads
              2D-to-2D only.
  timesformer Bertasius et al. 2021 (divided space-time): 8 frames at 224, sampled 1 in 32 on Kinetics (1 in 4
              here on SSv2: their segment sampling spreads the 8 over the whole video, ours takes strided
              clips); SGD momentum 0.9, lr 0.005 divided by 10 at epochs 11 and 14 of 15, weight decay 1e-4,
              batch 64 (8 x 8 GPUs); evaluation 1 clip x 3 crops. Initialise with `timesformer.init_from_vit`.
  video_swin_* Liu et al. 2022: 32 frames at stride 2, 224, AdamW lr 1e-3 (their backbone lr is 0.1x from the
              ImageNet weights: no per-layer rates here), weight decay 0.05, cosine after 2.5 epochs of warm-up,
              batch 64, 30 epochs, drop path 0.1 / 0.2 / 0.3 for T / S / B; evaluation 4 x 3 (Kinetics) and
              1 x 3 (SSv2). Initialise with `video_swin.init_from_swin_2d` from a timm Swin.
"""
import ml_collections

from vit_video import configs

DATASETS = {  # name -> (tfds name, classes, train split, eval split, eval clips, train videos (about))
    "kinetics400": ("video_folder/kinetics", 400, "train", "validation", 4, 240_000),
    "kinetics600": ("video_folder/kinetics", 600, "train", "validation", 4, 392_000),
    "ssv2": ("video_folder/ssv2", 174, "train", "validation", 1, 168_913),
}

_SGD_COSINE = dict(name="sgd", learning_rate=0.1, schedule="cosine", weight_decay=0.0)
_TIMESFORMER_SGD = dict(name="sgd", learning_rate=0.005, schedule="step", step_boundaries=(11 / 15, 14 / 15),
                        weight_decay=1e-4)
_SWIN_ADAMW = dict(name="adamw", learning_rate=1e-3, schedule="cosine", weight_decay=0.05)

# model -> (model_name, model attributes, optimizer, epochs (Kinetics, SSv2))
RECIPES = {
    "vivit_b16x2_st": ("vivit_b16x2_st", {}, _SGD_COSINE, (30.0, 35.0)),
    "vivit_b16x2_fe": ("vivit_b16x2_fe", {}, _SGD_COSINE, (30.0, 35.0)),
    "vivit_b16x2_fsa": ("vivit_b16x2_fsa", {}, _SGD_COSINE, (30.0, 35.0)),
    "vivit_b16x2_fdp": ("vivit_b16x2_fdp", {}, _SGD_COSINE, (30.0, 35.0)),
    "vivit_l16x2_fe": ("vivit_l16x2_fe", {}, _SGD_COSINE, (30.0, 35.0)),
    "timesformer": ("timesformer_b16_divided", {}, _TIMESFORMER_SGD, (15.0, 15.0)),
    "video_swin_t": ("video_swin_t", dict(stochastic_depth_rate=0.1), _SWIN_ADAMW, (30.0, 30.0)),
    "video_swin_s": ("video_swin_s", dict(stochastic_depth_rate=0.2), _SWIN_ADAMW, (30.0, 30.0)),
    "video_swin_b": ("video_swin_b", dict(stochastic_depth_rate=0.3), _SWIN_ADAMW, (30.0, 30.0)),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = configs.parse_arg(arg, model="vivit_b16x2_fe", dataset="kinetics400")
  if a.model not in RECIPES:
    raise ValueError(f"unknown model {a.model!r}; valid: {', '.join(RECIPES)}")
  if a.dataset not in DATASETS:
    raise ValueError(f"unknown dataset {a.dataset!r}; valid: {', '.join(DATASETS)}")
  model_name, model, optimizer, (kinetics_epochs, ssv2_epochs) = RECIPES[a.model]
  tfds_name, num_classes, train_split, eval_split, eval_clips, train_videos = DATASETS[a.dataset]
  ssv2 = a.dataset == "ssv2"
  c = configs.base_config()
  c.name = f"video_transformer_pods/{a.model}/{a.dataset}"
  c.model_name = model_name
  c.model = ml_collections.ConfigDict(model)
  if ssv2 and a.model.startswith("vivit"):
    c.model.stochastic_depth_rate = 0.3
  c.num_classes = num_classes
  c.dtype = "bfloat16"
  c.dataset.name = tfds_name
  c.dataset.data_dir = "data/tfds"
  c.dataset.train_split, c.dataset.eval_split = train_split, eval_split
  c.dataset.image_size = 224
  c.dataset.channels = 3
  c.dataset.shuffle_buffer_size = 0
  if a.model == "timesformer":
    c.video.num_frames, c.video.frame_stride = 8, 4 if ssv2 else 32
    c.video.eval_num_clips = 1
  else:
    c.video.num_frames, c.video.frame_stride = 32, 2
    c.video.eval_num_clips = eval_clips
  c.video.eval_num_crops = 3
  c.video.min_crop_area = 0.5
  c.video.flip = not ssv2  # SSv2 has left/right classes ("pushing something from left to right")
  c.batch_size = 64
  c.num_epochs = ssv2_epochs if ssv2 else kinetics_epochs
  c.optimizer.update(optimizer)
  c.optimizer.momentum = 0.9
  c.optimizer.grad_clip_norm = 1.0
  c.optimizer.warmup_steps = round(2.5 * train_videos / c.batch_size) if a.model.startswith("video_swin") else 0
  c.label_smoothing = 0.3 if ssv2 and a.model.startswith("vivit") else 0.0
  c.log_every_steps = 100
  c.checkpoint.save_every_steps = 5000
  return c.lock()

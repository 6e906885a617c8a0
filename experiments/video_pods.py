"""Paper-size video classifiers on UCF101 and Kinetics-400, with the papers' settings (for TPU/GPU pods).

    python -m vit_video.main --config=experiments/video_pods.py:model=c3d,dataset=ucf101 \
        --workdir=gs://.../c3d_ucf101 --config.dataset.data_dir=gs://.../tfds
    python -m vit_video.main --config=experiments/video_pods.py:model=nl_i3d_r50,dataset=kinetics400 ...

Data (never downloaded at run time; prepare it first):
  ucf101       tfds's `ucf101/ucf101_1_256` (split 1, frames 256x256), prepared with tfds into data_dir.
  kinetics400  the `video_folder` builder over a Kinetics-layout folder (split/class/*.mp4) at 25 fps, frames
               resized to 256 x 340 (the non-local paper's short side 256):
               python -m vit_video.data.prepare video_folder/kinetics --manual_dir DIR.

Per model (the papers' recipes; what our pipeline does differently is said):
  c3d          Tran et al. 2015: clips of 16 frames at 112x112 (their 128x171 resize then 112 crop: our crop
               of 80-100% of the short side's square), SGD momentum 0.9, lr 0.003 divided by 10 every 4 of 16
               epochs (their UCF101 fine-tuning), batch 30 -> 32 (divisible by devices), dropout 0.5;
               evaluation 10 clips x 3 crops.
  i3d_r50      Wang et al. 2018 ("Non-local neural networks") baseline: 32 frames at stride 2 (64 consecutive),
  nl_i3d_r50   224x224 crops, SGD momentum 0.9, weight decay 1e-4, lr 0.01 divided by 10 at 150k and 300k of
               400k iterations, batch 64; 5 non-local blocks (nl_i3d_r50), each the identity at initialisation;
               evaluation 10 clips x 3 crops of the full short side. Their ImageNet-inflated initialisation:
               --config.init.checkpoint=<a ResNet-50 run or workdir> --config.init.model_name=resnet50
               (checkpoints.inflate.i3d_from_resnet, kernels averaged over time).
  two_stream   Simonyan & Zisserman 2014: 224x224, L = 10 flow fields (T = 11 frames), SGD momentum 0.9,
               batch 256, lr 0.01 -> 0.001 at 50k of 80k iterations (from scratch); average fusion. It reads
               optical flow stored beside the frames: their flow is TV-L1, ours DIS (flow.compute_flow), computed
               once when the dataset is prepared, by the video_folder configs with flow (tfds's ucf101 has none):
                 ucf101       video_folder/ucf101_flow (UCF101's 25 fps, 240x320, split 1's train/test folders)
                 kinetics400  video_folder/kinetics_flow (as video_folder/kinetics)
               e.g. python -m vit_video.data.prepare video_folder/ucf101_flow --manual_dir DIR (about 10 ms of
               flow per frame on one CPU core at 256x340).
  lrcn         Donahue et al. 2015: 16-frame clips at 227x227, CaffeNet features into a 256-unit LSTM, SGD lr
               0.001 (their fine-tuning), batch 32.
  slow_fusion  Karpathy et al. 2014 (Sports-1M in the paper): 10 frames at 170x170 (their 200x200 resize and
               170 crop), SGD momentum 0.9, lr 0.003 step decay (Downpour SGD in the paper), batch 32.
"""
import ml_collections

from vit_video import configs

# The slice these recipes are written for: a TPU v3-32 (32 cores on 4 hosts); every batch is a multiple of 32.
SLICE = (32, 4)
DATASETS = {
    # name -> (tfds name, num classes, train split, eval split)
    "ucf101": ("ucf101/ucf101_1_256", 101, "train", "test"),
    "kinetics400": ("video_folder/kinetics", 400, "train", "validation"),
}
FLOW_DATASETS = {"ucf101": "video_folder/ucf101_flow", "kinetics400": "video_folder/kinetics_flow"}  # two_stream

# model -> (model attributes, (num_frames, frame_stride, image_size), optimizer settings, batch, epochs or steps)
RECIPES = {
    "c3d": (dict(input_size=(16, 112, 112), dropout_rate=0.5), (16, 1, 112),
            dict(name="sgd", learning_rate=0.003, schedule="step", step_boundaries=(0.25, 0.5, 0.75),
                 weight_decay=5e-4), 32, dict(num_epochs=16.0)),
    "i3d_r50": (dict(), (32, 2, 224),
                dict(name="sgd", learning_rate=0.01, schedule="step", step_boundaries=(0.375, 0.75),
                     weight_decay=1e-4), 64, dict(total_steps=400_000)),
    "nl_i3d_r50": (dict(), (32, 2, 224),
                   dict(name="sgd", learning_rate=0.01, schedule="step", step_boundaries=(0.375, 0.75),
                        weight_decay=1e-4), 64, dict(total_steps=400_000)),
    "two_stream": (dict(num_frames=11, image_size=(224, 224), fusion="average"), (11, 1, 224),
                   dict(name="sgd", learning_rate=0.01, schedule="step", step_boundaries=(0.625,),
                        weight_decay=5e-4), 256, dict(total_steps=80_000)),
    "lrcn": (dict(image_size=(227, 227), lstm_features=256), (16, 1, 227),
             dict(name="sgd", learning_rate=0.001, schedule="step", step_boundaries=(0.5,), weight_decay=5e-4),
             32, dict(num_epochs=30.0)),
    "slow_fusion": (dict(num_frames=10, image_size=(170, 170)), (10, 1, 170),
                    dict(name="sgd", learning_rate=0.003, schedule="step", step_boundaries=(0.5, 0.75),
                         weight_decay=5e-4), 32, dict(num_epochs=30.0)),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = configs.parse_arg(arg, model="c3d", dataset="ucf101")
  if a.model not in RECIPES:
    raise ValueError(f"unknown model {a.model!r}; valid: {', '.join(RECIPES)}")
  if a.dataset not in DATASETS:
    raise ValueError(f"unknown dataset {a.dataset!r}; valid: {', '.join(DATASETS)}")
  model, (frames, stride, size), optimizer, batch, length = RECIPES[a.model]
  tfds_name, num_classes, train_split, eval_split = DATASETS[a.dataset]
  c = configs.base_config()
  c.name = f"video_pods/{a.model}/{a.dataset}"
  c.model_name = a.model
  c.model = ml_collections.ConfigDict(model)
  c.num_classes = num_classes
  c.dtype = "bfloat16"
  c.dataset.name = FLOW_DATASETS[a.dataset] if a.model == "two_stream" else tfds_name
  c.dataset.data_dir = "data/tfds"
  c.dataset.train_split, c.dataset.eval_split = train_split, eval_split
  c.dataset.image_size = size
  c.dataset.channels = 3
  # Pod-sized input: each host reads its 1/P shard, shuffles 64 encoded videos at a time (tfds wrote the records
  # in a shuffled order; about 1.6 GB of Kinetics' PNG frames) and caches nothing (dataset.cache "auto").
  c.dataset.host_sharding = "split"
  c.dataset.shuffle_buffer_size = 64
  c.video.num_frames, c.video.frame_stride = frames, stride
  c.video.flow = a.model == "two_stream"
  c.video.min_crop_area = 0.5
  c.video.flip = True
  c.video.eval_num_clips, c.video.eval_num_crops = 10, 3
  c.batch_size = batch
  c.optimizer.update(optimizer)
  c.optimizer.momentum = 0.9
  c.optimizer.grad_clip_norm = 0.0
  c.optimizer.warmup_steps = 0
  c.update(length)
  c.log_every_steps = 100
  c.eval_every_steps = 0
  c.checkpoint.save_every_steps = 5000
  c.slice.devices, c.slice.hosts = SLICE
  return c.lock()

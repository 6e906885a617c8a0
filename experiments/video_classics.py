"""The classic video classifiers on moving Fashion-MNIST actions (the embedded video data), one config per model.

    python -m vit_video.data.prepare moving_fmnist_actions
    python -m vit_video.main --config=experiments/video_classics.py:model=c3d --workdir=workdirs/video/c3d
    python -m vit_video.main --config=experiments/video_classics.py:model=single_frame,label=object ...
    python -m vit_video.study --config=experiments/video_classics.py:sweep --workdir=workdirs/video_classics

Arguments: model (a key of MEMBERS), label ("motion": the dataset's 'label', or "object": 'object_label', the
Fashion-MNIST item), sweep (the sweep config over every member and both labels, for vit_video.study),
models (the sweep's models, "+"-separated; default all), tiny (toy sizes on the `tiny` builder config, 6 frames
of 20x20, for the tests), epochs (override), data_dir (the tfds data_dir, default data/tfds).

Every model sees clips of 16 frames of 32x32 grey (stride 1) except late_fusion_fc, which takes the paper's two
frames 15 apart (Karpathy et al. 2014). The models are the papers' architectures narrowed to this data: the
same layer types and fusion points, fewer channels, 3x3 kernels, the input size fixed by the flattening. One
recipe for all (AdamW, cosine, label smoothing 0.1, random crops of 80-100% area and flips; flipping maps left
<-> right, so the flip is off for the motion label); evaluation on the test split with 2 clips x 1 crop per video
(one view for the 16-frame models: the clip is the whole video).
"""
import ml_collections

from vit_video import configs

# Small towers for 32x32 inputs (3x3 convs, stride 1, 2x2 pools after each conv -> 4x4 maps).
_TOWER = dict(widths=(16, 32, 64), kernel_sizes=(3, 3, 3), strides=(1, 1, 1), pools=(True, True, True),
              fc_widths=(128,), image_size=(32, 32))
_I3D = dict(stage_sizes=(1, 1, 1, 1), inflate=((1,), (1,), (1,), (1,)), width=8, temporal_strides=(1, 1, 2))

# name -> (model_name, model attributes, clip (num_frames, frame_stride), flow). Clips of 8 frames at stride 2
# span 15 of the video's 16 frames.
MEMBERS = {
    "single_frame": ("single_frame", _TOWER, (8, 2), False),
    "late_fusion_pool": ("late_fusion_pool", _TOWER, (8, 2), False),
    "late_fusion_fc": ("late_fusion_fc", dict(_TOWER, num_frames=2), (2, 15), False),  # the paper's 2 frames
    "early_fusion": ("early_fusion", dict(_TOWER, num_frames=8), (8, 2), False),
    # conv l sees R = 2, 4, 8 frames (temporal kernels 2, strides 2): 8 frames -> 4 -> 2 -> 1 time steps.
    "slow_fusion": ("slow_fusion", dict(_TOWER, num_frames=8, temporal_kernels=(2, 2, 2),
                                        temporal_strides=(2, 2, 2)), (8, 2), False),
    # C3D's four temporal poolings need 16 frames: the whole video at stride 1.
    "c3d": ("c3d", dict(width_multiplier=1 / 16, input_size=(16, 32, 32), dropout_rate=0.3), (16, 1), False),
    "i3d": ("i3d_r50", _I3D, (8, 2), False),
    "nl_i3d": ("nl_i3d_r50", dict(_I3D, nonlocal_after=((), (0,), (0,), ())), (8, 2), False),
    "lrcn": ("lrcn", dict(_TOWER, lstm_features=128), (8, 2), False),
    "two_stream_rgb": ("two_stream", dict(_TOWER, num_frames=8, streams="rgb"), (8, 2), True),
    "two_stream_flow": ("two_stream", dict(_TOWER, num_frames=8, streams="flow"), (8, 2), True),
    "two_stream": ("two_stream", dict(_TOWER, num_frames=8, streams="both", fusion="average"), (8, 2), True),
}
LABELS = configs.MOVING_FMNIST_LABELS


def _tiny(model_name: str, model: dict) -> tuple[dict, tuple[int, int]]:
  """Toy sizes for the `tiny` builder (6 frames of 20x20): 2-conv towers, a few channels."""
  model = dict(model)
  if "widths" in model:
    model.update(widths=(4, 8), kernel_sizes=(3, 3), strides=(1, 1), pools=(True, True), fc_widths=(8,),
                 image_size=(20, 20))
  frames = 2 if model.get("num_frames") == 2 else 6
  if "num_frames" in model:
    model["num_frames"] = frames
  if model_name == "slow_fusion":
    model.update(temporal_kernels=(2, 2), temporal_strides=(2, 2))  # 6 -> 3 -> 1
  if model_name == "lrcn":
    model["lstm_features"] = 8
  if model_name.endswith("i3d_r50"):
    model["width"] = 4
  if model_name == "c3d":  # C3D's five poolings need T >= 16 and 32x32; the tiny data cannot feed it
    raise ValueError("c3d needs clips of at least 16 frames of 32x32; the tiny dataset has 6 of 20x20")
  return model, (frames, 4 if frames == 2 else 1)


def member_config(name: str, label: str = "motion", *, tiny: bool = False, epochs: float = 0.0,
                  data_dir: str = "data/tfds") -> ml_collections.ConfigDict:
  """The training config of model `name` trained on `label` ("motion" or "object")."""
  if name not in MEMBERS:
    raise ValueError(f"unknown model {name!r}; valid: {', '.join(MEMBERS)}")
  model_name, model, (frames, stride), flow = MEMBERS[name]
  if tiny:
    model, (frames, stride) = _tiny(model_name, model)
  c = configs.moving_fmnist_config(label, frames=frames, stride=stride, epochs=epochs or 2.0, tiny=tiny,
                                   data_dir=data_dir)
  c.name = f"video_classics/{name}/{label}"
  c.model_name = model_name
  c.model = ml_collections.ConfigDict(model)
  c.video.flow = flow
  return c


def sweep_config(*, tiny: bool = False, epochs: float = 0.0, data_dir: str = "data/tfds",
                 models: str = "") -> ml_collections.ConfigDict:
  """Every member (or those of `models`, "+"-separated) on both labels, for `python -m vit_video.study`."""
  s = ml_collections.ConfigDict()
  s.study = "video_comparison"  # The study that runs this config (vit_video/studies/video_comparison.py).
  s.name = "video_classics"
  s.title = "Classic video classifiers on moving Fashion-MNIST actions"
  names = models.split("+") if models else [n for n in MEMBERS if not (tiny and n == "c3d")]
  s.models = tuple(names)  # the table's order
  s.labels = tuple(LABELS)  # the table's label columns, in order
  s.label_notes = configs.MOVING_FMNIST_LABEL_NOTES
  s.members = ml_collections.ConfigDict(  # members[model][label]: a training config
      {n: {label: member_config(n, label, tiny=tiny, epochs=epochs, data_dir=data_dir) for label in LABELS}
       for n in names})
  return s


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = configs.parse_arg(arg, model="c3d", label="motion", sweep=False, tiny=False, epochs=0.0,
                       data_dir="data/tfds", models="")
  if a.sweep:
    return sweep_config(tiny=a.tiny, epochs=a.epochs, data_dir=a.data_dir, models=a.models).lock()
  return member_config(a.model, a.label, tiny=a.tiny, epochs=a.epochs, data_dir=a.data_dir).lock()

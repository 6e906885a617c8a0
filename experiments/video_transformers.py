"""Video transformers on moving Fashion-MNIST actions (the embedded video data): ViViT's four models, the
TimeSformer attention schemes, Video Swin, MViTv2 and VTN, at one small size, one config per model.

    python -m vit_video.data.prepare moving_fmnist_actions
    python -m vit_video.main --config=experiments/video_transformers.py:model=vivit_fe --workdir=workdirs/vt/fe
    python -m vit_video.study --config=experiments/video_transformers.py:sweep --workdir=workdirs/video_transformers

Arguments: model (a key of MEMBERS), label ("motion" or "object", as in video_classics), sweep (every member on
the labels of `labels`, for vit_video.study), models / labels ("+"-separated; default all models, motion
only), tiny (toy sizes on the `tiny` builder config, for the tests), epochs (override), data_dir.

The comparison is ViViT's Table 2 at our scale: one ViT-like width (D 64, 4 heads, MLP 128, 4 blocks; Model 2 adds
2 temporal blocks as the paper adds L_t = 4 to its 12), 4 x 4 patches, clips of 8 grey 32x32 frames at stride 2
(they span 15 of the video's 16 frames, as ViViT's 32 frames at stride 2 span most of a Kinetics clip). ViViT
embeds 2 x 4 x 4 tubelets (4 x 8 x 8 = 256 tokens), TimeSformer 4 x 4 patches of every frame (8 x 8 x 8 = 512
tokens, as its paper embeds each of its 8 frames); Video Swin (T-like, 3 stages of 2 blocks, width 32, windows
2 x 4 x 4) starts from the same 2 x 4 x 4 patches. MViTv2 (S-like: 4 blocks, widths 32 -> 128, queries pooled
1 x 2 x 2 where the width doubles, keys and values 1 x 2 x 2 in the first block) embeds 3 x 7 x 7 cubes at stride
2 x 4 x 4, also 4 x 8 x 8 tokens. VTN runs the ViT (as TimeSformer's, 4 blocks of D 64) on every frame and a
2-block temporal encoder over the 8 frame embeddings (window 8: full attention over this clip). One recipe for all, the video_classics one (AdamW, cosine, label
smoothing 0.1, crops of 80-100% area, no flips for motion: `configs.moving_fmnist_config`), trained 3 epochs with
100 warm-up steps (the CNNs' 50 doubled); evaluation on the test split with 2 clips x 1 crop per video.
"""
import ml_collections

from vit_video import configs

_VIT = dict(patch_size=4, width=64, depth=4, mlp_dim=128, num_heads=4, in_channels=1)
_VIVIT = dict(_VIT, tubelet_depth=2)
_TIMESFORMER = dict(_VIT, num_frames=8)
_VIDEO_SWIN = dict(patch_size=(2, 4, 4), width=32, depths=(2, 2, 2), num_heads=(2, 4, 8), window_size=(2, 4, 4),
                   in_channels=1)
_MVIT = dict(width=32, input_size=(8, 32, 32), num_heads=(1, 2, 2, 4), block_widths=(32, 64, 64, 128),
             kernel_q=((3, 3, 3),) * 4, stride_q=((1, 1, 1), (1, 2, 2), (1, 1, 1), (1, 2, 2)),
             kernel_kv=((3, 3, 3),) * 4, stride_kv=((1, 2, 2), (1, 1, 1), (1, 1, 1), (1, 1, 1)),
             stochastic_depth_rate=0.0, head_dropout_rate=0.0, in_channels=1)
_VTN = dict(backbone="vit_ti16", backbone_overrides=dict(patch_size=4, width=64, depth=4, mlp_dim=128, num_heads=4),
            width=64, temporal_depth=2, num_heads=4, mlp_dim=128, head_mlp_dim=64, attention_window=8, max_frames=8,
            in_channels=1)

# name -> (model_name, model attributes). Every member sees 8 frames at stride 2.
MEMBERS = {
    "vivit_st": ("vivit_b16x2_st", _VIVIT),  # Model 1: joint attention over all 256 tokens
    "vivit_fe": ("vivit_b16x2_fe", dict(_VIVIT, temporal_depth=2)),  # Model 2: spatial then temporal encoder
    "vivit_fsa": ("vivit_b16x2_fsa", _VIVIT),  # Model 3: spatial then temporal attention in each block
    "vivit_fdp": ("vivit_b16x2_fdp", _VIVIT),  # Model 4: half the heads over space, half over time
    "timesformer_space": ("timesformer_b16_space", _TIMESFORMER),
    "timesformer_joint": ("timesformer_b16_joint", _TIMESFORMER),
    "timesformer_divided": ("timesformer_b16_divided", _TIMESFORMER),
    "timesformer_axial": ("timesformer_b16_axial", _TIMESFORMER),
    "video_swin": ("video_swin_t", _VIDEO_SWIN),
    "mvit": ("mvit_v2_s", _MVIT),
    "vtn": ("vtn_vit_b", _VTN),
}
LABELS = configs.MOVING_FMNIST_LABELS
_FRAMES, _STRIDE = 8, 2


def _tiny(model_name: str, model: dict) -> dict:
  """Toy sizes for the `tiny` builder (6 frames of 20x20, the clip 6 frames at stride 1)."""
  if model_name.startswith("video_swin"):
    return dict(model, width=8, depths=(2,), num_heads=(2,), window_size=(2, 2, 2))
  if model_name.startswith("mvit"):
    return dict(model, width=8, input_size=(6, 20, 20), num_heads=(1, 2), block_widths=(8, 16),
                kernel_q=((3, 3, 3),) * 2, stride_q=((1, 1, 1), (1, 2, 2)), kernel_kv=((3, 3, 3),) * 2,
                stride_kv=((1, 2, 2), (1, 1, 1)))
  if model_name.startswith("vtn"):
    return dict(model, backbone_overrides=dict(patch_size=4, width=8, depth=1, mlp_dim=8, num_heads=2), width=8,
                temporal_depth=1, num_heads=2, mlp_dim=8, head_mlp_dim=8, attention_window=4, max_frames=6)
  return dict(model, width=8, depth=1, mlp_dim=8, num_heads=2, **({"temporal_depth": 1} if "temporal_depth" in model
                                                                  else {}),
              **({"num_frames": 6} if "num_frames" in model else {}))


def member_config(name: str, label: str = "motion", *, tiny: bool = False, epochs: float = 0.0,
                  data_dir: str = "data/tfds") -> ml_collections.ConfigDict:
  """The training config of model `name` trained on `label` ("motion" or "object")."""
  if name not in MEMBERS:
    raise ValueError(f"unknown model {name!r}; valid: {', '.join(MEMBERS)}")
  model_name, model = MEMBERS[name]
  if tiny:
    model = _tiny(model_name, model)
  c = configs.moving_fmnist_config(label, frames=6 if tiny else _FRAMES, stride=1 if tiny else _STRIDE,
                                   epochs=epochs or 3.0, tiny=tiny, data_dir=data_dir)
  c.name = f"video_transformers/{name}/{label}"
  c.model_name = model_name
  c.model = ml_collections.ConfigDict(model)
  if not tiny:
    c.optimizer.warmup_steps = 100  # transformers from scratch: twice the CNNs' warm-up
  return c


def sweep_config(*, tiny: bool = False, epochs: float = 0.0, data_dir: str = "data/tfds", models: str = "",
                 labels: str = "motion") -> ml_collections.ConfigDict:
  """The members of `models` ("+"-separated, default all) on `labels`, for `python -m vit_video.study`."""
  s = ml_collections.ConfigDict()
  s.study = "video_comparison"  # The study that runs this config (vit_video/studies/video_comparison.py).
  s.name = "video_transformers"
  s.title = "Video transformers on moving Fashion-MNIST actions"
  names = models.split("+") if models else list(MEMBERS)
  label_names = labels.split("+")
  s.models = tuple(names)  # the table's order
  s.labels = tuple(label_names)  # the table's label columns, in order
  s.label_notes = configs.MOVING_FMNIST_LABEL_NOTES
  s.members = ml_collections.ConfigDict(  # members[model][label]: a training config
      {n: {label: member_config(n, label, tiny=tiny, epochs=epochs, data_dir=data_dir) for label in label_names}
       for n in names})
  return s


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = configs.parse_arg(arg, model="vivit_st", label="motion", sweep=False, tiny=False, epochs=0.0,
                       data_dir="data/tfds", models="", labels="motion")
  if a.sweep:
    return sweep_config(tiny=a.tiny, epochs=a.epochs, data_dir=a.data_dir, models=a.models, labels=a.labels).lock()
  return member_config(a.model, a.label, tiny=a.tiny, epochs=a.epochs, data_dir=a.data_dir).lock()

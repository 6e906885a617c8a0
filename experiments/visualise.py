"""What the video models look at and which motions they prefer: saliency over time, activation maximisation with the
appearance / slow / fast regularisers, and the ViT's Figure 7 (study vit_video/studies/motion_visualisation.py).

    python -m vit_video.study --config=experiments/visualise.py:cpu --workdir=workdirs/visualise_cpu
    python -m vit_video.study --config=experiments/visualise.py:tiny,data_dir=D,image_data_dir=E --workdir=/tmp/v

Members: models of the video comparisons trained on the motion label of moving Fashion-MNIST actions, with the
configs of experiments/video_classics.py (the committed table's runs: single_frame, early_fusion, slow_fusion, i3d,
the two-stream model's rgb and flow streams), trained 1 epoch instead of the table's 2. Each is trained into
workdir/<model>/ (a finished run is read back). The ViT of Figure 7 is the ViT-vs-ResNet quick sweep's vit_s
(Fashion-MNIST, 4 x 4 patches) when `vit_workdir` holds it, else
`vit` (a short run of the same ViT) is trained into workdir/vit/.

Scales:
  cpu   the six members at 1 epoch (their table trained 2: halved to fit a 2-core CPU shared with other jobs),
        saliency on 30 test clips (every motion), activation maximisation of all 10 motion logits
        (committed results in experiments/results/visualise_cpu/).
  tiny  2 toy members on the `tiny` builder (6 frames of 20x20), 6 steps each, a toy ViT; a few steps of
        everything (the tests and the notebook's small settings).
Arguments: the scale, data_dir (moving_fmnist_actions' tfds data_dir), image_data_dir (fashion_mnist_local's, for
the ViT), vit_workdir (a trained ViT run to read instead of the scale's), models ("+"-separated keys of MODELS
instead of the scale's).
"""
import importlib.util
import os

import ml_collections

from vit_video import configs

SCALES = ("cpu", "tiny")
MODELS = {  # the members the study knows, in table order: name -> the experiment file of its training config
    "single_frame": "video_classics",
    "early_fusion": "video_classics",
    "slow_fusion": "video_classics",
    "i3d": "video_classics",
    "two_stream_rgb": "video_classics",
    "two_stream_flow": "video_classics",
    "vivit_fdp": "video_transformers",
}
# ViViT Model 4 (82.8% motion top-1 in experiments/results/video_transformers_cpu) is left out of the cpu scale:
# about 0.3 s per training step on an idle 2-core CPU, it alone would cost as much as the six CNNs. The study runs
# on it as on any member (no Grad-CAM: a transformer has no conv map): models=...+vivit_fdp.
CPU_MODELS = tuple(m for m in MODELS if m != "vivit_fdp")
TINY_MODELS = ("single_frame", "two_stream_flow")  # one per input kind: the clip, the flow


def _experiment(name: str):
  """experiments/<name>.py, loaded by path (the experiment files are data, not a package)."""
  spec = importlib.util.spec_from_file_location(name, os.path.join(os.path.dirname(__file__), f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def vit_config(*, tiny: bool, data_dir: str) -> ml_collections.ConfigDict:
  """The Figure-7 ViT when no trained run is given: the quick sweep's vit_s (4 x 4 patches of 28 x 28 Fashion-MNIST,
  D 64, 4 heads, 4 blocks), 2 epochs; tiny: D 8, 1 block, 4 steps."""
  c = _experiment("vit_fashion_mnist").get_config("variant=vit_t4,quick" if tiny else "variant=vit_t4,epochs=2")
  c = c.unlock()
  c.name = "visualise/vit"
  c.dataset.data_dir = data_dir
  c.model.attention_implementation = "einsum"  # the explicit softmax, whose weights the attention maps read
  if tiny:
    c.model.update(width=8, depth=1, num_heads=2, mlp_dim=8)
    c.total_steps, c.batch_size, c.optimizer.warmup_steps = 4, 16, 1
    c.checkpoint.async_save = False
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = configs.parse_arg(arg, data_dir="data/tfds", image_data_dir="data/tfds", vit_workdir="", models="",
                       **{s: False for s in SCALES})
  scale = configs.pick_scale(",".join(s for s in SCALES if a[s]), SCALES, default="cpu")
  tiny = scale == "tiny"
  c = ml_collections.ConfigDict()
  c.study = "motion_visualisation"  # The study that runs this config (vit_video/studies/motion_visualisation.py).
  c.name = f"visualise/{scale}"
  names = tuple(a.models.split("+")) if a.models else TINY_MODELS if tiny else CPU_MODELS
  unknown = [n for n in names if n not in MODELS]
  if unknown:
    raise ValueError(f"unknown models {unknown}; valid: {', '.join(MODELS)}")
  c.models = names  # table order (a ConfigDict's keys come back sorted)
  c.members = ml_collections.ConfigDict(  # name -> its training config (motion label), 1 epoch on cpu
      {n: _experiment(MODELS[n]).member_config(n, "motion", tiny=tiny, data_dir=a.data_dir,
                                              epochs=0.0 if tiny else 1.0) for n in names})
  c.label_names = ("left", "right", "up", "down", "rotate_cw", "rotate_ccw", "zoom_in", "zoom_out", "bounce",
                   "still")  # vit_video/data/moving_fmnist.py MOTIONS: the motion label's classes
  c.examples = 4 if tiny else 30  # test clips explained: the first in the split's file order (cpu: every motion,
  #   1 to 8 clips each: 3 left, 3 right, 3 up, 1 down, 3 rotate_cw, 1 rotate_ccw, 1 zoom_in, 2 zoom_out, 5 bounce,
  #   8 still)
  c.item_threshold = 0.1  # a pixel is on the item above this fraction of the intensity range
  c.ig_steps = 4 if tiny else 16  # integrated gradients: midpoint-rule steps from the black clip
  c.smoothgrad_samples = 2 if tiny else 16  # SmoothGrad's noisy copies (for the figures only)
  c.figure_example = 0  # the test clip drawn in the saliency figures (cpu: the first, an item moving down)
  c.activation_max = ml_collections.ConfigDict(dict(
      regularisers=("appearance", "slow", "fast"),  # activation_max.REGULARISERS compared
      classes=(0, 9) if tiny else tuple(range(10)),  # motion logits maximised (one clip each, in one batch)
      steps=3 if tiny else 100,  # optimisation steps
      learning_rate=0.05,
      figure_class=0,  # the class whose optima are drawn per regulariser
  ))
  # A trained ViT run for Figure 7, used when it holds a checkpoint; else `vit` is trained into workdir/vit.
  c.vit_workdir = a.vit_workdir or ("" if tiny else "workdirs/vit_vs_resnet/vit_s")
  c.vit = vit_config(tiny=tiny, data_dir=a.image_data_dir)
  c.vit_images = 4 if tiny else 64  # test images of the mean attention distance
  c.seed = 0  # noise of SmoothGrad, initial clips of activation maximisation
  return c.lock()

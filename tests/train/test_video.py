"""Video models through the training system: clip batches, two-stream (RGB + flow) batches, multi-view
evaluation with per-video aggregation, on the tiny moving Fashion-MNIST (6 frames of 20x20), and the pod configs.

Runs on 8 forced CPU devices (conftest.py) with experiments/video_classics.py's toy sizes.
"""
import json

import numpy as np
import pytest

from tests.experiment_files import get_config as load
from tests.experiment_files import load_module
from vit_video.data.iterators import make_iterators
from vit_video.train import loop


def tiny(data_dir, name, label="motion"):
  c = load_module("video_classics").member_config(name, label, tiny=True)
  c.dataset.data_dir = data_dir
  return c


@pytest.mark.parametrize("name, parallelism", [("late_fusion_fc", "jit"), ("two_stream", "jit"),
                                               ("two_stream", "pmap")])
def test_video_models_train_and_evaluate_every_video_once(tiny_moving_fmnist, tmp_path, name, parallelism):
  """late_fusion_fc: 2 frames 4 apart; two_stream: RGB and flow batches (under pmap the views' logits are gathered
  from the 8 devices). 30 test videos x 2 clips = 60 views, each counted once."""
  config = tiny(tiny_moving_fmnist, name)
  config.parallelism = parallelism
  _, summary = loop.train_and_evaluate(config, str(tmp_path))
  with open(tmp_path / "summary.json") as f:
    assert json.load(f) == pytest.approx(summary)
  assert summary["eval_count"] == 30 and summary["eval_views"] == 60
  for key in ("eval_top1", "eval_clip_top1", "eval_top5"):
    assert 0.0 <= summary[key] <= 1.0
  assert summary["eval_gflop_per_example"] > 0 and summary["params"] > 0
  records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert [r["step"] for r in records if r["kind"] == "train"] == [2, 4, 6]


def test_view_evaluation_equals_aggregating_the_models_logits_by_hand(tiny_moving_fmnist, tmp_path):
  """Trainer.evaluate's per-video top-1 equals argmax of the mean softmax over each video's 2 views."""
  from vit_video.data import video_pipeline as vp  # noqa: PLC0415
  config = tiny(tiny_moving_fmnist, "single_frame")
  trainer = loop.Trainer(config, total_steps=config.total_steps)
  state = trainer.init(0)
  metrics = trainer.evaluate(state, make_iterators(config).eval("test"))
  batches = list(make_iterators(config).eval("test"))
  variables = {"params": trainer.host_state(state).params}
  logits = np.concatenate([np.asarray(trainer.model.apply(variables, b["video"], train=False)) for b in batches])
  b = {k: np.concatenate([x[k] for x in batches]) for k in ("label", "video_index", "mask")}
  per_video, videos = vp.aggregate_views(logits, b["video_index"], b["mask"])
  labels = np.array([b["label"][b["video_index"] == v][0] for v in videos])
  assert len(videos) == 30
  assert metrics["top1"] == pytest.approx(np.mean(per_video.argmax(1) == labels))
  assert metrics["clip_top1"] == pytest.approx(np.mean(logits[b["mask"]].argmax(1) == b["label"][b["mask"]]))


def test_bad_video_configs_fail_early_with_clear_errors(tiny_moving_fmnist, tmp_path):
  config = tiny(tiny_moving_fmnist, "early_fusion")
  with config.unlocked():
    config.video.num_frames = 4  # the model's first conv spans 6 frames
  with pytest.raises(ValueError, match="early fusion was built for num_frames = 6 frames"):
    loop.train_and_evaluate(config, str(tmp_path / "frames"))
  config = tiny(tiny_moving_fmnist, "single_frame")
  config.augment.mixup_alpha = 0.2
  with pytest.raises(ValueError, match="do not apply to video"):
    loop.train_and_evaluate(config, str(tmp_path / "augment"))
  config = tiny(tiny_moving_fmnist, "single_frame")
  config.video.flow = True
  with pytest.raises(ValueError, match="takes 1 input"):  # single_frame takes no flow
    loop.train_and_evaluate(config, str(tmp_path / "flow"))




@pytest.mark.parametrize("model", ["c3d", "i3d_r50", "nl_i3d_r50", "two_stream", "lrcn", "slow_fusion"])
def test_pod_configs_build_their_paper_size_models_on_the_configs_inputs(model):
  """Every pod config's model accepts the clips (and flow) its config feeds (jax.eval_shape: no FLOPs); C3D at
  101 classes has the parameter count pinned in test_c3d.py."""
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415
  for dataset, classes in (("ucf101", 101), ("kinetics400", 400)):
    config = load("video_pods", f"model={model},dataset={dataset}")
    assert config.num_classes == classes and config.video.eval_num_clips * config.video.eval_num_crops == 30
    net = loop.build_model(config)
    inputs = [jnp.zeros((1, *shape)) for shape in loop.input_shapes(config)]
    shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), *inputs, train=False))
    params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes["params"]))
    if model == "c3d" and dataset == "ucf101":
      assert params == 78_409_573
    assert params > 1_000_000


def test_video_transformer_members_build_on_their_clips():
  """Every member of experiments/video_transformers.py accepts its config's clips at full (CPU) size."""
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415
  module = load_module("video_transformers")
  for name in module.MEMBERS:
    config = module.member_config(name)
    assert tuple(loop.input_shapes(config)) == ((8, 32, 32, 1),)
    net = loop.build_model(config)
    shapes = jax.eval_shape(lambda net=net: net.init(jax.random.key(0), jnp.zeros((1, 8, 32, 32, 1)), train=False))
    assert 100_000 < sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes["params"])) < 1_000_000, name




@pytest.mark.parametrize("model, dataset", [
    ("vivit_b16x2_st", "kinetics400"), ("vivit_b16x2_fe", "kinetics600"), ("vivit_b16x2_fsa", "ssv2"),
    ("vivit_b16x2_fdp", "kinetics400"), ("vivit_l16x2_fe", "kinetics400"), ("timesformer", "ssv2"),
    ("video_swin_t", "kinetics400"), ("video_swin_s", "ssv2"), ("video_swin_b", "kinetics600")])
def test_transformer_pod_configs_build_their_models_with_the_papers_views(model, dataset):
  """Each transformer pod config's model accepts the clips its config feeds (jax.eval_shape), with the papers'
  clips and views: 32 frames at stride 2 and 4 x 3 views (ViViT on SSv2: stride 1; Video Swin on SSv2: 1 x 3);
  TimeSformer 8 frames, 1 x 3. ViViT and TimeSformer take the long-clip overrides."""
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415
  config = load("video_transformer_pods", f"model={model},dataset={dataset}")
  assert config.num_classes == {"kinetics400": 400, "kinetics600": 600, "ssv2": 174}[dataset]
  timesformer, vivit = model == "timesformer", model.startswith("vivit")
  assert (config.video.num_frames, config.dataset.image_size) == ((8 if timesformer else 32), 224)
  if not timesformer:
    assert config.video.frame_stride == (1 if vivit and dataset == "ssv2" else 2)
  clips = 1 if timesformer or (dataset == "ssv2" and not vivit) else 4
  assert (config.video.eval_num_clips, config.video.eval_num_crops) == (clips, 3)
  if not model.startswith("video_swin"):  # the long-clip options, as the docstring's command sets them
    config.model.attention_implementation, config.model.remat = "chunked", True
  net = loop.build_model(config)
  inputs = [jnp.zeros((1, *shape)) for shape in loop.input_shapes(config)]
  shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), *inputs, train=False))
  assert sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes["params"])) > 20_000_000


def test_video_experiments_share_one_recipe_and_reject_unknown_labels():
  from vit_video import configs  # noqa: PLC0415
  """The two comparisons differ only where their docstrings say: model, clip, epochs and (transformers) warm-up."""
  from flax import traverse_util  # noqa: PLC0415
  classic, transformer = (traverse_util.flatten_dict(c.to_dict(), sep=".") for c in (
      load_module("video_classics").member_config("i3d"), load_module("video_transformers").member_config("vivit_st")))
  differ = {k for k in classic.keys() | transformer.keys() if classic.get(k) != transformer.get(k)}
  assert {k for k in differ if not k.startswith("model.")} == {
      "name", "model_name", "num_epochs", "optimizer.warmup_steps"}, differ
  assert (classic["num_epochs"], transformer["num_epochs"], transformer["optimizer.warmup_steps"]) == (2.0, 3.0, 100)
  with pytest.raises(ValueError, match="unknown label 'speed'; valid: motion, object"):
    configs.moving_fmnist_config("speed", frames=8, stride=2, epochs=1.0, tiny=False, data_dir="d")


def test_transformer_pod_config_rejects_unknown_names():
  with pytest.raises(ValueError, match="unknown dataset 'ucf101'; valid: kinetics400, kinetics600, ssv2"):
    load("video_transformer_pods", "model=timesformer,dataset=ucf101")
  with pytest.raises(ValueError, match="unknown model 'vivit'; valid: vivit_b16x2_st"):
    load("video_transformer_pods", "model=vivit,dataset=ssv2")


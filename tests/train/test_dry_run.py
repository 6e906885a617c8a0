"""The dry run (train/dry_run.py): every pod config in experiments/ plans cleanly on the slice it declares (abstract
shapes only, no device), a slice it cannot use is refused with every problem named, and the bytes per device
follow the layout."""
import glob
import os
import subprocess
import sys

import pytest

from tests.experiment_files import ROOT, load_module
from tests.train.test_loop import tiny_config
from vit_video.train import dry_run

# Every config of the pod files: (file, argument).
POD_CONFIGS = [(name, f"model={model},dataset={dataset}")
               for name, models_key in (("video_pods", "RECIPES"), ("video_transformer_pods", "MODELS"),
                                        ("image_pods", "MODELS"), ("detr_pods", "MODELS"))
               for module in [load_module(name)]
               for model in getattr(module, models_key) for dataset in module.DATASETS]


def test_the_pod_files_are_the_experiments_that_declare_a_slice():
  """A new pod config file must be added to POD_CONFIGS (and so be dry-run); no CPU config declares a slice."""
  pod_files = {name for name, _ in POD_CONFIGS}
  for path in glob.glob(os.path.join(ROOT, "experiments", "*.py")):
    name = os.path.basename(path)[:-3]
    if name in pod_files:
      continue
    assert "slice" not in open(path).read(), f"experiments/{name}.py declares a slice: dry-run it here"


@pytest.mark.parametrize("name, arg", POD_CONFIGS)
def test_every_pod_config_plans_cleanly_on_its_declared_slice(name, arg):
  config = load_module(name).get_config(arg)
  devices, hosts = dry_run.declared_slice(config)
  assert devices >= 8 and hosts >= 1, "a pod config declares the slice it is written for"
  plan = dry_run.plan(config, check_data=False)  # the pods' data lives in their buckets, not here
  assert plan.problems == [], plan.report()
  assert f"on {devices} devices, {hosts} host(s) (the declared slice)" in plan.lines[0]
  assert plan.bytes_per_device["params"] > 0


def test_a_slice_the_batch_cannot_split_over_names_every_problem():
  config = load_module("video_transformer_pods").get_config("model=timesformer,dataset=kinetics400")
  plan = dry_run.plan(config, devices=16, hosts=3, check_data=False)
  assert plan.problems == ["16 devices do not split evenly over 3 hosts"]
  plan = dry_run.plan(config, devices=16, check_data=False)  # 2 hosts of the declared 8 devices per host
  assert "2 host(s)" in plan.lines[0]
  assert plan.problems == ["batch_size 8 is not divisible by the 16 devices: choose a multiple of 16 (or another "
                           "slice)"], plan.report()


def test_bytes_per_device_follow_the_layout(tiny_fmnist):
  """Replicated: every device holds the whole state; FSDP on 4 devices: the sharded arrays a quarter each."""
  config = tiny_config(tiny_fmnist, **{"model.width": 64, "model.mlp_dim": 256, "model.num_heads": 4})
  replicated = dry_run.plan(config, devices=4, hosts=1)
  assert replicated.problems == [], replicated.report()
  with config.unlocked():
    config.fsdp = True
  sharded = dry_run.plan(config, devices=4, hosts=1)
  assert sharded.problems == [], sharded.report()
  # The two 64x256 MLP kernels (16,384 elements each, FSDP's threshold) are sharded; the rest stays whole.
  saved = 2 * 64 * 256 * 4 * 3 // 4
  assert replicated.bytes_per_device["params"] - sharded.bytes_per_device["params"] == saved
  assert replicated.bytes_per_device["opt_state"] - sharded.bytes_per_device["opt_state"] == 2 * saved  # Adam mu, nu
  assert "2 of" in sharded.lines[-1] and "parameter arrays sharded" in sharded.lines[-1]


def test_data_problems_are_reported_with_the_rest(tiny_fmnist):
  config = tiny_config(tiny_fmnist, **{"dataset.eval_split": "validation", "num_classes": 7,
                                       "batch_size": 12})
  plan = dry_run.plan(config, devices=8, hosts=2)
  text = "\n".join(plan.problems)
  assert "batch_size 12 is not divisible by the 8 devices" in text
  assert "num_classes 7 differs from the 10 classes" in text
  assert "split 'validation' is not a split of fashion_mnist_local" in text
  assert len(plan.problems) == 3, plan.report()
  with config.unlocked():
    config.dataset.data_dir = os.path.join(ROOT, "no_such_data_dir")
  assert "is not prepared in" in dry_run.plan(config, devices=4, hosts=1).problems[0]


def test_compiled_step_reports_activation_memory(tiny_fmnist):
  small = dry_run.plan(tiny_config(tiny_fmnist), devices=4, hosts=1, compile_step=True)
  large = dry_run.plan(tiny_config(tiny_fmnist, batch_size=64), devices=4, hosts=1, compile_step=True)
  assert 0 < small.activation_bytes < large.activation_bytes  # 4 vs 16 images per device


def test_command_line_dry_run_exits_non_zero_on_a_problem(tiny_fmnist, tmp_path):
  workdir = str(tmp_path / "never_written")
  command = [sys.executable, "-m", "vit_video.main", f"--config={ROOT}/experiments/vit_fashion_mnist.py:quick",
             f"--workdir={workdir}", f"--config.dataset.data_dir={tiny_fmnist}", "--dry_run", "--devices=48"]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert "batch_size 64 is not divisible by the 48 devices" in proc.stdout
  assert "parameters" in proc.stdout and not os.path.exists(workdir)


@pytest.mark.parametrize("command, config, message", [
    ("vit_video.main", "detr_scenes.py:tiny", "'detr_scenes/tiny' is a detection config: train it with"),
    ("vit_video.detection", "vit_fashion_mnist.py:quick", "is not a detection config"),
])
def test_each_command_refuses_the_other_kind_of_config(command, config, message, tmp_path):
  proc = subprocess.run([sys.executable, "-m", command, f"--config={ROOT}/experiments/{config}",
                         f"--workdir={tmp_path / 'never_written'}"], cwd=ROOT, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-3000:]
  assert not (tmp_path / "never_written").exists()


def test_a_detection_config_is_planned_as_a_detector(tmp_path):
  """DETR's plan: its parameters (trained and frozen) at the declared slice; every problem of a bad slice and
  config at once: the batch over the devices, the targets beyond the queries, a dataset that is not prepared; and
  the tiny config's activation bytes from its compiled train step."""
  config = load_module("detr_pods").get_config("model=detr_r50,dataset=coco")
  plan = dry_run.plan(config, check_data=False)
  assert plan.problems == [], plan.report()
  assert "41,521,941 (41,299,541 trained" in plan.report()  # DETR-R50 at 80 classes: 41,524,768 - 11 * 257
  tiny = load_module("detr_scenes").get_config("tiny")
  bad = load_module("detr_scenes").get_config("tiny").unlock()
  bad.dataset.max_objects, bad.dataset.data_dir = 12, str(tmp_path)
  plan = dry_run.plan(bad.lock(), devices=48, hosts=4)
  text = "\n".join(plan.problems)
  assert "batch_size 8 is not divisible by the 48 devices" in text
  assert "dataset.max_objects 12 exceeds model.num_queries 10" in text
  assert "fmnist_scenes/tiny" in text and "prepare" in text
  assert len(plan.problems) == 3, plan.report()
  plan = dry_run.plan(tiny, devices=8, check_data=False, compile_step=True)  # XLA's estimate of one device's step
  assert plan.problems == [] and plan.activation_bytes > 0, plan.report()

"""`python -m vit_video.visualize` end to end on a tiny trained video run: the files each method writes (valid PNGs,
GIFs of one frame per clip frame), the errors for methods that do not apply, and the command line."""
import io
import os
import subprocess
import sys

import imageio.v2 as imageio
import jax
import pytest

from tests.experiment_files import ROOT, load_module
from tests.studies.first_device import on_first_device
from tests.xla_flags import xla_flags
from vit_video.train import loop
from vit_video.train.run_folder import as_path
from vit_video.visualize import __main__ as command
from vit_video.visualize import runs

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def clip_run(tiny_moving_fmnist, tmp_path_factory) -> str:
  """A single-frame CNN trained 6 steps on the tiny moving Fashion-MNIST (6 frames of 20x20)."""
  config = load_module("video_classics").member_config("single_frame", tiny=True, data_dir=tiny_moving_fmnist)
  workdir = str(tmp_path_factory.mktemp("visualize_cli") / "single_frame")
  with on_first_device():
    loop.train_and_evaluate(config, workdir)
  return workdir


def _frames(path) -> int:
  return len(imageio.mimread(io.BytesIO(as_path(path).read_bytes()), format="GIF"))


def test_saliency_of_a_clip_is_a_png_per_example_and_a_gif_of_its_frames(clip_run, tmp_path):
  written = command.visualise(clip_run, "gradient", tmp_path / "gradient", examples=2)
  names = sorted(os.path.basename(str(p)) for p in written)
  assert names == ["gradient_0.gif", "gradient_0.png", "gradient_1.gif", "gradient_1.png"]
  for path in written:
    data = as_path(path).read_bytes()
    assert data.startswith(PNG) if str(path).endswith(".png") else _frames(path) == 6  # T = 6 frames
  cams = command.visualise(clip_run, "grad_cam", tmp_path / "cam", examples=1, index=3)  # class 3 for every clip
  assert sorted(os.path.basename(str(p)) for p in cams) == ["grad_cam_0.gif", "grad_cam_0.png"]


def test_activation_max_writes_the_optimised_clip(clip_run, tmp_path, capsys):
  written = command.visualise(clip_run, "activation_max", tmp_path, regulariser="fast", steps=3, index=2)
  assert [os.path.basename(str(p)) for p in written] == ["activation_max_fast.png", "activation_max_fast_video.gif"]
  assert as_path(written[0]).read_bytes().startswith(PNG) and _frames(written[1]) == 6
  assert "class 2: score" in capsys.readouterr().out


def test_methods_that_do_not_apply_are_refused_by_name(clip_run, tiny_fmnist, tmp_path):
  for method in ("figure7", "attention", "rollout"):
    with pytest.raises(ValueError, match=f"--method={method} does not apply to single_frame"):
      command.visualise(clip_run, method, tmp_path, examples=1)
  vit = load_module("visualise").vit_config(tiny=True, data_dir=tiny_fmnist)  # an untrained toy ViT is enough
  model = loop.build_model(vit)
  variables = model.init(jax.random.key(0), jax.numpy.zeros((1, 28, 28, 1)), train=False)
  run = runs.Run(workdir=as_path(tmp_path), config=vit, model=model, variables=variables)
  with pytest.raises(ValueError, match="--method=grad_cam does not apply to vit_ti16.*no convolutional map"):
    command.visualise(run, "grad_cam", tmp_path, examples=1)
  with pytest.raises(ValueError, match="unknown method 'occlusion'"):
    command.visualise(clip_run, "occlusion", tmp_path)
  with pytest.raises(ValueError, match="a layer applies to grad_cam and activation_max, not gradient"):
    command.visualise(clip_run, "gradient", tmp_path, layer="tower/conv0")


def test_command_line_prints_the_files_it_writes(clip_run, tmp_path):
  """One subprocess (the errors are tested in-process above; cli.exit_on_failure's one-line exit is main.py's)."""
  env = dict(os.environ, XLA_FLAGS=xla_flags(1), PYTHONPATH=ROOT)
  base = [sys.executable, "-m", "vit_video.visualize", f"--workdir={clip_run}", "--examples=1"]
  ok = subprocess.run(base + ["--method=integrated_gradients", "--steps=2", f"--out={tmp_path}"], cwd=ROOT, env=env,
                      capture_output=True, text=True, timeout=300)
  assert ok.returncode == 0, ok.stderr[-2000:]
  printed = [line for line in ok.stdout.splitlines() if line.startswith(str(tmp_path))]
  assert sorted(os.path.basename(p) for p in printed) == ["integrated_gradients_0.gif", "integrated_gradients_0.png"]
  assert all(os.path.exists(p) for p in printed)

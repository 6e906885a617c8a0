"""Packaging promises: the model code imports without TensorFlow, and data and training without the `[data]` extra
say how to install it; the lock file pins what setup.py asks for."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_import_does_not_load_tensorflow():
  code = ("import sys, vit_video, vit_video.layers, vit_video.models, vit_video.checkpoints, vit_video.configs, "
          "vit_video.data; "
          "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tensorflow_datasets', 'torch')))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == "[]"


# Makes TensorFlow and tfds unimportable, as in an install without the `[data]` extra (importing a module that is
# None in sys.modules raises ModuleNotFoundError; importlib.util.find_spec returns None for it).
WITHOUT_DATA_EXTRA = "import sys; sys.modules['tensorflow'] = sys.modules['tensorflow_datasets'] = None; "


@pytest.mark.parametrize("module", ["vit_video.data.pipeline", "vit_video.train.loop"])
def test_without_the_data_extra_the_error_says_how_to_install_it(module):
  out = subprocess.run([sys.executable, "-c", WITHOUT_DATA_EXTRA + f"import {module}"], capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
  assert out.returncode != 0
  error = out.stderr.strip().splitlines()[-1]
  assert error.startswith("ModuleNotFoundError: vit_video.data"), error
  assert "pip install 'vit_video[data]'" in error and "tensorflow (from tensorflow-cpu)" in error, error
  assert "tensorflow_datasets (from tensorflow-datasets)" in error, error


def test_models_import_without_tensorflow_installed():
  code = (WITHOUT_DATA_EXTRA + "import vit_video.models, vit_video.checkpoints, vit_video.layers; "
          "print(sorted(m for m, v in sys.modules.items() if v is not None and "
          "m.split('.')[0] in ('tensorflow', 'tensorflow_datasets')))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == "[]"


def test_data_extra_holds_what_vit_video_data_checks():
  """The pip names in vit_video.data's message are requirements of the `[data]` extra in setup.py."""
  from vit_video import data  # noqa: PLC0415
  setup = open(os.path.join(ROOT, "setup.py")).read()
  extra = re.search(r'"data": \[(.*?)\]', setup, re.DOTALL).group(1)
  required = set(re.findall(r'"([A-Za-z0-9_.-]+)[<>=\[]', extra))
  assert set(data._REQUIRED.values()) <= required, (data._REQUIRED, required)


def test_lock_file_pins_every_requirement():
  setup = open(os.path.join(ROOT, "setup.py")).read()
  lock = {line.split("==")[0].lower().replace("_", "-"): line.split("==")[1]
          for line in open(os.path.join(ROOT, "requirements.lock")) if "==" in line}
  required = re.findall(r'"([A-Za-z0-9_.-]+)(?:\[[a-z]+\])?[<>=]', setup)
  missing = [r for r in required if r.lower().replace("_", "-") not in lock]
  assert required and not missing, missing


def test_accelerator_extras_are_jax_extras_at_the_locked_version():
  """`pip install -e .[tpu]` / `.[cuda]` / `.[cuda12]` add jax's own plugin extras, at a range that holds the
  locked jax (so they install on top of requirements.lock without moving jax or jaxlib)."""
  from importlib import metadata  # noqa: PLC0415

  from packaging.specifiers import SpecifierSet  # noqa: PLC0415
  setup = open(os.path.join(ROOT, "setup.py")).read()
  extras = dict((name, (extra, spec)) for name, extra, spec in
                re.findall(r'"(\w+)": \["jax\[(\w+)\]([^"]+)"\]', setup))
  assert set(extras) == {"tpu", "cuda", "cuda12"}, extras
  locked = next(line.split("==")[1].strip() for line in open(os.path.join(ROOT, "requirements.lock"))
                if line.startswith("jax=="))
  jax_extras = {e.replace("-", "_") for e in metadata.metadata("jax").get_all("Provides-Extra")}
  for name, (extra, spec) in extras.items():
    assert locked in SpecifierSet(spec), (name, spec, locked)
    assert extra in jax_extras, (name, extra, sorted(jax_extras))

"""Packaging promises: the model code imports without TensorFlow; the lock file pins what setup.py asks for."""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_import_does_not_load_tensorflow():
  code = ("import sys, vit_video, vit_video.layers, vit_video.models, vit_video.checkpoints, vit_video.configs; "
          "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tensorflow_datasets', 'torch')))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == "[]"


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

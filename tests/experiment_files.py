"""The experiment config files (experiments/*.py) loaded by path, as `ml_collections`' --config flag loads them."""
import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_module(name: str):
  """experiments/<name>.py as a module."""
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "experiments", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(name: str, arg: str | None = None):
  """`get_config(arg)` of experiments/<name>.py (the locked config, as `--config=experiments/<name>.py:arg`)."""
  return load_module(name).get_config(arg)

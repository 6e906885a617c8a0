"""The software a result was measured with, for the notes of committed results."""
import os
import platform
from importlib import metadata

_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorflow-cpu", "tensorflow-datasets", "numpy")


def versions() -> str:
  """Python, the platform and the versions of the packages that shape the numbers."""
  found = []
  for name in _PACKAGES:
    try:
      found.append(f"{name} {metadata.version(name)}")
    except metadata.PackageNotFoundError:
      continue
  return f"Python {platform.python_version()} on {platform.machine()} ({os.cpu_count()} CPUs); " + ", ".join(found)

"""Atomic file writes: a kill or crash leaves either the old file or the new one, never half of either."""
import os
import tempfile
from collections.abc import Callable
from typing import IO


def write_atomic(path: str, write: Callable[[IO], None], *, mode: str = "w", suffix: str = "") -> None:
  """Calls `write(f)` on a temporary file in `path`'s folder (created if missing), fsyncs it, and renames it over
  `path`. `mode` is "w" (text, newlines as written) or "wb"; `suffix` ends the temporary name (e.g. ".png")."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=suffix)
  try:
    with os.fdopen(fd, mode, **({"newline": ""} if "b" not in mode else {})) as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise

"""TensorFlow's in-memory filesystem `ram://` made reachable through `etils.epath`, for tests of non-local workdirs.

etils.epath knows gs://, s3://, az:// and hf:// only; `register()` adds `ram://` paths backed by `tf.io.gfile`
(TensorFlow serves ram:// itself), so that everything that goes through epath (the run folder, orbax's metadata,
tfds) reaches it, and anything that uses `os.path` or `open` on a workdir fails: `open("ram://...")` finds no file
and `os.makedirs("ram://x")` makes a local folder named `ram:` that epath never sees. The files live in this
process's memory only.
"""
import posixpath
import uuid

from etils import epath
from etils.epath import backend, gpath

_PREFIX, _ROOT = "ram://", "/ram/"


class RamPath(gpath.PosixGPath):
  """`ram://...` through tf.io.gfile (parts are kept as `/ram/...`, as epath keeps `gs://` as `/gs/`)."""

  def __new__(cls, *parts):
    full = "/".join(str(p) for p in parts)
    if full.startswith(_PREFIX):
      full = full.replace(_PREFIX, _ROOT, 1)
    return super().__new__(cls, full)

  @property
  def _uri_scheme(self):
    return "ram" if len(self.parts) >= 2 and self.parts[:2] == ("/", "ram") else None

  @property
  def _backend(self):
    return backend.tf_backend

  @property
  def _path_str(self) -> str:
    return posixpath.join(_PREFIX, *self.parts[2:]) if self._uri_scheme else super()._path_str

  def iterdir(self):
    """The folder's entries. TensorFlow's RamFileSystem lists by string prefix (listing `run/1` also yields `0` of
    `run/10/...`, listing `run/checkpoints` the `_corrupt` of `run/checkpoints_corrupt`): only real ones are kept."""
    for child in super().iterdir():
      if child.exists():
        yield child


def register() -> None:
  """Makes `epath.Path("ram://...")` a RamPath (idempotent)."""
  epath.register_path_cls(_PREFIX)(RamPath)


def new_folder(name: str = "run") -> str:
  """A fresh `ram://` folder name (memory is per process, so names only need to be unique within it)."""
  register()
  return f"{_PREFIX}{uuid.uuid4().hex[:12]}/{name}"

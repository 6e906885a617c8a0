"""Checkpoints on filesystems orbax cannot write to: a local mirror, uploaded step by step.

orbax writes arrays through TensorStore, which reaches local folders and `gs://` only. A checkpoints folder
anywhere else that `etils.epath` reaches (s3://, az://, hf://, an in-memory filesystem in tests) is served by a
local mirror: the complete steps are downloaded into a temporary folder once, orbax saves and restores there, and
after each save `sync` uploads the new step (every file, then the `UPLOADED` marker last) and deletes the steps
orbax retired. A step counts as complete on the remote side only with its marker, so a kill during an upload
leaves a partial folder that is never read and is replaced at the next sync. Single-process only: on several
hosts each would mirror its own shards (use a local, shared or gs:// folder there). The local copy is deleted when
the checkpointer closes (the loop closes it on any exception); a SIGKILLed process leaves it in the temporary
folder.
"""
import logging
import shutil
import tempfile

import jax
from etils import epath

from vit_video.train.run_folder import is_uri

UPLOADED = "vit_video_uploaded"  # Written last into each uploaded step folder.

_log = logging.getLogger(__name__)


def orbax_native(path: epath.Path) -> bool:
  """True when orbax reads and writes `path` itself: a local folder or gs://."""
  return not is_uri(path) or str(path).startswith("gs://")


def copy_tree(src: epath.Path, dst: epath.Path, *, skip: tuple[str, ...] = ()) -> None:
  """Copies the files under `src` into `dst` (folders created; files named in `skip` left out)."""
  dst.mkdir(parents=True, exist_ok=True)
  for child in src.iterdir():
    if child.name in skip:
      continue
    if child.is_dir():
      copy_tree(child, dst / child.name, skip=skip)
    else:
      with child.open("rb") as source, (dst / child.name).open("wb") as target:
        shutil.copyfileobj(source, target, length=16 << 20)  # 16 MiB at a time, not the whole array file


def complete_steps(remote: epath.Path) -> list[epath.Path]:
  """The step folders of `remote` that were uploaded whole, oldest first."""
  if not remote.exists():
    return []
  steps = [p for p in remote.iterdir() if p.name.isdigit() and (p / UPLOADED).exists()]
  return sorted(steps, key=lambda p: int(p.name))


def download_step(step: epath.Path, local: epath.Path) -> None:
  """One uploaded step folder into `local` (which must not exist yet)."""
  copy_tree(step, local, skip=(UPLOADED,))


class Mirror:
  """A local copy of the checkpoints folder `remote`; `local` is what orbax works on, `sync` publishes it."""

  def __init__(self, remote: epath.Path):
    if jax.process_count() > 1:
      raise ValueError(f"{remote}: orbax writes only local and gs:// folders, and a mirror of another "
                       f"filesystem serves one process; with {jax.process_count()} processes use a local, "
                       "shared or gs:// workdir")
    self.remote = remote
    self.local = epath.Path(tempfile.mkdtemp(prefix="vit_video_checkpoints_"))
    try:
      steps = complete_steps(remote)
      for step in steps:
        download_step(step, self.local / step.name)
    except BaseException:
      self.close()
      raise
    if steps:
      _log.info("mirrored %d checkpoint(s) of %s into %s", len(steps), remote, self.local)

  def sync(self) -> None:
    """Uploads the local steps that `remote` lacks whole, then deletes the remote steps no longer kept."""
    local = {p.name for p in self.local.iterdir() if p.name.isdigit()}
    complete = {p.name for p in complete_steps(self.remote)}
    for name in sorted(local - complete, key=int):
      target = self.remote / name
      if target.exists():  # a partial upload of a killed run
        target.rmtree()
      copy_tree(self.local / name, target)
      (target / UPLOADED).write_text("")
    if self.remote.exists():
      for path in self.remote.iterdir():
        if path.name.isdigit() and path.name not in local:
          path.rmtree()

  def move_aside(self, name: str, target: epath.Path) -> None:
    """Moves the remote step `name` (a damaged one) to `target`: copied, then deleted."""
    source = self.remote / name
    if source.exists():
      copy_tree(source, target)
      source.rmtree()

  def close(self) -> None:
    shutil.rmtree(str(self.local), ignore_errors=True)

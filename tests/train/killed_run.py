"""Runs `vit_video.main` and SIGKILLs the process at an exact point, to test resuming after a hard kill.

    python tests/train/killed_run.py MODE STEP -- [vit_video.main flags]

MODE 'after_step': kill right after step STEP's train metrics are written (between checkpoints).
MODE 'during_save': kill inside orbax's commit of checkpoint STEP, after every byte is written but before the
rename that makes it complete (the worst moment for an async save).
The kill is a real SIGKILL; only its timing is made deterministic by these hooks (test code only).
"""
import os
import signal
import sys

from absl import app
from orbax.checkpoint._src.path import atomicity

from vit_video import main
from vit_video.train import writers


def _die() -> None:
  sys.stdout.flush()
  os.kill(os.getpid(), signal.SIGKILL)


def install(mode: str, step: int) -> None:
  if mode == "after_step":
    write = writers.RunWriter.write

    def write_then_die(self, at, scalars, *, kind):
      write(self, at, scalars, kind=kind)
      if kind == "train" and at == step:
        _die()

    writers.RunWriter.write = write_then_die
  elif mode == "during_save":
    finalize = atomicity.AtomicRenameTemporaryPath.finalize

    async def die_before_commit(self, *args, **kwargs):
      if self.get_final().name == str(step):
        _die()
      return await finalize(self, *args, **kwargs)

    atomicity.AtomicRenameTemporaryPath.finalize = die_before_commit
  else:
    raise ValueError(f"unknown mode {mode!r}")


if __name__ == "__main__":
  mode, step, sep, *flags = sys.argv[1:]
  assert sep == "--", sys.argv
  install(mode, int(step))
  app.run(main.main, argv=[sys.argv[0], *flags])

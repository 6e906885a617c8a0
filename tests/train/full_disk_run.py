"""Runs `vit_video.main` with the process's file size limited (RLIMIT_FSIZE), so that writing a checkpoint fails
in the operating system as on a full disk (EFBIG instead of ENOSPC), to test what a user sees then.

    python tests/train/full_disk_run.py MAX_FILE_BYTES -- [vit_video.main flags]
"""
import resource
import signal
import sys

from absl import app

from vit_video import main

if __name__ == "__main__":
  limit, sep, *flags = sys.argv[1:]
  assert sep == "--", sys.argv
  signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
  resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), int(limit)))
  app.run(main.main, argv=[sys.argv[0], *flags])

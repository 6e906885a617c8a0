"""Runs a video sweep config: trains every model on every label, writes results.csv and results.md.

    python -m vit_video.video_sweep --config experiments/video_classics.py:sweep --workdir workdirs/video_classics

Re-running the same command resumes: finished runs are skipped, a half-finished one resumes from its newest
checkpoint (see vit_video.train.video_sweep).
"""
import logging
import os
import sys
import time

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Video sweep config file (path[:argument]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for the runs and the results.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.getLogger().setLevel(logging.WARNING)  # the runs' step logs go to their metrics.jsonl
  logging.getLogger("vit_video.train.video_sweep").setLevel(logging.INFO)  # one line per run
  import jax  # noqa: PLC0415  (TensorFlow and JAX load here, after flags are parsed)
  from vit_video import versions  # noqa: PLC0415
  from vit_video.train import video_sweep  # noqa: PLC0415
  start = time.perf_counter()
  command = "python -m vit_video.video_sweep " + " ".join(sys.argv[1:])
  rows = video_sweep.run_video_sweep(_CONFIG.value, _WORKDIR.value, command=command, notes=versions.versions())
  if jax.process_index() != 0:
    return
  print(video_sweep.markdown_table(rows))
  workdir = os.path.abspath(_WORKDIR.value)
  print(f"\n{len(rows)} models in {time.perf_counter() - start:.0f} s (this start). Results: "
        f"{os.path.join(workdir, 'results.csv')}, {os.path.join(workdir, 'results.md')}")


if __name__ == "__main__":
  app.run(main)

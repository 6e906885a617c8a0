"""Runs a sweep config: pre-trains every member, transfers each, writes results.csv, results.md, figure5.png.

    python -m vit_video.sweep --config experiments/vit_vs_resnet.py:quick --workdir workdirs/vit_vs_resnet \
        [--config.transfer.finetune.learning_rate=0.003 ...]

Re-running the same command resumes: finished members are skipped, a half-finished one resumes from its
newest checkpoint (see vit_video.train.sweep).
"""
import logging
import os
import sys
import time

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Sweep config file (path[:argument]).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for the members' runs and the results.")
flags.mark_flags_as_required(["config", "workdir"])

def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.getLogger().setLevel(logging.WARNING)  # the members' step logs go to their metrics.jsonl
  logging.getLogger("vit_video.train.sweep").setLevel(logging.INFO)  # one line per member and phase
  import jax  # noqa: PLC0415  (TensorFlow and JAX load here, after flags are parsed)
  from vit_video import versions  # noqa: PLC0415
  from vit_video.train import sweep, sweep_report  # noqa: PLC0415
  start = time.perf_counter()
  command = "python -m vit_video.sweep " + " ".join(sys.argv[1:])
  rows = sweep.run_sweep(_CONFIG.value, _WORKDIR.value, command=command, notes=versions.versions())
  if jax.process_index() != 0:
    return
  config = _CONFIG.value
  print(sweep_report.markdown_table(rows, list(config.transfer.datasets), list(config.transfer.fewshot.shots)))
  workdir = os.path.abspath(_WORKDIR.value)
  print(f"\n{len(rows)} members in {time.perf_counter() - start:.0f} s (this start). Results: "
        f"{os.path.join(workdir, 'results.csv')}, {os.path.join(workdir, 'results.md')}; "
        f"figure: {os.path.join(workdir, 'figure5.png')}")


if __name__ == "__main__":
  app.run(main)

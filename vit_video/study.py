"""Runs a study config: every member trained (or skipped when finished), the report written into the workdir.

    python -m vit_video.study --config=experiments/vit_vs_resnet.py:quick --workdir=workdirs/vit_vs_resnet
    python -m vit_video.study --config=experiments/video_classics.py:sweep --workdir=workdirs/video_classics
    python -m vit_video.study --config=experiments/video_transformers.py:sweep --workdir=gs://BUCKET/transformers

The config's `study` field names the study (vit_video/studies/). Re-running the same command resumes: finished
members are skipped, a half-finished one resumes from its newest checkpoint.
"""
import logging
import sys
import time

from absl import app, flags
from ml_collections import config_flags

from vit_video import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Study config file (path[:argument]).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder (or URI) for the members' runs and the report.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  import jax  # noqa: PLC0415  (TensorFlow and JAX load here, after flags are parsed)
  from vit_video import versions  # noqa: PLC0415
  from vit_video.studies import fourier_features, long_range, video_comparison, vit_vs_resnet, vqa  # noqa: PLC0415
  from vit_video.studies import captioning, motion_visualisation  # noqa: PLC0415
  studies = {"vit_vs_resnet": vit_vs_resnet, "video_comparison": video_comparison, "fourier_features": fourier_features,
             "vqa": vqa, "long_range": long_range, "captioning": captioning,
             "motion_visualisation": motion_visualisation}
  config = _CONFIG.value
  if "study" not in config or config.study not in studies:
    raise app.UsageError(f"the config's `study` field must name one of {', '.join(studies)}; got "
                         f"{config.study if 'study' in config else 'no such field'!r}")
  study = studies[config.study]
  logging.getLogger().setLevel(logging.WARNING)  # the members' step logs go to their metrics.jsonl
  logging.getLogger(study.__name__).setLevel(logging.INFO)  # one line per member and phase
  start = time.perf_counter()
  spec = getattr(sys.modules["__main__"], "__spec__", None)  # None when run as a script, not with -m
  command = f"python -m {spec.name if spec else 'vit_video.study'} " + " ".join(sys.argv[1:])
  rows = cli.exit_on_failure(lambda: study.run(config, _WORKDIR.value, command=command, notes=versions.versions()))
  if jax.process_index() != 0:
    return
  print(study.summary_table(config, rows))
  print(f"\n{len(rows)} rows in {time.perf_counter() - start:.0f} s (this start). Report in {_WORKDIR.value}: "
        + ", ".join(study.REPORT))


if __name__ == "__main__":
  app.run(main)

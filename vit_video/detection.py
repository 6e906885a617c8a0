"""Trains and evaluates a DETR experiment config (train/detection.py), or checks it for a slice of devices:

    python -m vit_video.data.prepare fmnist_scenes --data_dir data/tfds
    python -m vit_video.detection --config=experiments/detr_scenes.py --workdir=workdirs/detr_scenes \
        [--config.total_steps=2000 ...]
    python -m vit_video.detection --config=experiments/detr_pods.py --workdir=unused --dry_run [--devices=64]

Re-running the same command resumes from the newest checkpoint in the workdir. The dry run (train/dry_run.py)
prints the plan and exits 1 if it found problems.
"""
import logging

from absl import app, flags
from ml_collections import config_flags

from vit_video import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "DETR experiment config file (path[:argument]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for checkpoints, metrics and the summary.")
_DRY_RUN = cli.define_dry_run_flags()
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.getLogger().setLevel(logging.INFO)
  if _CONFIG.value.get("task") != "detection":
    raise app.UsageError(f"{_CONFIG.value.get('name')!r} is not a detection config (task != 'detection'); "
                         "classifiers train with `python -m vit_video.main`")
  if _DRY_RUN.dry_run.value:
    cli.dry_run(_CONFIG.value, _DRY_RUN)
  from vit_video.train import detection  # noqa: PLC0415
  _, s = cli.exit_on_failure(lambda: detection.train_and_evaluate_detr(_CONFIG.value, _WORKDIR.value))
  import jax  # noqa: PLC0415
  if jax.process_index() == 0:
    print(f"{s['name']} after {s['step']} steps: test AP {s['eval_AP']:.4f}, AP50 {s['eval_AP50']:.4f}, "
          f"AP75 {s['eval_AP75']:.4f}, AR100 {s['eval_AR100']:.4f}; {s['params']:,} parameters "
          f"({s['trained_params']:,} trained); {_WORKDIR.value}")


if __name__ == "__main__":
  app.run(main)

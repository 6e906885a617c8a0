"""Trains and evaluates a DETR experiment config (train/detection.py), e.g. the Fashion-MNIST scenes:

    python -m vit_video.data.prepare fmnist_scenes --data_dir data/tfds
    python -m vit_video.detection --config=experiments/detr_scenes.py --workdir=workdirs/detr_scenes \
        [--config.total_steps=2000 ...]

Re-running the same command resumes from the newest checkpoint in the workdir.
"""
import logging

from absl import app, flags
from ml_collections import config_flags

from vit_video import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "DETR experiment config file (path[:argument]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for checkpoints, metrics and the summary.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.getLogger().setLevel(logging.INFO)
  from vit_video.train import detection  # noqa: PLC0415  (TensorFlow loads here, after flags are parsed)
  _, s = cli.exit_on_failure(lambda: detection.train_and_evaluate_detr(_CONFIG.value, _WORKDIR.value))
  print(f"{s['name']} after {s['step']} steps: test AP {s['eval_AP']:.4f}, AP50 {s['eval_AP50']:.4f}, "
        f"AP75 {s['eval_AP75']:.4f}, AR100 {s['eval_AR100']:.4f}; {s['params']:,} parameters "
        f"({s['trained_params']:,} trained); {_WORKDIR.value}")


if __name__ == "__main__":
  app.run(main)

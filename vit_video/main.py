"""Trains and evaluates one experiment config, or checks it for a slice of devices without training (--dry_run).

    python -m vit_video.main --config=experiments/vit_fashion_mnist.py:quick --workdir=workdirs/vit_fmnist \
        [--config.optimizer.learning_rate=3e-3 ...]
    python -m vit_video.main --config=experiments/video_transformer_pods.py:model=vivit_b16x2_fe \
        --workdir=gs://... --dry_run [--devices=256 --hosts=32] [--dry_run_compile]

Re-running the same command resumes from the newest checkpoint in the workdir. A dry run (train/dry_run.py)
touches no workdir and no accelerator, prints the plan, and exits with status 1 when it found a problem.
"""
import logging

from absl import app, flags
from ml_collections import config_flags

from vit_video import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (path[:argument]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for checkpoints, metrics and the summary.")
_DRY_RUN = cli.define_dry_run_flags()
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.getLogger().setLevel(logging.INFO)
  if _DRY_RUN.dry_run.value:
    cli.dry_run(_CONFIG.value, _DRY_RUN)
  if _CONFIG.value.get("task") == "detection":
    raise app.UsageError(f"{_CONFIG.value.name!r} is a detection config: train it with `python -m "
                         "vit_video.detection`")
  from vit_video.train import loop  # noqa: PLC0415
  _, s = cli.exit_on_failure(lambda: loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value))
  import jax  # noqa: PLC0415
  if jax.process_index() == 0:
    print(f"{s['name']} after {s['step']} steps: test top-1 {s['eval_top1']:.2%}, top-5 {s['eval_top5']:.2%}, "
          f"loss {s['eval_loss']:.4f}; {s['params']:,} parameters, {s['train_gflop_total'] / 1e3:,.1f} TFLOP of "
          f"training; {_WORKDIR.value}")


if __name__ == "__main__":
  app.run(main)

"""Trains and evaluates one experiment config, or checks it for a slice of devices without training (--dry_run).

    python -m vit_video.main --config=experiments/vit_fashion_mnist.py:quick --workdir=workdirs/vit_fmnist \
        [--config.optimizer.learning_rate=3e-3 ...]
    python -m vit_video.main --config=experiments/video_transformer_pods.py:model=vivit_b16x2_fe \
        --workdir=gs://... --dry_run [--devices=256 --hosts=32] [--dry_run_compile]

Re-running the same command resumes from the newest checkpoint in the workdir. A dry run (train/dry_run.py)
touches no workdir and no accelerator, prints the plan, and exits with status 1 when it found a problem.
"""
import logging
import sys

from absl import app, flags
from ml_collections import config_flags

from vit_video import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (path[:argument]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for checkpoints, metrics and the summary.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Check the config on a slice of devices instead of training.")
_DEVICES = flags.DEFINE_integer("devices", 0, "--dry_run: devices of the slice (0: the config's declared slice).")
_HOSTS = flags.DEFINE_integer("hosts", 0, "--dry_run: hosts of the slice (0: as the declared slice has them).")
_DRY_RUN_COMPILE = flags.DEFINE_bool("dry_run_compile", False,
                                     "--dry_run: also compile one device's train step for XLA's activation memory.")
_CHECK_DATA = flags.DEFINE_bool("check_data", True, "--dry_run: check that data_dir holds the dataset.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.getLogger().setLevel(logging.INFO)
  if _DRY_RUN.value:
    from vit_video.train import dry_run  # noqa: PLC0415  (TensorFlow loads here, after flags are parsed)
    plan = dry_run.plan(_CONFIG.value, devices=_DEVICES.value, hosts=_HOSTS.value, check_data=_CHECK_DATA.value,
                        compile_step=_DRY_RUN_COMPILE.value)
    print(plan.report())
    sys.exit(1 if plan.problems else 0)
  from vit_video.train import loop  # noqa: PLC0415
  _, s = cli.exit_on_failure(lambda: loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value))
  import jax  # noqa: PLC0415
  if jax.process_index() == 0:
    print(f"{s['name']} after {s['step']} steps: test top-1 {s['eval_top1']:.2%}, top-5 {s['eval_top5']:.2%}, "
          f"loss {s['eval_loss']:.4f}; {s['params']:,} parameters, {s['train_gflop_total'] / 1e3:,.1f} TFLOP of "
          f"training; {_WORKDIR.value}")


if __name__ == "__main__":
  app.run(main)

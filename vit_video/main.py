"""Trains and evaluates one experiment config.

    python -m vit_video.main --config=experiments/vit_fashion_mnist.py:quick --workdir=workdirs/vit_fmnist \
        [--config.optimizer.learning_rate=3e-3 ...]

Re-running the same command resumes from the newest checkpoint in the workdir.
"""
import logging

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (path[:argument]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for checkpoints, metrics and the summary.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.getLogger().setLevel(logging.INFO)
  from vit_video.train import loop  # noqa: PLC0415  (TensorFlow loads here, after flags are parsed)
  _, s = loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  import jax  # noqa: PLC0415
  if jax.process_index() == 0:
    print(f"{s['name']} after {s['step']} steps: test top-1 {s['eval_top1']:.2%}, top-5 {s['eval_top5']:.2%}, "
          f"loss {s['eval_loss']:.4f}; {s['params']:,} parameters, {s['train_gflop_total'] / 1e3:,.1f} TFLOP of "
          f"training; {_WORKDIR.value}")


if __name__ == "__main__":
  app.run(main)

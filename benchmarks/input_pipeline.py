"""Train-iterator throughput (images/s) on prepared Fashion-MNIST, batch 128, flip + crop augmentation.

  python -m vit_video.data.prepare fashion_mnist_local   # once
  python benchmarks/input_pipeline.py [--data_dir ./data/tfds] [--steps 500] [--randaugment_layers 0]
  python benchmarks/input_pipeline.py --process_count 4   # host 0 of 4 (its batch: batch_size / 4)

Measures the pipeline alone (numpy batches pulled as fast as possible, no model), after a warm-up that
covers building the pipeline, the first full shuffle and filling the in-memory cache. With --process_count P
it measures host 0 of P alone (images/s of that host's rows); under the default host_sharding 'global' the host
still reads every record, so this shows the price of reading the rows of the other hosts.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from vit_video.data import pipeline  # noqa: E402
from vit_video.data.augment import AugmentConfig  # noqa: E402


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data_dir", default=os.path.join(".", "data", "tfds"))
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--steps", type=int, default=500)
  parser.add_argument("--warmup_steps", type=int, default=20)
  parser.add_argument("--randaugment_layers", type=int, default=0)
  parser.add_argument("--mixup_alpha", type=float, default=0.0)
  parser.add_argument("--process_count", type=int, default=1)
  parser.add_argument("--host_sharding", choices=pipeline.HOST_SHARDINGS, default="global")
  args = parser.parse_args(argv)

  augment = AugmentConfig(crop_padding=4, flip=True, randaugment_layers=args.randaugment_layers,
                          mixup_alpha=args.mixup_alpha)
  start = time.perf_counter()
  iterator = pipeline.make_train_iterator(
      "fashion_mnist_local", "train", args.data_dir, global_batch_size=args.batch_size, image_size=28, seed=0,
      start_step=0, process_index=0, process_count=args.process_count, augment=augment, num_classes=10,
      host_sharding=args.host_sharding)
  next(iterator)
  first = time.perf_counter() - start
  for _ in range(args.warmup_steps):
    next(iterator)
  start = time.perf_counter()
  for _ in range(args.steps):
    next(iterator)
  elapsed = time.perf_counter() - start
  b = args.batch_size // args.process_count
  print(f"{augment}\nhost_sharding {args.host_sharding!r}, host 0 of {args.process_count}, batch {b}: first batch "
        f"after {first:.2f} s; {args.steps} steps in {elapsed:.2f} s = {args.steps * b / elapsed:,.0f} images/s "
        f"({os.cpu_count()} CPUs)")


if __name__ == "__main__":
  main(sys.argv[1:])

"""Is the input pipeline ever the bottleneck? Train-iterator throughput (images/s) on prepared Fashion-MNIST
against the consumption of the experiment's model (a ViT-S-sized model by default), flip + crop augmentation.

  python benchmarks/input_pipeline.py --model_variant vit_s4 --batch_size 256   # pipeline vs model vs both

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
  parser.add_argument("--model_variant", default="", help="a variant of experiments/vit_fashion_mnist.py: also "
                      "time its train step alone and fed by the pipeline")
  parser.add_argument("--model_steps", type=int, default=30)
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
  if args.model_variant:
    consumption(args, iterator)


def consumption(args, iterator) -> None:
  """Images/s of the model's train step on one fixed batch, then fed by the pipeline (as the loop runs)."""
  import importlib.util  # noqa: PLC0415
  import jax  # noqa: PLC0415
  from vit_video.train import loop, parallel  # noqa: PLC0415
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  spec = importlib.util.spec_from_file_location("exp", os.path.join(root, "experiments", "vit_fashion_mnist.py"))
  exp = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(exp)
  config = exp.get_config(f"variant={args.model_variant}")
  config.batch_size = args.batch_size
  config.optimizer.warmup_steps = 0
  trainer = loop.Trainer(config, total_steps=10 * args.model_steps)
  state = trainer.init(0)
  batch = parallel.host_batch_to_global(next(iterator), trainer.layout)
  trainer.compile(state, batch)
  state, metrics = trainer.train_step(state, batch)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(args.model_steps):
    state, metrics = trainer.train_step(state, batch)
  jax.block_until_ready(metrics)
  alone = args.model_steps * args.batch_size / (time.perf_counter() - start)
  start = time.perf_counter()
  for _ in range(args.model_steps):
    state, metrics = trainer.train_step(state, parallel.host_batch_to_global(next(iterator), trainer.layout))
  jax.block_until_ready(metrics)
  fed = args.model_steps * args.batch_size / (time.perf_counter() - start)
  print(f"model {args.model_variant} ({dict(config.model)}), batch {args.batch_size}: train step alone "
        f"{alone:,.0f} images/s; fed by the pipeline {fed:,.0f} images/s ({fed / alone:.0%} of alone)")


if __name__ == "__main__":
  main(sys.argv[1:])

"""Is the clip pipeline ever the bottleneck? Decoded clips/s of the training iterator against a C3D train step.

  python -m vit_video.data.prepare moving_fmnist_actions   # once
  python benchmarks/video_pipeline.py [--data_dir ./data/tfds] [--image_size 32] [--flow] [--batch_size 64]
  python benchmarks/video_pipeline.py --image_size 112 --model c3d_paper --batch_size 8   # C3D at its own size

Measures the clip iterator alone (numpy batches of 16-frame clips pulled as fast as possible, random windows,
crops and flips, PNG frames decoded per clip), after a warm-up that covers building the pipeline and the first
shuffle; then C3D's train step alone on one fixed batch, and fed by the iterator (as the training loop runs).
`--model c3d` is experiments/video_classics.py's C3D (width x 1/8, 16x32x32); `c3d_paper` the published C3D
(16x112x112, 78M parameters at 101 classes; the 32x32 frames are upsampled to 112). `--flow` also reads,
crops and stacks the stored optical flow.
"""
import argparse
import importlib.util
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from vit_video.data import video_pipeline  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data_dir", default=os.path.join(".", "data", "tfds"))
  parser.add_argument("--dataset", default="moving_fmnist_actions")
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--image_size", type=int, default=32)
  parser.add_argument("--num_frames", type=int, default=16)
  parser.add_argument("--flow", action="store_true")
  parser.add_argument("--steps", type=int, default=100)
  parser.add_argument("--warmup_steps", type=int, default=10)
  parser.add_argument("--model", choices=("c3d", "c3d_paper", "none"), default="c3d")
  parser.add_argument("--model_steps", type=int, default=10)
  args = parser.parse_args(argv)

  start = time.perf_counter()
  iterator = video_pipeline.make_clip_train_iterator(
      args.dataset, "train", args.data_dir, global_batch_size=args.batch_size, num_frames=args.num_frames,
      frame_stride=1, image_size=args.image_size, seed=0, process_index=0, process_count=1, flow=args.flow)
  next(iterator)
  first = time.perf_counter() - start
  for _ in range(args.warmup_steps):
    next(iterator)
  start = time.perf_counter()
  for _ in range(args.steps):
    next(iterator)
  pipeline_rate = args.steps * args.batch_size / (time.perf_counter() - start)
  print(f"clip pipeline: {args.dataset}, {args.num_frames} frames at {args.image_size}x{args.image_size}"
        f"{' + flow' if args.flow else ''}, batch {args.batch_size}: first batch after {first:.1f} s; "
        f"{pipeline_rate:,.0f} clips/s ({os.cpu_count()} CPUs)")
  if args.model != "none":
    consumption(args, iterator, pipeline_rate)


def consumption(args, iterator, pipeline_rate: float) -> None:
  """Clips/s of C3D's train step on one fixed batch, then fed by the iterator."""
  import jax  # noqa: PLC0415
  from vit_video.train import loop, parallel  # noqa: PLC0415
  spec = importlib.util.spec_from_file_location("exp", os.path.join(ROOT, "experiments", "video_classics.py"))
  exp = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(exp)
  config = exp.member_config("c3d")
  with config.unlocked():
    config.dataset.data_dir = args.data_dir
    config.dataset.image_size = args.image_size
    config.video.num_frames = args.num_frames
    config.video.flow = False
    config.batch_size = args.batch_size
    config.optimizer.warmup_steps = 0
    if args.model == "c3d_paper":
      config.model.width_multiplier = 1.0
      config.model.input_size = (args.num_frames, args.image_size, args.image_size)
  trainer = loop.Trainer(config, total_steps=10 * args.model_steps)
  state = trainer.init(0)
  host = {k: v for k, v in next(iterator).items() if k != "flow"}
  batch = parallel.host_batch_to_global(host, trainer.layout)
  train_gflop = trainer.compile(state, batch)[0] / 1e9  # XLA FLOPs of one train step
  state, metrics = trainer.train_step(state, batch)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(args.model_steps):
    state, metrics = trainer.train_step(state, batch)
  jax.block_until_ready(metrics)
  seconds = time.perf_counter() - start
  alone = args.model_steps * args.batch_size / seconds
  start = time.perf_counter()
  for _ in range(args.model_steps):
    host = {k: v for k, v in next(iterator).items() if k != "flow"}
    state, metrics = trainer.train_step(state, parallel.host_batch_to_global(host, trainer.layout))
  jax.block_until_ready(metrics)
  fed = args.model_steps * args.batch_size / (time.perf_counter() - start)
  params = sum(x.size for x in jax.tree.leaves(trainer.abstract_params))
  print(f"model {args.model} ({params:,} parameters, {train_gflop / args.batch_size:.2f} train GFLOP per clip): train step alone {alone:,.1f} clips/s "
        f"({train_gflop * args.model_steps / seconds:.1f} GFLOP/s); fed by the pipeline {fed:,.1f} clips/s "
        f"({fed / alone:.0%} of alone). The pipeline alone delivers {pipeline_rate / alone:.1f}x what the step "
        f"consumes.")


if __name__ == "__main__":
  main(sys.argv[1:])

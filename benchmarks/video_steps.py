"""Train-step time of every member of a video experiment on a fixed random batch (no input pipeline), so the
numbers do not depend on what else shared the machine during a sweep.

    python benchmarks/video_steps.py [--experiment experiments/video_transformers.py] [--members a,b] [--batch 64]

Prints per member: parameters, XLA GFLOP per clip (one forward pass), compile seconds, the fastest of
--repeats step seconds (the training loop's step, `steps.make_train_step`: forward with dropout and BatchNorm
updates, backward, an AdamW update) and clips per second. Nothing here is a test;
run it on an otherwise idle machine.
"""
import argparse
import importlib.util
import time

import jax
import jax.numpy as jnp
import optax

from vit_video.train import flops, loop, steps


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--experiment", default="experiments/video_transformers.py")
  parser.add_argument("--members", default="", help="comma-separated MEMBERS keys (default all)")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  spec = importlib.util.spec_from_file_location("experiment", args.experiment)
  experiment = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(experiment)
  names = args.members.split(",") if args.members else list(experiment.MEMBERS)
  print(f"{'member':>22} {'params':>9} {'GFLOP/clip':>10} {'compile s':>9} {'step s':>7} {'clips/s':>7}")
  for name in names:
    config = experiment.member_config(name)
    model = loop.build_model(config)
    shapes = loop.input_shapes(config)
    keys = type(model).inputs  # the model contract's batch keys: ("video",), or ("video", "flow") for two-stream
    batch = {key: jax.random.normal(jax.random.key(i), (args.batch, *shape))
             for i, (key, shape) in enumerate(zip(keys, shapes))}
    batch["label"] = jnp.zeros((args.batch,), jnp.int32)
    tx = optax.adamw(1e-3)
    state = steps.init_state(model, tx, jax.random.key(0), shapes, ema=False)
    step = steps.make_train_step(model, tx, num_classes=config.num_classes, label_smoothing=config.label_smoothing,
                                 ema_decay=0.0, schedule=lambda _: 1e-3)  # the sweep's step: dropout, BatchNorm
    start = time.perf_counter()
    compiled = jax.jit(step).lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    inputs = [batch[key][:1] for key in keys]
    forward = jax.jit(lambda p, *x: model.apply({"params": p, **({"batch_stats": state.batch_stats}
                                                                  if state.batch_stats else {})}, *x, train=False))
    jax.block_until_ready(compiled(state, batch))
    times = []
    for _ in range(args.repeats):
      start = time.perf_counter()
      jax.block_until_ready(compiled(state, batch))
      times.append(time.perf_counter() - start)
    count = sum(a.size for a in jax.tree.leaves(state.params))
    gflop = flops.cost_analysis_flops(forward.lower(state.params, *inputs)) / 1e9
    print(f"{name:>22} {count:>9,d} {gflop:>10.3f} {compile_s:>9.1f} {min(times):>7.3f} "
          f"{args.batch / min(times):>7.0f}", flush=True)


if __name__ == "__main__":
  main()

"""Train-step time of every member of a video experiment on a fixed random batch (no input pipeline), so the
numbers do not depend on what else shared the machine during a sweep.

    python benchmarks/video_steps.py [--experiment experiments/video_transformers.py] [--members a,b] [--batch 64]

Prints per member: parameters, XLA GFLOP per clip (one forward pass), compile seconds, the fastest of
--repeats step seconds (forward, backward and an AdamW update) and clips per second. Nothing here is a test;
run it on an otherwise idle machine.
"""
import argparse
import importlib.util
import time

import jax
import jax.numpy as jnp
import optax

from vit_video.train import flops, loop, optim


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
    inputs = [jax.random.normal(jax.random.key(i), (args.batch, *shape))
              for i, shape in enumerate(loop.input_shapes(config))]
    labels = jnp.zeros((args.batch,), jnp.int32)
    params = jax.jit(lambda k: model.init(k, *(x[:1] for x in inputs), train=False))(jax.random.key(0))["params"]
    tx = optax.adamw(1e-3)

    def step(params, opt_state, inputs, labels):
      loss = lambda p: optim.cross_entropy(model.apply({"params": p}, *inputs, train=True), labels,  # noqa: E731
                                           num_classes=config.num_classes).mean()
      value, grads = jax.value_and_grad(loss)(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state, value

    start = time.perf_counter()
    compiled = jax.jit(step).lower(params, tx.init(params), inputs, labels).compile()
    compile_s = time.perf_counter() - start
    forward = jax.jit(lambda p, *x: model.apply({"params": p}, *x, train=False)).lower(
        params, *(x[:1] for x in inputs))
    opt_state = tx.init(params)
    jax.block_until_ready(compiled(params, opt_state, inputs, labels))
    times = []
    for _ in range(args.repeats):
      start = time.perf_counter()
      jax.block_until_ready(compiled(params, opt_state, inputs, labels))
      times.append(time.perf_counter() - start)
    count = sum(a.size for a in jax.tree.leaves(params))
    print(f"{name:>22} {count:>9,d} {flops.cost_analysis_flops(forward) / 1e9:>10.3f} {compile_s:>9.1f} "
          f"{min(times):>7.3f} {args.batch / min(times):>7.0f}", flush=True)


if __name__ == "__main__":
  main()

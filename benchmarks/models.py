"""Model speed on this machine: forward and train-step time, XLA GFLOP per step, and the achieved rate as a
fraction of this machine's float32 matmul rate measured in the same run.

    python benchmarks/models.py [--models vit_b16,resnet50] [--batch 8] [--repeats 5]

Prints a table; nothing here is a test. Run it on an otherwise idle machine.
"""
import argparse
import time

import jax
import jax.numpy as jnp
import optax

from vit_video import models
from vit_video.train import flops, optim


def timed(fn, *args, repeats: int) -> float:
  """Median seconds per call of a compiled function (after one warm-up call)."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return sorted(times)[len(times) // 2]


def matmul_rate(n: int = 2048, repeats: int = 10) -> float:
  """float32 GFLOP/s of a jitted n x n matmul: the machine's practical peak."""
  a = jax.random.normal(jax.random.key(0), (n, n))
  dot = jax.jit(lambda a, b: a @ b).lower(a, a).compile()
  return 2 * n**3 / timed(dot, a, a, repeats=repeats) / 1e9


def bench(name: str, batch: int, repeats: int, **overrides) -> dict:
  family = models.model_class(name)
  if family.inputs != ("image",):
    raise ValueError(f"{name} ({family.__name__}) takes {family.inputs}; this benchmark times image models "
                     f"(benchmarks/video_steps.py times the video ones)")
  model = models.create_model(name, num_classes=1000, **overrides)
  x = jax.random.normal(jax.random.key(1), (batch, 224, 224, 3))
  labels = jnp.zeros((batch,), jnp.int32)
  variables = jax.jit(lambda k: model.init(k, x[:1], train=False))(jax.random.key(0))
  tx = optax.sgd(0.1, momentum=0.9)
  opt_state = tx.init(variables["params"])
  has_bn = family.batch_norm

  def train_step(variables, opt_state, x, labels):
    def loss_fn(params):
      out = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"] if has_bn else False)
      logits, new = out if has_bn else (out, {})
      return optim.cross_entropy(logits, labels, num_classes=1000).mean(), new
    (loss, new), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
    updates, opt_state = tx.update(grads, opt_state, variables["params"])
    return {**variables, **new, "params": optax.apply_updates(variables["params"], updates)}, opt_state, loss

  forward = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, x).compile()
  step = jax.jit(train_step).lower(variables, opt_state, x, labels).compile()
  fwd_s = timed(forward, variables, x, repeats=repeats)
  step_s = timed(step, variables, opt_state, x, labels, repeats=repeats)
  step_gflop = flops.cost_analysis_flops(step) / 1e9
  return {"model": name, "fwd_ms": 1e3 * fwd_s, "step_ms": 1e3 * step_s,
          "fwd_gflop": flops.cost_analysis_flops(forward) / 1e9, "step_gflop": step_gflop,
          "step_gflops": step_gflop / step_s}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="vit_b16,resnet50")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--attention", default="einsum", choices=["einsum", "fused"],
                      help="einsum trains faster on this CPU (66%% vs 62%% of matmul for ViT-B/16); fused runs the "
                      "forward pass faster")
  parser.add_argument("--approximate_gelu", action="store_true", help="tanh GELU (vit_jax) instead of exact erf")
  args = parser.parse_args()
  peak = matmul_rate()
  print(f"devices: {jax.devices()}; float32 2048^2 matmul: {peak:.1f} GFLOP/s (the reference rate below)")
  print(f"{'model':<10}{'batch':>6}{'fwd ms':>9}{'step ms':>9}{'fwd GFLOP':>11}{'step GFLOP':>12}"
        f"{'step GFLOP/s':>14}{'of matmul':>11}")
  for name in args.models.split(","):
    overrides = ({"attention_implementation": args.attention, "approximate_gelu": args.approximate_gelu}
                 if "vit" in name else {})
    r = bench(name, args.batch, args.repeats, **overrides)
    print(f"{r['model']:<10}{args.batch:>6}{r['fwd_ms']:>9.0f}{r['step_ms']:>9.0f}{r['fwd_gflop']:>11.1f}"
          f"{r['step_gflop']:>12.1f}{r['step_gflops']:>14.1f}{r['step_gflops'] / peak:>10.0%}")


if __name__ == "__main__":
  main()

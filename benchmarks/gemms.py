"""The matrix products of a ViT-B/16 train step (batch 8, 197 tokens), one at a time, in XLA and in PyTorch: where
the transformers' remaining gap to timm lives (README, "Speed against PyTorch").

    python benchmarks/gemms.py [--repeats 20]

Each product runs in its own jitted program (XLA) and as `torch.matmul` in a second process, started after the
first ends, each with the machine to itself; the fastest of --repeats calls, as GFLOP/s. Forward products are
[M,K] x [K,N] with M = 8 x 197 tokens; the backward ones are the same layers' input gradients ([M,N] x [N,K]) and
kernel gradients ([K,M] x [M,N], contracting over the tokens); attention's are batched over 8 x 12 heads.
Nothing here is a test; run it on an otherwise idle machine.
"""
import argparse
import json
import os
import subprocess
import sys
import time

M, D, H, MLP, TOKENS, BH = 8 * 197, 768, 12, 3072, 197, 8 * 12
# name: (batch, m, k, n, transposed): [m,k] x [k,n] products, FLOPs 2 batch m k n; `transposed`: the lhs is stored as
# [k,m] (activations contracted over their token axis, as in a kernel gradient) and transposed in the product.
PRODUCTS = {
    "qkv forward": (1, M, D, 3 * D, False),
    "mlp fc1 forward": (1, M, D, MLP, False),
    "mlp fc2 forward": (1, M, MLP, D, False),
    "mlp fc1 input grad": (1, M, MLP, D, False),
    "mlp fc1 kernel grad": (1, D, M, MLP, True),
    "attention q k^T": (BH, TOKENS, D // H, TOKENS, False),
    "attention weights v": (BH, TOKENS, TOKENS, D // H, False),
}


def time_jax(repeats: int) -> dict[str, float]:
  import jax
  results = {}
  for name, (batch, m, k, n, transposed) in PRODUCTS.items():
    a = jax.random.normal(jax.random.key(0), (batch, k, m) if transposed else (batch, m, k))
    b = jax.random.normal(jax.random.key(1), (batch, k, n))
    f = jax.jit(lambda a, b: (a.swapaxes(1, 2) if transposed else a) @ b).lower(a, b).compile()
    jax.block_until_ready(f(a, b))
    best = min(_timed(lambda: jax.block_until_ready(f(a, b))) for _ in range(repeats))
    results[name] = 2 * batch * m * k * n / best / 1e9
  return results


def time_torch(repeats: int) -> dict[str, float]:
  import torch
  results = {}
  for name, (batch, m, k, n, transposed) in PRODUCTS.items():
    a = torch.randn(batch, k, m).transpose(1, 2) if transposed else torch.randn(batch, m, k)  # a strided view
    b = torch.randn(batch, k, n)
    a @ b
    results[name] = 2 * batch * m * k * n / min(_timed(lambda: a @ b) for _ in range(repeats)) / 1e9
  return results


def _timed(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument("--framework", choices=["jax", "torch"], help=argparse.SUPPRESS)  # a child process's part
  args = parser.parse_args()
  if args.framework:
    print(json.dumps((time_jax if args.framework == "jax" else time_torch)(args.repeats)))
    return
  rates = {}
  for framework in ("jax", "torch"):
    out = subprocess.run([sys.executable, __file__, "--framework", framework, "--repeats", str(args.repeats)],
                         check=True, capture_output=True, text=True, env=os.environ).stdout
    rates[framework] = json.loads(out.strip().splitlines()[-1])
  print(f"{'product':<22}{'shape':>34}{'XLA GFLOP/s':>13}{'torch GFLOP/s':>15}{'XLA/torch':>11}")
  for name, (batch, m, k, n, transposed) in PRODUCTS.items():
    shape = (f"{batch} x " if batch > 1 else "") + f"[{m},{k}]{'^T' if transposed else ''} x [{k},{n}]"
    x, t = rates["jax"][name], rates["torch"][name]
    print(f"{name:<22}{shape:>34}{x:>13.0f}{t:>15.0f}{x / t:>10.0%}")


if __name__ == "__main__":
  main()

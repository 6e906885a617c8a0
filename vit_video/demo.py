"""A short tour of the model zoo: parameter counts of every named model and one forward pass.

    python -m vit_video.demo

Counts come from `jax.eval_shape`, so even ViT-H/14 costs no memory.
"""
import time

import jax
import jax.numpy as jnp

from vit_video import models


def main() -> None:
  print(f"{'model':<16}{'parameters':>15}   (224x224, 1000 classes)")
  for name in models.MODELS:
    print(f"{name:<16}{models.count_params(models.create_model(name, num_classes=1000)):>15,}")
  x = jax.random.normal(jax.random.key(0), (8, 28, 28, 1))
  model = models.create_model("vit_ti16", num_classes=10, patch_size=4, in_channels=1)
  variables = jax.jit(lambda k: model.init(k, x, train=False))(jax.random.key(1))
  forward = jax.jit(lambda v, x: model.apply(v, x, train=False))
  jax.block_until_ready(forward(variables, x))
  start = time.perf_counter()
  logits = jax.block_until_ready(forward(variables, x))
  print(f"\nViT-Ti/4 on a [8,28,28,1] batch -> logits {tuple(logits.shape)} {logits.dtype} "
        f"in {1e3 * (time.perf_counter() - start):.1f} ms")


if __name__ == "__main__":
  main()

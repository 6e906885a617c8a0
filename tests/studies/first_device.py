"""`on_first_device()`: the studies' tests train every member on a mesh of one device.

A study is not about sharding (the loop's tests cover it on 8 devices), and a 1-device program of these toy models
compiles and runs in well under the time of its 8-device SPMD form.
"""
import contextlib

import jax

from vit_video.train import parallel


@contextlib.contextmanager
def on_first_device():
  """Every `Trainer` built in the block lays its jit mesh on `jax.devices()[:1]` (pmap is left as it is)."""
  make_layout = parallel.make_layout

  def first_device(parallelism, *, fsdp=False, devices=None):
    return make_layout(parallelism, fsdp=fsdp, devices=jax.devices()[:1] if devices is None else devices)

  parallel.make_layout = first_device
  try:
    yield
  finally:
    parallel.make_layout = make_layout

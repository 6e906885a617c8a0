"""One process of a two-run job, for tests/train/test_distributed.py: pre-trains a tiny ViT (asynchronous
checkpoints at steps 2 and 4), then fine-tunes it from that checkpoint with FSDP, two `train_and_evaluate` calls
in one process (under `jax.distributed` when given a coordinator), and prints both summaries as one JSON line.

    python tests/train/distributed_run.py DATA_DIR WORKDIR [COORDINATOR NUM_PROCESSES PROCESS_ID]
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.train.test_loop import tiny_config  # noqa: E402
from vit_video.train import loop  # noqa: E402


def configs(data_dir: str, workdir: str, distributed: dict):
  # Width 64 and MLP 256: the two 64x256 MLP kernels reach FSDP's size threshold and are sharded.
  model = {"model.width": 64, "model.mlp_dim": 256, "model.num_heads": 4}
  # Pre-training saves at steps 2 and 4 without blocking (what a multi-process job's orbax must commit together).
  pretrain = tiny_config(data_dir, **model, total_steps=4, **distributed,
                         **{"checkpoint.save_every_steps": 2, "checkpoint.async_save": True})
  finetune = tiny_config(data_dir, **model, total_steps=4, fsdp=True, seed=1, **distributed,
                         **{"init.checkpoint": os.path.join(workdir, "pretrain"), "init.reset_head": True})
  return pretrain, finetune


def main(data_dir: str, workdir: str, *job: str) -> None:
  distributed = {}
  if job:
    address, count, index = job
    distributed = {"distributed.initialize": True, "distributed.coordinator_address": address,
                   "distributed.num_processes": int(count), "distributed.process_id": int(index)}
  pretrain, finetune = configs(data_dir, workdir, distributed)
  _, first = loop.train_and_evaluate(pretrain, os.path.join(workdir, "pretrain"))
  _, second = loop.train_and_evaluate(finetune, os.path.join(workdir, "finetune"))
  print(json.dumps({"pretrain": first, "finetune": second}))


if __name__ == "__main__":
  main(*sys.argv[1:])

"""One process of the two-process clip job of tests/train/test_multihost.py: the tiny single-frame model on the tiny
moving Fashion-MNIST trained twice in one process under `jax.distributed`, with `dataset.host_sharding` "global"
then "split" (the second run finds the first one's programs compiled), each in its own folder of WORKDIR.

    python tests/train/multihost_clips_run.py DATA_DIR WORKDIR COORDINATOR NUM_PROCESSES PROCESS_ID
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.experiment_files import get_config  # noqa: E402
from vit_video.train import loop  # noqa: E402

HOST_SHARDINGS = ("global", "split")


def config(data_dir: str, host_sharding: str, **distributed):
  """4 steps of 8 clips, a loss logged every step, one checkpoint at the end, 2 views per test video: the one-process
  run's command-line flags in test_multihost.py (`_video_flags`)."""
  c = get_config("video_classics", f"model=single_frame,tiny,data_dir={data_dir}")
  c.total_steps, c.log_every_steps, c.checkpoint.save_every_steps = 4, 1, 4
  c.dataset.host_sharding = host_sharding
  c.distributed.update(distributed)
  return c


def main(data_dir: str, workdir: str, address: str, count: str, index: str) -> None:
  for host_sharding in HOST_SHARDINGS:
    loop.train_and_evaluate(
        config(data_dir, host_sharding, initialize=True, coordinator_address=address, num_processes=int(count),
               process_id=int(index)), os.path.join(workdir, host_sharding))


if __name__ == "__main__":
  main(*sys.argv[1:])

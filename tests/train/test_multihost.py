"""Multi-host data parallelism for real: two processes on 127.0.0.1 (2 CPU devices each, CPU collectives) train
clips exactly as one `python -m vit_video.main` process with 4 devices: the same global batches, losses and
multi-view evaluation. The job (tests/train/multihost_clips_run.py) runs at the same time as the one process, and
trains its second run (another host sharding) after its first, finding its programs compiled. Images across two
processes (losses, evaluation counts, asynchronous checkpoints, FSDP): tests/train/test_distributed.py; a job
started with a command line's `--config.distributed.*` flags: DETR's in tests/train/test_detection.py."""
import os
import socket
import subprocess
import sys

import numpy as np

from tests.train import multihost_clips_run
from tests.train.test_resume import ROOT
from tests.xla_flags import xla_flags
from vit_video.train.run_folder import RunFolder

DRIVER = os.path.join(ROOT, "tests", "train", "multihost_clips_run.py")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict:
  return dict(os.environ, XLA_FLAGS=xla_flags(devices), TF_CPP_MIN_LOG_LEVEL="2")


def _start(flags: list[str]) -> subprocess.Popen:
  """`python -m vit_video.main` in one process with 4 devices."""
  return subprocess.Popen([sys.executable, "-m", "vit_video.main", *flags], cwd=ROOT, env=_env(4),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait(procs: list[subprocess.Popen]) -> None:
  try:
    outputs = [p.communicate(timeout=600) for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]


def _metric(workdir: str, kind: str, key: str) -> np.ndarray:
  return np.array([r[key] for r in RunFolder(workdir).read_metrics() if r["kind"] == kind])


def _video_flags(data_dir: str, workdir: str) -> list[str]:
  """A tiny single-frame model on the tiny moving Fashion-MNIST, 4 steps of 8 clips, 2 views per test video: the
  job's 'global' run (multihost_clips_run.config)."""
  return [f"--config={ROOT}/experiments/video_classics.py:model=single_frame,tiny,data_dir={data_dir}",
          f"--workdir={workdir}", "--config.total_steps=4", "--config.log_every_steps=1",
          "--config.checkpoint.save_every_steps=4", "--config.dataset.host_sharding=global"]


def test_two_processes_train_and_evaluate_clips_as_one(tiny_moving_fmnist, tmp_path):
  """'global' host sharding: the two processes' train losses and per-video evaluation are the one process's.
  'split' (each process streams its own 30 training clips): other batches, and still each of the 30 test videos
  counted once (each process evaluates its 15, numbered apart)."""
  one, job, address = str(tmp_path / "one"), str(tmp_path / "job"), f"127.0.0.1:{_free_port()}"
  _wait([_start(_video_flags(tiny_moving_fmnist, one)), *(subprocess.Popen(
      [sys.executable, DRIVER, tiny_moving_fmnist, job, address, "2", str(i)], cwd=ROOT, env=_env(2),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2))])
  two, split = (os.path.join(job, name) for name in multihost_clips_run.HOST_SHARDINGS)
  losses = _metric(one, "train", "loss")
  assert len(losses) == 4
  np.testing.assert_allclose(_metric(two, "train", "loss"), losses, rtol=1e-5)
  for key in ("top1", "clip_top1", "loss"):
    np.testing.assert_allclose(_metric(two, "eval", key), _metric(one, "eval", key), rtol=1e-5)
  for run in (one, two, split):
    np.testing.assert_array_equal(_metric(run, "eval", "count"), [30.0])
    np.testing.assert_array_equal(_metric(run, "eval", "views"), [60.0])
  assert len(_metric(split, "train", "loss")) == 4 and not np.allclose(_metric(split, "train", "loss"), losses)

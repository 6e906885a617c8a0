"""Multi-host data parallelism for real, through the command line's `--config.distributed.*` flags: two
`python -m vit_video.main` processes on 127.0.0.1 (2 CPU devices each, CPU collectives) train exactly as one process
with 4 devices: the same global batches, losses and multi-view evaluation of clips. The jobs a test compares run at
the same time, except a job whose programs another job compiles: it waits, and finds them in the suite's
compilation cache (the root conftest.py). Images across two processes (losses, evaluation counts, asynchronous
checkpoints, FSDP): tests/train/test_distributed.py."""
import os
import socket
import subprocess
import sys

import numpy as np

from tests.train.test_resume import ROOT
from tests.xla_flags import xla_flags
from vit_video.train.run_folder import RunFolder


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict:
  return dict(os.environ, XLA_FLAGS=xla_flags(devices), TF_CPP_MIN_LOG_LEVEL="2")


def _start(flags: list[str], processes: int) -> list[subprocess.Popen]:
  """A job of `python -m vit_video.main`: one process with 4 devices, or `processes` of 2 devices each."""
  def popen(args, devices):
    return subprocess.Popen([sys.executable, "-m", "vit_video.main", *flags, *args], cwd=ROOT, env=_env(devices),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  if processes == 1:
    return [popen([], 4)]
  address = f"127.0.0.1:{_free_port()}"
  return [popen(["--config.distributed.initialize=True", f"--config.distributed.coordinator_address={address}",
                 f"--config.distributed.num_processes={processes}", f"--config.distributed.process_id={i}"], 2)
          for i in range(processes)]


def _wait(procs: list[subprocess.Popen]) -> None:
  try:
    outputs = [p.communicate(timeout=300) for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]


def _metric(workdir: str, kind: str, key: str) -> np.ndarray:
  return np.array([r[key] for r in RunFolder(workdir).read_metrics() if r["kind"] == kind])


def _video_flags(data_dir: str, workdir: str, host_sharding: str) -> list[str]:
  """A tiny single-frame model on the tiny moving Fashion-MNIST, 4 steps of 8 clips, 2 views per test video."""
  return [f"--config={ROOT}/experiments/video_classics.py:model=single_frame,tiny,data_dir={data_dir}",
          f"--workdir={workdir}", "--config.total_steps=4", "--config.log_every_steps=1",
          "--config.checkpoint.save_every_steps=4", f"--config.dataset.host_sharding={host_sharding}"]


def test_two_processes_train_and_evaluate_clips_as_one(tiny_moving_fmnist, tmp_path):
  """'global' host sharding: the two processes' train losses and per-video evaluation are the one process's.
  'split' (each process streams its own 30 training clips): other batches, and still each of the 30 test videos
  counted once (each process evaluates its 15, numbered apart)."""
  one, two, split = (str(tmp_path / name) for name in ("one", "two", "split"))
  _wait([*_start(_video_flags(tiny_moving_fmnist, one, "global"), 1),
         *_start(_video_flags(tiny_moving_fmnist, two, "global"), 2)])
  _wait(_start(_video_flags(tiny_moving_fmnist, split, "split"), 2))  # after 'two': its programs are cached
  losses = _metric(one, "train", "loss")
  assert len(losses) == 4
  np.testing.assert_allclose(_metric(two, "train", "loss"), losses, rtol=1e-5)
  for key in ("top1", "clip_top1", "loss"):
    np.testing.assert_allclose(_metric(two, "eval", key), _metric(one, "eval", key), rtol=1e-5)
  for run in (one, two, split):
    np.testing.assert_array_equal(_metric(run, "eval", "count"), [30.0])
    np.testing.assert_array_equal(_metric(run, "eval", "views"), [60.0])
  assert len(_metric(split, "train", "loss")) == 4 and not np.allclose(_metric(split, "train", "loss"), losses)

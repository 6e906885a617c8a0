"""Multi-host data parallelism for real: two processes on 127.0.0.1 (2 CPU devices each, CPU collectives)
train exactly as one process with 4 devices: the same global batches, losses and evaluation."""
import os
import socket
import subprocess
import sys

import numpy as np

from tests.train.test_resume import ROOT, main_flags
from vit_video.train.run_folder import RunFolder


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict:
  return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", TF_CPP_MIN_LOG_LEVEL="2")


def _flags(data_dir: str, workdir: str) -> list[str]:
  return [*main_flags(data_dir, workdir), "--config.total_steps=6", "--config.eval_every_steps=0",
          "--config.checkpoint.save_every_steps=3"]


def test_two_processes_match_one_process(tiny_fmnist, tmp_path):
  one = str(tmp_path / "one")
  proc = subprocess.run([sys.executable, "-m", "vit_video.main", *_flags(tiny_fmnist, one)], cwd=ROOT, env=_env(4),
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]

  two = str(tmp_path / "two")
  address = f"127.0.0.1:{_free_port()}"
  procs = [subprocess.Popen(
      [sys.executable, "-m", "vit_video.main", *_flags(tiny_fmnist, two), "--config.distributed.initialize=True",
       f"--config.distributed.coordinator_address={address}", "--config.distributed.num_processes=2",
       f"--config.distributed.process_id={i}"], cwd=ROOT, env=_env(2), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for i in range(2)]
  try:
    outputs = [p.communicate(timeout=300) for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]

  def losses(workdir, kind, key):
    return np.array([r[key] for r in RunFolder(workdir).read_metrics() if r["kind"] == kind])

  np.testing.assert_allclose(losses(two, "train", "loss"), losses(one, "train", "loss"), rtol=1e-5)
  assert len(losses(one, "train", "loss")) == 6
  np.testing.assert_allclose(losses(two, "eval", "top1"), losses(one, "eval", "top1"), rtol=1e-6)
  np.testing.assert_allclose(losses(two, "eval", "count"), [70.0])
  assert sorted(os.listdir(os.path.join(two, "checkpoints"))) == ["3", "6"]

"""Distributed set-up once per process, and fine-tuning from a checkpoint when FSDP shards the state across
processes: two real processes on 127.0.0.1 (2 CPU devices each) call `train_and_evaluate` twice, pre-training
then fine-tuning with FSDP, and match one process with 4 devices."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.experiment_files import ROOT
from vit_video.train import parallel
from vit_video.train.run_folder import RunFolder

DRIVER = os.path.join(ROOT, "tests", "train", "distributed_run.py")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start(args: list[str], devices: int) -> subprocess.Popen:
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.Popen([sys.executable, DRIVER, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _summaries(procs: list[subprocess.Popen]) -> list[dict]:
  try:
    outputs = [p.communicate(timeout=400) for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]
  return [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]


def _losses(workdir: str) -> np.ndarray:
  return np.array([r["loss"] for r in RunFolder(workdir).read_metrics() if r["kind"] == "train"])


def test_two_runs_per_process_and_fsdp_finetuning_across_processes(tiny_fmnist, tmp_path):
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  address = f"127.0.0.1:{_free_port()}"
  procs = [_start([tiny_fmnist, one], devices=4)]
  procs += [_start([tiny_fmnist, two, address, "2", str(i)], devices=2) for i in range(2)]
  (single,), pair = _summaries(procs[:1]), _summaries(procs[1:])
  for run in ("pretrain", "finetune"):
    np.testing.assert_allclose(_losses(os.path.join(two, run)), _losses(os.path.join(one, run)), rtol=1e-5)
    assert len(_losses(os.path.join(one, run))) == 4
    # Every process gets the summary from the call; both hold the same numbers as the one-process run.
    for key in ("eval_top1", "eval_loss", "params", "step"):
      assert pair[0][run][key] == pair[1][run][key] == pytest.approx(single[run][key], rel=1e-5), (run, key)
  # The fine-tuning started from the pre-trained body: its first loss is far below a fresh model's (log 10).
  assert _losses(os.path.join(one, "finetune"))[0] < _losses(os.path.join(one, "pretrain"))[0]


def test_initialize_distributed_once_per_process(monkeypatch):
  calls = []
  joined = {"yes": False}
  monkeypatch.setattr(parallel.jax.distributed, "is_initialized", lambda: joined["yes"])

  def initialize(**kwargs):
    calls.append(kwargs)
    joined["yes"] = True

  monkeypatch.setattr(parallel.jax.distributed, "initialize", initialize)
  parallel.initialize_distributed()  # no coordinator: the cluster's environment supplies everything
  parallel.initialize_distributed()  # a second run in the same process: nothing to do
  assert calls == [{}]
  with pytest.raises(ValueError, match="already joined a job as process 0 of 1, not 1 of 4"):
    parallel.initialize_distributed(coordinator_address="10.0.0.1:1234", num_processes=4, process_id=1)
  parallel.initialize_distributed(coordinator_address="10.0.0.1:1234", num_processes=1, process_id=0)
  assert calls == [{}]


@pytest.mark.parametrize("kwargs, message", [
    ({"coordinator_address": "h:1", "num_processes": 2, "process_id": 2}, "needs 0 <= process_id < num_processes"),
    ({"coordinator_address": "h:1"}, "needs 0 <= process_id < num_processes"),
    ({"num_processes": 2, "process_id": 0}, "without a coordinator_address"),
])
def test_initialize_distributed_refuses_half_a_job(kwargs, message):
  with pytest.raises(ValueError, match=message):
    parallel.initialize_distributed(**kwargs)

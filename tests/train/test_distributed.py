"""Distributed set-up once per process, multi-host data parallelism for images, and fine-tuning from a checkpoint
when FSDP shards the state across processes: two real processes on 127.0.0.1 (2 CPU devices each) call
`train_and_evaluate` twice, pre-training then fine-tuning with FSDP, and match the same two runs in this process
(8 devices), run before them: the same losses, evaluation of every test image once, summaries, checkpoints.
(Multi-host clips, and the command line's `--config.distributed.*` flags: tests/train/test_multihost.py.)"""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.experiment_files import ROOT
from tests.train import distributed_run
from tests.xla_flags import xla_flags
from vit_video.train import loop, parallel
from vit_video.train.run_folder import RunFolder

DRIVER = os.path.join(ROOT, "tests", "train", "distributed_run.py")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start(args: list[str], devices: int, log: str) -> subprocess.Popen:
  """The driver in a process of its own; its output goes to files (a full pipe nobody reads while this process
  trains would stall it, and its peer with it)."""
  env = dict(os.environ, XLA_FLAGS=xla_flags(devices), TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.Popen([sys.executable, DRIVER, *args], cwd=ROOT, env=env, stdout=open(f"{log}.out", "w"),
                          stderr=open(f"{log}.err", "w"), text=True)


def _summaries(procs: list[subprocess.Popen], logs: list[str]) -> list[dict]:
  try:
    for p in procs:
      p.wait(timeout=600)
  finally:
    for p in procs:
      p.kill()
  for p, log in zip(procs, logs):
    assert p.returncode == 0, open(f"{log}.err").read()[-3000:]
  return [json.loads(open(f"{log}.out").read().strip().splitlines()[-1]) for log in logs]


def _losses(workdir: str) -> np.ndarray:
  return np.array([r["loss"] for r in RunFolder(workdir).read_metrics() if r["kind"] == "train"])


def test_two_runs_per_process_and_fsdp_finetuning_across_processes(tiny_fmnist, tmp_path):
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  address = f"127.0.0.1:{_free_port()}"
  # The reference first, then the pair: not at the same time (a suite run aborted in this process's checkpoint
  # checksums while the pair ran beside it; cause not found).
  pretrain, finetune = distributed_run.configs(tiny_fmnist, one, {})
  single = {"pretrain": loop.train_and_evaluate(pretrain, os.path.join(one, "pretrain"))[1],
            "finetune": loop.train_and_evaluate(finetune, os.path.join(one, "finetune"))[1]}
  logs = [str(tmp_path / f"process{i}") for i in range(2)]
  procs = [_start([tiny_fmnist, two, address, "2", str(i)], devices=2, log=logs[i]) for i in range(2)]
  pair = _summaries(procs, logs)
  for run in ("pretrain", "finetune"):  # 8 devices here against 2 x 2 there: reductions in another order
    np.testing.assert_allclose(_losses(os.path.join(two, run)), _losses(os.path.join(one, run)), rtol=1e-4)
    assert len(_losses(os.path.join(one, run))) == 4
    # The two hosts' evaluation shards hold each of the 70 test images once.
    assert [r["count"] for r in RunFolder(os.path.join(two, run)).read_metrics() if r["kind"] == "eval"] == [70.0]
    # Every process gets the summary from the call; both hold the same numbers as the one-process run.
    for key in ("eval_top1", "eval_loss", "params", "step"):
      assert pair[0][run][key] == pair[1][run][key] == pytest.approx(single[run][key], rel=1e-4), (run, key)
  # The job's asynchronous saves at steps 2 and 4 were all committed (the fine-tuning restored step 4).
  assert sorted(os.listdir(os.path.join(two, "pretrain", "checkpoints"))) == ["2", "4"]
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

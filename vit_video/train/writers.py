"""What a user sees of a run: a progress bar or log lines, `metrics.jsonl`, TensorBoard events, JSON files.

All files are written by process 0 only. JSON files are written atomically (temporary file, then rename), so a
kill never leaves half a file; `metrics.jsonl` is cut back to the restored step on resume, so a resumed run's
file equals an uninterrupted run's.
"""
import json
import logging
import os
import sys
import time
from typing import Any

import jax
import tqdm

from clu import metric_writers

from vit_video.train import atomic_files


def write_json_atomic(path: str, obj: Any) -> None:
  """Writes JSON to a temporary file in the same folder, fsyncs, and renames it over `path`."""
  atomic_files.write_atomic(path, lambda f: json.dump(obj, f, indent=2, sort_keys=True, default=float),
                            suffix=".json")


def read_metrics(workdir: str) -> list[dict]:
  """The records of `workdir/metrics.jsonl` (a torn last line from a kill is ignored)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  records = []
  with open(path) as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        break
  return records


class RunWriter:
  """Logs scalars to metrics.jsonl, TensorBoard and the terminal (tqdm on a TTY, log lines otherwise)."""

  def __init__(self, workdir: str, *, total_steps: int, start_step: int, global_batch_size: int,
               progress_bar: bool | None = None):
    self.is_main = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.global_batch_size = global_batch_size
    if self.is_main:
      self._truncate(start_step)
    self.tb = metric_writers.create_default_writer(
        os.path.join(workdir, "tensorboard"), just_logging=not self.is_main, asynchronous=False)
    use_bar = sys.stderr.isatty() if progress_bar is None else progress_bar
    self.bar = tqdm.tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                         disable=not (use_bar and self.is_main))
    self._last = (time.perf_counter(), start_step)

  def _truncate(self, start_step: int) -> None:
    """Keeps only records of steps <= start_step (those a resumed run will not write again)."""
    kept = [r for r in read_metrics(os.path.dirname(self.path)) if r["step"] <= start_step]
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in kept)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, self.path)

  def write(self, step: int, scalars: dict[str, float], *, kind: str) -> None:
    """Records scalars of `kind` ('train' or 'eval') at `step`."""
    scalars = {k: float(v) for k, v in scalars.items()}
    if kind == "train":
      now = time.perf_counter()
      seconds, steps = now - self._last[0], step - self._last[1]
      if steps > 0:
        scalars["examples_per_second"] = steps * self.global_batch_size / seconds
      self._last = (now, step)
    if self.is_main:
      with open(self.path, "a") as f:
        f.write(json.dumps({"step": step, "kind": kind, **scalars}, sort_keys=True) + "\n")
    self.tb.write_scalars(step, {f"{kind}/{k}": v for k, v in scalars.items()})
    if self.bar.disable:
      if self.is_main:
        logging.info("step %d %s: %s", step, kind, ", ".join(f"{k}={v:.4g}" for k, v in sorted(scalars.items())))
    else:
      shown = {k: f"{v:.4g}" for k, v in scalars.items() if k in ("loss", "top1", "examples_per_second")}
      self.bar.set_postfix(shown if kind == "train" else {f"eval_{k}": v for k, v in shown.items()}, refresh=False)

  def advance(self, step: int) -> None:
    self.bar.update(step - self.bar.n)

  def close(self) -> None:
    self.bar.close()
    self.tb.flush()
    self.tb.close()

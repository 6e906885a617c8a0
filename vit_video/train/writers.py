"""What a user sees of a run: a progress bar or log lines, `metrics.jsonl` and TensorBoard events.

All files are written by process 0 only, through the run folder (`train/run_folder.py`, any filesystem);
`metrics.jsonl` is cut back to the restored step on resume, so a resumed run's file equals an uninterrupted
run's. On a local disk every record is appended as it comes; on other filesystems, where an append rewrites the
whole object, records wait for `flush()`, which the loop calls before every checkpoint (so the file always holds
every record up to the newest checkpoint) and `close()` calls last.
"""
import logging
import sys
import time

import jax
import tqdm

from clu import metric_writers

from vit_video.train.run_folder import RunFolder, is_uri


class RunWriter:
  """Logs scalars to metrics.jsonl, TensorBoard and the terminal (tqdm on a TTY, log lines otherwise)."""

  def __init__(self, folder: RunFolder, *, total_steps: int, start_step: int, global_batch_size: int,
               progress_bar: bool | None = None):
    self.is_main = jax.process_index() == 0
    self.folder = folder
    self.global_batch_size = global_batch_size
    self._buffered = is_uri(folder.path)
    self._pending: list[dict] = []
    if self.is_main:
      folder.keep_metrics_until(start_step)
    self.tb = metric_writers.create_default_writer(
        str(folder.tensorboard), just_logging=not self.is_main, asynchronous=False)
    use_bar = sys.stderr.isatty() if progress_bar is None else progress_bar
    self.bar = tqdm.tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                         disable=not (use_bar and self.is_main))
    self._last = (time.perf_counter(), start_step)

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
      self._pending.append({"step": step, "kind": kind, **scalars})
      if not self._buffered:
        self.flush()
    self.tb.write_scalars(step, {f"{kind}/{k}": v for k, v in scalars.items()})
    if self.bar.disable:
      if self.is_main:
        logging.info("step %d %s: %s", step, kind, ", ".join(f"{k}={v:.4g}" for k, v in sorted(scalars.items())))
    else:
      shown = {k: f"{v:.4g}" for k, v in scalars.items() if k in ("loss", "top1", "examples_per_second")}
      self.bar.set_postfix(shown if kind == "train" else {f"eval_{k}": v for k, v in shown.items()}, refresh=False)

  def advance(self, step: int) -> None:
    self.bar.update(step - self.bar.n)

  def flush(self) -> None:
    """Appends the records not yet in metrics.jsonl."""
    if self.is_main:
      self.folder.append_metrics(self._pending)
    self._pending = []

  def close(self) -> None:
    self.flush()
    self.bar.close()
    self.tb.flush()
    self.tb.close()

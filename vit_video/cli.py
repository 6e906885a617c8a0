"""What the command lines (`main.py`, `detection.py`, `study.py`) share: how a failed run ends, the dry run."""
import dataclasses
import logging
import os
import sys
import traceback
from collections.abc import Callable
from typing import TypeVar

from absl import flags

T = TypeVar("T")


def exit_on_failure(run: Callable[[], T]) -> T:
  """`run()`; when it raises, prints the traceback and then, last, one line naming the error, and leaves at once
  with status 1. Leaving at once (os._exit, after flushing) keeps the cause the last thing on screen: at a normal
  interpreter exit, orbax's abandoned background writes of a failed save print hundreds of lines of
  `ImportError: sys.meta_path is None` / `Event loop is closed` tracebacks."""
  try:
    return run()
  except (KeyboardInterrupt, SystemExit):
    raise
  except Exception as e:  # noqa: BLE001
    traceback.print_exc()
    logging.shutdown()  # flushes the log handlers
    text = str(e).strip() or repr(e)
    print(f"\nerror: {type(e).__name__}: {text}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


@dataclasses.dataclass(frozen=True)
class DryRunFlags:
  dry_run: flags.FlagHolder
  devices: flags.FlagHolder
  hosts: flags.FlagHolder
  compile_step: flags.FlagHolder
  check_data: flags.FlagHolder


def define_dry_run_flags() -> DryRunFlags:
  """--dry_run, --devices, --hosts, --dry_run_compile and --check_data (call once, at a command's import)."""
  return DryRunFlags(
      flags.DEFINE_bool("dry_run", False, "Check the config on a slice of devices instead of training."),
      flags.DEFINE_integer("devices", 0, "--dry_run: devices of the slice (0: the config's declared slice)."),
      flags.DEFINE_integer("hosts", 0, "--dry_run: hosts of the slice (0: as the declared slice has them)."),
      flags.DEFINE_bool("dry_run_compile", False,
                        "--dry_run: also compile one device's train step for XLA's activation memory."),
      flags.DEFINE_bool("check_data", True, "--dry_run: check that data_dir holds the dataset."))


def dry_run(config, f: DryRunFlags) -> None:
  """Prints train/dry_run.py's plan of `config` on the flags' slice and exits: status 1 if it found problems."""
  from vit_video.train import dry_run as planner  # noqa: PLC0415  (TensorFlow loads here, after flags are parsed)
  plan = planner.plan(config, devices=f.devices.value, hosts=f.hosts.value, check_data=f.check_data.value,
                      compile_step=f.compile_step.value)
  print(plan.report())
  sys.exit(1 if plan.problems else 0)

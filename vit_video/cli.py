"""What the command lines (`main.py`, `study.py`) share: how a failed run ends."""
import logging
import os
import sys
import traceback
from collections.abc import Callable
from typing import TypeVar

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

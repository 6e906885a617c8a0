"""Test set-up: 8 forced CPU devices so that sharding code is exercised, XLA's cheap CPU compile pipeline
(tests/xla_flags.py), and one persistent XLA compilation cache per run of the suite.

All are environment variables set before jax is first imported (hence here and not in a fixture), so the
pytest-xdist workers and the subprocesses the tests start (`python -m vit_video.main ...`) inherit them. The tests
train the same tiny models many times (every resumed, repeated or fine-tuned run compiles the programs of an
earlier one): with the cache XLA compiles each program once per run of the suite. The cache is a new temporary
folder, made by the first process (the xdist controller) and deleted when its session ends; a cache folder the
caller set is used and left alone.
"""
import os
import shutil
import tempfile

from tests.xla_flags import xla_flags  # a plain module: imports nothing

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + xla_flags(8)).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="vit_video_xla_cache_")
  os.environ["VIT_VIDEO_TEST_CACHE_OWNER"] = str(os.getpid())
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


def pytest_sessionfinish(session):
  if os.environ.get("VIT_VIDEO_TEST_CACHE_OWNER") == str(os.getpid()):  # the process that made the folder
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


# The slowest test files (worker seconds in one full run here, with other jobs on the machine; most first) run first,
# so that the two xdist workers (`--dist loadfile` hands out whole files in collection order) end together instead
# of one waiting on a long file that started last. Every other file keeps its place after these.
SLOWEST_FIRST = (
    "tests/studies/test_vit_vs_resnet.py",  # 340 s; about 295 s after issue 17's cuts (estimate: CPU 150 -> 130 s)
    "tests/test_notebooks.py",  # 140 s (111 s, plus the DETR notebook's 28 s alone)
    "tests/studies/test_video_comparison.py",  # 120 s; about 115 s after issue 17's cut (estimate: CPU 67 -> 64 s)
    "tests/train/test_distributed.py",  # 101 s
    "tests/train/test_resume.py",  # 88 s
    "tests/train/test_loop.py",  # 79 s
    "tests/train/test_failures.py",  # 77 s
    "tests/train/test_detection.py",  # 65 s (its tests' --durations alone, about 60 s)
    "tests/train/test_multihost.py",  # 133 s; about 60 s after issue 17's cuts (estimate: CPU 136 -> 61 s)
    "tests/train/test_dry_run.py",  # 60 s (alone)
)


def pytest_collection_modifyitems(items):
  rank = {path: i for i, path in enumerate(SLOWEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(SLOWEST_FIRST)))  # stable: file order kept

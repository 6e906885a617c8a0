"""Prepares a dataset into a tfds data_dir, the only place in vit_video that may download data.

  python -m vit_video.data.prepare fashion_mnist_local                 # offline; fetches the Debian package
  python -m vit_video.data.prepare fashion_mnist_local --manual_dir DIR  # offline; idx files already in DIR
  python -m vit_video.data.prepare cifar10 --data_dir /data/tfds        # any tfds catalogue name; needs network

Training and evaluation never download: `pipeline.check_prepared` fails at once and prints the command above.
"""
import argparse
import os
import subprocess
import sys
import time

import tensorflow_datasets as tfds

from vit_video.data import fashion_mnist_local  # noqa: F401  (defining the builder registers it with tfds)

DEFAULT_DATA_DIR = os.path.join(".", "data", "tfds")
DEFAULT_FASHION_MNIST_RAW_DIR = os.path.join(".", "data", "raw", "fashion_mnist")
FETCH_SCRIPT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "scripts",
    "fetch_fashion_mnist.sh")


def prepare_command(name: str, data_dir: str) -> str:
  """The shell command that prepares `name` into `data_dir` (quoted in error messages)."""
  return f"python -m vit_video.data.prepare {name} --data_dir {data_dir}"


def fetch_fashion_mnist(dest: str) -> None:
  """Runs scripts/fetch_fashion_mnist.sh DEST (apt-get download + dpkg -x; a no-op when DEST has the files)."""
  if not os.path.exists(FETCH_SCRIPT):
    raise ValueError(
        f"{FETCH_SCRIPT} not found (vit_video is not run from a source checkout): fetch the four idx files "
        "yourself and pass --manual_dir")
  subprocess.run(["bash", FETCH_SCRIPT, dest], check=True)


def prepare(name: str, data_dir: str, manual_dir: str | None = None) -> tfds.core.DatasetBuilder:
  """Builds dataset `name` into `data_dir` and returns its builder; a no-op when it is already prepared.

  `fashion_mnist_local` is built offline from the idx files in `manual_dir`; when `manual_dir` is None the
  Debian package is fetched into ./data/raw/fashion_mnist first. Any other name goes through
  `tfds.builder(name, data_dir=data_dir).download_and_prepare()`, which downloads (network needed), with
  `manual_dir` passed on for datasets that need manual downloads.
  """
  if name.split(":")[0] == "fashion_mnist_local" and manual_dir is None:
    manual_dir = DEFAULT_FASHION_MNIST_RAW_DIR
    fetch_fashion_mnist(manual_dir)
  builder = tfds.builder(name, data_dir=data_dir)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
      prog="python -m vit_video.data.prepare",
      description=(
          "Prepare a tfds dataset into DATA_DIR so that training can read it without downloading. "
          "`fashion_mnist_local` is built offline from the Debian package dataset-fashion-mnist (fetched with "
          "scripts/fetch_fashion_mnist.sh into ./data/raw/fashion_mnist unless --manual_dir is given). Any "
          "other tfds name is downloaded by tfds: this needs network access, and this command is the only "
          "place where vit_video downloads data; without network it fails (tfds retries for minutes first)."))
  parser.add_argument("name", help="tfds name, e.g. fashion_mnist_local, cifar10, cifar10:3.0.2")
  parser.add_argument("--data_dir", default=DEFAULT_DATA_DIR,
                      help="tfds data_dir to write into (default: %(default)s, relative to the current directory)")
  parser.add_argument("--manual_dir", default=None,
                      help="directory with manually obtained source files (for fashion_mnist_local: the four "
                           "idx files, gzipped or not)")
  args = parser.parse_args(argv)
  start = time.perf_counter()
  builder = prepare(args.name, args.data_dir, args.manual_dir)
  counts = ", ".join(f"{split} {info.num_examples}" for split, info in builder.info.splits.items())
  print(f"{builder.info.full_name} prepared in {builder.data_dir} ({counts}) "
        f"after {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
  main(sys.argv[1:])

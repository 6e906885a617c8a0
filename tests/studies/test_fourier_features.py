"""The Fourier-features study: PSNR, the photographs and their pixel split, spectral bias on a 1D signal, and a
tiny end-to-end run (its report, the Gaussian B saved, a rerun that fits nothing)."""
import csv
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.experiment_files import get_config
from vit_video.data import photographs
from vit_video.models.coordinate_mlp import CoordinateMLP
from vit_video.studies import fourier_features


def test_psnr_of_identical_images_is_inf_and_of_a_known_mse_is_known():
  image = jax.random.uniform(jax.random.key(0), (5, 6, 3))
  assert float(fourier_features.psnr(image, image)) == np.inf
  assert float(fourier_features.psnr(jnp.full((4, 7, 3), 0.1), jnp.zeros((4, 7, 3)))) == pytest.approx(20.0)  # 1e-2
  half = jnp.zeros((2, 3)).at[0].set(1.0)  # half of the values off by 1: MSE 1/2, PSNR 10 log10(2)
  assert float(fourier_features.psnr(half, jnp.zeros((2, 3)))) == pytest.approx(10 * np.log10(2), rel=1e-5)
  with pytest.raises(ValueError, match="same shape"):
    fourier_features.psnr(jnp.zeros((2, 3)), jnp.zeros((3, 2)))


def test_split_partitions_the_pixels_into_the_even_grid_and_the_rest():
  """A 5 x 6 image: 3 x 3 training pixels at even rows and columns, the 21 others for testing; together every
  pixel once, each with its own coordinates (x = column / W, y = row / H) and value."""
  h, w = 5, 6
  image = np.arange(h * w * 2, dtype=np.float32).reshape(h, w, 2)
  s = photographs.split(image)
  assert s["train_coords"].shape == (9, 2) and s["train_pixels"].shape == (9, 2)
  assert s["test_coords"].shape == (21, 2) and s["test_pixels"].shape == (21, 2)
  coords = np.concatenate([s["train_coords"], s["test_coords"]])
  pixels = np.concatenate([s["train_pixels"], s["test_pixels"]])
  rows, cols = np.round(coords[:, 1] * h).astype(int), np.round(coords[:, 0] * w).astype(int)
  assert len(set(zip(rows, cols))) == h * w  # a partition: every pixel exactly once
  np.testing.assert_array_equal(pixels, image[rows, cols])
  assert set(rows[:9]) == {0, 2, 4} and set(cols[:9]) == {0, 2, 4}
  assert s["coords"].shape == (h, w, 2) and s["coords"].max() < 1 and s["coords"][0, 1, 0] == pytest.approx(1 / w)
  with pytest.raises(ValueError, match=r"\[H,W,C\]"):
    photographs.split(np.zeros((4, 4)))


def test_photographs_load_as_resized_centre_squares():
  image = photographs.load("chelsea", 20)  # 300 x 451 colour
  assert image.shape == (20, 20, 3) and image.dtype == np.float32 and 0 <= image.min() < image.max() <= 1
  camera = photographs.load("camera", 12)  # grey, repeated over the channels
  assert camera.shape == (12, 12, 3) and np.array_equal(camera[..., 0], camera[..., 2])
  with pytest.raises(ValueError, match="unknown photograph 'lena'"):
    photographs.load("lena", 8)
  with pytest.raises(ValueError, match=r"size=301 must be in \[1, 300\]"):
    photographs.load("chelsea", 301)


def test_without_a_mapping_a_small_mlp_cannot_fit_a_high_frequency_that_gaussian_features_fit():
  """Spectral bias (the paper's Figure 1 in 1D): sin(2 pi 6 x) sampled at 64 points, 300 Adam steps of a 3 x 32
  MLP. Without a mapping it stays near the mean (test PSNR < 15 dB); with 16 Gaussian features at sigma 4 it
  interpolates the held-out points (> 30 dB)."""
  x = np.arange(128, dtype=np.float32)[:, None] / 128  # [128,1]
  y = 0.5 + 0.4 * np.sin(2 * np.pi * 6 * x)  # [128,1]
  train = np.arange(128) % 2 == 0
  data = {"train_coords": x[train], "train_pixels": y[train], "test_coords": x[~train], "test_pixels": y[~train],
          "coords": x}
  test_psnr = {}
  for mapping in ("none", "gaussian"):
    model = CoordinateMLP(mapping=mapping, sigma=4.0, num_features=16, depth=3, width=32, out_features=1)
    result = fourier_features.fit(model, data, steps=300, learning_rate=1e-2, seed=0)
    assert result["reconstruction"].shape == (128, 1)
    test_psnr[mapping] = result["curve"][-1][2]
  assert test_psnr["none"] < 15 and test_psnr["gaussian"] > 30, test_psnr


def test_configs_pin_the_papers_setting():
  paper = get_config("fourier_features", "paper")
  assert (paper.image_size, paper.steps, paper.learning_rate) == (512, 2000, 1e-3)
  assert (paper.model.depth, paper.model.width, paper.model.num_features) == (4, 256, 256)
  cpu = get_config("fourier_features", "cpu")
  assert cpu.image_size == 64 and cpu.steps == 2000 and cpu.model.to_dict() == paper.model.to_dict()
  assert [cpu.members[m].mapping for m in cpu.order] == ["none", "basic", "positional"] + ["gaussian"] * 4
  assert fourier_features.make_model(cpu, "gaussian_10").sigma == pytest.approx(10 * 64 / 512)
  with pytest.raises(ValueError, match="pick one scale"):
    get_config("fourier_features", "cpu,tiny")


def test_tiny_study_writes_the_report_saves_b_and_a_rerun_fits_nothing(tmp_path, monkeypatch):
  config = get_config("fourier_features", "tiny")
  config.images = ("astronaut",)
  config.order = ("none", "gaussian_10")
  rows = fourier_features.run(config, str(tmp_path), command="pytest")
  assert [(r["image"], r["member"]) for r in rows] == [("astronaut", "none"), ("astronaut", "gaussian_10")]
  for name in fourier_features.REPORT:
    assert (tmp_path / name).exists()
  written = list(csv.DictReader(io.StringIO((tmp_path / "results.csv").read_text())))
  assert tuple(written[0]) == fourier_features.COLUMNS and len(written) == 2
  assert fourier_features.read_rows(tmp_path / "results.csv")[1]["test_psnr"] == pytest.approx(rows[1]["test_psnr"],
                                                                                              abs=1e-4)
  report = (tmp_path / "results.md").read_text()
  assert "| none | none |" in report and "19.32" in report and "25.57" in report and "Command: `pytest`" in report
  member = tmp_path / "astronaut" / "gaussian_10"
  assert fourier_features.read_png(member / "reconstruction.png").shape == (12, 12, 3)
  saved = np.load(member / "constants.npz")["constants/fourier_features/projection"]
  model = fourier_features.make_model(config, "gaussian_10")
  init = jax.eval_shape(lambda: model.init(jax.random.key(config.seed), jnp.zeros((1, 2)), train=False))
  assert "constants" in init and saved.shape == (2, config.model.num_features)
  b = model.init(jax.random.key(config.seed), jnp.zeros((1, 2)), train=False)["constants"]
  np.testing.assert_array_equal(saved, b["fourier_features"]["projection"])  # the B it was trained with
  assert not (tmp_path / "astronaut" / "none" / "constants.npz").exists()

  monkeypatch.setattr(fourier_features, "fit", lambda *a, **k: pytest.fail("a finished member was fitted again"))
  assert fourier_features.run(config, str(tmp_path), command="pytest") == rows
  config.images = ("lena",)
  with pytest.raises(ValueError, match="unknown: \\['lena'\\]"):
    fourier_features.run(config, str(tmp_path))

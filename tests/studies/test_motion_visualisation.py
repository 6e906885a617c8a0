"""The motion-visualisation study: its measures on hand-made maps, and the tiny config end to end (train 2 toy
video models and a toy ViT, explain, maximise, draw, report)."""
import csv
import io

import imageio.v2 as imageio
import numpy as np
import pytest
from etils import epath

from tests.experiment_files import get_config
from tests.studies.first_device import on_first_device
from vit_video.studies import motion_visualisation as mv


def test_masks_of_a_square_moving_right_by_one_pixel():
  """A 2 x 2 bright square on black, one pixel to the right per frame (T=3, H=4, W=6): the item is the square in
  each frame; the moving pixels are its leading and trailing columns (changed to a neighbouring frame)."""
  video = -np.ones((1, 3, 4, 6, 1), np.float32)
  for t in range(3):
    video[0, t, 1:3, t:t + 2] = 1.0
  item, moving = mv.item_masks(video, 0.1)
  assert item.shape == moving.shape == (1, 3, 4, 6)
  assert item[0].sum(axis=(1, 2)).tolist() == [4, 4, 4]
  np.testing.assert_array_equal(moving[0, 0, 1], [True, False, True, False, False, False])  # t=0 -> t=1
  np.testing.assert_array_equal(moving[0, 1, 1], [True, True, True, True, False, False])  # changes to t=0 and t=2
  flow_item, flow_moving = mv.flow_masks(video, 0.1)
  assert flow_item.shape == flow_moving.shape == (1, 2, 4, 6)
  assert flow_item[0, 0, 1].tolist() == [True, True, True, False, False, False]


def test_map_statistics_share_and_spread_over_time():
  item = np.zeros((2, 4, 3, 5), bool)
  item[:, :, 1, 2] = True
  on_item_one_frame = np.zeros((1, 4, 3, 5))
  on_item_one_frame[0, 2, 1, 2] = 3.0  # all mass on the item, in frame 2
  even = np.ones((1, 4, 3, 5))  # spread evenly over pixels and frames
  stats = mv.map_statistics(np.concatenate([on_item_one_frame, on_item_one_frame]), item, item)
  assert stats["share_item"] == pytest.approx(1.0) and stats["item_area"] == pytest.approx(1 / 15)
  assert stats["time_entropy"] == pytest.approx(0.0) and stats["peak_frame_share"] == pytest.approx(1.0)
  stats = mv.map_statistics(np.concatenate([even, even]), item, np.zeros_like(item))
  assert stats["share_item"] == pytest.approx(1 / 15) and stats["time_entropy"] == pytest.approx(1.0)
  assert np.isnan(stats["share_moving"])  # no moving pixels (a still clip): undefined, not zero
  assert np.isnan(mv.map_statistics(even, item[:1], item[:1], over_time=False)["time_entropy"])


def test_upsample_repeats_a_grid_over_pixels_and_frames():
  cam = np.arange(2 * 2 * 3, dtype=np.float32).reshape(1, 2, 2, 3)  # [B,t,h,w]
  up = mv.upsample(cam, 4, 4, 6)
  assert up.shape == (1, 4, 4, 6)
  np.testing.assert_array_equal(up[0, 1], np.repeat(np.repeat(cam[0, 0], 2, axis=0), 2, axis=1))
  np.testing.assert_array_equal(up[0, 3], up[0, 2])
  assert mv.upsample(cam[:, 0], 5, 2, 3).shape == (1, 5, 2, 3)  # no time: the same map in every frame


def test_preferences_need_a_margin_to_pick_a_looser_regulariser():
  results = {"appearance": {"logit": np.array([5.0, 1.0, 4.0])}, "slow": {"logit": np.array([5.1, 3.0, 4.0])},
             "fast": {"logit": np.array([5.0, 3.1, 6.0])}}
  assert mv.preferences(results, ("appearance", "slow", "fast")).tolist() == [0, 1, 2]


def test_tiny_study_end_to_end(tiny_moving_fmnist, tiny_fmnist, tmp_path):
  config = get_config("visualise", f"tiny,data_dir={tiny_moving_fmnist},image_data_dir={tiny_fmnist}")
  with on_first_device():
    rows = mv.run(config, str(tmp_path), command="pytest")
  folder = epath.Path(tmp_path)
  written = list(csv.DictReader(io.StringIO((folder / "results.csv").read_text())))
  assert [(r["model"], r["method"]) for r in written] == [(r["model"], r["method"]) for r in rows]
  methods = {m: {r["method"] for r in rows if r["model"] == m} for m in config.models}
  assert methods["single_frame"] == set(mv.METHODS) and methods["two_stream_flow"] >= {"gradient"}
  assert {r["input"] for r in rows if r["model"] == "two_stream_flow" and r["method"] != "grad_cam"} == {"flow"}
  for r in rows:
    assert 0 <= r["share_item"] <= 1 and 0 < r["item_area"] < 1
  am = list(csv.DictReader(io.StringIO((folder / "activation_max.csv").read_text())))
  assert len(am) == len(config.models) * len(config.activation_max.regularisers)
  for name in config.models:
    appearance = next(r for r in am if r["model"] == name and r["regulariser"] == "appearance")
    assert float(appearance["temporal_change"]) == pytest.approx(0.0, abs=1e-6)  # tied frames: no change
    assert sum(int(r["preferred_by"]) for r in am if r["model"] == name) == len(config.activation_max.classes)
    gif = imageio.mimread(io.BytesIO((folder / f"saliency_{name}.gif").read_bytes()), format="GIF")
    assert len(gif) == config.members[name].video.num_frames
    assert (folder / f"activation_max_{name}.png").read_bytes()[:4] == b"\x89PNG"
  for method in ("gradient", "integrated_gradients", "grad_cam"):
    assert (folder / f"saliency_{method}.png").exists()
  assert list((folder / "figure7").glob("*.png"))
  table = (folder / "results.md").read_text()
  assert "single_frame" in table and "Command: `pytest`" in table

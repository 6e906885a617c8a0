"""vit_video.configs' argument parsing, shared by every experiment config."""
import pytest

from vit_video import configs

SCALES = ("quick", "cpu", "tiny")


def test_pick_scale_names_one_scale_or_the_default():
  assert configs.pick_scale(None, SCALES, default="cpu") == "cpu"
  assert configs.pick_scale("", SCALES, default="cpu") == "cpu"
  assert configs.pick_scale("tiny", SCALES, default="cpu") == "tiny"
  assert configs.pick_scale("quick=true", SCALES, default="cpu") == "quick"


def test_pick_scale_refuses_two_scales_and_unknown_words():
  with pytest.raises(ValueError, match="pick one scale of quick, cpu, tiny; got quick, tiny"):
    configs.pick_scale("tiny,quick", SCALES, default="cpu")
  with pytest.raises(ValueError, match="unknown config argument 'huge'.*valid: cpu, quick, tiny"):
    configs.pick_scale("huge", SCALES, default="cpu")

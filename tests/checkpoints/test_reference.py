"""The reference tests cannot be skipped silently: with VIT_VIDEO_REQUIRE_REFERENCE=1 (set by `make test`) a
missing torch is an ImportError, without it a skip; `make test` sets it."""
import os
import sys

import pytest

from tests.checkpoints import timm_reference
from tests.experiment_files import ROOT


def test_missing_torch_skips_only_when_not_required(monkeypatch):
  monkeypatch.setitem(sys.modules, "torch", None)  # as if not installed
  monkeypatch.delenv(timm_reference.REQUIRE_ENV, raising=False)
  with pytest.raises(pytest.skip.Exception, match="timm needs torch"):
    timm_reference.require_torch("timm needs torch")
  monkeypatch.setenv(timm_reference.REQUIRE_ENV, "1")
  with pytest.raises(ImportError, match="timm needs torch, and VIT_VIDEO_REQUIRE_REFERENCE=1 requires"):
    timm_reference.require_torch("timm needs torch")


def test_make_test_requires_the_reference_stack():
  makefile = open(os.path.join(ROOT, "Makefile")).read()
  test_recipe = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
  assert f"{timm_reference.REQUIRE_ENV}=1 " in test_recipe
  assert "pip install -q torch==2.13.0" in makefile  # installed from PyPI where no local wheel is shipped

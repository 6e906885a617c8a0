"""The ViT-vs-ResNet study (ViT paper, Figure 5): pre-train every member, transfer each, write the report.

    rows = run(config, workdir)      # python -m vit_video.study --config=experiments/vit_vs_resnet.py:quick ...

Its config (experiments/vit_vs_resnet.py) holds `pretrain` (a full training config), `members` (per member:
family, model_name, model attributes, epochs) and `transfer` (datasets with their splits, fine-tuning and
few-shot settings). For every member, in order:

  workdir/<member>/                      pre-training: a normal `train_and_evaluate` run
  workdir/<member>/transfer/<dataset>/   fine-tuning from it (fresh head, SGD), another normal run
  workdir/<member>/fewshot.json          k-shot linear probes on its frozen features, per dataset

then `workdir/results.csv`, `results.md` and `figure5.png` (rewritten after every member, so a long sweep
can be read while it runs). Everything is resumable: a finished run (`loop.train_once`) is skipped, a
half-finished one resumes from its newest checkpoint, few-shot results already in fewshot.json are kept; so
killing the study at any point and re-running it ends with the same results. A run folder that holds another
config raises instead of being mixed in. The workdir may be any filesystem the run folder reaches (gs://...).
"""
import copy
import dataclasses
import logging
import time

import jax
import ml_collections

from vit_video import models
from vit_video.data import augment as augment_lib
from vit_video.data import builders, pipeline
from vit_video.studies import fewshot, vit_vs_resnet_report
from vit_video.train import checkpointing, loop
from vit_video.train.run_folder import RunFolder

_LOG = logging.getLogger(__name__)
FEWSHOT, TIMINGS = "fewshot.json", "timings.json"  # in a member's folder, in the study's folder
REPORT = ("results.csv", "results.md", "figure5.png")  # in the study's folder


def member_config(sweep: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """The training config of member `name`: `sweep.pretrain` with the member's model and epochs."""
  if name not in sweep.members:
    raise ValueError(f"unknown member {name!r}; the sweep has {', '.join(sweep.members)}")
  m = sweep.members[name]
  c = copy.deepcopy(sweep.pretrain)
  with c.unlocked():
    c.name = f"{sweep.name}/{name}"
    c.seed = sweep.seed
    c.model_name = m.model_name
    c.model = ml_collections.ConfigDict(m.model.to_dict())
    c.num_epochs = m.epochs
    c.total_steps = 0
  return c


def transfer_data_dir(sweep: ml_collections.ConfigDict) -> str:
  return sweep.transfer.data_dir or sweep.pretrain.dataset.data_dir


def finetune_config(sweep: ml_collections.ConfigDict, name: str, dataset: str,
                    member_folder: RunFolder) -> ml_collections.ConfigDict:
  """Fine-tuning member `name` on transfer set `dataset`: the paper's protocol (Appendix B.1.1) in small:
  every weight trained from the pre-trained ones with a fresh zero head, SGD with momentum 0.9, no weight
  decay, gradient clipping, warm-up then cosine decay; no augmentation; evaluated on the test split."""
  d, ft = sweep.transfer.datasets[dataset], sweep.transfer.finetune
  data_dir = transfer_data_dir(sweep)
  c = member_config(sweep, name)
  with c.unlocked():
    c.name = f"{sweep.name}/{name}/{dataset}"
    c.dataset.name = dataset
    c.dataset.data_dir = data_dir
    c.dataset.train_split = d.train_split
    c.dataset.eval_split = d.test_split
    c.dataset.image_size = d.image_size
    c.num_classes = builders.num_classes(dataset, data_dir)
    c.augment = ml_collections.ConfigDict(dataclasses.asdict(augment_lib.AugmentConfig()))  # none
    c.batch_size = ft.batch_size
    c.total_steps = d.finetune_steps
    c.optimizer.name = "sgd"
    c.optimizer.learning_rate = ft.learning_rate
    c.optimizer.momentum = 0.9
    c.optimizer.nesterov = False
    c.optimizer.weight_decay = 0.0
    c.optimizer.warmup_steps = ft.warmup_steps
    c.optimizer.schedule = "cosine"
    c.optimizer.grad_clip_norm = ft.grad_clip_norm
    c.optimizer.grad_accum_steps = 1
    c.label_smoothing = 0.0
    c.ema_decay = 0.0
    c.eval_every_steps = 0
    c.checkpoint.save_every_steps = d.finetune_steps  # short runs: one checkpoint, at the end
    c.init.checkpoint = str(member_folder)
    c.init.reset_head = True
  return c


def _fewshot(sweep: ml_collections.ConfigDict, name: str, member: RunFolder) -> dict[str, dict[str, float]]:
  """{dataset: {shots: accuracy}} of k-shot linear probes on the member's frozen features (fewshot.json keeps
  what was computed; a dataset whose settings changed is recomputed)."""
  done = member.read_json(FEWSHOT) or {}
  config = member_config(sweep, name)
  with config.unlocked():
    config.num_classes = 0  # the model returns its pooled features (pre-logits) [B,D]
  model = loop.build_model(config)
  variables = checkpointing.restore_params(str(member))
  variables["params"] = {k: v for k, v in variables["params"].items() if k != model.head}
  features_fn = jax.jit(lambda v, x: model.apply(v, x, train=False))
  data_dir = transfer_data_dir(sweep)
  fs = sweep.transfer.fewshot
  for dataset, d in sweep.transfer.datasets.items():
    settings = {"shots": list(fs.shots), "seeds": fs.seeds, "pool": d.fewshot_pool_split,
                "val": d.fewshot_val_split, "test": d.test_split, "image_size": d.image_size}
    if done.get(dataset, {}).get("settings") == settings:
      continue
    num_classes = builders.num_classes(dataset, data_dir)
    split_features = {}
    for key in ("pool", "val", "test"):
      batches = pipeline.make_eval_iterator(dataset, settings[key], data_dir, global_batch_size=256,
                                            image_size=d.image_size, process_index=0, process_count=1)
      split_features[key] = fewshot.extract_features(features_fn, variables, batches)
    accuracy = {str(k): fewshot.fewshot_accuracy(split_features["pool"], split_features["val"],
                                                 split_features["test"], shots=k, num_classes=num_classes,
                                                 seeds=fs.seeds) for k in fs.shots}
    done[dataset] = {"settings": settings, "accuracy": accuracy}
    if jax.process_index() == 0:
      member.write_json(FEWSHOT, done)
  return {dataset: done[dataset]["accuracy"] for dataset in sweep.transfer.datasets}


def _dashed(values) -> str:
  return "-".join(map(str, values))


def describe(config: ml_collections.ConfigDict) -> str:
  """A short name of a member's architecture, e.g. "ViT d4 w64 p4", "BiT R14x2 w16", "R5+ViT d4 w64 p1"
  ("Root+ViT ...": the hybrid whose trunk is the root block alone), "ResNet basic d2-2 w24" (blocks per stage,
  first stage's width), "Swin d2-2 w16 p2 M7", "ConvNeXt d2-2 w32-64 k7" (blocks and widths per stage)."""
  m = loop.build_model(config)
  if isinstance(m, models.vit.ViT):
    body = f"ViT d{m.depth} w{m.width} p{m.patch_size}"
    if m.stem_stage_sizes is None:
      return body
    stem = f"R{3 * sum(m.stem_stage_sizes) + 2}" if m.stem_stage_sizes else "Root"  # BiT's layer count
    return f"{stem}+{body}"
  if isinstance(m, models.bit.BiT):
    return f"BiT R{3 * sum(m.stage_sizes) + 2}x{m.width_factor} w{m.width}"
  if isinstance(m, models.resnet.ResNet):
    return f"ResNet {m.block} d{_dashed(m.stage_sizes)} w{m.width}"
  if isinstance(m, models.swin.Swin):
    return f"Swin d{_dashed(m.depths)} w{m.width} p{m.patch_size} M{m.window_size}"
  if isinstance(m, models.convnext.ConvNeXt):
    return f"ConvNeXt d{_dashed(m.depths)} w{_dashed(m.dims)} k{m.kernel_size}"
  return config.model_name


def member_row(sweep: ml_collections.ConfigDict, name: str, summary: dict, finetuned: dict[str, dict],
               shots_accuracy: dict[str, dict[str, float]]) -> dict:
  """One results.csv row (columns of vit_vs_resnet_report.columns)."""
  row = {"member": name, "family": sweep.members[name].family, "model": describe(member_config(sweep, name)),
         "params": int(summary["params"]), "epochs": float(sweep.members[name].epochs),
         "pretrain_steps": int(summary["step"]), "pretrain_gflop": float(summary["train_gflop_total"]),
         "pretrain_top1": float(summary["eval_top1"])}
  for dataset in sweep.transfer.datasets:
    row[f"finetune_{dataset}"] = float(finetuned[dataset]["eval_top1"])
    for k in sweep.transfer.fewshot.shots:
      row[f"fewshot{k}_{dataset}"] = float(shots_accuracy[dataset][str(k)])
  return vit_vs_resnet_report.add_averages(row, list(sweep.transfer.datasets), list(sweep.transfer.fewshot.shots))


def write_report(sweep: ml_collections.ConfigDict, folder: RunFolder, rows: list[dict], *, command: str = "",
                 notes: str = "") -> None:
  """results.csv, results.md and figure5.png in the study's folder, each written atomically."""
  datasets, shots = list(sweep.transfer.datasets), list(sweep.transfer.fewshot.shots)
  csv_name, markdown_name, figure_name = REPORT
  vit_vs_resnet_report.write_csv(folder / csv_name, rows, datasets, shots)
  vit_vs_resnet_report.write_markdown(folder / markdown_name, rows, datasets, shots,
                                      title=f"{sweep.name}: transfer accuracy vs pre-training compute",
                                      command=command, notes=notes)
  vit_vs_resnet_report.plot_figure5(rows, datasets, shots, path=folder / figure_name)


def summary_table(sweep: ml_collections.ConfigDict, rows: list[dict]) -> str:
  """The study's tables as the command line prints them."""
  return vit_vs_resnet_report.markdown_table(rows, list(sweep.transfer.datasets), list(sweep.transfer.fewshot.shots))


def run(sweep: ml_collections.ConfigDict, workdir: str, *, command: str = "", notes: str = "") -> list[dict]:
  """Runs (or resumes) every member and its transfer, writes the report, returns the rows in member order.

  Wall-clock seconds of every phase of this start are added to `workdir/timings.json` (not part of the
  results, which are deterministic).
  """
  folder = RunFolder(workdir)
  if not sweep.members:
    raise ValueError("the sweep has no members")
  for name, m in sweep.members.items():  # the report's colours and table order know these families
    if m.family not in vit_vs_resnet_report.FAMILIES:
      raise ValueError(f"member {name}'s family {m.family!r} is not one of {', '.join(vit_vs_resnet_report.FAMILIES)}")
  for dataset in sweep.transfer.datasets:  # fail before hours of pre-training, not after
    builders.check_prepared(dataset, transfer_data_dir(sweep))
  for name in sweep.members:
    for dataset in sweep.transfer.datasets:
      config = finetune_config(sweep, name, dataset, folder.child(name))
      try:
        loop.make_schedule(config, config.total_steps)
      except ValueError as e:
        raise ValueError(f"member {name}'s fine-tuning on {dataset} cannot run (transfer.finetune / "
                         f"transfer.datasets.{dataset}.finetune_steps): {e}") from e
  folder.makedirs()
  timings = folder.read_json(TIMINGS) or {}
  rows = []
  for index, name in enumerate(sweep.members):
    member = folder.child(name)
    phases = {"pretrain": lambda: loop.train_once(member_config(sweep, name), str(member))}
    for dataset in sweep.transfer.datasets:
      phases[f"finetune/{dataset}"] = (
          lambda dataset=dataset: loop.train_once(finetune_config(sweep, name, dataset, member),
                                                  str(member.child("transfer", dataset))))
    phases["fewshot"] = lambda: _fewshot(sweep, name, member)
    results = {}
    for phase, run_phase in phases.items():
      _LOG.info("sweep %s [%d/%d] %s: %s", sweep.name, index + 1, len(sweep.members), name, phase)
      start = time.perf_counter()
      results[phase] = run_phase()
      seconds = timings.setdefault(name, {})
      seconds[phase] = seconds.get(phase, 0.0) + time.perf_counter() - start
    finetuned = {dataset: results[f"finetune/{dataset}"] for dataset in sweep.transfer.datasets}
    rows.append(member_row(sweep, name, results["pretrain"], finetuned, results["fewshot"]))
    k = max(sweep.transfer.fewshot.shots)
    _LOG.info("sweep %s [%d/%d] %s: %.1f GFLOP, upstream top-1 %.2f%%, fine-tuning avg %.2f%%, %d-shot avg %.2f%%",
              sweep.name, index + 1, len(sweep.members), name, rows[-1]["pretrain_gflop"],
              100 * rows[-1]["pretrain_top1"], 100 * rows[-1]["finetune_avg"], k, 100 * rows[-1][f"fewshot{k}_avg"])
    if jax.process_index() == 0:
      folder.write_json(TIMINGS, timings)
      write_report(sweep, folder, rows, command=command, notes=notes)
  return rows

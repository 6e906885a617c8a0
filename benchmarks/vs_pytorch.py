"""vit_video against PyTorch on the same CPU, side by side: train-step and inference seconds, each one's share of
the machine's matmul rate, and peak resident memory, in one interleaved run.

    python benchmarks/vs_pytorch.py                               # every case of the README's table
    python benchmarks/vs_pytorch.py --cases vit_s16,resnet50 --repeats 6 --modes train
    python benchmarks/vs_pytorch.py --cases resnet50 --jax default,onednn,xnn_dot   # XLA options, one by one

One long-lived worker process per contestant (PyTorch eager; the package under each JAX variant of --jax), all
alive for the whole run and idle (blocked on a pipe) while another runs. Every repetition times one call of each
contestant in turn, the order rotating from one repetition to the next, so that drift of the machine's speed lands
on all of them alike. A contestant's call is one whole step on a fixed random batch:
  - PyTorch: `model.train()`, zero_grad, forward, cross-entropy, backward, `torch.optim.AdamW.step` (timm's and
    torchvision's models, or benchmarks/torch_references.py's ports where neither has the model); inference under
    `torch.inference_mode()` in eval mode.
  - vit_video: the training loop's own step (`steps.make_train_step`, AdamW, the state donated as the loop does)
    and `model.apply(..., train=False)`, both jitted.
Reported per case: medians and min-max of the repetitions, the ratio (vit_video / PyTorch: below 1 is faster),
each one's GFLOP/s as a share of the machine's float32 matmul rate (the faster framework's 2048^2 matmul in the
same run; FLOPs from XLA's cost analysis of the package's program on its einsum attention path, used for both),
the parameter counts (equal, or flagged), and each worker's peak resident memory during the case's timed calls
(whole process, started afresh for each case and mode: the framework's own footprint and the compiled program
included). Nothing here is a test; run it on
an otherwise idle machine. --out writes the rows as JSON; --markdown FILE prints them as the README's table.
"""
import argparse
import dataclasses
import json
import multiprocessing
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Case:
  """One model, in the package (`ours`: a `vit_video.models` name with `overrides`) and in PyTorch (`torch`:
  "timm:NAME", "torchvision:NAME", "ref:FUNCTION" of benchmarks/torch_references.py, or "fmnist:NAME"
  built here), on `batch` inputs of per-example `shape` (the package's layout: (H,W,C) or (T,H,W,C))."""
  ours: str
  torch: str
  shape: tuple[int, ...]
  batch: int
  num_classes: int = 1000
  overrides: dict = dataclasses.field(default_factory=dict)
  torch_kwargs: dict = dataclasses.field(default_factory=dict)


IMAGE = (224, 224, 3)
CLIP = (16, 224, 224, 3)  # 16 frames: MViT-B's and Video Swin's Kinetics clips; ViViT-B/16x2: 8 x 196 tokens.
FMNIST = (28, 28, 1)
# The Fashion-MNIST models of experiments/vit_fashion_mnist.py (what `make run` trains), without its dropout.
VIT_M4 = dict(patch_size=4, width=96, depth=4, num_heads=3, mlp_dim=192, pool="gap")
R_VIT_M = dict(patch_size=1, width=96, depth=4, num_heads=3, mlp_dim=192, pool="gap", stem_stage_sizes=(),
               stem_width_factor=0.5)

CASES = {
    "vit_b16": Case("vit_b16", "timm:vit_base_patch16_224", IMAGE, 8),
    "vit_s16": Case("vit_s16", "timm:vit_small_patch16_224", IMAGE, 8),
    "resnet50": Case("resnet50", "timm:resnet50", IMAGE, 8),
    "swin_t": Case("swin_t", "timm:swin_tiny_patch4_window7_224", IMAGE, 8),
    "vivit_b16x2_st": Case("vivit_b16x2_st", "ref:vivit_st", CLIP, 1, 400, torch_kwargs=dict(frames=CLIP[0])),
    "vivit_b16x2_fe": Case("vivit_b16x2_fe", "ref:vivit_fe", CLIP, 1, 400, torch_kwargs=dict(frames=CLIP[0])),
    "i3d_r50": Case("i3d_r50", "ref:i3d_r50", CLIP, 1, 400),
    "video_swin_t": Case("video_swin_t", "torchvision:swin3d_t", CLIP, 1, 400),
    "mvit_v1_b": Case("mvit_v1_b", "torchvision:mvit_v1_b", CLIP, 1, 400),
    "fmnist_vit_m4": Case("vit_ti16", "fmnist:vit_m4", FMNIST, 128, 10, dict(VIT_M4, in_channels=1)),
    "fmnist_r_vit_m": Case("vit_ti16", "fmnist:r_vit_m", FMNIST, 128, 10, dict(R_VIT_M, in_channels=1)),
}

# The package's variants that --jax chooses from: XLA CPU options (XLA_FLAGS of that worker), compute dtype and
# model attributes (set where the model has them). "default" is what `make run` and the studies run.
JAX_VARIANTS = {
    "default": {},
    "onednn": {"flags": "--xla_cpu_use_onednn=true"},
    "xnnpack": {"flags": "--xla_cpu_use_xnnpack=true"},
    "xnn_dot": {"flags": "--xla_cpu_experimental_xnn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"},
    "xnn_dot_eltwise": {"flags": "--xla_cpu_experimental_xnn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,"
                                 "LIBRARY_FUSION_TYPE_ELTWISE"},
    "xnn_conv": {"flags": "--xla_cpu_experimental_xnn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"},
    "ynn_dot": {"flags": "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"},
    "ynn_conv": {"flags": "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"},
    "onednn_dot": {"flags": "--xla_cpu_experimental_onednn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"},
    "fast_math": {"flags": "--xla_cpu_enable_fast_math=true"},
    "fused_attention": {"overrides": {"attention_implementation": "fused"}},
    "chunked_attention": {"overrides": {"attention_implementation": "chunked"}},
    "tanh_gelu": {"overrides": {"approximate_gelu": True}},
    "bf16": {"dtype": "bfloat16"},
}


def peak_rss_reset() -> None:
  """Starts a new peak-resident-memory window for this process (Linux: VmHWM := VmRSS)."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
  except OSError:
    pass  # Not Linux, or not allowed: the peak then covers the process's whole life.


def peak_rss_gib() -> float:
  """This process's peak resident memory (VmHWM) in GiB since `peak_rss_reset`."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) / 2**20
  return float("nan")


def timed_call(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


class JaxContestant:
  """The package's model and train step under one variant; jax is imported here, after XLA_FLAGS is set."""

  def __init__(self, variant: dict):
    os.environ["XLA_FLAGS"] = " ".join(f for f in (os.environ.get("XLA_FLAGS", ""), variant.get("flags", "")) if f)
    import jax
    import jax.numpy as jnp
    self.jax, self.jnp = jax, jnp
    self.variant = variant
    self.call = None

  def matmul_gflops(self, n: int = 2048, repeats: int = 10) -> float:
    jax = self.jax
    a = jax.random.normal(jax.random.key(0), (n, n))
    dot = jax.jit(lambda a, b: a @ b).lower(a, a).compile()
    jax.block_until_ready(dot(a, a))
    return 2 * n**3 / min(timed_call(lambda: jax.block_until_ready(dot(a, a))) for _ in range(repeats)) / 1e9

  def prepare(self, case: Case, mode: str) -> dict:
    import optax
    from vit_video import models
    from vit_video.train import flops, steps
    jax, jnp = self.jax, self.jnp
    self.call = None
    jax.clear_caches()
    family = models.model_class(case.ours)
    fields = {f.name for f in dataclasses.fields(family)}
    overrides = {**case.overrides, **{k: v for k, v in self.variant.get("overrides", {}).items() if k in fields}}
    if "dtype" in self.variant:
      overrides["dtype"] = jnp.dtype(self.variant["dtype"])
    model = models.create_model(case.ours, num_classes=case.num_classes, **overrides)
    tx = optax.adamw(1e-3)
    state = jax.jit(lambda k: steps.init_state(model, tx, k, (case.shape,), ema=False))(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (case.batch, *case.shape))
    batch = {family.inputs[0]: x, "label": jnp.zeros((case.batch,), jnp.int32)}
    variables = {"params": state.params, **({"batch_stats": state.batch_stats} if state.batch_stats else {})}

    def program(model):  # the jitted call and its arguments
      if mode == "train":
        step = steps.make_train_step(model, tx, num_classes=case.num_classes, label_smoothing=0.0, ema_decay=0.0,
                                     schedule=lambda _: 1e-3)
        return jax.jit(step, donate_argnums=0), (state, batch)
      return jax.jit(lambda v, x: model.apply(v, x, train=False)), (variables, x)

    # FLOPs from the einsum attention path: XLA counts a loop's body once, and "auto" runs long inputs in loops.
    counted = (models.create_model(case.ours, num_classes=case.num_classes,
                                   **{**overrides, "attention_implementation": "einsum"})
               if "attention_implementation" in fields else model)
    fn, args = program(counted)
    gflop = flops.cost_analysis_flops(fn.lower(*args)) / 1e9
    start = time.perf_counter()
    fn, args = program(model)
    compiled = fn.lower(*args).compile()
    compile_s = time.perf_counter() - start
    holder = list(args)

    def call():
      out = compiled(*holder)
      if mode == "train":
        holder[0], out = out  # the new state; the old one was donated
      jax.block_until_ready(out)
    call()  # warm-up
    self.call = call
    return {"gflop": gflop, "compile_s": compile_s, "params": models.count_params(model, (1, *case.shape))}


def torch_model(case: Case):
  """The PyTorch side of `case`, freshly initialised (build it under `torch.device("meta")` to count parameters)."""
  if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
  from tests.checkpoints.timm_reference import import_timm  # the torchvision-on-CPU-torch import shim
  timm = import_timm()
  kind, name = case.torch.split(":")
  if kind == "timm":
    return timm.create_model(name, num_classes=case.num_classes, **case.torch_kwargs)
  if kind == "torchvision":
    import torchvision
    return getattr(torchvision.models.video, name)(num_classes=case.num_classes, **case.torch_kwargs)
  if kind == "ref":
    from benchmarks import torch_references
    return getattr(torch_references, name)(num_classes=case.num_classes, **case.torch_kwargs)
  if kind == "fmnist":
    return fmnist_vit(case)
  raise ValueError(f"unknown PyTorch model kind {kind!r} in {case.torch!r}")


def fmnist_vit(case: Case):
  """timm's VisionTransformer sized as the package's Fashion-MNIST ViTs (the hybrid: BiT's root as its stem)."""
  import functools
  import torch
  from timm.layers import HybridEmbed, StdConv2d
  from timm.models.vision_transformer import VisionTransformer
  nn, o = torch.nn, case.overrides
  embed = {}
  if "stem_stage_sizes" in o:  # ResNetStem(stage_sizes=()): StdConv 7x7/2, GroupNorm(32), ReLU, 3x3/2 max pool
    width = int(64 * o["stem_width_factor"])
    stem = nn.Sequential(StdConv2d(case.shape[-1], width, 7, stride=2, padding=3, bias=False),
                         nn.GroupNorm(32, width), nn.ReLU(), nn.MaxPool2d(3, 2, padding=1))
    embed = dict(embed_layer=functools.partial(HybridEmbed, backbone=stem))  # feature size: from a dry run
  return VisionTransformer(img_size=case.shape[0], patch_size=o["patch_size"], in_chans=case.shape[-1],
                           num_classes=case.num_classes, embed_dim=o["width"], depth=o["depth"],
                           num_heads=o["num_heads"], mlp_ratio=o["mlp_dim"] / o["width"], class_token=False,
                           global_pool="avg", **embed)


class TorchContestant:
  """PyTorch eager: timm, torchvision or benchmarks/torch_references.py models."""

  def __init__(self, variant: dict):
    import torch
    self.torch = torch
    torch.set_num_threads(variant.get("threads", os.cpu_count()))
    self.call = None

  def matmul_gflops(self, n: int = 2048, repeats: int = 10) -> float:
    a = self.torch.randn(n, n)
    a @ a
    return 2 * n**3 / min(timed_call(lambda: a @ a) for _ in range(repeats)) / 1e9

  def prepare(self, case: Case, mode: str) -> dict:
    torch = self.torch
    self.call = None
    model = torch_model(case)
    g = torch.Generator().manual_seed(1)
    layout = (0, 4, 1, 2, 3) if len(case.shape) == 4 else (0, 3, 1, 2)  # NTHWC -> NCTHW, NHWC -> NCHW
    x = torch.randn((case.batch, *case.shape), generator=g).permute(layout).contiguous()
    if mode == "train":
      model.train()
      labels = torch.zeros(case.batch, dtype=torch.long)
      opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

      def call():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), labels)
        loss.backward()
        opt.step()
    else:
      model.eval()

      def call():
        with torch.inference_mode():
          model(x)
    call()  # warm-up
    self.call = call
    return {"params": sum(p.numel() for p in model.parameters())}


def worker(conn, kind: str, variant: dict) -> None:
  """Serves one contestant: (command, *args) in, result out, until "quit"."""
  contestant = JaxContestant(variant) if kind == "jax" else TorchContestant(variant)
  while True:
    command, *args = conn.recv()
    try:
      if command == "quit":
        return
      if command == "matmul":
        result = contestant.matmul_gflops()
      elif command == "prepare":
        result = contestant.prepare(*args)
        peak_rss_reset()
      elif command == "run":
        result = timed_call(contestant.call)
      elif command == "peak":
        result = peak_rss_gib()
      else:
        raise ValueError(f"unknown command {command!r}")
      conn.send(("ok", result))
    except Exception as e:  # reported to the coordinator, which names the contestant and the case
      conn.send(("error", f"{type(e).__name__}: {e}"))


class Contestant:
  """The coordinator's end of one worker process."""

  def __init__(self, label: str, kind: str, variant: dict):
    self.label, self.kind = label, kind
    self.conn, child = multiprocessing.get_context("spawn").Pipe()
    self.process = multiprocessing.get_context("spawn").Process(target=worker, args=(child, kind, variant),
                                                                daemon=True)
    self.process.start()

  def ask(self, *message):
    self.conn.send(message)
    status, result = self.conn.recv()
    if status != "ok":
      raise RuntimeError(f"{self.label}: {message[0]} {message[1:] or ''} failed: {result}")
    return result

  def close(self):
    self.conn.send(("quit",))
    self.process.join(timeout=30)


def spread(times: list[float]) -> str:
  return f"{statistics.median(times):.3f} ({min(times):.3f}-{max(times):.3f})"


def markdown(path: str) -> None:
  """The README's table from a JSON file of --out: PyTorch against the package's first variant."""
  from etils import epath
  rows = json.loads(epath.Path(path).read_text())
  print("| model | | PyTorch | vit_video | ratio | of matmul: PyTorch / vit_video | peak GiB: PyTorch / vit_video |")
  print("|---|---|---:|---:|---:|---:|---:|")
  for r in rows:
    ours = next(label for label in r["times"] if label.startswith("jax"))
    peak = max(r["matmul_gflops"].values())
    t, o = statistics.median(r["times"]["torch"]), statistics.median(r["times"][ours])
    print(f"| {r['case']} | {r['mode']} | {t:.3f} s | {o:.3f} s | {o / t:.2f}x | {r['gflop'] / t / peak:.0%} / "
          f"{r['gflop'] / o / peak:.0%} | {r['peak_rss_gib']['torch']:.2f} / {r['peak_rss_gib'][ours]:.2f} |")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of: {', '.join(CASES)}")
  parser.add_argument("--modes", default="train,infer")
  parser.add_argument("--repeats", type=int, default=4)
  parser.add_argument("--jax", default="default", help=f"comma-separated variants, of: {', '.join(JAX_VARIANTS)}")
  parser.add_argument("--no_torch", action="store_true", help="time only the package's variants")
  parser.add_argument("--pause", type=float, default=0.3, help="seconds between calls (lets thread pools sleep)")
  parser.add_argument("--out", default="", help="write the rows here as JSON")
  parser.add_argument("--markdown", default="", help="print the README's table from this JSON of --out, and exit")
  args = parser.parse_args()
  if args.markdown:
    return markdown(args.markdown)
  cases = args.cases.split(",")
  for name in cases:
    if name not in CASES:
      raise SystemExit(f"unknown case {name!r}; valid: {', '.join(CASES)}")
  for name in args.jax.split(","):
    if name not in JAX_VARIANTS:
      raise SystemExit(f"unknown --jax variant {name!r}; valid: {', '.join(JAX_VARIANTS)}")
  def start() -> list[Contestant]:
    contestants = [] if args.no_torch else [Contestant("torch", "torch", {})]
    return contestants + [Contestant(f"jax:{name}", "jax", JAX_VARIANTS[name]) for name in args.jax.split(",")]

  contestants = start()
  rates = {c.label: c.ask("matmul") for c in contestants}
  peak = max(rates.values())  # the machine's practical float32 rate: the best framework's 2048^2 matmul
  print(f"{os.cpu_count()} CPUs; float32 2048^2 matmul GFLOP/s: "
        + ", ".join(f"{label} {rate:.0f}" for label, rate in rates.items()) + f"; shares below are of {peak:.0f}",
        flush=True)
  rows = []
  for name in cases:
    case = CASES[name]
    for mode in args.modes.split(","):
      if rows:  # fresh processes for every case: no memory held over from the one before
        for c in contestants:
          c.close()
        contestants = start()
      info = {c.label: c.ask("prepare", case, mode) for c in contestants}
      times = {c.label: [] for c in contestants}
      for rep in range(args.repeats):
        turn = rep % len(contestants)
        for c in contestants[turn:] + contestants[:turn]:
          time.sleep(args.pause)
          times[c.label].append(c.ask("run"))
      peaks = {c.label: c.ask("peak") for c in contestants}
      gflop = next(i["gflop"] for label, i in info.items() if label.startswith("jax"))
      base = statistics.median(times["torch"]) if "torch" in times else None
      row = {"case": name, "mode": mode, "batch": case.batch, "shape": case.shape, "gflop": gflop,
             "matmul_gflops": rates, "info": info, "times": times, "peak_rss_gib": peaks}
      rows.append(row)
      counts = {label: i["params"] for label, i in info.items()}
      same = len(set(counts.values())) == 1
      print(f"\n{name} {mode} (batch {case.batch} x {case.shape}, {gflop:.0f} GFLOP per call, parameters "
            + (f"{counts.popitem()[1]:,d} in each)" if same else f"DIFFER: {counts})"), flush=True)
      for c in contestants:
        t = statistics.median(times[c.label])
        ratio = f"{t / base:5.2f}x" if base else "     "
        print(f"  {c.label:<22} {spread(times[c.label]):<26} {ratio}  {gflop / t / peak:4.0%} of matmul"
              f"  peak {peaks[c.label]:5.2f} GiB" + (f"  compile {info[c.label]['compile_s']:.1f} s"
                                                     if c.kind == "jax" else ""), flush=True)
  for c in contestants:
    c.close()
  if args.out:
    from vit_video.train import run_folder
    run_folder.write_atomic(args.out, json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
  main()

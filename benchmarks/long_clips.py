"""Long clips: peak memory and train-step time of ViViT-B/16x2 Model 1 (joint space-time attention) at 8 to 64
frames, with the dense (einsum) attention and with the chunked online-softmax path, each with and without remat.

    python benchmarks/long_clips.py [--frames 8,16,32,64] [--modes einsum,einsum+remat,chunked,chunked+remat]
                                    [--image 224] [--batch 1] [--repeats 2] [--memory-limit-gb 20]

At 224x224 with 16x16x2 tubelets a clip of T frames is 98 T tokens (+1 class token): 785 at 8 frames, 6,273 at 64.
Each (frames, mode) runs in its own process, so peaks do not carry over. Printed per row: tokens, XLA's buffer
plan for the step (arguments + outputs - donated + temporaries), the resident memory just before the first step,
the measured peak (GPU: the allocator's peak_bytes_in_use; CPU: the process's peak resident memory, whose floor is
set-up and compilation: where the step needs more, peak - before is what the step added), compile seconds and
the median step seconds (forward, backward and an SGD update). A plan above --memory-limit-gb is reported and not
run. Nothing here is a test; run it on an otherwise idle machine.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

MODES = {  # name -> (attention_implementation, remat)
    "einsum": ("einsum", False),
    "einsum+remat": ("einsum", True),
    "chunked": ("chunked", False),
    "chunked+remat": ("chunked", True),
}


def measure(frames: int, mode: str, args: argparse.Namespace) -> dict:
  """One configuration in this process: plan, peak memory, compile and step seconds."""
  import jax  # noqa: PLC0415  (imported in the child process only)
  import jax.numpy as jnp  # noqa: PLC0415
  import optax  # noqa: PLC0415

  from vit_video import models  # noqa: PLC0415
  from vit_video.train import optim  # noqa: PLC0415

  implementation, remat = MODES[mode]
  model = models.create_model("vivit_b16x2_st", num_classes=400, attention_implementation=implementation,
                              remat=remat, remat_policy=args.remat_policy, dtype=jnp.dtype(args.dtype))
  x = jnp.zeros((args.batch, frames, args.image, args.image, 3), jnp.float32)
  labels = jnp.zeros((args.batch,), jnp.int32)
  params = jax.jit(lambda k: model.init(k, x[:1], train=False))(jax.random.key(0))["params"]
  tx = optax.sgd(0.1, momentum=0.9)
  opt_state = tx.init(params)

  def train_step(params, opt_state, x, labels):
    def loss_fn(p):
      return optim.cross_entropy(model.apply({"params": p}, x, train=True), labels, num_classes=400).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  start = time.perf_counter()
  step = jax.jit(train_step, donate_argnums=(0, 1)).lower(params, opt_state, x, labels).compile()
  compile_s = time.perf_counter() - start
  plan = step.memory_analysis()
  planned = (plan.argument_size_in_bytes + plan.output_size_in_bytes - plan.alias_size_in_bytes  # donated
             + plan.temp_size_in_bytes)
  row = {"frames": frames, "mode": mode, "tokens": 1 + (frames // 2) * (args.image // 16) ** 2,
         "planned_gib": planned / 2**30, "compile_s": compile_s, "device": jax.devices()[0].device_kind}
  if planned > args.memory_limit_gb * 2**30:
    return {**row, "peak_gib": float("nan"), "before_gib": float("nan"), "step_s": float("nan"),
            "note": "plan above the memory limit; not run"}
  before = _rss_bytes()
  times = []
  for _ in range(args.repeats + 1):  # the first call is a warm-up
    start = time.perf_counter()
    params, opt_state, loss = step(params, opt_state, x, labels)
    jax.block_until_ready(loss)
    times.append(time.perf_counter() - start)
  stats = jax.devices()[0].memory_stats()
  if stats and "peak_bytes_in_use" in stats:
    peak = stats["peak_bytes_in_use"]
  else:  # CPU: the process's peak resident memory (ru_maxrss, KiB on Linux), compilation and set-up included
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  return {**row, "peak_gib": peak / 2**30, "before_gib": before / 2**30,
          "step_s": sorted(times[1:])[len(times[1:]) // 2], "note": ""}


def _rss_bytes() -> int:
  """This process's resident memory now (Linux /proc), or 0 where it cannot be read."""
  try:
    with open("/proc/self/statm") as f:
      return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
  except OSError:
    return 0


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--frames", default="8,16,32,64")
  parser.add_argument("--modes", default=",".join(MODES))
  parser.add_argument("--image", type=int, default=224)
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--dtype", default="float32", help="compute dtype (float32 or bfloat16)")
  parser.add_argument("--remat-policy", default="nothing_saveable")
  parser.add_argument("--memory-limit-gb", type=float, default=20.0)
  parser.add_argument("--json", default="", help="also write the rows to this file")
  parser.add_argument("--one", nargs=2, metavar=("FRAMES", "MODE"), help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.one:
    print(json.dumps(measure(int(args.one[0]), args.one[1], args)))
    return
  unknown = [m for m in args.modes.split(",") if m not in MODES]
  if unknown:
    parser.error(f"unknown modes {unknown}; valid: {', '.join(MODES)}")
  rows = []
  print(f"{'frames':>6} {'tokens':>6} {'mode':>14} {'plan GiB':>9} {'before GiB':>10} {'peak GiB':>9} "
        f"{'compile s':>9} {'step s':>8}")
  for frames in map(int, args.frames.split(",")):
    for mode in args.modes.split(","):
      child = [sys.executable, __file__, "--one", str(frames), mode] + [
          f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in ("one", "frames", "modes", "json")]
      done = subprocess.run(child, capture_output=True, text=True, env=os.environ)
      if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        row = {"frames": frames, "mode": mode, "note": f"failed (exit {done.returncode}): {last[:200]}"}
        print(f"{frames:>6} {'':>6} {mode:>14} {row['note']}", flush=True)
      else:
        row = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{frames:>6} {row['tokens']:>6} {mode:>14} {row['planned_gib']:>9.2f} {row['before_gib']:>10.2f} "
              f"{row['peak_gib']:>9.2f} "
              f"{row['compile_s']:>9.1f} {row['step_s']:>8.3f} {row['note']}", flush=True)
      rows.append(row)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(rows, f, indent=1)


if __name__ == "__main__":
  main()

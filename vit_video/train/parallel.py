"""Data parallelism over every device of every host: `jit` over a Mesh, or the classic `pmap`.

'jit': one `Mesh(devices, ('data',))` (Auto axes). Batches are sharded over 'data'; parameters are replicated,
  or with `fsdp=True` each large parameter is sharded over 'data' along its largest divisible axis (ZeRO-3 /
  FSDP style: XLA all-gathers it for the forward pass and reduce-scatters its gradient).
'pmap': state replicated on a leading device axis, each device gets `[B/n]` of the batch, gradients averaged
  with `lax.pmean(..., 'data')` (as scenic and vit_jax do).

Multi-host: every process joins the job once first (`initialize_distributed`); each host feeds its own rows of
the global batch and `host_batch_to_global` assembles the global array; `fetch` brings a state sharded across
hosts (FSDP) back whole to every host.
"""
import dataclasses
from collections.abc import Callable
from typing import Any, Literal

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AbstractMesh, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"
Parallelism = Literal["jit", "pmap"]


def initialize_distributed(*, coordinator_address: str = "", num_processes: int = 0, process_id: int = -1) -> None:
  """Joins this process to the job's other processes, once: a later call (another run of a sweep or a notebook
  in the same process) returns at once when it asks for the same job, and raises when it asks for another.

  With a coordinator address, num_processes and process_id must say the rest (0 <= process_id < num_processes).
  Without one (""), the cluster's environment supplies all three: `jax.distributed.initialize()` with no
  arguments, as on TPU VMs (the TPU metadata) and SLURM or Open MPI GPU clusters (their environment variables).
  Call it before anything else touches the devices.
  """
  explicit = bool(coordinator_address)
  if explicit and not 0 <= process_id < num_processes:
    raise ValueError(f"distributed set-up with coordinator_address {coordinator_address!r} needs 0 <= process_id "
                     f"< num_processes; got process_id={process_id}, num_processes={num_processes}")
  if not explicit and (num_processes > 0 or process_id >= 0):
    raise ValueError(f"num_processes ({num_processes}) and process_id ({process_id}) are given without a "
                     "coordinator_address: give all three, or none to let the cluster's environment supply them")
  if jax.distributed.is_initialized():
    if explicit and (jax.process_count(), jax.process_index()) != (num_processes, process_id):
      raise ValueError(f"this process already joined a job as process {jax.process_index()} of "
                       f"{jax.process_count()}, not {process_id} of {num_processes}")
    return
  if explicit:
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)
  else:
    jax.distributed.initialize()


def check_batch_size(global_batch_size: int, num_devices: int | None = None) -> None:
  """The global batch must split evenly over the devices (default: all devices of all hosts)."""
  n, hosts = num_devices or jax.device_count(), jax.process_count()
  if global_batch_size % n:
    raise ValueError(f"global batch size {global_batch_size} is not divisible by the {n} devices "
                     f"({hosts} process(es)); choose a multiple of {n}")


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where arrays live: the mesh and the shardings of batches and state (jit), or the local devices (pmap)."""
  parallelism: Parallelism
  mesh: Mesh | AbstractMesh
  fsdp: bool = False
  fsdp_min_size: int = 2**14  # Parameters with fewer elements stay replicated.

  @property
  def batch_sharding(self) -> NamedSharding:
    return NamedSharding(self.mesh, P(DATA_AXIS))

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  def param_sharding(self, shape: tuple[int, ...]) -> NamedSharding:
    """Replicated, or under FSDP sharded along the largest axis that the device count divides."""
    n = self.mesh.size
    if not self.fsdp or int(np.prod(shape)) < self.fsdp_min_size:
      return self.replicated
    for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
      if shape[axis] % n == 0:
        spec = [None] * len(shape)
        spec[axis] = DATA_AXIS
        return NamedSharding(self.mesh, P(*spec))
    return self.replicated

  def state_shardings(self, abstract_state: Any) -> Any:
    """A sharding for every leaf of a state pytree (of arrays or ShapeDtypeStructs); None under pmap, whose
    state is replicated on a leading device axis instead."""
    if self.parallelism == "pmap":
      return None
    return jax.tree.map(lambda a: self.param_sharding(tuple(a.shape)), abstract_state)

  @property
  def axis_name(self) -> str | None:
    """The named device axis step functions reduce over (pmap), None under jit (XLA inserts the reductions)."""
    return DATA_AXIS if self.parallelism == "pmap" else None

  @property
  def program_devices(self) -> int:
    """Devices whose work one compiled program stands for: XLA's cost analysis counts one device's share."""
    return jax.device_count() if self.parallelism == "pmap" else self.mesh.size

  @property
  def batch_axes(self) -> int:
    """Leading axes of a global batch: [B] under jit, [local_devices, B/devices] under pmap."""
    return 2 if self.parallelism == "pmap" else 1

  def compile_init(self, init: Callable, state_shardings: Any) -> Callable:
    """`init(rng) -> state` jitted to lay the state out as `place` would (replicated later under pmap)."""
    return jax.jit(init) if state_shardings is None else jax.jit(init, out_shardings=state_shardings)

  def compile_step(self, step: Callable, state_shardings: Any, *, updates_state: bool) -> Callable:
    """`step(state, batch)` for this layout: `jax.pmap` over the data axis, or `jax.jit` with the state's and
    the batch's shardings. `updates_state`: it returns (new state, metrics) and donates the old state; else
    it returns outputs replicated on every device."""
    if self.parallelism == "pmap":
      return jax.pmap(step, axis_name=DATA_AXIS, donate_argnums=0 if updates_state else ())
    outputs = (state_shardings, self.replicated) if updates_state else self.replicated
    return jax.jit(step, in_shardings=(state_shardings, self.batch_sharding), out_shardings=outputs,
                   donate_argnums=0 if updates_state else ())

  def place(self, state: Any, state_shardings: Any) -> Any:
    """A host or global state where the step functions want it (replicated per local device under pmap). Host
    arrays must be the same on every process: each process puts only the shards its devices hold."""
    if self.parallelism == "pmap":
      return replicate(jax.device_get(state))
    return jax.tree.map(_put, state, state_shardings)

  def one_copy(self, tree: Any) -> Any:
    """A pytree the steps returned as one global copy (the first device's under pmap)."""
    return unreplicate(tree) if self.parallelism == "pmap" else tree

  def host_copy(self, state: Any) -> Any:
    """The state as a checkpoint wants it: global arrays under jit (each host writes its shards), one host copy
    under pmap (whose per-device replicas are not one global array)."""
    return jax.device_get(unreplicate(state)) if self.parallelism == "pmap" else state


def _put(x: Any, sharding: NamedSharding) -> jax.Array:
  if isinstance(x, jax.Array):
    return jax.device_put(x, sharding)
  x = np.asarray(x)  # the same on every host: each process fills the shards of its own devices
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def fetch(tree: Any) -> Any:
  """Every leaf whole as a numpy array on this host; leaves sharded across processes (FSDP on several hosts) are
  all-gathered, so every process must call it at the same point."""
  def get(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))
  return jax.tree.map(get, tree)


def _check_layout(parallelism: str, fsdp: bool) -> None:
  if parallelism not in ("jit", "pmap"):
    raise ValueError(f"parallelism must be 'jit' or 'pmap'; got {parallelism!r}")
  if fsdp and parallelism == "pmap":
    raise ValueError("fsdp needs parallelism='jit' (pmap replicates the state on every device)")


def make_layout(parallelism: Parallelism, *, fsdp: bool = False, devices: list | None = None) -> Layout:
  _check_layout(parallelism, fsdp)
  devices = jax.devices() if devices is None else devices
  return Layout(parallelism, Mesh(np.asarray(devices), (DATA_AXIS,)), fsdp=fsdp)


def abstract_layout(parallelism: Parallelism, *, fsdp: bool = False, num_devices: int) -> Layout:
  """The layout of `num_devices` devices that need not exist (an `AbstractMesh`): its shardings give every
  array's per-device shard shape, for planning a run (`train/dry_run.py`); nothing can run on it."""
  _check_layout(parallelism, fsdp)
  if num_devices < 1:
    raise ValueError(f"num_devices must be >= 1; got {num_devices}")
  return Layout(parallelism, AbstractMesh((num_devices,), (DATA_AXIS,)), fsdp=fsdp)


def host_batch_to_global(batch: dict[str, np.ndarray], layout: Layout) -> dict[str, jax.Array]:
  """This host's rows `[B/hosts, ...]` -> the global batch: a sharded `[B, ...]` array (jit), or
  `[local_devices, B/devices, ...]` per-device slices (pmap)."""
  if layout.parallelism == "pmap":
    n = jax.local_device_count()
    # [b, ...] -> [n, b/n, ...]
    return jax.tree.map(lambda x: x.reshape(n, x.shape[0] // n, *x.shape[1:]), batch)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(layout.batch_sharding, x), batch)


def replicate(tree: Any) -> Any:
  """Copies a pytree along a new leading axis, one copy per local device (pmap places them on its first call)."""
  n = jax.local_device_count()
  return jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (n, *np.shape(x))), tree)


def unreplicate(tree: Any) -> Any:
  """The first device's copy of a pmap-replicated pytree."""
  return jax.tree.map(lambda x: x[0], tree)

"""Where a run's arrays live: a device mesh, the state on it, every batch split over it.

Data parallelism for one run (``config.mesh``, an optional section)::

    mesh.data           the size of the mesh's ``data`` axis. None (the default): every
                        device of every process (``jax.devices()``), or, when
                        train.batch_size does not divide by that, the most devices
                        that divide both.
    mesh.shard_params   False/None (the default): the parameters and the optimizer state
                        are replicated on every device. True: each of their arrays is
                        split along its first axis the data axis divides (arrays with
                        none stay replicated), ZeRO-3 style, for models too large to
                        replicate; XLA gathers what each step needs.

The step is the single-device program, partitioned by XLA (GSPMD): the batch's
leading axis is split over ``data`` (synthetic tasks generate their batch inside
the step and constrain it there; host-fed batches are placed split), so each
device computes its share of the loss and the gradients are summed across
devices by the all-reduce XLA inserts. The numbers are those of one device up to
the order of float additions (tests/test_sharding.py checks the per-step metrics
to 1e-5). Random draws do not depend on the mesh (JAX's partitionable threefry).

The mesh is how a run executes, not what it computes: it is left out of the
config comparison that guards a resume (``rnnlab.training.config.diff``), so a
run checkpointed on 4 devices resumes on 1 or 8 (Orbax restores each array onto
the current mesh).

Vmapped groups (``rnnlab.training.vmapped``) use the devices differently: the N
runs of a group are split over a ``runs`` axis (``runs_placement``), so N devices
train N times as many runs in one program, with no communication between them.

Across processes (``rnnlab.training.distributed``): the mesh spans every
process's devices; ``host`` brings an array to the host wherever its shards are.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from rnnlab.checks import check_int

DATA = "data"
RUNS = "runs"


def default_config():
  import ml_collections  # pylint: disable=g-import-not-at-top
  from ml_collections import config_dict  # pylint: disable=g-import-not-at-top
  m = ml_collections.ConfigDict()
  m.data = config_dict.placeholder(int)        # data-parallel devices; None = every device
  m.shard_params = config_dict.placeholder(bool)  # True: split parameters/optimizer state
  return m


def divisors(n: int) -> list[int]:
  return [d for d in range(1, n + 1) if n % d == 0]


def validate(mesh_cfg, batch_size: int, num_devices: int | None = None):
  """``config.mesh`` against the devices there are and the batch size (ValueError)."""
  if mesh_cfg.shard_params not in (None, True, False):
    raise ValueError(f"mesh.shard_params must be true or false; got {mesh_cfg.shard_params!r}.")
  if mesh_cfg.data is None:
    return
  n = num_devices if num_devices is not None else jax.device_count()
  check_int("mesh.data", mesh_cfg.data)
  if n % mesh_cfg.data:
    raise ValueError(f"mesh.data={mesh_cfg.data} does not divide the {n} device(s) there "
                     f"are; valid: {divisors(n)} (or None: every device).")
  if batch_size % mesh_cfg.data:
    raise ValueError(f"train.batch_size {batch_size} does not split over mesh.data="
                     f"{mesh_cfg.data} devices; use a batch size that is a multiple of "
                     f"{mesh_cfg.data}, or mesh.data one of "
                     f"{[d for d in divisors(n) if batch_size % d == 0]}.")


def data_size(mesh_cfg, batch_size: int, num_devices: int) -> int:
  """How many devices the data axis spans (``config.mesh`` already validated)."""
  if mesh_cfg is not None and mesh_cfg.data is not None:
    return mesh_cfg.data
  return math.gcd(num_devices, batch_size)


@dataclasses.dataclass(frozen=True)
class Placement:
  """A mesh with one axis (``data`` for a run, ``runs`` for a vmapped group) and how
  the state and the batches are laid out on it."""
  mesh: Mesh
  shard_params: bool = False

  @property
  def axis(self) -> str:
    return self.mesh.axis_names[0]

  @property
  def size(self) -> int:
    return self.mesh.size

  def describe(self) -> str:
    if self.size == 1:
      return f"1 device ({self.mesh.devices.flat[0].platform})"
    procs = len({d.process_index for d in self.mesh.devices.flat})
    where = f" in {procs} processes" if procs > 1 else ""
    what = ("batch split" if self.axis == DATA else "runs split")
    params = ", parameters sharded" if self.shard_params else ""
    return (f"{self.size} {self.mesh.devices.flat[0].platform} devices{where} ({what} over "
            f"the {self.axis!r} axis{params})")

  # --- where each array goes -------------------------------------------------------

  def split(self, leaf) -> NamedSharding:
    """Split along the leading axis when it divides over the mesh, else replicated."""
    shape = np.shape(leaf)
    if shape and shape[0] % self.size == 0:
      return NamedSharding(self.mesh, P(self.axis))
    return NamedSharding(self.mesh, P())

  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  def _param(self, leaf) -> NamedSharding:
    shape = np.shape(leaf)
    for dim, n in enumerate(shape):
      if n % self.size == 0 and n >= self.size:
        return NamedSharding(self.mesh, P(*([None] * dim), self.axis))
    return self.replicated()

  def state_shardings(self, state):
    """Per leaf of a training state: a vmapped group's is split along its runs axis; a
    run's parameters and optimizer state are replicated (or sharded), the rest replicated."""
    if self.axis == RUNS:
      return jax.tree.map(self.split, state)
    out = jax.tree.map(lambda _: self.replicated(), state)
    if self.shard_params:
      out = out.replace(params=jax.tree.map(self._param, state.params),
                        opt_state=jax.tree.map(self._param, state.opt_state))
    if jax.tree.leaves(state.carry):  # a stateful task's carry holds one row per sequence
      out = out.replace(carry=jax.tree.map(self.split, state.carry))
    return out

  def put_state(self, state):
    """The state committed to the mesh (one device: to that device, as before meshes)."""
    if self.size == 1:
      return jax.device_put(state, self.mesh.devices.flat[0])
    return jax.device_put(state, self.state_shardings(state))

  def constrain_state(self, state):
    """Inside a jitted step: the new state keeps the layout of the old."""
    if self.size == 1:
      return state
    return jax.lax.with_sharding_constraint(state, self.state_shardings(state))

  def constrain_batch(self, batch):
    """Inside a jitted step: a generated batch split along its leading (batch) axis."""
    if self.size == 1:
      return batch
    return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, self.split(a)), batch)

  def put_batch(self, batch):
    """A host batch (the whole global batch, as every process builds it) onto the mesh:
    each process places only the rows of its own devices."""
    if self.size == 1:
      return jax.device_put(batch, self.mesh.devices.flat[0])
    if jax.process_count() == 1:
      return jax.device_put(batch, jax.tree.map(self.split, batch))
    return jax.tree.map(self._global, batch)

  def _global(self, leaf):
    sharding = self.split(leaf)
    array = np.asarray(leaf)
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def placement(config) -> Placement:
  """The data-parallel placement of a run from ``config.mesh`` (validated)."""
  mesh_cfg = config.get("mesh")
  devices = jax.devices()
  size = data_size(mesh_cfg, config.train.batch_size, len(devices))
  shard = bool(mesh_cfg is not None and mesh_cfg.shard_params)
  return Placement(Mesh(np.array(devices[:size]), (DATA,)), shard)


def runs_placement(num_runs: int, config=None) -> Placement:
  """A vmapped group's placement: its runs split over the most devices that divide them
  (``mesh.data``, when set, caps the devices)."""
  devices = jax.devices()
  cap = len(devices)
  if config is not None and config.get("mesh") is not None and config.mesh.data is not None:
    cap = config.mesh.data
  size = math.gcd(num_runs, cap)
  return Placement(Mesh(np.array(devices[:size]), (RUNS,)))


def host(tree) -> Any:
  """``jax.device_get`` that also works for arrays whose shards live in other processes
  (replicated ones are read from a local copy, split ones gathered)."""
  if jax.process_count() == 1:
    return jax.device_get(tree)

  def one(a):
    if not isinstance(a, jax.Array) or a.is_fully_addressable:
      return jax.device_get(a)
    if a.is_fully_replicated:
      return np.asarray(a.addressable_data(0))
    return np.asarray(multihost_utils.process_allgather(a, tiled=True))
  return jax.tree.map(one, tree)

"""One data-parallel code path from 1 CPU to a pod (jax.sharding).

A single 1-D mesh over every device; model state is replicated (P()), batches
are split along their leading axis (P('data')). jit then compiles one SPMD
program, so BatchNorm statistics and gradients are reduced over the global
batch without any pmap or explicit all-reduce.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from unlearnjax.errors import ConfigError

DATA_AXIS = 'data'


@functools.cache
def data_mesh() -> jax.sharding.Mesh:
  """The mesh over all (global) devices, axis name 'data'."""
  # Auto axes: XLA propagates shardings (vmapped convs reshape the batch
  # axis, which explicit-sharding mode rejects).
  return jax.make_mesh((jax.device_count(),), (DATA_AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,))


def replicated() -> NamedSharding:
  return NamedSharding(data_mesh(), P())


def batch_sharded() -> NamedSharding:
  return NamedSharding(data_mesh(), P(DATA_AXIS))


def replicate(tree):
  """Places a pytree of arrays on every device."""
  return jax.device_put(tree, replicated())


def shard_batch(tree):
  """Global numpy batch (the same on every host) -> array split over 'data'.

  Every process draws the same batch indices from the same seed; each passes
  its own contiguous block of rows (jax.distributed, multi-host), so on one
  process this is the whole batch. The leading size must divide evenly.
  """
  sharding = batch_sharded()
  index, count = jax.process_index(), jax.process_count()

  def local(x):
    x = np.asarray(x)
    if count > 1:
      rows = x.shape[0] // count
      x = x[index * rows:(index + 1) * rows]
    return jax.make_array_from_process_local_data(sharding, x)

  return jax.tree.map(local, tree)


def gather_to_host(tree):
  """A pytree of (possibly batch-sharded, multi-host) arrays -> numpy."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return multihost_utils.process_allgather(tree, tiled=True)
  return jax.device_get(tree)


def check_batch_size(batch_size: int, what: str = 'batch_size') -> None:
  n = jax.device_count()
  if batch_size % n:
    raise ConfigError(
        f'{what}={batch_size} is not divisible by the {n} devices of the data '
        f'mesh; choose a multiple of {n}.')


def sync_every() -> int:
  """Steps between host syncs of a training loop: 10 where several CPU
  devices (XLA:CPU's simulated ones) could deadlock in a queued all-reduce,
  else 0 (only after the last step)."""
  return 10 if jax.default_backend() == 'cpu' and jax.device_count() > 1 else 0


def round_up_to_devices(n: int) -> int:
  d = jax.device_count()
  return -(-n // d) * d


def shape_bucket(n: int, cap: int) -> int:
  """The next power of two >= n, at most `cap`: chunk sizes for sets of
  varying size (forget sets) without a recompile per size."""
  return min(cap, 1 << max(0, int(n) - 1).bit_length())


def maybe_initialize_distributed(enabled: bool) -> None:
  """Calls jax.distributed.initialize() once, before any other JAX call."""
  if enabled:
    jax.distributed.initialize()
